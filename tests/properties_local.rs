//! Properties of the whole executor on in-process ranks:
//!
//! - any rank count, element count, slot count, slice size, codec and
//!   algorithm gives every rank the exact result, bit for bit the same;
//! - any bytes at all in place of a message (the receive path fuzzed, with
//!   checksums on) end in an error on some rank within the deadline, never
//!   a panic, a hang or a rank returning Ok with a wrong result.

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use ringfuse::op::{Collective, OpDesc};
use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::wire::{write_sealed, Header, HEADER};
use ringfuse::{Algorithm, AllreduceOpts, Codec, DType, ReduceOp};

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

const N: usize = 3;
const COUNT: usize = 300;
/// 64 f32 per slice: two slices per 100-element block.
const SLICE_BYTES: usize = 256;
const T: Duration = Duration::from_millis(400);

/// What replaces rank 1's message: any bytes, or a well-formed header of
/// this very call (any block, slice and flags) sealed with a wrong CRC
/// over a payload of any length, which gets past the first checks.
fn forged() -> impl Strategy<Value = Vec<u8>> {
    let desc = OpDesc {
        kind: Collective::Allreduce,
        seq: 0,
        dtype: DType::F32,
        count: COUNT,
        op: Some(ReduceOp::Sum),
        codec: Codec::Native,
        root: None,
    };
    prop_oneof![
        vec(any::<u8>(), 0..HEADER + SLICE_BYTES + 16),
        (0u32..4, 0u32..3, any::<u16>(), vec(any::<u8>(), 0..SLICE_BYTES + 16)).prop_map(
            move |(block, slice, flags, payload)| {
                let mut msg = vec![0u8; HEADER + payload.len()];
                msg[HEADER..].copy_from_slice(&payload);
                write_sealed(Header { flags, ..Header::new(&desc, block, slice) }, &mut msg, payload.len());
                msg[32] ^= 1; // wrong CRC: the message is never the genuine one
                msg
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_bytes_in_place_of_a_message_end_in_an_error_in_time(msg in 0u64..8, bytes in forged()) {
        let fault = Fault { rank: 1, msg, kind: FaultKind::Replace(bytes) };
        let opts = AllreduceOpts::default().timeout(T).slice_bytes(SLICE_BYTES).checksum(true).algorithm(Algorithm::Ring);
        let outs = ringfuse::local::run(N, |comm| {
            let comm = comm.inject_fault(fault.clone());
            let mut v: Vec<f32> = (0..COUNT).map(|i| value(comm.rank(), i)).collect();
            let t0 = Instant::now();
            let r = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts);
            (r, v, t0.elapsed())
        });
        let want: Vec<f32> = (0..COUNT).map(|i| (0..N).map(|r| value(r, i)).sum()).collect();
        for (r, (res, v, took)) in outs.iter().enumerate() {
            prop_assert!(*took < 2 * T + Duration::from_secs(1), "rank {} took {:?}: {:?}", r, took, res);
            if res.is_ok() {
                prop_assert_eq!(v, &want, "rank {} returned Ok with a wrong result", r);
            }
        }
        prop_assert!(outs.iter().any(|(res, _, _)| res.is_err()), "a replaced message went unnoticed");
    }
}
