//! Transports carry bytes between ranks. The executor owns no message
//! memory: each transport owns a pool of *slots* (aligned byte buffers),
//! because an MPI request must keep its buffer alive until it completes,
//! even when the collective that posted it has failed and returned. A
//! transport that cannot cancel a request keeps that slot forever rather
//! than let the carrier write into freed memory.
//!
//! Messages between one pair of ranks are matched in the order they were
//! posted (MPI's non-overtaking rule); every schedule relies on this.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub(crate) mod agree;
pub mod fault;
pub mod local;
#[cfg(feature = "mpi")]
pub(crate) mod mesh;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "mpi")]
mod mpi_ffi;
#[cfg(target_os = "linux")]
pub mod shm;
#[cfg(target_os = "linux")]
mod shm_ffi;

/// Message payload when neither the call nor the carrier says otherwise
/// ([`Transport::message_bytes`]): big enough that a hop's kernel runs at
/// memory speed, small enough that a few in flight pipeline a call.
pub const DEFAULT_SLICE_BYTES: usize = 256 << 10;

/// Messages in flight each way when the call does not say: enough that
/// a slice arrives while the one before it is reduced and the one before
/// that leaves.
pub const DEFAULT_SLOTS: usize = 4;

/// The default [`Transport::tag_mask`]: 31 bits, MPI's usual tag bound.
pub const TAG_MASK: u32 = 0x7fff_ffff;

/// How often a wait that lasts checks whether its peers are alive
/// ([`Transport::lost_peers`]): a lost rank is reported within twice this
/// (a check, then as long again for messages it sent before it went),
/// not at the deadline. A check is one system call per
/// peer, and only waits that already took this long make one.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a carrier of this process has seen a peer gone.
static PEER_LOST: AtomicBool = AtomicBool::new(false);

/// Whether a carrier of this process has seen a peer gone: then
/// `MPI_Finalize` must be skipped (`crate::mpi`), since Open MPI 4.1 waits
/// there for the dead process, across hosts every time and on one host
/// now and then (1 run in 12 of `ci/lost_rank.sh`'s first case hung).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn peer_lost() -> bool {
    PEER_LOST.load(std::sync::atomic::Ordering::Relaxed)
}

/// Notes that a carrier saw a peer gone ([`peer_lost`]).
fn saw_peer_lost() {
    PEER_LOST.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// What [`Transport::shrink`] agreed: the survivors' carrier, and which
/// ranks of the old one were lost.
pub struct Shrunk {
    /// The carrier over the survivors.
    pub transport: Box<dyn Transport>,
    /// The old ranks that are gone, lowest first.
    pub lost: Vec<usize>,
}

/// Index of a slot in a transport's pool.
pub type SlotId = usize;

/// Why a wait ended without its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    Timeout,
    /// The carrier failed, or the message was not the one expected.
    Failed(String),
    /// The abort flag passed to `wait` was raised.
    Aborted,
    /// A peer is gone ([`Transport::lost_peers`]): the rank and how.
    Lost(usize, String),
    /// The next message from the peer belongs to an earlier call (its tag
    /// is behind the receive's): taken out of the way, and handed over to
    /// be judged. The receive stays posted; wait on it again.
    Stray(Stray),
}

/// A message of an earlier call that reached a receive of this one: an
/// abort notice that came after this rank had finished that call, or a
/// duplicate. Over MPI its tag would never match again; over the carriers
/// that deliver a peer's messages in order it stood in the way of this
/// call's. Either way it is taken whole and never taken for this call's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// Who sent it.
    pub peer: usize,
    /// Its tag (an earlier call's).
    pub tag: u32,
    /// Its length in bytes.
    pub len: usize,
    /// Its first bytes, up to a header's (48 bytes).
    pub head: Vec<u8>,
}

impl Stray {
    /// A stray of `len` bytes whose message starts with `bytes`.
    pub(crate) fn new(peer: usize, tag: u32, len: usize, bytes: &[u8]) -> Self {
        let head = bytes[..len.min(bytes.len()).min(crate::wire::HEADER)].to_vec();
        Stray { peer, tag, len, head }
    }
}

