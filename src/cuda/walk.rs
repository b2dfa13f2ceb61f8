//! In-process ranks whose buffers share one memory (one GPU): every
//! rank's allreduce schedule walked from one thread, with the fused hop
//! kernels, each rank on its own queue ([`Lanes`]).
//!
//! The schedules are the host executor's ([`crate::schedule::allreduce`]),
//! and each step runs the kernel of the same hop kind on its whole block,
//! so every element meets the same operands in the same order as on the
//! host: the results are the CPU backend's, bit for bit (the kernels are
//! held to the host path by `cuda::tests`; the walk by `walk::tests`,
//! which runs it over the kernels' host build).
//!
//! A message is a copy, queued on the sender's lane, from its outgoing
//! slice into the receiver's inbox; the receiver's lane waits for it
//! ([`Lanes::accept`]) before the kernel that reads it. Each received
//! message has its own inbox region for the whole call, so a sender never
//! waits for its receiver to finish with the last one. The walk visits the
//! ranks in turn and runs each as far as the messages already sent let it:
//! it queues work and never waits for the device.

use std::collections::VecDeque;

use super::{codec_for, Hop, Kind, Src, ALIGN};
use crate::element::{DType, ReduceOp};
use crate::error::{Error, Result};
use crate::schedule::Algorithm;
use crate::schedule::{self, AnySchedule, Prim, Schedule, Shape};

/// The memory and queues of `size` ranks: each rank's buffer, outgoing
/// slice and inbox, and a queue its kernels and sends run on in order.
pub(crate) trait Lanes {
    /// Makes each rank's inbox hold at least `inbox[r]` bytes and its
    /// outgoing slice `out[r]` bytes.
    fn prepare(&mut self, inbox: &[usize], out: &[usize]) -> Result<()>;
    /// Queues `hop` on `rank`'s lane over `n` elements: its buffer from
    /// element `at`, the wire input (where read) at `recv`, the output
    /// (where written) at the start of its outgoing slice (so never both
    /// there).
    fn hop(&mut self, rank: usize, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()>;
    /// Queues on `rank`'s lane a copy of `bytes` from `src` to byte `dst`
    /// of `to`'s inbox; returns the message's number for [`Lanes::accept`].
    fn send(&mut self, rank: usize, src: Src, to: usize, dst: usize, bytes: usize) -> Result<usize>;
    /// Makes `rank`'s lane wait for message `msg` to have arrived.
    fn accept(&mut self, rank: usize, msg: usize) -> Result<()>;
    /// Orders every lane after everything queued so far on every lane (so
    /// the next call cannot overwrite an inbox still being read).
    fn finish(&mut self) -> Result<()>;
}

/// One allreduce call: what every rank runs. `algo` is resolved and
/// `shape` is the host executor's for the same call (its slice and slots
/// shape the tree's and halving's blocks), so the device walks the very
/// schedules the host does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub size: usize,
    pub count: usize,
    pub buffer: DType,
    pub wire: DType,
    pub op: ReduceOp,
    pub algo: Algorithm,
    pub shape: Shape,
}

impl Call {
    /// The call of in-process device ranks, which have no communicator:
    /// `algo` resolved and the shape taken as a communicator of `size`
    /// ranks on one host would with default options (the CPU backend the
    /// results are held to, [`super::cpu_allreduce`], runs those).
    pub(crate) fn in_process(
        size: usize,
        count: usize,
        buffer: DType,
        wire: DType,
        op: ReduceOp,
        algo: Algorithm,
    ) -> Result<Call> {
        let codec = codec_for(buffer, wire)?;
        let shape = Shape {
            size,
            per_host: 0,
            slice: codec.slice_elems(buffer, crate::transport::DEFAULT_SLICE_BYTES, 0),
            slots: crate::transport::DEFAULT_SLOTS,
        };
        let rule = crate::tuning::rule::doubling_up_to(crate::tuning::rule::LinkClass::SharedMemory, size);
        let algo = algo.resolve(buffer, codec, codec.wire_bytes(buffer, count, 0), shape, rule, || None);
        Ok(Call { size, count, buffer, wire, op, algo, shape })
    }
}

/// A message sent and not yet received: where it lies in the receiver's
/// inbox, and its number.
#[derive(Clone, Copy, Debug)]
struct Msg {
    at: usize,
    id: usize,
}

fn pad(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN) * ALIGN
}

fn walk_err(c: &Call, rank: usize, step: usize, detail: String) -> Error {
    Error::Cuda {
        what: format!("allreduce of {} {} over {} ranks: rank {rank} step {step}", c.count, c.buffer, c.size),
        detail,
    }
}

