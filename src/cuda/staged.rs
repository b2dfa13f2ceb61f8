//! The host-staged carrier: this process's rank of an allreduce of a
//! device buffer over any [`Transport`] (MPI, shared memory, in-process
//! threads), so it works with any MPI. Each message is encoded on the
//! device by the fused kernel, copied down into a host slot already encoded
//! (an f32 buffer over FP16 stages half its bytes), sent with a header as
//! the host executor's messages are, and on the other side copied up into
//! the device inbox the next kernel reads.
//!
//! Not pipelined on the device: a message's kernel, copy down and send (or
//! receive, copy up and kernel) run one after the other, with up to
//! `slots` sends in flight, through pageable memory. Messages are whole
//! blocks unless the call sets `slice_bytes`: slicing lets neighbours work
//! on a block together, but each message waits for the device twice, and
//! measured on an H100 that cost more than it won (docs/gpu-results.md).
//! Overlapping copies, kernels and transfers over the slots, with pinned
//! buffers, is what remains for speed (issue #5).

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::walk::{self, run_slice, Call, MsgAt, Src, StepIo};
use super::Hop;
use crate::error::{BufferState, Error, Result};
use crate::exec::{abort_notice, mismatch, wait_error};
use crate::op::OpDesc;
use crate::schedule::{AnySchedule, Cursor, Schedule};
use crate::transport::{Deadline, SlotId, Transport};
use crate::wire::{Header, FLAG_ABORT, FLAG_CHECKSUM, FLAG_OVERFLOW, HEADER};

/// One rank's device memory and queue: its buffer, inbox and outgoing
/// slice, and the copies between them and the host.
pub(crate) trait RankMemory {
    /// Makes the inbox and the outgoing slice hold at least `bytes`.
    fn prepare(&mut self, bytes: usize) -> Result<()>;
    /// Queues `hop` (see [`walk::Lanes::hop`]; the inbox holds one message,
    /// from byte 0).
    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()>;
    /// Copies the first `dst.len()` bytes of `src` to `dst`, once the
    /// kernels queued before have run.
    fn stage_out(&mut self, src: Src, dst: &mut [u8]) -> Result<()>;
    /// Copies `src` to the start of the inbox, queued before the next kernel.
    fn stage_in(&mut self, src: &[u8]) -> Result<()>;
    /// Whether an encode overflowed its wire since the last call (waits).
    fn take_overflow(&mut self) -> Result<bool>;
}

/// What the carrier needs of the communicator.
pub(crate) struct Ctx<'a> {
    pub t: &'a mut dyn Transport,
    pub desc: &'a OpDesc,
    pub timeout: Duration,
    pub abort: &'a AtomicBool,
    /// Sends in flight, at most.
    pub slots: usize,
    /// Compare each message's call fingerprint with this rank's call.
    pub verify_calls: bool,
    /// Elements per message.
    pub slice: usize,
}

/// Runs this rank's part of the allreduce `c` on `mem` over `cx.t`.
/// Returns whether an encode overflowed the wire on this rank or upstream
/// of it (as the host's flags travel, so every rank reports the same).
pub(crate) fn allreduce<M: RankMemory>(cx: Ctx<'_>, mem: &mut M, c: &Call) -> Result<bool> {
    let rank = cx.t.rank();
    let s = walk::schedule_of(c, rank);
    let slice = cx.slice.max(1);
    let bytes = walk::max_block_bytes(&s, c.wire).min(slice * c.wire.size());
    mem.prepare(bytes)?;
    // `slots` receives posted ahead and `slots` sends in flight leave two
    // slots: one for a hop's outgoing message, one for the receive it
    // waits on (as the host executor's pool; see `crate::exec`).
    let total = 2 * cx.slots + 2;
    let cx_slots = cx.slots;
    cx.t.reserve(total, HEADER + bytes).map_err(|e| Error::Transport {
        rank: cx.t.rank(),
        op: cx.desc.clone(),
        peer: cx.t.rank(),
        detail: e,
        buffer: BufferState::Untouched,
    })?;
    let mut base = Header::new(cx.desc, 0, 0);
    if !cx.verify_calls {
        base.fp = [0; 16];
    }
    let mut io = Staged {
        cx,
        mem,
        c,
        base,
        free: (0..total).collect(),
        sends: VecDeque::new(),
        held: None,
        flags: 0,
        msgs: 0,
        s: &s,
        ahead: Cursor::new(&s, slice, cx_slots, true),
        posted: VecDeque::new(),
    };
    let r = (|| {
        // The host executor's order (see `Cursor`): rounds of `slots`
        // slices of each step, receives posted `slots` ahead. Walking step
        // by step, a rank pushing every slice of its first block would
        // wait on sends whose receives its neighbour, doing the same, has
        // not posted.
        let mut hops = Cursor::new(&s, slice, cx_slots, false);
        while let Some(h) = hops.next(&s) {
            io.top_up()?;
            let mut sent = false;
            // Every receive here waits for its message, so a slice never
            // returns unfinished.
            if !run_slice(&mut io, h.step, rank, h.step_idx, (h.slice_idx, h.range), &mut sent)? {
                return Err(io.protocol(h.step.recv_from, h.step_idx, "a slice could not finish".into()));
            }
        }
        if let Some(id) = io.held.take() {
            io.done_with(id);
        }
        while let Some(id) = io.complete_oldest()? {
            io.free.push_back(id);
        }
        Ok(io.flags & FLAG_OVERFLOW != 0)
    })();
    r.map_err(|e| {
        io.notify_abort(&s, &e);
        e.with_buffer(BufferState::Partial)
    })
}

