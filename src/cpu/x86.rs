//! AVX2 + F16C bodies of the fused kernels for `f32` buffers, the case that
//! carries gradients. Eight lanes per iteration; the caller runs the scalar
//! body on the tail, so these see only whole vectors.
//!
//! Every function here is `unsafe` because it needs the `avx2` and `f16c`
//! CPU features; `super::simd_level()` checks them once at run time, and the
//! safe wrappers in `super` call in only after that check. The loads and
//! stores are unaligned (`loadu`/`storeu`), so any slice alignment is fine.
//!
//! Rounding matches the scalar reference exactly: `vcvtps2ph` with
//! `_MM_FROUND_TO_NEAREST_INT` is IEEE round-to-nearest-even (as is
//! `half::f16::from_f32`), and the BF16 rounding below is the same integer
//! formula `half::bf16::from_f32` uses. NaN is replaced by `f32::NAN` in
//! Min/Max, as the scalar body does.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::element::ReduceOp;

/// How a lane of wire values is read and written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    F32,
    F16,
    Bf16,
}

// SAFETY (whole module): callers guarantee avx2+f16c are present, and that
// every slice passed has at least `n` elements where `n` is the length the
// loop covers (asserted in the wrappers); pointers are only offset within
// those bounds.

/// Runs `$body` with the wire kind `$k` bound as a constant to `$kk`, so
/// each kind gets its own loop: LLVM did not take the per-vector branch
/// on the kind (and the op, below) out of the loops by itself, and those
/// branches cost a third of the fp16 kernel's speed in cache.
macro_rules! per_kind {
    ($k:expr, |$kk:ident| $body:expr) => {
        match $k {
            WireKind::F32 => {
                let $kk = WireKind::F32;
                $body
            }
            WireKind::F16 => {
                let $kk = WireKind::F16;
                $body
            }
            WireKind::Bf16 => {
                let $kk = WireKind::Bf16;
                $body
            }
        }
    };
}

/// [`per_kind`] for the reduce op as well (Avg combines as Sum).
macro_rules! per_kind_op {
    ($k:expr, $op:expr, |$kk:ident, $oo:ident| $body:expr) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Avg => {
                let $oo = ReduceOp::Sum;
                per_kind!($k, |$kk| $body)
            }
            ReduceOp::Prod => {
                let $oo = ReduceOp::Prod;
                per_kind!($k, |$kk| $body)
            }
            ReduceOp::Min => {
                let $oo = ReduceOp::Min;
                per_kind!($k, |$kk| $body)
            }
            ReduceOp::Max => {
                let $oo = ReduceOp::Max;
                per_kind!($k, |$kk| $body)
            }
        }
    };
}

#[inline(always)]
unsafe fn load(k: WireKind, p: *const u8, i: usize) -> __m256 {
    match k {
        WireKind::F32 => _mm256_loadu_ps((p as *const f32).add(i)),
        WireKind::F16 => _mm256_cvtph_ps(_mm_loadu_si128((p as *const u16).add(i) as *const __m128i)),
        WireKind::Bf16 => {
            let h = _mm_loadu_si128((p as *const u16).add(i) as *const __m128i);
            let v = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
            // A signalling NaN comes out quiet, as `half::bf16::to_f32`
            // makes it: a plain shift would keep it signalling, and the
            // two bodies (so two ranks) would hold different bits.
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
            _mm256_or_ps(v, _mm256_and_ps(nan, _mm256_castsi256_ps(_mm256_set1_epi32(0x0040_0000))))
        }
    }
}

/// BF16 bits of each lane (in the low 16 of 32), rounded to nearest even
/// with NaN quieted as `half::bf16::from_f32` does.
#[inline(always)]
unsafe fn bf16_bits(v: __m256) -> __m256i {
    let u = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(1));
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb));
    let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(0x0040));
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    _mm256_blendv_epi8(rounded, quiet, nan)
}

