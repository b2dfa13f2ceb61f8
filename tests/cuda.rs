//! The CUDA kernels (feature `cuda`) beyond their host build (which
//! `src/cuda/tests.rs` checks on every machine).
//!
//! Two tests need what a plain machine lacks, so they are `#[ignore]`d and
//! show as ignored, never as passed, where they do not run:
//! - NVRTC compiles every kernel for sm_80 and sm_90: `ci/test.sh` installs
//!   NVRTC (Python wheel) and runs it with `--include-ignored`;
//! - the kernels on a GPU against their host build: `ci/gpu.sh`.

#![cfg(feature = "cuda")]

use half::{bf16, f16};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringfuse::cuda::{self, Device, DeviceRanks, Hop, Kind, ARCHS, PAIRS};
use ringfuse::{Algorithm, Codec, DType, ReduceOp};

#[test]
#[ignore = "needs libnvrtc from CUDA 13 on the loader path; ci/test.sh installs it and runs this"]
fn every_kernel_compiles_with_nvrtc_for_sm80_and_sm90() {
    assert!(cuda::nvrtc_available(), "libnvrtc.so.13 is not on LD_LIBRARY_PATH");
    for arch in ARCHS {
        let ptx = cuda::compile_ptx(arch).unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        assert!(text.contains(&format!(".target {arch}")), "{arch}: no .target line");
        for name in cuda::kernel_names() {
            assert!(text.contains(&format!(".entry {name}(")), "{arch}: kernel {name} missing from the PTX");
        }
    }
}

