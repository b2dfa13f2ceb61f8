//! The candle integration on in-process ranks: rank 0's weights reach
//! every rank, data-parallel training matches single-process training on
//! the whole batch, and every rank holds the same bits after every step.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, Optimizer, VarBuilder, VarMap, SGD};
use ringfuse::candle::CandleSync;
use ringfuse::{Codec, GradSyncOpts};

const RANKS: usize = 3;
const ROWS: usize = 12; // 4 per rank
const INPUTS: usize = 5;

fn data() -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..ROWS * INPUTS).map(|i| ((i * 37 % 23) as f32 / 23.0) - 0.5).collect();
    let y: Vec<f32> = (0..ROWS).map(|r| x[r * INPUTS..(r + 1) * INPUTS].iter().sum::<f32>() * 1.5 + 0.5).collect();
    (x, y)
}

/// A two-layer model whose weights start at `start` (so ranks differ
/// until the broadcast).
fn model(varmap: &VarMap, start: f64) -> impl Module {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let w1 = vb.get_with_hints((8, INPUTS), "l1.weight", Init::Const(start)).unwrap();
    let w2 = vb.get_with_hints((1, 8), "l2.weight", Init::Const(start * 0.5)).unwrap();
    let b2 = vb.get_with_hints(1, "l2.bias", Init::Const(0.0)).unwrap();
    // Break the symmetry of the constant start deterministically.
    let bump: Vec<f32> = (0..8 * INPUTS).map(|i| (i % 7) as f32 * 0.01).collect();
    let bumped = (&w1 + Tensor::from_vec(bump, (8, INPUTS), &Device::Cpu).unwrap()).unwrap();
    varmap.data().lock().unwrap()["l1.weight"].set(&bumped).unwrap(); // the Var behind w1
    move |x: &Tensor| -> candle_core::Result<Tensor> {
        x.matmul(&w1.t()?)?.tanh()?.matmul(&w2.t()?)?.broadcast_add(&b2)
    }
}

fn loss(m: &impl Module, x: &[f32], y: &[f32]) -> Tensor {
    let rows = y.len();
    let x = Tensor::from_slice(x, (rows, INPUTS), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(y, (rows, 1), &Device::Cpu).unwrap();
    candle_nn::loss::mse(&m.forward(&x).unwrap(), &y).unwrap()
}

fn weights(varmap: &VarMap) -> Vec<Vec<f32>> {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names.iter().map(|n| data[*n].as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
}

fn train_distributed(codec: Codec, steps: usize) -> Vec<Vec<Vec<f32>>> {
    let (x, y) = data();
    ringfuse::local::run(RANKS, |comm| {
        let rank = comm.rank();
        let varmap = VarMap::new();
        let m = model(&varmap, 0.1 + rank as f64); // a different start per rank
        let mut sync = CandleSync::new(comm, &varmap, GradSyncOpts::default().codec(codec)).unwrap();
        let mut opt = SGD::new(varmap.all_vars(), 0.1).unwrap();
        let per = ROWS / RANKS;
        let (xs, ys) = (&x[rank * per * INPUTS..(rank + 1) * per * INPUTS], &y[rank * per..(rank + 1) * per]);
        for _ in 0..steps {
            let mut grads = loss(&m, xs, ys).backward().unwrap();
            sync.synchronize(&mut grads).unwrap();
            opt.step(&grads).unwrap();
        }
        weights(&varmap)
    })
}

#[test]
fn new_gives_every_rank_rank_0s_weights() {
    let out = ringfuse::local::run(RANKS, |comm| {
        let varmap = VarMap::new();
        let _m = model(&varmap, 0.1 + comm.rank() as f64);
        let before = weights(&varmap);
        let sync = CandleSync::new(comm, &varmap, GradSyncOpts::default()).unwrap();
        assert_eq!(sync.names().collect::<Vec<_>>(), ["l1.weight", "l2.bias", "l2.weight"]);
        (before, weights(&varmap))
    });
    assert_ne!(out[1].0, out[0].0, "ranks should start apart");
    assert!(out.iter().all(|(_, after)| after == &out[0].0), "every rank holds rank 0's weights");
}

/// Equal shards, mean loss per shard, averaged gradients: the same
/// updates as one process on the whole batch.
#[test]
fn data_parallel_training_matches_one_process_on_the_whole_batch() {
    let steps = 40;
    let (x, y) = data();
    let varmap = VarMap::new();
    let m = model(&varmap, 0.1);
    let mut opt = SGD::new(varmap.all_vars(), 0.1).unwrap();
    let first_loss = loss(&m, &x, &y).to_scalar::<f32>().unwrap();
    for _ in 0..steps {
        opt.backward_step(&loss(&m, &x, &y)).unwrap();
    }
    let last_loss = loss(&m, &x, &y).to_scalar::<f32>().unwrap();
    assert!(last_loss < first_loss * 0.6, "the model should learn: {first_loss} -> {last_loss}");
    let single = weights(&varmap);

    for (codec, tol) in [(Codec::Native, 1e-5), (Codec::Fp16, 2e-3), (Codec::Int8, 2e-2)] {
        let out = train_distributed(codec, steps);
        assert!(out.iter().all(|w| w == &out[0]), "{codec}: ranks hold different weights");
        for (a, b) in out[0].iter().flatten().zip(single.iter().flatten()) {
            assert!((a - b).abs() <= tol, "{codec}: distributed {a} vs single {b}");
        }
    }
}

/// A variable unused on one rank still gets that rank's zero
/// contribution, and every rank the mean.
#[test]
fn a_variable_without_a_gradient_contributes_zeros() {
    let out = ringfuse::local::run(2, |comm| {
        let rank = comm.rank();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let a = vb.get_with_hints(4, "a", Init::Const(1.0)).unwrap();
        let b = vb.get_with_hints(4, "b", Init::Const(1.0)).unwrap();
        let mut sync = CandleSync::new(comm, &varmap, GradSyncOpts::default()).unwrap();
        // Rank 0's loss uses only `a`; rank 1's uses both: d/da = 2, d/db = 3.
        let l = if rank == 0 {
            (&a * 2.0).unwrap().sum_all().unwrap()
        } else {
            ((&a * 2.0).unwrap() + (&b * 3.0).unwrap()).unwrap().sum_all().unwrap()
        };
        let mut grads = l.backward().unwrap();
        assert_eq!(grads.get(&b).is_some(), rank == 1);
        sync.synchronize(&mut grads).unwrap();
        let get = |v: &Tensor| grads.get(v).unwrap().to_vec1::<f32>().unwrap();
        (get(&a), get(&b))
    });
    assert!(out.iter().all(|o| o == &(vec![2.0; 4], vec![1.5; 4])), "{out:?}");
}