/// Stores `v` to the wire at `p[i..]`.
#[inline(always)]
unsafe fn store(k: WireKind, p: *mut u8, i: usize, v: __m256) {
    match k {
        WireKind::F32 => _mm256_storeu_ps((p as *mut f32).add(i), v),
        WireKind::F16 => {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128((p as *mut u16).add(i) as *mut __m128i, h);
        }
        WireKind::Bf16 => {
            let r = bf16_bits(v);
            // packus works per 128-bit half; permute puts the 8 halves in order.
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(r, r));
            _mm_storeu_si128((p as *mut u16).add(i) as *mut __m128i, _mm256_castsi256_si128(packed));
        }
    }
}

/// [`store`], with a streaming (non-temporal) store if `WS`; then
/// `p[i..]` must be aligned to the store: 32 bytes for `F32`, 16 for the
/// 16-bit wires ([`wire_align`]).
#[inline(always)]
unsafe fn store_to<const WS: bool>(k: WireKind, p: *mut u8, i: usize, v: __m256) {
    if !WS {
        return store(k, p, i, v);
    }
    match k {
        WireKind::F32 => _mm256_stream_ps((p as *mut f32).add(i), v),
        WireKind::F16 => {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_stream_si128((p as *mut u16).add(i) as *mut __m128i, h);
        }
        WireKind::Bf16 => {
            let r = bf16_bits(v);
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(r, r));
            _mm_stream_si128((p as *mut u16).add(i) as *mut __m128i, _mm256_castsi256_si128(packed));
        }
    }
}

/// The alignment a streaming wire store of kind `k` needs.
pub fn wire_align(k: WireKind) -> usize {
    match k {
        WireKind::F32 => 32,
        WireKind::F16 | WireKind::Bf16 => 16,
    }
}

/// The running test for a finite value that became infinite on the wire,
/// at two vector ops per lane. A lane's key is its bits shifted left by one
/// (dropping the sign) plus 2^24: that wraps infinities and NaN (exponent
/// all ones) below every finite key and keeps finite magnitudes in order,
/// so a finite value overflows exactly when its key reaches the wire's
/// threshold, and a loop needs only the unsigned max of its keys. The
/// plain test (abs, two compares, and) cost the fp16 kernel half its speed
/// in cache.
#[derive(Clone, Copy)]
struct Overflow(__m256i);

impl Overflow {
    #[inline(always)]
    unsafe fn new() -> Self {
        Self(_mm256_setzero_si256())
    }

    #[inline(always)]
    unsafe fn see(self, k: WireKind, v: __m256) -> Self {
        if k == WireKind::F32 {
            return self;
        }
        let key = _mm256_add_epi32(_mm256_slli_epi32::<1>(_mm256_castps_si256(v)), _mm256_set1_epi32(1 << 24));
        Self(_mm256_max_epu32(self.0, key))
    }

    #[inline(always)]
    unsafe fn merge(self, other: Self) -> Self {
        Self(_mm256_max_epu32(self.0, other.0))
    }

    /// Whether any lane seen overflowed the wire `k`.
    #[inline(always)]
    unsafe fn any(self, k: WireKind) -> bool {
        // The key of the smallest magnitude that rounds to infinity:
        // 65520 = 0x477F_F000 for FP16 (half-way to 2^16, which rounds to
        // even, up), 0x7F7F_8000 for BF16 (half an ulp above bf16's max).
        // No finite f32 overflows f32.
        let threshold = match k {
            WireKind::F32 => return false,
            WireKind::F16 => 0x8FFF_E000u32,
            WireKind::Bf16 => 0xFFFF_0000u32,
        };
        let t = _mm256_set1_epi32(threshold as i32);
        _mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_max_epu32(self.0, t), self.0)) != 0
    }
}

/// `v` rounded to the wire and widened back, in registers: the value a
/// partner decodes from what this rank sends.
#[inline(always)]
unsafe fn round_trip(k: WireKind, v: __m256) -> __m256 {
    match k {
        WireKind::F32 => v,
        WireKind::F16 => _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)),
        WireKind::Bf16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(bf16_bits(v))),
    }
}

/// A final value: divided by `div` for Avg, stored to the wire at
/// `out[i..]` and, decoded, to `local[i..]` (every rank keeps exactly what
/// the others decode). Returns the value stored, for the overflow test.
#[inline(always)]
unsafe fn finish(k: WireKind, avg: bool, div: __m256, v: __m256, out: *mut u8, local: *mut f32, i: usize) -> __m256 {
    finish_to::<false, false>(k, avg, div, v, out, local, i)
}

