//! How much of GradSync's communication hides behind the backward pass.
//! A simulated backward produces one layer's gradient every `--compute-ms`
//! (sleeping, as a CPU thread does while the GPU computes); we time the
//! step four ways, medians over `--steps`, the slowest rank's:
//!
//! - compute alone; communication alone (`synchronize`, and in place:
//!   gradients already in their buckets, no copies);
//! - blocking: compute everything, then `synchronize`;
//! - overlapped: `mark_ready` as each layer finishes, `wait` at the end;
//! - overlapped in place: backward writes into `grad_buffer`,
//!   `mark_written` as each layer finishes, `wait_in_place` at the end.
//!
//! ```text
//! mpirun -np 2 target/release/examples/overlap [--layers 8] [--layer-mib 4] [--compute-ms 0]
//! ```
//! With `--compute-ms 0` (the default) the compute time per layer is set
//! to the measured in-place communication time per layer, the hardest
//! case for overlap. Prints `overlapped / max(compute, comm)`; the results of every
//! step are checked.

#[path = "common/timing.rs"]
mod timing;

use std::time::{Duration, Instant};

use clap::Parser;
use ringfuse::{Codec, GradSync, GradSyncOpts, ReduceOp};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    layer_mib: usize,
    #[arg(long, default_value_t = 0.0)]
    compute_ms: f64,
    #[arg(long, default_value_t = 31)]
    steps: usize,
    #[arg(long, default_value = "fp16", value_parser = |s: &str| Codec::parse(s).ok_or("unknown codec"))]
    codec: Codec,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Compute,
    Comm,
    CommInPlace,
    Blocking,
    Overlapped,
    OverlappedInPlace,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mpi = ringfuse::mpi::init()?;
    let comm = mpi.world()?;
    let (rank, n) = (comm.rank(), comm.size());
    let len = args.layer_mib << 18; // f32s per layer
    let lens = vec![len; args.layers];
    let opts = GradSyncOpts::from_env()?.codec(args.codec).bucket_bytes(len * 4);
    let mut sync = GradSync::new(comm, &lens, opts)?;
    let mut g: Vec<Vec<f32>> = lens.iter().map(|&l| vec![0.0; l]).collect();
    let fill = |g: &mut Vec<Vec<f32>>| g.iter_mut().for_each(|v| v.fill(rank as f32 + 1.0));
    let want = (1..=n).sum::<usize>() as f32 / n as f32; // averaged
    let check = |g: &[f32]| -> Result<(), String> {
        match g.iter().find(|v| **v != want) {
            Some(v) => Err(format!("rank {rank}: got {v}, want {want}")),
            None => Ok(()),
        }
    };
    let slowest = |t: f64, sync: &GradSync| -> Result<f64, ringfuse::Error> {
        let mut v = [t];
        sync.comm().allreduce(&mut v, ReduceOp::Max)?;
        Ok(v[0])
    };
    // Fills every gradient, copied (`g`) or in its bucket, as backward would.
    let fill_buckets = |sync: &mut GradSync| -> Result<(), ringfuse::Error> {
        for p in 0..args.layers {
            sync.grad_buffer(p)?.fill(rank as f32 + 1.0);
        }
        Ok(())
    };
    let mut time = |sync: &mut GradSync, mode: Mode, per_layer: Duration| -> Result<f64, Box<dyn std::error::Error>> {
        let mut ts = Vec::new();
        for _ in 0..args.steps {
            fill(&mut g);
            fill_buckets(sync)?;
            sync.comm().barrier()?;
            let t0 = Instant::now();
            let compute = || (0..args.layers).for_each(|_| std::thread::sleep(per_layer));
            match mode {
                Mode::Compute => compute(),
                Mode::Comm | Mode::Blocking => {
                    if mode == Mode::Blocking {
                        compute();
                    }
                    sync.synchronize(&mut g.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>())?;
                }
                Mode::CommInPlace => {
                    (0..args.layers).rev().try_for_each(|p| sync.mark_written(p))?;
                    sync.wait_in_place()?;
                }
                Mode::Overlapped => {
                    // Backward runs from the last layer to the first.
                    for p in (0..args.layers).rev() {
                        std::thread::sleep(per_layer);
                        sync.mark_ready(p, &g[p])?;
                    }
                    sync.wait(&mut g.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>())?;
                }
                Mode::OverlappedInPlace => {
                    for p in (0..args.layers).rev() {
                        std::thread::sleep(per_layer);
                        sync.mark_written(p)?;
                    }
                    sync.wait_in_place()?;
                }
            }
            let t = t0.elapsed().as_secs_f64();
            match mode {
                Mode::Compute => {}
                Mode::CommInPlace | Mode::OverlappedInPlace => {
                    (0..args.layers).try_for_each(|p| check(sync.grad(p).map_err(|e| e.to_string())?))?;
                }
                _ => g.iter().try_for_each(|v| check(v))?,
            }
            ts.push(slowest(t, sync)?);
        }
        Ok(timing::median(ts))
    };
    let comm_t = time(&mut sync, Mode::Comm, Duration::ZERO)?;
    let comm_in_place_t = time(&mut sync, Mode::CommInPlace, Duration::ZERO)?;
    let per_layer = if args.compute_ms > 0.0 {
        Duration::from_secs_f64(args.compute_ms / 1e3)
    } else {
        Duration::from_secs_f64(comm_in_place_t / args.layers as f64)
    };
    let compute_t = time(&mut sync, Mode::Compute, per_layer)?;
    let blocking_t = time(&mut sync, Mode::Blocking, per_layer)?;
    let overlap_t = time(&mut sync, Mode::Overlapped, per_layer)?;
    let overlap_in_place_t = time(&mut sync, Mode::OverlappedInPlace, per_layer)?;
    if rank == 0 {
        let (best, best_in_place) = (compute_t.max(comm_t), compute_t.max(comm_in_place_t));
        println!(
            "# {n} ranks, {} layers x {} MiB f32, codec {}, medians of {} steps (slowest rank)",
            args.layers, args.layer_mib, args.codec, args.steps
        );
        let row = |what: &str, t: f64, base: f64, of: &str| {
            println!("{what:<20} {:>9.2} ms  = {:.3} x {of}", t * 1e3, t / base);
        };
        println!("{:<20} {:>9.2} ms", "compute", compute_t * 1e3);
        println!("{:<20} {:>9.2} ms", "comm (copied)", comm_t * 1e3);
        println!("{:<20} {:>9.2} ms", "comm (in place)", comm_in_place_t * 1e3);
        row("blocking (copied)", blocking_t, best, "max(compute, comm copied)");
        row("overlapped (copied)", overlap_t, best, "max(compute, comm copied)");
        row("overlapped (in place)", overlap_in_place_t, best_in_place, "max(compute, comm in place)");
    }
    Ok(())
}
