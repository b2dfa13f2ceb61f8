//! One size: every codec and the MPI baseline, timed interleaved iteration
//! by iteration (so machine noise hits them alike), then checked.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use ringfuse::schedule::{self, Ring, RingKind};
use ringfuse::verify::{expect, through_wire, Expect};
use ringfuse::{Algorithm, AllreduceOpts, Codec, Communicator, Element, ReduceOp};
use serde::Serialize;

use crate::aligned::{Aligned, PAGE};
use crate::cli::{Args, CollectiveArg};
use crate::device::DeviceRun;
use crate::inputs::{peak, value};

/// One table row; the field names are the JSON and CSV column names.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub collective: &'static str,
    pub bytes: usize,
    pub count: usize,
    pub dtype: &'static str,
    pub op: &'static str,
    pub codec: &'static str,
    /// The schedule that ran (`Auto` resolved).
    pub algo: &'static str,
    /// The algorithm asked for (`--algo`): the plot's series, and what
    /// tells an `auto` row from the fixed row of the algorithm it ran.
    #[serde(rename = "requested")]
    pub asked: &'static str,
    /// Ranks, in `--simulate` rows (a sweep over rank counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
    pub time_us: f64,
    #[serde(rename = "algbw_GBps")]
    pub algbw_gbps: f64,
    #[serde(rename = "busbw_GBps")]
    pub busbw_gbps: f64,
    /// Payload bytes rank 0 sends.
    pub wire_bytes: usize,
    /// Largest `|result - exact| / sum_i |x_i|` over all elements and
    /// ranks: the error relative to the scale the codec bound is stated in
    /// (plain relative error is meaningless where a sum cancels to ~0).
    pub max_rel_err: Option<f64>,
    /// Elements outside the codec's documented bound (all ranks).
    pub wrong: Option<u64>,
    /// Every rank holds the same bits.
    pub identical: Option<bool>,
    pub mpi_time_us: Option<f64>,
    /// `--baseline nccl-model`: NCCL's modelled f32 time on the same links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccl_model_us: Option<f64>,
    /// The algorithm NCCL's model picked for that time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccl_algo: Option<&'static str>,
    /// The baseline's time over this row's.
    pub speedup: Option<f64>,
}

/// MPI's own collective on `(send, recv)`, where the element type has an
/// MPI datatype.
pub type MpiFn<'a, E> = Box<dyn FnMut(&[E], &mut [E]) + 'a>;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Buffer lengths of one call: (input, output).
fn lens(c: CollectiveArg, count: usize, n: usize) -> (usize, usize) {
    match c {
        CollectiveArg::Allreduce | CollectiveArg::Broadcast => (count, count),
        CollectiveArg::ReduceScatter => (count, count / n),
        CollectiveArg::Allgather => (count / n, count),
    }
}

