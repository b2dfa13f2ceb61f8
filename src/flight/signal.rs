//! `SIGUSR1` dumps the flight recorder of every live communicator in the
//! process. `mpirun` forwards `SIGUSR1` to every rank, so
//! `kill -USR1 <mpirun pid>` during a hang dumps all ranks at once.
//!
//! Opt-in: `RINGFUSE_FLIGHT_SIGNAL=1` installs the handler when the first
//! communicator is created, and [`install`] does from code. A library
//! must not take a signal from the application by default: one that
//! arrives before the handler exists kills the process instead, and an
//! application may use `SIGUSR1` itself. The handler runs on a thread of
//! its own (signal-hook's iterator: the handler itself only writes to a
//! pipe, the dump runs on the thread). Once installed, it prints
//! `ringfuse: pid P: SIGUSR1 flight-record handler installed` to stderr,
//! so a script knows when a signal is safe to send.

use std::sync::{Arc, Mutex, Once, Weak};

use super::FlightRecorder;

static LIVE: Mutex<Vec<Weak<FlightRecorder>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Adds a recorder to those `SIGUSR1` dumps, and installs the handler on
/// first use if `install_handler` (`RINGFUSE_FLIGHT_SIGNAL=1`).
pub(crate) fn register(rec: &Arc<FlightRecorder>, install_handler: bool) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(rec));
    drop(live);
    if install_handler {
        install();
    }
}

/// Installs the `SIGUSR1` handler that dumps every live communicator's
/// flight record (once per process; later calls do nothing). Returns
/// whether it is installed.
pub fn install() -> bool {
    INSTALL.call_once(|| INSTALLED.store(start(), std::sync::atomic::Ordering::SeqCst));
    INSTALLED.load(std::sync::atomic::Ordering::SeqCst)
}

static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Dumps every live recorder (what `SIGUSR1` does).
pub fn dump_all(reason: &str) {
    let live: Vec<Arc<FlightRecorder>> =
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
    for rec in live {
        rec.snapshot(reason).emit_direct();
    }
}

fn start() -> bool {
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1]) {
        Ok(mut signals) => {
            let spawned = std::thread::Builder::new().name("ringfuse-flight".into()).spawn(move || {
                for _ in signals.forever() {
                    dump_all("SIGUSR1");
                }
            });
            match spawned {
                Ok(_) => {
                    // The handler is registered (Signals::new did it):
                    // from here a SIGUSR1 is caught, so say so.
                    eprintln!("ringfuse: pid {}: SIGUSR1 flight-record handler installed", std::process::id());
                    true
                }
                Err(e) => {
                    tracing::warn!("ringfuse: no SIGUSR1 flight-recorder thread: {e}");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!("ringfuse: cannot watch SIGUSR1 for flight-recorder dumps: {e}");
            false
        }
    }
}
