//! Element types a buffer may hold, and the reduction operators.

use half::{bf16, f16};

/// The element type of a buffer, as a value (for messages and tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `half::f16`
    F16,
    /// `half::bf16`
    Bf16,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::Bf16 => 2,
        }
    }
    /// Lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A floating-point element ringfuse can reduce.
///
/// Sealed: the kernels are written for exactly these four types. Reductions
/// run in `f64` for `f64` buffers and in `f32` for the others; see
/// [`crate::codec`] for how each wire format rounds.
pub trait Element: sealed::Sealed + bytemuck::Pod + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// The type reductions run in: `f64` for `f64`, `f32` otherwise.
    #[doc(hidden)]
    type Acc: Accumulator;
    /// Widen to `f32` (rounds only for `f64`).
    fn to_f32(self) -> f32;
    /// Round an `f32` to this type, to nearest, ties to even.
    fn from_f32(v: f32) -> Self;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Widen to `f64` (exact for every supported type).
    fn to_f64(self) -> f64;
    /// Round an `f64` to this type, to nearest, ties to even.
    fn from_f64(v: f64) -> Self;
    /// Raw bits, zero-extended, for bitwise comparisons.
    fn to_bits_u64(self) -> u64;
}

/// `dst[i] = src[i]` widened to `f32` (the accumulator every kernel and
/// bucket works in).
pub(crate) fn widen<E: Element>(src: &[E], dst: &mut [f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    type Acc = f32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        self.is_finite()
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_bits_u64(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
    type Acc = f64;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        self.is_finite()
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_bits_u64(self) -> u64 {
        self.to_bits()
    }
}
// The two 16-bit types differ only in their tag and in how an f64 is
// rounded to them.
macro_rules! impl_half {
    ($t:ty, $tag:ident, $from_f64:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$tag;
            type Acc = f32;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn from_f64(v: f64) -> Self {
                $from_f64(v)
            }
            fn to_bits_u64(self) -> u64 {
                self.to_bits() as u64
            }
        }
    };
}
impl_half!(f16, F16, f16::from_f64);
// half's bf16::from_f64 drops sticky bits and mis-rounds about 1 in 20,000
// values; round to odd in f32 first (23 >= 7 + 2 bits), then to nearest
// even in bf16, which is one correct rounding.
impl_half!(bf16, Bf16, |v| bf16::from_f32(f64_to_f32_round_odd(v)));

/// `v` rounded to `f32` towards zero, with the last bit set if inexact
/// ("round to odd"): a later rounding to a format at least two bits
/// narrower then equals a single rounding of `v`.
fn f64_to_f32_round_odd(v: f64) -> f32 {
    let t = v as f32;
    if (t as f64) == v || v.is_nan() {
        return t;
    }
    let mut bits = t.to_bits();
    if (t as f64).abs() > v.abs() {
        bits -= 1; // one step towards zero (also turns inf into f32::MAX)
    }
    f32::from_bits(bits | 1)
}

/// How values from different ranks combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Sum, then divided once by the number of ranks at the end.
    Avg,
    /// Minimum; a NaN on any rank gives NaN.
    Min,
    /// Maximum; a NaN on any rank gives NaN.
    Max,
    /// Product.
    Prod,
}

impl ReduceOp {
    /// Lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Prod => "prod",
        }
    }

    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<ReduceOp> {
        [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod]
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
    }
}

/// The arithmetic type of a reduction (`f32` or `f64`). Kernels are
/// generic over it so one body serves every (element, wire) pair.
#[doc(hidden)]
pub trait Accumulator: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    /// Widen an element or wire value.
    fn load<E: Element>(e: E) -> Self;
    /// Round to an element or wire type, to nearest even.
    fn store<E: Element>(self) -> E;
    /// Combine two values. `Avg` combines as `Sum`; the division happens
    /// once, where the final value is produced.
    fn combine(op: ReduceOp, a: Self, b: Self) -> Self;
    /// Divide by the rank count (the one division of `Avg`).
    fn div_ranks(self, n: usize) -> Self;
    /// Neither infinite nor NaN.
    fn finite(self) -> bool;
}

// Min and Max are written as the comparisons `a < b ? a : b` and
// `a > b ? a : b` after a NaN check, because that is exactly what x86's
// `minps`/`maxps` and CUDA's comparisons compute (also for -0.0 vs +0.0),
// so every backend returns the same bits. A NaN on any rank gives NaN, as
// Sum does, so a trainer sees a bad gradient instead of losing it.
macro_rules! impl_acc {
    ($t:ty, $load:ident, $store:ident) => {
        impl Accumulator for $t {
            #[inline(always)]
            fn load<E: Element>(e: E) -> Self {
                e.$load()
            }
            #[inline(always)]
            fn store<E: Element>(self) -> E {
                E::$store(self)
            }
            #[inline(always)]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => a + b,
                    ReduceOp::Prod => a * b,
                    ReduceOp::Min => {
                        if a.is_nan() || b.is_nan() {
                            <$t>::NAN
                        } else if a < b {
                            a
                        } else {
                            b
                        }
                    }
                    ReduceOp::Max => {
                        if a.is_nan() || b.is_nan() {
                            <$t>::NAN
                        } else if a > b {
                            a
                        } else {
                            b
                        }
                    }
                }
            }
            #[inline(always)]
            fn div_ranks(self, n: usize) -> Self {
                self / (n as $t)
            }
            #[inline(always)]
            fn finite(self) -> bool {
                self.is_finite()
            }
        }
    };
}
impl_acc!(f32, to_f32, from_f32);
impl_acc!(f64, to_f64, from_f64);

impl std::fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
