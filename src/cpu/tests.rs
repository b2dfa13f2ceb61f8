use half::{bf16, f16};
use rand::{rngs::SmallRng, Rng, SeedableRng};

use super::*;
use crate::element::ReduceOp;

const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];

/// Random values with the specials mixed in: NaN, infinities, signed zeros,
/// subnormals and magnitudes around FP16's overflow threshold.
fn values(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    const SPECIAL: [f32; 12] =
        [f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -0.0, 1e-40, -6e-8, 65504.0, 65519.0, 65520.0, -70000.0, 3.4e38];
    (0..n)
        .map(|_| match rng.random_range(0..10) {
            0 => SPECIAL[rng.random_range(0..SPECIAL.len())],
            1 => rng.random_range(-1e5f32..1e5),
            _ => rng.random_range(-2f32..2.0),
        })
        .collect()
}

fn bits<T: Element>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits_u64()).collect()
}

fn check_wire<W: Element + Default>() {
    let mut rng = SmallRng::seed_from_u64(7);
    // Lengths around the 8- and 16-lane boundaries, so the tails run too.
    for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 33, 1000, 4099] {
        let recv_src = values(&mut rng, n);
        let local0 = values(&mut rng, n);
        let recv: Vec<W> = recv_src.iter().map(|&x| W::from_f32(x)).collect();
        check_kernels(&recv, &local0);
    }
}

