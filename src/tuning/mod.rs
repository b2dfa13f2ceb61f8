//! `Algorithm::Auto`'s cost model: per algorithm, the time at a few wire
//! sizes, measured on the communicator itself (a short probe) or read from
//! a cached file, joined by straight lines (a latency-bandwidth model per
//! segment: `t(S) = t(S0) + (S - S0) * per_byte`) and extended past the
//! largest size by the last segment's cost per byte. `Auto` runs the
//! ring unless another algorithm is predicted at least [`MARGIN`] faster:
//! the ring is the bandwidth-optimal reference, and a probe's noise should
//! not flip a close call. Past twice the largest size probed only the
//! ring and the hierarchical schedule compete ([`Tuning::best`]).
//!
//! Why measured per algorithm rather than derived from one link's alpha
//! and beta: the textbook formulas (`2(n-1)` latencies for the ring,
//! `log2 n` for recursive doubling, ...) miss what decides close calls on
//! a real machine — how the kernels, the slot pipeline and the transport's
//! eager and rendezvous protocols cost per step. A few sizes per algorithm
//! measure exactly those, for this communicator's ranks and links.
//!
//! The probe times each fixed algorithm on an `f32` sum at each of
//! [`SIZES`] ([`NET_SIZES`] over a network; the fastest of up to [`REPS`]
//! runs, each started by a barrier; its calls are forgotten after, so the
//! user's first call is `#0`), within [`BUDGET`] (`src/comm/probe.rs` says what it
//! drops to stay in it: a few milliseconds on shared memory take the
//! whole grid), then takes every constant's maximum over the ranks, so
//! every rank predicts, and picks, alike. `RINGFUSE_TUNING` chooses:
//! `off` (the default: the fixed rule of [`rule`], recursive doubling up
//! to a crossover that depends only on the job's layout, the ring above;
//! the same choice, and so the same bits, in every run), `probe` (may
//! choose differently from run to run: a close call goes the way the
//! noise of that start-up says), or a file path (read if it holds
//! constants for this many ranks, else probed over the whole grid,
//! without a budget, and written by rank 0; every run that reads it
//! chooses alike).

pub mod rule;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::element::DType;
use crate::schedule::Algorithm;

/// The probe's buffer sizes on shared memory, bytes: latency, the
/// middle, bandwidth,
/// and points on either side of where transports switch protocol: Open
/// MPI's shared-memory eager limit is 4 KiB *including* headers, so one
/// 4 KiB message (recursive doubling) goes by rendezvous at 1.6x the time
/// of two 2 KiB ones (the ring on 2 ranks), and at 8 KiB the ring's
/// halves cross it too: cliffs that a line drawn from 8 B to 16 KiB does
/// not see. Small sizes cost microseconds, so the grid is dense there.
pub const SIZES: [usize; 9] = [8, 1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10];
/// What the default probe may spend, from its start to its last
/// measurement. Estimates can be short by one size's error, so the
/// budget leaves room below the 100 ms the probe must stay under.
pub const BUDGET: Duration = Duration::from_millis(60);
/// A barrier slower than this (seconds) marks ranks joined by a network.
pub const SLOW_BARRIER: f64 = 20e-6;
/// The grid on a network: latency, the middle, Open MPI's TCP eager
/// limit (64 KiB), and bandwidth.
pub const NET_SIZES: [usize; 6] = [8, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10];
/// Runs per algorithm and size at most; the fastest counts.
pub const REPS: usize = 5;
/// How much faster than the ring another algorithm must be predicted.
pub const MARGIN: f64 = 0.9;

/// One algorithm's measured times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The algorithm ([`Algorithm::name`]).
    pub algo: String,
    /// (wire bytes, seconds), by size.
    pub points: Vec<(usize, f64)>,
}

impl Line {
    /// Seconds for `bytes`, on the line through the points.
    pub fn at(&self, bytes: usize) -> f64 {
        let p = &self.points;
        let Some(&(b0, t0)) = p.first() else { return f64::INFINITY };
        if bytes <= b0 || p.len() == 1 {
            return t0;
        }
        let seg = p.windows(2).find(|w| bytes <= w[1].0).unwrap_or(&p[p.len() - 2..]);
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        let per_byte = ((y1 - y0) / (x1 - x0) as f64).max(0.0);
        y0 + (bytes - x0) as f64 * per_byte
    }
}

/// `Auto`'s constants for one communicator size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// Ranks the constants were measured with.
    pub ranks: usize,
    /// One line per fixed algorithm.
    pub lines: Vec<Line>,
    /// Seconds the probe took, on the slowest rank (0 in files written
    /// before it was recorded).
    #[serde(default)]
    pub seconds: f64,
}

impl Tuning {
    /// Predicted seconds for `algo` moving `wire_bytes` (`None` if the
    /// algorithm was not measured).
    pub fn predict(&self, algo: Algorithm, wire_bytes: usize) -> Option<f64> {
        Some(self.lines.iter().find(|l| l.algo == algo.name())?.at(wire_bytes))
    }

