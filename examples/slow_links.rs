//! Step time of each way GradSync can talk less, on one synthetic model:
//! a gradient of about 100 MiB in the layer shapes of a transformer block
//! stack (square and 4x-wide matrices, bias vectors), every rank's
//! different. For each method, the median over `--steps` of the slowest
//! rank's time to synchronise a step's gradients, and the payload bytes
//! rank 0 sent per step; every rank's result is checked bit for bit
//! against rank 0's (local SGD: after each average). Each gradient is
//! written into its bucket and the result read there (PyTorch DDP's
//! `gradient_as_bucket_view`), or with `--copied` handed over by copy.
//!
//! ```text
//! mpirun -np 4 target/release/examples/slow_links [--steps 3] [--width 1024] [--blocks 3] [--only M,..] [--copied] [--json FILE]
//! bash ci/netsim.sh --hosts 4 --rate 1gbit --program target/release/examples/slow_links
//! ```
//! No model is trained: the gradients are fixed, so the times are the
//! communication's and the compressors' own work.

#[path = "common/timing.rs"]
mod timing;

use std::time::Instant;

use clap::Parser;
use ringfuse::{Codec, Compression, GradSync, GradSyncOpts, LocalSgd, ReduceOp};

#[derive(Parser)]
struct Args {
    /// Timed steps per method (after one untimed).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Model width: each block has a width^2 and two 4 x width^2 matrices.
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Blocks of the model (3 of width 1024: 28M gradients, 108 MiB).
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Local SGD's averaging period.
    #[arg(long, default_value_t = 8)]
    period: u64,
    /// Write the rows as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Only the methods whose names (as the table prints them) start with
    /// one of these, comma-separated: `--only powersgd,local`. Native
    /// always runs: the others are compared with it.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Hand each gradient over by copy (`GradSync::synchronize`) instead
    /// of writing it into its bucket (`grad_buffer`, `mark_written`,
    /// `wait_in_place`: PyTorch DDP's `gradient_as_bucket_view`).
    #[arg(long)]
    copied: bool,
}

