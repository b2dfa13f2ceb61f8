//! The host backend: a rank's buffer in this process's memory and the
//! host kernels of one wire format ([`HopKernels`]), with error feedback.

use std::ops::Range;

use super::Backend;
use crate::buffers::{Local, Update};
use crate::cpu::hop::HopKernels;
use crate::element::{widen, Element, ReduceOp};
use crate::error::Result;

/// One rank's buffer and kernels for one call.
pub(crate) struct HostHops<'k, 'l, 'b, E, K> {
    pub k: &'k K,
    pub local: &'l mut Local<'b, E>,
    pub op: ReduceOp,
    /// `Some(n)` for `Avg` over `n` ranks.
    pub avg: Option<usize>,
    /// Error feedback (ring allreduce of an in-place `Sum` only): for
    /// every element this rank encodes, `residual[i]` becomes the value
    /// before the encode minus the value the wire carries.
    pub residual: Option<&'l mut [f32]>,
    touched: bool,
}

impl<'k, 'l, 'b, E: Element, K: HopKernels<E>> HostHops<'k, 'l, 'b, E, K> {
    pub(crate) fn new(
        k: &'k K,
        local: &'l mut Local<'b, E>,
        op: ReduceOp,
        avg: Option<usize>,
        residual: Option<&'l mut [f32]>,
    ) -> Self {
        // Reduce-scatter's output already holds the own block of the input.
        let touched = matches!(local, Local::Scatter { .. });
        HostHops { k, local, op, avg, residual, touched }
    }
}

impl<E: Element, K: HopKernels<E>> Backend for HostHops<'_, '_, '_, E, K> {
    fn wire_bytes(&self, n: usize) -> usize {
        self.k.bytes(n)
    }
    fn elements(&self) -> usize {
        self.local.output().len()
    }
    fn touched(&self) -> bool {
        self.touched
    }

    fn encode(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        Ok(self.k.encode(self.local.read(range), out))
    }

    fn send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        let over = self.k.encode(self.local.read(range.clone()), out);
        if let Some(res) = self.residual.as_deref_mut() {
            let res = &mut res[range.clone()];
            widen(self.local.read(range), res);
            self.k.sub_decoded(out, res);
        }
        Ok(over)
    }

    fn copy_send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        let over = self.k.encode(self.local.read(range.clone()), out);
        // The value is final: the sender keeps exactly what the others will
        // decode (a no-op only for a native wire on an in-place buffer).
        if !(self.k.is_identity() && self.local.is_in_place()) {
            self.touched = true;
            self.k.decode_store(out, self.local.overwrite(range));
        }
        Ok(over)
    }

    fn reduce_send(&mut self, range: Range<usize>, recv: &[u8], out: &mut [u8], store: bool) -> Result<bool> {
        let (k, op) = (self.k, self.op);
        // Error feedback: the value about to be encoded, formed as the
        // kernel forms it (received + local, in f32).
        let mut res = self.residual.as_deref_mut().map(|r| &mut r[range.clone()]);
        if let Some(res) = res.as_deref_mut() {
            widen(self.local.read(range.clone()), res);
            k.add_decoded(recv, res);
        }
        let over = if !store {
            k.reduce_encode(op, recv, self.local.read(range), out)
        } else {
            self.touched = true;
            match self.local.update(range) {
                Update::InPlace(l) => k.reduce_store_encode(op, self.avg, recv, l, out),
                Update::Split(s, d) => k.reduce_store_encode_split(op, self.avg, recv, (s, d), out),
            }
        };
        if let Some(res) = res {
            k.sub_decoded(out, res);
        }
        Ok(over)
    }

    fn reduce(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()> {
        self.touched = true;
        match self.local.update(range) {
            Update::InPlace(l) => self.k.reduce_into(self.op, recv, l),
            Update::Split(s, d) => self.k.reduce_into_split(self.op, recv, (s, d)),
        }
        Ok(())
    }

    fn store(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()> {
        self.touched = true;
        self.k.decode_store(recv, self.local.overwrite(range));
        Ok(())
    }

    fn exchange(
        &mut self,
        range: Range<usize>,
        theirs: &[u8],
        mine_first: bool,
        fin: Option<&mut [u8]>,
    ) -> Result<bool> {
        self.touched = true;
        let (k, op) = (self.k, self.op);
        let fin = fin.map(|f| (self.avg, f));
        // In place, or, where an out-of-place call's elements are still
        // fresh, from its input straight into its output (no copy of the
        // input first).
        Ok(match self.local.update(range) {
            Update::InPlace(l) => k.exchange(op, theirs, l, mine_first, fin),
            Update::Split(s, d) => k.exchange_split(op, theirs, (s, d), mine_first, fin),
        })
    }
}
