//! A million-parameter model trained data-parallel with every way
//! GradSync can talk less, side by side: an MLP 11-1024-1024-1 (1.06M
//! parameters) on the red-wine quality data that `linfa-datasets` ships
//! inside the crate (1599 wines, nothing downloaded), labelled good
//! (quality >= 6) or not, 80/20 split. Every method starts from the same
//! weights and sees the same batches; each run's ranks must end with the
//! same weights bit for bit (for local SGD: after its last average).
//!
//! ```text
//! mpirun -np 4 target/release/examples/train_wide [--epochs 30] [--json F]
//! ```
//! Per method: final training loss, test accuracy, wire bytes rank 0 sent
//! per step, wall time per step. Int8 and top-k without error feedback are
//! the controls: what goes wrong without it.

#[path = "../train_mlp/data.rs"]
mod data;
#[path = "../common/logistic.rs"]
mod logistic;
mod model;

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use model::{Grads, Wide};
use ringfuse::{Codec, Communicator, Compression, GradSync, GradSyncOpts, LocalSgd};

#[derive(Parser)]
struct Args {
    /// Passes over the training set.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Global batch (split over the ranks).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Hidden width (1024: 1.06M parameters).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Seed of the starting weights and the batch order (the train/test
    /// split stays fixed): other seeds show how far native itself
    /// spreads.
    #[arg(long, default_value_t = SEED)]
    seed: u64,
    /// Only these methods (comma-separated names), default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the rows as JSON.
    #[arg(long)]
    json: Option<String>,
}

#[derive(serde::Serialize)]
struct Row {
    method: String,
    final_loss: f64,
    accuracy: f64,
    wire_bytes_per_step: f64,
    ms_per_step: f64,
    /// Top-k only: the entries every rank's pairs covered together (the
    /// synchronised gradient's non-zeros), over the entries one rank
    /// sent, averaged over the steps: 1 when all ranks pick the same
    /// entries, the rank count when none overlap.
    topk_union_over_k: Option<f64>,
}

const SEED: u64 = 2026;
const LR: f32 = 0.02;
const MOMENTUM: f32 = 0.9;

/// How a run synchronises.
#[derive(Clone)]
enum Method {
    Grads(GradSyncOpts),
    Local { period: u64, warmup: u64 },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mpi = ringfuse::mpi::init()?;
    let comm = Arc::new(mpi.world()?);
    // The split is the same whatever --seed: test accuracies compare.
    let d = data::load(SEED);
    let base = GradSyncOpts::from_env()?.average(false);
    let topk = |feedback: bool| {
        // With feedback, momentum moves into the compressor (DGC's
        // momentum correction) and the optimiser runs without it.
        let momentum = if feedback { MOMENTUM } else { 0.0 };
        // Values in FP16 (their rounding fed back), indices exact.
        let compression = Compression::TopK { fraction: 0.01, momentum };
        base.clone().codec(Codec::Fp16).compression(compression).error_feedback(feedback)
    };
    let methods: Vec<(&str, Method, f32)> = vec![
        ("native", Method::Grads(base.clone()), MOMENTUM),
        ("fp16", Method::Grads(base.clone().codec(Codec::Fp16)), MOMENTUM),
        ("int8+ef", Method::Grads(base.clone().codec(Codec::Int8).error_feedback(true)), MOMENTUM),
        ("int8 (no ef)", Method::Grads(base.clone().codec(Codec::Int8).error_feedback(false)), MOMENTUM),
        ("powersgd r=4", Method::Grads(base.clone().compression(Compression::PowerSgd { rank: 4 })), MOMENTUM),
        ("top-k 1%", Method::Grads(topk(true)), 0.0),
        ("top-k 1% (no ef)", Method::Grads(topk(false)), MOMENTUM),
        ("local sgd H=8", Method::Local { period: 8, warmup: 20 }, MOMENTUM),
    ];
    let mut rows = Vec::new();
    for (name, method, momentum) in methods {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        rows.push(train(&args, &d, &comm, name, method, momentum)?);
    }
    if comm.rank() == 0 {
        let native = rows.iter().find(|r| r.method == "native").map(|r| (r.final_loss, r.wire_bytes_per_step));
        println!(
            "# {} ranks, MLP 11-{w}-{w}-1 ({} parameters), {} epochs, global batch {}, SGD lr {LR}, seed {}",
            comm.size(),
            Wide::new(d.inputs, args.width, 0).len(),
            args.epochs,
            args.batch,
            args.seed,
            w = args.width
        );
        println!(
            "{:<18} {:>10} {:>9} {:>14} {:>9} {:>9} {:>8}",
            "method", "loss", "accuracy", "wire B/step", "of native", "ms/step", "loss vs"
        );
        for r in &rows {
            let (of, vs) = native.map_or((String::from("-"), String::from("-")), |(l, w)| {
                (
                    format!("1/{:.0}", w / r.wire_bytes_per_step.max(1.0)),
                    format!("{:+.1}%", (r.final_loss / l - 1.0) * 100.0),
                )
            });
            let union = r.topk_union_over_k.map_or(String::new(), |u| format!("  (union {u:.2} k)"));
            println!(
                "{:<18} {:>10.5} {:>9.4} {:>14.0} {:>9} {:>9.1} {:>8}{union}",
                r.method, r.final_loss, r.accuracy, r.wire_bytes_per_step, of, r.ms_per_step, vs
            );
        }
        if let Some(p) = &args.json {
            std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
        }
        println!("train_wide: every run's ranks ended with the same weights");
    }
    Ok(())
}

