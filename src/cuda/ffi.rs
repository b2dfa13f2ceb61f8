//! The only `unsafe` of the CUDA backend: calls into the host build of
//! `kernels/fused.cu`, the probes for the CUDA libraries, and kernel
//! launches. Callers check every length first ([`super::Hop::check`]); this
//! module adds the alignment checks the C++ code relies on.

#![allow(unsafe_code)]

use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop,
};

use super::Hop;
use crate::error::{Error, Result};

type HostFn = unsafe extern "C" fn(*const c_void, *mut c_void, *mut c_void, u64, c_int, u32, c_int, c_int, *mut c_int);

// Declares each entry point of kernels/fused.cu's host build (build.rs
// links it) with the kernels' one signature, and lists them by name.
macro_rules! host_kernels {
    ($($name:ident)*) => {
        extern "C" {
            $(fn $name(
                recv: *const c_void,
                local: *mut c_void,
                out: *mut c_void,
                n: u64,
                op: c_int,
                avg: u32,
                mine_first: c_int,
                fin: c_int,
                overflow: *mut c_int,
            );)*
        }
        const HOST: &[(&str, HostFn)] = &[$((stringify!($name), $name as HostFn)),*];
    };
}

// One line per (buffer, wire) pair, as RF_KINDS expands in fused.cu.
host_kernels!(
    rf_encode_f32_f32 rf_decode_reduce_encode_f32_f32 rf_decode_reduce_store_encode_f32_f32 rf_decode_store_f32_f32 rf_decode_reduce_f32_f32 rf_exchange_f32_f32
    rf_encode_f32_f16 rf_decode_reduce_encode_f32_f16 rf_decode_reduce_store_encode_f32_f16 rf_decode_store_f32_f16 rf_decode_reduce_f32_f16 rf_exchange_f32_f16
    rf_encode_f32_bf16 rf_decode_reduce_encode_f32_bf16 rf_decode_reduce_store_encode_f32_bf16 rf_decode_store_f32_bf16 rf_decode_reduce_f32_bf16 rf_exchange_f32_bf16
    rf_encode_f16_f16 rf_decode_reduce_encode_f16_f16 rf_decode_reduce_store_encode_f16_f16 rf_decode_store_f16_f16 rf_decode_reduce_f16_f16 rf_exchange_f16_f16
    rf_encode_f16_bf16 rf_decode_reduce_encode_f16_bf16 rf_decode_reduce_store_encode_f16_bf16 rf_decode_store_f16_bf16 rf_decode_reduce_f16_bf16 rf_exchange_f16_bf16
    rf_encode_bf16_f16 rf_decode_reduce_encode_bf16_f16 rf_decode_reduce_store_encode_bf16_f16 rf_decode_store_bf16_f16 rf_decode_reduce_bf16_f16 rf_exchange_bf16_f16
    rf_encode_bf16_bf16 rf_decode_reduce_encode_bf16_bf16 rf_decode_reduce_store_encode_bf16_bf16 rf_decode_store_bf16_bf16 rf_decode_reduce_bf16_bf16 rf_exchange_bf16_bf16
);

/// Runs one kernel's host build over byte slices; returns the overflow flag.
pub(super) fn host(hop: &Hop, n: usize, recv: &[u8], local: &mut [u8], out: &mut [u8]) -> Result<bool> {
    hop.check(n, recv.len(), local.len(), out.len())?;
    let name = hop.kernel_name()?;
    let Some(&(_, f)) = HOST.iter().find(|(k, _)| *k == name) else {
        return Err(Error::Cuda { what: name, detail: "not in the host build".into() });
    };
    // The C++ reads elements through typed pointers.
    let (ws, bs) = (hop.wire.size(), hop.buffer.size());
    // An empty slice is passed as null, so only a non-empty one must be.
    let misaligned = |p: *const u8, len: usize, size: usize| len != 0 && p as usize % size != 0;
    if misaligned(recv.as_ptr(), recv.len(), ws)
        || misaligned(out.as_ptr(), out.len(), ws)
        || misaligned(local.as_ptr(), local.len(), bs)
    {
        return Err(Error::Cuda { what: name, detail: "a slice is not aligned to its element size".into() });
    }
    let ptr = |b: &mut [u8]| if b.is_empty() { std::ptr::null_mut() } else { b.as_mut_ptr() as *mut c_void };
    let recv_ptr = if recv.is_empty() { std::ptr::null() } else { recv.as_ptr() as *const c_void };
    let mut over: c_int = 0;
    // SAFETY: `check` made recv, local and out exactly n wire, n buffer and
    // n wire elements long (or empty, and then null, where the kind does
    // not touch them), they are aligned to their element sizes (checked
    // above), `local` and `out` are exclusive borrows, and the kernel body
    // touches indices 0..n only. It runs synchronously on this thread.
    unsafe {
        f(
            recv_ptr,
            ptr(local),
            ptr(out),
            n as u64,
            hop.op_code(),
            hop.avg_ranks.unwrap_or(0),
            hop.mine_first as c_int,
            hop.fin as c_int,
            &mut over,
        )
    };
    Ok(over != 0)
}

