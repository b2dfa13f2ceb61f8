//! `--baseline nccl-model`: NCCL's own cost model of its f32 allreduce,
//! on the rates of the simulated GPU cluster (`--gpu-cluster`), beside the
//! scale model's prediction for ringfuse. No NCCL runs: these are the
//! formulas and H100 constants NCCL's tuner uses to pick an algorithm and
//! protocol (`src/graph/tuning.cc`: `ncclTopoTuneModel`,
//! `ncclTopoGetAlgoTime`), with the preset's link rates in place of what
//! its topology search finds:
//!
//! - time = latency + bytes / algorithm bandwidth; NCCL takes the fastest
//!   of ring and tree, each with its LL or Simple protocol;
//! - ring: latency = base + 2(n-1-(nodes-1)) steps inside a node +
//!   2(nodes-1) steps between nodes; algorithm bandwidth = bus bandwidth x
//!   n / 2(n-1);
//! - tree (NCCL's double binary tree between nodes, a chain inside):
//!   latency = base + 2((ppn-1) steps inside + log2(nodes) steps between);
//!   algorithm bandwidth = bus bandwidth x 0.92 / 2;
//! - bus bandwidth: the per-GPU link inside one node, the smaller of it and
//!   the node's network ports across nodes (NCCL's channels spread a ring
//!   over every NIC of a node); LL moves half of that (8-byte lines with a
//!   4-byte flag), at most `LL_MAX_BW` (the tree a 3.8th).
//!
//! Not modelled: LL128 (on by default only on some Volta and Ampere
//! systems, per the same file), NVLink SHARP (NVLS) and CollNet, which
//! reduce inside the switch and beat the ring where present.

use ringfuse::sim::Cluster;

/// NCCL's allreduce algorithms that the model covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NcclAlgo {
    Ring,
    Tree,
}

/// NCCL's tree bandwidth against its ring's (`busBw*.92` in its tuner).
const TREE_BW_FACTOR: f64 = 0.92;

/// NCCL's protocols that the model covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Proto {
    /// Low latency: a flag with every 4 bytes, half the bandwidth.
    Ll,
    /// Large chunks: the full bandwidth, a higher latency per step.
    Simple,
}

/// NCCL's latencies, microseconds (`tuning.cc`): `baseLat` and the `hwLat`
/// of a step over NVLink and over the network.
struct Latency {
    base: f64,
    nvlink: f64,
    net: f64,
}

fn latency(algo: NcclAlgo, proto: Proto) -> Latency {
    match (algo, proto) {
        (NcclAlgo::Ring, Proto::Ll) => Latency { base: 6.6, nvlink: 0.6, net: 2.7 },
        (NcclAlgo::Ring, Proto::Simple) => Latency { base: 8.4, nvlink: 3.4, net: 14.0 },
        (NcclAlgo::Tree, Proto::Ll) => Latency { base: 6.8, nvlink: 0.6, net: 5.0 },
        (NcclAlgo::Tree, Proto::Simple) => Latency { base: 8.4, nvlink: 4.0, net: 14.0 },
    }
}

/// NCCL's cost of posting a network operation on an Intel host, us
/// (`getNetOverhead`), three times over for Simple: a floor under a step
/// inside a node once the job spans nodes.
const NET_OVERHEAD_US: f64 = 1.0;

/// LL's ceiling on the bus bandwidth, GB/s (`llMaxBws`: an Hopper node
/// alone; 2 nodes and more of Intel hosts).
fn ll_max_bw(nodes: usize) -> f64 {
    match nodes {
        1 => 141.0,
        2 => 39.0,
        _ => 20.4,
    }
}

/// Seconds NCCL's model gives an f32 allreduce of `bytes` on `c` by `algo`
/// and `proto`.
pub fn time_s(c: &Cluster, bytes: usize, algo: NcclAlgo, proto: Proto) -> f64 {
    let n = c.ranks.max(1);
    if n == 1 {
        return 0.0;
    }
    let ppn = c.ranks_per_host.clamp(1, n);
    let nodes = n.div_ceil(ppn);
    let link = if nodes == 1 { c.intra.bytes_per_s } else { c.intra.bytes_per_s.min(c.inter.bytes_per_s) } / 1e9;
    let lat = latency(algo, proto);
    let floor = if nodes > 1 { NET_OVERHEAD_US * if proto == Proto::Simple { 3.0 } else { 1.0 } } else { 0.0 };
    let intra = lat.nvlink.max(floor);
    let (latency_us, algbw_gbps) = match algo {
        NcclAlgo::Ring => {
            let bus = if proto == Proto::Ll { ll_max_bw(nodes).min(link * 0.5) } else { link };
            let steps = 2 * (n - 1);
            let inter_steps = 2 * (nodes - 1);
            (
                lat.base + (steps - inter_steps) as f64 * intra + inter_steps as f64 * lat.net,
                bus * n as f64 / steps as f64,
            )
        }
        NcclAlgo::Tree => {
            let bus = link * TREE_BW_FACTOR;
            let bus = if proto == Proto::Ll { ll_max_bw(nodes).min(bus / 3.8) } else { bus };
            let log2_nodes = (usize::BITS - 1 - nodes.leading_zeros()) as f64;
            (lat.base + 2.0 * ((ppn - 1) as f64 * intra + log2_nodes * lat.net), bus / 2.0)
        }
    };
    (latency_us + bytes as f64 / (algbw_gbps * 1e3)) * 1e-6
}