struct Staged<'c, 'm, M> {
    cx: Ctx<'c>,
    mem: &'m mut M,
    c: &'m Call,
    base: Header,
    free: VecDeque<SlotId>,
    /// Sends in flight: slot, peer, step.
    sends: VecDeque<(SlotId, usize, usize)>,
    /// A received message the step forwards.
    held: Option<SlotId>,
    /// The flags this rank has seen (its own overflow, and every header's).
    flags: u16,
    /// Messages received, for error reports.
    msgs: usize,
    /// This rank's schedule.
    s: &'m AnySchedule,
    /// The receives not yet posted, in order.
    ahead: Cursor,
    /// Receives posted and not yet taken: slot, and step, slice and peer.
    posted: VecDeque<(SlotId, (usize, usize, usize))>,
}

impl<M: RankMemory> Staged<'_, '_, M> {
    fn tag(&self) -> u32 {
        crate::exec::call_tag(self.cx.desc.seq, &*self.cx.t)
    }

    fn rank(&self) -> usize {
        self.cx.t.rank()
    }

    fn protocol(&self, peer: usize, step: usize, detail: String) -> Error {
        Error::Protocol {
            rank: self.rank(),
            op: self.cx.desc.clone(),
            peer,
            step,
            detail,
            buffer: BufferState::Untouched,
        }
    }

    fn transport(&self, peer: usize, detail: String) -> Error {
        Error::Transport { rank: self.rank(), op: self.cx.desc.clone(), peer, detail, buffer: BufferState::Untouched }
    }

    fn wait(&mut self, id: SlotId, peer: usize, dir: &'static str, step: usize) -> Result<usize> {
        let mut deadline = Deadline::after(self.cx.timeout);
        let (rank, msg, timeout) = (self.rank(), self.msgs, self.cx.timeout);
        let desc = self.cx.desc;
        self.cx
            .t
            .wait(id, &mut deadline, self.cx.abort)
            .map_err(|e| wait_error(rank, desc, peer, dir, step, msg, timeout, e))
    }

    /// Completes the oldest send; its slot, or `None` if none is in flight.
    fn complete_oldest(&mut self) -> Result<Option<SlotId>> {
        let Some((id, peer, step)) = self.sends.pop_front() else { return Ok(None) };
        self.wait(id, peer, "send to", step)?;
        Ok(Some(id))
    }

    fn acquire(&mut self) -> Result<SlotId> {
        if let Some(id) = self.free.pop_front() {
            return Ok(id);
        }
        let id = self.complete_oldest()?;
        id.ok_or_else(|| self.transport(self.rank(), "no free message slot".into()))
    }

    /// Tells every peer of this rank's schedule (best effort, a header
    /// only, never waited on) that the call failed, so their waits end now
    /// with [`Error::PeerAborted`] rather than at their deadline.
    fn notify_abort(&mut self, s: &AnySchedule, e: &Error) {
        let origin = match e {
            Error::PeerAborted { origin, .. } => *origin,
            _ => self.rank(),
        };
        let mut told = Vec::new(); // only on the error path
        for i in 0..s.len() {
            let st = s.step(i);
            for peer in [st.send_to, st.recv_from] {
                if peer == self.rank() || told.contains(&peer) {
                    continue;
                }
                let Some(id) = self.free.pop_front() else { return };
                Header { flags: FLAG_ABORT, block: origin as u32, ..self.base }.write(self.cx.t.slot_mut(id));
                let tag = self.tag();
                // The carrier's cancel_all (the communicator's finish)
                // reclaims the slot.
                let _ = self.cx.t.post_send(id, HEADER, peer, tag);
                told.push(peer);
            }
        }
    }

