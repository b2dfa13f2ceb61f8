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
///
/// `peaks[r]` is rank `r`'s largest finite `|x|` over the whole buffer: a
/// block-scaled codec's rounding is relative to its block's largest
/// value, which these bound (see [`crate::codec`]). Element-wise codecs
/// ignore it.
pub fn expect(codec: Codec, dtype: DType, op: ReduceOp, xs: &[f64], peaks: &[f64]) -> Expect {
    let n = xs.len();
    if n == 1 {
        return Expect::Exact(xs[0]);
    }
    if codec.is_block_scaled() {
        return expect_block_scaled(codec, dtype, op, xs, peaks);
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

/// [`expect`] for [`Codec::Fp16Scaled`] and [`Codec::Int8`]: `r = 2n`
/// roundings (the ring does `n`; recursive doubling at most `2n`), each
/// relative to a block maximum of at most `sum(peaks)` (for `Prod`, the
/// product of the peaks, amplified by later factors of at most
/// `max(peak, 1)` each).
fn expect_block_scaled(codec: Codec, dtype: DType, op: ReduceOp, xs: &[f64], peaks: &[f64]) -> Expect {
    let n = xs.len();
    let r = 2 * n as i32;
    let acc = 2f64.powi(-24);
    let u_elem = if dtype.size() == 2 { unit_roundoff(dtype) } else { 0.0 };
    let (peak, grow) = if op == ReduceOp::Prod {
        (peaks.iter().product::<f64>(), peaks.iter().map(|p| p.max(1.0)).product::<f64>())
    } else {
        (peaks.iter().sum::<f64>(), 1.0)
    };
    // One rounding's absolute error relative to the block maximum, and
    // relative to the value itself.
    let (per_peak, rel) = match codec {
        Codec::Int8 => (0.5 / 127.0 * 1.0001, 0.0),
        _ => (2f64.powi(-39), unit_roundoff(DType::F16)),
    };
    let floor = r as f64 * peak * grow * per_peak;
    let grown = |mag: f64, k: i32| ((1.0 + rel + acc).powi(k) - 1.0) * mag * 1.0001;
    let (value, bound) = match op {
        ReduceOp::Sum | ReduceOp::Avg => {
            let exact: f64 = xs.iter().sum();
            let abs: f64 = xs.iter().map(|x| x.abs()).sum();
            let b = grown(abs, r) + floor;
            if op == ReduceOp::Avg {
                let v = exact / n as f64;
                (v, b / n as f64 + 2.0 * acc * v.abs())
            } else {
                (exact, b)
            }
        }
        ReduceOp::Min | ReduceOp::Max => {
            let e = if op == ReduceOp::Min {
                xs.iter().copied().fold(f64::INFINITY, f64::min)
            } else {
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            };
            let big = xs.iter().fold(0f64, |m, x| m.max(x.abs()));
            (e, grown(big, r) + floor)
        }
        ReduceOp::Prod => {
            let v: f64 = xs.iter().product();
            (v, grown(v.abs(), 2 * r) + floor)
        }
    };
    Expect::Within { value, bound: bound + u_elem * (value.abs() + bound) * 1.0001 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_accept_the_true_error_and_reject_more() {
        let e = expect(Codec::Fp16, DType::F32, ReduceOp::Sum, &[1.0, 1.0 / 3.0], &[1.0, 1.0]);
        let Expect::Within { value, bound } = e else { panic!() };
        assert!(e.accepts(value + 0.99 * bound) && !e.accepts(value + 2.0 * bound));
        assert!(!e.accepts(f64::NAN));
        assert_eq!(
            expect(Codec::Bf16, DType::F32, ReduceOp::Max, &[1.0 + 2f64.powi(-9), 0.5], &[2.0, 2.0]),
            Expect::Exact(1.0)
        );
        // Int8: relative to the peaks, so a small element may be far off
        // in relative terms but not in absolute ones.
        let e = expect(Codec::Int8, DType::F32, ReduceOp::Sum, &[0.001, 0.002], &[1.0, 1.0]);
        assert!(e.accepts(0.003 + 0.03) && !e.accepts(0.003 + 0.04));
    }
}
