//! Carrier over MPI point-to-point (rsmpi over Open MPI): nonblocking
//! `MPI_Isend`/`MPI_Irecv` on the carrier's own slots, completed by polling
//! `MPI_Test` against a deadline, so no wait can hang.
//!
//! The carrier works on a duplicate of the caller's communicator, so its
//! messages never match the application's own.

use std::any::Any;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ::mpi::topology::Communicator as _;
use ::mpi::traits::AsRaw;

use super::mpi_ffi::{InFlight, SendComm};
use super::{Deadline, SlotId, Transport, WaitError};

/// One rank's MPI carrier.
pub struct MpiTransport {
    inflight: InFlight,
    // An Option so Drop can leak it when MPI is already finalised
    // (MPI_Comm_free after MPI_Finalize is an error).
    comm: Option<SendComm>,
    rank: usize,
    size: usize,
    message_bytes: usize,
    tag_mask: u32,
    // A call failed on this carrier: messages of it may still be on their
    // way (sends MPI cannot cancel), so the communicator is never freed.
    spoiled: bool,
    // Declared last so it drops last: keeps MPI initialised while `comm`
    // is freed.
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
            comm: Some(SendComm(comm)),
            rank,
            size,
            message_bytes: super::DEFAULT_SLICE_BYTES,
            tag_mask,
            spoiled: false,
            _keep_mpi: keep,
        }
    }

    /// The same, slicing by `bytes` where a call does not say (see
    /// [`Transport::message_bytes`]).
    pub fn with_message_bytes(mut self, bytes: usize) -> Self {
        self.message_bytes = bytes;
        self
    }

    fn raw(&self) -> ::mpi::ffi::MPI_Comm {
        self.comm.as_ref().expect("communicator is present until drop").0.as_raw()
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
        let comm = self.raw();
        self.inflight.send(id, len, peer, tag, comm)
    }
    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        let comm = self.raw();
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
        let mut polls = 0u32;
        super::poll_until(deadline, abort, 64, || {
            polls = polls.wrapping_add(1);
            if polls % 64 == 0 {
                if let Some(s) = self.inflight.stray(id, comm, mask).map_err(WaitError::Failed)? {
                    return Err(WaitError::Stray(s));
                }
            }
            self.inflight.test(id).map_err(WaitError::Failed)
        })
    }

    fn cancel_all(&mut self) {
        self.spoiled = true;
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
            std::mem::forget(self.comm.take());
            return;
        }
        self.inflight.cancel_all();
        if self.spoiled {
            // Freed, its context id would go to the next communicator made
            // (Open MPI reuses them), and messages of the failed call still
            // in flight to or from it would be delivered there: under
            // Open MPI 4.1 a later MPI_Comm_split_type on the parent then
            // hung (ci/faults.sh forged, over MPI). Kept, they stay
            // unmatched: one communicator per failure.
            std::mem::forget(self.comm.take());
        }
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
