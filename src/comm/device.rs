//! Allreduce of device buffers (feature `cuda`): the host-staged carrier
//! over this communicator's transport ([`crate::cuda::StagedRank`]).

use cudarc::driver::CudaSlice;

use super::*;
use crate::cuda::staged::{RankMemory, StagedHops};
use crate::cuda::staged_rank::StagedCall;
use crate::cuda::walk::{self, Call};
use crate::cuda::{codec_for, StagedRank, PAIRS};

impl Communicator {
    /// Allreduce of `buf` (this rank's device buffer of `dtype` elements)
    /// in place, over this communicator's carrier: the fused kernels run on
    /// the device and each message is staged through host memory already
    /// encoded. Every rank ends with the bits [`Self::allreduce_with`] gives
    /// on the same inputs and options. f32, f16 and bf16 buffers; codecs
    /// `Native`, `Fp16` and `Bf16`.
    /// A message is a whole schedule block unless `opts.slice_bytes` is
    /// set; either way the messages go in the host executor's order.
    pub fn allreduce_device(
        &self,
        rank: &mut StagedRank<'_>,
        buf: &mut CudaSlice<u8>,
        dtype: DType,
        op: ReduceOp,
        opts: &AllreduceOpts,
    ) -> Result<()> {
        let count = buf.len() / dtype.size();
        if buf.len() % dtype.size() != 0 {
            let desc = self.device_desc(dtype, count, op, opts);
            let detail = format!("a device buffer of {} bytes is not whole {dtype} elements", buf.len());
            return Err(Error::Unsupported { rank: self.rank, op: desc, detail });
        }
        self.allreduce_staged(&mut StagedCall { rank, buf }, dtype, count, op, opts)
    }

    fn device_desc(&self, dtype: DType, count: usize, op: ReduceOp, opts: &AllreduceOpts) -> OpDesc {
        self.desc_of(Collective::Allreduce, dtype, count, Some(op), None, opts)
    }

    /// [`Self::allreduce_device`] on any rank memory (the tests run it on
    /// the kernels' host build).
    pub(crate) fn allreduce_staged<M: RankMemory>(
        &self,
        mem: &mut M,
        dtype: DType,
        count: usize,
        op: ReduceOp,
        opts: &AllreduceOpts,
    ) -> Result<()> {
        let desc0 = self.device_desc(dtype, count, op, opts);
        let wire = opts.codec.wire_dtype(dtype);
        let unsupported = |detail: String| Err(Error::Unsupported { rank: self.rank, op: desc0.clone(), detail });
        if codec_for(dtype, wire).ok() != Some(opts.codec) || !PAIRS.contains(&(dtype, wire)) {
            return unsupported(format!("no device kernels for {dtype} buffers with codec {}", opts.codec));
        }
        opts.check_bounds(self.rank)?;
        let mut st = self.lock(&desc0)?;
        let desc = self.device_desc(dtype, count, op, opts);
        self.seq.fetch_add(1, Ordering::Relaxed);
        // The host's algorithm and shape for this very call: the device
        // walks the schedule allreduce_with would.
        let algo = self.algorithm_for(opts, dtype, count);
        let call = Call { size: self.size, count, buffer: dtype, wire, op, algo, shape: self.shape(opts, dtype) };
        let sched = walk::schedule_of(&call, self.rank);
        self.flight.begin(&desc, sched.len());
        if self.size == 1 || count == 0 {
            self.flight.end(desc.seq, None);
            return Ok(());
        }
        // Whole blocks unless the call asks for slices: each message costs
        // two waits for the device (the copy down, the overflow flag), and
        // on an H100 (2026-11-26) 256 KiB slices made a 256 MiB call 1.5x
        // slower over threads and 12x slower under mpirun with 4 processes
        // on the one GPU (docs/results/gpu-h100.md).
        let slice =
            if opts.slice_bytes == 0 { count.max(1) } else { opts.slice_elems_or(dtype, st.transport.message_bytes()) };
        let State { transport, scratch, .. } = &mut *st;
        let mut cx = Ctx {
            t: transport.as_mut(),
            desc: &desc,
            timeout: opts.timeout,
            slice,
            slots: opts.slots,
            per_round: opts.slots,
            abort: &self.aborted,
            scratch,
            checksum: opts.checksum,
            verify_calls: opts.verify_calls,
            agreed: super::call::agreed(sched.code(), opts, slice),
            flight: &self.flight,
        };
        let r = match exec::run(&mut cx, &mut StagedHops::new(mem, call), &sched) {
            Ok(flags) if flags & crate::wire::FLAG_OVERFLOW != 0 && opts.codec != Codec::Native => {
                Err(Error::WireOverflow { rank: self.rank, op: desc.clone() })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.finish(&mut st, &desc, r)
    }
}
