//! The numerical contract as code: what a collective's result must be, given
//! every rank's input for one element. The tests, the examples and
//! `ringfuse-perf` all judge results with these functions, so the bound a
//! table reports is the bound the tests enforce. See [`crate::codec`] for
//! where the bounds come from.

use crate::codec::{unit_roundoff, Codec};
use crate::element::{DType, ReduceOp};

/// What one element of a reduction must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// Exactly this value (as `f64` of the buffer's element).
    Exact(f64),
    /// Within `bound` of `value`.
    Within {
        /// The exact value.
        value: f64,
        /// The largest allowed `|result - value|`.
        bound: f64,
    },
}

impl Expect {
    /// Whether `got` meets the expectation. NaN never does.
    pub fn accepts(&self, got: f64) -> bool {
        match *self {
            Expect::Exact(v) => got.to_bits() == v.to_bits() || got == v,
            Expect::Within { value, bound } => (got - value).abs() <= bound,
        }
    }
    /// `|got - exact| / |exact|` (absolute error where the exact value is 0).
    pub fn rel_err(&self, got: f64) -> f64 {
        let v = match *self {
            Expect::Exact(v) | Expect::Within { value: v, .. } => v,
        };
        let err = (got - v).abs();
        if v == 0.0 {
            err
        } else {
            err / v.abs()
        }
    }
}

/// The value `x` takes after one rounding to the wire and the store back
/// into the buffer's element type.
pub fn through_wire(codec: Codec, dtype: DType, x: f64) -> f64 {
    use crate::element::Element;
    let w = match codec.wire_dtype(dtype) {
        DType::F16 => <half::f16 as Element>::from_f64(x).to_f64(),
        DType::Bf16 => <half::bf16 as Element>::from_f64(x).to_f64(),
        DType::F32 => x as f32 as f64,
        DType::F64 => x,
    };
    match dtype {
        DType::F16 => <half::f16 as Element>::from_f64(w).to_f64(),
        DType::Bf16 => <half::bf16 as Element>::from_f64(w).to_f64(),
        DType::F32 => w as f32 as f64,
        DType::F64 => w,
    }
}

/// What an allreduce (or reduce-scatter) of `op` over the ranks' inputs
/// `xs` (one element, every rank, as `f64`) must produce for a buffer of
/// `dtype` with wire `codec`. One rank returns its input unchanged.
pub fn expect(codec: Codec, dtype: DType, op: ReduceOp, xs: &[f64]) -> Expect {
    let n = xs.len();
    if n == 1 {
        return Expect::Exact(xs[0]);
    }
    let wire = codec.wire_dtype(dtype);
    // Storing the final wire value into a narrower element rounds again.
    let u_elem = if dtype != wire && dtype.size() == 2 { unit_roundoff(dtype) } else { 0.0 };
    let acc = if dtype == DType::F64 { 2f64.powi(-53) } else { 2f64.powi(-24) };
    match op {
        ReduceOp::Min | ReduceOp::Max => {
            let e = if op == ReduceOp::Min {
                xs.iter().copied().fold(f64::INFINITY, f64::min)
            } else {
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            };
            Expect::Exact(through_wire(codec, dtype, e))
        }
        ReduceOp::Sum | ReduceOp::Avg => {
            let exact: f64 = xs.iter().sum();
            let abs: f64 = xs.iter().map(|x| x.abs()).sum();
            let mut bound = codec.sum_error_bound(dtype, n, abs) + u_elem * exact.abs() * 1.0001;
            let mut value = exact;
            if op == ReduceOp::Avg {
                value /= n as f64;
                bound = bound / n as f64 + 2.0 * acc * value.abs();
            }
            Expect::Within { value, bound }
        }
        ReduceOp::Prod => {
            let value: f64 = xs.iter().product();
            let u = codec.unit_roundoff(dtype) + acc;
            // The ring rounds each partial product once (n roundings);
            // recursive doubling rounds every node of its tree (2n - 1).
            let bound = ((1.0 + u).powi(2 * n as i32 - 1) * (1.0 + u_elem) - 1.0) * value.abs() * 1.0001;
            Expect::Within { value, bound }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_accept_the_true_error_and_reject_more() {
        let e = expect(Codec::Fp16, DType::F32, ReduceOp::Sum, &[1.0, 1.0 / 3.0]);
        let Expect::Within { value, bound } = e else { panic!() };
        assert!(e.accepts(value + 0.99 * bound) && !e.accepts(value + 2.0 * bound));
        assert!(!e.accepts(f64::NAN));
        assert_eq!(expect(Codec::Bf16, DType::F32, ReduceOp::Max, &[1.0 + 2f64.powi(-9), 0.5]), Expect::Exact(1.0));
    }
}