/// Whether tag `got` belongs to a call before the one tagged `want`, on a
/// carrier whose tags wrap at `mask`: within half the tag space behind it.
/// (A peer can run ahead of this rank, a broadcast's root by many calls,
/// but never by half the tag space.)
pub fn is_behind(got: u32, want: u32, mask: u32) -> bool {
    let behind = want.wrapping_sub(got) & mask;
    (1..=mask / 2).contains(&behind)
}

/// When a wait gives up: `timeout` after the clock was first read. The
/// polling carriers read it only after their first few microseconds of
/// polls, so a small message that arrives meanwhile costs no clock read
/// (at 8 bytes over shared memory a read was a tenth of the call).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    /// A deadline `timeout` after its first use.
    pub fn after(timeout: Duration) -> Self {
        Deadline { timeout, at: None }
    }
    /// The instant it passes (starting the clock if it has not started).
    pub fn at(&mut self) -> Instant {
        *self.at.get_or_insert_with(|| {
            let now = Instant::now();
            // Options are bounded (crate::env::MAX_TIMEOUT), but a carrier
            // used directly may pass anything: far enough is never.
            now.checked_add(self.timeout).unwrap_or(now + Duration::from_secs(u32::MAX as u64))
        })
    }
    /// Whether it has passed.
    pub fn passed(&mut self) -> bool {
        Instant::now() >= self.at()
    }
}

/// A carrier of messages between the ranks of one communicator.
pub trait Transport: Send {
    /// What carries the bytes: `mpi`, `shm`, `threads`.
    fn name(&self) -> &'static str;
    /// Payload bytes per message this carrier moves best; calls that leave
    /// [`crate::AllreduceOpts::slice_bytes`] at 0 slice by it.
    fn message_bytes(&self) -> usize {
        DEFAULT_SLICE_BYTES
    }
    /// The tags this carrier takes: a call's tag is its sequence number
    /// masked by this (all ones in the low bits), so a stray message of an
    /// earlier call can only match a call `tag_mask + 1` calls later. The
    /// default is 31 bits.
    fn tag_mask(&self) -> u32 {
        TAG_MASK
    }
    /// Whether peers read this rank's messages in place, from their own
    /// cores (shared memory). Then how a message is written decides what
    /// the reader pays, and the executor times both ways
    /// ([`crate::WireStores`]); the default writes through the cache.
    fn peers_read_in_place(&self) -> bool {
        false
    }
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Makes sure at least `count` slots of at least `bytes` bytes exist.
    /// Called only when nothing is in flight; never shrinks, so steady state
    /// allocates nothing. An error (the memory could not be had) leaves the
    /// slots as they were, and the call fails with it.
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String>;
    /// Bytes of each slot (0 before the first `reserve`).
    fn slot_bytes(&self) -> usize;
    /// Slot `id`, to fill before `post_send`.
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8];
    /// Slot `id` to read: a received message, which a carrier that lends
    /// messages (see [`Self::release`]) may show in the sender's memory.
    fn slot(&mut self, id: SlotId) -> &[u8] {
        self.slot_mut(id)
    }
    /// The executor is done reading the message received on slot `id`. A
    /// carrier that lent it in place (shared memory) acknowledges it now,
    /// so the sender may reuse its memory; the default has nothing to do.
    fn release(&mut self, _id: SlotId) {}
    /// Slot `a` to read and slot `b` to write, at once (`a != b`).
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]);
    /// Starts sending the first `len` bytes of slot `id` to `peer`.
    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String>;
    /// Starts receiving the next message from `peer` into slot `id`.
    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String>;
    /// The peers known to be gone (their process exited, or their end of
    /// the carrier was dropped), lowest first, each with how it was seen.
    /// A carrier that cannot tell returns none, and a lost peer is then
    /// found at the deadline. A wait that lasts checks the peer it waits
    /// on every [`LIVENESS_INTERVAL`] and fails with [`WaitError::Lost`];
    /// a peer that finished its part and left is no loss to the others.
    fn lost_peers(&self) -> Vec<(usize, String)> {
        Vec::new()
    }
    /// Whether [`Self::lost_peers`] can see a peer go at all.
    fn watches_peers(&self) -> bool {
        false
    }
    /// A carrier over the ranks not in `lost` (this one not among them),
    /// renumbered in rank order, agreed with every survivor: see
    /// [`crate::Communicator::shrink`]. Collective over the survivors. The
    /// default: this carrier cannot.
    fn shrink(&mut self, _lost: &[usize], _deadline: &mut Deadline) -> Result<Shrunk, String> {
        Err(format!("the {} carrier cannot go on without a lost rank", self.name()))
    }
    /// Waits for what was posted on slot `id`; returns the bytes moved.
    /// Gives up with `Aborted` soon (within milliseconds) after `abort` is
    /// raised, from any thread.
    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError>;
    /// Completes what was posted on slot `id` if it is done already: the
    /// bytes moved, or `None` (then [`Self::wait`]). Lets the executor skip
    /// the clock (a deadline) for messages that are already there, which
    /// on shared memory is a fifth of a small call. The default: `None`.
    fn test(&mut self, _id: SlotId) -> Result<Option<usize>, WaitError> {
        Ok(None)
    }
    /// After a failure: cancels what can be cancelled; slots whose requests
    /// cannot be are retired (never reused, never freed while the carrier
    /// may still touch them).
    fn cancel_all(&mut self);
}

