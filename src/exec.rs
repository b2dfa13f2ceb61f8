//! The one executor: walks a [`Schedule`] over a [`Transport`] with the host
//! kernels, for every collective and every codec.
//!
//! Each step's block is cut into slices of at most `slice` elements; each
//! slice is one message (one *hop*), and hops run in rounds (see
//! [`Cursor`]). Up to `slots` receives are posted
//! ahead and up to `slots` sends stay in flight, so while the kernel
//! reduces slice k, slices k+1.. are already arriving and slice k-1 is
//! leaving. Message memory comes from the transport's slot pool (`2*slots
//! + 2` slots, sized once), so a call allocates nothing in steady state.
//!
//! Every wait has a deadline; an error names the peer, the step and the
//! message index. The `RecvCopySend` primitive forwards the received slot
//! itself: the allgather moves bytes without re-encoding them, which is why
//! every rank ends with the same bits.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod host;

pub(crate) use crate::buffers::Local;
use crate::error::{BufferState, Error, Result};
use crate::flight::{Dir, FlightRecorder};
use crate::op::OpDesc;
use crate::schedule::{Cursor, Hop, Prim, Schedule, Step};
use crate::transport::{Deadline, SlotId, Stray, Transport, WaitError};
use crate::wire::{self, describe, Header, FLAG_ABORT, FLAG_CHECKSUM, FLAG_OVERFLOW, HEADER};
pub(crate) use host::HostHops;

/// Per-call settings the executor needs.
pub(crate) struct Ctx<'a> {
    pub t: &'a mut dyn Transport,
    pub desc: &'a OpDesc,
    pub timeout: Duration,
    /// Elements per slice (message payload).
    pub slice: usize,
    /// Receives posted ahead, and sends in flight, at most.
    pub slots: usize,
    /// Slices of one step walked before the next step (see [`Cursor`]);
    /// `slots` except in the test that shows why.
    pub per_round: usize,
    /// Raised by `Communicator::abort()`; every wait checks it.
    pub abort: &'a AtomicBool,
    pub scratch: &'a mut Scratch,
    /// Put a CRC-32C of the payload in every header.
    pub checksum: bool,
    /// Compare each message's call fingerprint with this rank's call.
    pub verify_calls: bool,
    /// The options every rank must pass alike, in every header.
    pub agreed: wire::Agreed,
    pub flight: &'a FlightRecorder,
}

