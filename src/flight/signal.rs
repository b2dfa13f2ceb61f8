//! `SIGUSR1` dumps the flight recorder of every live communicator in the
//! process. `mpirun` forwards `SIGUSR1` to every rank, so
//! `kill -USR1 <mpirun pid>` during a hang dumps all ranks at once.
//!
//! The handler is installed when the first communicator is created, on a
//! thread of its own (signal-hook's iterator: the handler itself only
//! writes to a pipe, the dump runs on the thread). `RINGFUSE_FLIGHT_SIGNAL=0`
//! leaves `SIGUSR1` alone for applications that use it.

use std::sync::{Arc, Mutex, Once, Weak};

use super::FlightRecorder;

static LIVE: Mutex<Vec<Weak<FlightRecorder>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Adds a recorder to those `SIGUSR1` dumps, and installs the handler on
/// first use.
pub(crate) fn register(rec: &Arc<FlightRecorder>) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(rec));
    drop(live);
    if std::env::var("RINGFUSE_FLIGHT_SIGNAL").as_deref() != Ok("0") {
        INSTALL.call_once(install);
    }
}

/// Dumps every live recorder (what `SIGUSR1` does).
pub fn dump_all(reason: &str) {
    let live: Vec<Arc<FlightRecorder>> =
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
    for rec in live {
        rec.snapshot(reason).emit_direct();
    }
}

fn install() {
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1]) {
        Ok(mut signals) => {
            let spawned = std::thread::Builder::new().name("ringfuse-flight".into()).spawn(move || {
                for _ in signals.forever() {
                    dump_all("SIGUSR1");
                }
            });
            if let Err(e) = spawned {
                tracing::warn!("ringfuse: no SIGUSR1 flight-recorder thread: {e}");
            }
        }
        Err(e) => tracing::warn!("ringfuse: cannot watch SIGUSR1 for flight-recorder dumps: {e}"),
    }
}
