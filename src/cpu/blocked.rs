//! Kernels of the block-scaled wire formats ([`crate::Codec::Fp16Scaled`],
//! [`crate::Codec::Int8`]); the layout and rounding are in
//! [`crate::codec`].
//!
//! A slice's payload is `[scale_0 .. scale_{nb-1}: f32][codes]`, blocks of
//! `block` elements counted from the slice's start. Each kernel walks one
//! block at a time: it forms the block's values in `f32` (decoded received
//! value combined with the local one) in a stack buffer, finds the block's
//! largest finite magnitude, and writes the scale and the codes. The block
//! is in L1 for its second pass, so a hop still reads and writes each
//! slice once from memory. These are portable bodies, written so that the
//! compiler vectorises the per-element loops; any other backend (CUDA)
//! must give the same bits.

use half::f16;

use crate::codec::MAX_SCALE_BLOCK;
use crate::element::{Accumulator, Element, ReduceOp};

/// One block-scaled code format.
pub(crate) trait Quant: Copy + Default + Send + Sync + 'static {
    /// One element's code.
    type Code: bytemuck::Pod + Default;
    /// The scale of a block whose largest finite magnitude is `absmax`.
    fn scale(absmax: f32) -> f32;
    /// The code of `v`, and whether `v` cannot be carried.
    fn encode(v: f32, scale: f32) -> (Self::Code, bool);
    /// The value a code stands for.
    fn decode(c: Self::Code, scale: f32) -> f32;
}

/// FP16 codes, power-of-two scale.
#[derive(Clone, Copy, Default)]
pub(crate) struct ScaledF16;

impl Quant for ScaledF16 {
    type Code = f16;
    #[inline(always)]
    fn scale(absmax: f32) -> f32 {
        // absmax in [2^(E-127), 2^(E-126)) for biased exponent E: the scale
        // 2^(E-141) (biased E-14) puts absmax / scale below 2^15.
        let e = ((absmax.to_bits() >> 23) & 0xff) as i32;
        f32::from_bits(((e - 14).max(1) as u32) << 23)
    }
    #[inline(always)]
    fn encode(v: f32, scale: f32) -> (f16, bool) {
        (f16::from_f32(v / scale), false)
    }
    #[inline(always)]
    fn decode(c: f16, scale: f32) -> f32 {
        c.to_f32() * scale
    }
}

/// 8-bit integer codes, absmax / 127 scale.
#[derive(Clone, Copy, Default)]
pub(crate) struct Int8;

impl Quant for Int8 {
    type Code = i8;
    #[inline(always)]
    fn scale(absmax: f32) -> f32 {
        absmax / 127.0
    }
    #[inline(always)]
    fn encode(v: f32, scale: f32) -> (i8, bool) {
        let q = if scale > 0.0 { (v / scale).round_ties_even().clamp(-127.0, 127.0) } else { 0.0 };
        // NaN as i8 is 0: flagged, never sent as a plausible number.
        (q as i8, !v.is_finite())
    }
    #[inline(always)]
    fn decode(c: i8, scale: f32) -> f32 {
        c as f32 * scale
    }
}

/// Payload bytes of `n` elements in blocks of `block`.
pub(crate) fn bytes<Q: Quant>(n: usize, block: usize) -> usize {
    4 * n.div_ceil(block) + n * std::mem::size_of::<Q::Code>()
}

fn split<Q: Quant>(buf: &[u8], n: usize, block: usize) -> (&[f32], &[Q::Code]) {
    let nb = n.div_ceil(block);
    let (s, c) = buf[..bytes::<Q>(n, block)].split_at(4 * nb);
    (bytemuck::cast_slice(s), bytemuck::cast_slice(c))
}

fn split_mut<Q: Quant>(buf: &mut [u8], n: usize, block: usize) -> (&mut [f32], &mut [Q::Code]) {
    let nb = n.div_ceil(block);
    let (s, c) = buf[..bytes::<Q>(n, block)].split_at_mut(4 * nb);
    (bytemuck::cast_slice_mut(s), bytemuck::cast_slice_mut(c))
}