/// Every kernel, vector body against scalar body, bit for bit, on these
/// received wire values and local values. Where both operands of a
/// reduction are NaN, any NaN is accepted: which payload wins follows the
/// operand order LLVM picks, and an optimised build picks differently for
/// the vector and scalar bodies (see kernels/README.md).
fn check_kernels<W: Element + Default>(recv: &[W], local0: &[f32]) {
    let n = recv.len();
    let both_nan: Vec<bool> = recv.iter().zip(local0).map(|(r, l)| r.to_f32().is_nan() && l.is_nan()).collect();
    let reduced =
        |v: &[u64]| -> Vec<u64> { v.iter().zip(&both_nan).map(|(&b, &nan)| if nan { u64::MAX } else { b }).collect() };
    let rbits = |v: &[W]| reduced(&bits(v));
    let lbits = |v: &[f32]| reduced(&bits(v));
    {
        // encode
        let (mut a, mut b) = (vec![W::default(); n], vec![W::default(); n]);
        assert_eq!(encode(local0, &mut a), scalar::encode(local0, &mut b), "encode overflow flag, n={n}");
        assert_eq!(bits(&a), bits(&b), "encode, n={n}");
        // decode_store
        let (mut la, mut lb) = (vec![0f32; n], vec![0f32; n]);
        scalar::decode_store(recv, &mut lb);
        for stores in [Stores::Cached, Stores::Streaming] {
            decode_store(recv, &mut la, stores);
            assert_eq!(bits(&la), bits(&lb), "decode_store {stores:?}, n={n}");
        }
        for op in OPS {
            let (mut a, mut b) = (vec![W::default(); n], vec![W::default(); n]);
            let fa = reduce_encode(op, recv, local0, &mut a);
            let fb = scalar::reduce_encode(op, recv, local0, &mut b);
            assert_eq!((fa, rbits(&a)), (fb, rbits(&b)), "reduce_encode {op} n={n}");
            let avg = (op == ReduceOp::Avg).then_some(3);
            // The tree's fold, out of place: as the copy-then-fold it
            // replaces, and the input untouched.
            let (mut want, mut got) = (local0.to_vec(), vec![0f32; n]);
            reduce_into(op, recv, &mut want);
            reduce_into_split(op, recv, (local0, &mut got));
            assert_eq!(lbits(&got), lbits(&want), "reduce_into split {op} n={n}");
            for mine_first in [false, true] {
                let (mut la, mut lb) = (local0.to_vec(), local0.to_vec());
                exchange::<f32, W>(op, recv, &mut la, mine_first, None);
                scalar::exchange::<f32, W>(op, recv, &mut lb, mine_first, None);
                assert_eq!(lbits(&la), lbits(&lb), "exchange {op} n={n}");
                let (mut la, mut lb) = (local0.to_vec(), local0.to_vec());
                let fa = exchange(op, recv, &mut la, mine_first, Some((avg, &mut a[..])));
                let fb = scalar::exchange(op, recv, &mut lb, mine_first, Some((avg, &mut b[..])));
                assert_eq!((fa, rbits(&a), lbits(&la)), (fb, rbits(&b), lbits(&lb)), "exchange final {op} n={n}");
                // Out of place: from the input into another output, the
                // same bits as in place, vector and scalar bodies.
                for fin in [false, true] {
                    let mut want = local0.to_vec();
                    let mut wa = vec![W::default(); n];
                    let fw = exchange(op, recv, &mut want, mine_first, fin.then_some((avg, &mut wa[..])));
                    let (mut da, mut db) = (vec![0f32; n], vec![0f32; n]);
                    let (mut sa, mut sb) = (vec![W::default(); n], vec![W::default(); n]);
                    let ga = exchange_split(op, recv, (local0, &mut da), mine_first, fin.then_some((avg, &mut sa[..])));
                    let gb = scalar::exchange_split(
                        op,
                        recv,
                        (local0, &mut db),
                        mine_first,
                        fin.then_some((avg, &mut sb[..])),
                    );
                    let want = (fw, rbits(&wa), lbits(&want));
                    assert_eq!((ga, rbits(&sa), lbits(&da)), want, "exchange split vector, final {fin}, {op} n={n}");
                    assert_eq!((gb, rbits(&sb), lbits(&db)), want, "exchange split scalar, final {fin}, {op} n={n}");
                }
            }
            let (mut la, mut lb) = (local0.to_vec(), local0.to_vec());
            let fa = reduce_store_encode(op, avg, recv, &mut la, &mut a);
            let fb = scalar::reduce_store_encode(op, avg, recv, &mut lb, &mut b);
            assert_eq!((fa, rbits(&a), lbits(&la)), (fb, rbits(&b), lbits(&lb)), "reduce_store_encode {op} n={n}");
            // Out of place: the same bits as in place, vector and scalar,
            // and the source untouched.
            let (mut da, mut db) = (vec![0f32; n], vec![0f32; n]);
            let (mut sa, mut sb) = (vec![W::default(); n], vec![W::default(); n]);
            for stores in [Stores::Cached, Stores::Streaming] {
                let ga = reduce_store_encode_split(op, avg, recv, (local0, &mut da), &mut sa, (stores, Stores::Cached));
                let want = (fa, rbits(&a), lbits(&la));
                assert_eq!((ga, rbits(&sa), lbits(&da)), want, "split vector {stores:?} {op} n={n}");
            }
            let gb = scalar::reduce_store_encode_split(op, avg, recv, (local0, &mut db), &mut sb);
            assert_eq!((gb, rbits(&sb), lbits(&db)), (fa, rbits(&a), lbits(&la)), "split scalar {op} n={n}");
        }
    }
}

#[test]
fn vector_bodies_match_scalar_fp16() {
    check_wire::<f16>();
}

#[test]
fn vector_bodies_match_scalar_bf16() {
    check_wire::<bf16>();
}

#[test]
fn vector_bodies_match_scalar_f32() {
    check_wire::<f32>();
}

#[test]
fn simd_is_used_where_available() {
    // On the CI machine (x86-64 with AVX2/F16C) the fast path must really
    // be taken, or the comparisons above compare scalar with itself.
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("f16c")
        && !matches!(std::env::var("RINGFUSE_NO_SIMD").as_deref(), Ok("1" | "true" | "on"))
    {
        assert!(simd_active());
    }
}

#[test]
fn fp16_overflow_is_flagged_only_for_finite_values() {
    let mut out = vec![f16::ZERO; 16];
    let mut src = vec![1.0f32; 16];
    assert!(!encode(&src, &mut out));
    src[3] = f32::INFINITY;
    src[12] = f32::NAN;
    assert!(!encode(&src, &mut out), "inf/NaN inputs propagate, they are not overflow");
    src[9] = 65520.0;
    assert!(encode(&src, &mut out));
    src[9] = 65519.0;
    assert!(!encode(&src, &mut out), "65519 rounds to 65504, which is finite");
    assert_eq!(out[9].to_f32(), 65504.0);
}