/// How many polls the shared-memory carrier's wait makes between yields
/// of the core, for a host running `local_ranks` ranks (0: unknown) and
/// `busy` polls taking a few microseconds: every poll when the host's
/// ranks outnumber its cores, else `busy`. (The MPI carrier leaves this
/// to Open MPI's progress engine, which yields by the same rule.)
///
/// Why: a rank spinning on a core its peer needs keeps the peer off it
/// until the scheduler's slice ends. On 4 ranks over 2 cores
/// (2026-11-26, `mpirun -np 4 ringfuse-perf -b 8 -e 512K -f 4`), 2048
/// polls between yields left every step of a small call waiting a
/// ~105 us slice: doubling 108 us and the ring 215 us at 8 B, against
/// 8.5 and 19.4 us yielding every poll. Open MPI does the same: its
/// `mpi_yield_when_idle` defaults to on when `mpirun` finds a node
/// oversubscribed, which it says in `OMPI_MCA_mpi_oversubscribe`; both
/// are honoured here, so a user can also force either way. Without them
/// (another launcher), ranks outnumbering the CPUs this process may use
/// is the sign.
pub(crate) fn polls_per_yield(local_ranks: usize, busy: u32) -> u32 {
    let yields = host_oversubscribed(local_ranks);
    tracing::debug!("ringfuse: {local_ranks} ranks on this host: yield every {} polls", if yields { 1 } else { busy });
    if yields {
        1
    } else {
        busy
    }
}

/// Whether this host runs more ranks than it has cores for, by
/// [`polls_per_yield`]'s rule, for `local_ranks` ranks on it.
pub(crate) fn host_oversubscribed(local_ranks: usize) -> bool {
    let var = |k: &str| std::env::var(k).ok();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let when_idle = var("OMPI_MCA_mpi_yield_when_idle");
    let over = var("OMPI_MCA_mpi_oversubscribe");
    oversubscribed(local_ranks, cpus, when_idle.as_deref(), over.as_deref())
}

/// Whether waits should yield at every poll: Open MPI's own settings
/// first (`mpi_yield_when_idle`, then `mpi_oversubscribe`, each an MCA
/// boolean when set), else more ranks on the host than `cpus`.
fn oversubscribed(local_ranks: usize, cpus: usize, yield_when_idle: Option<&str>, oversubscribe: Option<&str>) -> bool {
    (yield_when_idle.and_then(mca_bool)).or_else(|| oversubscribe.and_then(mca_bool)).unwrap_or(local_ranks > cpus)
}

/// An MCA boolean as Open MPI reads one; `None` for anything else.
fn mca_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "enabled" | "yes" | "y" => Some(true),
        "0" | "f" | "false" | "disabled" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// The wait loop of the polling carriers: calls `poll` until it yields a
