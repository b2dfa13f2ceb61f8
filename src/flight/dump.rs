//! What a flight-recorder dump holds, and where it is written.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where one collective is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    /// Started and not finished (in flight, or stuck).
    Running = 1,
    /// Finished without error.
    Done = 2,
    /// Finished with an error.
    Failed = 3,
}

impl OpState {
    pub(crate) fn from_u8(v: u8) -> OpState {
        match v {
            2 => OpState::Done,
            3 => OpState::Failed,
            _ => OpState::Running,
        }
    }
}

/// One collective as the recorder saw it. Times are nanoseconds since the
/// Unix epoch (comparable across ranks as far as their clocks agree).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Sequence number on the communicator.
    pub seq: u64,
    /// The call, e.g. `allreduce#3(f32, 1000, sum, fp16)`.
    pub op: String,
    /// Running, done or failed.
    pub state: OpState,
    /// When it started.
    pub started_ns: u64,
    /// When it ended, if it did.
    pub ended_ns: Option<u64>,
    /// When the last message arrived or left.
    pub last_progress_ns: u64,
    /// Steps in its schedule.
    pub steps: u32,
    /// Step of the hop being worked on.
    pub step: u32,
    /// Slice of that step.
    pub slice: u32,
    /// Messages received so far.
    pub msgs_recv: u32,
    /// Messages whose send completed so far.
    pub msgs_sent: u32,
    /// Messages of earlier calls dropped while this one waited (a
    /// duplicate; see [`crate::transport::Stray`]).
    #[serde(default)]
    pub strays: u32,
    /// What it is blocked on, if anything: `receive from peer 2 at step 3`.
    pub waiting: Option<String>,
    /// The error it ended with, if any.
    pub error: Option<String>,
}

/// One rank's dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightDump {
    /// Rank in its communicator.
    pub rank: usize,
    /// Ranks in the communicator.
    pub size: usize,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Why it was dumped: `error`, `SIGUSR1`, `api`.
    pub reason: String,
    /// When.
    pub dumped_at_ns: u64,
    /// The last collectives, oldest first.
    pub ops: Vec<OpRecord>,
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

impl FlightDump {
    /// Writes the dump where `RINGFUSE_FLIGHT_DIR` says (JSON, one file per
    /// rank), or to stderr as text. Returns the file written, if any.
    pub fn emit(&self) -> Option<PathBuf> {
        self.emit_via(|text| eprintln!("{text}"))
    }

    /// [`Self::emit`], with stderr written directly rather than through
    /// `eprintln!` (which a test harness captures per test: a dump from the
    /// signal thread would land in whichever test spawned it).
    pub(crate) fn emit_direct(&self) -> Option<PathBuf> {
        use std::io::Write as _;
        self.emit_via(|text| {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        })
    }

    fn emit_via(&self, to_stderr: impl Fn(&str)) -> Option<PathBuf> {
        match std::env::var_os("RINGFUSE_FLIGHT_DIR") {
            Some(dir) => {
                let path = PathBuf::from(dir).join(format!("ringfuse-flight.rank{}.json", self.rank));
                let json = serde_json::to_string_pretty(self).unwrap_or_default();
                match std::fs::write(&path, json) {
                    Ok(()) => Some(path),
                    Err(e) => {
                        to_stderr(&format!("ringfuse: cannot write flight record {}: {e}\n{self}", path.display()));
                        None
                    }
                }
            }
            None => {
                to_stderr(&self.to_string());
                None
            }
        }
    }
}

fn age(now: u64, t: u64) -> String {
    format!("{:.3} s ago", now.saturating_sub(t) as f64 / 1e9)
}

impl fmt::Display for FlightDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ringfuse flight recorder: rank {} of {} on {} (pid {}), {}, last {} collectives",
            self.rank,
            self.size,
            self.host,
            self.pid,
            self.reason,
            self.ops.len()
        )?;
        for o in &self.ops {
            let when = match o.ended_ns {
                Some(t) => format!("ended {}", age(self.dumped_at_ns, t)),
                None => format!(
                    "started {}, last progress {}",
                    age(self.dumped_at_ns, o.started_ns),
                    age(self.dumped_at_ns, o.last_progress_ns)
                ),
            };
            write!(
                f,
                "  {:<44} {:<7} step {}/{} slice {} recv {} sent {} {when}",
                o.op,
                format!("{:?}", o.state).to_lowercase(),
                o.step,
                o.steps,
                o.slice,
                o.msgs_recv,
                o.msgs_sent
            )?;
            if o.strays > 0 {
                write!(f, ", {} stray message(s) of earlier calls dropped", o.strays)?;
            }
            if let Some(w) = &o.waiting {
                write!(f, ", waiting to {w}")?;
            }
            if let Some(e) = &o.error {
                write!(f, "\n      error: {e}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