fn call<E: Element>(
    comm: &Communicator,
    c: CollectiveArg,
    op: ReduceOp,
    input: &[E],
    out: &mut [E],
    opts: &AllreduceOpts,
) {
    let r = match c {
        // Out of place, as MPI_Allreduce is called beside it.
        CollectiveArg::Allreduce => comm.allreduce_into_with(input, out, op, opts),
        CollectiveArg::Broadcast => {
            if comm.rank() == 0 {
                out.copy_from_slice(input);
            }
            comm.broadcast_with(out, 0, opts)
        }
        CollectiveArg::ReduceScatter => comm.reduce_scatter_with(input, out, op, opts),
        CollectiveArg::Allgather => comm.allgather_with(input, out, opts),
    };
    if let Err(e) = r {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

/// One allreduce of the device buffer (`--device cuda`).
fn device_call(comm: &Communicator, d: &mut DeviceRun, op: ReduceOp, opts: &AllreduceOpts, dtype: ringfuse::DType) {
    if let Err(e) = d.call(comm, dtype, op, opts) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

/// Payload bytes rank 0 sends in one call.
fn wire_bytes(
    c: CollectiveArg,
    comm: &Communicator,
    count: usize,
    algo: Algorithm,
    bytes: impl Fn(usize) -> usize,
) -> usize {
    let n = comm.size();
    let kind = match c {
        // Slicing changes the order of the sends, not their bytes.
        CollectiveArg::Allreduce => {
            let shape = schedule::Shape { size: n, per_host: comm.ranks_per_host(), slice: 1 << 16, slots: 4 };
            return schedule::sent_bytes(&schedule::allreduce(algo, 0, count, shape), bytes);
        }
        CollectiveArg::ReduceScatter => RingKind::ReduceScatter,
        CollectiveArg::Allgather => RingKind::Allgather,
        CollectiveArg::Broadcast => return if n > 1 { bytes(count) } else { 0 },
    };
    schedule::sent_bytes(&Ring { rank: 0, size: n, count, kind }, bytes)
}

/// The schedule a call runs, by name.
fn algo_name<E: Element>(comm: &Communicator, c: CollectiveArg, o: &AllreduceOpts, count: usize) -> &'static str {
    match c {
        CollectiveArg::Allreduce => comm.algorithm_for(o, E::DTYPE, count).name(),
        CollectiveArg::ReduceScatter | CollectiveArg::Allgather => "ring",
        CollectiveArg::Broadcast => "chain",
    }
}

/// Measures one size for every codec in `args.codec` and (allreduce)
/// every algorithm in `args.algo`.
pub fn measure<E: Element>(
    comm: &Communicator,
    args: &Args,
    bytes: usize,
    seed: u64,
    mut mpi: Option<MpiFn<'_, E>>,
    mut dev: Option<&mut DeviceRun>,
) -> Vec<Row> {
    let (rank, n) = (comm.rank(), comm.size());
    let c = args.collective;
    let mut count = bytes / E::DTYPE.size();
    if matches!(c, CollectiveArg::ReduceScatter | CollectiveArg::Allgather) {
        count = count / n * n;
    }
    let (in_len, out_len) = lens(c, count, n);
    // This rank's input: for allgather its own block, else the whole buffer.
    let offset = if c == CollectiveArg::Allgather { rank * in_len } else { 0 };
    // Every row, MPI_Allreduce included, reads this one input and writes
    // this one output, both page-aligned (as OSU's benchmarks place their
    // buffers, and as large allocations land). Rows with buffers of their
    // own differed by up to 1.2x at 32 KiB for the same algorithm, one run
    // this way and the next the other: which physical pages, and so which
    // cache sets, a row's output took. Malloc's 16-byte placement also put
    // an output 16 bytes past its input modulo 4 KiB, where loads alias the
    // stores just made (128 KiB ran 1.2-2x slower than page-aligned).
    let mut input = Aligned::<E>::new(in_len, E::from_f64(0.0), PAGE);
    input.iter_mut().enumerate().for_each(|(i, x)| *x = E::from_f64(value(seed, rank, offset + i, args.op)));
    // The other collectives have one schedule each: one variant per codec.
    if let Some(d) = dev.as_deref_mut() {
        d.load(bytemuck::cast_slice(&input));
    }
    let algos = if c == CollectiveArg::Allreduce { args.algo.clone() } else { vec![Algorithm::Auto] };
    let variants: Vec<(Codec, Algorithm)> =
        args.codec.iter().flat_map(|&codec| algos.iter().map(move |&a| (codec, a))).collect();
    let mut out = Aligned::<E>::new(out_len, E::from_f64(0.0), PAGE);
    let opts: Vec<AllreduceOpts> = variants
        .iter()
        .map(|&(codec, algo)| {
            let mut o = comm.defaults().clone().codec(codec).algorithm(algo);
            if let Some(s) = args.slice_bytes {
                o.slice_bytes = s as usize;
            }
            if let Some(s) = args.slots {
                o.slots = s;
            }
            o
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(args.iters); variants.len()];
    let mut mpi_times = Vec::with_capacity(args.iters);
    let barrier = || comm.barrier().unwrap_or_else(|e| panic!("{e}"));
    // Every iteration times each variant and MPI_Allreduce once, in an
    // order shuffled afresh each iteration: what a call finds (caches,
    // which message slots the peer read last, a token bucket on a shaped
    // link) depends on the call before it, so no row may keep the same
    // predecessor. A rotation was not enough: it moves the start but
    // keeps the cycle, so each row followed the same row in all but one
    // iteration of every `entries`, and on shared memory the ring row
    // (after MPI_Allreduce) ran 1.2-1.5x faster at 32-128 KiB than the
    // `auto` row (after hd) running the ring. Every rank draws the same
    // order from the same seed, so they call alike.
    let entries = opts.len() + usize::from(mpi.is_some());
    let mut order: Vec<usize> = (0..entries).collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    for it in 0..args.warmup + args.iters {
        order.shuffle(&mut rng);
        for &k in &order {
            if let Some(d) = dev.as_deref_mut().filter(|_| k < opts.len()) {
                // In place on the device: the input back first, untimed.
                d.reset();
            }
            barrier();
            let t0 = Instant::now();
            if let Some(d) = dev.as_deref_mut().filter(|_| k < opts.len()) {
                device_call(comm, d, args.op, &opts[k], E::DTYPE);
            } else if k < opts.len() {
                call(comm, c, args.op, &input, &mut out, &opts[k]);
            } else if let Some(f) = mpi.as_mut() {
                f(&input, &mut out);
            }
            if it >= args.warmup {
                let t = t0.elapsed().as_secs_f64();
                if k < opts.len() {
                    times[k].push(t)
                } else {
                    mpi_times.push(t)
                }
            }
        }
    }
    // The slowest rank's median is the collective's time.
    let mut med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    med.push(if mpi.is_some() { median(&mut mpi_times) } else { 0.0 });
    comm.allreduce(&mut med, ReduceOp::Max).expect("allreduce of timings");

    let mut rows = Vec::new();
    for (k, &(codec, asked)) in variants.iter().enumerate() {
        let t = med[k];
        let algbw = if t > 0.0 { (count * E::DTYPE.size()) as f64 / t / 1e9 } else { 0.0 };
        // Once more, untimed, so this variant's own result is the one
        // checked, into zeros (inputs are never zero): an element the call
        // left unwritten must not pass on the previous row's value.
        let (err, wrong, identical) = if args.check {
            out.fill(E::from_f64(0.0));
            if let Some(d) = dev.as_deref_mut() {
                d.reset();
                device_call(comm, d, args.op, &opts[k], E::DTYPE);
                d.download(bytemuck::cast_slice_mut(&mut out));
            } else {
                call(comm, c, args.op, &input, &mut out, &opts[k]);
            }
            check(comm, args, codec, seed, count, &out)
        } else {
            (None, None, None)
        };
        let mpi_t = mpi.is_some().then_some(med[variants.len()]);
        rows.push(Row {
            collective: c.name(),
            bytes: count * E::DTYPE.size(),
            count,
            dtype: E::DTYPE.name(),
            op: args.op.name(),
            codec: codec.name(),
            algo: algo_name::<E>(comm, c, &opts[k], count),
            asked: asked.name(),
            ranks: None,
            time_us: t * 1e6,
            algbw_gbps: algbw,
            busbw_gbps: algbw * c.bus_factor(n),
            wire_bytes: wire_bytes(c, comm, count, comm.algorithm_for(&opts[k], E::DTYPE, count), |m| {
                codec.wire_bytes(E::DTYPE, m, opts[k].scale_block)
            }),
            max_rel_err: err,
            wrong,
            identical,
            mpi_time_us: mpi_t.map(|m| m * 1e6),
            nccl_model_us: None,
            nccl_algo: None,
            speedup: mpi_t.filter(|_| t > 0.0).map(|m| m / t),
        });
    }
    rows
}

/// Checks this rank's output against the f64 reference of every rank's
/// input (regenerated locally), then combines the verdicts of all ranks.
fn check<E: Element>(
    comm: &Communicator,
    args: &Args,
    codec: Codec,
    seed: u64,
    count: usize,
    out: &[E],
) -> (Option<f64>, Option<u64>, Option<bool>) {
    let (rank, n) = (comm.rank(), comm.size());
    let dt = E::DTYPE;
    let x = |r: usize, i: usize| E::from_f64(value(seed, r, i, args.op)).to_f64();
    let mut xs = vec![0f64; n];
    let peaks = vec![peak(args.op); n];
    let (mut wrong, mut worst) = (0u64, 0f64);
    for (j, g) in out.iter().enumerate() {
        let want = match args.collective {
            CollectiveArg::Allreduce | CollectiveArg::ReduceScatter => {
                let i = if args.collective == CollectiveArg::ReduceScatter { rank * out.len() + j } else { j };
                for (r, v) in xs.iter_mut().enumerate() {
                    *v = x(r, i);
                }
                expect(codec, dt, args.op, &xs, &peaks)
            }
            CollectiveArg::Allgather if n > 1 => Expect::Exact(through_wire(codec, dt, x(j / (count / n), j))),
            CollectiveArg::Broadcast if n > 1 => Expect::Exact(through_wire(codec, dt, x(0, j))),
            _ => Expect::Exact(x(0, j)),
        };
        let g = g.to_f64();
        if !want.accepts(g) {
            wrong += 1;
        }
        let scale = match args.collective {
            CollectiveArg::Allreduce | CollectiveArg::ReduceScatter if args.op != ReduceOp::Prod => {
                xs.iter().map(|v| v.abs()).sum::<f64>()
            }
            _ => 0.0,
        };
        let err = match want {
            Expect::Exact(v) | Expect::Within { value: v, .. } => (g - v).abs(),
        };
        worst = worst.max(if scale > 0.0 { err / scale } else { want.rel_err(g) });
    }
    let hash = out.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ v.to_bits_u64()).wrapping_mul(0x100_0000_01b3));
    let mine = [wrong as f64, worst, f64::from_bits(hash)];
    let mut all = vec![0f64; 3 * n];
    comm.allgather(&mine, &mut all).expect("allgather of check results");
    let wrong_all: f64 = all.chunks(3).map(|c| c[0]).sum();
    let worst_all = all.chunks(3).map(|c| c[1]).fold(0f64, f64::max);
    // Only allreduce and allgather/broadcast leave the same buffer on every rank.
    let identical = match args.collective {
        CollectiveArg::ReduceScatter => None,
        _ => Some(all.chunks(3).all(|c| c[2].to_bits() == hash)),
    };
    (Some(worst_all), Some(wrong_all as u64), identical)
}
