//! Wire formats: what an element looks like between two ranks.
//!
//! Every hop of a ring does *decode the received slice, reduce it into the
//! local slice, encode the outgoing slice* in one pass. The reduction runs in
//! `f32` (in `f64` for `f64` buffers); only the wire is narrowed. Rounding to
//! the wire is round-to-nearest-even, the same as CUDA's `__float2half_rn`
//! and `__float2bfloat16_rn`.
//!
//! # Error bounds
//!
//! For `Sum` over `n` ranks of inputs `x_1..x_n`, a lossy codec rounds each
//! partial sum once per hop: `n` roundings on the wire and `n - 1` additions
//! in the accumulator. With `u` the wire's unit roundoff
//! ([`Codec::unit_roundoff`]: `2^-11` for FP16, `2^-8` for BF16, `2^-24` for
//! native f32) and `v` the accumulator's (`2^-24`, or `2^-53` for f64):
//!
//! `|result - exact| <= ((1 + u + v)^n - 1) * sum_i |x_i| + n * e_min`
//!
//! where `e_min` is the absolute error of rounding in the wire's subnormal
//! range (`2^-25` for FP16, negligible for BF16). `Avg` divides that by `n`
//! and adds one more `v`. (Recursive doubling, used for small buffers,
//! rounds each partial once per tree level, at most `n` times, so the same
//! bound holds.) `Prod` is bounded relative to the exact product by
//! `(1 + u + v)^(2n - 1) - 1`: recursive doubling rounds every node of its
//! tree. `Min` and `Max` are exact in the codec's
//! representable values: the result is the exact extreme rounded once to
//! the wire. [`Codec::sum_error_bound`] computes the bound; the tests and
//! `ringfuse-perf` check every element against it.
//!
//! FP16 holds magnitudes up to 65504. A partial result that is finite but
//! rounds to infinity on an FP16 or BF16 wire is reported as
//! [`crate::Error::Fp16Overflow`] on every rank, never returned as `inf`.
//! NaN and infinite inputs propagate as they do on the native path.

use crate::element::DType;

/// The wire format of one collective call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// The buffer's own element type on the wire; results equal MPI's.
    #[default]
    Native,
    /// IEEE binary16 on the wire: half the bytes of f32.
    Fp16,
    /// bfloat16 on the wire: half the bytes of f32, f32's range.
    Bf16,
}

impl Codec {
    /// Lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Native => "native",
            Codec::Fp16 => "fp16",
            Codec::Bf16 => "bf16",
        }
    }

    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Some(Codec::Native),
            "fp16" | "f16" => Some(Codec::Fp16),
            "bf16" => Some(Codec::Bf16),
            _ => None,
        }
    }

    /// The element type that travels for a buffer of `dtype`.
    pub fn wire_dtype(self, dtype: DType) -> DType {
        match self {
            Codec::Native => dtype,
            Codec::Fp16 => DType::F16,
            Codec::Bf16 => DType::Bf16,
        }
    }

    /// Unit roundoff of one rounding to the wire, for a buffer of `dtype`.
    pub fn unit_roundoff(self, dtype: DType) -> f64 {
        unit_roundoff(self.wire_dtype(dtype))
    }

    /// Bound on `|result - exact|` for a `Sum` over `ranks` ranks whose
    /// inputs' magnitudes add up to `abs_sum`; see the module docs.
    pub fn sum_error_bound(self, dtype: DType, ranks: usize, abs_sum: f64) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        let n = ranks as f64;
        let acc = if dtype == DType::F64 { 2f64.powi(-53) } else { 2f64.powi(-24) };
        let u = self.unit_roundoff(dtype) + acc;
        let e_min = match self.wire_dtype(dtype) {
            DType::F16 => 2f64.powi(-25),
            DType::Bf16 | DType::F32 => 2f64.powi(-150),
            DType::F64 => 0.0,
        };
        ((1.0 + u).powf(n) - 1.0) * abs_sum * (1.0 + 1e-12) + n * e_min
    }
}

/// Unit roundoff (half an ulp at 1.0) of a type.
pub fn unit_roundoff(d: DType) -> f64 {
    match d {
        DType::F16 => 2f64.powi(-11),
        DType::Bf16 => 2f64.powi(-8),
        DType::F32 => 2f64.powi(-24),
        DType::F64 => 2f64.powi(-53),
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