/// One value at a time, at each side of each wire's overflow threshold and
/// among infinities and NaN payloads, placed where the vector body (not the
/// scalar tail) handles it: the overflow flag of every kernel must be the
/// scalar reference's. The random tests above nearly always hold some
/// overflowing value, so they would not see a flag that is wrong alone.
#[test]
fn overflow_flags_match_scalar_one_value_at_a_time() {
    const BITS: [u32; 12] = [
        0x477F_EFFF, // just under 65520: rounds to FP16's max
        0x477F_F000, // 65520: FP16 infinity
        0x4780_0000, // 65536
        0x7F7F_7FFF, // just under BF16's rounding threshold
        0x7F7F_8000, // rounds to BF16 infinity
        0x7F7F_FFFF, // f32::MAX
        0x7F80_0000, // inf
        0x7F80_0001, // signalling NaN
        0x7FC0_0000, // quiet NaN
        0x7FFF_FFFF, // NaN, every payload bit set
        0x0000_0001, // smallest subnormal
        0x3F80_0000, // 1.0
    ];
    // 43 elements: one 4-vector iteration, one single vector, a scalar tail.
    fn check<W: Element + Default>(x: f32, at: usize) {
        let mut local = vec![0.5f32; 43];
        local[at] = x;
        let small = vec![W::from_f32(0.25); 43];
        let (mut a, mut b) = (vec![W::default(); 43], vec![W::default(); 43]);
        assert_eq!(encode(&local, &mut a), scalar::encode(&local, &mut b), "encode {x:e}");
        for op in OPS {
            let v = reduce_encode(op, &small, &local, &mut a);
            assert_eq!(v, scalar::reduce_encode(op, &small, &local, &mut b), "reduce_encode {op:?} {x:e}");
            let (mut la, mut lb) = (local.clone(), local.clone());
            let v = reduce_store_encode(op, Some(1), &small, &mut la, &mut a);
            let s = scalar::reduce_store_encode(op, Some(1), &small, &mut lb, &mut b);
            assert_eq!(v, s, "reduce_store_encode {op:?} {x:e}");
            for stores in [Stores::Cached, Stores::Streaming] {
                let v =
                    reduce_store_encode_split(op, Some(1), &small, (&local, &mut la), &mut a, (stores, Stores::Cached));
                assert_eq!(v, s, "reduce_store_encode_split {stores:?} {op:?} {x:e}");
            }
        }
    }
    for b in BITS {
        for (x, at) in [(f32::from_bits(b), 5), (-f32::from_bits(b), 29), (f32::from_bits(b), 35)] {
            check::<f16>(x, at);
            check::<bf16>(x, at);
            check::<f32>(x, at);
        }
    }
}

/// Streaming stores need 32-byte alignment, so those kernels cover an
/// unaligned start and end with cached vectors that overlap the streamed
/// ones. At every alignment of the output, and lengths around one, two
/// and five vectors, they must write what the cached kernels write, and
/// nothing outside their slice.
#[test]
fn streaming_stores_write_the_same_bits_at_every_alignment() {
    let mut rng = SmallRng::seed_from_u64(11);
    for n in [1usize, 7, 8, 9, 15, 16, 17, 24, 33, 40, 41, 100] {
        let recv: Vec<f16> = values(&mut rng, n).iter().map(|&x| f16::from_f32(x)).collect();
        let src = values(&mut rng, n);
        for off in 0..8 {
            let fresh = || vec![-7.0f32; n + 16];
            let (mut want, mut got) = (fresh(), fresh());
            decode_store(&recv, &mut want[off..off + n], Stores::Cached);
            decode_store(&recv, &mut got[off..off + n], Stores::Streaming);
            assert_eq!(bits(&got), bits(&want), "decode_store n={n} offset={off}");
            for op in [ReduceOp::Sum, ReduceOp::Avg] {
                let avg = (op == ReduceOp::Avg).then_some(3);
                let (mut want, mut got) = (fresh(), fresh());
                let (mut wa, mut wb) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
                let fa = reduce_store_encode_split(
                    op,
                    avg,
                    &recv,
                    (&src, &mut want[off..off + n]),
                    &mut wa,
                    (Stores::Cached, Stores::Cached),
                );
                let fb = reduce_store_encode_split(
                    op,
                    avg,
                    &recv,
                    (&src, &mut got[off..off + n]),
                    &mut wb,
                    (Stores::Streaming, Stores::Cached),
                );
                let what = format!("split {op} n={n} offset={off}");
                assert_eq!((fb, bits(&wb), bits(&got)), (fa, bits(&wa), bits(&want)), "{what}");
            }
        }
    }
}

