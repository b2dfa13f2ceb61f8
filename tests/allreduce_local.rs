//! The in-process tier: every rank is a thread running the real executor,
//! kernels and schedule over the local transport. Sweeps ranks x counts x
//! dtypes x ops x codecs x algorithms, and asserts for every case that all ranks hold
//! the same bits, that a second run gives the same bits, and that every
//! element is within the codec's documented bound (exact where promised).

mod common;

use common::*;
use half::{bf16, f16};
use ringfuse::{Algorithm, AllreduceOpts, Codec, Element, ReduceOp};

const RANKS: [usize; 6] = [1, 2, 3, 4, 5, 8];
/// The 2^20-element sweeps' rank counts: the smallest ring, an odd one
/// (blocks of unequal length) and a power of two past 4; the others add
/// CI time without a schedule the small sweeps do not already cover.
const LARGE_RANKS: [usize; 3] = [2, 3, 8];
const COUNTS: [usize; 7] = [0, 1, 4, 100, 1000, 10007, 1 << 20];

/// Small slices for small buffers, so blocks span many messages and the
/// slot pool wraps around; the default slicing for the large buffer.
fn opts_for(count: usize, codec: Codec, variant: usize) -> AllreduceOpts {
    let o = AllreduceOpts::default().codec(codec).timeout(std::time::Duration::from_secs(60));
    if count >= 1 << 20 {
        o
    } else {
        o.slice_bytes(if variant % 2 == 0 { 128 } else { 1024 }).slots(1 + variant % 4)
    }
}

fn case<E: Element>(n: usize, count: usize, op: ReduceOp, codec: Codec, variant: usize, algo: Algorithm) {
    let what = format!("{}x{} {:?} {op} {codec} {algo:?}", n, count, E::DTYPE);
    let opts = opts_for(count, codec, variant).algorithm(algo);
    let inputs: Vec<Vec<E>> = (0..n).map(|r| input::<E>(r, count, op, codec, 42)).collect();
    let run = || {
        ringfuse::local::run(n, |comm| {
            let mut buf = inputs[comm.rank()].clone();
            comm.allreduce_with(&mut buf, op, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
            buf
        })
    };
    let first = run();
    for (r, out) in first.iter().enumerate() {
        assert_eq!(bits(out), bits(&first[0]), "{what}: rank {r} differs from rank 0");
    }
    check_result(&inputs, &first[0], op, codec, &what);
    let again = run();
    assert_eq!(bits(&again[0]), bits(&first[0]), "{what}: second run gave different bits");
}

fn sweep<E: Element>(ranks: &[usize], counts: &[usize]) {
    let mut variant = 0;
    for &n in ranks {
        for &count in counts {
            for op in OPS {
                for codec in CODECS {
                    // Both schedules on every case (Auto would pick only
                    // one per size), so each is held to the contract.
                    for algo in [Algorithm::Ring, Algorithm::RecursiveDoubling] {
                        case::<E>(n, count, op, codec, variant, algo);
                    }
                    variant += 1;
                }
            }
        }
    }
}

#[test]
fn sweep_f32_small() {
    sweep::<f32>(&RANKS, &COUNTS[..6]);
}
#[test]
fn sweep_f64_small() {
    sweep::<f64>(&RANKS, &COUNTS[..6]);
}
#[test]
fn sweep_f16_small() {
    sweep::<f16>(&RANKS, &COUNTS[..6]);
}
#[test]
fn sweep_bf16_small() {
    sweep::<bf16>(&RANKS, &COUNTS[..6]);
}
#[test]
#[cfg_attr(debug_assertions, ignore = "2^20 elements: run in release (ci/test.sh does)")]
fn sweep_f32_large() {
    sweep::<f32>(&LARGE_RANKS, &COUNTS[6..]);
}
#[test]
#[cfg_attr(debug_assertions, ignore = "2^20 elements: run in release (ci/test.sh does)")]
fn sweep_f64_large() {
    sweep::<f64>(&LARGE_RANKS, &COUNTS[6..]);
}
#[test]
#[cfg_attr(debug_assertions, ignore = "2^20 elements: run in release (ci/test.sh does)")]
fn sweep_f16_large() {
    sweep::<f16>(&LARGE_RANKS, &COUNTS[6..]);
}
#[test]
#[cfg_attr(debug_assertions, ignore = "2^20 elements: run in release (ci/test.sh does)")]
fn sweep_bf16_large() {
    sweep::<bf16>(&LARGE_RANKS, &COUNTS[6..]);
}

/// The tree and halving-doubling on every rank count 1..9 and 16, counts
/// including 0, 1 and primes, every op and every element-wise codec (the
/// block-scaled ones run the ring; see `Algorithm::supports`).
fn sweep_algos<E: Element>(ranks: &[usize], counts: &[usize]) {
    let mut variant = 0;
    for &n in ranks {
        for &count in counts {
            for op in OPS {
                for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
                    for algo in [Algorithm::Tree, Algorithm::HalvingDoubling] {
                        case::<E>(n, count, op, codec, variant, algo);
                    }
                    variant += 1;
                }
            }
        }
    }
}

const ALGO_RANKS: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16];

#[test]
fn sweep_tree_and_halving_f32() {
    sweep_algos::<f32>(&ALGO_RANKS, &[0, 1, 2, 7, 101, 1009, 10007]);
    sweep_algos::<f32>(&[3, 8], &[1 << 20]);
}

#[test]
fn sweep_tree_and_halving_f64() {
    sweep_algos::<f64>(&ALGO_RANKS, &[0, 1, 13, 1009]);
}

/// Hierarchical on in-process ranks declared as hosts (`per_host`
/// consecutive ranks each): every op and element-wise codec, counts
/// including 0, 1 and primes, bitwise identical and within the bound.
fn hier_case<E: Element>(n: usize, per_host: usize, count: usize, op: ReduceOp, codec: Codec, variant: usize) {
    let what = format!("hier {n}/{per_host} x{count} {:?} {op} {codec}", E::DTYPE);
    let opts = opts_for(count, codec, variant).algorithm(Algorithm::Hierarchical);
    let inputs: Vec<Vec<E>> = (0..n).map(|r| input::<E>(r, count, op, codec, 7)).collect();
    let out = ringfuse::local::run(n, |mut comm| {
        comm.set_ranks_per_host(per_host).unwrap();
        assert_eq!(comm.algorithm_for(&opts, E::DTYPE, count), Algorithm::Hierarchical, "{what}");
        let mut buf = inputs[comm.rank()].clone();
        comm.allreduce_with(&mut buf, op, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
        buf
    });
    for (r, o) in out.iter().enumerate() {
        assert_eq!(bits(o), bits(&out[0]), "{what}: rank {r} differs from rank 0");
    }
    check_result(&inputs, &out[0], op, codec, &what);
}

#[test]
fn sweep_hierarchical() {
    let mut variant = 0;
    for (n, per_host) in [(2, 1), (4, 2), (6, 2), (6, 3), (8, 2), (8, 4), (9, 3), (16, 4)] {
        for count in [0usize, 1, 7, 101, 1009, 10007] {
            for op in OPS {
                for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
                    hier_case::<f32>(n, per_host, count, op, codec, variant);
                    variant += 1;
                }
            }
        }
    }
    hier_case::<f64>(6, 3, 1009, ReduceOp::Sum, Codec::Fp16, 0);
    hier_case::<f32>(8, 4, 1 << 20, ReduceOp::Avg, Codec::Bf16, 0);
}