/// Every rank's schedule for `c`. Slicing does not change a result (the
/// kernels are elementwise), so the device runs whole blocks; the shape's
/// slice only shapes the tree's and halving's blocks, as on the host.
fn schedules(c: &Call) -> Vec<AnySchedule> {
    (0..c.size).map(|r| schedule_of(c, r)).collect()
}

/// Rank `rank`'s schedule for `c`: the host's, never resolved again.
pub(crate) fn schedule_of(c: &Call, rank: usize) -> AnySchedule {
    schedule::allreduce(c.algo, rank, c.count, c.shape)
}

/// The largest block of `s`, in wire bytes (padded).
pub(crate) fn max_block_bytes(s: &AnySchedule, wire: DType) -> usize {
    (0..s.len()).map(|i| pad(s.block(s.step(i).block).len() * wire.size())).max().unwrap_or(0)
}

/// Queues the allreduce `c` on `lanes`. Returns once every kernel and copy
/// is queued (the lanes say when they are done).
pub(crate) fn allreduce<L: Lanes>(lanes: &mut L, c: &Call) -> Result<()> {
    if c.size <= 1 || c.count == 0 {
        // Nothing travels; Avg divides by 1.
        return Ok(());
    }
    let scheds = schedules(c);
    let ws = c.wire.size();
    let inbox: Vec<usize> = scheds
        .iter()
        .map(|s| {
            (0..s.len())
                .map(|i| s.step(i))
                .filter(|st| st.prim.receives())
                .map(|st| pad(s.block(st.block).len() * ws))
                .sum()
        })
        .collect();
    let out: Vec<usize> = scheds.iter().map(|s| max_block_bytes(s, c.wire)).collect();
    lanes.prepare(&inbox, &out)?;

    let mut w = Walk {
        c,
        next: vec![0; c.size],
        sent: vec![false; c.size],
        queues: vec![VecDeque::new(); c.size * c.size],
        filled: vec![0; c.size],
        inbox,
    };
    loop {
        let mut progressed = false;
        for (r, s) in scheds.iter().enumerate() {
            while w.next[r] < s.len() {
                if !w.step(lanes, s, r)? {
                    break;
                }
                w.next[r] += 1;
                w.sent[r] = false;
                progressed = true;
            }
        }
        if (0..c.size).all(|r| w.next[r] == scheds[r].len()) {
            break;
        }
        if !progressed {
            let r = (0..c.size).find(|&r| w.next[r] < scheds[r].len()).unwrap_or(0);
            let st = scheds[r].step(w.next[r]);
            return Err(walk_err(c, r, w.next[r], format!("waits for rank {} and no rank can go on", st.recv_from)));
        }
    }
    if let Some(q) = w.queues.iter().position(|q| !q.is_empty()) {
        let (from, to) = (q / c.size, q % c.size);
        return Err(walk_err(c, to, w.next[to], format!("a message from rank {from} was never received")));
    }
    lanes.finish()
}

struct Walk<'c> {
    c: &'c Call,
    /// Each rank's next step.
    next: Vec<usize>,
    /// Each rank has sent its message of an exchange step it waits in.
    sent: Vec<bool>,
    /// Messages in flight, by `from * size + to`, oldest first.
    queues: Vec<VecDeque<Msg>>,
    /// Bytes of each rank's inbox handed out so far.
    filled: Vec<usize>,
    /// Each rank's inbox size.
    inbox: Vec<usize>,
}

impl Walk<'_> {
    fn send<L: Lanes>(
        &mut self,
        lanes: &mut L,
        r: usize,
        src: Src,
        to: usize,
        bytes: usize,
        step: usize,
    ) -> Result<()> {
        let at = self.filled[to];
        if to == r || at + bytes > self.inbox[to] {
            return Err(walk_err(self.c, r, step, format!("sends rank {to} more than its schedule receives")));
        }
        self.filled[to] += pad(bytes);
        let id = lanes.send(r, src, to, at, bytes)?;
        self.queues[r * self.c.size + to].push_back(Msg { at, id });
        Ok(())
    }

    fn take<L: Lanes>(&mut self, lanes: &mut L, r: usize, from: usize) -> Result<Option<usize>> {
        let Some(m) = self.queues[from * self.c.size + r].pop_front() else { return Ok(None) };
        lanes.accept(r, m.id)?;
        Ok(Some(m.at))
    }

    /// Runs rank `r`'s next step; `false` when its message has not been
    /// sent yet.
    fn step<L: Lanes>(&mut self, lanes: &mut L, s: &AnySchedule, r: usize) -> Result<bool> {
        let (i, mut sent) = (self.next[r], self.sent[r]);
        let done = run_step(&mut InProcess { w: self, lanes, r }, s, r, i, &mut sent)?;
        self.sent[r] = sent;
        Ok(done)
    }
}