/// Streamed wire stores need the wire aligned (32 bytes for `f32`, 16 for
/// the 16-bit wires), so those kernels run the elements before the first
/// aligned one in the portable body. At every alignment of the wire (and,
/// for the split hop, of the output), and lengths around one, two and five
/// vectors, they must write the cached kernels' bits and overflow flag,
/// and nothing outside their slices. Where both operands are NaN any NaN
/// is accepted, as between the vector and portable bodies (see
/// [`check_kernels`]); every rank still holds the same bits, because each
/// element's final value is formed once and copied.
#[test]
fn streamed_wire_writes_the_same_bits_at_every_alignment() {
    check_streamed_wire::<f16>();
    check_streamed_wire::<bf16>();
    check_streamed_wire::<f32>();
}

fn check_streamed_wire<W: Element + Default>() {
    let mut rng = SmallRng::seed_from_u64(13);
    let lanes = 32 / std::mem::size_of::<W>();
    let (c, s) = (Stores::Cached, Stores::Streaming);
    for n in [1usize, 7, 8, 9, 15, 16, 17, 24, 33, 40, 41, 100] {
        let recv: Vec<W> = values(&mut rng, n).iter().map(|&x| W::from_f32(x)).collect();
        let src = values(&mut rng, n);
        let both_nan: Vec<bool> = recv.iter().zip(&src).map(|(r, l)| r.to_f32().is_nan() && l.is_nan()).collect();
        // Bits of a padded buffer whose slice at `at` a kernel wrote, with
        // positions where both operands were NaN made alike.
        let seen = |v: &[u64], at: usize| -> Vec<u64> {
            let mut v = v.to_vec();
            for (i, &nan) in both_nan.iter().enumerate() {
                if nan {
                    v[at + i] = u64::MAX;
                }
            }
            v
        };
        let sentinel = W::from_f32(-7.0);
        for w in 0..lanes {
            let wire = || vec![sentinel; n + lanes];
            let (mut wa, mut wb) = (wire(), wire());
            let fa = encode(&src, &mut wa[w..w + n]);
            let fb = encode_to(&src, &mut wb[w..w + n], s);
            assert_eq!((fb, bits(&wb)), (fa, bits(&wa)), "encode n={n} wire offset={w}");
            for op in OPS {
                let avg = (op == ReduceOp::Avg).then_some(3);
                let what = format!("{op} n={n} wire offset={w}");
                let (mut wa, mut wb) = (wire(), wire());
                let fa = reduce_encode(op, &recv, &src, &mut wa[w..w + n]);
                let fb = reduce_encode_to(op, &recv, &src, &mut wb[w..w + n], s);
                assert_eq!((fb, seen(&bits(&wb), w)), (fa, seen(&bits(&wa), w)), "reduce_encode {what}");
                let (mut wa, mut wb) = (wire(), wire());
                let (mut la, mut lb) = (src.clone(), src.clone());
                let fa = reduce_store_encode(op, avg, &recv, &mut la, &mut wa[w..w + n]);
                let fb = reduce_store_encode_to(op, avg, &recv, &mut lb, &mut wb[w..w + n], s);
                let got = (fb, seen(&bits(&wb), w), seen(&bits(&lb), 0));
                assert_eq!(got, (fa, seen(&bits(&wa), w), seen(&bits(&la), 0)), "in place {what}");
                for d in 0..8 {
                    let out = || vec![-7.0f32; n + 8];
                    let (mut da, mut wa) = (out(), wire());
                    let fa =
                        reduce_store_encode_split(op, avg, &recv, (&src, &mut da[d..d + n]), &mut wa[w..w + n], (c, c));
                    let want = (fa, seen(&bits(&wa), w), seen(&bits(&da), d));
                    for output in [c, s] {
                        let (mut db, mut wb) = (out(), wire());
                        let dst = &mut db[d..d + n];
                        let fb = reduce_store_encode_split(op, avg, &recv, (&src, dst), &mut wb[w..w + n], (output, s));
                        let got = (fb, seen(&bits(&wb), w), seen(&bits(&db), d));
                        assert_eq!(got, want, "split {output:?} {what} output offset={d}");
                    }
                }
            }
        }
    }
}

