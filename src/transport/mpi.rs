//! Carrier over MPI point-to-point (rsmpi over Open MPI): nonblocking
//! `MPI_Isend`/`MPI_Irecv` on the carrier's own slots, completed by polling
//! `MPI_Test` against a deadline, so no wait can hang.
//!
//! The carrier works on a duplicate of the caller's communicator, so its
//! messages never match the application's own.
//!
//! A lost rank: Open MPI 4.1 reports nothing for a dead peer (its
//! requests stay pending), so the carrier keeps a TCP connection to every
//! peer (`transport::mesh`) that the kernel closes when the peer's process dies.
//! The survivors agree over those connections and go on over the same
//! MPI communicator (point-to-point between live ranks keeps working when
//! `mpirun --enable-recovery` keeps them running), with a map from their
//! new ranks to the MPI ranks and their tags moved past every tag the old
//! carrier used, so a message of the old one can never match.

use std::any::Any;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ::mpi::topology::Communicator as _;
use ::mpi::traits::AsRaw;

use super::agree::agree;
use super::mesh::Mesh;
use super::mpi_ffi::{InFlight, SendComm};
use super::{Deadline, Shrunk, SlotId, Stray, Transport, WaitError};

/// The MPI communicator the carriers of one lineage (the first and the
/// survivors' after each shrink) share.
struct Shared {
    // An Option so Drop can leak it when MPI is already finalised
    // (MPI_Comm_free after MPI_Finalize is an error).
    comm: Option<SendComm>,
    // A call failed on it: messages of that call may still be on their
    // way (sends MPI cannot cancel), so it is never freed.
    spoiled: std::sync::atomic::AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if ::mpi::environment::is_finalized() || self.spoiled.load(std::sync::atomic::Ordering::Relaxed) {
            // Freed, its context id would go to the next communicator made
            // (Open MPI reuses them), and messages of the failed call still
            // in flight to or from it would be delivered there: under
            // Open MPI 4.1 a later MPI_Comm_split_type on the parent then
            // hung (ci/faults.sh forged, over MPI). Kept, they stay
            // unmatched: one communicator per failure. After MPI_Finalize
            // it is too late to touch MPI at all.
            std::mem::forget(self.comm.take());
        }
    }
}

/// One rank's MPI carrier.
pub struct MpiTransport {
    inflight: InFlight,
    shared: Arc<Shared>,
    rank: usize,
    size: usize,
    // Per rank of this carrier: its rank in the MPI communicator (the
    // identity until a shrink).
    mpi_ranks: Vec<usize>,
    // Added to every tag (under the mask): past every tag the carriers
    // before a shrink used.
    tag_base: u32,
    // One past the largest MPI tag this carrier posted: a shrink's mark.
    tag_high: u64,
    // Which shrink made this carrier (0: the first).
    epoch: u64,
    mesh: Option<Mesh>,
    message_bytes: usize,
    tag_mask: u32,
    // Declared last so it drops last: keeps MPI initialised while the
    // communicator is freed.
    _keep_mpi: Option<Arc<dyn Any + Send + Sync>>,
}

impl MpiTransport {
    /// A carrier on a duplicate of `comm`. `keep` (the init guard) is held
    /// so MPI is not finalised while this carrier lives.
    pub fn new<C: ::mpi::traits::Communicator>(comm: &C, keep: Option<Arc<dyn Any + Send + Sync>>) -> Self {
        let comm = comm.duplicate();
        super::mpi_ffi::errors_return(comm.as_raw());
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        // The widest all-ones mask under MPI's tag bound, so tags wrap
        // cleanly (Open MPI: 31 bits; a stray message then aliases a call
        // 2^31 calls later instead of 32768).
        let ub = super::mpi_ffi::tag_ub(comm.as_raw());
        let tag_mask = all_ones_under(ub);
        MpiTransport {
            inflight: InFlight::default(),
            shared: Arc::new(Shared { comm: Some(SendComm(comm)), spoiled: false.into() }),
            rank,
            size,
            mpi_ranks: (0..size).collect(),
            tag_base: 0,
            tag_high: 0,
            epoch: 0,
            mesh: None,
            message_bytes: super::DEFAULT_SLICE_BYTES,
            tag_mask,
            _keep_mpi: keep,
        }
    }

    /// The same, with liveness connections to every peer: a lost peer is
    /// then named within a liveness check, and the survivors can shrink.
    pub(crate) fn with_mesh(mut self, mesh: Mesh) -> Self {
        self.mesh = Some(mesh);
        self
    }

    /// The MPI tag of carrier tag `tag`, noted for a later shrink's mark.
    fn mpi_tag(&mut self, tag: u32) -> u32 {
        let t = tag.wrapping_add(self.tag_base) & self.tag_mask;
        self.tag_high = self.tag_high.max(t as u64 + 1);
        t
    }

    fn mpi_rank(&self, peer: usize) -> Result<usize, String> {
        self.mpi_ranks.get(peer).copied().ok_or_else(|| format!("no peer {peer} among {} ranks", self.size))
    }

    /// The same, slicing by `bytes` where a call does not say (see
    /// [`Transport::message_bytes`]).
    pub fn with_message_bytes(mut self, bytes: usize) -> Self {
        self.message_bytes = bytes;
        self
    }

    fn raw(&self) -> ::mpi::ffi::MPI_Comm {
        self.shared.comm.as_ref().expect("communicator is present until drop").0.as_raw()
    }
}

