//! Properties of the whole executor on in-process ranks:
//!
//! - any rank count, element count, slot count, slice size, codec and
//!   algorithm gives every rank the exact result, bit for bit the same;
//! - any bytes at all in place of a message (the receive path fuzzed, with
//!   checksums on) end in an error on some rank within the deadline, never
//!   a panic, a hang or a rank returning Ok with a wrong result.

#[path = "common/forged.rs"]
mod forged;

use proptest::prelude::*;
use ringfuse::{Algorithm, AllreduceOpts, Codec, ReduceOp};

/// Small integers: every partial sum of up to 6 ranks is exact in f32,
/// fp16 and bf16, so results are compared for equality.
fn value(rank: usize, i: usize) -> f32 {
    ((rank * 5 + i * 3) % 11) as f32 - 5.0
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Ring), Just(Algorithm::RecursiveDoubling), Just(Algorithm::Auto)]
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::Native), Just(Codec::Fp16), Just(Codec::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_shape_gives_every_rank_the_exact_result(
        n in 1usize..=6,
        count in prop_oneof![0usize..16, 0usize..5000],
        slots in 1usize..=4,
        slice_bytes in prop_oneof![64usize..256, 256usize..8192],
        codec in codec(),
        algo in algorithm(),
        max in any::<bool>(),
    ) {
        let op = if max { ReduceOp::Max } else { ReduceOp::Sum };
        let opts = AllreduceOpts::default().slots(slots).slice_bytes(slice_bytes).codec(codec).algorithm(algo);
        let outs = ringfuse::local::run(n, |comm| {
            let mut v: Vec<f32> = (0..count).map(|i| value(comm.rank(), i)).collect();
            comm.allreduce_with(&mut v, op, &opts).map(|()| v).map_err(|e| e.to_string())
        });
        let want: Vec<f32> = (0..count)
            .map(|i| {
                let xs = (0..n).map(|r| value(r, i));
                if max { xs.fold(f32::MIN, f32::max) } else { xs.sum() }
            })
            .collect();
        for (r, out) in outs.iter().enumerate() {
            let got = out.as_ref().map_err(|e| TestCaseError::fail(e.clone()))?;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(got), bits(&want), "rank {}", r);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_bytes_in_place_of_a_message_end_in_an_error_in_time((msg, bytes) in forged::cases()) {
        let seen = ringfuse::local::run(forged::N, |comm| forged::run_rank(comm, msg, bytes.clone()));
        for (r, s) in seen.iter().enumerate() {
            if let Err(e) = forged::check_rank(r, s) {
                prop_assert!(false, "{}", e);
            }
        }
        prop_assert!(seen.iter().any(|s| s.result.is_err()), "a replaced message went unnoticed");
    }
}