/// Scale and codes of one block of values; returns whether a value could
/// not be carried.
#[inline(always)]
fn put_block<Q: Quant>(vals: &[f32], scale: &mut f32, codes: &mut [Q::Code]) -> bool {
    let mut m = 0f32;
    for v in vals {
        let a = v.abs();
        // Only finite values set the scale: an infinity must not flush
        // its block's other values to zero (NaN fails both tests).
        if a < f32::INFINITY && a > m {
            m = a;
        }
    }
    let s = Q::scale(m);
    *scale = s;
    let mut over = false;
    for (v, c) in vals.iter().zip(codes.iter_mut()) {
        let (code, o) = Q::encode(*v, s);
        *c = code;
        over |= o;
    }
    over
}

/// Walks `n` elements in blocks: `f(block index, element range)`.
#[inline(always)]
fn blocks(n: usize, block: usize, mut f: impl FnMut(usize, std::ops::Range<usize>)) {
    let mut j = 0;
    while j * block < n {
        f(j, j * block..((j + 1) * block).min(n));
        j += 1;
    }
}

/// First hop: `out = wire(src)`.
pub(crate) fn encode<E: Element, Q: Quant>(block: usize, src: &[E], out: &mut [u8]) -> bool {
    let (scales, codes) = split_mut::<Q>(out, src.len(), block);
    let mut tmp = [0f32; MAX_SCALE_BLOCK];
    let mut over = false;
    blocks(src.len(), block, |j, r| {
        let t = &mut tmp[..r.len()];
        for (t, s) in t.iter_mut().zip(&src[r.clone()]) {
            *t = s.to_f32();
        }
        over |= put_block::<Q>(t, &mut scales[j], &mut codes[r]);
    });
    over
}

/// `tmp = decode(recv block) op local`, in `f32`.
#[inline(always)]
fn combine_block<E: Element, Q: Quant>(op: ReduceOp, s: f32, codes: &[Q::Code], local: &[E], tmp: &mut [f32]) {
    for ((t, c), l) in tmp.iter_mut().zip(codes).zip(local) {
        *t = f32::combine(op, Q::decode(*c, s), l.to_f32());
    }
}

/// One block of a reduce hop: `codes = wire(decode(recv) op local [/ n])`.
#[allow(clippy::too_many_arguments)] // one block's inputs and outputs, spelled out
#[inline(always)]
fn reduce_block<E: Element, Q: Quant>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    (rs, rc): (f32, &[Q::Code]),
    local: &[E],
    tmp: &mut [f32],
    scale: &mut f32,
    codes: &mut [Q::Code],
) -> bool {
    combine_block::<E, Q>(op, rs, rc, local, tmp);
    if let Some(k) = avg_ranks {
        tmp.iter_mut().for_each(|v| *v = v.div_ranks(k));
    }
    put_block::<Q>(tmp, scale, codes)
}

/// Middle reduce-scatter hop: `out = wire(decode(recv) op local)`.
pub(crate) fn reduce_encode<E: Element, Q: Quant>(
    block: usize,
    op: ReduceOp,
    recv: &[u8],
    local: &[E],
    out: &mut [u8],
) -> bool {
    let n = local.len();
    let (rs, rc) = split::<Q>(recv, n, block);
    let (os, oc) = split_mut::<Q>(out, n, block);
    let mut tmp = [0f32; MAX_SCALE_BLOCK];
    let mut over = false;
    blocks(n, block, |j, r| {
        let t = &mut tmp[..r.len()];
        over |= reduce_block::<E, Q>(op, None, (rs[j], &rc[r.clone()]), &local[r.clone()], t, &mut os[j], &mut oc[r]);
    });
    over
}

/// Last reduce-scatter hop: `out = wire(decode(recv) op local [/ n])`,
/// `local = decode(out)`.
pub(crate) fn reduce_store_encode<E: Element, Q: Quant>(
    block: usize,
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[u8],
    local: &mut [E],
    out: &mut [u8],
) -> bool {
    let n = local.len();
    let (rs, rc) = split::<Q>(recv, n, block);
    let (os, oc) = split_mut::<Q>(out, n, block);
    let mut tmp = [0f32; MAX_SCALE_BLOCK];
    let mut over = false;
    blocks(n, block, |j, r| {
        let t = &mut tmp[..r.len()];
        let rcv = (rs[j], &rc[r.clone()]);
        over |= reduce_block::<E, Q>(op, avg_ranks, rcv, &local[r.clone()], t, &mut os[j], &mut oc[r.clone()]);
        for (l, c) in local[r.clone()].iter_mut().zip(&oc[r]) {
            *l = E::from_f32(Q::decode(*c, os[j]));
        }
    });
    over
}

