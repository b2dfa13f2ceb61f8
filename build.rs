//! Builds the CUDA kernels' companions when feature `cuda` is on:
//!
//! - the host build of `kernels/fused.cu` (C++, `RF_HOST`), linked in so
//!   that tests check the kernels' own code bit for bit against the Rust
//!   host path on any machine;
//! - PTX from `nvcc` when one is installed (`NVCC`, `$CUDA_PATH/bin`, or
//!   `PATH`); without it the library compiles the same source with NVRTC
//!   at first use, so the crate builds with no CUDA toolkit at all.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: &str = "kernels/fused.cu";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ringfuse_nvcc_ptx)");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo::rerun-if-changed={KERNELS}");
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_PATH");
    host_build();
    nvcc_ptx();
}

#[cfg(feature = "cuda")]
fn host_build() {
    cc::Build::new()
        .cpp(true)
        // The file is CUDA C++ written to also be plain C++ under RF_HOST.
        .flag("-xc++")
        .flag("-std=c++17")
        .define("RF_HOST", None)
        .opt_level(2)
        .warnings(true)
        .file(KERNELS)
        .compile("ringfuse_kernels_host");
}

#[cfg(not(feature = "cuda"))]
fn host_build() {}

fn nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(p.into());
    }
    if let Some(root) = env::var_os("CUDA_PATH") {
        let p = Path::new(&root).join("bin/nvcc");
        if p.exists() {
            return Some(p);
        }
    }
    env::var_os("PATH").and_then(|paths| env::split_paths(&paths).map(|d| d.join("nvcc")).find(|p| p.exists()))
}

// compute_80 PTX: the driver JIT-compiles it for any GPU from Ampere on.
fn nvcc_ptx() {
    let Some(nvcc) = nvcc() else {
        println!("cargo::warning=nvcc not found: the CUDA kernels will be compiled by NVRTC at first use");
        return;
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("fused.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-arch=compute_80", "-std=c++17", "--fmad=false", "-o"])
        .arg(&out)
        .arg(KERNELS)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=ringfuse_nvcc_ptx"),
        other => println!(
            "cargo::warning={} failed ({other:?}); NVRTC will compile the kernels at first use",
            nvcc.display()
        ),
    }
}
