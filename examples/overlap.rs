//! How much of GradSync's communication hides behind the backward pass.
//! A simulated backward produces one layer's gradient every `--compute-ms`
//! (sleeping, as a CPU thread does while the GPU computes); we time the
//! step four ways, medians over `--steps`, the slowest rank's:
//!
//! - compute alone; communication alone (`synchronize`);
//! - blocking: compute everything, then `synchronize`;
//! - overlapped: `mark_ready` as each layer finishes, `wait` at the end.
//!
//! ```text
//! mpirun -np 2 target/release/examples/overlap [--layers 8] [--layer-mib 4] [--compute-ms 0]
//! ```
//! With `--compute-ms 0` (the default) the compute time per layer is set
//! to the measured communication time per layer, the hardest case for
//! overlap. Prints `overlapped / max(compute, comm)`; the results of every
//! step are checked.

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
    #[arg(long, default_value_t = 7)]
    steps: usize,
    #[arg(long, default_value = "fp16", value_parser = |s: &str| Codec::parse(s).ok_or("unknown codec"))]
    codec: Codec,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mpi = ringfuse::mpi::init()?;
    let comm = mpi.world();
    let (rank, n) = (comm.rank(), comm.size());
    let len = args.layer_mib << 18; // f32s per layer
    let lens = vec![len; args.layers];
    let opts = GradSyncOpts::default().codec(args.codec).bucket_bytes(len * 4);
    let mut sync = GradSync::new(comm, &lens, opts)?;
    let mut g: Vec<Vec<f32>> = lens.iter().map(|&l| vec![0.0; l]).collect();
    let fill = |g: &mut Vec<Vec<f32>>| g.iter_mut().for_each(|v| v.fill(rank as f32 + 1.0));
    let want = (1..=n).sum::<usize>() as f32 / n as f32; // averaged
    let check = |g: &Vec<Vec<f32>>| -> Result<(), String> {
        match g.iter().flatten().find(|v| **v != want) {
            Some(v) => Err(format!("rank {rank}: got {v}, want {want}")),
            None => Ok(()),
        }
    };
    let slowest = |t: f64, sync: &GradSync| -> Result<f64, ringfuse::Error> {
        let mut v = [t];
        sync.comm().allreduce(&mut v, ReduceOp::Max)?;
        Ok(v[0])
    };
    let mut time = |sync: &mut GradSync, mode: u8, per_layer: Duration| -> Result<f64, Box<dyn std::error::Error>> {
        let mut ts = Vec::new();
        for _ in 0..args.steps {
            fill(&mut g);
            sync.comm().barrier()?;
            let t0 = Instant::now();
            match mode {
                0 => (0..args.layers).for_each(|_| std::thread::sleep(per_layer)),
                1 => {
                    sync.synchronize(&mut g.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>())?;
                }
                2 => {
                    (0..args.layers).for_each(|_| std::thread::sleep(per_layer));
                    sync.synchronize(&mut g.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>())?;
                }
                _ => {
                    // Backward runs from the last layer to the first.
                    for p in (0..args.layers).rev() {
                        std::thread::sleep(per_layer);
                        sync.mark_ready(p, &g[p])?;
                    }
                    sync.wait(&mut g.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>())?;
                }
            }
            let t = t0.elapsed().as_secs_f64();
            if mode != 0 {
                check(&g)?;
            }
            ts.push(slowest(t, sync)?);
        }
        Ok(median(ts))
    };
    let comm_t = time(&mut sync, 1, Duration::ZERO)?;
    let per_layer = if args.compute_ms > 0.0 {
        Duration::from_secs_f64(args.compute_ms / 1e3)
    } else {
        Duration::from_secs_f64(comm_t / args.layers as f64)
    };
    let compute_t = time(&mut sync, 0, per_layer)?;
    let blocking_t = time(&mut sync, 2, per_layer)?;
    let overlap_t = time(&mut sync, 3, per_layer)?;
    if rank == 0 {
        let best = compute_t.max(comm_t);
        println!(
            "# {n} ranks, {} layers x {} MiB f32, codec {}, medians of {} steps (slowest rank)",
            args.layers, args.layer_mib, args.codec, args.steps
        );
        println!("compute    {:>9.2} ms", compute_t * 1e3);
        println!("comm       {:>9.2} ms", comm_t * 1e3);
        println!("blocking   {:>9.2} ms  = {:.3} x max(compute, comm)", blocking_t * 1e3, blocking_t / best);
        println!("overlapped {:>9.2} ms  = {:.3} x max(compute, comm)", overlap_t * 1e3, overlap_t / best);
    }
    Ok(())
}
