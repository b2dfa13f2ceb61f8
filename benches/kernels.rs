//! Each fused host kernel against `memcpy` moving the same number of bytes.
//! Throughput counts bytes read plus bytes written: the fp16 middle hop
//! reads 2 (wire) + 4 (local) and writes 2 bytes per element, 8 in all;
//! the memcpy it is compared with copies 4 bytes per element (4 read + 4
//! written), also 8. Two sizes: one pipeline slice (256 KiB of f32, in
//! cache, as the executor runs it) and 64 MiB (memory-bound).
//!
//! `cargo bench --bench kernels`; figures land in
//! `target/criterion/host_kernels/<id>/<size>/`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::{bf16, f16};
use ringfuse::{cpu, ReduceOp};

fn kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("host_kernels");
    for (label, n) in [("256KiB", 64usize << 10), ("64MiB", 16 << 20)] {
        let local: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let recv16: Vec<f16> = local.iter().map(|&x| f16::from_f32(x)).collect();
        let recvb: Vec<bf16> = local.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut out16 = vec![f16::ZERO; n];
        let mut outb = vec![bf16::ZERO; n];
        let mut out32 = vec![0f32; n];
        let mut dst = vec![0f32; n];
        let mut loc = local.clone();

        g.throughput(Throughput::Bytes(8 * n as u64));
        g.bench_function(BenchmarkId::new("memcpy", label), |b| b.iter(|| dst.copy_from_slice(black_box(&local))));
        g.bench_function(BenchmarkId::new("fp16_decode_reduce_encode", label), |b| {
            b.iter(|| cpu::reduce_encode(ReduceOp::Sum, black_box(&recv16), black_box(&local), &mut out16))
        });
        g.bench_function(BenchmarkId::new("bf16_decode_reduce_encode", label), |b| {
            b.iter(|| cpu::reduce_encode(ReduceOp::Sum, black_box(&recvb), black_box(&local), &mut outb))
        });
        g.throughput(Throughput::Bytes(12 * n as u64));
        g.bench_function(BenchmarkId::new("f32_reduce_native", label), |b| {
            b.iter(|| cpu::reduce_encode(ReduceOp::Sum, black_box(&local), black_box(&local), &mut out32))
        });
        // Last hop: 2 + 4 read, 2 + 4 written.
        g.throughput(Throughput::Bytes(12 * n as u64));
        g.bench_function(BenchmarkId::new("fp16_decode_reduce_store_encode", label), |b| {
            b.iter(|| cpu::reduce_store_encode(ReduceOp::Sum, None, black_box(&recv16), &mut loc, &mut out16))
        });
        g.throughput(Throughput::Bytes(6 * n as u64));
        g.bench_function(BenchmarkId::new("fp16_encode", label), |b| {
            b.iter(|| cpu::encode(black_box(&local), &mut out16))
        });
        g.bench_function(BenchmarkId::new("fp16_decode_store", label), |b| {
            b.iter(|| cpu::decode_store(black_box(&recv16), &mut dst, cpu::Stores::Cached))
        });
        // What calls with outputs of half the last-level cache and more use.
        g.bench_function(BenchmarkId::new("fp16_decode_store_streaming", label), |b| {
            b.iter(|| cpu::decode_store(black_box(&recv16), &mut dst, cpu::Stores::Streaming))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
