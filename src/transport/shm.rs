//! Carrier over shared memory, for ranks on one host (the default there;
//! `RINGFUSE_TRANSPORT=mpi` opts out; MPI only sets it up).
//!
//! Every rank keeps its slots in its own memory file, which the other
//! ranks map. A send publishes where the message lies; the receiver's
//! kernel reads it in place, in the sender's slot, and the receiver
//! acknowledges it when the executor releases it. So a message costs no
//! copy and two counter updates, where Open MPI's shared-memory path
//! costs a `process_vm_readv` system call per message (or two copies
//! through a FIFO) and its matching engine. A received message that is
//! forwarded unchanged (the allgather of more than two ranks) is copied
//! into this rank's own slot first.
//!
//! Layout of a rank's control file, one block per peer `p`: `consumed`
//! (how many messages to `p` it has copied out; written by `p`) on its own
//! cache line, then a ring of [`RING`] entries of [`ENTRY`] bytes,
//! `[stamp, data file, offset, length, tag, inline bytes...]`. The sender
//! writes the entry, then its stamp (the message's number + 1, release);
//! the receiver polls the stamp of the entry it expects, so seeing a
//! message and reading where it lies is one cache line. Messages to one
//! peer are numbered, so they match in posting order (MPI's
//! non-overtaking rule).
//!
//! A message of at most [`INLINE`] bytes travels inside its entry (as Open
//! MPI's shared-memory "fast boxes" do): the receiver's poll brings the
//! bytes along, and the send completes at once. A larger one stays in the
//! sender's slot, and its send completes when the receiver has released
//! it (later than MPI's synchronous send, which completes on the match).
//! The executor holds a received message only while it works on that hop,
//! and never waits for a send of its own meanwhile: its slot pool leaves a
//! free slot for the hop's output (see `exec`), so two ranks cannot each
//! hold the other's message while waiting for their own to be released. Every wait spins
//! against its deadline and the abort flag.
//!
//! After the blocks, a rank's control file holds a *life* line (raised
//! when its carrier is dropped) and a *mailbox* the survivors agree
//! through after a rank is lost (`recover`). A wait that lasts checks
//! every [`super::LIVENESS_INTERVAL`] whether the peer it waits on lives: its life
//! line, and its process through a pidfd (which a reused PID cannot
//! fool), so a killed rank is named within a fraction of a second instead
//! of at the deadline.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::shm_ffi::{Access, Segment};
use super::{Deadline, Shrunk, SlotId, Stray, Transport, WaitError};

mod recover;

/// Descriptors per peer: messages to one peer in flight at most.
pub const RING: usize = 256;
/// Bytes of one ring entry: five cache lines.
pub const ENTRY: usize = 320;
const FIELDS: usize = 5; // stamp, data file, offset, length, tag
/// Messages up to this many bytes travel inside their entry: a 16-byte
/// header and 264 bytes of payload, which covers the small calls (up to
/// 256 B) where a second cache line per message showed against
/// `MPI_Allreduce`.
pub const INLINE: usize = ENTRY - FIELDS * 8;
const HEAD: usize = 64; // consumed, alone on its cache line
const BLOCK: usize = HEAD + RING * ENTRY;
/// The offset field of an inline message.
const IN_ENTRY: u64 = u64::MAX;
/// Data files of one peer mapped at most. A rank makes a new one only when
/// its slots must grow, and grows them at least twofold, so a peer within
/// the option bounds (64 slots of 64 MiB) makes well under this many.
const MAX_PEER_FILES: usize = 32;

/// The name of the memory files of the rank with `pid` and `nonce`: what a
/// peer checks before it maps one.
fn file_name(pid: u32, nonce: u64) -> String {
    format!("ringfuse-{pid}-{nonce:016x}")
}

/// Bytes of the control file of a carrier of `size` ranks: a block per
/// peer, the life line, and the mailbox (its header and one bit per rank).
fn ctl_bytes(size: usize) -> usize {
    (life(size) + 64 + recover::mailbox_bytes(size)).next_multiple_of(64)
}
/// The life line: nonzero once the owner's carrier was dropped.
fn life(size: usize) -> usize {
    size * BLOCK
}

fn consumed(peer: usize) -> usize {
    peer * BLOCK
}
fn entry(peer: usize, seq: u64) -> usize {
    peer * BLOCK + HEAD + (seq as usize % RING) * ENTRY
}

/// Peer `peer`'s control file among `ctl`.
fn peer_segment(ctl: &[Option<Segment>], peer: usize) -> Result<&Segment, String> {
    ctl.get(peer).and_then(|s| s.as_ref()).ok_or_else(|| format!("no peer {peer}"))
}

/// A posted operation on one slot.
#[derive(Clone, Copy)]
enum Posted {
    /// `inline`: the bytes went with the entry, nothing to wait for.
    Send {
        peer: usize,
        seq: u64,
        len: usize,
        inline: bool,
    },
    Recv {
        peer: usize,
        seq: u64,
        tag: u32,
    },
}

/// A received message read in place, in the sender's slot, until the
/// executor releases it.
#[derive(Clone, Copy)]
struct Lent {
    peer: usize,
    seq: u64,
    /// Index into `peer_data`.
    map: usize,
    off: usize,
    len: usize,
}