/// One rank of the in-process walk, as [`run_step`] sees it.
struct InProcess<'w, 'c, L> {
    w: &'w mut Walk<'c>,
    lanes: &'w mut L,
    r: usize,
}

impl<L: Lanes> StepIo for InProcess<'_, '_, L> {
    fn call(&self) -> &Call {
        self.w.c
    }
    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        self.lanes.hop(self.r, hop, n, recv, at)
    }
    fn send(&mut self, src: Src, to: usize, m: MsgAt) -> Result<()> {
        self.w.send(self.lanes, self.r, src, to, m.bytes, m.step)
    }
    fn recv(&mut self, from: usize) -> Result<Option<Src>> {
        Ok(self.w.take(self.lanes, self.r, from)?.map(Src::Inbox))
    }
}

/// What a rank's steps need: its kernels, and messages.
pub(crate) trait StepIo {
    /// The call.
    fn call(&self) -> &Call;
    /// Runs `hop` over `n` elements (see [`Lanes::hop`]).
    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()>;
    /// Sends the message `m` from `src` to rank `to`.
    fn send(&mut self, src: Src, to: usize, m: MsgAt) -> Result<()>;
    /// The next message from rank `from`: where it lies, or `None` if it
    /// has not been sent yet.
    fn recv(&mut self, from: usize) -> Result<Option<Src>>;
}

/// Which message a step sends or receives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MsgAt {
    /// Wire bytes.
    pub bytes: usize,
    /// The step (this rank's).
    pub step: usize,
}

/// Runs step `i` of rank `r`'s schedule `s`: each primitive as the kernel
/// of the host hop it stands for (`crate::exec`). `sent`: an exchange's own
/// message went out already (the step waits for its partner's). Returns
/// `false` when the step's message has not arrived (nothing else done).
pub(crate) fn run_step<I: StepIo>(io: &mut I, s: &AnySchedule, r: usize, i: usize, sent: &mut bool) -> Result<bool> {
    let st = s.step(i);
    let range = s.block(st.block);
    // An empty block sends no message, on the host as here.
    if range.is_empty() {
        return Ok(true);
    }
    let c = *io.call();
    let n = range.len();
    let hop = |kind| Hop::new(kind, c.buffer, c.wire, c.op);
    let avg = (c.op == ReduceOp::Avg).then_some(c.size as u32);
    let m = MsgAt { bytes: n * c.wire.size(), step: i };
    let at = range.start;
    if matches!(st.prim, Prim::Exchange | Prim::ExchangeFinal) && !*sent {
        // Send first: the partner does the same.
        io.hop(&hop(Kind::Encode), n, None, at)?;
        io.send(Src::Out, st.send_to, m)?;
        *sent = true;
    }
    let recv = if st.prim.receives() {
        match io.recv(st.recv_from)? {
            Some(src) => Some(src),
            None => return Ok(false),
        }
    } else {
        None
    };
    match st.prim {
        Prim::Send => {
            io.hop(&hop(Kind::Encode), n, None, at)?;
            io.send(Src::Out, st.send_to, m)?;
        }
        Prim::CopySend => {
            // The sender keeps exactly what the others will decode.
            io.hop(&hop(Kind::Encode), n, None, at)?;
            io.hop(&hop(Kind::DecodeStore), n, Some(Src::Out), at)?;
            io.send(Src::Out, st.send_to, m)?;
        }
        Prim::RecvReduceSend => {
            io.hop(&hop(Kind::DecodeReduceEncode), n, recv, at)?;
            io.send(Src::Out, st.send_to, m)?;
        }
        Prim::RecvReduceCopySend | Prim::RecvReduceCopy => {
            io.hop(&Hop { avg_ranks: avg, ..hop(Kind::DecodeReduceStoreEncode) }, n, recv, at)?;
            if st.prim == Prim::RecvReduceCopySend {
                io.send(Src::Out, st.send_to, m)?;
            }
        }
        Prim::RecvCopySend | Prim::Recv => {
            io.hop(&hop(Kind::DecodeStore), n, recv, at)?;
            if st.prim == Prim::RecvCopySend {
                // Forward the very bytes received.
                io.send(recv.expect("a receiving step"), st.send_to, m)?;
            }
        }
        Prim::RecvReduce => io.hop(&hop(Kind::DecodeReduce), n, recv, at)?,
        Prim::Exchange | Prim::ExchangeFinal => {
            let fin = st.prim == Prim::ExchangeFinal;
            let h = Hop {
                mine_first: r < st.recv_from,
                fin,
                avg_ranks: if fin { avg } else { None },
                ..hop(Kind::Exchange)
            };
            io.hop(&h, n, recv, at)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
