//! One process's rank of a host-staged device allreduce: the device, a
//! stream, and the device ends of its messages ([`super::staged`]).

use cudarc::driver::CudaSlice;

use super::device::{err, Lane};
use super::staged::RankMemory;
use super::{Device, Hop};
use super::{Src, ALIGN};
use crate::error::Result;

/// This process's rank of allreduces of device buffers over a
/// communicator's carrier (MPI, shared memory, threads):
/// [`crate::Communicator::allreduce_device`]. Keep one per communicator;
/// its message buffers are sized once and reused.
pub struct StagedRank<'d> {
    dev: &'d Device,
    lane: Lane,
    inbox: CudaSlice<u8>,
    out: CudaSlice<u8>,
}

impl<'d> StagedRank<'d> {
    /// A rank on `dev`, with a stream of its own.
    pub fn new(dev: &'d Device) -> Result<StagedRank<'d>> {
        let lane = dev.new_lane()?;
        let alloc = || lane.stream().alloc_zeros::<u8>(ALIGN).map_err(err("message buffers"));
        let (inbox, out) = (alloc()?, alloc()?);
        Ok(StagedRank { dev, lane, inbox, out })
    }

    /// The stream its kernels and copies run on: upload the buffer on it
    /// (or order the buffer's producer before it).
    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    /// Copies `bytes` to a new device buffer on this rank's stream.
    pub fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        self.lane.stream().clone_htod(bytes).map_err(err("upload"))
    }

    /// Copies `buf` back once this rank's stream has finished.
    pub fn download(&self, buf: &CudaSlice<u8>) -> Result<Vec<u8>> {
        self.lane.stream().clone_dtoh(buf).map_err(err("download"))
    }
}

/// One call: the rank and the caller's buffer.
pub(crate) struct StagedCall<'a, 'd> {
    pub rank: &'a mut StagedRank<'d>,
    pub buf: &'a mut CudaSlice<u8>,
}

impl RankMemory for StagedCall<'_, '_> {
    fn prepare(&mut self, bytes: usize) -> Result<()> {
        let r = &mut *self.rank;
        if r.inbox.len() < bytes {
            r.inbox = r.lane.stream().alloc_zeros::<u8>(bytes).map_err(err("message buffers"))?;
            r.out = r.lane.stream().alloc_zeros::<u8>(bytes).map_err(err("message buffers"))?;
        }
        Ok(())
    }

    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        let r = &mut *self.rank;
        r.dev.hop_src(&r.lane, hop, n, recv, (&mut *self.buf, at * hop.buffer.size()), &r.inbox, &mut r.out)
    }

    fn stage_out(&mut self, src: Src, dst: &mut [u8]) -> Result<()> {
        let r = &*self.rank;
        let n = dst.len();
        // Into pageable memory, so the copy has finished when this returns.
        match src {
            Src::Out => r.lane.stream().memcpy_dtoh(&r.out.slice(..n), dst),
            Src::Inbox(o) => r.lane.stream().memcpy_dtoh(&r.inbox.slice(o..o + n), dst),
        }
        .map_err(err("copy to the host"))
    }

    fn stage_in(&mut self, src: &[u8]) -> Result<()> {
        let r = &mut *self.rank;
        r.lane.stream().memcpy_htod(src, &mut r.inbox.slice_mut(..src.len())).map_err(err("copy to the device"))
    }

    fn take_overflow(&mut self) -> Result<bool> {
        self.rank.lane.take_overflow()
    }
}
