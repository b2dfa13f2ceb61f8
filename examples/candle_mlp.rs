//! An ordinary candle training loop made data-parallel by two lines
//! (marked `ringfuse:` below): an MLP learns which red wines are good
//! (the UCI wine-quality data shipped in `linfa-datasets`), each rank on
//! its share of every batch.
//!
//! ```text
//! cargo build --release --features candle --example candle_mlp
//! mpirun -np 4 target/release/examples/candle_mlp [--epochs 20] [--codec fp16]
//! ```
//!
//! Exits non-zero if the ranks end with different weights or the model
//! did not learn (test accuracy under 0.65; always guessing "good" scores
//! about 0.53).

#[path = "train_mlp/data.rs"]
mod data;

use std::process::ExitCode;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, loss, AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use clap::Parser;
use ringfuse::candle::CandleSync;
use ringfuse::{Codec, GradSyncOpts, ReduceOp};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Global batch (shared out over the ranks).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value = "fp16", value_parser = |s: &str| Codec::parse(s).ok_or("unknown codec"))]
    codec: Codec,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("candle_mlp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rows(d: &data::Data, idx: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
    let x: Vec<f32> = idx.iter().flat_map(|&i| d.x[i].iter().copied()).collect();
    let y: Vec<f32> = idx.iter().map(|&i| d.y[i]).collect();
    Ok((Tensor::from_vec(x, (idx.len(), d.inputs), &Device::Cpu)?, Tensor::from_vec(y, (idx.len(), 1), &Device::Cpu)?))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mpi = ringfuse::mpi::init()?;
    let comm = mpi.world()?;
    let (rank, n) = (comm.rank(), comm.size());
    let d = data::load(7);

    // The model and optimizer, as any candle program builds them.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let (l1, l2) = (linear(d.inputs, 32, vb.pp("l1"))?, linear(32, 1, vb.pp("l2"))?);
    let model = move |x: &Tensor| -> candle_core::Result<Tensor> { l2.forward(&l1.forward(x)?.relu()?) };
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 3e-3, ..Default::default() })?;

    // ringfuse: rank 0's initial weights go to every rank.
    let mut sync = CandleSync::new(comm, &varmap, GradSyncOpts::from_env()?.codec(args.codec))?;

    for epoch in 0..args.epochs {
        let order = d.epoch_order(epoch as u64);
        for batch in order.chunks(args.batch) {
            let mine: Vec<usize> = batch.iter().skip(rank).step_by(n).copied().collect();
            if mine.is_empty() {
                // Every rank takes part in every step, even without rows.
                let mut grads = Tensor::zeros(1, DType::F32, &Device::Cpu)?.backward()?;
                sync.synchronize(&mut grads)?;
                opt.step(&grads)?;
                continue;
            }
            let (x, y) = rows(&d, &mine)?;
            let loss = loss::binary_cross_entropy_with_logit(&model(&x)?, &y)?;
            let mut grads = loss.backward()?;
            sync.synchronize(&mut grads)?; // ringfuse: the mean gradient over all ranks
            opt.step(&grads)?;
        }
    }

    let (x, y) = rows(&d, &d.test)?;
    let logits = model(&x)?;
    let test_loss = loss::binary_cross_entropy_with_logit(&logits, &y)?.to_scalar::<f32>()?;
    let predicted = logits.ge(0.0)?.to_dtype(DType::F32)?;
    let accuracy = predicted.eq(&y)?.to_dtype(DType::F32)?.mean(D::Minus2)?.squeeze(0)?.to_scalar::<f32>()?;

    // Every rank must hold the same bits: compare with the max and min over ranks.
    let comm = sync.grad_sync().comm();
    let mine: Vec<f32> = {
        let vars = varmap.data().lock().map_err(|_| "poisoned VarMap")?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort(); // a HashMap's order differs per process
        let flat = names.iter().map(|k| vars[*k].as_tensor().flatten_all()?.to_vec1::<f32>());
        flat.collect::<candle_core::Result<Vec<_>>>()?.concat()
    };
    let (mut hi, mut lo) = (mine.clone(), mine.clone());
    comm.allreduce(&mut hi, ReduceOp::Max)?;
    comm.allreduce(&mut lo, ReduceOp::Min)?;
    let identical = hi == mine && lo == mine;
    let mut all_identical = [if identical { 1.0f32 } else { 0.0 }];
    comm.allreduce(&mut all_identical, ReduceOp::Min)?;
    if rank == 0 {
        println!(
            "candle_mlp: {n} ranks, codec {}, {} epochs: test loss {test_loss:.4}, accuracy {accuracy:.4}, \
             wire bytes per step per rank {}, identical weights on every rank: {}",
            args.codec,
            args.epochs,
            sync.grad_sync().last_report().wire_bytes(),
            all_identical[0] == 1.0
        );
    }
    if all_identical[0] != 1.0 {
        return Err("the ranks hold different weights".into());
    }
    if accuracy < 0.65 {
        return Err(format!("the model did not learn: accuracy {accuracy:.4}").into());
    }
    Ok(())
}
