//! The main job: allreduce a 64 MiB f32 gradient buffer over every MPI rank
//! with each wire codec, check the result against the exact sum, check all
//! ranks hold the same bits, and print what happened.
//!
//! ```text
//! mpirun -np 2 target/release/examples/allreduce
//! ```

use std::process::ExitCode;
use std::time::Instant;

use ringfuse::{Codec, ReduceOp};

fn main() -> ExitCode {
    let mpi = match ringfuse::mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let comm = match mpi.world() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (rank, n) = (comm.rank(), comm.size());
    let count = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(16usize << 20);
    // Each rank's gradient is a deterministic function of (rank, i), so
    // every rank can compute the exact f64 sum of all ranks locally.
    let grad = |r: usize, i: usize| (((r * 7919 + i * 104_729) % 2001) as f64 / 1000.0 - 1.0) as f32 as f64;
    let exact: Vec<f64> = (0..count).map(|i| (0..n).map(|r| grad(r, i)).sum()).collect();
    let abs: Vec<f64> = (0..count).map(|i| (0..n).map(|r| grad(r, i).abs()).sum()).collect();
    let mut failed = false;
    if rank == 0 {
        println!("ringfuse allreduce: {n} ranks, {count} f32 elements ({} MiB), op sum", (count * 4) >> 20);
    }
    for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
        let mut buf: Vec<f32> = (0..count).map(|i| grad(rank, i) as f32).collect();
        let opts = comm.defaults().clone().codec(codec);
        comm.barrier().expect("barrier");
        let t0 = Instant::now();
        if let Err(e) = comm.allreduce_with(&mut buf, ReduceOp::Sum, &opts) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        let secs = t0.elapsed().as_secs_f64();
        // Within the documented bound, element by element.
        let mut worst = 0f64;
        let mut outside = 0usize;
        for i in 0..count {
            let err = (buf[i] as f64 - exact[i]).abs();
            let bound = codec.sum_error_bound(ringfuse::DType::F32, n, abs[i]);
            outside += usize::from(err > bound);
            worst = worst.max(err / abs[i].max(f64::MIN_POSITIVE));
        }
        // Bitwise identical on every rank: gather every rank's hash.
        let hash =
            buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
        let mut hashes = vec![0f64; n];
        comm.allgather(&[f64::from_bits(hash)], &mut hashes).expect("allgather");
        let identical = hashes.iter().all(|h| h.to_bits() == hash);
        failed |= outside > 0 || !identical;
        if rank == 0 {
            let wire = codec.wire_dtype(ringfuse::DType::F32).size();
            println!(
                "  codec {:<6}  {:>8.2} ms  algbw {:>6.2} GB/s  wire {:>5.1} MiB/rank  max err/sum|x| {:.2e}  outside bound {}  identical on all ranks: {}",
                codec.name(),
                secs * 1e3,
                (count * 4) as f64 / secs / 1e9,
                (2 * (n - 1) * count * wire) as f64 / n as f64 / (1 << 20) as f64,
                worst,
                outside,
                if identical { "yes" } else { "NO" }
            );
        }
    }
    if failed {
        eprintln!("rank {rank}: FAILED");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
