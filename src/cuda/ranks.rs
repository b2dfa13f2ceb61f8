//! In-process ranks on one GPU: each rank a stream of its own, messages
//! device-to-device copies, ordered by events. The whole device path
//! (schedules, fused kernels, message order) runs on a single-GPU machine
//! and is checked bit for bit against the CPU backend there.

use cudarc::driver::{CudaEvent, CudaSlice};

use super::device::{err, Lane};
use super::walk::{self, Call, Lanes};
use super::Src;
use super::{codec_for, Device, Hop, PAIRS};
use crate::codec::Codec;
use crate::element::{DType, ReduceOp};
use crate::error::{Error, Result};
use crate::op::{Collective, OpDesc};
use crate::schedule::Algorithm;

/// `size` in-process ranks on one [`Device`].
///
/// ```no_run
/// # fn main() -> ringfuse::Result<()> {
/// use ringfuse::cuda::{Device, DeviceRanks};
/// let mut ranks = DeviceRanks::new(Device::open(0)?, 4)?;
/// let input: Vec<u8> = 1.5f32.to_le_bytes().repeat(1000);
/// let mut bufs = (0..4).map(|r| ranks.upload(r, &input)).collect::<ringfuse::Result<Vec<_>>>()?;
/// ranks.allreduce(&mut bufs, ringfuse::DType::F32, ringfuse::Codec::Fp16, ringfuse::ReduceOp::Sum, ringfuse::Algorithm::Ring)?;
/// assert_eq!(ranks.download(0, &bufs[0])?[..4], 6.0f32.to_le_bytes());
/// # Ok(()) }
/// ```
pub struct DeviceRanks {
    dev: Device,
    lanes: Vec<Lane>,
    outs: Vec<CudaSlice<u8>>,
    inboxes: Vec<CudaSlice<u8>>,
    /// Events kept from call to call (creating one per message cost a
    /// driver call each): the first `used` mark this call's messages and
    /// the end of each lane. Recording one again leaves the waits issued on
    /// it before as they were (CUDA's `cuStreamWaitEvent`).
    events: Vec<CudaEvent>,
    used: usize,
    seq: u64,
}

impl DeviceRanks {
    /// `size` ranks on `dev`, each with a stream of its own.
    pub fn new(dev: Device, size: usize) -> Result<DeviceRanks> {
        if size == 0 {
            return Err(Error::Cuda { what: format!("{}: ranks", dev.name()), detail: "no ranks asked for".into() });
        }
        let lanes = (0..size).map(|_| dev.new_lane()).collect::<Result<Vec<_>>>()?;
        let alloc = |l: &Lane| l.stream().alloc_zeros::<u8>(super::ALIGN).map_err(err("rank buffers"));
        let outs = lanes.iter().map(alloc).collect::<Result<Vec<_>>>()?;
        let inboxes = lanes.iter().map(alloc).collect::<Result<Vec<_>>>()?;
        Ok(DeviceRanks { dev, lanes, outs, inboxes, events: Vec::new(), used: 0, seq: 0 })
    }

