//! In-process allreduce (ranks as threads, rendezvous mailboxes) over sizes
//! and codecs. This measures the executor and kernels without MPI; the MPI
//! figures come from `ringfuse-perf` under mpirun.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringfuse::{AllreduceOpts, Codec, ReduceOp};

fn allreduce(c: &mut Criterion) {
    let mut g = c.benchmark_group("allreduce_local");
    g.sample_size(10);
    let ranks = 2;
    for bytes in [64usize << 10, 4 << 20, 32 << 20] {
        let n = bytes / 4;
        g.throughput(Throughput::Bytes(bytes as u64));
        for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
            g.bench_function(BenchmarkId::new(codec.name(), format!("{ranks}x{}KiB", bytes >> 10)), |b| {
                // The ranks live for one batch of `iters` calls; rank 0's
                // clock, started after a barrier, is the batch's time.
                b.iter_custom(|iters| {
                    let times = ringfuse::local::run(ranks, |comm| {
                        let mut v = vec![1.0f32; n];
                        let opts = AllreduceOpts::default().codec(codec);
                        comm.barrier().unwrap();
                        let t0 = Instant::now();
                        for _ in 0..iters {
                            comm.allreduce_with(&mut v, ReduceOp::Avg, &opts).unwrap();
                        }
                        t0.elapsed()
                    });
                    times.into_iter().max().unwrap_or(Duration::ZERO)
                })
            });
        }
    }
    g.finish();
}

/// What the cross-rank call check costs where it weighs most: small
/// messages. Same 4 KiB allreduce with the fingerprint comparison on and
/// off (`AllreduceOpts::verify_calls`); the 16 fingerprint bytes travel in
/// the header either way.
fn call_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_check");
    g.sample_size(30);
    let (ranks, n) = (2, 1024);
    g.throughput(Throughput::Bytes(4 * n as u64));
    for verify in [true, false] {
        let name = if verify { "on" } else { "off" };
        g.bench_function(BenchmarkId::new(name, "2x4KiB"), |b| {
            b.iter_custom(|iters| {
                let times = ringfuse::local::run(ranks, |comm| {
                    let mut v = vec![1.0f32; n];
                    let opts = AllreduceOpts::default().verify_calls(verify);
                    comm.barrier().unwrap();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        comm.allreduce_with(&mut v, ReduceOp::Max, &opts).unwrap();
                    }
                    t0.elapsed()
                });
                times.into_iter().max().unwrap_or(Duration::ZERO)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, allreduce, call_check);
criterion_main!(benches);