impl Lent {
    /// The message's bytes among the mapped peer files (checked in bounds
    /// when it was taken).
    fn bytes(self, peer_data: &[(usize, i32, Segment)]) -> &[u8] {
        peer_data[self.map].2.view(self.off, self.len).expect("checked when taken")
    }
}

/// One rank's shared-memory carrier.
pub struct ShmTransport {
    rank: usize,
    size: usize,
    pids: Vec<u32>,
    // Every rank's memory-file name (file_name), this rank's included.
    names: Vec<String>,
    ctl: Segment,
    peer_ctl: Vec<Option<Segment>>,
    // Every data file this rank made; the last holds the slots. Older ones
    // stay open so a peer can still map one it was told about.
    data: Vec<Segment>,
    slot_bytes: usize,
    slot_count: usize,
    // Peers' data files mapped so far: (peer, fd) -> mapping.
    peer_data: Vec<(usize, i32, Segment)>,
    posted: Vec<Option<Posted>>,
    // Per slot: the message it shows in the sender's memory, if any.
    lent: Vec<Option<Lent>>,
    next_send: Vec<u64>,
    next_recv: Vec<u64>,
    // Per sender: messages copied out in order, and any copied ahead.
    acked: Vec<u64>,
    // Per receiver: how many of this rank's messages it had copied out
    // when last read (a peer's line: read again only when the ring looks
    // full).
    their_acks: Vec<u64>,
    ahead: Vec<Vec<u64>>,
    broken: Option<String>,
    // Per peer: its process, to see it exit (None for this rank, for
    // ranks of this process, and where the kernel has no pidfds).
    pidfds: Vec<Option<std::os::fd::OwnedFd>>,
    // Which shrink made this carrier (0: the first), as its mailbox says.
    epoch: u64,
    // Polls between yields while waiting (super::polls_per_yield).
    polls_per_yield: u32,
    _keep: Option<Arc<dyn Any + Send + Sync>>,
}

/// How the ranks tell each other where their control files are, and agree
/// that every rank could map every other's: `share(pid, fd, nonce)`
/// returns every rank's triple, `agree(ok)` whether all ranks said ok.
/// Collective.
// Only the MPI launcher (and the tests) set a carrier up.
#[cfg_attr(not(any(feature = "mpi", test)), allow(dead_code))]
pub(crate) struct Setup<'a> {
    pub rank: usize,
    pub size: usize,
    pub share: &'a mut dyn FnMut(u32, i32, u64) -> Vec<(u32, i32, u64)>,
    pub agree: &'a mut dyn FnMut(bool) -> bool,
}

impl ShmTransport {
    /// Makes this rank's control file, maps every peer's, and agrees with
    /// the others that all of that worked (else every rank gets the error,
    /// and can fall back to another carrier).
    #[cfg_attr(not(any(feature = "mpi", test)), allow(dead_code))]
    pub(crate) fn new(setup: Setup<'_>, keep: Option<Arc<dyn Any + Send + Sync>>) -> Result<ShmTransport, String> {
        let Setup { rank, size, share, agree } = setup;
        let (pid, nonce) = (std::process::id(), rand::random::<u64>());
        let ctl = Segment::create(ctl_bytes(size), &file_name(pid, nonce));
        let fd = ctl.as_ref().map_or(-1, |c| c.fd());
        let all = share(pid, fd, nonce);
        let names: Vec<String> = all.iter().map(|&(p, _, n)| file_name(p, n)).collect();
        let mut why = ctl.as_ref().err().map(|e| format!("rank {rank}: control file: {e}"));
        if all.len() != size {
            why = Some(format!("rank {rank}: {} ranks announced control files, expected {size}", all.len()));
        }
        let mut peer_ctl = Vec::with_capacity(size);
        for (p, &(ppid, pfd, _)) in all.iter().enumerate() {
            if p == rank || why.is_some() {
                peer_ctl.push(None);
                continue;
            }
            match Segment::open_peer(ppid, pfd, &names[p], Access::ReadWrite) {
                Ok(s) if s.len() >= ctl_bytes(size) => peer_ctl.push(Some(s)),
                Ok(s) => why = Some(format!("rank {rank}: rank {p}'s control file holds {} bytes", s.len())),
                Err(e) => why = Some(format!("rank {rank}: cannot map rank {p}'s control file: {e}")),
            }
        }
        if !agree(why.is_none()) {
            return Err(why.unwrap_or_else(|| format!("rank {rank}: another rank could not set up shared memory")));
        }
        let pids: Vec<u32> = all.iter().map(|&(p, _, _)| p).collect();
        let me = std::process::id();
        let pidfds = (pids.iter().enumerate())
            .map(|(p, &pid)| if p == rank || pid == me { None } else { super::shm_ffi::pidfd(pid) })
            .collect();
        Ok(Self::from_parts(rank, pids, names, ctl.map_err(|e| e.to_string())?, peer_ctl, pidfds, 0, keep))
    }

