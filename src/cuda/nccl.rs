//! NCCL, loaded at run time through cudarc's bindings: ringfuse builds,
//! tests and runs without it, and says so plainly where it is asked for
//! and missing. The NCCL carrier builds on this once the executor has its
//! device backend.

use crate::error::{Error, Result};

/// What to do where NCCL does not load. cudarc looks for `libnccl.so`
/// (and CUDA-versioned names), which only development installs carry;
/// NVIDIA's wheel and the `libnccl2` package ship `libnccl.so.2` alone.
const MISSING: &str = "libnccl.so not found on the loader path: install NCCL \
    (pip install nvidia-nccl-cu13, or the libnccl2 package), link libnccl.so to its libnccl.so.2 \
    and put that directory on LD_LIBRARY_PATH";

/// A version of NCCL, as `ncclGetVersion` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NcclVersion {
    /// Major version (2 for every NCCL in use).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl NcclVersion {
    /// From `ncclGetVersion`'s code: `major * 10000 + minor * 100 + patch`
    /// since NCCL 2.9, `major * 1000 + minor * 100 + patch` before.
    pub fn from_code(code: u32) -> NcclVersion {
        let (major, rest) = if code >= 10000 { (code / 10000, code % 10000) } else { (code / 1000, code % 1000) };
        NcclVersion { major, minor: rest / 100, patch: rest % 100 }
    }
}

impl std::fmt::Display for NcclVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version of the NCCL this process loads: it needs no GPU.
///
/// # Errors
/// [`Error::Cuda`] naming `libnccl.so` and how to install it where the
/// library is not on the loader path.
pub fn nccl_version() -> Result<NcclVersion> {
    let what = || "NCCL".to_string();
    if !super::ffi::nccl_present() {
        return Err(Error::Cuda { what: what(), detail: MISSING.into() });
    }
    let code = cudarc::nccl::result::get_nccl_version()
        .map_err(|e| Error::Cuda { what: "ncclGetVersion".into(), detail: format!("{e:?}") })?;
    let code = u32::try_from(code).map_err(|_| Error::Cuda { what: what(), detail: format!("version code {code}") })?;
    Ok(NcclVersion::from_code(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_codes_read_as_nccl_writes_them() {
        assert_eq!(NcclVersion::from_code(23206).to_string(), "2.32.6");
        assert_eq!(NcclVersion::from_code(21803).to_string(), "2.18.3");
        assert_eq!(NcclVersion::from_code(2804).to_string(), "2.8.4");
    }

    /// Where NCCL is on the loader path it loads and names its version;
    /// where it is not, the error says what to install. CI runs this both
    /// ways; `RINGFUSE_EXPECT_NCCL=1` (its run with the wheel) makes a
    /// missing NCCL a failure.
    #[test]
    fn nccl_loads_or_is_named_missing() {
        match nccl_version() {
            Ok(v) => {
                assert!(v.major >= 2, "{v}");
                eprintln!("NCCL {v} loaded");
            }
            Err(e) => {
                let said = e.to_string();
                assert!(said.contains("libnccl.so") && said.contains("LD_LIBRARY_PATH"), "{said}");
                assert!(std::env::var_os("RINGFUSE_EXPECT_NCCL").is_none(), "NCCL was expected to load: {said}");
                eprintln!("NCCL not loaded, as expected here: {said}");
            }
        }
    }
}
