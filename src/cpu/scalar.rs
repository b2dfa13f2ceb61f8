//! Portable bodies of the fused hop kernels, generic over the buffer's
//! element `E` and the wire's element `W`. They are the reference the SIMD
//! paths (and the CUDA kernels) must match bit for bit, and they handle the
//! tails the SIMD loops leave.
//!
//! Each returns `true` when an encode turned a finite accumulator value into
//! an infinite wire value (the FP16 overflow the executor reports).

use crate::element::{Accumulator, Element, ReduceOp};

#[inline(always)]
fn put<A: Accumulator, W: Element>(v: A, out: &mut W) -> bool {
    let w: W = v.store();
    *out = w;
    v.finite() && !w.is_finite()
}

/// First hop: `out = wire(src)`.
pub fn encode<E: Element, W: Element>(src: &[E], out: &mut [W]) -> bool {
    let mut over = false;
    for (s, o) in src.iter().zip(out.iter_mut()) {
        over |= put(E::Acc::load(*s), o);
    }
    over
}

/// Middle hop: `out = wire(recv op local)`; the local slice is not written,
/// because its final value arrives later in the allgather.
pub fn reduce_encode<E: Element, W: Element>(op: ReduceOp, recv: &[W], local: &[E], out: &mut [W]) -> bool {
    let mut over = false;
    for ((r, l), o) in recv.iter().zip(local).zip(out.iter_mut()) {
        let v = E::Acc::combine(op, E::Acc::load(*r), E::Acc::load(*l));
        over |= put(v, o);
    }
    over
}

/// Last reduce-scatter hop: `out = wire(recv op local [/ n])` and the local
/// slice takes the *decoded wire value*, so the owner holds exactly what
/// every other rank will decode in the allgather.
pub fn reduce_store_encode<E: Element, W: Element>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[W],
    local: &mut [E],
    out: &mut [W],
) -> bool {
    let mut over = false;
    for ((r, l), o) in recv.iter().zip(local.iter_mut()).zip(out.iter_mut()) {
        over |= store_final(op, avg_ranks, *r, l, *l, o);
    }
    over
}

/// [`reduce_store_encode`] reading the local values from `src` and
/// writing them to `dst`: an out-of-place call's input and output.
pub fn reduce_store_encode_split<E: Element, W: Element>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[W],
    (src, dst): (&[E], &mut [E]),
    out: &mut [W],
) -> bool {
    let mut over = false;
    for (((r, s), d), o) in recv.iter().zip(src).zip(dst.iter_mut()).zip(out.iter_mut()) {
        over |= store_final(op, avg_ranks, *r, d, *s, o);
    }
    over
}

/// One element of the last reduce-scatter hop: `o = wire(r op s [/ n])`,
/// `d = decode(o)`.
#[inline(always)]
fn store_final<E: Element, W: Element>(op: ReduceOp, avg: Option<usize>, r: W, d: &mut E, s: E, o: &mut W) -> bool {
    let mut v = E::Acc::combine(op, E::Acc::load(r), E::Acc::load(s));
    if let Some(n) = avg {
        v = v.div_ranks(n);
    }
    let over = put(v, o);
    *d = E::Acc::load(*o).store();
    over
}

/// Allgather hop: `local = decode(recv)`.
pub fn decode_store<E: Element, W: Element>(recv: &[W], local: &mut [E]) {
    for (r, l) in recv.iter().zip(local.iter_mut()) {
        *l = E::Acc::load(*r).store();
    }
}

/// Fold of recursive doubling: `local = recv op local`, kept in the
/// accumulator's precision (stored as `E`), not rounded to the wire.
pub fn reduce_into<E: Element, W: Element>(op: ReduceOp, recv: &[W], local: &mut [E]) {
    for (r, l) in recv.iter().zip(local.iter_mut()) {
        *l = E::Acc::combine(op, E::Acc::load(*r), E::Acc::load(*l)).store();
    }
}

/// [`reduce_into`] reading the local values from `src` and writing `dst`
/// (an out-of-place call's input and output): `dst = recv op src`.
pub fn reduce_into_split<E: Element, W: Element>(op: ReduceOp, recv: &[W], (src, dst): (&[E], &mut [E])) {
    for ((r, s), d) in recv.iter().zip(src).zip(dst.iter_mut()) {
        *d = E::Acc::combine(op, E::Acc::load(*r), E::Acc::load(*s)).store();
    }
}

/// One side of a recursive-doubling exchange. `mine` is this rank's wire
/// value, recomputed from `local` exactly as it was encoded for sending
/// (so the in-flight send slot is never read); both partners combine the
/// lower rank's wire value first, so they compute the same bits. With
/// `fin = Some((avg, out))` the result is final: divided for `Avg`, rounded
/// to the wire into `out`, and the decoded value stored.
pub fn exchange<E: Element, W: Element>(
    op: ReduceOp,
    theirs: &[W],
    local: &mut [E],
    mine_first: bool,
    mut fin: Option<(Option<usize>, &mut [W])>,
) -> bool {
    let mut over = false;
    for (i, (t, l)) in theirs.iter().zip(local.iter_mut()).enumerate() {
        over |= exchange_one(op, *t, *l, l, mine_first, fin.as_mut().map(|(avg, out)| (*avg, &mut out[i])));
    }
    over
}

/// [`exchange`] reading this rank's values from `src` and writing `dst`
/// (an out-of-place call's input and output): no copy of `src` first.
pub fn exchange_split<E: Element, W: Element>(
    op: ReduceOp,
    theirs: &[W],
    (src, dst): (&[E], &mut [E]),
    mine_first: bool,
    mut fin: Option<(Option<usize>, &mut [W])>,
) -> bool {
    let mut over = false;
    for (i, ((t, s), d)) in theirs.iter().zip(src).zip(dst.iter_mut()).enumerate() {
        over |= exchange_one(op, *t, *s, d, mine_first, fin.as_mut().map(|(avg, out)| (*avg, &mut out[i])));
    }
    over
}

/// One element of an exchange: `mine` (this rank's value, rounded to the
/// wire as it was sent) and `theirs` in rank order, into `d`; when final,
/// through the wire element `out`.
#[inline(always)]
fn exchange_one<E: Element, W: Element>(
    op: ReduceOp,
    theirs: W,
    mine: E,
    d: &mut E,
    mine_first: bool,
    fin: Option<(Option<usize>, &mut W)>,
) -> bool {
    let m: W = E::Acc::load(mine).store();
    let (m, t) = (E::Acc::load(m), E::Acc::load(theirs));
    let mut v = if mine_first { E::Acc::combine(op, m, t) } else { E::Acc::combine(op, t, m) };
    match fin {
        None => {
            *d = v.store();
            false
        }
        Some((avg, out)) => {
            if let Some(n) = avg {
                v = v.div_ranks(n);
            }
            let over = put(v, out);
            *d = E::Acc::load(*out).store();
            over
        }
    }
}
