//! The kernel benchmark: each fused hop kernel's bandwidth against a
//! device-to-device copy of the same bytes and against the unfused
//! equivalent (separate decode, reduce and encode launches, as a framework
//! that casts around an unmodified collective runs them), side by side in
//! one run, timed with CUDA events.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaSlice;

use super::device::err;
use super::{Device, Hop, Kind};
use crate::element::{DType, ReduceOp};
use crate::error::Result;

/// One kernel's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelFigure {
    /// The kernel's entry point.
    pub name: String,
    /// Bytes it reads and writes per call.
    pub bytes: usize,
    /// Its bandwidth, counting those bytes, GB/s (1e9).
    #[serde(rename = "GBps")]
    pub gbps: f64,
    /// A device-to-device copy's, counting the bytes it reads and writes,
    /// for a copy of half as many bytes (so the same traffic).
    #[serde(rename = "d2d_GBps")]
    pub d2d_gbps: f64,
    /// `gbps / d2d_gbps`.
    pub ratio_to_d2d: f64,
    /// The unfused launches' time over the fused kernel's, where there is
    /// an unfused equivalent (the reducing kinds).
    pub speedup_vs_unfused: Option<f64>,
}

/// Milliseconds per call of `f` on `dev`'s stream: the best of `rounds`
/// timings of `reps` calls each, after one call to warm up.
fn time(dev: &Device, rounds: usize, reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let s = dev.stream();
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let ev = || s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err("timing event"));
        let t0 = ev()?;
        for _ in 0..reps {
            f()?;
        }
        let t1 = ev()?;
        let ms = t0.elapsed_ms(&t1).map_err(err("timing event"))? as f64;
        best = best.min(ms / reps as f64);
    }
    Ok(best)
}

/// Bytes a hop of `kind` reads and writes over `n` elements.
fn traffic(hop: &Hop, n: usize) -> usize {
    let (w, b) = (n * hop.wire.size(), n * hop.buffer.size());
    let k = hop.kind;
    let reads = if k.reads_recv() { w } else { 0 } + if k == Kind::DecodeStore { 0 } else { b };
    let writes_local =
        matches!(k, Kind::DecodeReduceStoreEncode | Kind::DecodeStore | Kind::DecodeReduce | Kind::Exchange);
    reads + if k.writes_out(hop.fin) { w } else { 0 } + if writes_local { b } else { 0 }
}

fn filled(dev: &Device, bytes: usize, seed: u32) -> Result<CudaSlice<u8>> {
    // Finite values around 1 in either element width: every 16-bit half
    // and every f32 is a normal number, so no kernel takes a special path.
    let word = 0x3c00_3c00u32 ^ (seed & 0x00ff_00ff);
    let data: Vec<u8> = (0..bytes.div_ceil(4))
        .flat_map(|i| (word ^ ((i as u32 & 0x3f) * 0x0001_0001)).to_le_bytes())
        .take(bytes)
        .collect();
    dev.upload(&data)
}

/// Figures for every kernel kind of f32 buffers over the FP16 and BF16
/// wires (and native f32) at `n` elements.
pub fn kernels(dev: &Device, n: usize, rounds: usize, reps: usize) -> Result<Vec<KernelFigure>> {
    let mut figs = Vec::new();
    let big = n * 4;
    let recv = filled(dev, big, 1)?;
    let mut local = filled(dev, big, 2)?;
    let mut out = filled(dev, big, 3)?;
    let mut tmp = filled(dev, big, 4)?;
    // The copy moves half a kernel's traffic each way: at most 16 bytes
    // an element (native f32, read and write both recv/out and local).
    let src = filled(dev, 2 * big, 5)?;
    let mut dst = filled(dev, 2 * big, 6)?;
    for wire in [DType::F16, DType::Bf16, DType::F32] {
        for kind in [Kind::Encode, Kind::DecodeReduceEncode, Kind::DecodeReduceStoreEncode, Kind::DecodeStore] {
            let hop = Hop::new(kind, DType::F32, wire, ReduceOp::Sum);
            let bytes = traffic(&hop, n);
            let fused = time(dev, rounds, reps, &mut || {
                let r = kind.reads_recv().then_some((&recv, 0));
                let o = kind.writes_out(false).then_some((&mut out, 0));
                dev.hop(&hop, n, r, (&mut local, 0), o)
            })?;
            let half = bytes / 2;
            let copy = time(dev, rounds, reps, &mut || {
                dev.stream().memcpy_dtod(&src.slice(..half), &mut dst.slice_mut(..half)).map_err(err("copy"))
            })?;
            let unfused = match kind {
                Kind::DecodeReduceEncode | Kind::DecodeReduceStoreEncode if wire != DType::F32 => {
                    Some(time(dev, rounds, reps, &mut || {
                        unfused(dev, kind, wire, n, &recv, &mut local, &mut tmp, &mut out)
                    })?)
                }
                _ => None,
            };
            let gbps = bytes as f64 / fused / 1e6;
            let d2d_gbps = 2.0 * half as f64 / copy / 1e6;
            figs.push(KernelFigure {
                name: hop.kernel_name()?,
                bytes,
                gbps,
                d2d_gbps,
                ratio_to_d2d: gbps / d2d_gbps,
                speedup_vs_unfused: unfused.map(|u| u / fused),
            });
        }
    }
    dev.stream().synchronize().map_err(err("kernel benchmark"))?;
    Ok(figs)
}

/// The three (or four) launches a framework runs where we run one:
/// decode the received wire slice to f32, add the local slice, encode
/// the sum (and, for the storing kind, decode it back into the buffer).
#[allow(clippy::too_many_arguments)]
fn unfused(
    dev: &Device,
    kind: Kind,
    wire: DType,
    n: usize,
    recv: &CudaSlice<u8>,
    local: &mut CudaSlice<u8>,
    tmp: &mut CudaSlice<u8>,
    out: &mut CudaSlice<u8>,
) -> Result<()> {
    let hop = |k, w| Hop::new(k, DType::F32, w, ReduceOp::Sum);
    // tmp = decode(recv)
    dev.hop(&hop(Kind::DecodeStore, wire), n, Some((recv, 0)), (tmp, 0), None)?;
    // tmp = local + tmp (local read as an f32 "wire")
    dev.hop(&hop(Kind::DecodeReduce, DType::F32), n, Some((&*local, 0)), (tmp, 0), None)?;
    // out = encode(tmp)
    dev.hop(&hop(Kind::Encode, wire), n, None, (tmp, 0), Some((out, 0)))?;
    if kind == Kind::DecodeReduceStoreEncode {
        // local = decode(out)
        dev.hop(&hop(Kind::DecodeStore, wire), n, Some((&*out, 0)), (local, 0), None)?;
    }
    Ok(())
}
