//! The probe behind `Auto`'s cost model, kept within a time budget, and
//! the cached tuning file. They live with the communicator they time; the
//! model they fill ([`crate::tuning`]) is pure and sits below it.
//!
//! With `RINGFUSE_TUNING=probe` every communicator created through MPI
//! probes, so the probe's time is paid at every job start: it must stay well under
//! 100 ms on any link. On shared memory the whole grid takes a few
//! milliseconds. Over a 1 Gbit/s link one run of every algorithm at
//! 512 KiB alone takes 30-40 ms on 4 or 8 hosts, and one run of every
//! algorithm at every size of the grid 80 ms on 8 hosts, so there the
//! probe must choose what to measure:
//!
//! 1. one untimed call per algorithm (TCP opens connections on first use,
//!    which would otherwise be timed), then the latency of a barrier;
//! 2. a barrier slower than [`SLOW_BARRIER`] means a network: calls take
//!    tens of microseconds or more, so a barrier's exit skew is small
//!    beside one call and no batching is needed, and the sparser
//!    [`NET_SIZES`] grid drops the points placed around shared memory's
//!    eager limits;
//! 3. one run of every algorithm per size, smallest first, while the
//!    time spent plus the next size's [`estimate`] fits the budget;
//! 4. further runs of the sizes measured, whole rounds at a time, while
//!    a round fits ([`extra_rounds`]), up to [`REPS`] runs in all.
//!
//! Each decision uses figures every rank agrees on (the slowest rank's,
//! exchanged after each size), so every rank measures the same sizes the
//! same number of times, and no rank waits in a call another skipped.
//! A cached file (`RINGFUSE_TUNING=<path>`) is measured once, so it takes
//! the whole grid with every run ([`Tuning::probe_within`] with no budget).

use std::time::{Duration, Instant};

use std::path::Path;

use super::env::TuningSource;
use super::{AllreduceOpts, Communicator};
use crate::codec::Codec;
use crate::element::{DType, ReduceOp};
use crate::error::Error;
use crate::error::Result;
use crate::schedule::Algorithm;
use crate::tuning::{Line, Tuning, TuningFile, BUDGET, NET_SIZES, REPS, SIZES, SLOW_BARRIER};

/// Calls below this many bytes are timed in batches (up to 8) per run on
/// shared memory.
const BATCH_BYTES: usize = 64 << 10;
/// From this size up a call's time is taken to grow in proportion to its
/// bytes, when estimating the next size.
const BANDWIDTH_BYTES: usize = 64 << 10;

/// Seconds one run of every algorithm at `bytes` is expected to take,
/// from the agreed `(bytes, seconds per algorithm)` points measured so
/// far (ascending sizes), `batch` calls each, and one barrier of `lat`
/// seconds before each algorithm's calls.
///
/// From [`BANDWIDTH_BYTES`] up the last point is scaled by the ratio of
/// sizes, which over-estimates while latency still counts and so stops
/// early rather than late. Below it, calls are latency-bound: the last
/// segment is extended, never below the last point.
fn estimate(points: &[(usize, Vec<f64>)], bytes: usize, batch: usize, lat: f64) -> f64 {
    let Some((b1, t1)) = points.last() else { return 0.0 };
    let per_algo = t1.iter().enumerate().map(|(a, &y1)| {
        if *b1 >= BANDWIDTH_BYTES {
            return y1 * bytes as f64 / *b1 as f64;
        }
        let slope = match points.len() {
            n if n >= 2 => {
                let (b0, t0) = &points[n - 2];
                ((y1 - t0[a]) / (*b1 - *b0) as f64).max(0.0)
            }
            _ => 0.0,
        };
        y1 + bytes.saturating_sub(*b1) as f64 * slope
    });
    per_algo.map(|t| t * batch as f64 + lat).sum()
}

/// How many more whole rounds (one run of every algorithm at every
/// measured size) fit: `round` seconds each, `left` seconds left, at
/// most `REPS - 1`; all of them with no budget.
fn extra_rounds(left: Option<f64>, round: f64) -> usize {
    match left {
        None => REPS - 1,
        Some(left) if round > 0.0 => ((left / round).floor().max(0.0) as usize).min(REPS - 1),
        Some(_) => REPS - 1,
    }
}