/// The second request for an architecture's PTX comes from the cache
/// file the first one wrote, with the same text.
#[test]
#[ignore = "needs libnvrtc from CUDA 13 on the loader path; ci/test.sh installs it and runs this"]
fn nvrtc_output_is_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("ringfuse-ptx-cache-{}", std::process::id()));
    let cache = cuda::PtxCache::at(&dir);
    let path = cache.path("sm_80").unwrap();
    assert!(!path.exists());
    let first = cache.get("sm_80").unwrap_or_else(|e| panic!("{e}")).to_src();
    assert!(path.exists(), "{} not written", path.display());
    // A cached file is what the second call returns: mark it and look.
    std::fs::write(&path, format!("{first}// cached\n")).unwrap();
    let second = cache.get("sm_80").unwrap().to_src();
    assert_eq!(second, format!("{first}// cached\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without a driver or device, opening one is an error that says so (no
/// panic); with one, it opens and names itself.
#[test]
fn opening_a_device_reports_what_is_missing() {
    match Device::count() {
        0 => {
            let e = Device::open(0).err().expect("no device, yet open succeeded").to_string();
            assert!(e.starts_with("cuda: device 0:"), "{e}");
        }
        _ => {
            let d = Device::open(0).unwrap_or_else(|e| panic!("{e}"));
            assert!(d.name().contains("sm_"), "{}", d.name());
        }
    }
}

fn random_bytes(rng: &mut SmallRng, dtype: DType, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * dtype.size());
    for _ in 0..n {
        let x: f32 = match rng.random_range(0..8) {
            0 => f32::from_bits(rng.random()),
            1 => [f32::NAN, f32::INFINITY, -0.0, 65520.0, 1e-40][rng.random_range(0..5)],
            _ => rng.random_range(-4.0f32..4.0) * 10f32.powi(rng.random_range(-6..5)),
        };
        match dtype {
            DType::F32 => v.extend_from_slice(&x.to_le_bytes()),
            DType::F16 => v.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
            DType::Bf16 => v.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
            DType::F64 => unreachable!(),
        }
    }
    v
}

/// Every kernel on the GPU against its host build (which the unit tests
/// hold to the host path), bit for bit: aligned calls take the 16-byte
/// body, offset ones the element path, and a large call the grid-stride
/// loop over many blocks.
#[test]
#[ignore = "needs a CUDA GPU; ci/gpu.sh runs it"]
fn device_kernels_match_their_host_build_bit_for_bit() {
    let mut dev = Device::open(0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("device: {}", dev.name());
    let mut rng = SmallRng::seed_from_u64(5);
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let mut checked = 0;
    for &(b, w) in &PAIRS {
        for &(n, offset) in &[(1usize, 0usize), (9, 1), (1000, 0), (1001, 3), (1 << 20, 0)] {
            let recv = random_bytes(&mut rng, w, n);
            let local = random_bytes(&mut rng, b, n);
            for kind in Kind::ALL {
                for op in ops {
                    for (mine_first, fin) in [(false, false), (true, true)] {
                        if kind != Kind::Exchange && (mine_first || fin) {
                            continue;
                        }
                        let mut hop = Hop::new(kind, b, w, op);
                        (hop.mine_first, hop.fin) = (mine_first, fin);
                        hop.avg_ranks = (op == ReduceOp::Avg).then_some(5);
                        let (reads, writes) = (kind.reads_recv(), kind.writes_out(fin));
                        // Host build.
                        let mut h_local = local.clone();
                        let mut h_out = vec![0u8; if writes { n * w.size() } else { 0 }];
                        let h_over =
                            cuda::host::run(&hop, n, if reads { &recv } else { &[] }, &mut h_local, &mut h_out)
                                .unwrap();
                        // Device, at an element offset into each buffer.
                        let pad = |bytes: &[u8], size: usize| [vec![0u8; offset * size], bytes.to_vec()].concat();
                        let d_recv = dev.upload(&pad(&recv, w.size())).unwrap();
                        let mut d_local = dev.upload(&pad(&local, b.size())).unwrap();
                        let mut d_out = dev.upload(&pad(&vec![0u8; n * w.size()], w.size())).unwrap();
                        dev.hop(
                            &hop,
                            n,
                            reads.then_some((&d_recv, offset * w.size())),
                            (&mut d_local, offset * b.size()),
                            writes.then_some((&mut d_out, offset * w.size())),
                        )
                        .unwrap();
                        let over = dev.take_overflow().unwrap();
                        let g_local = dev.download(&d_local).unwrap();
                        let g_out = dev.download(&d_out).unwrap();
                        let at = format!("{hop:?} n {n} offset {offset}");
                        assert_eq!(over, h_over, "{at}: overflow flag");
                        assert!(g_local[offset * b.size()..] == h_local[..], "{at}: local differs");
                        if writes {
                            assert!(g_out[offset * w.size()..] == h_out[..], "{at}: out differs");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * 5 * 7 * 5);
}

/// The case: 4 in-process ranks on one GPU, f32 over FP16, the
/// ring; every rank's result equals the CPU backend's bit for bit, at
/// counts that leave blocks empty, odd and misaligned, and at 64 MiB.
#[test]
#[ignore = "needs a CUDA GPU; ci/gpu.sh runs it"]
fn four_device_ranks_fp16_ring_match_the_cpu_backend_bit_for_bit() {
    let mut ranks = DeviceRanks::new(Device::open(0).unwrap_or_else(|e| panic!("{e}")), 4).unwrap();
    let mut rng = SmallRng::seed_from_u64(8);
    for count in [1usize, 1000, 10007, 1 << 24] {
        let input: Vec<Vec<u8>> =
            (0..4).map(|_| (0..count).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect()).collect();
        let (want, over) = cuda::cpu_allreduce(&input, DType::F32, DType::F16, ReduceOp::Sum, Algorithm::Ring).unwrap();
        assert!(!over);
        let mut bufs: Vec<_> = (0..4).map(|r| ranks.upload(r, &input[r]).unwrap()).collect();
        ranks.allreduce(&mut bufs, DType::F32, Codec::Fp16, ReduceOp::Sum, Algorithm::Ring).unwrap();
        for (r, b) in bufs.iter().enumerate() {
            let got = ranks.download(r, b).unwrap();
            assert!(got == want[r], "count {count}: rank {r} differs from the CPU backend");
        }
    }
}

/// Every (buffer, wire) pair and algorithm on 2, 3 and 5 device ranks, with
/// NaN, infinities, signed zeros and FP16 overflow in the inputs: equal to
/// the CPU backend bit for bit but for NaN payloads where two NaNs meet
/// ([`cuda::first_difference`]), with the same overflow report. And a
/// call with a wrong buffer is an error that names the rank.
#[test]
#[ignore = "needs a CUDA GPU; ci/gpu.sh runs it"]
fn device_ranks_match_the_cpu_backend_for_every_pair_and_algorithm() {
    let dev = || Device::open(0).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = SmallRng::seed_from_u64(9);
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let algos = [Algorithm::Ring, Algorithm::RecursiveDoubling, Algorithm::Tree, Algorithm::HalvingDoubling];
    let mut cases = 0;
    for size in [2usize, 3, 5] {
        let mut ranks = DeviceRanks::new(dev(), size).unwrap();
        for (i, &(b, w)) in PAIRS.iter().enumerate() {
            let codec = cuda::codec_for(b, w).unwrap();
            for count in [3usize, 10007, 300_001] {
                let op = ops[(i + size + count) % ops.len()];
                for algo in algos {
                    let what = format!("{size} ranks, {count} {b} over {w}, {op}, {algo:?}");
                    let input: Vec<Vec<u8>> = (0..size).map(|_| random_bytes(&mut rng, b, count)).collect();
                    let (want, want_over) = cuda::cpu_allreduce(&input, b, w, op, algo).unwrap();
                    let mut bufs: Vec<_> = (0..size).map(|r| ranks.upload(r, &input[r]).unwrap()).collect();
                    let got_over = match ranks.allreduce(&mut bufs, b, codec, op, algo) {
                        Ok(()) => false,
                        Err(ringfuse::Error::WireOverflow { .. }) => true,
                        Err(e) => panic!("{what}: {e}"),
                    };
                    assert_eq!(got_over, want_over, "{what}: overflow report");
                    for (r, buf) in bufs.iter().enumerate() {
                        let got = ranks.download(r, buf).unwrap();
                        if let Some(e) = cuda::first_difference(&got, &want[r], b) {
                            panic!("{what}: rank {r} differs from the CPU backend at element {e}");
                        }
                    }
                    cases += 1;
                }
            }
        }
        let mut short: Vec<_> = (0..size).map(|r| ranks.upload(r, &[0u8; 40]).unwrap()).collect();
        short[size - 1] = ranks.upload(size - 1, &[0u8; 36]).unwrap();
        let e = ranks.allreduce(&mut short, DType::F32, Codec::Fp16, ReduceOp::Sum, Algorithm::Ring).unwrap_err();
        assert!(e.to_string().contains(&format!("rank {}'s buffer", size - 1)), "{e}");
    }
    assert_eq!(cases, 3 * 7 * 3 * 4);
}

/// The host-staged carrier (`Communicator::allreduce_device`) with ranks as
/// threads over the in-process transport, each with its own stream on the
/// one GPU: every rank equals the CPU backend bit for bit, for the issue's
/// counts over FP16, and for every pair and algorithm on 3 ranks with
/// specials in the inputs (NaN payloads aside where two NaNs meet).
#[test]
#[ignore = "needs a CUDA GPU; ci/gpu.sh runs it"]
fn staged_device_ranks_over_threads_match_the_cpu_backend() {
    let mut rng = SmallRng::seed_from_u64(10);
    // (ranks, count, buffer, wire, op, algorithm, each rank's input)
    type Case = (usize, usize, DType, DType, ReduceOp, Algorithm, Vec<Vec<u8>>);
    let mut cases: Vec<Case> = Vec::new();
    for count in [1usize, 1000, 10007, 1 << 22] {
        let input =
            (0..4).map(|_| (0..count).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect()).collect();
        cases.push((4, count, DType::F32, DType::F16, ReduceOp::Sum, Algorithm::Ring, input));
    }
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    for (i, &(b, w)) in PAIRS.iter().enumerate() {
        for algo in [Algorithm::Ring, Algorithm::RecursiveDoubling, Algorithm::Tree, Algorithm::HalvingDoubling] {
            let input = (0..3).map(|_| random_bytes(&mut rng, b, 10007)).collect();
            cases.push((3, 10007, b, w, ops[i % ops.len()], algo, input));
        }
    }
    for (size, count, b, w, op, algo, input) in &cases {
        let what = format!("{size} ranks, {count} {b} over {w}, {op}, {algo:?}");
        let (want, want_over) = cuda::cpu_allreduce(input, *b, *w, *op, *algo).unwrap();
        let opts = ringfuse::AllreduceOpts::default().codec(cuda::codec_for(*b, *w).unwrap()).algorithm(*algo);
        let got = ringfuse::local::run(*size, |comm| {
            let dev = Device::open(0).unwrap_or_else(|e| panic!("{e}"));
            let mut rank = cuda::StagedRank::new(&dev).unwrap();
            let mut buf = rank.upload(&input[comm.rank()]).unwrap();
            let over = match comm.allreduce_device(&mut rank, &mut buf, *b, *op, &opts) {
                Ok(()) => false,
                Err(ringfuse::Error::WireOverflow { .. }) => true,
                Err(e) => panic!("{what}: {e}"),
            };
            (rank.download(&buf).unwrap(), over)
        });
        for (r, (bytes, over)) in got.iter().enumerate() {
            if let Some(e) = cuda::first_difference(bytes, &want[r], *b) {
                panic!("{what}: rank {r} differs from the CPU backend at element {e}");
            }
            assert_eq!(*over, want_over, "{what}: rank {r}'s overflow report");
        }
    }
}
