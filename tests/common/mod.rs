//! Inputs and reference checks shared by the integration tests.
#![allow(dead_code)]

use rand::{rngs::SmallRng, Rng, SeedableRng};
use ringfuse::{Codec, DType, Element, ReduceOp};

pub const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
pub const CODECS: [Codec; 3] = [Codec::Native, Codec::Fp16, Codec::Bf16];

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

/// Checks `got` (one rank's result) against the f64 reference of all
/// ranks' `inputs`; panics with the first element outside the bound.
pub fn check_result<E: Element>(inputs: &[Vec<E>], got: &[E], op: ReduceOp, codec: Codec, what: &str) {
    let n = inputs.len();
    let wire = codec.wire_dtype(E::DTYPE);
    // Storing the final wire value back into a narrower element rounds once more.
    let u_elem = if E::DTYPE.size() < wire.size() || (E::DTYPE != wire && E::DTYPE.size() == 2) {
        ringfuse::codec::unit_roundoff(E::DTYPE)
    } else {
        0.0
    };
    for i in 0..got.len() {
        let xs = inputs.iter().map(|v| v[i].to_f64());
        let g = got[i].to_f64();
        let round_to_wire = |x: f64| -> f64 {
            let w = match wire {
                DType::F16 => <half::f16 as Element>::from_f64(x).to_f64(),
                DType::Bf16 => <half::bf16 as Element>::from_f64(x).to_f64(),
                DType::F32 => x as f32 as f64,
                DType::F64 => x,
            };
            E::from_f64(w).to_f64()
        };
        match op {
            ReduceOp::Min | ReduceOp::Max => {
                let exact = if op == ReduceOp::Min {
                    xs.fold(f64::INFINITY, f64::min)
                } else {
                    xs.fold(f64::NEG_INFINITY, f64::max)
                };
                let want = if n == 1 { exact } else { round_to_wire(exact) };
                assert_eq!(g.to_bits(), want.to_bits(), "{what}: element {i}: {op} gave {g}, want exactly {want}");
            }
            ReduceOp::Sum | ReduceOp::Avg => {
                let exact: f64 = xs.clone().sum();
                let abs: f64 = xs.map(f64::abs).sum();
                let mut bound = codec.sum_error_bound(E::DTYPE, n, abs) + u_elem * exact.abs() * 1.0001;
                let mut want = exact;
                if op == ReduceOp::Avg {
                    want /= n as f64;
                    bound = bound / n as f64 + 2f64.powi(-22) * want.abs();
                }
                if codec == Codec::Native && matches!(E::DTYPE, DType::F32 | DType::F64) && op == ReduceOp::Sum {
                    assert_eq!(g, want, "{what}: element {i}: integer sum must be exact");
                }
                assert!((g - want).abs() <= bound, "{what}: element {i}: {op} gave {g}, want {want} within {bound:e}");
            }
            ReduceOp::Prod => {
                let exact: f64 = xs.product();
                let u = codec.unit_roundoff(E::DTYPE)
                    + if E::DTYPE == DType::F64 { 2f64.powi(-53) } else { 2f64.powi(-24) };
                let bound =
                    if n == 1 { 0.0 } else { ((1.0 + u).powi(n as i32) * (1.0 + u_elem) - 1.0) * exact.abs() * 1.0001 };
                assert!(
                    (g - exact).abs() <= bound,
                    "{what}: element {i}: prod gave {g}, want {exact} within {bound:e}"
                );
            }
        }
    }
}

pub fn bits<E: Element>(v: &[E]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits_u64()).collect()
}
