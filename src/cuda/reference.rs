//! The CPU backend's allreduce on byte buffers: what the device paths
//! must equal bit for bit.

use std::time::Duration;

use half::{bf16, f16};

use super::codec_for;
use crate::element::{DType, Element, ReduceOp};
use crate::error::{Error, Result};
use crate::schedule::Algorithm;
use crate::AllreduceOpts;

/// What the CPU backend gives: in-process ranks (threads over the host
/// executor), one input per rank as the buffer's bytes. Returns each
/// rank's result and whether an encode overflowed the wire (the host's
/// [`Error::WireOverflow`], whose result is kept).
pub fn cpu_allreduce(
    inputs: &[Vec<u8>],
    buffer: DType,
    wire: DType,
    op: ReduceOp,
    algo: Algorithm,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let opts =
        AllreduceOpts::default().codec(codec_for(buffer, wire)?).algorithm(algo).timeout(Duration::from_secs(120));
    match buffer {
        DType::F32 => typed::<f32>(inputs, op, &opts),
        DType::F16 => typed::<f16>(inputs, op, &opts),
        DType::Bf16 => typed::<bf16>(inputs, op, &opts),
        DType::F64 => typed::<f64>(inputs, op, &opts),
    }
}

fn typed<E: Element>(inputs: &[Vec<u8>], op: ReduceOp, opts: &AllreduceOpts) -> Result<(Vec<Vec<u8>>, bool)> {
    let results = crate::local::run(inputs.len(), |comm| host_allreduce::<E>(&comm, &inputs[comm.rank()], op, opts));
    let mut overflow = false;
    let mut out = Vec::with_capacity(results.len());
    for (bytes, r) in results {
        match r {
            Ok(()) => {}
            Err(Error::WireOverflow { .. }) => overflow = true,
            Err(e) => return Err(e),
        }
        out.push(bytes);
    }
    Ok((out, overflow))
}

/// The host executor's allreduce on `comm` of `bytes` (this rank's
/// buffer of `E`), with `opts`: the result's bytes and how it ended.
pub(crate) fn host_allreduce<E: Element>(
    comm: &crate::Communicator,
    bytes: &[u8],
    op: ReduceOp,
    opts: &AllreduceOpts,
) -> (Vec<u8>, Result<()>) {
    // Read element by element: the input bytes need not be aligned.
    let mut buf: Vec<E> = bytes.chunks_exact(std::mem::size_of::<E>()).map(bytemuck::pod_read_unaligned).collect();
    let r = comm.allreduce_with(&mut buf, op, opts);
    (bytemuck::cast_slice::<E, u8>(&buf).to_vec(), r)
}

/// [`host_allreduce`] for a buffer of `dtype` elements.
#[cfg(test)]
pub(crate) fn host_allreduce_of(
    comm: &crate::Communicator,
    bytes: &[u8],
    dtype: DType,
    op: ReduceOp,
    opts: &AllreduceOpts,
) -> (Vec<u8>, Result<()>) {
    match dtype {
        DType::F32 => host_allreduce::<f32>(comm, bytes, op, opts),
        DType::F16 => host_allreduce::<f16>(comm, bytes, op, opts),
        DType::Bf16 => host_allreduce::<bf16>(comm, bytes, op, opts),
        DType::F64 => host_allreduce::<f64>(comm, bytes, op, opts),
    }
}

/// The first element where `got` and `want` (results of `dtype`
/// elements) differ other than by NaN payload. Where both operands of an
/// operation are NaN, the host's payload depends on the order its
/// compiler gave the operands, so there only "a quiet NaN" is promised
/// (kernels/README.md); everywhere else the bits must be equal.
pub fn first_difference(got: &[u8], want: &[u8], dtype: DType) -> Option<usize> {
    if got.len() != want.len() {
        return Some(got.len().min(want.len()) / dtype.size());
    }
    let nan = |b: &[u8]| match dtype {
        DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_nan(),
        DType::F64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])).is_nan(),
        DType::F16 => f16::from_le_bytes([b[0], b[1]]).is_nan(),
        DType::Bf16 => bf16::from_le_bytes([b[0], b[1]]).is_nan(),
    };
    let w = dtype.size();
    got.chunks(w).zip(want.chunks(w)).position(|(g, e)| g != e && !(nan(g) && nan(e)))
}