/// What NCCL's tuner would pick (the fastest algorithm and protocol) and
/// its time.
pub fn best(c: &Cluster, bytes: usize) -> (&'static str, f64) {
    let mut all = Vec::new();
    for (algo, proto, name) in [
        (NcclAlgo::Ring, Proto::Ll, "ring/ll"),
        (NcclAlgo::Ring, Proto::Simple, "ring"),
        (NcclAlgo::Tree, Proto::Ll, "tree/ll"),
        (NcclAlgo::Tree, Proto::Simple, "tree"),
    ] {
        all.push((name, time_s(c, bytes, algo, proto)));
    }
    all.into_iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("four")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu_cluster::GpuCluster;

    /// nccl-tests' bus bandwidth of an allreduce: algorithm bandwidth x
    /// 2(n-1)/n, GB/s.
    fn busbw(ranks: usize, bytes: usize, seconds: f64) -> f64 {
        bytes as f64 / seconds / 1e9 * 2.0 * (ranks - 1) as f64 / ranks as f64
    }

    /// The model against figures NCCL's maintainers and users published
    /// for H100 and H200 nodes of 8 GPUs and 8 NICs of 400 Gbit/s; each
    /// within 25% (the target):
    /// - one node, `NCCL_ALGO=RING`: "an effective NVLink bandwidth of
    ///   370GB/s, which you can observe as BusBw" (S. Jeaugey,
    ///   NVIDIA/nccl-tests#212, 2024-05-06);
    /// - two nodes over NDR: "46-48GB/s per NIC" (NVIDIA/nccl-tests#290,
    ///   2025-03-03), 368-384 GB/s for 8 NICs;
    /// - 248 nodes (1984 H200, the same NVLink and NICs), 512 MiB, NCCL's
    ///   own choice: "typically measuring around 350G"
    ///   (NVIDIA/nccl-tests#283, 2025-01-18).
    #[test]
    fn the_model_is_within_a_quarter_of_published_nccl_figures() {
        let c = |ranks| GpuCluster::H100Nics8.cluster(ranks);
        let big = 8usize << 30;
        let one_node = busbw(8, big, time_s(&c(8), big, NcclAlgo::Ring, Proto::Simple));
        let two_nodes = busbw(16, big, time_s(&c(16), big, NcclAlgo::Ring, Proto::Simple));
        let (_, t) = best(&c(1984), 512 << 20);
        let at_scale = busbw(1984, 512 << 20, t);
        for (what, model, published) in [
            ("one node, ring", one_node, 370.0),
            ("two nodes, ring, low", two_nodes, 368.0),
            ("two nodes, ring, high", two_nodes, 384.0),
            ("1984 GPUs, 512 MiB", at_scale, 350.0),
        ] {
            let off = model / published - 1.0;
            eprintln!("{what}: model {model:.0} GB/s, published {published:.0} GB/s ({:+.0}%)", off * 100.0);
            assert!(off.abs() <= 0.25, "{what}: model {model:.0} GB/s, published {published:.0} GB/s ({off:+.0}%)");
        }
    }

    /// Small buffers go to LL and, across many nodes, to the tree; large
    /// ones to the ring with Simple, as NCCL's tuner picks them.
    #[test]
    fn the_pick_follows_size_and_scale() {
        let c = |ranks| GpuCluster::H100Nics8.cluster(ranks);
        assert_eq!(best(&c(8), 1024).0, "ring/ll");
        assert_eq!(best(&c(512), 1024).0, "tree/ll");
        assert_eq!(best(&c(8), 1 << 30).0, "ring");
        let (ring, tree) = (
            time_s(&c(8), 1 << 30, NcclAlgo::Ring, Proto::Simple),
            time_s(&c(8), 1 << 30, NcclAlgo::Tree, Proto::Simple),
        );
        assert!(tree > ring, "on one node the ring's bandwidth wins: ring {ring}, tree {tree}");
    }
}
