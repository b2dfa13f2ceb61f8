//! Carrier over MPI point-to-point (rsmpi over Open MPI): nonblocking
//! `MPI_Isend`/`MPI_Irecv` on the carrier's own slots, completed by polling
//! `MPI_Test` against a deadline, so no wait can hang.
//!
//! The carrier works on a duplicate of the caller's communicator, so its
//! messages never match the application's own.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use ::mpi::topology::Communicator as _;
use ::mpi::traits::AsRaw;

use super::mpi_ffi::{self, Request, SendComm};
use super::{SlotId, SlotPool, Transport, WaitError};

struct Posted {
    req: Request,
    is_recv: bool,
}

/// One rank's MPI carrier.
pub struct MpiTransport {
    posted: Vec<Option<Posted>>,
    pool: SlotPool,
    // Buffers of requests MPI may still touch; never freed (see `cancel_all`).
    retired: Vec<Vec<u64>>,
    // An Option so Drop can leak it when MPI is already finalised
    // (MPI_Comm_free after MPI_Finalize is an error).
    comm: Option<SendComm>,
    rank: usize,
    size: usize,
    // Declared last so it drops last: keeps MPI initialised while `comm`
    // is freed.
    _keep_mpi: Option<Arc<dyn Any + Send + Sync>>,
}

impl MpiTransport {
    /// A carrier on a duplicate of `comm`. `keep` (the init guard) is held
    /// so MPI is not finalised while this carrier lives.
    pub fn new<C: ::mpi::traits::Communicator>(comm: &C, keep: Option<Arc<dyn Any + Send + Sync>>) -> Self {
        let comm = comm.duplicate();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        MpiTransport { posted: Vec::new(), pool: SlotPool::default(), retired: Vec::new(), comm: Some(SendComm(comm)), rank, size, _keep_mpi: keep }
    }

    fn raw(&self) -> ::mpi::ffi::MPI_Comm {
        self.comm.as_ref().expect("communicator is present until drop").0.as_raw()
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn reserve(&mut self, count: usize, bytes: usize) {
        debug_assert!(self.posted.iter().all(Option::is_none), "reserve with requests in flight");
        self.pool.reserve(count, bytes);
        self.posted.resize_with(count.max(self.posted.len()), || None);
    }
    fn slot_bytes(&self) -> usize {
        self.pool.bytes()
    }
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        debug_assert!(self.posted[id].is_none(), "slot {id} written while in flight");
        self.pool.get_mut(id)
    }
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.pool.pair(a, b)
    }

    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        let buf = self.pool.get_mut(id);
        assert!(len <= buf.len());
        // SAFETY: the slot stays in the pool, untouched, until wait() sees
        // the request complete, or cancel_all() retires it.
        let req = unsafe { mpi_ffi::isend(buf.as_ptr(), len, peer, tag, self.raw())? };
        self.posted[id] = Some(Posted { req, is_recv: false });
        Ok(())
    }

    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        let buf = self.pool.get_mut(id);
        // SAFETY: as for post_send.
        let req = unsafe { mpi_ffi::irecv(buf.as_mut_ptr(), buf.len(), peer, tag, self.raw())? };
        self.posted[id] = Some(Posted { req, is_recv: true });
        Ok(())
    }

    fn wait(&mut self, id: SlotId, deadline: Instant) -> Result<usize, WaitError> {
        let posted = self.posted[id].as_mut().ok_or_else(|| WaitError::Failed(format!("slot {id} has nothing posted")))?;
        let mut polls = 0u32;
        loop {
            if let Some(n) = mpi_ffi::test(&mut posted.req).map_err(WaitError::Failed)? {
                self.posted[id] = None;
                return Ok(n);
            }
            polls = polls.wrapping_add(1);
            // Polling drives Open MPI's progress engine, so spin; but yield
            // now and then, so oversubscribed ranks (more ranks than cores)
            // let their peers run.
            if polls % 64 == 0 {
                if Instant::now() >= deadline {
                    return Err(WaitError::Timeout);
                }
                std::thread::yield_now();
            }
        }
    }

    fn cancel_all(&mut self) {
        for id in 0..self.posted.len() {
            if let Some(p) = self.posted[id].take() {
                if !mpi_ffi::cancel_and_free(p.req, p.is_recv) {
                    // MPI may still read or write this buffer: keep it alive
                    // for the life of the process.
                    let old = self.pool.retire(id);
                    self.retired.push(old);
                }
            }
        }
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        if ::mpi::environment::is_finalized() {
            // Too late to touch MPI; leak the handles rather than crash.
            std::mem::forget(std::mem::take(&mut self.posted));
            std::mem::forget(self.comm.take());
            return;
        }
        self.cancel_all();
        std::mem::forget(std::mem::take(&mut self.retired));
    }
}
