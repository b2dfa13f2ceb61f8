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

use super::reference::codec_for;
use super::{Hop, Kind};
use crate::element::{DType, ReduceOp};
use crate::error::{Error, Result};
use crate::schedule::{self, AnySchedule, Prim, Schedule, Shape};
use crate::{Algorithm, AllreduceOpts};

/// Inbox regions start on this many bytes (the kernels' 16-byte vector
/// path needs 16; 256 keeps each in its own cache lines).
pub(crate) const ALIGN: usize = 256;

/// Wire bytes a kernel reads or a message is copied from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// The rank's outgoing slice (what its last encoding kernel wrote).
    Out,
    /// A region of the rank's inbox, from this byte (a received message).
    Inbox(usize),
}

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

/// One allreduce call: what every rank runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub size: usize,
    pub count: usize,
    pub buffer: DType,
    pub wire: DType,
    pub op: ReduceOp,
    pub algo: Algorithm,
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
/// The algorithm resolves as the host's does without a cost model (the
/// ring where the one asked for does not support the buffer and codec).
fn schedules(c: &Call) -> Result<Vec<AnySchedule>> {
    let opts = AllreduceOpts::default().codec(codec_for(c.buffer, c.wire)?).algorithm(c.algo);
    let shape = Shape {
        size: c.size,
        per_host: 0,
        slice: opts.slice_elems_or(c.buffer, crate::DEFAULT_SLICE_BYTES),
        slots: opts.slots,
    };
    let algo = opts.resolve(c.buffer, c.count, None, shape);
    Ok((0..c.size).map(|r| schedule::allreduce(algo, r, c.count, shape)).collect())
}

/// Queues the allreduce `c` on `lanes`. Returns once every kernel and copy
/// is queued (the lanes say when they are done).
pub(crate) fn allreduce<L: Lanes>(lanes: &mut L, c: &Call) -> Result<()> {
    if c.size <= 1 || c.count == 0 {
        // Nothing travels; Avg divides by 1.
        return Ok(());
    }
    let scheds = schedules(c)?;
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
    let out: Vec<usize> = scheds
        .iter()
        .map(|s| (0..s.len()).map(|i| pad(s.block(s.step(i).block).len() * ws)).max().unwrap_or(0))
        .collect();
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
    fn hop(&self, kind: Kind) -> Hop {
        Hop::new(kind, self.c.buffer, self.c.wire, self.c.op)
    }

    fn avg(&self) -> Option<u32> {
        (self.c.op == ReduceOp::Avg).then_some(self.c.size as u32)
    }

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
        let i = self.next[r];
        let st = s.step(i);
        let range = s.block(st.block);
        let n = range.len();
        // An empty block sends no message, on the host as here.
        if n == 0 {
            return Ok(true);
        }
        let bytes = n * self.c.wire.size();
        let exchange = matches!(st.prim, Prim::Exchange | Prim::ExchangeFinal);
        if exchange && !self.sent[r] {
            // Send first: the partner does the same.
            lanes.hop(r, &self.hop(Kind::Encode), n, None, range.start)?;
            self.send(lanes, r, Src::Out, st.send_to, bytes, i)?;
            self.sent[r] = true;
        }
        let recv = if st.prim.receives() {
            match self.take(lanes, r, st.recv_from)? {
                Some(at) => Some(Src::Inbox(at)),
                None => return Ok(false),
            }
        } else {
            None
        };
        let at = range.start;
        match st.prim {
            Prim::Send => {
                lanes.hop(r, &self.hop(Kind::Encode), n, None, at)?;
                self.send(lanes, r, Src::Out, st.send_to, bytes, i)?;
            }
            Prim::CopySend => {
                // The sender keeps exactly what the others will decode.
                lanes.hop(r, &self.hop(Kind::Encode), n, None, at)?;
                lanes.hop(r, &self.hop(Kind::DecodeStore), n, Some(Src::Out), at)?;
                self.send(lanes, r, Src::Out, st.send_to, bytes, i)?;
            }
            Prim::RecvReduceSend => {
                lanes.hop(r, &self.hop(Kind::DecodeReduceEncode), n, recv, at)?;
                self.send(lanes, r, Src::Out, st.send_to, bytes, i)?;
            }
            Prim::RecvReduceCopySend | Prim::RecvReduceCopy => {
                let hop = Hop { avg_ranks: self.avg(), ..self.hop(Kind::DecodeReduceStoreEncode) };
                lanes.hop(r, &hop, n, recv, at)?;
                if st.prim == Prim::RecvReduceCopySend {
                    self.send(lanes, r, Src::Out, st.send_to, bytes, i)?;
                }
            }
            Prim::RecvCopySend | Prim::Recv => {
                lanes.hop(r, &self.hop(Kind::DecodeStore), n, recv, at)?;
                if st.prim == Prim::RecvCopySend {
                    // Forward the very bytes received.
                    let from = recv.expect("a receiving step");
                    self.send(lanes, r, from, st.send_to, bytes, i)?;
                }
            }
            Prim::RecvReduce => lanes.hop(r, &self.hop(Kind::DecodeReduce), n, recv, at)?,
            Prim::Exchange | Prim::ExchangeFinal => {
                let fin = st.prim == Prim::ExchangeFinal;
                let hop = Hop {
                    mine_first: r < st.recv_from,
                    fin,
                    avg_ranks: if fin { self.avg() } else { None },
                    ..self.hop(Kind::Exchange)
                };
                lanes.hop(r, &hop, n, recv, at)?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