#[test]
fn rounding_is_nearest_even() {
    // 1 + 2^-11 is halfway between two f16 values; ties go to the even one.
    let mut out = [f16::ZERO; 8];
    encode(&[1.0 + 2f32.powi(-11); 8], &mut out);
    assert_eq!(out[0].to_bits(), 0x3c00);
    encode(&[1.0 + 3.0 * 2f32.powi(-11); 8], &mut out);
    assert_eq!(out[0].to_bits(), 0x3c02);
    let mut outb = [bf16::ZERO; 8];
    encode(&[1.0 + 2f32.powi(-8); 8], &mut outb);
    assert_eq!(outb[0].to_bits(), 0x3f80);
    encode(&[1.0 + 3.0 * 2f32.powi(-8); 8], &mut outb);
    assert_eq!(outb[0].to_bits(), 0x3f82);
}

#[test]
fn f64_to_bf16_is_one_correct_rounding() {
    // Every f32 value must convert from f64 exactly as from f32 (which is a
    // single rounding); half's own bf16::from_f64 fails this.
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..200_000 {
        let x = f32::from_bits(rng.random::<u32>());
        if x.is_nan() {
            continue;
        }
        let want = bf16::from_f32(x).to_bits();
        assert_eq!(<bf16 as Element>::from_f64(x as f64).to_bits(), want, "{x:e}");
        assert_eq!(<f16 as Element>::from_f64(x as f64).to_bits(), f16::from_f32(x).to_bits(), "{x:e}");
    }
    // Halfway in bf16 but above it in f64: must round up, not to even.
    let v = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
    assert_eq!(<bf16 as Element>::from_f64(v).to_bits(), 0x3f81);
}

// The wire decoders fuzzed: any 16-bit patterns as received values (every
// NaN payload, subnormal and infinity) and any f32 bits as local values;
// the vector and scalar bodies must agree bit for bit and not panic.
mod fuzz {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fp16_kernels_take_any_wire_bits(wire in vec(any::<u16>(), 0..80), seed in any::<u64>()) {
            let local: Vec<f32> = (0..wire.len() as u64).map(|i| f32::from_bits((seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u32)).collect();
            check_kernels(&wire.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>(), &local);
        }

        #[test]
        fn bf16_kernels_take_any_wire_bits(wire in vec(any::<u16>(), 0..80), local in vec(any::<u32>(), 80)) {
            let local: Vec<f32> = local[..wire.len()].iter().map(|&b| f32::from_bits(b)).collect();
            check_kernels(&wire.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>(), &local);
        }
    }
}

mod block_scaled {
    use super::super::blocked::{self, Int8, Quant, ScaledF16};
    use super::*;

    fn round_trip<Q: Quant>(vals: &[f32], block: usize) -> (Vec<f32>, bool) {
        let mut wire = vec![0u8; blocked::bytes::<Q>(vals.len(), block)];
        let over = blocked::encode::<f32, Q>(block, vals, &mut wire);
        let mut back = vec![0f32; vals.len()];
        blocked::decode_store::<f32, Q>(block, &wire, &mut back);
        (back, over)
    }