/// [`finish`], storing to `local[i..]` with a streaming store if `STREAM`
/// (then `local.add(i)` must be 32-byte aligned) and to the wire with one
/// if `WS` (see [`store_to`]).
#[inline(always)]
unsafe fn finish_to<const STREAM: bool, const WS: bool>(
    k: WireKind,
    avg: bool,
    div: __m256,
    v: __m256,
    out: *mut u8,
    local: *mut f32,
    i: usize,
) -> __m256 {
    let v = if avg { _mm256_div_ps(v, div) } else { v };
    store_to::<WS>(k, out, i, v);
    // Reading back a streamed line would wait for it to reach memory;
    // the round trip in registers gives the same bits.
    let back = if WS { round_trip(k, v) } else { load(k, out, i) };
    store_f32::<STREAM>(local.add(i), back);
    v
}

/// Stores 8 `f32`s at `p`: streaming (non-temporal; `p` 32-byte aligned)
/// or through the cache.
#[inline(always)]
unsafe fn store_f32<const STREAM: bool>(p: *mut f32, v: __m256) {
    if STREAM {
        _mm256_stream_ps(p, v)
    } else {
        _mm256_storeu_ps(p, v)
    }
}

/// Where a streaming pass over `dst[..n]` (`n` a non-zero multiple of 8)
/// starts: from there on its vectors are 32-byte aligned. The elements
/// before it are covered by one cached vector at 0 and those after the
/// last aligned vector by one cached vector at `n - 8`. Both overlap
/// streamed vectors and store the same values again, so a kernel may
/// stream only where it does not read what it writes.
#[inline(always)]
fn stream_start(dst: *const f32) -> usize {
    match (dst as usize & 31) / 4 {
        0 => 0,
        m => 8 - m,
    }
}

#[inline(always)]
unsafe fn combine(op: ReduceOp, a: __m256, b: __m256) -> __m256 {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => _mm256_add_ps(a, b),
        ReduceOp::Prod => _mm256_mul_ps(a, b),
        ReduceOp::Min | ReduceOp::Max => {
            // minps(a, b) is `a < b ? a : b`, the scalar definition; lanes
            // where either side is NaN become f32::NAN.
            let m = if op == ReduceOp::Min { _mm256_min_ps(a, b) } else { _mm256_max_ps(a, b) };
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b);
            _mm256_blendv_ps(m, _mm256_set1_ps(f32::NAN), nan)
        }
    }
}

/// `out[..n] = wire(src[..n])`, streaming the wire if `WS` (`out` aligned
/// as [`wire_align`] says).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn encode<const WS: bool>(k: WireKind, src: *const f32, out: *mut u8, n: usize) -> bool {
    per_kind!(k, |k| {
        let mut over = Overflow::new();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(src.add(i));
            store_to::<WS>(k, out, i, v);
            over = over.see(k, v);
            i += 8;
        }
        if WS {
            _mm_sfence();
        }
        over.any(k)
    })
}

/// `out[..n] = wire(recv op local)`, streaming the wire if `WS`.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn reduce_encode<const WS: bool>(
    k: WireKind,
    op: ReduceOp,
    recv: *const u8,
    local: *const f32,
    out: *mut u8,
    n: usize,
) -> bool {
    per_kind_op!(k, op, |k, op| {
        let (mut over, mut over2) = (Overflow::new(), Overflow::new());
        let mut i = 0;
        // Four vectors per iteration and two overflow chains: in cache this
        // ran 8-12% faster than two vectors (interleaved criterion runs).
        while i + 32 <= n {
            let a0 = combine(op, load(k, recv, i), _mm256_loadu_ps(local.add(i)));
            let a1 = combine(op, load(k, recv, i + 8), _mm256_loadu_ps(local.add(i + 8)));
            let a2 = combine(op, load(k, recv, i + 16), _mm256_loadu_ps(local.add(i + 16)));
            let a3 = combine(op, load(k, recv, i + 24), _mm256_loadu_ps(local.add(i + 24)));
            store_to::<WS>(k, out, i, a0);
            store_to::<WS>(k, out, i + 8, a1);
            store_to::<WS>(k, out, i + 16, a2);
            store_to::<WS>(k, out, i + 24, a3);
            over = over.see(k, a0).see(k, a1);
            over2 = over2.see(k, a2).see(k, a3);
            i += 32;
        }
        over = over.merge(over2);
        while i + 8 <= n {
            let a = combine(op, load(k, recv, i), _mm256_loadu_ps(local.add(i)));
            store_to::<WS>(k, out, i, a);
            over = over.see(k, a);
            i += 8;
        }
        if WS {
            _mm_sfence();
        }
        over.any(k)
    })
}