/// Within this factor of a size's fastest algorithm, an algorithm is in a
/// close call at that size: single runs on a shared link differ by 1.3x
/// and more between neighbouring calls.
const CLOSE: f64 = 1.3;

/// The runs the rest of a budget buys once no whole round fits: at each
/// size of `points` (agreed seconds per algorithm for one run, batches
/// included) where two or more algorithms are within [`CLOSE`] of the
/// fastest, those algorithms again, cheapest sizes first, up to `passes`
/// times over, while the estimated cost (their seconds and a barrier of
/// `lat` each) fits `left`. Returns `(size index, algorithm indices)` in
/// the order to run them. Every rank computes the same list from the
/// same agreed figures.
fn close_calls(points: &[(usize, Vec<f64>)], lat: f64, mut left: f64, passes: usize) -> Vec<(usize, Vec<usize>)> {
    let mut close: Vec<(f64, usize, Vec<usize>)> = (points.iter().enumerate())
        .filter_map(|(si, (_, t))| {
            let best = t.iter().copied().fold(f64::INFINITY, f64::min);
            let algos: Vec<usize> = (0..t.len()).filter(|&a| t[a] <= best * CLOSE).collect();
            let cost = algos.iter().map(|&a| t[a] + lat).sum();
            (algos.len() >= 2).then_some((cost, si, algos))
        })
        .collect();
    close.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut plan = Vec::new();
    for _ in 0..passes {
        for (cost, si, algos) in &close {
            if *cost > left {
                break;
            }
            left -= cost;
            plan.push((*si, algos.clone()));
        }
    }
    plan
}

