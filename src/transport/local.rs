//! In-process ranks: every rank is a thread, messages are copied through
//! per-rank mailboxes. Used by the tests and by single-process callers; the
//! executor, kernels and schedules are exactly those used over MPI.
//!
//! Sends are *rendezvous*: a send completes only once the receiver has
//! posted the matching receive, as MPI's large-message protocol behaves.
//! Eager sends would hide schedules that deadlock over MPI.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest sleep between checks of the abort flag.
const ABORT_POLL: Duration = Duration::from_millis(5);

use super::{Deadline, SlotId, SlotPool, Transport, WaitError};

struct Msg {
    src: usize,
    tag: u32,
    data: Vec<u8>,
}

#[derive(Default)]
struct Mailbox {
    queue: Mutex<VecDeque<Msg>>,
    ready: Condvar,
}

/// The shared state of one group of in-process ranks.
pub struct LocalWorld {
    boxes: Vec<Mailbox>,
    // Message buffers are recycled, so a steady stream of collectives
    // allocates nothing once the pool has warmed up.
    spare: Mutex<Vec<Vec<u8>>>,
    aborted: AtomicBool,
    // recvs_posted[src * n + dst]: receives `dst` has posted for `src`.
    recvs_posted: Vec<AtomicU64>,
}

impl LocalWorld {
    /// A world of `n` ranks.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(LocalWorld {
            boxes: (0..n).map(|_| Mailbox::default()).collect(),
            spare: Mutex::new(Vec::new()),
            aborted: AtomicBool::new(false),
            recvs_posted: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
        })
    }
    /// Wakes every wait in this world with an error.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        for b in &self.boxes {
            let _guard = b.queue.lock().unwrap_or_else(|e| e.into_inner());
            b.ready.notify_all();
        }
    }
}

#[derive(Clone, Copy)]
enum Posted {
    Idle,
    /// Message number `nth` to `peer` (0-based), of `len` bytes.
    Sent {
        peer: usize,
        nth: u64,
        len: usize,
    },
    Recv {
        peer: usize,
        tag: u32,
    },
}

/// One rank's end of a [`LocalWorld`].
pub struct LocalTransport {
    world: Arc<LocalWorld>,
    rank: usize,
    pool: SlotPool,
    posted: Vec<Posted>,
    // Messages sent so far to each peer.
    sent_to: Vec<u64>,
    // Message buffers (count, bytes) this rank has put in the world's
    // spare pool.
    lent: (usize, usize),
    message_bytes: usize,
}

impl LocalTransport {
    /// Rank `rank` of `world`.
    pub fn new(world: Arc<LocalWorld>, rank: usize) -> Self {
        let n = world.boxes.len();
        LocalTransport {
            world,
            rank,
            pool: SlotPool::default(),
            posted: Vec::new(),
            sent_to: vec![0; n],
            lent: (0, 0),
            message_bytes: super::DEFAULT_SLICE_BYTES,
        }
    }

    /// The same, reporting `bytes` as its message size, as a carrier that
    /// moves such messages best would ([`Transport::message_bytes`]).
    pub fn with_message_bytes(mut self, bytes: usize) -> Self {
        self.message_bytes = bytes;
        self
    }
}