    /// A carrier over the ranks with `pids` (watched through `pidfds`) and
    /// control files `names`, this one `rank` owning `ctl`, with the peers'
    /// already mapped.
    #[allow(clippy::too_many_arguments)] // the parts of a carrier, each named
    fn from_parts(
        rank: usize,
        pids: Vec<u32>,
        names: Vec<String>,
        ctl: Segment,
        peer_ctl: Vec<Option<Segment>>,
        pidfds: Vec<Option<std::os::fd::OwnedFd>>,
        epoch: u64,
        keep: Option<Arc<dyn Any + Send + Sync>>,
    ) -> ShmTransport {
        let size = pids.len();
        ShmTransport {
            rank,
            size,
            pids,
            names,
            ctl,
            peer_ctl,
            data: Vec::new(),
            slot_bytes: 0,
            slot_count: 0,
            peer_data: Vec::new(),
            posted: Vec::new(),
            lent: Vec::new(),
            next_send: vec![0; size],
            next_recv: vec![0; size],
            acked: vec![0; size],
            their_acks: vec![0; size],
            ahead: vec![Vec::new(); size],
            broken: None,
            pidfds,
            epoch,
            // Every rank is on this host (the carrier needs it). A poll
            // here is a load, not an MPI_Test: the clock is read and the
            // core yielded every few microseconds, not every few polls.
            polls_per_yield: super::polls_per_yield(size, 2048),
            _keep: keep,
        }
    }

    fn peer_ctl(&self, peer: usize) -> Result<&Segment, String> {
        peer_segment(&self.peer_ctl, peer)
    }

    fn slot_range(&self, id: SlotId) -> (usize, usize) {
        (id * self.slot_bytes, self.slot_bytes)
    }

    /// Waits until `counter` exceeds `seq`, or `peer` (who must raise it)
    /// is lost.
    fn await_count(
        &self,
        peer: usize,
        counter: &AtomicU64,
        seq: u64,
        deadline: &mut Deadline,
        abort: &AtomicBool,
    ) -> Result<(), WaitError> {
        let poll = || {
            if counter.load(Ordering::Acquire) > seq {
                return Ok(Some(()));
            }
            std::hint::spin_loop();
            Ok(None)
        };
        let lost = || self.is_lost(peer).map(|how| (peer, how));
        super::poll_until_alive(deadline, abort, self.polls_per_yield, poll, lost)
    }

    /// Whether peer `p` is gone, and how that shows.
    fn is_lost(&self, p: usize) -> Option<String> {
        if p == self.rank {
            return None;
        }
        let left = self.peer_ctl(p).is_ok_and(|c| c.counter(life(self.size)).load(Ordering::Acquire) != 0);
        let exited = || self.pidfds.get(p).and_then(|f| f.as_ref()).is_some_and(super::shm_ffi::exited);
        if left {
            // It left alive (and will finalise MPI) unless it has exited.
            if exited() {
                super::saw_peer_lost();
            }
            return Some(format!("its carrier was dropped: rank {p} left the job"));
        }
        exited().then(|| {
            super::saw_peer_lost();
            format!("its process {} exited", self.pids[p])
        })
    }

    /// Takes message `seq` from `peer` on slot `id`: an inline message is
    /// copied into the slot and acknowledged, a larger one is lent (read in
    /// place until released). Returns its length.
    ///
    /// A message of an earlier call (its tag behind `tag`) is taken all the
    /// same, released at once and handed back as [`WaitError::Stray`]; the
    /// receives posted for `peer` from it on move up by one message, so
    /// this one now waits for the next.
    fn take(&mut self, id: SlotId, peer: usize, seq: u64, tag: u32) -> Result<usize, WaitError> {
        let (got, len) = self.take_entry(id, peer, seq, tag).map_err(WaitError::Failed)?;
        if got == tag {
            return Ok(len);
        }
        let stray = Stray::new(peer, got, len, &self.slot(id)[..len.min(crate::wire::HEADER)]);
        self.release(id);
        for p in self.posted.iter_mut().flatten() {
            if let Posted::Recv { peer: q, seq: s, .. } = p {
                if *q == peer && *s >= seq {
                    *s += 1;
                }
            }
        }
        self.next_recv[peer] += 1;
        Err(WaitError::Stray(stray))
    }

