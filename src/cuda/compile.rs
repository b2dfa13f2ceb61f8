//! PTX for the kernels: `nvcc`'s from build time where there was one,
//! otherwise NVRTC's, compiled from [`super::SOURCE`] for the device.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::ffi;
use crate::error::{Error, Result};

/// The architectures CI compiles the kernels for (Ampere and Hopper).
pub const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// Whether NVRTC can be loaded here (`libnvrtc.so.13` on the loader path).
pub fn nvrtc_available() -> bool {
    ffi::nvrtc_present()
}

/// Compiles the kernels with NVRTC for `arch` (`sm_90`, `compute_80`, ...).
///
/// `--fmad=false` keeps `a * b` and `a + b` two roundings, as on the host;
/// division is IEEE (`--prec-div=true`) and subnormals are kept
/// (`--ftz=false`), NVRTC's defaults, spelled out because the results
/// must match the host bit for bit.
pub fn compile_ptx(arch: &'static str) -> Result<Ptx> {
    let what = || format!("nvrtc {arch}");
    if !ffi::nvrtc_present() {
        return Err(Error::Cuda {
            what: what(),
            detail: "libnvrtc not found: install CUDA 13's NVRTC (pip install nvidia-cuda-nvrtc==13.0.*) and put its lib directory on LD_LIBRARY_PATH".into(),
        });
    }
    let opts = CompileOptions {
        arch: Some(arch),
        fmad: Some(false),
        prec_div: Some(true),
        ftz: Some(false),
        options: vec!["--std=c++17".into()],
        name: Some("fused.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(super::SOURCE, opts).map_err(|e| Error::Cuda { what: what(), detail: e.to_string() })
}

/// The PTX a device of compute capability `major.minor` runs: `nvcc`'s
/// from the build when there was one (compute_80, JIT-compiled by the
/// driver), else NVRTC's for the device itself.
pub(super) fn ptx_for(major: i32, minor: i32) -> Result<Ptx> {
    #[cfg(ringfuse_nvcc_ptx)]
    {
        let _ = (major, minor);
        return Ok(Ptx::from_src(include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"))));
    }
    #[cfg(not(ringfuse_nvcc_ptx))]
    compile_ptx(arch_name(major, minor))
}

// NVRTC takes a &'static str; an unlisted device gets compute_80 PTX,
// which its driver JIT-compiles.
#[cfg(not(ringfuse_nvcc_ptx))]
fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        _ => "compute_80",
    }
}