/// Allgather hop: `local = decode(recv)`.
pub(crate) fn decode_store<E: Element, Q: Quant>(block: usize, recv: &[u8], local: &mut [E]) {
    let n = local.len();
    let (rs, rc) = split::<Q>(recv, n, block);
    blocks(n, block, |j, r| {
        for (l, c) in local[r.clone()].iter_mut().zip(&rc[r]) {
            *l = E::from_f32(Q::decode(*c, rs[j]));
        }
    });
}

/// Recursive-doubling fold: `local = decode(recv) op local`.
pub(crate) fn reduce_into<E: Element, Q: Quant>(block: usize, op: ReduceOp, recv: &[u8], local: &mut [E]) {
    let n = local.len();
    let (rs, rc) = split::<Q>(recv, n, block);
    blocks(n, block, |j, r| {
        for (l, c) in local[r.clone()].iter_mut().zip(&rc[r]) {
            *l = E::from_f32(f32::combine(op, Q::decode(*c, rs[j]), l.to_f32()));
        }
    });
}

/// One side of a recursive-doubling exchange (see
/// [`super::scalar::exchange`]): this rank's wire value is re-encoded from
/// `local`, block by block, exactly as it was sent; the lower rank's value
/// is combined first.
pub(crate) fn exchange<E: Element, Q: Quant>(
    block: usize,
    op: ReduceOp,
    theirs: &[u8],
    local: &mut [E],
    mine_first: bool,
    mut fin: Option<(Option<usize>, &mut [u8])>,
) -> bool {
    let n = local.len();
    let (ts, tc) = split::<Q>(theirs, n, block);
    let mut tmp = [0f32; MAX_SCALE_BLOCK];
    let mut mine = [Q::Code::default(); MAX_SCALE_BLOCK];
    let mut over = false;
    let mut fin = fin.as_mut().map(|(avg, out)| (*avg, split_mut::<Q>(out, n, block)));
    blocks(n, block, |j, r| {
        let t = &mut tmp[..r.len()];
        crate::element::widen(&local[r.clone()], t);
        let mut ms = 0f32;
        put_block::<Q>(t, &mut ms, &mut mine[..r.len()]);
        for ((t, m), c) in t.iter_mut().zip(&mine[..r.len()]).zip(&tc[r.clone()]) {
            let (m, th) = (Q::decode(*m, ms), Q::decode(*c, ts[j]));
            *t = if mine_first { f32::combine(op, m, th) } else { f32::combine(op, th, m) };
        }
        match fin.as_mut() {
            None => {
                for (l, v) in local[r].iter_mut().zip(t.iter()) {
                    *l = E::from_f32(*v);
                }
            }
            Some((avg, (os, oc))) => {
                if let Some(k) = *avg {
                    t.iter_mut().for_each(|v| *v = v.div_ranks(k));
                }
                over |= put_block::<Q>(t, &mut os[j], &mut oc[r.clone()]);
                for (l, c) in local[r.clone()].iter_mut().zip(&oc[r]) {
                    *l = E::from_f32(Q::decode(*c, os[j]));
                }
            }
        }
    });
    over
}

/// `acc = decode(wire) + acc` (error feedback's bookkeeping).
pub(crate) fn add_decoded<Q: Quant>(block: usize, wire: &[u8], acc: &mut [f32]) {
    let n = acc.len();
    let (s, c) = split::<Q>(wire, n, block);
    blocks(n, block, |j, r| {
        for (a, c) in acc[r.clone()].iter_mut().zip(&c[r]) {
            *a += Q::decode(*c, s[j]);
        }
    });
}

/// `acc -= decode(wire)` (error feedback's bookkeeping).
pub(crate) fn sub_decoded<Q: Quant>(block: usize, wire: &[u8], acc: &mut [f32]) {
    let n = acc.len();
    let (s, c) = split::<Q>(wire, n, block);
    blocks(n, block, |j, r| {
        for (a, c) in acc[r.clone()].iter_mut().zip(&c[r]) {
            *a -= Q::decode(*c, s[j]);
        }
    });
}