impl Tuning {
    /// Constants for `comm` as `RINGFUSE_TUNING` says (see the module
    /// docs): none for the rule (the default), else probed or cached.
    /// Collective when it probes or reads a file.
    pub fn from_settings(comm: &Communicator, source: &TuningSource) -> Result<Option<Tuning>> {
        match source {
            TuningSource::Rule => Ok(None),
            TuningSource::Probe => Tuning::probe(comm).map(Some),
            TuningSource::File(path) => Tuning::cached(comm, path).map(Some),
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
        if let Some(f) = read.filter(|_| all[0] == 1.0) {
            return Ok(f.tuning);
        }
        let t = Tuning::probe_within(comm, None)?;
        if comm.rank() == 0 {
            let text = serde_json::to_string_pretty(&TuningFile { tuning: t.clone() })
                .map_err(|e| Error::Tuning { rank: 0, detail: format!("cannot serialise the tuning: {e}") })?;
            std::fs::write(path, text)
                .map_err(|e| Error::Tuning { rank: 0, detail: format!("cannot write {}: {e}", path.display()) })?;
        }
        Ok(t)
    }

    /// Measures every fixed algorithm on `comm` within [`BUDGET`] (a
    /// collective call: every rank must make it, at the same point).
    pub fn probe(comm: &Communicator) -> Result<Tuning> {
        Self::probe_within(comm, Some(BUDGET))
    }

    /// As [`Tuning::probe`], within `budget`, or the whole grid with
    /// [`REPS`] runs per point when `None` (see the module docs).
    pub fn probe_within(comm: &Communicator, budget: Option<Duration>) -> Result<Tuning> {
        let start = Instant::now();
        // An algorithm that would run the ring here (no hosts known for the
        // hierarchical one) gets no line, so it is never predicted. With
        // one rank per host the hierarchical schedule is the ring across
        // hosts: timing it again would spend a fifth of the budget on a
        // second ring.
        let runs: Vec<Algorithm> = (Algorithm::FIXED.into_iter())
            .filter(|&a| {
                let own = comm.algorithm_for(&comm.defaults().clone().algorithm(a), DType::F32, 1) == a;
                a == Algorithm::Ring || (own && (a != Algorithm::Hierarchical || comm.ranks_per_host() > 1))
            })
            .collect();
        let opts: Vec<AllreduceOpts> = (runs.iter())
            .map(|&a| AllreduceOpts { algorithm: a, codec: Codec::Native, ..comm.defaults().clone() })
            .collect();
        // One untimed call each first: TCP opens a connection on its first
        // message, which the first timed run would otherwise pay for. Then
        // the barrier's latency tells shared memory from a network.
        let mut small = [1f32; 2];
        for o in &opts {
            comm.allreduce_with(&mut small, ReduceOp::Sum, o)?;
        }
        let mut lat = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            comm.barrier()?;
            lat = lat.min(t0.elapsed().as_secs_f64());
        }
        let mut agreed = [lat, start.elapsed().as_secs_f64()];
        comm.allreduce(&mut agreed, ReduceOp::Max)?;
        let (lat, mut spent) = (agreed[0], agreed[1]);
        let slow = lat > SLOW_BARRIER;
        let grid: &[usize] = if slow { &NET_SIZES } else { &SIZES };
        // Small calls on shared memory run in batches: ranks leave a
        // barrier a few microseconds apart, as long as a whole call there.
        let batch = |bytes: usize| if slow { 1 } else { (BATCH_BYTES / bytes).clamp(1, 8) };
        let left = |spent: f64| budget.map(|b| b.as_secs_f64() - spent);

        let mut buf = vec![0f32; grid[grid.len() - 1] / 4];
        // This rank's fastest run per (size, algorithm), and the agreed
        // (slowest rank's) first runs that steer the budget.
        let mut mine: Vec<Vec<f64>> = Vec::new();
        let mut seen: Vec<(usize, Vec<f64>)> = Vec::new();
        let round_start = spent;
        for &bytes in grid {
            let fits = left(spent).is_none_or(|l| estimate(&seen, bytes, batch(bytes), lat) <= l);
            if !seen.is_empty() && !fits {
                break;
            }
            let t = run_each(comm, &opts, &mut buf[..bytes / 4], batch(bytes))?;
            let mut a: Vec<f64> = t.iter().copied().chain([start.elapsed().as_secs_f64()]).collect();
            comm.allreduce(&mut a, ReduceOp::Max)?;
            spent = a.pop().expect("elapsed");
            mine.push(t);
            seen.push((bytes, a));
        }
        // The algorithms take turns within each round, so a slow spell of
        // the machine or the links (other jobs, a drained token bucket)
        // lands on one run of each, not on all runs of one.
        let round = spent - round_start;
        let rounds = extra_rounds(left(spent), round);
        for _ in 0..rounds {
            for (si, &(bytes, _)) in seen.iter().enumerate() {
                let t = run_each(comm, &opts, &mut buf[..bytes / 4], batch(bytes))?;
                mine[si].iter_mut().zip(t).for_each(|(m, t)| *m = m.min(t));
            }
        }
        // What no whole round could have goes to the close calls alone.
        if let Some(left) = left(spent + rounds as f64 * round) {
            let pts: Vec<(usize, Vec<f64>)> =
                seen.iter().map(|(b, t)| (*b, t.iter().map(|x| x * batch(*b) as f64).collect())).collect();
            for (si, algos) in close_calls(&pts, lat, left, REPS - 1 - rounds) {
                let bytes = seen[si].0;
                let some: Vec<AllreduceOpts> = algos.iter().map(|&a| opts[a].clone()).collect();
                let t = run_each(comm, &some, &mut buf[..bytes / 4], batch(bytes))?;
                algos.iter().zip(t).for_each(|(&a, t)| mine[si][a] = mine[si][a].min(t));
            }
        }
        // Every rank must choose alike: agree on the slowest rank's figures,
        // algorithm-major as the lines want, and on the probe's time.
        let mut times: Vec<f64> = (0..runs.len()).flat_map(|a| mine.iter().map(move |t| t[a])).collect();
        times.push(start.elapsed().as_secs_f64());
        comm.allreduce(&mut times, ReduceOp::Max)?;
        let seconds = times.pop().expect("elapsed");
        let lines = (runs.iter().zip(times.chunks(seen.len())))
            .map(|(a, t)| Line {
                algo: a.name().to_string(),
                points: seen.iter().map(|s| s.0).zip(t.iter().copied()).collect(),
            })
            .collect();
        Ok(Tuning { ranks: comm.size(), lines, seconds })
    }
}

