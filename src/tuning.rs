//! `Algorithm::Auto`'s cost model: per algorithm, a latency and a cost per
//! wire byte, `t(S) = latency + S * per_byte`, measured on the
//! communicator itself (a short probe) or read from a cached file; `Auto`
//! runs the algorithm with the least predicted time.
//!
//! Why measured per algorithm rather than derived from one link's alpha
//! and beta: the textbook formulas (`2(n-1)` latencies for the ring,
//! `log2 n` for recursive doubling, ...) miss what decides close calls on
//! a real machine — how the kernels, the slot pipeline and the transport's
//! eager and rendezvous protocols cost per step. Two sizes per algorithm
//! measure exactly those, for this communicator's ranks and links.
//!
//! The probe times each fixed algorithm on an `f32` sum at [`SMALL`] and
//! [`LARGE`] bytes (the fastest of [`REPS`] runs of each, each started by
//! a barrier; its calls take the communicator's first sequence numbers;
//! on shared memory
//! a few milliseconds in all, on a 1 Gbit/s link tens), then takes every
//! constant's maximum over the ranks, so every rank predicts, and picks,
//! alike. `RINGFUSE_TUNING` chooses: `off` (the fixed rule:
//! recursive doubling up to `AllreduceOpts::small_bytes`, the ring above),
//! `probe`, or a file path (read if it holds constants for this many
//! ranks, else probed and written by rank 0).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::comm::{Algorithm, AllreduceOpts, Communicator};
use crate::element::{DType, ReduceOp};
use crate::error::{Error, Result};

/// The probe's small buffer, bytes: latency.
pub const SMALL: usize = 8;
/// The probe's large buffer, bytes: cost per byte.
pub const LARGE: usize = 256 << 10;
/// Runs per algorithm and size; the fastest counts.
pub const REPS: usize = 3;

/// One algorithm's fitted line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The algorithm ([`Algorithm::name`]).
    pub algo: String,
    /// Seconds at (nearly) zero bytes.
    pub latency_s: f64,
    /// Seconds per wire byte beyond that.
    pub per_byte_s: f64,
}

/// `Auto`'s constants for one communicator size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// Ranks the constants were measured with.
    pub ranks: usize,
    /// One line per fixed algorithm.
    pub lines: Vec<Line>,
}

impl Tuning {
    /// Predicted seconds for `algo` moving `wire_bytes` (`None` if the
    /// algorithm was not measured).
    pub fn predict(&self, algo: Algorithm, wire_bytes: usize) -> Option<f64> {
        let l = self.lines.iter().find(|l| l.algo == algo.name())?;
        Some(l.latency_s + wire_bytes as f64 * l.per_byte_s)
    }

    /// The algorithm with the least predicted time among those that
    /// [support](Algorithm::supports) the buffer and codec (ties: the
    /// earlier in [`Algorithm::FIXED`], the ring first).
    pub fn best(&self, dtype: DType, codec: Codec, wire_bytes: usize) -> Algorithm {
        let mut best = (Algorithm::Ring, f64::INFINITY);
        for a in Algorithm::FIXED {
            if let (true, Some(t)) = (a.supports(dtype, codec), self.predict(a, wire_bytes)) {
                if t < best.1 {
                    best = (a, t);
                }
            }
        }
        best.0
    }

    /// Measures every fixed algorithm on `comm` (a collective call: every
    /// rank must make it, at the same point).
    pub fn probe(comm: &Communicator) -> Result<Tuning> {
        let mut consts = Vec::with_capacity(2 * Algorithm::FIXED.len());
        let (mut small, mut large) = (vec![0f32; SMALL / 4], vec![0f32; LARGE / 4]);
        for a in Algorithm::FIXED {
            let opts = AllreduceOpts { algorithm: a, codec: Codec::Native, ..comm.defaults().clone() };
            let fastest = |buf: &mut [f32]| -> Result<f64> {
                let mut best = f64::INFINITY;
                for _ in 0..REPS {
                    buf.fill(1.0);
                    // Start together: a call entered late by one rank would
                    // time that rank's lateness, not the algorithm.
                    comm.barrier()?;
                    let t0 = Instant::now();
                    comm.allreduce_with(buf, ReduceOp::Sum, &opts)?;
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                Ok(best)
            };
            let (ts, tl) = (fastest(&mut small)?, fastest(&mut large)?);
            consts.push(ts);
            consts.push(((tl - ts) / (LARGE - SMALL) as f64).max(0.0));
        }
        // Every rank must choose alike: agree on the slowest rank's figures.
        comm.allreduce(&mut consts, ReduceOp::Max)?;
        let lines = (Algorithm::FIXED.iter().zip(consts.chunks(2)))
            .map(|(a, c)| Line { algo: a.name().to_string(), latency_s: c[0], per_byte_s: c[1] })
            .collect();
        Ok(Tuning { ranks: comm.size(), lines })
    }

    /// Constants for `comm` as `RINGFUSE_TUNING` says (see the module
    /// docs); unset means `probe` if `probe_by_default`, else `off`.
    /// Collective when it probes.
    pub fn from_env(comm: &Communicator, probe_by_default: bool) -> Result<Option<Tuning>> {
        match std::env::var("RINGFUSE_TUNING").as_deref() {
            Err(_) if probe_by_default => Tuning::probe(comm).map(Some),
            Err(_) | Ok("") | Ok("off") => Ok(None),
            Ok("probe") => Tuning::probe(comm).map(Some),
            Ok(path) => Tuning::cached(comm, Path::new(path)).map(Some),
        }
    }

    /// Reads `path` if it holds constants for this many ranks (whether
    /// it does is agreed by all ranks, so they all probe or none), else
    /// probes and has rank 0 write them there.
    pub fn cached(comm: &Communicator, path: &Path) -> Result<Tuning> {
        let read = std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str::<TuningFile>(&s).ok());
        let usable = read.as_ref().map(|f| f.tuning.ranks == comm.size()).unwrap_or(false);
        let mut all = [if usable { 1f32 } else { 0.0 }];
        comm.allreduce(&mut all, ReduceOp::Min)?;
        if all[0] == 1.0 {
            return Ok(read.expect("usable").tuning);
        }
        let t = Tuning::probe(comm)?;
        if comm.rank() == 0 {
            let text = serde_json::to_string_pretty(&TuningFile { tuning: t.clone() }).expect("serialisable");
            std::fs::write(path, text)
                .map_err(|e| Error::Tuning { rank: 0, detail: format!("cannot write {}: {e}", path.display()) })?;
        }
        Ok(t)
    }
}

/// The cached file's layout (a wrapper, so the format can grow).
#[derive(Serialize, Deserialize)]
struct TuningFile {
    tuning: Tuning,
}
