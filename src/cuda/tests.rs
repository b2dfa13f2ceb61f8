//! The kernels' own code (its host build) against the host path, bit for
//! bit: every (buffer, wire) pair, hop kind and reduce op, on values that
//! include every special (NaN payloads, infinities, signed zeros,
//! subnormals, FP16's overflow edge, rounding ties), at lengths and
//! offsets that take both the 16-byte vector body and the element tail.

use half::{bf16, f16};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{host, Hop, Kind, PAIRS};
use crate::cpu::hop::{Elementwise, HopKernels};
use crate::cpu::wire_stores::{WireChooser, WireStores};
use crate::element::{DType, Element, ReduceOp};

const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];

const SPECIALS: [f32; 16] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e-40,
    -6e-8,
    65504.0,
    65519.0,
    65520.0,
    -70000.0,
    3.4e38,
    f32::from_bits(0x3f80_3000), // FP16 tie: 1 + 2^-10 + 2^-11 rounds to even
    f32::from_bits(0x3f80_8000), // BF16 tie: 1 + 2^-8
    f32::from_bits(0x3380_0000), // 2^-24, FP16's smallest subnormal
    f32::from_bits(0xb300_0000), // -2^-25, the tie below it
];

fn value(rng: &mut SmallRng) -> f32 {
    match rng.random_range(0..10) {
        0 => SPECIALS[rng.random_range(0..SPECIALS.len())],
        // Any bits: every NaN payload, subnormal and exponent.
        1 => f32::from_bits(rng.random()),
        2 => f32::from_bits(0x7f80_0001 | (rng.random::<u32>() & 0x807f_ffff)),
        _ => rng.random_range(-4.0f32..4.0) * 10f32.powi(rng.random_range(-6..5)),
    }
}

fn elements<T: Element>(rng: &mut SmallRng, n: usize, raw16: bool) -> Vec<T> {
    (0..n)
        .map(|_| {
            if raw16 && T::DTYPE != DType::F32 && rng.random_bool(0.3) {
                // Any 16-bit pattern as a wire/buffer value.
                let b: u16 = rng.random();
                bytemuck::cast::<u16, T>(b)
            } else {
                T::from_f32(value(rng))
            }
        })
        .collect()
}

/// `len` bytes at `offset` into a 16-byte-aligned allocation, so a test
/// chooses whether the kernel may take its vector body.
struct Aligned {
    store: Vec<u128>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8], offset: usize) -> Aligned {
        let mut store = vec![0u128; (offset + bytes.len()).div_ceil(16) + 1];
        bytemuck::cast_slice_mut::<u128, u8>(&mut store)[offset..offset + bytes.len()].copy_from_slice(bytes);
        Aligned { store, offset, len: bytes.len() }
    }
    fn get(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.store)[self.offset..self.offset + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.store)[self.offset..self.offset + self.len]
    }
}

struct Outcome {
    local: Vec<u8>,
    out: Vec<u8>,
    over: bool,
}

fn reference<E: Element, W: Element>(hop: &Hop, recv: &[W], local: &[E]) -> Outcome {
    let cached = WireChooser::new(WireStores::Cached);
    let k = Elementwise::<W>::new(crate::cpu::Stores::Cached, &cached);
    let n = local.len();
    let mut local = local.to_vec();
    let mut out_buf = Aligned::new(&vec![0u8; n * std::mem::size_of::<W>()], 0);
    let out = out_buf.get_mut();
    let recv: &[u8] = bytemuck::cast_slice(recv);
    let avg = hop.avg_ranks.map(|r| r as usize);
    let over = match hop.kind {
        Kind::Encode => HopKernels::<E>::encode(&k, &local, out),
        Kind::DecodeReduceEncode => HopKernels::<E>::reduce_encode(&k, hop.op, recv, &local, out),
        Kind::DecodeReduceStoreEncode => k.reduce_store_encode(hop.op, avg, recv, &mut local, out),
        Kind::DecodeStore => {
            k.decode_store(recv, &mut local);
            false
        }
        Kind::DecodeReduce => {
            k.reduce_into(hop.op, recv, &mut local);
            false
        }
        Kind::Exchange => {
            let fin = hop.fin.then_some((avg, &mut *out));
            k.exchange(hop.op, recv, &mut local, hop.mine_first, fin)
        }
    };
    let out = if hop.kind.writes_out(hop.fin) { out_buf.get().to_vec() } else { Vec::new() };
    Outcome { local: bytemuck::cast_slice(&local).to_vec(), out, over }
}

fn kernel<E: Element, W: Element>(hop: &Hop, recv: &[W], local: &[E], offset: usize) -> Outcome {
    let n = local.len();
    let ws = std::mem::size_of::<W>();
    let recv_bytes: &[u8] = if hop.kind.reads_recv() { bytemuck::cast_slice(recv) } else { &[] };
    let out_len = if hop.kind.writes_out(hop.fin) { n * ws } else { 0 };
    let r = Aligned::new(recv_bytes, offset * ws);
    let mut l = Aligned::new(bytemuck::cast_slice(local), offset * std::mem::size_of::<E>());
    let mut o = Aligned::new(&vec![0u8; out_len], offset * ws);
    let over = host::run(hop, n, r.get(), l.get_mut(), o.get_mut()).unwrap();
    Outcome { local: l.get().to_vec(), out: o.get().to_vec(), over }
}

