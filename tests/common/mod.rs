//! Inputs and reference checks shared by the integration tests.
#![allow(dead_code)]

use rand::{rngs::SmallRng, Rng, SeedableRng};
use ringfuse::{Codec, DType, Element, ReduceOp};

pub const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
pub const CODECS: [Codec; 5] = Codec::ALL;

/// Rank `rank`'s input: small integers for exact native sums, values near
/// 1 for products (so they neither overflow nor vanish), uniform in
/// [-1, 1] otherwise. Exactly representable in `E`.
pub fn input<E: Element>(rank: usize, count: usize, op: ReduceOp, codec: Codec, seed: u64) -> Vec<E> {
    let mut rng = SmallRng::seed_from_u64(seed ^ (rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ count as u64);
    let integer = codec == Codec::Native
        && matches!(E::DTYPE, DType::F32 | DType::F64)
        && matches!(op, ReduceOp::Sum | ReduceOp::Avg);
    (0..count)
        .map(|_| {
            let v = if integer {
                rng.random_range(-64i32..=64) as f64
            } else if op == ReduceOp::Prod {
                rng.random_range(0.7..1.3)
            } else {
                rng.random_range(-1.0..1.0)
            };
            E::from_f64(v)
        })
        .collect()
}

/// Checks `got` (one rank's result) against `ringfuse::verify` on all
/// ranks' `inputs`; panics with the first element outside the contract.
/// Native f32/f64 sums of integers must be exact.
pub fn check_result<E: Element>(inputs: &[Vec<E>], got: &[E], op: ReduceOp, codec: Codec, what: &str) {
    let mut xs = vec![0f64; inputs.len()];
    let peaks: Vec<f64> = inputs
        .iter()
        .map(|v| v.iter().map(|x| x.to_f64().abs()).filter(|a| a.is_finite()).fold(0.0, f64::max))
        .collect();
    let exact_ints = codec == Codec::Native && matches!(E::DTYPE, DType::F32 | DType::F64) && op == ReduceOp::Sum;
    for i in 0..got.len() {
        for (x, v) in xs.iter_mut().zip(inputs) {
            *x = v[i].to_f64();
        }
        let g = got[i].to_f64();
        let want = ringfuse::verify::expect(codec, E::DTYPE, op, &xs, &peaks);
        assert!(want.accepts(g), "{what}: element {i}: got {g}, want {want:?}");
        if exact_ints {
            assert_eq!(g, xs.iter().sum::<f64>(), "{what}: element {i}: integer sum must be exact");
        }
    }
}

pub fn bits<E: Element>(v: &[E]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits_u64()).collect()
}
pub mod faults;
pub mod strays;