/// Whether libnvrtc can be loaded.
pub(super) fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether NCCL can be loaded.
pub(super) fn nccl_present() -> bool {
    // SAFETY: as above, for libnccl.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be loaded.
pub(super) fn driver_present() -> bool {
    // SAFETY: as above, for libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A device byte range: a buffer and the offset and length in it.
pub(super) type Range<'a> = (&'a CudaSlice<u8>, usize, usize);
/// A device byte range the kernel writes.
pub(super) type RangeMut<'a> = (&'a mut CudaSlice<u8>, usize, usize);

// Where a range lies, checked: its device pointer, and the guard that
// records the stream's use of the buffer once the launch is queued.
fn place<'a>(
    buf_len: usize,
    (off, len): (usize, usize),
    (base, guard): (u64, SyncOnDrop<'a>),
    size: usize,
    name: &dyn Fn() -> String,
) -> Result<(u64, SyncOnDrop<'a>)> {
    if off.checked_add(len).is_none_or(|end| end > buf_len) {
        return Err(Error::Cuda {
            what: name(),
            detail: format!("range {off}+{len} outside a buffer of {buf_len} bytes"),
        });
    }
    let p = base + off as u64;
    if p % size as u64 != 0 {
        return Err(Error::Cuda { what: name(), detail: "a device range is not aligned to its element size".into() });
    }
    Ok((p, guard))
}

/// Launches one kernel on `stream`. Lengths were checked by the caller;
/// this checks the ranges lie inside their buffers and are aligned.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    hop: &Hop,
    cfg: LaunchConfig,
    n: usize,
    recv: Option<Range<'_>>,
    local: RangeMut<'_>,
    out: Option<RangeMut<'_>>,
    overflow: &CudaSlice<i32>,
) -> Result<()> {
    // Named only for an error: a launch formats nothing.
    let name = || hop.kernel_name().unwrap_or_default();
    let (ws, bs) = (hop.wire.size(), hop.buffer.size());
    // cudarc's guards make the stream wait for the last writer (and, for
    // the buffers written here, the last reader) of each buffer on another
    // stream, and record this use when dropped: they live until the launch
    // is queued.
    let recv = match recv {
        Some((b, o, l)) => Some(place(b.len(), (o, l), b.device_ptr(stream), ws, &name)?),
        None => None,
    };
    let (b, o, l) = local;
    let local = place(b.len(), (o, l), b.device_ptr_mut(stream), bs, &name)?;
    let out = match out {
        Some((b, o, l)) => Some(place(b.len(), (o, l), b.device_ptr_mut(stream), ws, &name)?),
        None => None,
    };
    let ptrs = [recv.as_ref().map_or(0, |r| r.0), local.0, out.as_ref().map_or(0, |r| r.0)];
    let (n, op, avg, mine, fin) =
        (n as u64, hop.op_code(), hop.avg_ranks.unwrap_or(0), hop.mine_first as i32, hop.fin as i32);
    let mut args = stream.launch_builder(f);
    args.arg(&ptrs[0]).arg(&ptrs[1]).arg(&ptrs[2]).arg(&n).arg(&op).arg(&avg).arg(&mine).arg(&fin).arg(overflow);
    // SAFETY: the argument list matches the kernels' one signature
    // (three pointers, u64, int, u32, int, int, int*); each pointer is null
    // where the kind does not touch it, or lies with its n elements inside
    // a live allocation of this context (checked above), aligned. The
    // buffers are borrowed for this call and every later use is ordered
    // after the kernel: on the same stream, or through the guards' events.
    let launched = unsafe { args.launch(cfg) };
    drop((recv, local, out));
    launched.map(|_| ()).map_err(|e| Error::Cuda { what: name(), detail: e.to_string() })
}