impl LocalTransport {
    /// Rendezvous: a send completes once its receive is posted.
    fn wait_matched(
        &self,
        peer: usize,
        nth: u64,
        len: usize,
        deadline: Instant,
        abort: &AtomicBool,
    ) -> Result<usize, WaitError> {
        let n = self.world.boxes.len();
        let posted = &self.world.recvs_posted[self.rank * n + peer];
        let mb = &self.world.boxes[self.rank];
        let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if posted.load(Ordering::SeqCst) > nth {
                return Ok(len);
            }
            if self.world.aborted.load(Ordering::SeqCst) {
                return Err(WaitError::Failed("aborted".into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout);
            }
            if abort.load(Ordering::Relaxed) {
                return Err(WaitError::Aborted);
            }
            // Wake now and then: Communicator::abort() raises a flag, it
            // does not know which condition variable a rank sleeps on.
            q = mb.ready.wait_timeout(q, (deadline - now).min(ABORT_POLL)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Transport for LocalTransport {
    fn name(&self) -> &'static str {
        "threads"
    }
    fn message_bytes(&self) -> usize {
        self.message_bytes
    }

    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.world.boxes.len()
    }
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String> {
        self.pool.reserve(count, bytes);
        self.posted.resize(count.max(self.posted.len()), Posted::Idle);
        // A rank has at most `count` messages in flight: with as many
        // buffers of `bytes` in the spare pool per rank, and room for all
        // of them in its mailbox, sending allocates nothing in steady
        // state (as the MPI transport, whose slots are the messages).
        if count > self.lent.0 || bytes > self.lent.1 {
            let n = self.world.boxes.len();
            let mut spare = self.world.spare.lock().unwrap_or_else(|e| e.into_inner());
            spare.extend((0..count).map(|_| Vec::with_capacity(bytes)));
            drop(spare);
            let mut q = self.world.boxes[self.rank].queue.lock().unwrap_or_else(|e| e.into_inner());
            let room = n * count;
            let queued = q.len();
            q.reserve(room.saturating_sub(queued));
            self.lent = (count.max(self.lent.0), bytes.max(self.lent.1));
        }
        Ok(())
    }
    fn slot_bytes(&self) -> usize {
        self.pool.bytes()
    }
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        self.pool.get_mut(id)
    }
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.pool.pair(a, b)
    }

    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        if self.world.aborted.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
        let mut data = self.world.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&self.pool.get_mut(id)[..len]);
        let mb = &self.world.boxes[peer];
        mb.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(Msg { src: self.rank, tag, data });
        mb.ready.notify_all();
        self.posted[id] = Posted::Sent { peer, nth: self.sent_to[peer], len };
        self.sent_to[peer] += 1;
        Ok(())
    }

    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        self.posted[id] = Posted::Recv { peer, tag };
        let n = self.world.boxes.len();
        self.world.recvs_posted[peer * n + self.rank].fetch_add(1, Ordering::SeqCst);
        // The sender may be waiting for this receive (rendezvous).
        let mb = &self.world.boxes[peer];
        let _guard = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
        mb.ready.notify_all();
        Ok(())
    }

    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError> {
        // A condition variable needs the instant up front.
        let deadline = deadline.at();
        let (peer, tag) = match std::mem::replace(&mut self.posted[id], Posted::Idle) {
            Posted::Idle => return Err(WaitError::Failed(format!("slot {id} has nothing posted"))),
            Posted::Sent { peer, nth, len } => return self.wait_matched(peer, nth, len, deadline, abort),
            Posted::Recv { peer, tag } => (peer, tag),
        };
        let mb = &self.world.boxes[self.rank];
        let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.world.aborted.load(Ordering::SeqCst) {
                return Err(WaitError::Failed("aborted".into()));
            }
            if let Some(pos) = q.iter().position(|m| m.src == peer) {
                let msg = q.remove(pos).expect("position is in range");
                if super::is_behind(msg.tag, tag, super::TAG_MASK) {
                    // An earlier call's message (a late abort notice, a
                    // duplicate): MPI would never match its tag again, so
                    // it is handed over as a stray, not taken for this
                    // call's, and the receive stays posted.
                    drop(q);
                    let stray = super::Stray::new(peer, msg.tag, msg.data.len(), &msg.data);
                    self.world.spare.lock().unwrap_or_else(|e| e.into_inner()).push(msg.data);
                    // Count it as received, or the sender's later sends to
                    // this rank would wait for one receive too many.
                    let n = self.world.boxes.len();
                    self.world.recvs_posted[peer * n + self.rank].fetch_add(1, Ordering::SeqCst);
                    let sender = &self.world.boxes[peer];
                    drop(sender.queue.lock().unwrap_or_else(|e| e.into_inner()));
                    sender.ready.notify_all();
                    self.posted[id] = Posted::Recv { peer, tag };
                    return Err(WaitError::Stray(stray));
                }
                drop(q);
                if msg.tag != tag {
                    return Err(WaitError::Failed(format!(
                        "message tag {} where {} was expected (ranks are in different collectives)",
                        msg.tag, tag
                    )));
                }
                let slot = self.pool.get_mut(id);
                if msg.data.len() > slot.len() {
                    return Err(WaitError::Failed(format!(
                        "message of {} bytes does not fit a {}-byte slot",
                        msg.data.len(),
                        slot.len()
                    )));
                }
                slot[..msg.data.len()].copy_from_slice(&msg.data);
                let len = msg.data.len();
                self.world.spare.lock().unwrap_or_else(|e| e.into_inner()).push(msg.data);
                return Ok(len);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout);
            }
            if abort.load(Ordering::Relaxed) {
                return Err(WaitError::Aborted);
            }
            // Wake now and then: Communicator::abort() raises a flag, it
            // does not know which condition variable a rank sleeps on.
            q = mb.ready.wait_timeout(q, (deadline - now).min(ABORT_POLL)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn cancel_all(&mut self) {
        // Nothing here writes into a slot after wait() returns, so there is
        // nothing to retire.
        self.posted.iter_mut().for_each(|p| *p = Posted::Idle);
    }
}