    /// Records the work queued so far on `rank`'s stream in the next free
    /// event; returns its index.
    fn mark(&mut self, rank: usize) -> Result<usize> {
        let what = || format!("rank {rank}: event");
        let stream = self.lanes[rank].stream();
        match self.events.get(self.used) {
            Some(e) => e.record(stream).map_err(err(what()))?,
            None => self.events.push(stream.record_event(None).map_err(err(what()))?),
        }
        self.used += 1;
        Ok(self.used - 1)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// How many ranks.
    pub fn size(&self) -> usize {
        self.lanes.len()
    }

    /// Copies `bytes` to a new buffer of rank `rank` (on its stream).
    pub fn upload(&self, rank: usize, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        self.lane(rank)?.stream().clone_htod(bytes).map_err(err(format!("rank {rank}: upload")))
    }

    /// Copies rank `rank`'s buffer back, once its stream has finished.
    pub fn download(&self, rank: usize, buf: &CudaSlice<u8>) -> Result<Vec<u8>> {
        self.lane(rank)?.stream().clone_dtoh(buf).map_err(err(format!("rank {rank}: download")))
    }

    /// Waits for every rank's stream.
    pub fn synchronize(&self) -> Result<()> {
        for (r, l) in self.lanes.iter().enumerate() {
            l.stream().synchronize().map_err(err(format!("rank {r}: synchronize")))?;
        }
        Ok(())
    }

    fn lane(&self, rank: usize) -> Result<&Lane> {
        self.lanes.get(rank).ok_or_else(|| Error::Cuda {
            what: format!("rank {rank}"),
            detail: format!("there are {} ranks", self.lanes.len()),
        })
    }

    /// Allreduce of `bufs[r]` (rank `r`'s buffer of `dtype` elements) in
    /// place, with `codec`'s wire, `op` and `algo` (resolved as the host
    /// does: the ring where `algo` does not support the buffer and codec).
    /// Every rank ends with the bits the CPU backend gives on the same
    /// inputs ([`super::cpu_allreduce`]).
    ///
    /// Returns once every rank's stream has finished: a codec whose encode
    /// overflowed its wire is [`Error::WireOverflow`] (the buffers hold
    /// the result, infinities included), as on the host.
    pub fn allreduce(
        &mut self,
        bufs: &mut [CudaSlice<u8>],
        dtype: DType,
        codec: Codec,
        op: ReduceOp,
        algo: Algorithm,
    ) -> Result<()> {
        let wire = codec.wire_dtype(dtype);
        let size = self.size();
        let count = bufs.first().map_or(0, |b| b.len() / dtype.size());
        let desc = OpDesc { kind: Collective::Allreduce, seq: self.seq, dtype, count, op: Some(op), codec, root: None };
        self.seq += 1;
        let bad = |detail: String| Error::Cuda { what: format!("{} on {size} device ranks", desc), detail };
        if codec_for(dtype, wire).ok() != Some(codec) || !PAIRS.contains(&(dtype, wire)) {
            return Err(bad(format!("no device kernels for {dtype} buffers with codec {codec}")));
        }
        if bufs.len() != size {
            return Err(bad(format!("{} buffers for {size} ranks", bufs.len())));
        }
        if let Some((r, b)) = bufs.iter().enumerate().find(|(_, b)| b.len() != count * dtype.size()) {
            return Err(bad(format!("rank {r}'s buffer holds {} bytes, rank 0's {}", b.len(), count * dtype.size())));
        }
        let call = Call::in_process(size, count, dtype, wire, op, algo)?;
        self.used = 0;
        let mut lanes = DeviceCall { ranks: self, bufs };
        walk::allreduce(&mut lanes, &call)?;
        let mut overflow = false;
        for l in &mut self.lanes {
            overflow |= l.take_overflow()?;
        }
        if overflow && codec != Codec::Native {
            return Err(Error::WireOverflow { rank: 0, op: desc });
        }
        Ok(())
    }
}

/// One call's view of the ranks: their lanes and scratch, and the
/// caller's buffers.
struct DeviceCall<'a> {
    ranks: &'a mut DeviceRanks,
    bufs: &'a mut [CudaSlice<u8>],
}

impl Lanes for DeviceCall<'_> {
    fn prepare(&mut self, inbox: &[usize], out: &[usize]) -> Result<()> {
        let rk = &mut *self.ranks;
        for (r, lane) in rk.lanes.iter().enumerate() {
            let what = format!("rank {r}: message buffers");
            if rk.inboxes[r].len() < inbox[r] {
                rk.inboxes[r] = lane.stream().alloc_zeros::<u8>(inbox[r]).map_err(err(&what))?;
            }
            if rk.outs[r].len() < out[r] {
                rk.outs[r] = lane.stream().alloc_zeros::<u8>(out[r]).map_err(err(&what))?;
            }
        }
        Ok(())
    }

    fn hop(&mut self, rank: usize, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        let rk = &mut *self.ranks;
        let local = (&mut self.bufs[rank], at * hop.buffer.size());
        rk.dev.hop_src(&rk.lanes[rank], hop, n, recv, local, &rk.inboxes[rank], &mut rk.outs[rank])
    }

    fn send(&mut self, rank: usize, src: Src, to: usize, dst: usize, bytes: usize) -> Result<usize> {
        let rk = &mut *self.ranks;
        let what = || format!("rank {rank}: message to rank {to}");
        let stream = rk.lanes[rank].stream();
        // The walk never sends a rank to itself.
        let (from_inbox, to_inbox) = two(&mut rk.inboxes, rank, to);
        let mut dst = to_inbox.slice_mut(dst..dst + bytes);
        match src {
            Src::Out => stream.memcpy_dtod(&rk.outs[rank].slice(..bytes), &mut dst),
            Src::Inbox(o) => stream.memcpy_dtod(&from_inbox.slice(o..o + bytes), &mut dst),
        }
        .map_err(err(what()))?;
        rk.mark(rank)
    }

    fn accept(&mut self, rank: usize, msg: usize) -> Result<()> {
        let rk = &*self.ranks;
        rk.lanes[rank].stream().wait(&rk.events[msg]).map_err(err(format!("rank {rank}: message {msg}")))
    }

    fn finish(&mut self) -> Result<()> {
        let rk = &mut *self.ranks;
        let first = rk.used;
        for r in 0..rk.lanes.len() {
            rk.mark(r)?;
        }
        for (r, l) in rk.lanes.iter().enumerate() {
            for (q, e) in rk.events[first..rk.used].iter().enumerate() {
                if q != r {
                    l.stream().wait(e).map_err(err(format!("rank {r}: end of call")))?;
                }
            }
        }
        Ok(())
    }
}

/// Elements `a` and `b` (different) of `v`, both mutable.
fn two<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "two() needs two different elements");
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}
