//! One interface over every wire format's hop kernels, on raw message
//! bytes, so the executor has one body for element-wise codecs (a wire
//! element per buffer element) and block-scaled ones (scales, then codes).

use std::marker::PhantomData;

use super::blocked::{self, Quant};
use super::wire_stores::{WireChooser, WireHop};
use super::Stores;
use crate::element::{Element, ReduceOp};

/// The fused kernels of one (buffer element, wire format) pair. Each
/// returns `true` where an encode could not carry a value (see
/// [`crate::Error::WireOverflow`]).
pub(crate) trait HopKernels<E: Element> {
    /// Payload bytes of `n` elements.
    fn bytes(&self, n: usize) -> usize;
    /// The wire holds the buffer's own bits (decoding changes nothing).
    fn is_identity(&self) -> bool;
    fn encode(&self, src: &[E], out: &mut [u8]) -> bool;
    fn reduce_encode(&self, op: ReduceOp, recv: &[u8], local: &[E], out: &mut [u8]) -> bool;
    fn reduce_store_encode(
        &self,
        op: ReduceOp,
        avg: Option<usize>,
        recv: &[u8],
        local: &mut [E],
        out: &mut [u8],
    ) -> bool;
    /// [`Self::reduce_store_encode`] reading the local values from `src`
    /// and writing them to `dst`: an out-of-place call's input and output.
    /// The default copies `src` into `dst` first.
    fn reduce_store_encode_split(
        &self,
        op: ReduceOp,
        avg: Option<usize>,
        recv: &[u8],
        (src, dst): (&[E], &mut [E]),
        out: &mut [u8],
    ) -> bool {
        dst.copy_from_slice(src);
        self.reduce_store_encode(op, avg, recv, dst, out)
    }
    fn decode_store(&self, recv: &[u8], local: &mut [E]);
    fn reduce_into(&self, op: ReduceOp, recv: &[u8], local: &mut [E]);
    /// [`Self::reduce_into`] from `src` into `dst` (an out-of-place call's
    /// input and output). The default copies `src` into `dst` first.
    fn reduce_into_split(&self, op: ReduceOp, recv: &[u8], (src, dst): (&[E], &mut [E])) {
        dst.copy_from_slice(src);
        self.reduce_into(op, recv, dst)
    }
    fn exchange(
        &self,
        op: ReduceOp,
        theirs: &[u8],
        local: &mut [E],
        mine_first: bool,
        fin: Option<(Option<usize>, &mut [u8])>,
    ) -> bool;
    /// [`Self::exchange`] reading this rank's values from `src` and writing
    /// `dst`: an out-of-place call's input and output. The default copies
    /// `src` into `dst` first.
    fn exchange_split(
        &self,
        op: ReduceOp,
        theirs: &[u8],
        (src, dst): (&[E], &mut [E]),
        mine_first: bool,
        fin: Option<(Option<usize>, &mut [u8])>,
    ) -> bool {
        dst.copy_from_slice(src);
        self.exchange(op, theirs, dst, mine_first, fin)
    }
    /// `acc += decode(wire)`, as a `Sum` hop adds (error feedback; IEEE
    /// addition commutes, so this is the kernel's `recv + local` bit for bit).
    fn add_decoded(&self, wire: &[u8], acc: &mut [f32]);
    /// `acc -= decode(wire)` (error feedback).
    fn sub_decoded(&self, wire: &[u8], acc: &mut [f32]);
}

/// Element-wise wire: one `W` per element, writing the caller's buffer
/// with `stores` and the wire with the stores `wire_stores` chooses.
pub(crate) struct Elementwise<'a, W> {
    stores: Stores,
    wire_stores: &'a WireChooser,
    wire: PhantomData<W>,
}

impl<'a, W> Elementwise<'a, W> {
    pub(crate) fn new(stores: Stores, wire_stores: &'a WireChooser) -> Self {
        Elementwise { stores, wire_stores, wire: PhantomData }
    }

    /// Runs `write`, a `hop` kernel writing `n` wire values, with the
    /// stores the chooser picks.
    fn wire<R>(&self, hop: WireHop, n: usize, write: impl FnOnce(Stores) -> R) -> R {
        let width = std::mem::size_of::<W>();
        self.wire_stores.write(hop, width, n * width, write)
    }
}

