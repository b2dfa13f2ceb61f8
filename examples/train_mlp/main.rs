//! Data-parallel training with GradSync: a small MLP learns which red
//! wines are good (quality >= 6) from the UCI wine-quality data shipped in
//! `linfa-datasets` (nothing is downloaded), each rank on its own shard of
//! every batch, against a single-process run of the same model and seed.
//!
//! ```text
//! mpirun -np 4 target/release/examples/train_mlp [--epochs 40] [--json F] [--plot F.svg]
//! mpirun --enable-recovery -np 4 target/release/examples/train_mlp --kill-rank 2 --kill-at-epoch 10
//! ```
//!
//! It prints final loss and test accuracy for: single process, native,
//! fp16, fp16scaled, int8 with and without error feedback; and exits
//! non-zero if a run's ranks disagree or a codec misses its target
//! (fp16/fp16scaled within 1% of native's final loss, int8 with feedback
//! within 2%, native within 1% of the single process).
//!
//! With `--kill-rank R --kill-at-epoch E`, only the native run: rank `R`
//! kills itself (SIGKILL) at the start of epoch `E`, and the survivors
//! name it, shrink their communicator and run the interrupted step again
//! over themselves, splitting each batch among fewer ranks. They must end
//! bitwise identical, having applied every step exactly once, within 1%
//! of the final loss of the same run with no rank lost (run first).
//! `--survive` does the same for a rank lost some other way (a host cut
//! off: `ci/netsim.sh --cut`), against the single process. `mpirun` must be told not to end
//! the job when a rank dies (`--enable-recovery`).

mod data;
#[path = "../common/logistic.rs"]
mod logistic;
mod model;
mod plot;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use model::{Mlp, Sgd};
use ringfuse::{Codec, Communicator, GradSync, GradSyncOpts};

#[derive(Parser, Clone)]
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
    /// This rank kills itself (SIGKILL) at the start of `--kill-at-epoch`;
    /// the others go on without it.
    #[arg(long, requires = "kill_at_epoch")]
    kill_rank: Option<usize>,
    /// The epoch `--kill-rank` dies at.
    #[arg(long, requires = "kill_rank")]
    kill_at_epoch: Option<usize>,
    /// Go on without a rank lost some other way (its host cut off):
    /// what `--kill-rank` does, with nobody killed here.
    #[arg(long)]
    survive: bool,
}

#[derive(serde::Serialize, Clone)]
pub struct Run {
    codec: String,
    error_feedback: bool,
    final_loss: f64,
    accuracy: f64,
    wire_bytes: u64,
    /// Optimiser steps applied (every batch of every epoch, once).
    steps: u64,
    /// Ranks at the end (fewer than at the start after a loss).
    ranks: usize,
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
    if args.kill_rank.is_some() || args.survive {
        return survive(&args, &d, &comm);
    }
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

/// The native run with a rank killed: checks that the survivors went on.
fn survive(args: &Args, d: &data::Data, comm: &Arc<Communicator>) -> ExitCode {
    let single = match train(args, d, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let world_rank = comm.rank();
    // The same run with no rank lost, on every rank: the reference. Not
    // with `--survive`, whose loss may come at any moment, this run's
    // included: the single process is the reference then.
    let calm = Args { kill_rank: None, kill_at_epoch: None, survive: false, ..args.clone() };
    let full =
        if args.kill_rank.is_some() { train(&calm, d, Some((comm, Codec::Native, false))) } else { Ok(single.clone()) };
    let full = match full {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let run = match train(args, d, Some((comm, Codec::Native, false))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let batches = d.train.len().div_ceil(args.batch) as u64 * args.epochs as u64;
    let off = (run.final_loss / full.final_loss - 1.0).abs();
    let reference = if args.kill_rank.is_some() { format!("{} ranks throughout", full.ranks) } else { "single".into() };
    println!(
        "rank {world_rank} (one of {} ranks at the end): {} steps of {batches} applied, final loss {:.5}; \
         {reference} {:.5} ({:+.3}%); single process {:.5}",
        run.ranks,
        run.steps,
        run.final_loss,
        full.final_loss,
        (run.final_loss / full.final_loss - 1.0) * 100.0,
        single.final_loss,
    );
    if run.steps != batches || off > 0.01 || run.ranks >= comm.size() {
        eprintln!(
            "FAILED: rank {world_rank}: {} steps applied of {batches}, {} ranks at the end, loss {:.2}% from the run without a loss",
            run.steps,
            run.ranks,
            off * 100.0
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One training run; `sync` is `None` for the single-process run (every
/// rank computes it alone, on every sample of each batch).
fn train(args: &Args, d: &data::Data, sync: Option<(&Arc<Communicator>, Codec, bool)>) -> Result<Run, String> {
    let world_rank = sync.map_or(0, |(c, ..)| c.rank());
    let rank = world_rank;
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
    let (mut curve, mut wire, mut steps) = (Vec::new(), 0u64, 0u64);
    let scale = 1.0 / args.batch as f32;
    for epoch in 0..args.epochs {
        if gs.is_some() && args.kill_at_epoch == Some(epoch) && args.kill_rank == Some(world_rank) {
            eprintln!("rank {world_rank}: killing itself at the start of epoch {epoch}");
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
        let order = d.epoch_order(SEED + epoch as u64);
        for batch in order.chunks(args.batch) {
            // Until the step goes through: after a lost rank, the
            // survivors split the same batch among themselves and run the
            // step again.
            loop {
                let (rank, n) = gs.as_ref().map_or((0, 1), |gs| (gs.comm().rank(), gs.comm().size()));
                // This rank's share of the batch: every n-th sample.
                let mine: Vec<usize> = batch.iter().skip(rank).step_by(n).copied().collect();
                g.iter_mut().for_each(|v| v.fill(0.0));
                let s = if batch.len() == args.batch { scale } else { 1.0 / batch.len() as f32 };
                m.backward(&d.x, &d.y, &mine, s, &mut g);
                let Some(gs) = gs.as_mut() else { break };
                let started = std::time::Instant::now();
                match sync_step(gs, &mut g) {
                    Ok(bytes) => {
                        wire += bytes;
                        break;
                    }
                    Err(e @ ringfuse::Error::PeerLost { .. }) if args.kill_rank.is_some() || args.survive => {
                        // The step began before the kill or at it: its
                        // length bounds the time from the kill to the error.
                        let failed_after = started.elapsed();
                        let t = std::time::Instant::now();
                        let lost = gs.shrink().map_err(|e| e.to_string())?;
                        println!(
                            "rank {world_rank}: step {steps} failed after {failed_after:.1?} ({e}); \
                             shrunk in {:.1?} to rank {} of {} (lost {lost:?}); running step {steps} again",
                            t.elapsed(),
                            gs.comm().rank(),
                            gs.comm().size()
                        );
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            opt.step(&mut m, &g);
            steps += 1;
        }
        curve.push(m.loss(&d.x, &d.y, &d.train));
    }
    let ranks = gs.as_ref().map_or(1, |gs| gs.comm().size());
    if let Some(gs) = &gs {
        let (rank, n) = (gs.comm().rank(), gs.comm().size());
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
        steps,
        ranks,
        curve,
    })
}

/// One step's gradients through `gs`: its wire bytes.
fn sync_step(gs: &mut GradSync, g: &mut [Vec<f32>; 4]) -> ringfuse::Result<u64> {
    // Backward produced the output layer first: mark it first.
    for p in (0..4).rev() {
        gs.mark_ready(p, &g[p])?;
    }
    let mut views: Vec<&mut [f32]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
    Ok(gs.wait(&mut views)?.wire_bytes() as u64)
}
