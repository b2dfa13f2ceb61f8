//! Command-line flags, modelled on nccl-tests' `all_reduce_perf`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ringfuse::{Algorithm, Codec, DType, ReduceOp};

use crate::gpu_cluster::GpuCluster;

/// Bandwidth of ringfuse's collectives against MPI's own, nccl-tests style.
/// Run under mpirun; rank 0 prints.
#[derive(Parser, Debug, Clone)]
// A flag given twice takes its last value, so wrappers (ci/bench.sh) can
// set defaults that the caller's own arguments override.
#[command(version, about, args_override_self = true)]
pub struct Args {
    /// Smallest buffer, bytes (suffixes K, M, G).
    #[arg(short = 'b', long, default_value = "8", value_parser = parse_bytes)]
    pub min_bytes: u64,
    /// Largest buffer, bytes (suffixes K, M, G).
    #[arg(short = 'e', long, default_value = "64M", value_parser = parse_bytes)]
    pub max_bytes: u64,
    /// Multiply the size by this each row.
    #[arg(short = 'f', long, default_value_t = 2)]
    pub factor: u64,
    /// Element type of the buffer.
    #[arg(short = 'd', long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Reduction.
    #[arg(short = 'o', long, value_parser = parse_op, default_value = "sum")]
    pub op: ReduceOp,
    /// Wire codecs, comma-separated; each size runs once per codec.
    #[arg(short = 'c', long, value_delimiter = ',', value_parser = parse_codec, default_value = "native,fp16,bf16")]
    pub codec: Vec<Codec>,
    /// Allreduce algorithms, comma-separated (ring, doubling, tree, hd,
    /// hier, auto); each size runs once per codec and algorithm. An algorithm
    /// that cannot carry the dtype and codec runs the ring (see
    /// `Algorithm::supports`); the algo column says which ran.
    #[arg(short = 'a', long, value_delimiter = ',', value_parser = parse_algo, default_value = "auto")]
    pub algo: Vec<Algorithm>,
    /// Timed iterations per row (the median is reported).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed iterations before them.
    #[arg(short = 'w', long, default_value_t = 5)]
    pub warmup: usize,
    /// Check every element against the f64 reference and the codec bound.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub check: bool,
    /// What to time side by side.
    #[arg(long, value_enum, default_value = "mpi")]
    pub baseline: Baseline,
    /// Where the buffer lives. `cuda`: each rank's buffer on GPU
    /// `rank % devices`, reduced by `Communicator::allreduce_device` (the
    /// host-staged carrier; allreduce, f32/f16/bf16, native/fp16/bf16;
    /// needs feature `cuda`). MPI_Allreduce still runs on host memory.
    #[arg(long, value_enum, default_value = "host")]
    pub device: DeviceArg,
    /// Which collective.
    #[arg(long, value_enum, default_value = "allreduce")]
    pub collective: CollectiveArg,
    /// Payload bytes per message (default: the library's).
    #[arg(long, value_parser = parse_bytes)]
    pub slice_bytes: Option<u64>,
    /// Messages in flight each way (default: the library's).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Write the rows as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the rows as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Draw bus bandwidth against size as SVG (with --simulate: against
    /// rank count, per algorithm, at the largest size).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Predict instead of measure: run the schedules on the scale model
    /// (`ringfuse::sim`) for every --ranks; no mpirun needed.
    #[arg(long)]
    pub simulate: bool,
    /// With --simulate: predict every row of this measured `--json` file
    /// (its rank count, sizes, codecs and algorithms) and print measured
    /// against predicted.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// With --simulate: a GPU cluster's links, NCCL's latencies and the
    /// H100's kernel rate in place of the link, shared-memory, kernel and
    /// call flags (see `gpu_cluster.rs`), 8 GPUs per node.
    #[arg(long, value_enum, conflicts_with_all = [
        "ranks_per_host", "link_latency", "link_rate", "link_burst", "overhead",
        "call_latency", "cpus", "shm_latency", "shm_rate", "reduce_rate",
    ])]
    pub gpu_cluster: Option<GpuCluster>,
    /// With --simulate: rank counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64,512,4096")]
    pub ranks: Vec<usize>,
    /// With --simulate: ranks per host (consecutive ranks share one).
    #[arg(long, default_value_t = 1)]
    pub ranks_per_host: usize,
    /// With --simulate: network latency per message (ns, us, ms, s).
    #[arg(long, default_value = "100us", value_parser = parse_seconds)]
    pub link_latency: f64,
    /// With --simulate: network rate per host (bit/s: 100mbit, 1gbit, 25gbit).
    #[arg(long, default_value = "1gbit", value_parser = parse_rate)]
    pub link_rate: f64,
    /// With --simulate: token bucket of each host's network port, bytes
    /// (0: none). `ci/netsim.sh` shapes its links with `tbf burst 256kb`.
    /// With one, the model replays -w untimed and -n timed calls a barrier
    /// apart (or those a --compare file records) and predicts the median.
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub link_burst: u64,
    /// With --simulate: CPU time a message costs its sender and again its
    /// receiver (LogP's o).
    #[arg(long, default_value = "0s", value_parser = parse_seconds)]
    pub overhead: f64,
    /// With --simulate: time every call costs before its first message,
    /// whatever its size (NCCL's base latency per call).
    #[arg(long, default_value = "0s", value_parser = parse_seconds)]
    pub call_latency: f64,
    /// With --simulate: cores all ranks share for that CPU time and the
    /// kernels (0: a core per rank). `ci/netsim.sh`'s hosts share this
    /// machine's cores.
    #[arg(long, default_value_t = 0)]
    pub cpus: usize,
    /// With --simulate: shared-memory latency per message.
    #[arg(long, default_value = "2us", value_parser = parse_seconds)]
    pub shm_latency: f64,
    /// With --simulate: shared-memory rate per rank (bit/s).
    #[arg(long, default_value = "40gbit", value_parser = parse_rate)]
    pub shm_rate: f64,
    /// With --simulate: bytes per second of f32 data the fused kernel
    /// processes (K, M, G suffixes).
    #[arg(long, default_value = "10G", value_parser = parse_bytes)]
    pub reduce_rate: u64,
}