    /// [`Self::take`] but for strays: takes the message whatever its tag
    /// (a tag neither this call's nor behind it is an error) and returns
    /// its tag and length.
    fn take_entry(&mut self, id: SlotId, peer: usize, seq: u64, tag: u32) -> Result<(u32, usize), String> {
        let mut d = [0u64; FIELDS - 1];
        let at = entry(self.rank, seq);
        self.peer_ctl(peer)?.read_words(at + 8, &mut d).map_err(|e| e.to_string())?;
        let (fd, off, len) = (d[0] as i32, d[1], d[2] as usize);
        let got = u32::try_from(d[3]).ok().filter(|&g| g == tag || super::is_behind(g, tag, super::TAG_MASK));
        let Some(got) = got else {
            return Err(format!("message {seq} from peer {peer} has tag {}, expected {tag}", d[3]));
        };
        if len > self.slot_bytes {
            return Err(format!(
                "message {seq} from peer {peer} is {len} bytes, more than a {}-byte slot",
                self.slot_bytes
            ));
        }
        let (mine_off, _) = self.slot_range(id);
        if off == IN_ENTRY {
            if len > INLINE {
                return Err(format!("message {seq} from peer {peer} claims {len} bytes inside its entry"));
            }
            let dst = self.data.last_mut().ok_or("no slots reserved")?.own_mut(mine_off, len);
            // The field, not `peer_ctl()`: `dst` borrows `self.data`.
            let src = peer_segment(&self.peer_ctl, peer)?;
            src.copy_out(at + FIELDS * 8, dst).map_err(|e| e.to_string())?;
            self.ack(peer, seq)?;
        } else {
            // The payload is cast to its element type in place: it must
            // start where a slot does (slots are 64-byte multiples of a
            // page-aligned file), and the descriptor names a file.
            if off % 64 != 0 || d[0] > i32::MAX as u64 {
                return Err(format!("message {seq} from peer {peer} lies at file {} offset {off}: not a slot", d[0]));
            }
            let i = match self.peer_data.iter().position(|(p, f, _)| (*p, *f) == (peer, fd)) {
                Some(i) => i,
                None => {
                    if self.peer_data.iter().filter(|(p, _, _)| *p == peer).count() >= MAX_PEER_FILES {
                        return Err(format!("peer {peer} has sent from more than {MAX_PEER_FILES} slot files"));
                    }
                    let s = Segment::open_peer(self.pids[peer], fd, &self.names[peer], Access::ReadOnly)
                        .map_err(|e| format!("cannot map peer {peer}'s slots: {e}"))?;
                    self.peer_data.push((peer, fd, s));
                    self.peer_data.len() - 1
                }
            };
            // Checked here, so that reading it later cannot fail.
            self.peer_data[i].2.view(off as usize, len).map_err(|e| e.to_string())?;
            self.lent[id] = Some(Lent { peer, seq, map: i, off: off as usize, len });
        }
        Ok((got, len))
    }

    /// Acknowledges message `seq` from `peer`, in order: the sender reuses
    /// a descriptor only after every earlier message to this rank was
    /// released, and releases may come out of order.
    fn ack(&mut self, peer: usize, seq: u64) -> Result<(), String> {
        if seq == self.acked[peer] {
            self.acked[peer] += 1;
            while let Some(i) = self.ahead[peer].iter().position(|&s| s == self.acked[peer]) {
                self.ahead[peer].swap_remove(i);
                self.acked[peer] += 1;
            }
            self.peer_ctl(peer)?.counter(consumed(self.rank)).store(self.acked[peer], Ordering::Release);
        } else {
            self.ahead[peer].push(seq);
        }
        Ok(())
    }

    /// Copies a lent message into slot `id` itself and releases it, so the
    /// slot can be written or sent on.
    fn settle(&mut self, id: SlotId) {
        if let Some(l) = self.lent.get(id).copied().flatten() {
            let (off, _) = self.slot_range(id);
            let dst = self.data.last_mut().expect("slots reserved").own_mut(off, l.len);
            dst.copy_from_slice(l.bytes(&self.peer_data));
            self.release(id);
        }
    }
}

impl Transport for ShmTransport {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String> {
        let bytes = bytes.next_multiple_of(64);
        if bytes <= self.slot_bytes && count <= self.slot_count {
            return Ok(());
        }
        // Growing, grow at least twofold: each growth is a new file that
        // peers map and that stays until the end (a peer may still be told
        // of it), so their number must stay small (MAX_PEER_FILES).
        let grow = |want: usize, have: usize| if want > have { want.max(2 * have) } else { have };
        let (b, c) = (grow(bytes, self.slot_bytes), grow(count, self.slot_count));
        let name = &self.names[self.rank];
        let s = b
            .checked_mul(c)
            .ok_or_else(|| format!("{c} slots of {b} bytes overflow"))
            .and_then(|len| Segment::create(len, name).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot make {c} slots of {b} bytes in shared memory: {e}"))?;
        self.data.push(s);
        (self.slot_bytes, self.slot_count) = (b, c);
        self.posted.resize(c, None);
        self.lent.resize(c, None);
        Ok(())
    }

    fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn peers_read_in_place(&self) -> bool {
        true
    }

    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        self.settle(id);
        let (off, len) = self.slot_range(id);
        self.data.last_mut().expect("slots are reserved before use").own_mut(off, len)
    }