    /// Posts receives until `slots` are waiting (or all are posted).
    fn top_up(&mut self) -> Result<()> {
        while self.posted.len() < self.cx.slots {
            let Some(h) = self.ahead.next(self.s) else { break };
            let from = h.step.recv_from;
            let id = self.acquire()?;
            let tag = self.tag();
            self.cx.t.post_recv(id, from, tag).map_err(|e| self.transport(from, e))?;
            self.posted.push_back((id, (h.step_idx, h.slice_idx, from)));
        }
        Ok(())
    }

    fn done_with(&mut self, id: SlotId) {
        self.cx.t.release(id);
        self.free.push_back(id);
    }

    fn post(&mut self, id: SlotId, len: usize, to: usize, step: usize) -> Result<()> {
        let tag = self.tag();
        self.cx.t.post_send(id, len, to, tag).map_err(|e| self.transport(to, e))?;
        self.sends.push_back((id, to, step));
        while self.sends.len() > self.cx.slots {
            let id = self.complete_oldest()?.expect("a send in flight");
            self.free.push_back(id);
        }
        Ok(())
    }
}

impl<M: RankMemory> StepIo for Staged<'_, '_, M> {
    fn call(&self) -> &Call {
        self.c
    }

    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        self.mem.hop(hop, n, recv, at)?;
        if hop.kind.writes_out(hop.fin) && self.mem.take_overflow()? {
            self.flags |= FLAG_OVERFLOW;
        }
        Ok(())
    }

    fn send(&mut self, src: Src, to: usize, m: MsgAt) -> Result<()> {
        if let Src::Inbox(_) = src {
            // Forward the very message received, header and all.
            let id = self.held.take().expect("a kept message to forward");
            return self.post(id, HEADER + m.bytes, to, m.step);
        }
        let id = self.acquire()?;
        let h = Header { flags: self.flags, block: m.block as u32, slice: m.slice as u32, ..self.base };
        let slot = self.cx.t.slot_mut(id);
        h.write(slot);
        self.mem.stage_out(src, &mut slot[HEADER..HEADER + m.bytes])?;
        self.post(id, HEADER + m.bytes, to, m.step)
    }

    fn recv(&mut self, from: usize, m: MsgAt, keep: bool) -> Result<Option<Src>> {
        if let Some(id) = self.held.take() {
            self.done_with(id);
        }
        self.top_up()?;
        let Some((id, _)) = self.posted.pop_front().filter(|&(_, at)| at == (m.step, m.slice, from)) else {
            return Err(self.protocol(from, m.step, format!("no receive posted for slice {} of this step", m.slice)));
        };
        let got = self.wait(id, from, "receive from", m.step)?;
        self.msgs += 1;
        let want = Header { block: m.block as u32, slice: m.slice as u32, ..self.base };
        let h = Header::read(&self.cx.t.slot(id)[..got.min(HEADER)]);
        if let Some(h) = h.filter(|h| h.flags & FLAG_ABORT != 0) {
            return Err(abort_notice(&*self.cx.t, self.cx.desc, &h, from, m.step));
        }
        if self.cx.verify_calls {
            if let Some(e) = h.and_then(|h| mismatch(self.rank(), self.cx.desc, &h, &want, from)) {
                return Err(e);
            }
        }
        match h {
            Some(h) if got == HEADER + m.bytes && h.flags & FLAG_CHECKSUM == 0 && Header { flags: 0, ..h } == want => {
                self.flags |= h.flags;
            }
            _ => {
                let detail = format!(
                    "expected {} bytes for seq {} block {}, got {got} bytes with header {h:?}",
                    HEADER + m.bytes,
                    want.seq,
                    want.block
                );
                return Err(self.protocol(from, m.step, detail));
            }
        }
        let payload = &self.cx.t.slot(id)[HEADER..HEADER + m.bytes];
        self.mem.stage_in(payload)?;
        if keep {
            self.held = Some(id);
        } else {
            self.done_with(id);
        }
        Ok(Some(Src::Inbox(0)))
    }
}

#[cfg(test)]
mod tests;