#[derive(serde::Serialize)]
struct Row {
    method: String,
    ms_per_step: f64,
    wire_bytes_per_step: usize,
    vs_native: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mpi = ringfuse::mpi::init()?;
    let comm = std::sync::Arc::new(mpi.world()?);
    let (rank, n) = (comm.rank(), comm.size());
    let w = args.width;
    // Attention's square projection and the MLP's two wide matrices, each
    // with its bias, per block.
    let mut shapes = Vec::new();
    for _ in 0..args.blocks {
        shapes.extend([(w, w), (w, 1), (4 * w, w), (4 * w, 1), (w, 4 * w), (w, 1)]);
    }
    let total: usize = shapes.iter().map(|s| s.0 * s.1).sum();
    let grad = |p: usize, i: usize| (((i * 31 + p * 7 + rank * 5) % 97) as f32 / 97.0 - 0.5) * 1e-2;
    let fresh = || -> Vec<Vec<f32>> {
        shapes.iter().enumerate().map(|(p, s)| (0..s.0 * s.1).map(|i| grad(p, i)).collect()).collect()
    };
    let slowest = |t: f64| -> Result<f64, ringfuse::Error> {
        let mut v = [t];
        comm.allreduce(&mut v, ReduceOp::Max)?;
        Ok(v[0])
    };
    let same_everywhere = |g: &[Vec<f32>]| -> Result<bool, ringfuse::Error> {
        // A checksum of the bits, compared by its max and min over ranks.
        let sum = g.iter().flatten().fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits() as u64) as f64;
        let (mut hi, mut lo) = ([sum], [sum]);
        comm.allreduce(&mut hi, ReduceOp::Max)?;
        comm.allreduce(&mut lo, ReduceOp::Min)?;
        Ok(hi == lo)
    };
    let defaults = GradSyncOpts::from_env()?;
    let methods: Vec<(&str, GradSyncOpts)> = vec![
        ("native", defaults.clone().codec(Codec::Native)),
        ("fp16", defaults.clone().codec(Codec::Fp16)),
        ("int8+ef", defaults.clone().codec(Codec::Int8)),
        ("powersgd r=4", defaults.clone().compression(Compression::PowerSgd { rank: 4 })),
        ("top-k 1%", defaults.clone().compression(Compression::TopK { fraction: 0.01, momentum: 0.0 })),
    ];
    let mut rows: Vec<Row> = Vec::new();
    let chosen =
        |name: &str| name == "native" || args.only.is_empty() || args.only.iter().any(|o| name.starts_with(o.as_str()));
    for (name, opts) in methods.into_iter().filter(|m| chosen(m.0)) {
        let mut sync = GradSync::with_shapes(comm.clone(), &shapes, opts)?;
        let mut times = Vec::new();
        let mut wire = 0;
        for step in 0..=args.steps {
            let (took, g) = if args.copied {
                let mut g = fresh();
                let mut views: Vec<&mut [f32]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                comm.barrier()?;
                let t = Instant::now();
                wire = sync.synchronize(&mut views)?.wire_bytes();
                (slowest(t.elapsed().as_secs_f64())?, g)
            } else {
                // The backward pass writes each gradient into its bucket
                // (untimed, as the copy above is not); the step is handing
                // them over and waiting.
                for p in 0..shapes.len() {
                    sync.grad_buffer(p)?.iter_mut().enumerate().for_each(|(i, x)| *x = grad(p, i));
                }
                comm.barrier()?;
                let t = Instant::now();
                for p in (0..shapes.len()).rev() {
                    sync.mark_written(p)?;
                }
                wire = sync.wait_in_place()?.wire_bytes();
                let took = slowest(t.elapsed().as_secs_f64())?;
                (took, (0..shapes.len()).map(|p| sync.grad(p).map(<[f32]>::to_vec)).collect::<Result<_, _>>()?)
            };
            if !same_everywhere(&g)? {
                return Err(format!("{name}: ranks differ after step {step}").into());
            }
            if step > 0 {
                times.push(took);
            }
        }
        rows.push(Row {
            method: name.into(),
            ms_per_step: timing::median(times) * 1e3,
            wire_bytes_per_step: wire,
            vs_native: 0.0,
        });
    }
    if chosen("local sgd") {
        // Local SGD: `period` steps of which one averages the parameters; its
        // cost per step is that average's over the period (the gradients of
        // the others stay local).
        let lens: Vec<usize> = shapes.iter().map(|s| s.0 * s.1).collect();
        let mut local = LocalSgd::new(comm.clone(), &lens, defaults.clone(), args.period, 0)?;
        let mut params = fresh();
        let mut times = Vec::new();
        for round in 0..=args.steps {
            comm.barrier()?;
            let t = Instant::now();
            for _ in 0..args.period {
                let mut views: Vec<&mut [f32]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
                local.sync_parameters(&mut views)?;
            }
            let took = slowest(t.elapsed().as_secs_f64())?;
            if !same_everywhere(&params)? {
                return Err(format!("local SGD: ranks differ after average {round}").into());
            }
            if round > 0 {
                times.push(took / args.period as f64);
            }
        }
        let wire = local.last_average_wire_bytes() / args.period as usize;
        rows.push(Row {
            method: format!("local sgd H={}", args.period),
            ms_per_step: timing::median(times) * 1e3,
            wire_bytes_per_step: wire,
            vs_native: 0.0,
        });
    }
    let native = rows[0].ms_per_step;
    rows.iter_mut().for_each(|r| r.vs_native = native / r.ms_per_step);
    if rank == 0 {
        println!(
            "# {n} ranks, {total} f32 gradients ({:.0} MiB) in {} tensors; median of {} steps, slowest rank",
            total as f64 * 4.0 / (1 << 20) as f64,
            shapes.len(),
            args.steps
        );
        println!("{:<16} {:>12} {:>16} {:>10}", "method", "ms/step", "wire bytes/step", "vs native");
        for r in &rows {
            println!("{:<16} {:>12.1} {:>16} {:>9.1}x", r.method, r.ms_per_step, r.wire_bytes_per_step, r.vs_native);
        }
        println!("slow_links: every method's ranks identical after every synchronised step");
        if let Some(p) = &args.json {
            std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
        }
    }
    Ok(())
}