    fn slot(&mut self, id: SlotId) -> &[u8] {
        match self.lent.get(id).copied().flatten() {
            Some(l) => l.bytes(&self.peer_data),
            None => self.slot_mut(id),
        }
    }

    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.settle(b);
        let (ra, rb) = (self.slot_range(a), self.slot_range(b));
        let data = self.data.last_mut().expect("slots are reserved before use");
        match self.lent.get(a).copied().flatten() {
            Some(l) => (l.bytes(&self.peer_data), data.own_mut(rb.0, rb.1)),
            None => data.own_pair(ra, rb),
        }
    }

    fn release(&mut self, id: SlotId) {
        if let Some(l) = self.lent.get_mut(id).and_then(Option::take) {
            // The peer's control file was mapped when the message came.
            if let Err(e) = self.ack(l.peer, l.seq) {
                self.broken.get_or_insert(e);
            }
        }
    }

    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if peer >= self.size || peer == self.rank || id >= self.slot_count || len > self.slot_bytes {
            return Err(format!("bad send: slot {id}, {len} bytes, to peer {peer}"));
        }
        // Forwarding a message received on this slot: it must be ours now.
        self.settle(id);
        let seq = self.next_send[peer];
        if seq - self.their_acks[peer] >= RING as u64 {
            // The peer writes this counter: it cannot have taken messages
            // not yet sent.
            let acks = self.ctl.counter(consumed(peer)).load(Ordering::Acquire);
            if acks > seq {
                return Err(format!("peer {peer} says it took {acks} messages, but {seq} were sent"));
            }
            self.their_acks[peer] = acks;
            if seq - acks >= RING as u64 {
                return Err(format!("more than {RING} messages to peer {peer} in flight"));
            }
        }
        let at = entry(peer, seq);
        let data = self.data.last_mut().expect("slots reserved");
        let inline = len <= INLINE;
        let off = if inline {
            let bytes = data.own_mut(id * self.slot_bytes, len);
            self.ctl.own_mut(at + FIELDS * 8, len).copy_from_slice(bytes);
            IN_ENTRY
        } else {
            (id * self.slot_bytes) as u64
        };
        self.ctl.write_words(at + 8, &[data.fd() as u64, off, len as u64, tag as u64]);
        self.ctl.counter(at).store(seq + 1, Ordering::Release);
        self.next_send[peer] = seq + 1;
        self.posted[id] = Some(Posted::Send { peer, seq, len, inline });
        Ok(())
    }

    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if peer >= self.size || peer == self.rank || id >= self.slot_count {
            return Err(format!("bad receive: slot {id} from peer {peer}"));
        }
        let seq = self.next_recv[peer];
        self.next_recv[peer] = seq + 1;
        self.posted[id] = Some(Posted::Recv { peer, seq, tag });
        Ok(())
    }

    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError> {
        match self.posted.get(id).copied().flatten() {
            None => Err(WaitError::Failed(format!("nothing posted on slot {id}"))),
            Some(Posted::Send { peer, seq, len, inline }) => {
                if !inline {
                    self.await_count(peer, self.ctl.counter(consumed(peer)), seq, deadline, abort)?;
                }
                self.posted[id] = None;
                Ok(len)
            }
            Some(Posted::Recv { peer, seq, tag }) => {
                let ready = self.peer_ctl(peer).map_err(WaitError::Failed)?.counter(entry(self.rank, seq));
                self.await_count(peer, ready, seq, deadline, abort)?;
                let n = self.take(id, peer, seq, tag)?;
                self.posted[id] = None;
                Ok(n)
            }
        }
    }

    fn test(&mut self, id: SlotId) -> Result<Option<usize>, WaitError> {
        match self.posted.get(id).copied().flatten() {
            Some(Posted::Send { peer, seq, len, inline })
                if inline || self.ctl.counter(consumed(peer)).load(Ordering::Acquire) > seq =>
            {
                self.posted[id] = None;
                Ok(Some(len))
            }
            Some(Posted::Recv { peer, seq, tag }) => {
                let ready = self.peer_ctl(peer).map_err(WaitError::Failed)?.counter(entry(self.rank, seq));
                if ready.load(Ordering::Acquire) <= seq {
                    return Ok(None);
                }
                let n = self.take(id, peer, seq, tag)?;
                self.posted[id] = None;
                Ok(Some(n))
            }
            _ => Ok(None),
        }
    }

    fn watches_peers(&self) -> bool {
        true
    }

    fn lost_peers(&self) -> Vec<(usize, String)> {
        (0..self.size).filter_map(|p| self.is_lost(p).map(|how| (p, how))).collect()
    }

    fn shrink(&mut self, lost: &[usize], deadline: &mut Deadline) -> Result<Shrunk, String> {
        let (t, lost) = self.agree_and_rebuild(lost, deadline)?;
        Ok(Shrunk { transport: Box::new(t), lost })
    }

    fn cancel_all(&mut self) {
        // Nothing to cancel: a peer may still copy from a slot this rank
        // sent on, and it stays mapped until drop; the communicator is
        // unusable after a failure anyway. Lent messages are released, so
        // their senders' waits end.
        self.posted.iter_mut().for_each(|p| *p = None);
        for id in 0..self.lent.len() {
            self.release(id);
        }
    }
}