fn check_pair<E: Element, W: Element>(seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut checked = 0;
    for &n in &[0usize, 1, 7, 8, 9, 63, 64, 517] {
        for &offset in &[0usize, 1] {
            let local = elements::<E>(&mut rng, n, true);
            let recv = elements::<W>(&mut rng, n, true);
            for kind in Kind::ALL {
                for op in OPS {
                    for (mine_first, fin) in [(false, false), (true, false), (false, true), (true, true)] {
                        if kind != Kind::Exchange && (mine_first || fin) {
                            continue;
                        }
                        let mut hop = Hop::new(kind, E::DTYPE, W::DTYPE, op);
                        hop.mine_first = mine_first;
                        hop.fin = fin;
                        hop.avg_ranks = (op == ReduceOp::Avg).then_some(3);
                        let want = reference::<E, W>(&hop, &recv, &local);
                        let got = kernel::<E, W>(&hop, &recv, &local, offset);
                        let at = || format!("{hop:?} n {n} offset {offset}");
                        assert_eq!(got.over, want.over, "overflow flag: {}", at());
                        assert_eq!(got.out.len(), want.out.len(), "{}", at());
                        // Where both operands of a reduction are NaN, x86 returns the
                        // first one's payload and the compiler may order the operands
                        // either way, so the host path itself only promises "a quiet
                        // NaN" there; so does this check.
                        let two_nans: Vec<bool> =
                            recv.iter().zip(&local).map(|(r, l)| r.to_f32().is_nan() && l.to_f32().is_nan()).collect();
                        let same = |a: &[u8], b: &[u8], d: DType| -> Option<usize> {
                            (0..a.len() / d.size()).find(|&i| {
                                let (x, y) = (elem(a, i, d), elem(b, i, d));
                                x != y && !(two_nans[i] && is_nan(x, d) && is_nan(y, d))
                            })
                        };
                        if let Some(i) = same(&got.out, &want.out, W::DTYPE) {
                            panic!(
                                "{}: out[{i}] differs: kernel {:02x?}, host {:02x?}",
                                at(),
                                elem(&got.out, i, W::DTYPE),
                                elem(&want.out, i, W::DTYPE)
                            );
                        }
                        if let Some(i) = same(&got.local, &want.local, E::DTYPE) {
                            panic!(
                                "{}: local[{i}] differs: kernel {:02x?}, host {:02x?}",
                                at(),
                                elem(&got.local, i, E::DTYPE),
                                elem(&want.local, i, E::DTYPE)
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    checked
}

fn is_nan(b: &[u8], d: DType) -> bool {
    match d {
        DType::F32 => f32::from_le_bytes(b.try_into().unwrap()).is_nan(),
        DType::F16 => f16::from_le_bytes(b.try_into().unwrap()).is_nan(),
        DType::Bf16 => bf16::from_le_bytes(b.try_into().unwrap()).is_nan(),
        DType::F64 => f64::from_le_bytes(b.try_into().unwrap()).is_nan(),
    }
}

fn elem(b: &[u8], i: usize, d: DType) -> &[u8] {
    &b[i * d.size()..(i + 1) * d.size()]
}

#[test]
fn host_build_of_the_kernels_matches_the_host_path_bit_for_bit() {
    let mut total = 0;
    for (seed, &(b, w)) in PAIRS.iter().enumerate() {
        total += match (b, w) {
            (DType::F32, DType::F32) => check_pair::<f32, f32>(seed as u64),
            (DType::F32, DType::F16) => check_pair::<f32, f16>(seed as u64),
            (DType::F32, DType::Bf16) => check_pair::<f32, bf16>(seed as u64),
            (DType::F16, DType::F16) => check_pair::<f16, f16>(seed as u64),
            (DType::F16, DType::Bf16) => check_pair::<f16, bf16>(seed as u64),
            (DType::Bf16, DType::F16) => check_pair::<bf16, f16>(seed as u64),
            (DType::Bf16, DType::Bf16) => check_pair::<bf16, bf16>(seed as u64),
            other => panic!("no test for {other:?}"),
        };
    }
    // 7 pairs x 8 lengths x 2 offsets x (5 kinds + 4 exchange forms) x 5 ops.
    assert_eq!(total, 7 * 8 * 2 * 9 * 5);
}

/// A call whose lengths do not match its hop is refused, not run.
#[test]
fn wrong_lengths_are_an_error() {
    let hop = Hop::new(Kind::DecodeReduceEncode, DType::F32, DType::F16, ReduceOp::Sum);
    let mut local = vec![0u8; 40];
    let mut out = vec![0u8; 18];
    let e = host::run(&hop, 10, &[0u8; 20], &mut local, &mut out).unwrap_err().to_string();
    assert!(e.contains("rf_decode_reduce_encode_f32_f16") && e.contains("20/40/20 bytes, got 20/40/18"), "{e}");
    let f64_hop = Hop::new(Kind::Encode, DType::F64, DType::F16, ReduceOp::Sum);
    assert!(f64_hop.kernel_name().unwrap_err().to_string().contains("no device kernel for f64 buffers"));
}
