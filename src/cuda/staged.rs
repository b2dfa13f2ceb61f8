//! The host-staged device backend: this process's rank of an allreduce of
//! a device buffer, run by the one executor ([`crate::exec`]) over any
//! [`crate::transport::Transport`] (MPI, shared memory, in-process
//! threads), so it works with any MPI. Each hop's fused kernel runs on the
//! device; a received message is copied up into the device inbox before
//! it, and an outgoing one, already encoded (an f32 buffer over FP16
//! stages half its bytes), is copied down into the executor's slot after
//! it. Slots, headers, checksums, abort notices, deadlines and the flight
//! record are the executor's, as for host buffers.
//!
//! Not pipelined on the device: every hop waits for its kernel (for the
//! overflow flag and the copy down), through pageable memory. Messages are
//! whole blocks unless the call sets `slice_bytes`: slicing lets
//! neighbours work on a block together, but each message waits for the
//! device, and measured on an H100 that cost more than it won
//! (docs/results/gpu-h100.md). Completing hops through events, polled by the
//! executor, with pinned slots, is what remains for speed (issue #23).

use std::ops::Range;

use super::walk::Call;
use super::Src;
use super::{Hop, Kind};
use crate::element::ReduceOp;
use crate::error::Result;
use crate::exec::Backend;

/// One rank's device memory and queue: its buffer, inbox and outgoing
/// slice, and the copies between them and the host.
pub(crate) trait RankMemory {
    /// Makes the inbox and the outgoing slice hold at least `bytes`.
    fn prepare(&mut self, bytes: usize) -> Result<()>;
    /// Queues `hop` (see [`super::walk::Lanes::hop`]; the inbox holds one
    /// message, from byte 0).
    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()>;
    /// Copies the first `dst.len()` bytes of `src` to `dst`, once the
    /// kernels queued before have run.
    fn stage_out(&mut self, src: Src, dst: &mut [u8]) -> Result<()>;
    /// Copies `src` to the start of the inbox, queued before the next kernel.
    fn stage_in(&mut self, src: &[u8]) -> Result<()>;
    /// Whether an encode overflowed its wire since the last call (waits).
    fn take_overflow(&mut self) -> Result<bool>;
}

/// A rank's device memory as the executor's backend for the call `c`.
pub(crate) struct StagedHops<'m, M> {
    pub mem: &'m mut M,
    pub c: Call,
    touched: bool,
}

impl<'m, M: RankMemory> StagedHops<'m, M> {
    pub(crate) fn new(mem: &'m mut M, c: Call) -> Self {
        StagedHops { mem, c, touched: false }
    }

    fn hop(&self, kind: Kind) -> Hop {
        Hop::new(kind, self.c.buffer, self.c.wire, self.c.op)
    }

    /// Queues `hop` over `range`, reading the inbox if `recv` is given
    /// (copied up first); returns whether it overflowed the wire, and
    /// copies its output down into `out` if given.
    fn run(&mut self, hop: Hop, range: Range<usize>, recv: Option<&[u8]>, out: Option<&mut [u8]>) -> Result<bool> {
        if let Some(r) = recv {
            self.mem.stage_in(r)?;
        }
        let src = recv.map(|_| Src::Inbox(0));
        self.mem.hop(&hop, range.len(), src, range.start)?;
        if hop.kind != Kind::Encode && hop.kind != Kind::DecodeReduceEncode {
            self.touched = true;
        }
        let over = hop.kind.writes_out(hop.fin) && self.mem.take_overflow()?;
        if let Some(out) = out {
            self.mem.stage_out(Src::Out, out)?;
        }
        Ok(over)
    }

    fn avg(&self) -> Option<u32> {
        (self.c.op == ReduceOp::Avg).then_some(self.c.size as u32)
    }
}

impl<M: RankMemory> Backend for StagedHops<'_, M> {
    fn wire_bytes(&self, n: usize) -> usize {
        n * self.c.wire.size()
    }
    fn elements(&self) -> usize {
        self.c.count
    }
    fn prepare(&mut self, payload_bytes: usize) -> Result<()> {
        self.mem.prepare(payload_bytes)
    }
    fn touched(&self) -> bool {
        self.touched
    }

    fn encode(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        self.run(self.hop(Kind::Encode), range, None, Some(out))
    }

    fn send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        self.encode(range, out)
    }

    fn copy_send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool> {
        // The sender keeps exactly what the others will decode.
        let over = self.run(self.hop(Kind::Encode), range.clone(), None, None)?;
        self.mem.hop(&self.hop(Kind::DecodeStore), range.len(), Some(Src::Out), range.start)?;
        self.touched = true;
        self.mem.stage_out(Src::Out, out)?;
        Ok(over)
    }

    fn reduce_send(&mut self, range: Range<usize>, recv: &[u8], out: &mut [u8], store: bool) -> Result<bool> {
        let hop = if store {
            Hop { avg_ranks: self.avg(), ..self.hop(Kind::DecodeReduceStoreEncode) }
        } else {
            self.hop(Kind::DecodeReduceEncode)
        };
        self.run(hop, range, Some(recv), Some(out))
    }

    fn reduce(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()> {
        self.run(self.hop(Kind::DecodeReduce), range, Some(recv), None).map(|_| ())
    }

    fn store(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()> {
        self.run(self.hop(Kind::DecodeStore), range, Some(recv), None).map(|_| ())
    }

    fn exchange(
        &mut self,
        range: Range<usize>,
        theirs: &[u8],
        mine_first: bool,
        fin: Option<&mut [u8]>,
    ) -> Result<bool> {
        let last = fin.is_some();
        let hop =
            Hop { mine_first, fin: last, avg_ranks: if last { self.avg() } else { None }, ..self.hop(Kind::Exchange) };
        // The final value's encoding stays on the device: only its
        // overflow flag matters here.
        self.run(hop, range, Some(theirs), None)
    }
}

#[cfg(test)]
mod tests;