/// `out = wire(recv op src [/ n]); dst = decode(out)`; `src` and `dst`
/// are the same buffer in place, or an out-of-place call's input and
/// output. With `STREAM`, `dst` is written with streaming stores (only
/// where `src` and `dst` do not overlap; see [`stream_start`]); with `WS`
/// the wire is (`out` aligned as [`wire_align`] says; not with `STREAM`
/// unless `dst` is aligned too, as the prologue would misalign the wire).
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn reduce_store_encode<const STREAM: bool, const WS: bool>(
    k: WireKind,
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: *const u8,
    src: *const f32,
    dst: *mut f32,
    out: *mut u8,
    n: usize,
) -> bool {
    per_kind_op!(k, op, |k, op| {
        let (mut over, mut over2) = (Overflow::new(), Overflow::new());
        let div = _mm256_set1_ps(avg_ranks.unwrap_or(1) as f32);
        let avg = avg_ranks.is_some();
        let one = |i: usize| combine(op, load(k, recv, i), _mm256_loadu_ps(src.add(i)));
        let mut i = 0;
        if STREAM && n > 0 {
            i = stream_start(dst);
            if i > 0 {
                over = over.see(k, finish(k, avg, div, one(0), out, dst, 0));
            }
        }
        // As in reduce_encode; every load comes before the stores, which
        // the compiler cannot reorder itself (src, dst and out may alias
        // for all it knows, and src is dst in place).
        while i + 32 <= n {
            let (a0, a1, a2, a3) = (one(i), one(i + 8), one(i + 16), one(i + 24));
            over = over.see(k, finish_to::<STREAM, WS>(k, avg, div, a0, out, dst, i));
            over2 = over2.see(k, finish_to::<STREAM, WS>(k, avg, div, a1, out, dst, i + 8));
            over = over.see(k, finish_to::<STREAM, WS>(k, avg, div, a2, out, dst, i + 16));
            over2 = over2.see(k, finish_to::<STREAM, WS>(k, avg, div, a3, out, dst, i + 24));
            i += 32;
        }
        over = over.merge(over2);
        while i + 8 <= n {
            over = over.see(k, finish_to::<STREAM, WS>(k, avg, div, one(i), out, dst, i));
            i += 8;
        }
        if STREAM && i < n {
            over = over.see(k, finish(k, avg, div, one(n - 8), out, dst, n - 8));
        }
        if STREAM || WS {
            // Streaming stores are weakly ordered: make them visible
            // before anything this thread does next.
            _mm_sfence();
        }
        over.any(k)
    })
}

/// Recursive-doubling exchange over `n` elements: the wire value of
/// `src` and `theirs` combined in rank order; stored in `local`, or, when
/// `out` is non-null (final), divided for Avg, rounded to the wire into
/// `out` and the decoded value stored. `src` is `local` in place, or an
/// out-of-place call's input (then nothing is copied into `local` first).
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn exchange(
    k: WireKind,
    op: ReduceOp,
    mine_first: bool,
    avg_ranks: Option<usize>,
    theirs: *const u8,
    src: *const f32,
    local: *mut f32,
    out: *mut u8,
    n: usize,
) -> bool {
    per_kind_op!(k, op, |k, op| {
        let mut over = Overflow::new();
        let div = _mm256_set1_ps(avg_ranks.unwrap_or(1) as f32);
        let mut i = 0;
        while i + 8 <= n {
            let m = round_trip(k, _mm256_loadu_ps(src.add(i)));
            let t = load(k, theirs, i);
            let v = if mine_first { combine(op, m, t) } else { combine(op, t, m) };
            if out.is_null() {
                _mm256_storeu_ps(local.add(i), v);
            } else {
                over = over.see(k, finish(k, avg_ranks.is_some(), div, v, out, local, i));
            }
            i += 8;
        }
        over.any(k)
    })
}

