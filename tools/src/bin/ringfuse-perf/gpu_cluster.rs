//! `--gpu-cluster`: the scale model's links for H100 nodes, so that its
//! prediction for ringfuse and NCCL's cost model (`nccl_model`) run on the
//! same cluster.
//!
//! Inside a node every GPU has its own NVLink 4 port into the NVSwitches;
//! its rate is what NCCL itself counts on for an H100 (`SM90_NVLINK_BW`,
//! 20.6 GB/s per link in `src/graph/topo.h`, times the H100's 18 links:
//! 370.8 GB/s each way). Between nodes every node has NICs of 400 Gbit/s
//! (InfiniBand NDR or 400GbE RoCE: NCCL's tuner treats both as one network
//! class), one per GPU on a DGX H100 or four on many HGX servers. The
//! latencies per step and per call are NCCL's for its Simple protocol
//! (`src/graph/tuning.cc`: ring steps of 3.4 us over NVLink and 14 us over
//! the network, 8.4 us per call). The fused kernel's rate is ringfuse's,
//! measured on an H100 (docs/results/gpu-h100.md, 2026-11-26, commit
//! 25fe516): `rf_decode_reduce_encode_f32_f16` moved 2709 GB/s, 8 bytes
//! per element, so 1354 GB/s of f32 data.

use clap::ValueEnum;
use ringfuse::sim::{Cluster, Link};

/// `--gpu-cluster`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum GpuCluster {
    /// 8 H100 per node on NVLink 4 and NVSwitch; 8 NICs of 400 Gbit/s per
    /// node (a DGX H100).
    #[value(name = "h100-8x400g")]
    H100Nics8,
    /// The same with 4 NICs of 400 Gbit/s per node.
    #[value(name = "h100-4x400g")]
    H100Nics4,
}

/// GPUs per node.
pub const GPUS_PER_NODE: usize = 8;
/// One H100's NVLink rate each way, bytes per second.
pub const NVLINK_BYTES_PER_S: f64 = 18.0 * 20.6e9;
/// NCCL's latency of one ring step over NVLink (Simple protocol).
pub const NVLINK_STEP_S: f64 = 3.4e-6;
/// NCCL's latency of one ring step over the network (Simple protocol).
pub const NET_STEP_S: f64 = 14.0e-6;
/// NCCL's base latency of a call (ring and tree, Simple protocol).
pub const CALL_S: f64 = 8.4e-6;
/// One NIC of 400 Gbit/s, bytes per second.
pub const NIC_BYTES_PER_S: f64 = 50e9;
/// Payload bytes per message between GPUs unless --slice-bytes says
/// otherwise: NCCL's buffer per channel and peer (`NCCL_BUFFSIZE`'s
/// default). The host carriers' 32-256 KiB would pay a step latency of
/// microseconds per message here (at 64 GPUs, 1 GiB: 0.55x NCCL's modelled
/// f32 time with 256 KiB, 1.10x with 4 MiB).
pub const SLICE_BYTES: usize = 4 << 20;
/// The fused kernel on an H100, bytes of f32 data per second.
pub const H100_KERNEL_F32_BYTES_PER_S: f64 = 1354e9;

impl GpuCluster {
    pub fn name(self) -> &'static str {
        match self {
            GpuCluster::H100Nics8 => "h100-8x400g",
            GpuCluster::H100Nics4 => "h100-4x400g",
        }
    }

    fn nics(self) -> usize {
        match self {
            GpuCluster::H100Nics8 => 8,
            GpuCluster::H100Nics4 => 4,
        }
    }

    /// `ranks` GPUs, one rank each, in nodes of [`GPUS_PER_NODE`].
    pub fn cluster(self, ranks: usize) -> Cluster {
        Cluster {
            ranks,
            ranks_per_host: GPUS_PER_NODE,
            intra: Link { latency_s: NVLINK_STEP_S, bytes_per_s: NVLINK_BYTES_PER_S, burst_bytes: 0.0 },
            inter: Link { latency_s: NET_STEP_S, bytes_per_s: self.nics() as f64 * NIC_BYTES_PER_S, burst_bytes: 0.0 },
            reduce_bytes_per_s: H100_KERNEL_F32_BYTES_PER_S,
            overhead_s: 0.0,
            call_s: CALL_S,
            cpus: 0,
        }
    }
}
