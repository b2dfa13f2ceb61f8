//! The flight recorder: each communicator keeps its last [`DEPTH`]
//! collectives in a fixed ring of atomics, so that after a hang or an error
//! one can see which rank is where.
//!
//! The executor updates the current entry at every hop with relaxed atomic
//! stores (a few nanoseconds against a hop of microseconds). A snapshot
//! reads without taking the communicator's lock, so it works while a
//! collective is stuck, from another thread or a signal-watching thread;
//! the price is that one entry can be read mid-update (a step from one hop
//! and a slice from the next), which does not matter for locating a hang.
//!
//! Dumps go to `RINGFUSE_FLIGHT_DIR/ringfuse-flight.rank<R>.json` when that
//! variable is set, else to stderr as text. They are written when a
//! collective fails mid-flight, on `SIGUSR1` (see [`signal`]), and on
//! demand ([`crate::Communicator::flight_record`]). `ringfuse-trace`
//! merges the JSON dumps of all ranks and names the rank that fell behind
//! ([`diagnose`]).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::op::OpDesc;
use crate::wire::{describe, fingerprint};

mod diagnose;
mod dump;
pub mod signal;

pub use diagnose::{diagnose, Diagnosis};
pub use dump::{FlightDump, OpRecord, OpState};

/// Collectives kept per communicator.
pub const DEPTH: usize = 64;

/// What a rank is blocked on: packed as `dir << 62 | peer << 32 | step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Recv = 1,
    Send = 2,
}

#[derive(Default)]
struct Entry {
    // seq + 1; 0 marks an empty entry.
    seq1: AtomicU64,
    fp: [AtomicU64; 2],
    state: AtomicU8,
    started_ns: AtomicU64,
    ended_ns: AtomicU64,
    progress_ns: AtomicU64,
    steps: AtomicU32,
    step: AtomicU32,
    slice: AtomicU32,
    recvd: AtomicU32,
    sent: AtomicU32,
    strays: AtomicU32,
    waiting: AtomicU64,
}

/// One communicator's recorder.
pub struct FlightRecorder {
    rank: usize,
    size: usize,
    entries: Box<[Entry]>,
    // Each failed collective's error, by sequence number (errors are rare,
    // so a lock here costs nothing in steady state).
    errors: Mutex<Vec<(u64, String)>>,
}

/// Wall-clock nanoseconds, exact: for the moment of a dump.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock nanoseconds to the kernel's tick (1-4 ms), for the stamps
/// of every collective. Precise time read twice per call was a tenth of
/// an 8-byte allreduce over shared memory (0.8 us); the coarse clock is a
/// plain load from the vDSO page, and a hang is located in seconds.
/// It never runs ahead of [`now_ns`], so a dump's ages are never negative.
fn stamp_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        (t.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec as u64)
    }
    #[cfg(not(target_os = "linux"))]
    now_ns()
}