impl Transport for MpiTransport {
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn message_bytes(&self) -> usize {
        self.message_bytes
    }
    fn tag_mask(&self) -> u32 {
        self.tag_mask
    }

    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String> {
        self.inflight.reserve(count, bytes);
        Ok(())
    }
    fn slot_bytes(&self) -> usize {
        self.inflight.slot_bytes()
    }
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        debug_assert!(!self.inflight.is_posted(id), "slot {id} written while in flight");
        self.inflight.pool().get_mut(id)
    }
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.inflight.pool().pair(a, b)
    }
    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        let (comm, peer, tag) = (self.raw(), self.mpi_rank(peer)?, self.mpi_tag(tag));
        self.inflight.send(id, len, peer, tag, comm)
    }
    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        let (comm, peer, tag) = (self.raw(), self.mpi_rank(peer)?, self.mpi_tag(tag));
        self.inflight.recv(id, peer, tag, comm)
    }

    // 64 polls between yields, however many ranks share the cores: each
    // MPI_Test drives Open MPI's progress engine, which yields the core
    // itself when idle wherever `super::polls_per_yield` would yield every
    // poll (its `mpi_yield_when_idle`). Yielding here as well measured
    // slower on ci/netsim.sh (2026-11-26, 4 runs each, 8 hosts on 2
    // cores: 8 B doubling 339 against 289 us, hd 707 against 496).
    //
    // A receive that has waited 64 polls also probes for a message of an
    // earlier call from its peer (see `Stray`): one that would never
    // match, such as a late abort notice, must not leave it waiting out
    // its deadline.
    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError> {
        let (comm, mask) = (self.raw(), self.tag_mask);
        let mpi_peer = self.inflight.peer_of(id);
        let (inflight, mpi_ranks, mesh, base) = (&mut self.inflight, &self.mpi_ranks, &self.mesh, self.tag_base);
        let mut polls = 0u32;
        let poll = || {
            polls = polls.wrapping_add(1);
            if polls % 64 == 0 {
                if let Some(s) = inflight.stray(id, comm, mask).map_err(WaitError::Failed)? {
                    if super::is_behind(s.tag, base, mask) {
                        // Of a carrier before the shrink that made this one
                        // (the failed call's messages, its abort notices):
                        // nothing of this carrier's calls, and no news.
                        tracing::debug!("dropped a message of the carrier before the shrink (tag {})", s.tag);
                        return Ok(None);
                    }
                    // Named by its rank in this carrier.
                    let peer = mpi_ranks.iter().position(|&r| r == s.peer).unwrap_or(s.peer);
                    return Err(WaitError::Stray(Stray { peer, ..s }));
                }
            }
            inflight.test(id).map_err(WaitError::Failed)
        };
        // Only for a wait that lasts: the peer by its rank in this carrier.
        let lost = || {
            let p = mpi_ranks.iter().position(|&r| Some(r) == mpi_peer)?;
            mesh.as_ref()?.lost(p).map(|how| (p, how))
        };
        super::poll_until_alive(deadline, abort, 64, poll, lost)
    }

    fn watches_peers(&self) -> bool {
        self.mesh.is_some()
    }

    fn lost_peers(&self) -> Vec<(usize, String)> {
        let Some(mesh) = &self.mesh else { return Vec::new() };
        (0..self.size).filter_map(|p| mesh.lost(p).map(|how| (p, how))).collect()
    }

    fn shrink(&mut self, known: &[usize], deadline: &mut Deadline) -> Result<Shrunk, String> {
        let Some(mut mesh) = self.mesh.take() else {
            return Err(format!(
                "the MPI carrier of {} ranks has no liveness connections (made up to {} ranks), so it cannot tell \
                 who is lost",
                self.size,
                super::mesh::MAX_RANKS
            ));
        };
        let (me, n, epoch) = (self.rank, self.size, self.epoch + 1);
        let lost = (0..n).map(|p| known.contains(&p)).collect();
        let decided = agree(&mut mesh, me, epoch, lost, self.tag_high, deadline);
        let decided = match decided {
            Ok(d) => d,
            Err(e) => {
                self.mesh = Some(mesh);
                return Err(e);
            }
        };
        self.cancel_all();
        let members: Vec<usize> = (0..n).filter(|&p| !decided.lost[p]).collect();
        let rank = members.iter().position(|&p| p == me).ok_or("this rank is not a survivor")?;
        let t = MpiTransport {
            inflight: InFlight::default(),
            shared: self.shared.clone(),
            rank,
            size: members.len(),
            mpi_ranks: members.iter().map(|&p| self.mpi_ranks[p]).collect(),
            tag_base: (decided.mark & self.tag_mask as u64) as u32,
            tag_high: decided.mark,
            epoch,
            mesh: Some(mesh.subset(&members)),
            message_bytes: self.message_bytes,
            tag_mask: self.tag_mask,
            _keep_mpi: self._keep_mpi.clone(),
        };
        Ok(Shrunk { transport: Box::new(t), lost: super::agree::indices(&decided.lost) })
    }

    fn cancel_all(&mut self) {
        self.shared.spoiled.store(true, std::sync::atomic::Ordering::Relaxed);
        self.inflight.cancel_all();
    }
}

/// The largest `2^k - 1` that is at most `ub`.
fn all_ones_under(ub: u32) -> u32 {
    let k = 63 - (ub as u64 + 1).leading_zeros();
    ((1u64 << k) - 1) as u32
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        if ::mpi::environment::is_finalized() {
            // Too late to touch MPI; leak the handles rather than crash.
            self.inflight.leak();
            return;
        }
        self.inflight.cancel_all();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_wrap_at_the_widest_mask_mpi_allows() {
        assert_eq!(super::all_ones_under(32767), 32767, "the standard's least bound");
        assert_eq!(super::all_ones_under(40000), 32767);
        assert_eq!(super::all_ones_under(0x7fff_ffff), 0x7fff_ffff, "Open MPI's");
        assert_eq!(super::all_ones_under(u32::MAX), u32::MAX);
    }
}