/// `--dtype`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DTypeArg {
    /// f32
    F32,
    /// f64
    F64,
    /// IEEE half
    F16,
    /// bfloat16
    Bf16,
}

impl DTypeArg {
    pub fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F64 => DType::F64,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::Bf16,
        }
    }
}

/// `--baseline`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Baseline {
    /// Open MPI's own collective on the same data.
    Mpi,
    /// With --simulate: NCCL's own cost model of its f32 ring and tree
    /// on the same links (`nccl_model.rs`); the faster is the baseline.
    NcclModel,
    /// Nothing.
    None,
}

/// `--device`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum DeviceArg {
    /// Host memory.
    Host,
    /// A CUDA GPU.
    Cuda,
}

/// `--collective`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum CollectiveArg {
    /// Allreduce.
    Allreduce,
    /// Reduce-scatter (equal blocks).
    #[value(name = "reduce_scatter", alias = "reduce-scatter")]
    ReduceScatter,
    /// Allgather.
    Allgather,
    /// Broadcast from rank 0.
    Broadcast,
}

impl CollectiveArg {
    pub fn name(self) -> &'static str {
        match self {
            CollectiveArg::Allreduce => "allreduce",
            CollectiveArg::ReduceScatter => "reduce_scatter",
            CollectiveArg::Allgather => "allgather",
            CollectiveArg::Broadcast => "broadcast",
        }
    }
    /// nccl-tests' bus-bandwidth factor (PERFORMANCE.md there).
    pub fn bus_factor(self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            CollectiveArg::Allreduce => 2.0 * (n - 1.0) / n,
            CollectiveArg::ReduceScatter | CollectiveArg::Allgather => (n - 1.0) / n,
            CollectiveArg::Broadcast => 1.0,
        }
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|v| v * mult).map_err(|e| format!("'{s}': {e}"))
}

/// `100us`, `1.5ms`, `2s`, `500ns` as seconds.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let scale = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" | "" => 1.0,
        _ => return Err(format!("'{s}': unit must be ns, us, ms or s")),
    };
    num.parse::<f64>().map(|v| v * scale).map_err(|e| format!("'{s}': {e}"))
}

/// `1gbit`, `100mbit`, `25gbit`, `800kbit` (tc's spelling) as bytes per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    let Some(num) = t.strip_suffix("bit") else { return Err(format!("'{s}': a rate ends in bit (1gbit)")) };
    let (num, scale) = match num.chars().last() {
        Some('k') => (&num[..num.len() - 1], 1e3),
        Some('m') => (&num[..num.len() - 1], 1e6),
        Some('g') => (&num[..num.len() - 1], 1e9),
        Some('t') => (&num[..num.len() - 1], 1e12),
        _ => (num, 1.0),
    };
    num.parse::<f64>().map(|v| v * scale / 8.0).map_err(|e| format!("'{s}': {e}"))
}

fn parse_op(s: &str) -> Result<ReduceOp, String> {
    ReduceOp::parse(s).ok_or_else(|| format!("unknown op '{s}' (sum, avg, min, max, prod)"))
}

fn parse_algo(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| format!("unknown algorithm '{s}' (ring, doubling, tree, hd, hier, auto)"))
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::parse(s).ok_or_else(|| format!("unknown codec '{s}' (native, fp16, bf16, fp16scaled, int8)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(super::parse_bytes("8"), Ok(8));
        assert_eq!(super::parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(super::parse_bytes("16m"), Ok(16 << 20));
        assert_eq!(super::parse_bytes("1G"), Ok(1 << 30));
        assert!(super::parse_bytes("x").is_err());
    }

    #[test]
    fn latencies_and_rates_parse_as_tc_writes_them() {
        let near = |s: &str, want: f64| (super::parse_seconds(s).unwrap() - want).abs() < want * 1e-12;
        assert!(near("100us", 100e-6) && near("1.5ms", 1.5e-3) && near("500ns", 500e-9));
        assert_eq!(super::parse_seconds("2"), Ok(2.0));
        assert!(super::parse_seconds("3h").is_err());
        assert_eq!(super::parse_rate("1gbit"), Ok(125e6));
        assert_eq!(super::parse_rate("100mbit"), Ok(12.5e6));
        assert!(super::parse_rate("1G").is_err());
    }
}
