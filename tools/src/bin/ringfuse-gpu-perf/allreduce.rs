//! Allreduce of in-process ranks on one GPU: each size checked bit for bit
//! against the CPU backend on the same inputs, then timed.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringfuse::cuda::{cpu_allreduce, Device, DeviceRanks, StagedRank};
use ringfuse::{Algorithm, AllreduceOpts, Codec, DType, ReduceOp};
use serde::Serialize;

use crate::Args;

/// One row of the allreduce table.
#[derive(Serialize)]
pub struct AllreduceFigure {
    /// How messages move: `device copies` (DeviceRanks: one process, a
    /// stream per rank) or `host-staged` (Communicator::allreduce_device,
    /// ranks as threads over the in-process transport).
    pub carrier: &'static str,
    pub ranks: usize,
    pub count: usize,
    pub codec: &'static str,
    pub algorithm: &'static str,
    pub bit_identical_to_cpu: bool,
    /// Median of the timed calls, each from the first launch until every
    /// rank's stream has finished.
    pub time_us: f64,
    /// nccl-tests' bus bandwidth: `4 * count * 2 (n - 1) / n` bytes per
    /// call over the median time.
    #[serde(rename = "busbw_GBps")]
    pub busbw_gbps: f64,
    #[serde(rename = "nccl_busbw_GBps")]
    pub nccl_busbw_gbps: Option<f64>,
}

fn inputs(ranks: usize, count: usize) -> Vec<Vec<u8>> {
    (0..ranks)
        .map(|r| {
            let mut rng = SmallRng::seed_from_u64(0x5eed ^ (r as u64) << 32 ^ count as u64);
            (0..count).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect()
        })
        .collect()
}

/// The row for one (carrier, count, codec) from its call times; printed.
fn row(
    carrier: &'static str,
    n: usize,
    count: usize,
    codec: Codec,
    identical: bool,
    times: &mut [f64],
) -> AllreduceFigure {
    times.sort_by(f64::total_cmp);
    let time_us = times[times.len() / 2];
    let busbw_gbps = (4 * count) as f64 * 2.0 * (n - 1) as f64 / n as f64 / time_us / 1e3;
    println!(
        "{count:>10} {:>7} {:>10} {time_us:>11.1} {busbw_gbps:>11.1}",
        codec.name(),
        if identical { "yes" } else { "NO" }
    );
    AllreduceFigure {
        carrier,
        ranks: n,
        count,
        codec: codec.name(),
        algorithm: "ring",
        bit_identical_to_cpu: identical,
        time_us,
        busbw_gbps,
        nccl_busbw_gbps: None,
    }
}

pub fn sweep(dev: Device, args: &Args) -> ringfuse::Result<Vec<AllreduceFigure>> {
    let n = args.ranks;
    let mut ranks = DeviceRanks::new(dev, n)?;
    let mut rows = Vec::new();
    println!("# allreduce, {n} in-process ranks on one GPU, f32 sum, ring; median of up to {} calls", args.iters);
    println!("{:>10} {:>7} {:>10} {:>11} {:>11}", "count", "codec", "identical", "time (us)", "busbw GB/s");
    for &count in &args.counts {
        let input = inputs(n, count);
        for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
            let algo = Algorithm::Ring;
            let wire = codec.wire_dtype(DType::F32);
            let (want, _) = cpu_allreduce(&input, DType::F32, wire, ReduceOp::Sum, algo)?;
            // Fewer calls where one call moves hundreds of MiB.
            let iters = args.iters.min(((1usize << 28) / (4 * count)).max(5));
            let mut times = Vec::with_capacity(iters);
            let mut identical = true;
            for i in 0..=iters {
                // Fresh inputs each call: a sum of sums would overflow FP16.
                let mut bufs = (0..n).map(|r| ranks.upload(r, &input[r])).collect::<ringfuse::Result<Vec<_>>>()?;
                ranks.synchronize()?;
                let t = Instant::now();
                ranks.allreduce(&mut bufs, DType::F32, codec, ReduceOp::Sum, algo)?;
                let us = t.elapsed().as_secs_f64() * 1e6;
                if i == 0 {
                    // The first call (untimed) is the one checked.
                    for (r, b) in bufs.iter().enumerate() {
                        identical &= ranks.download(r, b)? == want[r];
                    }
                } else {
                    times.push(us);
                }
            }
            rows.push(row("device copies", n, count, codec, identical, &mut times));
        }
    }
    println!("# the same over the host-staged carrier: {n} ranks as threads over the in-process transport, each its own stream");
    for &count in args.counts.iter().filter(|&&c| c >= 1 << 20) {
        let input = inputs(n, count);
        for codec in [Codec::Native, Codec::Fp16] {
            let wire = codec.wire_dtype(DType::F32);
            let (want, _) = cpu_allreduce(&input, DType::F32, wire, ReduceOp::Sum, Algorithm::Ring)?;
            let iters = args.iters.min(((1usize << 28) / (4 * count)).max(5));
            let got = staged(&input, codec, iters, args.device);
            let mut identical = true;
            let mut times = Vec::new();
            for (r, g) in got.into_iter().enumerate() {
                let (bytes, t) = g?;
                identical &= bytes == want[r];
                if r == 0 {
                    times = t;
                }
            }
            rows.push(row("host-staged", n, count, codec, identical, &mut times));
        }
    }
    Ok(rows)
}

/// Each rank's result of the first (checked) call, and the times of the
/// next `iters`, each from a barrier until the rank's call returns.
fn staged(input: &[Vec<u8>], codec: Codec, iters: usize, device: usize) -> Vec<ringfuse::Result<(Vec<u8>, Vec<f64>)>> {
    ringfuse::local::run(input.len(), |comm| {
        let dev = Device::open(device)?;
        let mut rank = StagedRank::new(&dev)?;
        let opts = AllreduceOpts::default().codec(codec).algorithm(Algorithm::Ring);
        let mut first = Vec::new();
        let mut times = Vec::with_capacity(iters);
        for i in 0..=iters {
            // Fresh inputs each call: a sum of sums would overflow FP16.
            let mut buf = rank.upload(&input[comm.rank()])?;
            rank.lane()
                .stream()
                .synchronize()
                .map_err(|e| ringfuse::Error::Cuda { what: "upload".into(), detail: e.to_string() })?;
            comm.barrier()?;
            let t = Instant::now();
            comm.allreduce_device(&mut rank, &mut buf, DType::F32, ReduceOp::Sum, &opts)?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if i == 0 {
                first = rank.download(&buf)?;
            } else {
                times.push(us);
            }
        }
        Ok((first, times))
    })
}