impl<E: Element, W: Element> HopKernels<E> for Elementwise<'_, W> {
    fn bytes(&self, n: usize) -> usize {
        n * std::mem::size_of::<W>()
    }
    fn is_identity(&self) -> bool {
        E::DTYPE == W::DTYPE
    }
    fn encode(&self, src: &[E], out: &mut [u8]) -> bool {
        let out = w_mut::<W>(out, src.len());
        self.wire(WireHop::Encode, out.len(), |ws| super::encode_to(src, out, ws))
    }
    fn reduce_encode(&self, op: ReduceOp, recv: &[u8], local: &[E], out: &mut [u8]) -> bool {
        let n = local.len();
        let (recv, out) = (w::<W>(recv, n), w_mut::<W>(out, n));
        self.wire(WireHop::Reduce, out.len(), |ws| super::reduce_encode_to(op, recv, local, out, ws))
    }
    fn reduce_store_encode(
        &self,
        op: ReduceOp,
        avg: Option<usize>,
        recv: &[u8],
        local: &mut [E],
        out: &mut [u8],
    ) -> bool {
        let n = local.len();
        let (recv, out) = (w::<W>(recv, n), w_mut::<W>(out, n));
        self.wire(WireHop::Reduce, out.len(), |ws| super::reduce_store_encode_to(op, avg, recv, local, out, ws))
    }
    fn reduce_store_encode_split(
        &self,
        op: ReduceOp,
        avg: Option<usize>,
        recv: &[u8],
        (src, dst): (&[E], &mut [E]),
        out: &mut [u8],
    ) -> bool {
        let n = dst.len();
        let (recv, out) = (w::<W>(recv, n), w_mut::<W>(out, n));
        self.wire(WireHop::Reduce, out.len(), |ws| {
            super::reduce_store_encode_split(op, avg, recv, (src, dst), out, (self.stores, ws))
        })
    }
    fn decode_store(&self, recv: &[u8], local: &mut [E]) {
        super::decode_store(w::<W>(recv, local.len()), local, self.stores)
    }
    fn reduce_into(&self, op: ReduceOp, recv: &[u8], local: &mut [E]) {
        super::reduce_into(op, w::<W>(recv, local.len()), local)
    }
    fn reduce_into_split(&self, op: ReduceOp, recv: &[u8], (src, dst): (&[E], &mut [E])) {
        super::reduce_into_split(op, w::<W>(recv, dst.len()), (src, dst))
    }
    fn exchange(
        &self,
        op: ReduceOp,
        theirs: &[u8],
        local: &mut [E],
        mine_first: bool,
        fin: Option<(Option<usize>, &mut [u8])>,
    ) -> bool {
        let n = local.len();
        let fin = fin.map(|(avg, out)| (avg, w_mut::<W>(out, n)));
        super::exchange(op, w::<W>(theirs, n), local, mine_first, fin)
    }
    fn exchange_split(
        &self,
        op: ReduceOp,
        theirs: &[u8],
        (src, dst): (&[E], &mut [E]),
        mine_first: bool,
        fin: Option<(Option<usize>, &mut [u8])>,
    ) -> bool {
        let n = dst.len();
        let fin = fin.map(|(avg, out)| (avg, w_mut::<W>(out, n)));
        super::exchange_split(op, w::<W>(theirs, n), (src, dst), mine_first, fin)
    }
    fn add_decoded(&self, wire: &[u8], acc: &mut [f32]) {
        let n = acc.len();
        for (a, x) in acc.iter_mut().zip(w::<W>(wire, n)) {
            *a += x.to_f32();
        }
    }
    fn sub_decoded(&self, wire: &[u8], acc: &mut [f32]) {
        let n = acc.len();
        for (a, x) in acc.iter_mut().zip(w::<W>(wire, n)) {
            *a -= x.to_f32();
        }
    }
}

fn w<W: Element>(b: &[u8], n: usize) -> &[W] {
    bytemuck::cast_slice(&b[..n * std::mem::size_of::<W>()])
}

fn w_mut<W: Element>(b: &mut [u8], n: usize) -> &mut [W] {
    bytemuck::cast_slice_mut(&mut b[..n * std::mem::size_of::<W>()])
}

/// Block-scaled wire: `f32` scales, then `Q`'s codes.
pub(crate) struct BlockScaled<Q> {
    pub block: usize,
    q: PhantomData<Q>,
}

impl<Q> BlockScaled<Q> {
    pub(crate) fn new(block: usize) -> Self {
        BlockScaled { block, q: PhantomData }
    }
}

impl<E: Element, Q: Quant> HopKernels<E> for BlockScaled<Q> {
    fn bytes(&self, n: usize) -> usize {
        blocked::bytes::<Q>(n, self.block)
    }
    fn is_identity(&self) -> bool {
        false
    }
    fn encode(&self, src: &[E], out: &mut [u8]) -> bool {
        blocked::encode::<E, Q>(self.block, src, out)
    }
    fn reduce_encode(&self, op: ReduceOp, recv: &[u8], local: &[E], out: &mut [u8]) -> bool {
        blocked::reduce_encode::<E, Q>(self.block, op, recv, local, out)
    }
    fn reduce_store_encode(
        &self,
        op: ReduceOp,
        avg: Option<usize>,
        recv: &[u8],
        local: &mut [E],
        out: &mut [u8],
    ) -> bool {
        blocked::reduce_store_encode::<E, Q>(self.block, op, avg, recv, local, out)
    }
    fn decode_store(&self, recv: &[u8], local: &mut [E]) {
        blocked::decode_store::<E, Q>(self.block, recv, local)
    }
    fn reduce_into(&self, op: ReduceOp, recv: &[u8], local: &mut [E]) {
        blocked::reduce_into::<E, Q>(self.block, op, recv, local)
    }
    fn exchange(
        &self,
        op: ReduceOp,
        theirs: &[u8],
        local: &mut [E],
        mine_first: bool,
        fin: Option<(Option<usize>, &mut [u8])>,
    ) -> bool {
        blocked::exchange::<E, Q>(self.block, op, theirs, local, mine_first, fin)
    }
    fn add_decoded(&self, wire: &[u8], acc: &mut [f32]) {
        blocked::add_decoded::<Q>(self.block, wire, acc)
    }
    fn sub_decoded(&self, wire: &[u8], acc: &mut [f32]) {
        blocked::sub_decoded::<Q>(self.block, wire, acc)
    }
}