    /// Int8: every element within half a step (block absmax / 254) of its
    /// value, the block's largest value exact, zeros stay zero.
    #[test]
    fn int8_rounds_within_half_a_step_of_the_block_max() {
        let mut rng = SmallRng::seed_from_u64(11);
        for block in [1usize, 32, 100, 1024, 4096] {
            let vals: Vec<f32> =
                (0..5000).map(|_| rng.random_range(-3f32..3.0) * 10f32.powi(rng.random_range(-3..3))).collect();
            let (back, over) = round_trip::<Int8>(&vals, block);
            assert!(!over);
            for (b, chunk) in vals.chunks(block).enumerate() {
                let m = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, v) in chunk.iter().enumerate() {
                    let got = back[b * block + i];
                    assert!((got - v).abs() <= m / 254.0 * 1.0001, "block {block}: {v} came back as {got}");
                    if v.abs() == m {
                        assert!((got - v).abs() <= m * 1e-6, "the block max {v} came back as {got}");
                    }
                }
            }
        }
        let (z, _) = round_trip::<Int8>(&[0.0; 40], 32);
        assert!(z.iter().all(|v| *v == 0.0));
    }

    /// Int8 cannot carry infinities or NaN: the encode says so.
    #[test]
    fn int8_flags_values_it_cannot_carry() {
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY] {
            let (_, over) = round_trip::<Int8>(&[1.0, bad, 2.0], 32);
            assert!(over, "{bad} must be flagged");
        }
    }

    /// Scaled FP16: FP16's relative precision at any magnitude f32 holds
    /// (no overflow at 1e30, no underflow at 1e-30), and infinities and
    /// NaN pass through without flattening their block's other values.
    #[test]
    fn scaled_fp16_keeps_relative_precision_at_any_magnitude() {
        let mut rng = SmallRng::seed_from_u64(12);
        for mag in [1e-30f32, 1e-8, 1.0, 6e4, 1e30, 3e38] {
            let vals: Vec<f32> = (0..3000).map(|_| rng.random_range(0.5f32..1.0) * mag).collect();
            let (back, over) = round_trip::<ScaledF16>(&vals, 256);
            assert!(!over);
            for (v, b) in vals.iter().zip(&back) {
                assert!(((b - v) / v).abs() <= 2f32.powi(-11), "{v} came back as {b}");
            }
        }
        let (back, _) = round_trip::<ScaledF16>(&[1.5, f32::INFINITY, f32::NAN, -0.25], 32);
        assert_eq!((back[0], back[1], back[3]), (1.5, f32::INFINITY, -0.25));
        assert!(back[2].is_nan());
    }

    /// The block-scaled exchange, with `fin`, gives what a ring's last hop
    /// would: both partners, combining in either order of arrival, hold
    /// the same bits.
    #[test]
    fn exchange_gives_both_partners_the_same_bits() {
        let mut rng = SmallRng::seed_from_u64(13);
        let a: Vec<f32> = (0..777).map(|_| rng.random_range(-2f32..2.0)).collect();
        let b: Vec<f32> = (0..777).map(|_| rng.random_range(-2f32..2.0)).collect();
        for op in OPS {
            let block = 64;
            let wire = |v: &[f32]| {
                let mut w = vec![0u8; blocked::bytes::<Int8>(v.len(), block)];
                blocked::encode::<f32, Int8>(block, v, &mut w);
                w
            };
            let (wa, wb) = (wire(&a), wire(&b));
            let (mut la, mut lb) = (a.clone(), b.clone());
            let (mut fa, mut fb) = (wa.clone(), wb.clone());
            blocked::exchange::<f32, Int8>(block, op, &wb, &mut la, true, Some((None, &mut fa)));
            blocked::exchange::<f32, Int8>(block, op, &wa, &mut lb, false, Some((None, &mut fb)));
            assert_eq!(bits(&la), bits(&lb), "{op}");
            assert_eq!(fa, fb, "{op}: final wire bytes");
        }
    }
}