/// What the executor needs of a rank's buffer and kernels: one method per
/// kind of hop, on the payload bytes of received and outgoing messages
/// (the executor owns the messages: slots, headers, checksums, waits).
/// Each method that encodes returns whether a value could not be carried
/// by the wire (see [`Error::WireOverflow`]). The host backend
/// ([`HostHops`]) runs the host kernels on the caller's buffer; the
/// staged device backend (`crate::cuda::staged`) the fused kernels on a
/// device buffer, each message staged through host memory.
pub(crate) trait Backend {
    /// Payload bytes of `n` elements on the wire.
    fn wire_bytes(&self, n: usize) -> usize;
    /// Elements of the buffer the call writes.
    fn elements(&self) -> usize;
    /// Makes room for messages of up to `payload_bytes` (before any hop).
    fn prepare(&mut self, _payload_bytes: usize) -> Result<()> {
        Ok(())
    }
    /// Whether any element of the output has been written.
    fn touched(&self) -> bool;
    /// `out = wire(local)`: a recursive-doubling exchange's own message.
    fn encode(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool>;
    /// `out = wire(local)`, a [`Prim::Send`] (with error feedback).
    fn send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool>;
    /// `out = wire(local)` and `local = decode(out)`: the final value, kept
    /// as the others will decode it ([`Prim::CopySend`]).
    fn copy_send(&mut self, range: Range<usize>, out: &mut [u8]) -> Result<bool>;
    /// `out = wire(recv op local)`; with `store` also `local = decode(out)`
    /// (averaged on the last hop of `Avg`).
    fn reduce_send(&mut self, range: Range<usize>, recv: &[u8], out: &mut [u8], store: bool) -> Result<bool>;
    /// `local = recv op local`.
    fn reduce(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()>;
    /// `local = decode(recv)`.
    fn store(&mut self, range: Range<usize>, recv: &[u8]) -> Result<()>;
    /// One side of a recursive-doubling exchange: `local = theirs op
    /// local` in the order `mine_first` gives; with `fin` (the last round)
    /// the value is kept as encoded into `fin` (averaged for `Avg`).
    fn exchange(
        &mut self,
        range: Range<usize>,
        theirs: &[u8],
        mine_first: bool,
        fin: Option<&mut [u8]>,
    ) -> Result<bool>;
}

/// Slot bookkeeping kept across calls so its queues never reallocate.
#[derive(Default)]
pub(crate) struct Scratch {
    free: VecDeque<SlotId>,
    recvs: VecDeque<(SlotId, usize, usize, Range<usize>)>,
    sends: VecDeque<(SlotId, usize, usize)>,
}

/// Runs `sched` on backend `b`. Returns the OR of the final flags of every
/// slice this rank saw.
///
/// On failure, tells its ring (or tree) neighbours (best effort, header
/// only, never waited on) so their waits end at once instead of at their
/// deadline; they fail with [`Error::PeerAborted`] and tell theirs.
pub(crate) fn run<B: Backend, S: Schedule>(cx: &mut Ctx<'_>, b: &mut B, sched: &S) -> Result<u16> {
    run_hops(cx, b, sched).map_err(|e| {
        let origin = match &e {
            Error::PeerAborted { origin, .. } => *origin,
            _ => cx.t.rank(),
        };
        let culprit = match &e {
            Error::Mismatch { peer, .. }
            | Error::OptionMismatch { peer, .. }
            | Error::Protocol { peer, .. }
            | Error::Checksum { peer, .. } => Some(*peer),
            _ => None,
        };
        notify_abort(cx, sched, origin, culprit, matches!(e, Error::Mismatch { .. } | Error::OptionMismatch { .. }));
        e.with_buffer(if b.touched() { BufferState::Partial } else { BufferState::Untouched })
    })
}

/// The header every message of this call starts from: sequence number and
/// (unless call checks are off) the call's fingerprint.
fn base_header(cx: &Ctx<'_>) -> Header {
    let h = Header::new(cx.desc, 0, 0);
    if cx.verify_calls {
        Header { agreed: cx.agreed, ..h }
    } else {
        Header { fp: [0; 16], ..h }
    }
}

/// Writes `h` into `buf`, sealed with its CRC when checksums are on.
fn seal(checksum: bool, h: Header, buf: &mut [u8], payload_bytes: usize) {
    if checksum {
        wire::write_sealed(h, buf, payload_bytes);
    } else {
        h.write(buf);
    }
}

/// Tells `culprit` (the peer whose message was wrong) and every peer this
/// rank sends to or receives from that the collective is over; the notice
/// names `origin`, the rank that failed first.
///
/// Peers this rank receives from are told too, and the culprit first,
/// because when ranks called different collectives their schedules differ
/// (a count that differs can even pick another algorithm): a rank may be
/// waiting on a peer that will never send to it, and only a neighbour of
/// that peer can end its wait. After a mismatch, when this rank cannot know
/// who waits on whom, every rank is told (as far as free slots allow: all
/// of them up to `2 * slots + 2` ranks). A notice to a peer that has
/// finished is never matched (its tag is that of the finished call).
fn notify_abort<S: Schedule>(cx: &mut Ctx<'_>, sched: &S, origin: usize, culprit: Option<usize>, everyone: bool) {
    let tag = call_tag(cx.desc.seq, &*cx.t);
    let (me, n) = (cx.t.rank(), cx.t.size());
    let steps = (0..sched.len()).map(|i| sched.step(i));
    let sends = steps.clone().filter(|st| st.prim.sends()).map(|st| st.send_to);
    let recvs = steps.filter(|st| st.prim.receives()).map(|st| st.recv_from);
    let all = (1..n).map(|d| (me + d) % n).filter(|_| everyone);
    // Not to a rank that is gone: nobody reads it, and over MPI a send to
    // a dead process is a connection attempt that can outlive the call.
    let lost: Vec<usize> = cx.t.lost_peers().into_iter().map(|(p, _)| p).collect();
    let mut told = Vec::new(); // only on the error path
    for peer in culprit.into_iter().chain(sends).chain(recvs).chain(all) {
        if peer == me || told.contains(&peer) || lost.contains(&peer) {
            continue;
        }
        let Some(id) = cx.scratch.free.pop_front() else { return };
        let hdr = Header { flags: FLAG_ABORT, block: origin as u32, ..base_header(cx) };
        seal(cx.checksum, hdr, cx.t.slot_mut(id), 0);
        // Never waited on: the collective is over for this rank, and
        // cancel_all() reclaims (or retires) the slot.
        let _ = cx.t.post_send(id, HEADER, peer, tag);
        told.push(peer);
    }
}

/// The tag of call `seq`'s messages on carrier `t`: its sequence number
/// under the carrier's tag mask.
pub(crate) fn call_tag(seq: u64, t: &dyn Transport) -> u32 {
    (seq & t.tag_mask() as u64) as u32
}

/// Payload bytes per slot below which a call's size does not shrink its
/// slots (the carriers' usual message size).
const POOL_FLOOR: usize = 256 << 10;

fn run_hops<B: Backend, S: Schedule>(cx: &mut Ctx<'_>, b: &mut B, sched: &S) -> Result<u16> {
    let base = base_header(cx);
    // `slots` receives posted ahead and `slots` sends in flight leave two
    // slots free at the start of every hop: one for the hop's output and
    // one for the exchange's scratch. So no hop waits for a send of its own
    // to complete while it holds a received message, which shared memory
    // lends until released: two ranks could otherwise each hold the
    // other's message while waiting for their own to be released.
    let total = 2 * cx.slots + 2;
    // No message is longer than the buffer: a large slice_bytes on a
    // small call must not size the pool (1 GiB slices once took 10 GiB).
    // Not below POOL_FLOOR either, so that a peer that called with another
    // count still fits its first message and is named by its header.
    let bytes = HEADER + b.wire_bytes(cx.slice).min(b.wire_bytes(b.elements()).max(POOL_FLOOR));
    cx.t.reserve(total, bytes).map_err(|e| transport_err(cx, cx.t.rank(), e))?;
    b.prepare(b.wire_bytes(cx.slice.min(b.elements())))?;
    let sc = &mut *cx.scratch;
    // The pool is a queue, kept from call to call: a slot whose message a
    // peer has just read in place is taken again last. Taking it at once
    // (a stack, rebuilt per call) wrote each call's messages over lines
    // still in the reader's cache, and every such line had to be taken
    // back from the other core first: back-to-back 512 KiB calls on 2
    // ranks took 53-59 us that way, 27-36 us as a queue.
    if sc.free.len() != total {
        sc.free.clear();
        sc.free.extend(0..total);
    }
    sc.recvs.clear();
    sc.sends.clear();
    let tag = call_tag(cx.desc.seq, &*cx.t);
    let mut flags_seen = 0u16;
    let mut hops = Cursor::new(sched, cx.slice, cx.per_round, false);
    let mut ahead = Cursor::new(sched, cx.slice, cx.per_round, true);
    let mut msg = 0usize; // messages received so far, for error reports
    let mut sent = 0usize;
    let overflow = |over: bool| if over { FLAG_OVERFLOW } else { 0 };

    while let Some(hop) = hops.next(sched) {
        // Keep `slots` receives posted ahead of the hop being worked on.
        while cx.scratch.recvs.len() < cx.slots {
            let Some(h) = ahead.next(sched) else { break };
            let id = acquire(cx)?;
            cx.t.post_recv(id, h.step.recv_from, tag).map_err(|e| transport_err(cx, h.step.recv_from, e))?;
            cx.scratch.recvs.push_back((id, h.step.recv_from, h.step_idx, h.range));
        }

        let st = hop.step;
        cx.flight.hop(cx.desc.seq, hop.step_idx, hop.slice_idx);
        let payload_bytes = b.wire_bytes(hop.range.len());
        let payload = HEADER..HEADER + payload_bytes;
        let mut recv_hdr = Header { block: st.block as u32, slice: hop.slice_idx as u32, ..base };
        let exchange = matches!(st.prim, Prim::Exchange | Prim::ExchangeFinal);
        let recv_id = if st.prim.receives() && !exchange {
            let (id, flags) = take_recv(cx, &hop, recv_hdr, payload_bytes, &mut msg)?;
            recv_hdr.flags = flags;
            Some(id)
        } else {
            None
        };

        let range = hop.range.clone();
        let out_hdr = |flags: u16| Header { flags, ..recv_hdr };
        match (st.prim, recv_id) {
            (Prim::Send | Prim::CopySend, _) => {
                let out = acquire(cx)?;
                let buf = &mut cx.t.slot_mut(out)[payload.clone()];
                let mut flags = if st.prim == Prim::Send {
                    overflow(b.send(range, buf)?)
                } else {
                    overflow(b.copy_send(range, buf)?)
                };
                if st.prim == Prim::CopySend {
                    // The value is final: its flags are everything seen.
                    flags |= flags_seen;
                    flags_seen |= flags;
                }
                seal(cx.checksum, out_hdr(flags), cx.t.slot_mut(out), payload_bytes);
                post_send(cx, out, HEADER + payload_bytes, st, &mut sent)?;
            }
            (Prim::RecvReduceSend | Prim::RecvReduceCopySend | Prim::RecvReduceCopy, Some(rid)) => {
                debug_assert!(!cx.scratch.free.is_empty(), "a free slot for the output (see `total`)");
                let out = acquire(cx)?;
                let (rbuf, obuf) = cx.t.slot_pair(rid, out);
                let store = st.prim != Prim::RecvReduceSend;
                let over = b.reduce_send(range, &rbuf[payload.clone()], &mut obuf[payload.clone()], store)?;
                let flags = recv_hdr.flags | overflow(over);
                seal(cx.checksum, out_hdr(flags), cx.t.slot_mut(out), payload_bytes);
                done_with(cx, rid);
                if store {
                    flags_seen |= flags;
                }
                if st.prim.sends() {
                    post_send(cx, out, HEADER + payload_bytes, st, &mut sent)?;
                } else {
                    cx.scratch.free.push_back(out);
                }
            }
            (Prim::RecvReduce, Some(rid)) => {
                flags_seen |= recv_hdr.flags;
                b.reduce(range, &cx.t.slot(rid)[payload.clone()])?;
                done_with(cx, rid);
            }
            (Prim::Exchange | Prim::ExchangeFinal, _) => {
                // Send first: the partner does the same, and both receives
                // are already posted, so neither waits on the other's send.
                let out = acquire(cx)?;
                flags_seen |= overflow(b.encode(range.clone(), &mut cx.t.slot_mut(out)[payload.clone()])?);
                seal(cx.checksum, out_hdr(flags_seen), cx.t.slot_mut(out), payload_bytes);
                post_send(cx, out, HEADER + payload_bytes, st, &mut sent)?;
                let (rid, flags) = take_recv(cx, &hop, recv_hdr, payload_bytes, &mut msg)?;
                flags_seen |= flags;
                let mine_first = cx.t.rank() < st.recv_from;
                if st.prim == Prim::Exchange {
                    b.exchange(range, &cx.t.slot(rid)[payload.clone()], mine_first, None)?;
                    done_with(cx, rid);
                } else {
                    debug_assert!(!cx.scratch.free.is_empty(), "a free scratch slot (see `total`)");
                    let scratch = acquire(cx)?;
                    let (rbuf, obuf) = cx.t.slot_pair(rid, scratch);
                    let fin = Some(&mut obuf[payload.clone()]);
                    flags_seen |= overflow(b.exchange(range, &rbuf[payload.clone()], mine_first, fin)?);
                    done_with(cx, rid);
                    cx.scratch.free.push_back(scratch);
                }
            }
            (Prim::RecvCopySend | Prim::Recv, Some(rid)) => {
                flags_seen |= recv_hdr.flags;
                b.store(range, &cx.t.slot(rid)[payload.clone()])?;
                if st.prim == Prim::RecvCopySend {
                    // Forward the very bytes received, header included.
                    post_send(cx, rid, HEADER + payload_bytes, st, &mut sent)?;
                } else {
                    done_with(cx, rid);
                }
            }
            (_, None) => unreachable!("a receiving primitive took its message above"),
        }
        // Bound the sends in flight (and so the slots they pin).
        while cx.scratch.sends.len() > cx.slots {
            let id = complete_oldest_send(cx)?;
            cx.scratch.free.push_back(id);
        }
    }
    while !cx.scratch.sends.is_empty() {
        let id = complete_oldest_send(cx)?;
        cx.scratch.free.push_back(id);
    }
    debug_assert_eq!(cx.scratch.free.len(), total, "every slot is back in the pool");
    debug_assert!(cx.scratch.recvs.is_empty());
    Ok(flags_seen)
}

/// The error for an abort notice from `peer`: [`Error::PeerAborted`]
/// naming the rank that failed first, unless the notice names no rank of
/// this communicator.
/// (Also the device carrier's, `crate::cuda::staged`.)
pub(crate) fn abort_notice(t: &dyn Transport, desc: &OpDesc, h: &Header, peer: usize, step: usize) -> Error {
    let (rank, origin) = (t.rank(), h.block as usize);
    if origin >= t.size() {
        return Error::Protocol {
            rank,
            op: desc.clone(),
            peer,
            step,
            detail: format!("abort notice names rank {origin}, of {} ranks", t.size()),
            buffer: BufferState::Untouched,
        };
    }
    // The notice's sender may have given up because a rank is gone: then
    // this rank says so too, so every survivor names the lost rank.
    if let Some((lost, detail)) = t.lost_peers().into_iter().next() {
        return Error::PeerLost { rank, op: desc.clone(), lost, detail, buffer: BufferState::Untouched };
    }
    Error::PeerAborted { rank, op: desc.clone(), peer, origin, step, buffer: BufferState::Untouched }
}

/// [`Error::Mismatch`] when a message's header comes from another call
/// than `expect` (the header this rank's call gives it) and says which.
pub(crate) fn mismatch(rank: usize, desc: &OpDesc, h: &Header, expect: &Header, peer: usize) -> Option<Error> {
    if h.fp == expect.fp && h.seq == expect.seq {
        if h.agreed == expect.agreed {
            return None;
        }
        let (a, b) = (&expect.agreed, &h.agreed);
        let differ = |setting: &'static str, mine: String, theirs: String| {
            Some(Error::OptionMismatch {
                rank,
                op: desc.clone(),
                peer,
                setting,
                mine: mine.into(),
                theirs: theirs.into(),
                buffer: BufferState::Untouched,
            })
        };
        return if a.schedule != b.schedule {
            let name = |c| crate::schedule::AnySchedule::name_of(c).to_string();
            differ("algorithm", name(a.schedule), name(b.schedule))
        } else if a.slots != b.slots {
            differ("slots", a.slots.to_string(), b.slots.to_string())
        } else if a.slice != b.slice {
            differ("message size (slice_bytes)", format!("{} elements", a.slice), format!("{} elements", b.slice))
        } else {
            differ("scale_block", a.scale_block.to_string(), b.scale_block.to_string())
        };
    }
    let theirs = describe(&h.fp, h.seq)?;
    Some(Error::Mismatch { rank, op: desc.clone(), peer, theirs, buffer: BufferState::Untouched })
}

/// The error for a wait on a message to or from `peer` that failed.
#[allow(clippy::too_many_arguments)] // where the wait was, spelled out for the message
pub(crate) fn wait_error(
    rank: usize,
    desc: &OpDesc,
    peer: usize,
    dir: &'static str,
    step: usize,
    msg: usize,
    timeout: Duration,
    e: WaitError,
) -> Error {
    let (op, buffer) = (desc.clone(), BufferState::Untouched);
    match e {
        // The carrier gave up `timeout` after its first clock read,
        // microseconds into the wait.
        WaitError::Timeout => Error::Timeout { rank, op, peer, dir, step, msg, waited: timeout, buffer },
        WaitError::Failed(detail) => Error::Transport { rank, op, peer, detail, buffer },
        WaitError::Aborted => Error::Aborted { rank, op, buffer },
        WaitError::Lost(lost, detail) => Error::PeerLost { rank, op, lost, detail, buffer },
        // Only where a caller does not look for strays (the device
        // carrier, which is to move onto this executor).
        WaitError::Stray(s) => Error::Transport {
            rank,
            op,
            peer,
            detail: format!("a message of an earlier call (tag {}, {} bytes) came from peer {}", s.tag, s.len, s.peer),
            buffer,
        },
    }
}

/// With checksums on, a message must carry one ([`FLAG_CHECKSUM`]) and it
/// must match; a message that carries one is checked even when this rank
/// does not ask for them. Errors name the block and slice this rank
/// expected (`expect`): the received header is not to be trusted.
fn check_crc(
    cx: &mut Ctx<'_>,
    h: &Header,
    expect: &Header,
    id: SlotId,
    got: usize,
    peer: usize,
    step: usize,
) -> Result<()> {
    if h.flags & FLAG_CHECKSUM == 0 {
        if !cx.checksum {
            return Ok(());
        }
        // Either the flag was lost in transit or the peer runs without
        // checksums: both mean this message is unchecked.
        return Err(Error::Protocol {
            rank: cx.t.rank(),
            op: cx.desc.clone(),
            peer,
            step,
            detail: format!(
                "block {} slice {} came without a checksum while this rank checks them \
                 (is RINGFUSE_CHECKSUM / AllreduceOpts::checksum the same on every rank?)",
                expect.block, expect.slice
            ),
            buffer: BufferState::Untouched,
        });
    }
    let crc = wire::message_crc(cx.t.slot(id), got - HEADER);
    if crc == h.crc {
        return Ok(());
    }
    Err(Error::Checksum {
        rank: cx.t.rank(),
        op: cx.desc.clone(),
        peer,
        step,
        block: expect.block,
        slice: expect.slice,
        sent: h.crc,
        got: crc,
        buffer: BufferState::Untouched,
    })
}

/// Waits for the receive posted for `hop`, checks its header against
/// `expect` and its length, and returns the slot and the header's flags.
fn take_recv(
    cx: &mut Ctx<'_>,
    hop: &Hop,
    expect: Header,
    payload_bytes: usize,
    msg: &mut usize,
) -> Result<(SlotId, u16)> {
    let (id, peer, step_idx, range) = cx.scratch.recvs.pop_front().expect("a receive was posted for this hop");
    debug_assert!(step_idx == hop.step_idx && range == hop.range);
    let got = wait(cx, id, peer, "receive from", step_idx, *msg)?;
    *msg += 1;
    let want_len = HEADER + payload_bytes;
    let hdr = Header::read(&cx.t.slot(id)[..got.min(HEADER)]);
    if let Some(h) = hdr {
        // Integrity first: with checksums on, nothing in a message (its
        // flags included) is believed before its CRC is.
        check_crc(cx, &h, &expect, id, got, peer, step_idx)?;
        if h.flags & FLAG_ABORT != 0 {
            return Err(abort_notice(cx.t, cx.desc, &h, peer, step_idx));
        }
        if cx.verify_calls {
            if let Some(e) = mismatch(cx.t.rank(), cx.desc, &h, &expect, peer) {
                return Err(e);
            }
        }
    }
    match hdr {
        Some(h) if got == want_len && Header { flags: 0, crc: 0, ..h } == expect => {
            // The checksum belongs to this message only; forwarding keeps
            // the header whole, re-encoding seals afresh.
            Ok((id, h.flags & !FLAG_CHECKSUM))
        }
        _ => Err(Error::Protocol {
            rank: cx.t.rank(),
            op: cx.desc.clone(),
            peer,
            step: step_idx,
            detail: format!(
                "expected {want_len} bytes for seq {} block {} slice {}, got {got} bytes with header {hdr:?}",
                expect.seq, expect.block, expect.slice
            ),
            buffer: BufferState::Untouched,
        }),
    }
}

fn post_send(cx: &mut Ctx<'_>, id: SlotId, len: usize, st: Step, sent: &mut usize) -> Result<()> {
    let tag = call_tag(cx.desc.seq, &*cx.t);
    cx.t.post_send(id, len, st.send_to, tag).map_err(|e| transport_err(cx, st.send_to, e))?;
    cx.scratch.sends.push_back((id, st.send_to, *sent));
    *sent += 1;
    Ok(())
}

fn complete_oldest_send(cx: &mut Ctx<'_>) -> Result<SlotId> {
    let (id, peer, n) = cx.scratch.sends.pop_front().expect("a send is in flight");
    wait(cx, id, peer, "send to", n, n)?;
    Ok(id)
}

/// Returns a receive slot to the pool once its message has been read (a
/// carrier that lent the message acknowledges it now).
fn done_with(cx: &mut Ctx<'_>, id: SlotId) {
    cx.t.release(id);
    cx.scratch.free.push_back(id);
}

/// A free slot; if none, the oldest send is completed to free one.
fn acquire(cx: &mut Ctx<'_>) -> Result<SlotId> {
    if let Some(id) = cx.scratch.free.pop_front() {
        return Ok(id);
    }
    complete_oldest_send(cx)
}

fn wait(cx: &mut Ctx<'_>, id: SlotId, peer: usize, dir: &'static str, step: usize, msg: usize) -> Result<usize> {
    let fdir = if dir == "send to" { Dir::Send } else { Dir::Recv };
    // Already there: no deadline, so no clock read.
    loop {
        match cx.t.test(id) {
            Ok(Some(n)) => {
                cx.flight.moved(cx.desc.seq, fdir);
                return Ok(n);
            }
            Ok(None) => break,
            Err(WaitError::Stray(s)) => stray(cx, s, step)?,
            Err(e) => return Err(transport_err(cx, peer, format!("{e:?}"))),
        }
    }
    cx.flight.waiting(cx.desc.seq, fdir, peer, step);
    let mut deadline = Deadline::after(cx.timeout);
    let rank = cx.t.rank();
    loop {
        match cx.t.wait(id, &mut deadline, cx.abort) {
            Ok(n) => {
                cx.flight.moved(cx.desc.seq, fdir);
                return Ok(n);
            }
            // The receive stays posted, and the deadline runs on.
            Err(WaitError::Stray(s)) => stray(cx, s, step)?,
            Err(e @ WaitError::Failed(_)) => {
                return Err(
                    lost(cx, peer).unwrap_or_else(|| wait_error(rank, cx.desc, peer, dir, step, msg, cx.timeout, e))
                )
            }
            Err(e) => return Err(wait_error(rank, cx.desc, peer, dir, step, msg, cx.timeout, e)),
        }
    }
}

/// A message of an earlier call reached a receive of this one (see
/// [`Stray`]). An abort notice (sealed, when it says so) ends this call
/// with [`Error::PeerAborted`]: its sender failed a call this rank had
/// finished, and will not come to this one, so waiting out the deadline
/// would gain nothing. Anything else (a duplicate) is dropped, named in a
/// warning and counted in the flight record.
fn stray(cx: &mut Ctx<'_>, s: Stray, step: usize) -> Result<()> {
    let h = Header::read(&s.head);
    let sealed_ok = |h: &Header| h.flags & FLAG_CHECKSUM == 0 || wire::message_crc(&s.head, 0) == h.crc;
    if let Some(h) = h.filter(|h| h.flags & FLAG_ABORT != 0 && s.len == HEADER && sealed_ok(h)) {
        tracing::warn!(
            "rank {}: {}: an abort notice from rank {} for call {} (origin rank {}) came after this rank had finished that call",
            cx.t.rank(),
            cx.desc,
            s.peer,
            h.seq,
            h.block
        );
        return Err(abort_notice(cx.t, cx.desc, &h, s.peer, step));
    }
    let what = h.and_then(|h| describe(&h.fp, h.seq).map(|d| format!("{d} block {} slice {}", h.block, h.slice)));
    tracing::warn!(
        "rank {}: {}: dropped a stray message from rank {} ({} bytes, tag {}, {}): a duplicate or a leftover of a finished call",
        cx.t.rank(),
        cx.desc,
        s.peer,
        s.len,
        s.tag,
        what.as_deref().unwrap_or("not a ringfuse header")
    );
    cx.flight.stray(cx.desc.seq);
    Ok(())
}

fn transport_err(cx: &Ctx<'_>, peer: usize, detail: String) -> Error {
    if let Some(e) = lost(cx, peer) {
        return e;
    }
    Error::Transport { rank: cx.t.rank(), op: cx.desc.clone(), peer, detail, buffer: BufferState::Untouched }
}

/// [`Error::PeerLost`] if `peer`, whose message failed, is gone. A
/// process being killed loses its files (a failed mapping of its memory)
/// a moment before its pidfd says it exited, so this looks again for up
/// to 50 ms: only on the error path.
fn lost(cx: &Ctx<'_>, peer: usize) -> Option<Error> {
    let until = std::time::Instant::now() + Duration::from_millis(50);
    loop {
        if let Some((lost, detail)) = cx.t.lost_peers().into_iter().find(|(p, _)| *p == peer) {
            let (rank, op, buffer) = (cx.t.rank(), cx.desc.clone(), BufferState::Untouched);
            return Some(Error::PeerLost { rank, op, lost, detail, buffer });
        }
        if !cx.t.watches_peers() || std::time::Instant::now() >= until || peer == cx.t.rank() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A dissemination barrier: in round k every rank sends a header-only
/// message to `rank + 2^k` and receives from `rank - 2^k`; after
/// `ceil(log2 n)` rounds every rank has heard, transitively, from all.
pub(crate) fn barrier(cx: &mut Ctx<'_>) -> Result<()> {
    let (rank, n) = (cx.t.rank(), cx.t.size());
    cx.t.reserve(2, HEADER).map_err(|e| transport_err(cx, rank, e))?;
    let tag = call_tag(cx.desc.seq, &*cx.t);
    let mut dist = 1;
    let mut round = 0;
    while dist < n {
        let (to, from) = ((rank + dist) % n, (rank + n - dist) % n);
        let hdr = Header { block: round, ..base_header(cx) };
        seal(cx.checksum, hdr, cx.t.slot_mut(0), 0);
        cx.t.post_recv(1, from, tag).map_err(|e| transport_err(cx, from, e))?;
        cx.t.post_send(0, HEADER, to, tag).map_err(|e| transport_err(cx, to, e))?;
        let len = wait(cx, 1, from, "receive from", round as usize, round as usize)?;
        wait(cx, 0, to, "send to", round as usize, round as usize)?;
        let got = Header::read(&cx.t.slot(1)[..len.min(HEADER)]);
        if let Some(h) = got {
            check_crc(cx, &h, &hdr, 1, len, from, round as usize)?;
            if h.flags & FLAG_ABORT != 0 {
                return Err(abort_notice(cx.t, cx.desc, &h, from, round as usize));
            }
        }
        cx.t.release(1);
        if len != HEADER || got.map(|h| Header { flags: 0, crc: 0, ..h }) != Some(hdr) {
            return Err(Error::Protocol {
                rank,
                op: cx.desc.clone(),
                peer: from,
                step: round as usize,
                detail: format!("barrier message of {len} bytes, {got:?}, where {HEADER} bytes, {hdr:?} were expected"),
                buffer: BufferState::Untouched,
            });
        }
        dist *= 2;
        round += 1;
    }
    Ok(())
}
