//! The host-staged carrier over in-process threads (the local transport),
//! on the kernels' host build, against the CPU backend bit for bit.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::cuda::codec_for;
use crate::cuda::reference::{first_difference, host_allreduce_of};
use crate::cuda::twin::{inputs, show, HostRank};
use crate::cuda::PAIRS;
use crate::element::{DType, ReduceOp};
use crate::error::Error;
use crate::transport::local::{LocalTransport, LocalWorld};
use crate::{Algorithm, AllreduceOpts, Communicator};

/// Each rank's staged result and the host executor's, on the same
/// communicator (`size` threads, `per_host` ranks per host) with the same
/// options: (staged bytes, staged overflowed, host bytes, host overflowed).
fn staged_and_host(
    input: &[Vec<u8>],
    buffer: DType,
    wire: DType,
    op: ReduceOp,
    opts: &AllreduceOpts,
    per_host: usize,
) -> Vec<(Vec<u8>, bool, Vec<u8>, bool)> {
    let count = input[0].len() / buffer.size();
    let world = LocalWorld::new(input.len());
    let opts = opts.clone().codec(codec_for(buffer, wire).unwrap());
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..input.len())
            .map(|r| {
                let (world, opts) = (world.clone(), opts.clone());
                s.spawn(move || {
                    let comm = Communicator::tuned(Box::new(LocalTransport::new(world, r)), per_host).unwrap();
                    let overflowed = |res: crate::Result<()>| match res {
                        Ok(()) => false,
                        Err(Error::WireOverflow { .. }) => true,
                        Err(e) => panic!("rank {r}: {e}"),
                    };
                    let (want, host) = host_allreduce_of(&comm, &input[r], buffer, op, &opts);
                    let mut mem = HostRank::new(&input[r]);
                    let over = overflowed(comm.allreduce_staged(&mut mem, buffer, count, op, &opts));
                    (mem.result(), over, want, overflowed(host))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every pair and algorithm (`Auto` and the hierarchical one on two
/// hosts included) over 2-5 ranks, with one and two sends in flight,
/// checksums on and off,
/// default and 32-element slices (which shape the tree's and halving's
/// blocks), on inputs with every special: the bits `allreduce_with` gives
/// with the same options on the same communicator (NaN payloads aside
/// where two NaNs meet), and the same overflow report on every rank.
#[test]
fn staged_over_threads_matches_the_host_executor_with_the_same_options() {
    let mut rng = SmallRng::seed_from_u64(21);
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let algos = Algorithm::FIXED.into_iter().chain([Algorithm::Auto]);
    let mut cases = 0;
    for (i, &(buffer, wire)) in PAIRS.iter().enumerate() {
        for size in [2usize, 3, 4, 5] {
            // Two hosts where the size splits evenly, else hosts unknown.
            let per_host = if size % 2 == 0 { size / 2 } else { 0 };
            for count in [1usize, 3, 1000, 10007] {
                let op = ops[(i + size + count) % ops.len()];
                for (a, algo) in algos.clone().enumerate() {
                    let what = format!("{size} ranks, {count} {buffer} over {wire}, {op}, {algo:?}");
                    let input = inputs(&mut rng, size, count, buffer, op);
                    // Small messages on every other case: blocks go in many
                    // slices, more than the slots in flight.
                    let opts = AllreduceOpts::default().algorithm(algo).slots(1 + a % 2).checksum(count % 2 == 1);
                    let opts = if (a + size) % 2 == 0 { opts.slice_bytes(128) } else { opts };
                    let got = staged_and_host(&input, buffer, wire, op, &opts, per_host);
                    for (r, (bytes, over, want, want_over)) in got.iter().enumerate() {
                        if let Some(e) = first_difference(bytes, want, buffer) {
                            panic!("{what}: rank {r} differs at {}", show(bytes, want, &input, e, buffer.size()));
                        }
                        assert_eq!(over, want_over, "{what}: rank {r}'s overflow report");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * 4 * 4 * 6);
}

/// Ranks that call with different counts get an error naming the other
/// call (or, told by it, the rank that failed), not a hang or wrong
/// numbers; and options the device
/// path does not take are refused up front.
#[test]
fn mismatched_calls_and_unsupported_options_are_errors() {
    let errs = crate::local::run(3, |comm| {
        let count = if comm.rank() == 2 { 1001 } else { 1000 };
        let mut mem = HostRank::new(&vec![0u8; count * 4]);
        let opts = AllreduceOpts::default().codec(crate::Codec::Fp16).timeout(std::time::Duration::from_secs(5));
        comm.allreduce_staged(&mut mem, DType::F32, count, ReduceOp::Sum, &opts).unwrap_err().to_string()
    });
    for (r, e) in errs.iter().enumerate() {
        assert!(e.contains(&format!("rank {r}")), "rank {r}: {e}");
        // The rank that sees the other call names it; the others are told
        // at once (no deadline passes: the test's timeout is 5 s).
        // (A message too large for the receiver's slot is the carrier's
        // error, naming the peer that sent it.)
        let named = e.contains("but rank 2 called allreduce#0(f32, 1001") || e.contains("with peer 2");
        assert!(named || e.contains("aborted"), "rank {r}: {e}");
        eprintln!("{e}");
    }
    let e = crate::local::run(2, |comm| {
        let mut mem = HostRank::new(&[0u8; 8]);
        let opts = AllreduceOpts::default().codec(crate::Codec::Int8);
        comm.allreduce_staged(&mut mem, DType::F32, 2, ReduceOp::Sum, &opts).unwrap_err().to_string()
    });
    assert!(e[0].contains("no device kernels"), "{}", e[0]);
}
