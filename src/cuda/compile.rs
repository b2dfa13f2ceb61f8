//! PTX for the kernels: `nvcc`'s from build time where there was one,
//! otherwise NVRTC's, compiled from [`super::SOURCE`] for the device.

use std::path::{Path, PathBuf};

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

/// NVRTC's PTX kept on disk, one file per source version and
/// architecture: compiling every kernel takes NVRTC about 15 s, reading
/// the file a millisecond. Files are written whole and renamed into place,
/// so ranks starting together on one host never read half a file.
pub struct PtxCache {
    dir: Option<PathBuf>,
}

impl PtxCache {
    /// `$RINGFUSE_CACHE_DIR`, else `$XDG_CACHE_HOME/ringfuse`, else
    /// `~/.cache/ringfuse`; no cache if none is set.
    pub fn default_dir() -> PtxCache {
        let env = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = env("RINGFUSE_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("ringfuse")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/ringfuse")));
        PtxCache { dir }
    }

    /// A cache in `dir`.
    pub fn at(dir: &Path) -> PtxCache {
        PtxCache { dir: Some(dir.to_path_buf()) }
    }

    /// Where `arch`'s PTX of this source lives, if there is a cache.
    pub fn path(&self, arch: &str) -> Option<PathBuf> {
        let key = crc32c::crc32c(super::SOURCE.as_bytes());
        self.dir.as_ref().map(|d| d.join(format!("fused-{key:08x}-{arch}.ptx")))
    }

    /// The cached PTX for `arch`, or NVRTC's, which is then cached. A cache
    /// that cannot be read or written only costs the compile.
    pub fn get(&self, arch: &'static str) -> Result<Ptx> {
        let path = self.path(arch);
        if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            if text.contains(".entry") {
                return Ok(Ptx::from_src(text));
            }
        }
        let ptx = compile_ptx(arch)?;
        if let Some(p) = path {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            let written = p
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&tmp, ptx.to_src()))
                .and_then(|_| std::fs::rename(&tmp, &p));
            if let Err(e) = written {
                tracing::debug!("ptx cache {}: {e}", p.display());
            }
        }
        Ok(ptx)
    }
}

/// The PTX a device of compute capability `major.minor` runs: `nvcc`'s
/// from the build when there was one (compute_80, JIT-compiled by the
/// driver), else NVRTC's for the device itself, through the cache.
pub(super) fn ptx_for(major: i32, minor: i32) -> Result<Ptx> {
    #[cfg(ringfuse_nvcc_ptx)]
    {
        let _ = (major, minor);
        return Ok(Ptx::from_src(include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"))));
    }
    #[cfg(not(ringfuse_nvcc_ptx))]
    PtxCache::default_dir().get(arch_name(major, minor))
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
