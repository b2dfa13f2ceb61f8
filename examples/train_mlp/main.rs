//! Data-parallel training with GradSync: a small MLP learns which red
//! wines are good (quality >= 6) from the UCI wine-quality data shipped in
//! `linfa-datasets` (nothing is downloaded), each rank on its own shard of
//! every batch, against a single-process run of the same model and seed.
//!
//! ```text
//! mpirun -np 4 target/release/examples/train_mlp [--epochs 40] [--json F] [--plot F.svg]
//! ```
//!
//! It prints final loss and test accuracy for: single process, native,
//! fp16, fp16scaled, int8 with and without error feedback; and exits
//! non-zero if a run's ranks disagree or a codec misses its target
//! (fp16/fp16scaled within 1% of native's final loss, int8 with feedback
//! within 2%, native within 1% of the single process).

mod data;
mod model;
mod plot;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use model::{Mlp, Sgd};
use ringfuse::{Codec, Communicator, GradSync, GradSyncOpts};

#[derive(Parser)]
struct Args {
    /// Passes over the training set.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Global batch (split over the ranks).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Write `{"ranks": n, "runs": [...]}` here.
    #[arg(long)]
    json: Option<String>,
    /// Draw the loss curves here (SVG).
    #[arg(long)]
    plot: Option<String>,
}

#[derive(serde::Serialize, Clone)]
pub struct Run {
    codec: String,
    error_feedback: bool,
    final_loss: f64,
    accuracy: f64,
    wire_bytes: u64,
    #[serde(skip)]
    curve: Vec<f64>,
}

const SEED: u64 = 2026;