    /// The algorithm with the least predicted time among those that
    /// [support](Algorithm::supports) the buffer and codec, the ring
    /// unless another beats it by [`MARGIN`]. Past twice the largest size
    /// probed only the ring and the hierarchical schedule (rings as well)
    /// compete: there the others cut a block into several slices, which
    /// the probe never saw, and they fall behind the ring while their
    /// lines still slope below it (on 8 netsim hosts halving-doubling took
    /// 0.76x the ring's time at 256 KiB, then 1.30x at 2 MiB and 1.50x at
    /// 16 MiB, where `Auto` had picked it).
    pub fn best(&self, dtype: DType, codec: Codec, wire_bytes: usize) -> Algorithm {
        // Every call of `Auto` asks: one pass over the lines, each read
        // once (a small call takes well under a microsecond).
        let probed = self.lines.iter().filter_map(|l| l.points.last()).map(|p| p.0).max().unwrap_or(0);
        let in_range = |a: Algorithm| wire_bytes <= 2 * probed || a == Algorithm::Hierarchical;
        let (mut ring, mut best) = (f64::INFINITY, (Algorithm::Ring, f64::INFINITY));
        for l in &self.lines {
            match Algorithm::parse(&l.algo) {
                Some(Algorithm::Ring) => ring = l.at(wire_bytes),
                Some(a) if in_range(a) && a.supports(dtype, codec) => {
                    let t = l.at(wire_bytes);
                    if t < best.1 {
                        best = (a, t);
                    }
                }
                _ => {}
            }
        }
        if best.1 < ring * MARGIN {
            best.0
        } else {
            Algorithm::Ring
        }
    }
}

/// `Auto`'s recent choices on one communicator, so a call shaped like a
/// recent one (dtype, codec, wire bytes: a training loop's buckets) costs
/// one atomic load instead of a pass over the lines, which took about
/// 50 ns, a tenth of an 8-byte call over shared memory. Direct-mapped, 16
/// entries; each packs its key and its choice in one word, so threads
/// calling at once need no lock. Whoever changes what a choice depends on
/// (the tuning, the hosts) clears it.
#[derive(Default)]
pub(crate) struct Memo([AtomicU64; 16]);

/// Every [`Algorithm`], by discriminant.
const BY_INDEX: [Algorithm; 6] = [
    Algorithm::Auto,
    Algorithm::Ring,
    Algorithm::RecursiveDoubling,
    Algorithm::Tree,
    Algorithm::HalvingDoubling,
    Algorithm::Hierarchical,
];
const ALGO_BITS: u64 = 0b1110;

impl Memo {
    /// The word of an entry without its choice: a valid bit, the dtype,
    /// the codec and the wire bytes (below 2^41 for any call accepted).
    fn key(dtype: DType, codec: Codec, wire_bytes: usize) -> u64 {
        1 | (dtype as u64) << 4 | (codec as u64) << 6 | (wire_bytes as u64) << 9
    }

    fn slot(&self, key: u64) -> &AtomicU64 {
        &self.0[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize]
    }

    pub fn get(&self, dtype: DType, codec: Codec, wire_bytes: usize) -> Option<Algorithm> {
        let key = Self::key(dtype, codec, wire_bytes);
        let w = self.slot(key).load(Ordering::Relaxed);
        (w & !ALGO_BITS == key).then(|| BY_INDEX[((w & ALGO_BITS) >> 1) as usize])
    }

    pub fn put(&self, dtype: DType, codec: Codec, wire_bytes: usize, algo: Algorithm) {
        let key = Self::key(dtype, codec, wire_bytes);
        self.slot(key).store(key | (algo as u64) << 1, Ordering::Relaxed);
    }

    pub fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w.get_mut() = 0);
    }
}

/// The cached file's layout (a wrapper, so the format can grow).
#[derive(Serialize, Deserialize)]
pub(crate) struct TuningFile {
    pub(crate) tuning: Tuning,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_gives_back_what_it_was_given_and_nothing_else() {
        for (i, a) in BY_INDEX.iter().enumerate() {
            assert_eq!(*a as usize, i, "BY_INDEX must follow the discriminants");
        }
        let mut m = Memo::default();
        assert_eq!(m.get(DType::F32, Codec::Native, 8), None);
        for (i, &a) in BY_INDEX.iter().enumerate() {
            m.put(DType::F32, Codec::Fp16, 1000 + i, a);
        }
        for (i, &a) in BY_INDEX.iter().enumerate() {
            // Two keys may share an entry: then the later one holds it.
            if let Some(got) = m.get(DType::F32, Codec::Fp16, 1000 + i) {
                assert_eq!(got, a);
            }
        }
        m.put(DType::F64, Codec::Int8, 1 << 40, Algorithm::Tree);
        assert_eq!(m.get(DType::F64, Codec::Int8, 1 << 40), Some(Algorithm::Tree));
        assert_eq!(m.get(DType::F32, Codec::Int8, 1 << 40), None, "another dtype");
        assert_eq!(m.get(DType::F64, Codec::Bf16, 1 << 40), None, "another codec");
        m.clear();
        assert_eq!(m.get(DType::F64, Codec::Int8, 1 << 40), None);
    }
}