/// `local[..n] = decode(recv)`, with streaming stores if `STREAM` (see
/// [`stream_start`]).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn decode_store<const STREAM: bool>(k: WireKind, recv: *const u8, local: *mut f32, n: usize) {
    per_kind!(k, |k| {
        let mut i = 0;
        if STREAM && n > 0 {
            i = stream_start(local);
            if i > 0 {
                _mm256_storeu_ps(local, load(k, recv, 0));
            }
        }
        while i + 8 <= n {
            store_f32::<STREAM>(local.add(i), load(k, recv, i));
            i += 8;
        }
        if STREAM && i < n {
            _mm256_storeu_ps(local.add(n - 8), load(k, recv, n - 8));
        }
        if STREAM {
            _mm_sfence();
        }
    })
}

// ---- safe wrappers: the only way in from the rest of the crate ----------

/// Whether this CPU has what the bodies above need; checked once.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        // Read here, below the communicator (which refuses values other
        // than 1/true/on/0/false/off, crate::env), since kernels also run
        // with none.
        !matches!(std::env::var("RINGFUSE_NO_SIMD").as_deref(), Ok("1" | "true" | "on"))
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("f16c")
    })
}

fn width(k: WireKind) -> usize {
    match k {
        WireKind::F32 => 4,
        WireKind::F16 | WireKind::Bf16 => 2,
    }
}

/// Whether the wire at `out` takes streaming stores: asked for, and
/// aligned for them (the caller runs the unaligned head elsewhere).
fn wire_streams(k: WireKind, out: *const u8, ws: bool) -> bool {
    ws && out as usize % wire_align(k) == 0
}

/// Runs whole vectors of `encode` (streaming the wire if `ws` and `out` is
/// aligned for it); returns how many elements it covered (0 without
/// AVX2/F16C) and whether any overflowed.
pub fn encode_vec(k: WireKind, src: &[f32], out: &mut [u8], ws: bool) -> (usize, bool) {
    let n = src.len() & !7;
    if !available() || n == 0 {
        return (0, false);
    }
    assert!(out.len() >= n * width(k));
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    // SAFETY: features checked by available(); src has n, out n*width
    // bytes; the streaming body only where `out` is aligned for it.
    (n, unsafe {
        if wire_streams(k, o, ws) {
            encode::<true>(k, s, o, n)
        } else {
            encode::<false>(k, s, o, n)
        }
    })
}

/// Whole vectors of `reduce_encode`; see [`encode_vec`].
pub fn reduce_encode_vec(
    k: WireKind,
    op: ReduceOp,
    recv: &[u8],
    local: &[f32],
    out: &mut [u8],
    ws: bool,
) -> (usize, bool) {
    let n = local.len() & !7;
    if !available() || n == 0 {
        return (0, false);
    }
    assert!(recv.len() >= n * width(k) && out.len() >= n * width(k));
    let (r, l, o) = (recv.as_ptr(), local.as_ptr(), out.as_mut_ptr());
    // SAFETY: features checked; every slice covers n elements of its type;
    // the streaming body only where `out` is aligned for it.
    (n, unsafe {
        if wire_streams(k, o, ws) {
            reduce_encode::<true>(k, op, r, l, o, n)
        } else {
            reduce_encode::<false>(k, op, r, l, o, n)
        }
    })
}

/// Whole vectors of `reduce_store_encode`; see [`encode_vec`].
pub fn reduce_store_encode_vec(
    k: WireKind,
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[u8],
    local: &mut [f32],
    out: &mut [u8],
    ws: bool,
) -> (usize, bool) {
    let n = local.len() & !7;
    if !available() || n == 0 {
        return (0, false);
    }
    assert!(recv.len() >= n * width(k) && out.len() >= n * width(k));
    let (r, p, o) = (recv.as_ptr(), local.as_mut_ptr(), out.as_mut_ptr());
    // SAFETY: features checked; every slice covers n elements of its type;
    // recv, local and out are distinct borrows, so they do not overlap;
    // local is read and written through one pointer, each vector loaded
    // before it is stored; the wire streams only where it is aligned.
    (n, unsafe {
        if wire_streams(k, o, ws) {
            reduce_store_encode::<false, true>(k, op, avg_ranks, r, p, p, o, n)
        } else {
            reduce_store_encode::<false, false>(k, op, avg_ranks, r, p, p, o, n)
        }
    })
}