/// value, and every `every` polls checks the deadline and the abort flag
/// and yields the core ([`polls_per_yield`] says how often); and every
/// [`LIVENESS_INTERVAL`] of waiting asks `lost()`, a peer it names ending
/// the wait with [`WaitError::Lost`].
pub(crate) fn poll_until_alive<T>(
    deadline: &mut Deadline,
    abort: &AtomicBool,
    every: u32,
    mut poll: impl FnMut() -> Result<Option<T>, WaitError>,
    lost: impl Fn() -> Option<(usize, String)>,
) -> Result<T, WaitError> {
    let mut polls = 0u32;
    let mut check_at: Option<Instant> = None;
    // The peer seen gone, and until when its last messages may still come.
    let mut gone: Option<(Instant, usize, String)> = None;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        polls = polls.wrapping_add(1);
        if polls % every == 0 {
            let now = Instant::now();
            if now >= deadline.at() {
                return Err(WaitError::Timeout);
            }
            if let Some((until, peer, how)) = &gone {
                if now >= *until {
                    return Err(WaitError::Lost(*peer, how.clone()));
                }
            }
            let at = *check_at.get_or_insert(now + LIVENESS_INTERVAL);
            if now >= at && gone.is_none() {
                // A peer that finished its part and then left raises its
                // life line (or closes its connections) after its last
                // message: keep polling a little longer, so a message that
                // was on its way when the peer left is still taken.
                if let Some((peer, how)) = lost() {
                    gone = Some((now + LIVENESS_INTERVAL, peer, how));
                }
                check_at = Some(now + LIVENESS_INTERVAL);
            }
            if abort.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(WaitError::Aborted);
            }
            std::thread::yield_now();
        }
    }
}

/// Slots backed by `u64`s, so every slot is 8-byte aligned and a payload
/// after a 16-byte header can be viewed as `f64`s.
#[derive(Default)]
pub(crate) struct SlotPool {
    slots: Vec<Vec<u64>>,
    bytes: usize,
}

impl SlotPool {
    pub(crate) fn reserve(&mut self, count: usize, bytes: usize) {
        if bytes > self.bytes {
            self.slots.clear();
            self.bytes = bytes;
        }
        while self.slots.len() < count {
            self.slots.push(vec![0u64; self.bytes.div_ceil(8)]);
        }
    }
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
    pub(crate) fn get_mut(&mut self, id: SlotId) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.slots[id][..])
    }
    pub(crate) fn pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        let [x, y] = self.slots.get_disjoint_mut([a, b]).expect("slot pair must be two distinct slots");
        (bytemuck::cast_slice(&x[..]), bytemuck::cast_slice_mut(&mut y[..]))
    }
    /// Replaces slot `id` with a fresh one and hands back the old buffer,
    /// which a carrier may still write into (MPI's, after a cancel that
    /// did not take).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn retire(&mut self, id: SlotId) -> Vec<u64> {
        std::mem::replace(&mut self.slots[id], vec![0u64; self.bytes.div_ceil(8)])
    }
}

#[cfg(test)]
mod tests {
    use super::{is_behind, mca_bool, oversubscribed, TAG_MASK};

    #[test]
    fn a_tag_is_behind_within_half_the_tag_space_and_wraps() {
        assert!(is_behind(4, 5, TAG_MASK));
        assert!(!is_behind(5, 5, TAG_MASK), "this call's own");
        assert!(!is_behind(6, 5, TAG_MASK), "a peer running ahead");
        assert!(is_behind(TAG_MASK, 0, TAG_MASK), "across the wrap");
        assert!(is_behind(32767, 1, 32767));
        assert!(!is_behind(1, 32767, 32767), "ahead across the wrap");
        assert!(is_behind(0, TAG_MASK / 2, TAG_MASK));
        assert!(!is_behind(0, TAG_MASK / 2 + 1, TAG_MASK), "too far behind: ahead");
    }

    #[test]
    fn waits_yield_every_poll_when_open_mpi_or_the_core_count_says_oversubscribed() {
        // Open MPI's explicit setting wins, then its launcher's finding.
        assert!(oversubscribed(2, 8, Some("1"), Some("0")));
        assert!(!oversubscribed(8, 2, Some("false"), Some("1")));
        assert!(oversubscribed(2, 8, None, Some("true")));
        // mpirun --bind-to core: one CPU each, but the node has a core per
        // rank, and Open MPI says so.
        assert!(!oversubscribed(4, 1, None, Some("0")));
        // Another launcher: the ranks against the CPUs.
        assert!(oversubscribed(4, 2, None, None));
        assert!(!oversubscribed(2, 2, None, None));
        assert!(!oversubscribed(0, 2, None, None), "hosts unknown");
        // A value Open MPI would not take falls through.
        assert!(oversubscribed(4, 2, Some("maybe"), None));
        assert_eq!(mca_bool(" Enabled "), Some(true));
        assert_eq!(mca_bool("n"), Some(false));
        assert_eq!(mca_bool(""), None);
    }
}
