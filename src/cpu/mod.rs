//! The host backend's fused hop kernels.
//!
//! One call per hop does the whole *decode, reduce, encode* of a slice. For
//! `f32` buffers on x86-64 with AVX2 and F16C (checked at run time, so a
//! plain `cargo build --release` uses them) the vector bodies in `x86`
//! run, with the portable bodies in `scalar` on the tail; every other
//! (element, wire) pair runs the portable bodies. Both give the same bits:
//! the unit tests below compare them on random and special values. Set
//! `RINGFUSE_NO_SIMD=1` to force the portable bodies.

pub(crate) mod blocked;
pub(crate) mod hop;
pub(crate) mod scalar;
pub(crate) mod stores;
pub(crate) mod wire_stores;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use stores::Stores;
pub use wire_stores::WireStores;

use crate::element::{DType, Element, ReduceOp};

#[cfg(target_arch = "x86_64")]
fn vector_kind<E: Element, W: Element>() -> Option<x86::WireKind> {
    if E::DTYPE != DType::F32 {
        return None;
    }
    match W::DTYPE {
        DType::F32 => Some(x86::WireKind::F32),
        DType::F16 => Some(x86::WireKind::F16),
        DType::Bf16 => Some(x86::WireKind::Bf16),
        DType::F64 => None,
    }
}

/// Whether the vector bodies are in use on this machine.
pub fn simd_active() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Elements of `out` before the first one aligned for the vector bodies'
/// streaming wire stores, when `wire` asks for them and the wire can be
/// aligned; else 0 (and the vector bodies store through the cache).
#[cfg(target_arch = "x86_64")]
fn wire_head<W>(k: x86::WireKind, out: &[W], wire: Stores) -> usize {
    let (addr, width) = (out.as_ptr() as usize, std::mem::size_of::<W>());
    if wire != Stores::Streaming || addr % width != 0 {
        return 0;
    }
    let align = x86::wire_align(k);
    ((align - addr % align) % align / width).min(out.len())
}

/// First hop: `out = wire(src)`. Returns whether a finite value overflowed.
pub fn encode<E: Element, W: Element>(src: &[E], out: &mut [W]) -> bool {
    encode_to(src, out, Stores::Cached)
}

/// [`encode`], writing the wire with `wire` stores.
pub fn encode_to<E: Element, W: Element>(src: &[E], out: &mut [W], wire: Stores) -> bool {
    assert_eq!(src.len(), out.len(), "kernel slices differ in length");
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = vector_kind::<E, W>() {
        let h = wire_head(k, out, wire);
        let over = scalar::encode(&src[..h], &mut out[..h]);
        let ws = wire == Stores::Streaming;
        let (n, v) = x86::encode_vec(k, bytemuck::cast_slice(&src[h..]), bytemuck::cast_slice_mut(&mut out[h..]), ws);
        return over | v | scalar::encode(&src[h + n..], &mut out[h + n..]);
    }
    scalar::encode(src, out)
}

/// Middle reduce-scatter hop: `out = wire(recv op local)`.
pub fn reduce_encode<E: Element, W: Element>(op: ReduceOp, recv: &[W], local: &[E], out: &mut [W]) -> bool {
    reduce_encode_to(op, recv, local, out, Stores::Cached)
}

/// [`reduce_encode`], writing the wire with `wire` stores.
pub fn reduce_encode_to<E: Element, W: Element>(
    op: ReduceOp,
    recv: &[W],
    local: &[E],
    out: &mut [W],
    wire: Stores,
) -> bool {
    assert!(recv.len() == local.len() && out.len() == local.len(), "kernel slices differ in length");
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = vector_kind::<E, W>() {
        let h = wire_head(k, out, wire);
        let over = scalar::reduce_encode(op, &recv[..h], &local[..h], &mut out[..h]);
        let (n, v) = x86::reduce_encode_vec(
            k,
            op,
            bytemuck::cast_slice(&recv[h..]),
            bytemuck::cast_slice(&local[h..]),
            bytemuck::cast_slice_mut(&mut out[h..]),
            wire == Stores::Streaming,
        );
        let h = h + n;
        return over | v | scalar::reduce_encode(op, &recv[h..], &local[h..], &mut out[h..]);
    }
    scalar::reduce_encode(op, recv, local, out)
}

/// Last reduce-scatter hop: `out = wire(recv op local [/ n])`,
/// `local = decode(out)`.
pub fn reduce_store_encode<E: Element, W: Element>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[W],
    local: &mut [E],
    out: &mut [W],
) -> bool {
    reduce_store_encode_to(op, avg_ranks, recv, local, out, Stores::Cached)
}

/// [`reduce_store_encode`], writing the wire with `wire` stores.
pub fn reduce_store_encode_to<E: Element, W: Element>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[W],
    local: &mut [E],
    out: &mut [W],
    wire: Stores,
) -> bool {
    assert!(recv.len() == local.len() && out.len() == local.len(), "kernel slices differ in length");
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = vector_kind::<E, W>() {
        let h = wire_head(k, out, wire);
        let over = scalar::reduce_store_encode(op, avg_ranks, &recv[..h], &mut local[..h], &mut out[..h]);
        let (n, v) = x86::reduce_store_encode_vec(
            k,
            op,
            avg_ranks,
            bytemuck::cast_slice(&recv[h..]),
            bytemuck::cast_slice_mut(&mut local[h..]),
            bytemuck::cast_slice_mut(&mut out[h..]),
            wire == Stores::Streaming,
        );
        let h = h + n;
        return over | v | scalar::reduce_store_encode(op, avg_ranks, &recv[h..], &mut local[h..], &mut out[h..]);
    }
    scalar::reduce_store_encode(op, avg_ranks, recv, local, out)
}