/// Whole vectors of `reduce_store_encode` reading `src` and writing `dst`
/// (streaming if `stream`); see [`encode_vec`].
pub fn reduce_store_encode_split_vec(
    k: WireKind,
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[u8],
    (src, dst): (&[f32], &mut [f32]),
    out: &mut [u8],
    (stream, ws): (bool, bool),
) -> (usize, bool) {
    let n = dst.len() & !7;
    if !available() || n == 0 {
        return (0, false);
    }
    assert!(src.len() >= n && recv.len() >= n * width(k) && out.len() >= n * width(k));
    let (r, s, d, o) = (recv.as_ptr(), src.as_ptr(), dst.as_mut_ptr(), out.as_mut_ptr());
    let ws = wire_streams(k, o, ws);
    // The output's streaming prologue would misalign the wire: the wire,
    // which another core reads next, streams first.
    let stream = stream && (!ws || stream_start(d) == 0);
    // SAFETY: features checked; every slice covers n elements of its type;
    // dst and out are exclusive borrows, so nothing overlaps what is
    // written, and src cannot overlap dst (the streaming body's condition);
    // the wire streams only where it is aligned, and with the output only
    // where both are.
    (n, unsafe {
        match (stream, ws) {
            (true, true) => reduce_store_encode::<true, true>(k, op, avg_ranks, r, s, d, o, n),
            (true, false) => reduce_store_encode::<true, false>(k, op, avg_ranks, r, s, d, o, n),
            (false, true) => reduce_store_encode::<false, true>(k, op, avg_ranks, r, s, d, o, n),
            (false, false) => reduce_store_encode::<false, false>(k, op, avg_ranks, r, s, d, o, n),
        }
    })
}

/// Whole vectors of `decode_store` (streaming if `stream`); returns how
/// many elements it covered.
pub fn decode_store_vec(k: WireKind, recv: &[u8], local: &mut [f32], stream: bool) -> usize {
    let n = local.len() & !7;
    if !available() || n == 0 {
        return 0;
    }
    assert!(recv.len() >= n * width(k));
    let (r, l) = (recv.as_ptr(), local.as_mut_ptr());
    // SAFETY: features checked; both slices cover n elements of their type
    // and do not overlap (recv is shared, local exclusive).
    unsafe {
        if stream {
            decode_store::<true>(k, r, l, n)
        } else {
            decode_store::<false>(k, r, l, n)
        }
    };
    n
}

/// Whole vectors of `exchange`; `fin` is `Some((avg, out))` for the final
/// exchange; `src` the values to combine when they are not `local`'s own
/// (an out-of-place call's input). See [`encode_vec`].
pub fn exchange_vec(
    k: WireKind,
    op: ReduceOp,
    mine_first: bool,
    fin: Option<(Option<usize>, &mut [u8])>,
    theirs: &[u8],
    src: Option<&[f32]>,
    local: &mut [f32],
) -> (usize, bool) {
    let n = local.len() & !7;
    if !available() || n == 0 {
        return (0, false);
    }
    assert!(theirs.len() >= n * width(k) && src.is_none_or(|s| s.len() >= n));
    let (avg, out) = match fin {
        Some((avg, out)) => {
            assert!(out.len() >= n * width(k));
            (avg, out.as_mut_ptr())
        }
        None => (None, std::ptr::null_mut()),
    };
    let l = local.as_mut_ptr();
    let s = src.map_or(l as *const f32, <[f32]>::as_ptr);
    // SAFETY: features checked; theirs, src, local and (when non-null) out
    // each cover n elements; local and out are exclusive borrows, and src
    // is either local itself (each element read before it is written, in
    // the same iteration) or a shared borrow, so it does not overlap them.
    (n, unsafe { exchange(k, op, mine_first, avg, theirs.as_ptr(), s, l, out, n) })
}
