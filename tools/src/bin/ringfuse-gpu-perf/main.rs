//! `ringfuse-gpu-perf`: the GPU figures `ci/gpu.sh` records. The fused
//! kernels against a device-to-device copy and against their unfused
//! equivalents, and an allreduce of in-process ranks on one GPU, each
//! checked bit for bit against the CPU backend on the same inputs. Needs
//! feature `cuda` and a GPU; no MPI.
//!
//! ```text
//! ringfuse-gpu-perf --json docs/results/gpu-h100.json --commit $(git rev-parse --short HEAD)
//! ```

mod allreduce;

use std::process::ExitCode;

use clap::Parser;
use ringfuse::cuda::bench::{self, KernelFigure};
use ringfuse::cuda::Device;
use serde::Serialize;

use allreduce::AllreduceFigure;

#[derive(Parser, Debug)]
#[command(version, about = "GPU kernel and in-process allreduce figures, checked against the CPU backend")]
struct Args {
    /// Write the figures here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// The commit measured (recorded in the JSON).
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// The date measured (recorded in the JSON).
    #[arg(long, default_value = "unknown")]
    date: String,
    /// Device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// In-process ranks on the device.
    #[arg(long, default_value_t = 4)]
    ranks: usize,
    /// Allreduce element counts (f32).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1000, 10007, 1 << 20, 1 << 24, 1 << 26])]
    counts: Vec<usize>,
    /// Kernel benchmark sizes: MiB of the f32 buffer.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 256])]
    kernel_mib: Vec<usize>,
    /// Timed calls per allreduce size.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Only compile the kernels for this architecture (`sm_90`) into the
    /// PTX cache ($RINGFUSE_CACHE_DIR), so that a GPU machine without
    /// NVRTC, or with little time, loads them from there.
    #[arg(long)]
    prepare_ptx: Option<String>,
}

#[derive(Serialize)]
struct Results {
    gpu: String,
    date: String,
    commit: String,
    kernels: Vec<KernelFigure>,
    allreduce: Vec<AllreduceFigure>,
    nccl: &'static str,
}

/// Why there is no NCCL column: said once, in the JSON and the table.
const NO_NCCL: &str = "not measured: NCCL runs one rank per GPU and this machine has one GPU; \
     the NCCL carrier and --baseline nccl need a machine with two or more";

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(arch) = &args.prepare_ptx {
        let Some(&arch) = ringfuse::cuda::ARCHS.iter().find(|a| *a == arch) else {
            eprintln!("ringfuse-gpu-perf: --prepare-ptx takes one of {:?}", ringfuse::cuda::ARCHS);
            return ExitCode::FAILURE;
        };
        let cache = ringfuse::cuda::PtxCache::default_dir();
        return match cache.get(arch) {
            Ok(_) => {
                println!("{}", cache.path(arch).map_or("(no cache directory)".into(), |p| p.display().to_string()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringfuse-gpu-perf: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ringfuse-gpu-perf: a device result differs from the CPU backend");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ringfuse-gpu-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> ringfuse::Result<bool> {
    let dev = Device::open(args.device)?;
    let gpu = dev.name().to_string();
    println!("# {gpu}, commit {}, {}", args.commit, args.date);
    let mut kernels = Vec::new();
    println!("# kernels (f32 buffer; bytes read + written; best of 5 x 20 calls)");
    println!("{:<40} {:>8} {:>9} {:>9} {:>7} {:>9}", "kernel", "MiB", "GB/s", "d2d GB/s", "of d2d", "x unfused");
    for &mib in &args.kernel_mib {
        for k in bench::kernels(&dev, mib << 18, 5, 20)? {
            let unf = k.speedup_vs_unfused.map_or("-".into(), |s| format!("{s:.2}"));
            let mb = k.bytes as f64 / (1 << 20) as f64;
            println!(
                "{:<40} {:>8.0} {:>9.0} {:>9.0} {:>6.0}% {:>9}",
                k.name,
                mb,
                k.gbps,
                k.d2d_gbps,
                100.0 * k.ratio_to_d2d,
                unf
            );
            kernels.push(k);
        }
    }
    let allreduce = allreduce::sweep(dev, args)?;
    println!("# NCCL: {NO_NCCL}");
    let ok = allreduce.iter().all(|a| a.bit_identical_to_cpu);
    let results =
        Results { gpu, date: args.date.clone(), commit: args.commit.clone(), kernels, allreduce, nccl: NO_NCCL };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).expect("figures serialise");
        std::fs::write(path, text + "\n").map_err(|e| ringfuse::Error::Cuda {
            what: format!("writing {}", path.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(ok)
}