/// One run of each algorithm on `buf`: `batch` calls after a barrier,
/// seconds per call.
fn run_each(comm: &Communicator, opts: &[AllreduceOpts], buf: &mut [f32], batch: usize) -> Result<Vec<f64>> {
    let mut t = Vec::with_capacity(opts.len());
    for o in opts {
        buf.fill(1.0);
        // Start together: a call entered late by one rank would time that
        // rank's lateness, not the algorithm.
        comm.barrier()?;
        let t0 = Instant::now();
        for _ in 0..batch {
            comm.allreduce_with(buf, ReduceOp::Sum, o)?;
        }
        t.push(t0.elapsed().as_secs_f64() / batch as f64);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_extend_the_last_segment_and_large_ones_scale_by_bytes() {
        // Two algorithms, 1 KiB apart: the second grows 1 us per KiB.
        let pts = vec![(24, vec![10e-6, 20e-6]), (1048, vec![10e-6, 21e-6])];
        let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // 1 KiB on: 10 + 22 us, batch 2, plus one barrier of 1 us each.
        assert!(near(estimate(&pts, 2072, 2, 1e-6), 2.0 * (10e-6 + 22e-6) + 2e-6));
        // A falling segment is not extended below the last point.
        let falling = vec![(8, vec![30e-6]), (1024, vec![10e-6])];
        assert!(near(estimate(&falling, 4096, 1, 0.0), 10e-6));
        // One point: flat.
        assert!(near(estimate(&pts[..1], 4096, 1, 0.0), 30e-6));
        // From 64 KiB, in proportion to bytes: 1 ms at 128 KiB, 4 ms at 512.
        let big = vec![(64 << 10, vec![0.5e-3]), (128 << 10, vec![1e-3])];
        assert!(near(estimate(&big, 512 << 10, 1, 0.0), 4e-3));
        assert_eq!(estimate(&[], 8, 1, 1.0), 0.0);
    }

    #[test]
    fn close_calls_rerun_the_contenders_cheapest_first_within_what_is_left() {
        // Size 0: a and b within 1.3x (contested), c far behind. Size 1:
        // one clear winner. Size 2: all three within 1.3x, dearer.
        let pts = vec![
            (8, vec![10e-6, 12e-6, 50e-6]),
            (1024, vec![10e-6, 40e-6, 30e-6]),
            (4096, vec![100e-6, 110e-6, 125e-6]),
        ];
        let lat = 1e-6;
        let (c0, c2) = (22e-6 + 2.0 * lat, 335e-6 + 3.0 * lat);
        assert_eq!(close_calls(&pts, lat, 1.0, 1), vec![(0, vec![0, 1]), (2, vec![0, 1, 2])]);
        assert_eq!(close_calls(&pts, lat, 1.0, 2).len(), 4, "two passes");
        assert_eq!(close_calls(&pts, lat, c0 + c2 - 1e-9, 1), vec![(0, vec![0, 1])], "the dear one does not fit");
        assert_eq!(close_calls(&pts, lat, c0 - 1e-9, 4), vec![], "nothing fits");
        assert_eq!(close_calls(&pts, lat, 1.0, 0), vec![]);
    }

    #[test]
    fn extra_rounds_fill_what_is_left_up_to_the_runs_per_point() {
        assert_eq!(extra_rounds(None, 1.0), REPS - 1);
        assert_eq!(extra_rounds(Some(0.05), 0.02), 2);
        assert_eq!(extra_rounds(Some(0.019), 0.02), 0);
        assert_eq!(extra_rounds(Some(-0.01), 0.02), 0, "over budget already");
        assert_eq!(extra_rounds(Some(1.0), 1e-4), REPS - 1);
    }
}
