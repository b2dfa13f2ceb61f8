//! Command-line flags, modelled on nccl-tests' `all_reduce_perf`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ringfuse::{Algorithm, Codec, DType, ReduceOp};

/// Bandwidth of ringfuse's collectives against MPI's own, nccl-tests style.
/// Run under mpirun; rank 0 prints.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
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
    /// auto); each size runs once per codec and algorithm. An algorithm
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
    /// Draw bus bandwidth against size as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
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
    /// Nothing.
    None,
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

fn parse_op(s: &str) -> Result<ReduceOp, String> {
    ReduceOp::parse(s).ok_or_else(|| format!("unknown op '{s}' (sum, avg, min, max, prod)"))
}

fn parse_algo(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| format!("unknown algorithm '{s}' (ring, doubling, tree, hd, auto)"))
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
}