fn train(
    args: &Args,
    d: &data::Data,
    comm: &Arc<Communicator>,
    name: &str,
    method: Method,
    momentum: f32,
) -> Result<Row, Box<dyn std::error::Error>> {
    let (rank, n) = (comm.rank(), comm.size());
    // The same start on every rank (one seed), so no broadcast is needed.
    let mut m = Wide::new(d.inputs, args.width, args.seed);
    let shapes = m.shapes();
    let lens: Vec<usize> = shapes.iter().map(|s| s.0 * s.1).collect();
    let (mut sync, mut local) = match &method {
        Method::Grads(opts) => (Some(GradSync::with_shapes(comm.clone(), &shapes, opts.clone())?), None),
        Method::Local { period, warmup } => (
            None,
            Some(LocalSgd::new(comm.clone(), &lens, GradSyncOpts::from_env()?.average(false), *period, *warmup)?),
        ),
    };
    let mut g = Grads::zeros(&lens);
    let mut velocity = Grads::zeros(&lens);
    let (mut wire, mut steps, mut busy) = (0f64, 0u64, 0f64);
    let sent_per_rank = match &method {
        Method::Grads(opts) => match opts.compression {
            Compression::TopK { fraction, .. } => {
                Some(lens.iter().map(|&l| (l as f64 * fraction as f64).round()).sum::<f64>())
            }
            _ => None,
        },
        _ => None,
    };
    let mut union = 0f64;
    for epoch in 0..args.epochs {
        let order = d.epoch_order(args.seed + epoch as u64);
        for batch in order.chunks(args.batch) {
            let t = Instant::now();
            let mine: Vec<usize> = batch.iter().skip(rank).step_by(n).copied().collect();
            let warm = local.as_ref().is_none_or(|l| l.warming_up());
            // Synchronised gradients sum every rank's share of the batch's
            // mean; a rank stepping alone takes the mean of its own share.
            let scale = if warm { 1.0 / batch.len() as f32 } else { 1.0 / mine.len().max(1) as f32 };
            g.fill(0.0);
            m.backward(&d.x, &d.y, &mine, scale, &mut g);
            let mut views = g.views();
            if let Some(s) = sync.as_mut() {
                wire += s.synchronize(&mut views)?.wire_bytes() as f64;
                if let Some(k) = sent_per_rank {
                    union += views.iter().map(|v| v.iter().filter(|x| **x != 0.0).count()).sum::<usize>() as f64 / k;
                }
            } else if let Some(l) = local.as_mut() {
                if let Some(r) = l.sync_gradients(&mut views)? {
                    wire += r.wire_bytes() as f64;
                }
            }
            m.sgd(&g, &mut velocity, LR, momentum);
            if let Some(l) = local.as_mut() {
                if l.sync_parameters(&mut m.views())? {
                    wire += l.last_average_wire_bytes() as f64;
                }
            }
            busy += t.elapsed().as_secs_f64();
            steps += 1;
        }
    }
    // Local SGD ends on an average, so every method's ranks can agree.
    if let Some(l) = local.as_mut() {
        let opts = GradSyncOpts::from_env()?.average(false);
        let mut flat: Vec<f32> = m.flat().iter().map(|x| x / n as f32).collect();
        l.comm().allreduce_with(&mut flat, ringfuse::ReduceOp::Sum, &opts.allreduce)?;
        m.load(&flat);
    }
    let hash =
        m.flat().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
    let mut all = vec![0f64; n];
    comm.allgather(&[f64::from_bits(hash & 0x7fef_ffff_ffff_ffff)], &mut all)?;
    if all.iter().any(|h| h.to_bits() != all[0].to_bits()) {
        return Err(format!("{name}: rank {rank} ends with weights that differ from rank 0's").into());
    }
    let correct = d.test.iter().filter(|&&i| (m.predict(&d.x[i]) >= 0.5) == (d.y[i] >= 0.5)).count();
    Ok(Row {
        method: name.into(),
        final_loss: m.loss(&d.x, &d.y, &d.train),
        accuracy: correct as f64 / d.test.len() as f64,
        wire_bytes_per_step: wire / steps.max(1) as f64,
        ms_per_step: busy / steps.max(1) as f64 * 1e3,
        topk_union_over_k: sent_per_rank.map(|_| union / steps.max(1) as f64),
    })
}
