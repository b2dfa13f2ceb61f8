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
//! # Block-scaled formats
//!
//! [`Codec::Fp16Scaled`] and [`Codec::Int8`] cut each slice into blocks of
//! [`crate::AllreduceOpts::scale_block`] elements (default
//! [`DEFAULT_SCALE_BLOCK`]) and send one `f32` scale per block ahead of the
//! block's codes: the payload of `n` elements is `4 * ceil(n / block)`
//! bytes of scales, then the codes. The scale is chosen from the block's
//! largest finite magnitude `m`, at every hop, for the value being sent:
//!
//! - `Fp16Scaled`: the scale is the power of two `2^(e - 15)` where
//!   `2^(e-1) <= m < 2^e` (at least `2^-126`), so `x / scale` is exact and
//!   lies below `2^15`: FP16 codes never overflow, and values down to
//!   `m * 2^-29` keep FP16's full relative precision. Decoding is
//!   `f32(code) * scale`. Infinities and NaN travel as such.
//! - `Int8`: `scale = m / 127`, `code = clamp(round_half_even(x / scale),
//!   -127, 127)`, decoding is `code * scale`: about a quarter of f32's
//!   bytes (`1 + 4 / block` bytes per element). The error of one rounding
//!   is at most `scale / 2`, relative to the block's largest value, not to
//!   the element. An infinite or NaN value cannot be carried and is
//!   reported as [`crate::Error::WireOverflow`] (naming the codec) instead
//!   of being sent as a wrong finite number.
//!
//! Both reduce in `f32` for every buffer type. With `P` the sum over ranks
//! of each rank's largest `|x|` in the buffer (a bound on every partial
//! result's block maximum) and `r` the roundings on the way to a result
//! (`n` on the ring, at most `2n` for recursive doubling):
//!
//! - `Int8`: `|result - exact| <= r * P / 254 + f32 accumulation error`;
//! - `Fp16Scaled`: the FP16 bound above with `e_min` replaced by
//!   `P * 2^-39`, plus the same for `Min`/`Max` (whose results are rounded
//!   once per hop with each hop's own scale).
//!
//! [`crate::verify::expect`] computes these bounds from each rank's peak.
//!
//! FP16 holds magnitudes up to 65504. A partial result that is finite but
//! rounds to infinity on an FP16 or BF16 wire is reported as
//! [`crate::Error::WireOverflow`] on every rank, never returned as `inf`.
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
    /// FP16 codes with one power-of-two `f32` scale per block: FP16's
    /// precision without its overflow or its underflow of small gradients.
    Fp16Scaled,
    /// 8-bit integer codes with one `f32` scale (block absmax / 127) per
    /// block: about a quarter of f32's bytes.
    Int8,
}

/// Elements per scale of the block-scaled codecs unless
/// [`crate::AllreduceOpts::scale_block`] says otherwise. 1024: its scales
/// add 0.4% to an `Int8` wire (1.6% at 256), and one large outlier
/// coarsens at most 1023 neighbours (4095 at 4096). The kernels' speed
/// was not compared across block sizes (a block of up to 4096 `f32`s is
/// walked twice in L1 at any size).
pub const DEFAULT_SCALE_BLOCK: usize = 1024;

/// Largest block of the block-scaled codecs (the kernels' stack buffers
/// hold one block).
pub const MAX_SCALE_BLOCK: usize = 4096;

impl Codec {
    /// Lowercase name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Native => "native",
            Codec::Fp16 => "fp16",
            Codec::Bf16 => "bf16",
            Codec::Fp16Scaled => "fp16scaled",
            Codec::Int8 => "int8",
        }
    }

    /// Every codec, in the order the CLI and the fingerprint list them.
    pub const ALL: [Codec; 5] = [Codec::Native, Codec::Fp16, Codec::Bf16, Codec::Fp16Scaled, Codec::Int8];

    /// Whether this codec sends per-block scales (so its rounding depends
    /// on a block's largest value, not on the element alone).
    pub fn is_block_scaled(self) -> bool {
        matches!(self, Codec::Fp16Scaled | Codec::Int8)
    }

    /// Payload bytes of `count` elements of a `dtype` buffer on this wire,
    /// in one message (block-scaled codecs: with their scales, blocks of
    /// `block` elements).
    pub fn wire_bytes(self, dtype: DType, count: usize, block: usize) -> usize {
        let scales = if self.is_block_scaled() { 4 * count.div_ceil(block.max(1)) } else { 0 };
        scales + count * self.code_bytes(dtype)
    }

    /// Elements of a `dtype` buffer in one message of `bytes` payload
    /// bytes on this wire: a multiple of 32 (the kernels then run on full
    /// vectors except at a block's end) and, for block-scaled codecs, of
    /// the scale block of `block` elements (so every scale but a slice's
    /// last covers a full block).
    pub fn slice_elems(self, dtype: DType, bytes: usize, block: usize) -> usize {
        let mut slice = ((bytes / self.code_bytes(dtype)) & !31).max(32);
        if self.is_block_scaled() && block > 0 && slice >= block {
            slice -= slice % block;
        }
        slice
    }

    /// Bytes of one element's code on the wire (scales aside).
    pub fn code_bytes(self, dtype: DType) -> usize {
        match self {
            Codec::Int8 => 1,
            c => c.wire_dtype(dtype).size(),
        }
    }

    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<Codec> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Some(Codec::Native),
            "fp16" | "f16" => Some(Codec::Fp16),
            "bf16" => Some(Codec::Bf16),
            "fp16scaled" | "fp16-scaled" | "fp16_scaled" => Some(Codec::Fp16Scaled),
            "int8" | "i8" => Some(Codec::Int8),
            _ => None,
        }
    }

    /// The element type that travels for a buffer of `dtype`: the codes'
    /// type for `Fp16Scaled` (`F16`); for `Int8`, whose codes are
    /// integers, the type its scales and arithmetic use (`F32`). See
    /// [`Self::wire_bytes`] for the bytes.
    pub fn wire_dtype(self, dtype: DType) -> DType {
        match self {
            Codec::Native => dtype,
            Codec::Fp16 | Codec::Fp16Scaled => DType::F16,
            Codec::Bf16 => DType::Bf16,
            Codec::Int8 => DType::F32,
        }
    }

    /// Unit roundoff of one rounding to the wire, for a buffer of `dtype`
    /// (element-wise codecs; a block-scaled codec's error is relative to
    /// its block's largest value: see the module docs).
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