/// [`reduce_store_encode`] reading the local values from `src` and writing
/// them to `dst` (an out-of-place call's input and output), so that an
/// output block needs no copy of the input first; `dst` with `stores`, the
/// wire with `wire` stores.
pub fn reduce_store_encode_split<E: Element, W: Element>(
    op: ReduceOp,
    avg_ranks: Option<usize>,
    recv: &[W],
    (src, dst): (&[E], &mut [E]),
    out: &mut [W],
    (stores, wire): (Stores, Stores),
) -> bool {
    let n = dst.len();
    assert!(recv.len() == n && src.len() == n && out.len() == n, "kernel slices differ in length");
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = vector_kind::<E, W>() {
        let h = wire_head(k, out, wire);
        let over =
            scalar::reduce_store_encode_split(op, avg_ranks, &recv[..h], (&src[..h], &mut dst[..h]), &mut out[..h]);
        let (v, vo) = x86::reduce_store_encode_split_vec(
            k,
            op,
            avg_ranks,
            bytemuck::cast_slice(&recv[h..]),
            (bytemuck::cast_slice(&src[h..]), bytemuck::cast_slice_mut(&mut dst[h..])),
            bytemuck::cast_slice_mut(&mut out[h..]),
            (stores == Stores::Streaming, wire == Stores::Streaming),
        );
        let h = h + v;
        return over
            | vo
            | scalar::reduce_store_encode_split(op, avg_ranks, &recv[h..], (&src[h..], &mut dst[h..]), &mut out[h..]);
    }
    scalar::reduce_store_encode_split(op, avg_ranks, recv, (src, dst), out)
}

/// Allgather hop: `local = decode(recv)`.
pub fn decode_store<E: Element, W: Element>(recv: &[W], local: &mut [E], stores: Stores) {
    assert_eq!(recv.len(), local.len(), "kernel slices differ in length");
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = vector_kind::<E, W>() {
        let stream = stores == Stores::Streaming;
        let n = x86::decode_store_vec(k, bytemuck::cast_slice(recv), bytemuck::cast_slice_mut(local), stream);
        return scalar::decode_store(&recv[n..], &mut local[n..]);
    }
    scalar::decode_store(recv, local)
}

/// Recursive-doubling fold: `local = recv op local` (portable body: this
/// path serves small buffers, where latency, not the kernel, dominates).
pub fn reduce_into<E: Element, W: Element>(op: ReduceOp, recv: &[W], local: &mut [E]) {
    assert_eq!(recv.len(), local.len(), "kernel slices differ in length");
    scalar::reduce_into(op, recv, local)
}

/// [`reduce_into`] from an out-of-place call's input `src` into its
/// output `dst`: `dst = recv op src`, with no copy of `src` first.
pub fn reduce_into_split<E: Element, W: Element>(op: ReduceOp, recv: &[W], (src, dst): (&[E], &mut [E])) {
    assert!(recv.len() == dst.len() && src.len() == dst.len(), "kernel slices differ in length");
    scalar::reduce_into_split(op, recv, (src, dst))
}

/// Recursive-doubling exchange (vector body for `f32` buffers); see
/// `scalar::exchange`.
pub fn exchange<E: Element, W: Element>(
    op: ReduceOp,
    theirs: &[W],
    local: &mut [E],
    mine_first: bool,
    fin: Option<(Option<usize>, &mut [W])>,
) -> bool {
    exchange_from(op, theirs, None, local, mine_first, fin)
}

/// [`exchange`] reading this rank's values from `src` and writing them to
/// `dst` (an out-of-place call's input and output), so the block needs no
/// copy of the input first.
pub fn exchange_split<E: Element, W: Element>(
    op: ReduceOp,
    theirs: &[W],
    (src, dst): (&[E], &mut [E]),
    mine_first: bool,
    fin: Option<(Option<usize>, &mut [W])>,
) -> bool {
    exchange_from(op, theirs, Some(src), dst, mine_first, fin)
}

/// The exchange into `local`, combining `src` where given, else `local`'s
/// own values.
fn exchange_from<E: Element, W: Element>(
    op: ReduceOp,
    theirs: &[W],
    src: Option<&[E]>,
    local: &mut [E],
    mine_first: bool,
    fin: Option<(Option<usize>, &mut [W])>,
) -> bool {
    let n = local.len();
    assert!(theirs.len() == n && src.is_none_or(|s| s.len() == n), "kernel slices differ in length");
    if let Some((_, out)) = &fin {
        assert_eq!(out.len(), n, "kernel slices differ in length");
    }
    #[cfg(target_arch = "x86_64")]
    let (v, over, fin) = match vector_kind::<E, W>() {
        Some(k) => {
            let mut fin = fin;
            let vfin = fin.as_mut().map(|(avg, out)| (*avg, bytemuck::cast_slice_mut::<W, u8>(&mut out[..])));
            let (theirs, local) = (bytemuck::cast_slice(theirs), bytemuck::cast_slice_mut(local));
            let (v, over) = x86::exchange_vec(k, op, mine_first, vfin, theirs, src.map(bytemuck::cast_slice), local);
            (v, over, fin)
        }
        None => (0, false, fin),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (v, over) = (0, false);
    let tail_fin = fin.map(|(avg, out)| (avg, &mut out[v..]));
    over | match src {
        None => scalar::exchange(op, &theirs[v..], &mut local[v..], mine_first, tail_fin),
        Some(s) => scalar::exchange_split(op, &theirs[v..], (&s[v..], &mut local[v..]), mine_first, tail_fin),
    }
}

#[cfg(test)]
mod tests;