impl FlightRecorder {
    /// An empty recorder for `rank` of `size`.
    pub fn new(rank: usize, size: usize) -> Self {
        FlightRecorder {
            rank,
            size,
            entries: (0..DEPTH).map(|_| Entry::default()).collect(),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn entry(&self, seq: u64) -> &Entry {
        &self.entries[(seq % DEPTH as u64) as usize]
    }

    /// A collective starts; it has `steps` schedule steps.
    pub(crate) fn begin(&self, desc: &OpDesc, steps: usize) {
        let e = self.entry(desc.seq);
        let fp = fingerprint(desc);
        e.seq1.store(0, Relaxed); // invalid while being rewritten
        e.fp[0].store(u64::from_le_bytes(fp[..8].try_into().expect("8 bytes")), Relaxed);
        e.fp[1].store(u64::from_le_bytes(fp[8..].try_into().expect("8 bytes")), Relaxed);
        e.state.store(OpState::Running as u8, Relaxed);
        let t = stamp_ns();
        e.started_ns.store(t, Relaxed);
        e.ended_ns.store(0, Relaxed);
        e.progress_ns.store(t, Relaxed);
        e.steps.store(steps as u32, Relaxed);
        for a in [&e.step, &e.slice, &e.recvd, &e.sent, &e.strays] {
            a.store(0, Relaxed);
        }
        e.waiting.store(0, Relaxed);
        e.seq1.store(desc.seq + 1, std::sync::atomic::Ordering::Release);
    }

    /// Forgets every record (the tuning probe's calls, before the
    /// communicator's sequence numbers start again from 0).
    pub(crate) fn forget(&self) {
        for e in self.entries.iter() {
            e.seq1.store(0, std::sync::atomic::Ordering::Release);
        }
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The hop being worked on.
    pub(crate) fn hop(&self, seq: u64, step: usize, slice: usize) {
        let e = self.entry(seq);
        e.step.store(step as u32, Relaxed);
        e.slice.store(slice as u32, Relaxed);
    }

    /// About to block on a message. The last progress is stamped here,
    /// not at every message: a rank only stops progressing by blocking,
    /// and a message that is already there then costs no clock read.
    pub(crate) fn waiting(&self, seq: u64, dir: Dir, peer: usize, step: usize) {
        let packed = (dir as u64) << 62 | (peer as u64 & 0x3fff_ffff) << 32 | step as u64 & 0xffff_ffff;
        let e = self.entry(seq);
        e.progress_ns.store(stamp_ns(), Relaxed);
        e.waiting.store(packed, Relaxed);
    }

    /// The wait ended with its message.
    pub(crate) fn moved(&self, seq: u64, dir: Dir) {
        let e = self.entry(seq);
        e.waiting.store(0, Relaxed);
        match dir {
            Dir::Recv => e.recvd.fetch_add(1, Relaxed),
            Dir::Send => e.sent.fetch_add(1, Relaxed),
        };
    }

    /// A message of an earlier call was dropped while this one waited.
    pub(crate) fn stray(&self, seq: u64) {
        self.entry(seq).strays.fetch_add(1, Relaxed);
    }

    /// The collective ended; `error` is its failure, if any.
    pub(crate) fn end(&self, seq: u64, error: Option<&crate::Error>) {
        let e = self.entry(seq);
        e.ended_ns.store(stamp_ns(), Relaxed);
        let state = if let Some(err) = error {
            let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            errs.retain(|(s, _)| s + DEPTH as u64 > seq);
            errs.push((seq, err.to_string()));
            OpState::Failed
        } else {
            OpState::Done
        };
        e.state.store(state as u8, Relaxed);
    }

    /// Everything recorded, oldest first.
    pub fn snapshot(&self, reason: &str) -> FlightDump {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut ops: Vec<OpRecord> = self.entries.iter().filter_map(|e| read_entry(e, &errors)).collect();
        ops.sort_by_key(|o| o.seq);
        FlightDump {
            rank: self.rank,
            size: self.size,
            host: dump::hostname(),
            pid: std::process::id(),
            reason: reason.to_string(),
            dumped_at_ns: now_ns(),
            ops,
        }
    }
}

fn read_entry(e: &Entry, errors: &[(u64, String)]) -> Option<OpRecord> {
    let seq = e.seq1.load(std::sync::atomic::Ordering::Acquire).checked_sub(1)?;
    let mut fp = [0u8; 16];
    fp[..8].copy_from_slice(&e.fp[0].load(Relaxed).to_le_bytes());
    fp[8..].copy_from_slice(&e.fp[1].load(Relaxed).to_le_bytes());
    let op = describe(&fp, seq as u32).map_or_else(
        || "?".to_string(),
        |mut d| {
            d.seq = seq;
            d.to_string()
        },
    );
    let w = e.waiting.load(Relaxed);
    let waiting = match w >> 62 {
        1 => Some(format!("receive from peer {} at step {}", (w >> 32) & 0x3fff_ffff, w & 0xffff_ffff)),
        2 => Some(format!("send to peer {} at step {}", (w >> 32) & 0x3fff_ffff, w & 0xffff_ffff)),
        _ => None,
    };
    let ended = e.ended_ns.load(Relaxed);
    Some(OpRecord {
        seq,
        op,
        state: OpState::from_u8(e.state.load(Relaxed)),
        started_ns: e.started_ns.load(Relaxed),
        ended_ns: (ended != 0).then_some(ended),
        last_progress_ns: e.progress_ns.load(Relaxed),
        steps: e.steps.load(Relaxed),
        step: e.step.load(Relaxed),
        slice: e.slice.load(Relaxed),
        msgs_recv: e.recvd.load(Relaxed),
        msgs_sent: e.sent.load(Relaxed),
        strays: e.strays.load(Relaxed),
        waiting,
        error: errors.iter().find(|(s, _)| *s == seq).map(|(_, m)| m.clone()),
    })
}