fn main() -> ExitCode {
    let args = Args::parse();
    let mpi = match ringfuse::mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let comm = match mpi.world() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let lead = comm.rank() == 0;
    let d = data::load(SEED);
    let mut runs = vec![train(&args, &d, None)];
    for (codec, feedback) in [
        (Codec::Native, false),
        (Codec::Fp16, false),
        (Codec::Fp16Scaled, false),
        (Codec::Int8, true),
        (Codec::Int8, false),
    ] {
        match train(&args, &d, Some((&comm, codec, feedback))) {
            Ok(r) => runs.push(Ok(r)),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runs: Vec<Run> = runs.into_iter().map(|r| r.expect("the single-process run cannot fail")).collect();
    if !lead {
        return ExitCode::SUCCESS;
    }
    println!(
        "# {} ranks, {} epochs, batch {}, {} train / {} test wines",
        comm.size(),
        args.epochs,
        args.batch,
        d.train.len(),
        d.test.len()
    );
    println!(
        "{:<12} {:>8} {:>11} {:>9} {:>14} {:>10}",
        "codec", "feedback", "final_loss", "accuracy", "wire_bytes", "vs_native"
    );
    let native = runs[1].final_loss;
    for r in &runs {
        println!(
            "{:<12} {:>8} {:>11.5} {:>9.4} {:>14} {:>+9.3}%",
            r.codec,
            r.error_feedback,
            r.final_loss,
            r.accuracy,
            r.wire_bytes,
            (r.final_loss / native - 1.0) * 100.0
        );
    }
    if let Some(f) = &args.json {
        let doc = serde_json::json!({ "ranks": comm.size(), "runs": runs });
        if let Err(e) = std::fs::write(f, serde_json::to_string_pretty(&doc).expect("json")) {
            eprintln!("{f}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(f) = &args.plot {
        if let Err(e) = plot::curves(f, &runs) {
            eprintln!("{f}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut ok = true;
    let mut target = |r: &Run, base: f64, within: f64, what: &str| {
        let off = (r.final_loss / base - 1.0).abs();
        if off > within {
            eprintln!(
                "FAILED: {} (feedback {}) final loss {:.5} is {:.2}% from {what}, over {:.0}%",
                r.codec,
                r.error_feedback,
                r.final_loss,
                off * 100.0,
                within * 100.0
            );
            ok = false;
        }
    };
    target(&runs[1], runs[0].final_loss, 0.01, "the single process");
    target(&runs[2], native, 0.01, "native");
    target(&runs[3], native, 0.01, "native");
    target(&runs[4], native, 0.02, "native");
    if ok {
        println!("train_mlp: every codec within its target of native; ranks identical in every run");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One training run; `sync` is `None` for the single-process run (every
/// rank computes it alone, on every sample of each batch).
fn train(args: &Args, d: &data::Data, sync: Option<(&Arc<Communicator>, Codec, bool)>) -> Result<Run, String> {
    let (rank, n) = sync.map_or((0, 1), |(c, ..)| (c.rank(), c.size()));
    // Each rank starts from its own weights; broadcast_parameters makes
    // them rank 0's, which are the single-process run's.
    let mut m = Mlp::new(d.inputs, SEED + rank as u64);
    let mut gs = match sync {
        Some((comm, codec, fb)) => {
            let opts = GradSyncOpts::from_env()
                .map_err(|e| e.to_string())?
                .codec(codec)
                .error_feedback(fb)
                .average(false)
                .bucket_bytes(4096);
            let gs = GradSync::new(comm.clone(), &m.lens(), opts).map_err(|e| e.to_string())?;
            let mut views: Vec<&mut [f32]> = m.p.iter_mut().map(|v| v.as_mut_slice()).collect();
            gs.broadcast_parameters(&mut views).map_err(|e| e.to_string())?;
            Some(gs)
        }
        None => None,
    };
    let mut opt = Sgd::new(&m, 0.05, 0.9);
    let mut g: [Vec<f32>; 4] = m.lens().map(|k| vec![0.0; k]);
    let (mut curve, mut wire) = (Vec::new(), 0u64);
    let scale = 1.0 / args.batch as f32;
    for epoch in 0..args.epochs {
        let order = d.epoch_order(SEED + epoch as u64);
        for batch in order.chunks(args.batch) {
            // This rank's share of the batch: every n-th sample.
            let mine: Vec<usize> = batch.iter().skip(rank).step_by(n).copied().collect();
            g.iter_mut().for_each(|v| v.fill(0.0));
            let s = if batch.len() == args.batch { scale } else { 1.0 / batch.len() as f32 };
            m.backward(&d.x, &d.y, &mine, s, &mut g);
            if let Some(gs) = gs.as_mut() {
                // Backward produced the output layer first: mark it first.
                for p in (0..4).rev() {
                    gs.mark_ready(p, &g[p]).map_err(|e| e.to_string())?;
                }
                let mut views: Vec<&mut [f32]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                wire += gs.wait(&mut views).map_err(|e| e.to_string())?.wire_bytes() as u64;
            }
            opt.step(&mut m, &g);
        }
        curve.push(m.loss(&d.x, &d.y, &d.train));
    }
    if let Some(gs) = &gs {
        // Every rank must hold the same weights, bit for bit.
        let mine: Vec<f64> = vec![m
            .p
            .iter()
            .flatten()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01b3))
            as f64];
        let mut all = vec![0f64; n];
        gs.comm().allgather(&mine, &mut all).map_err(|e| e.to_string())?;
        if all.iter().any(|h| h.to_bits() != mine[0].to_bits()) {
            return Err(format!("rank {rank}: ranks hold different weights after training"));
        }
    }
    let correct = d.test.iter().filter(|&&i| (m.predict(&d.x[i]) >= 0.5) == (d.y[i] >= 0.5)).count();
    Ok(Run {
        codec: sync.map_or("single".into(), |(_, c, _)| c.name().into()),
        error_feedback: sync.is_some_and(|(.., fb)| fb),
        final_loss: *curve.last().unwrap_or(&f64::NAN),
        accuracy: correct as f64 / d.test.len() as f64,
        wire_bytes: wire,
        curve,
    })
}