impl Drop for ShmTransport {
    /// Raises the life line: peers waiting on this rank learn that it left
    /// (a rank thread that ends, a process that drops its communicator
    /// before the others are done) at their next liveness check.
    fn drop(&mut self) {
        self.ctl.counter(life(self.size)).store(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Mutex};

    use super::*;
    use crate::{AllreduceOpts, Codec, Communicator, Compression, Error, ReduceOp};

    /// `n` ranks as threads of this process, each with a shared-memory
    /// carrier (a process can open its own /proc/self/fd files). Made on
    /// threads of their own: making one is collective.
    fn comms(n: usize) -> Vec<Communicator> {
        std::thread::scope(|s| {
            let hs: Vec<_> =
                transports(n).into_iter().map(|t| s.spawn(move || Communicator::tuned(Box::new(t), 0))).collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        })
    }

    /// `n` bare carriers as ranks of this process.
    fn transports(n: usize) -> Vec<ShmTransport> {
        let table = Mutex::new(vec![(0u32, 0i32, 0u64); n]);
        let oks = Mutex::new(Vec::new());
        let barrier = Barrier::new(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|rank| {
                    let (table, oks, barrier) = (&table, &oks, &barrier);
                    s.spawn(move || {
                        let mut share = |pid, fd, nonce| {
                            table.lock().unwrap()[rank] = (pid, fd, nonce);
                            barrier.wait();
                            let all = table.lock().unwrap().clone();
                            barrier.wait();
                            all
                        };
                        let mut agree = |ok| {
                            oks.lock().unwrap().push(ok);
                            barrier.wait();
                            oks.lock().unwrap().iter().all(|&o| o)
                        };
                        ShmTransport::new(Setup { rank, size: n, share: &mut share, agree: &mut agree }, None).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Allreduces `input(rank)` with `opts` on the shared-memory ranks
    /// `comms`, `calls` times over (the last result kept), and asserts each
    /// rank's result is bitwise what in-process ranks give; `what` names
    /// the case in a failure.
    fn check_against_in_process(
        comms: &[Communicator],
        input: &(dyn Fn(usize) -> Vec<f32> + Sync),
        opts: &AllreduceOpts,
        calls: usize,
        what: &str,
    ) {
        let want = crate::local::run(comms.len(), |c| {
            let mut b = input(c.rank());
            c.allreduce_with(&mut b, ReduceOp::Sum, opts).unwrap();
            b
        });
        let got: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut b = Vec::new();
                        for _ in 0..calls {
                            b = input(c.rank());
                            c.allreduce_with(&mut b, ReduceOp::Sum, opts).unwrap();
                        }
                        b
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "{what}: rank {r} differs from in-process ranks");
        }
    }

    /// Allreduce over shared memory gives the bits in-process ranks give,
    /// for every codec, across slice boundaries and several calls (slots
    /// reused, descriptors wrapping past the ring).
    /// What a peer's control file may say about a message, near the
    /// valid values so that every check is reached from both sides.
    fn forged_descriptor() -> impl proptest::strategy::Strategy<Value = ([u64; 4], bool)> {
        use proptest::prelude::*;
        let fd = prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>(), Just(3u64), Just(1u64 << 40)];
        let off =
            prop_oneof![Just(IN_ENTRY), (0u64..8).prop_map(|k| k * 4096), any::<u64>(), (0u64..64).prop_map(|k| k * 8)];
        let len = prop_oneof![0u64..(INLINE as u64 + 8), Just(4096u64), any::<u64>(), Just(u64::MAX)];
        let tag = prop_oneof![Just(0u64), any::<u64>(), Just(1u64 << 32)];
        ((fd, off, len, tag).prop_map(|(a, b, c, d)| [a, b, c, d]), any::<bool>())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A peer that writes anything at all into its descriptor of a
        /// message (or claims more acknowledgements than were sent) makes
        /// the receive (or send) fail with an error, never a panic, a
        /// crash or a read outside what it mapped.
        #[test]
        fn a_forged_descriptor_is_an_error_not_a_panic((words, real_fd) in forged_descriptor(), acks in proptest::prelude::any::<u64>()) {
            let mut ts = transports(2);
            for t in &mut ts {
                t.reserve(4, 4096).unwrap();
            }
            let (a, b) = ts.split_at_mut(1);
            let (s, r) = (&mut a[0], &mut b[0]);
            let mut words = words;
            if real_fd {
                words[0] = s.data.last().unwrap().fd() as u64;
            }
            let at = entry(1, 0);
            s.ctl.write_words(at + 8, &words);
            s.ctl.counter(at).store(1, Ordering::Release);
            r.post_recv(0, 0, 0).unwrap();
            let mut deadline = Deadline::after(std::time::Duration::from_millis(200));
            match r.wait(0, &mut deadline, &AtomicBool::new(false)) {
                Ok(n) => {
                    proptest::prop_assert!(n <= r.slot_bytes, "{n} bytes taken into a {}-byte slot", r.slot_bytes);
                    let _ = r.slot(0); // a lent message reads back
                }
                Err(e) => proptest::prop_assert!(!matches!(e, WaitError::Timeout), "{e:?}"),
            }
            // The receiver's acknowledgement counter in the sender's file,
            // forged too: the sender's next sends must not underflow.
            s.ctl.counter(consumed(1)).store(acks, Ordering::Release);
            for _ in 0..RING + 1 {
                if s.post_send(1, 8, 1, 0).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn allreduce_over_shared_memory_matches_in_process_ranks() {
        for n in [2usize, 3, 4] {
            let comms = comms(n);
            for (i, codec) in [Codec::Native, Codec::Fp16, Codec::Bf16].into_iter().enumerate() {
                let count = 100_003 + i;
                let input = |rank: usize| -> Vec<f32> {
                    (0..count).map(|j| ((j * 7 + rank * 13) % 101) as f32 * 0.37 - 18.0).collect()
                };
                let opts = AllreduceOpts::default().codec(codec).slice_bytes(4096);
                check_against_in_process(&comms, &input, &opts, 3, &format!("n {n} codec {codec:?}"));
            }
        }
    }

    /// Every algorithm over the strictest carrier (a send completes only
    /// when its receiver has copied it), pipelined (many slices per
    /// block) and not (one slice), bitwise equal to in-process ranks. A
    /// schedule whose ranks could each wait for the other to take a send
    /// fails here at the deadline; the in-process carrier completes a send
    /// once the receive is posted and does not show it.
    #[test]
    fn every_algorithm_runs_over_shared_memory_pipelined_or_not() {
        use crate::Algorithm as A;
        for n in [3usize, 4, 5] {
            let comms = comms(n);
            for algo in [A::Ring, A::Tree, A::HalvingDoubling, A::RecursiveDoubling] {
                for count in [1000usize, 100_003] {
                    let input = |rank: usize| -> Vec<f32> {
                        (0..count).map(|j| ((j * 5 + rank * 11) % 97) as f32 * 0.5 - 20.0).collect()
                    };
                    let opts = AllreduceOpts::default()
                        .algorithm(algo)
                        .slice_bytes(4096)
                        .timeout(std::time::Duration::from_secs(20));
                    check_against_in_process(&comms, &input, &opts, 1, &format!("n {n} {algo:?} count {count}"));
                }
            }
        }
    }

    /// A receive nobody sends to ends at its deadline, naming nothing
    /// wrong but the time.
    #[test]
    fn a_lent_message_is_read_in_place_and_its_send_completes_on_release() {
        let mut t = transports(2);
        let (a, b) = t.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let (never, abort) = (std::time::Duration::from_secs(5), AtomicBool::new(false));
        for x in [&mut *a, &mut *b] {
            x.reserve(4, 4096).unwrap();
        }
        // Larger than an entry: it stays in rank 0's slot.
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        a.slot_mut(1)[..1000].copy_from_slice(&msg);
        a.post_send(1, 1000, 1, 9).unwrap();
        b.post_recv(2, 0, 9).unwrap();
        assert_eq!(b.wait(2, &mut Deadline::after(never), &abort), Ok(1000));
        assert_eq!(&b.slot(2)[..1000], &msg[..]);
        assert_ne!(b.slot(2).as_ptr(), b.slot_mut(3).as_ptr(), "read in place, not in rank 1's slot");
        assert_eq!(a.test(1), Ok(None), "the send completes only on release");
        b.release(2);
        assert_eq!(a.test(1), Ok(Some(1000)));
        // A lent message forwarded on: copied into the receiver's own slot.
        a.slot_mut(1)[..1000].copy_from_slice(&msg);
        a.post_send(1, 1000, 1, 9).unwrap();
        b.post_recv(2, 0, 9).unwrap();
        b.wait(2, &mut Deadline::after(never), &abort).unwrap();
        b.post_send(2, 1000, 0, 10).unwrap();
        assert_eq!(a.test(1), Ok(Some(1000)), "forwarding released it");
        a.post_recv(0, 1, 10).unwrap();
        assert_eq!(a.wait(0, &mut Deadline::after(never), &abort), Ok(1000));
        assert_eq!(&a.slot(0)[..1000], &msg[..]);
        a.release(0);
        assert_eq!(b.wait(2, &mut Deadline::after(never), &abort), Ok(1000));
    }

    /// Runs `body(rank, comm)` on every rank's thread, returning what each
    /// returned; a rank's thread ending drops its communicator.
    fn on_threads<R: Send>(comms: Vec<Communicator>, body: impl Fn(Communicator) -> R + Sync) -> Vec<R> {
        std::thread::scope(|s| {
            let body = &body;
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(move || body(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn grads(rank: usize) -> Vec<f32> {
        (0..10_007).map(|j| ((j * 7 + rank * 13) % 101) as f32 * 0.37 - 18.0).collect()
    }

    /// A rank that leaves mid-job is named by every survivor's next
    /// collective (not at its one-minute deadline); the survivors shrink,
    /// agree it is lost, and go on with the bits three ranks of their own
    /// give.
    #[test]
    fn survivors_name_a_lost_rank_shrink_and_go_on() {
        let opts = AllreduceOpts::default().timeout(std::time::Duration::from_secs(60)).slice_bytes(4096);
        let out = on_threads(comms(4), |c| {
            let mut b = grads(c.rank());
            c.allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap();
            if c.rank() == 1 {
                return None; // leaves: its carrier is dropped
            }
            let e = c.allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap_err();
            let small = c.shrink().unwrap();
            let mut b = grads(small.rank());
            small.allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap();
            Some((e, small.rank(), small.size(), small.lost_ranks().to_vec(), b))
        });
        let want = crate::local::run(3, |c| {
            let mut b = grads(c.rank());
            c.allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap();
            b
        });
        for (old, r) in out.into_iter().enumerate().filter(|(r, _)| *r != 1) {
            let (e, rank, size, lost, b) = r.unwrap();
            assert!(matches!(e, Error::PeerLost { lost: 1, .. }), "rank {old}: {e}");
            assert_eq!((rank, size, lost), (old - usize::from(old > 1), 3, vec![1]), "rank {old}");
            assert!(b == want[rank], "rank {old}: the survivors' allreduce differs from 3 ranks' own");
        }
    }

    /// A survivor that dies during the agreement is found lost too: the
    /// others agree on both losses and go on as two.
    #[test]
    fn a_rank_lost_during_the_agreement_is_agreed_on_too() {
        let opts = AllreduceOpts::default().timeout(std::time::Duration::from_secs(60));
        let out = on_threads(comms(4), |c| {
            let mut b = grads(c.rank());
            if c.rank() == 3 {
                return None;
            }
            let e = c.allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap_err();
            if c.rank() == 0 {
                return None; // noticed the loss, then left too
            }
            let small = c.shrink().unwrap();
            let mut one = [small.rank() as f32 + 1.0];
            small.allreduce_with(&mut one, ReduceOp::Sum, &opts).unwrap();
            Some((e, small.lost_ranks().to_vec(), small.size(), one[0]))
        });
        for r in [1, 2] {
            let (e, lost, size, sum) = out[r].clone().unwrap();
            assert!(matches!(e, Error::PeerLost { .. }), "rank {r}: {e}");
            assert_eq!((lost, size, sum), (vec![0, 3], 2, 3.0), "rank {r}");
        }
    }

    /// GradSync through a loss: the step that fails is not applied; after
    /// `shrink` the survivors run it again and get, bit for bit, what a
    /// GradSync of their own size gives, averaging over the new count.
    #[test]
    fn gradsync_shrinks_and_runs_the_failed_step_again() {
        use crate::{GradSync, GradSyncOpts};
        let opts = GradSyncOpts::default().codec(Codec::Fp16).bucket_bytes(4096);
        let opts = GradSyncOpts { allreduce: opts.allreduce.timeout(std::time::Duration::from_secs(60)), ..opts };
        let lens = [1000, 37, 2048];
        let grads = |rank: usize, step: usize| -> Vec<Vec<f32>> {
            lens.iter().map(|&k| (0..k).map(|j| ((j * 7 + rank * 13 + step) % 101) as f32 * 0.01).collect()).collect()
        };
        let step = |gs: &mut GradSync, step: usize| {
            let mut g = grads(gs.comm().rank(), step);
            let mut views: Vec<&mut [f32]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
            gs.synchronize(&mut views).map(|_| g.clone())
        };
        let out = on_threads(comms(4), |c| {
            let mut gs = GradSync::new(c, &lens, opts.clone()).unwrap();
            step(&mut gs, 0).unwrap();
            if gs.comm().rank() == 3 {
                return None; // leaves: its GradSync and communicator are dropped
            }
            let e = step(&mut gs, 1).unwrap_err();
            let lost = gs.shrink().unwrap();
            Some((e, lost, gs.comm().size(), step(&mut gs, 1).unwrap()))
        });
        let want = crate::local::run(3, |c| {
            let mut gs = GradSync::new(c, &lens, opts.clone()).unwrap();
            step(&mut gs, 1).unwrap()
        });
        for (r, o) in out.into_iter().enumerate().take(3) {
            let (e, lost, size, got) = o.unwrap();
            assert!(matches!(e, Error::PeerLost { lost: 3, .. }), "rank {r}: {e}");
            assert_eq!((lost, size), (vec![3], 3), "rank {r}");
            assert!(got == want[r], "rank {r}: the re-run step differs from 3 ranks' own");
        }
    }

    /// A compressor goes on after a shrink: top-k's allgather carries the
    /// survivors' pairs, PowerSGD averages over the survivors, and each
    /// re-runs the failed step; the survivors get the same bits.
    #[test]
    fn gradsync_compressors_go_on_after_a_shrink() {
        for compression in [Compression::TopK { fraction: 0.1, momentum: 0.9 }, Compression::PowerSgd { rank: 2 }] {
            compressor_goes_on_after_a_shrink(compression);
        }
    }

    fn compressor_goes_on_after_a_shrink(compression: Compression) {
        use crate::{GradSync, GradSyncOpts};
        let opts = GradSyncOpts::default().compression(compression).bucket_bytes(4096);
        let opts = GradSyncOpts { allreduce: opts.allreduce.timeout(std::time::Duration::from_secs(60)), ..opts };
        let shapes = [(40, 25), (37, 1), (64, 32)];
        let lens: Vec<usize> = shapes.iter().map(|s| s.0 * s.1).collect();
        let out = on_threads(comms(4), |c| {
            let mut gs = GradSync::with_shapes(c, &shapes, opts.clone()).unwrap();
            let rank = gs.comm().rank();
            let step = |gs: &mut GradSync, step: usize| {
                let mut g: Vec<Vec<f32>> = (lens.iter())
                    .map(|&k| (0..k).map(|j| ((j * 7 + rank * 13 + step) % 101) as f32 * 0.01).collect())
                    .collect();
                let mut views: Vec<&mut [f32]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                gs.synchronize(&mut views).map(|_| g.clone())
            };
            step(&mut gs, 0).unwrap();
            if rank == 3 {
                return None;
            }
            assert!(step(&mut gs, 1).is_err(), "rank {rank}: a step with a rank gone");
            gs.shrink().unwrap();
            Some((step(&mut gs, 1).unwrap(), step(&mut gs, 2).unwrap()))
        });
        let survivors: Vec<_> = out.into_iter().take(3).map(|o| o.unwrap()).collect();
        for (r, s) in survivors.iter().enumerate() {
            assert!(s == &survivors[0], "{compression:?}: rank {r} differs from rank 0 after the shrink");
            assert!(s.1.iter().flatten().any(|x| *x != 0.0), "{compression:?}: rank {r}: nothing arrived");
        }
    }

    #[test]
    fn a_receive_without_a_sender_times_out() {
        let comms = comms(2);
        let opts = AllreduceOpts::default().timeout(std::time::Duration::from_millis(200));
        let mut b = vec![1f32; 10];
        let e = comms[0].allreduce_with(&mut b, ReduceOp::Sum, &opts).unwrap_err().to_string();
        assert!(e.contains("timed out") && e.contains("peer 1"), "{e}");
    }
}
