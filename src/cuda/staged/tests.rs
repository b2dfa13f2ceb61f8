//! The host-staged carrier over in-process threads (the local transport),
//! on the kernels' host build, against the CPU backend bit for bit.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::cuda::reference::{codec_for, cpu_allreduce, first_difference};
use crate::cuda::twin::{inputs, show, HostRank};
use crate::cuda::PAIRS;
use crate::element::{DType, ReduceOp};
use crate::error::Error;
use crate::{Algorithm, AllreduceOpts};

/// Each rank's result and whether it reported overflow.
fn staged(input: &[Vec<u8>], buffer: DType, wire: DType, op: ReduceOp, opts: &AllreduceOpts) -> Vec<(Vec<u8>, bool)> {
    let count = input[0].len() / buffer.size();
    crate::local::run(input.len(), |comm| {
        let mut mem = HostRank::new(&input[comm.rank()]);
        let opts = opts.clone().codec(codec_for(buffer, wire).unwrap());
        let over = match comm.allreduce_staged(&mut mem, buffer, count, op, &opts) {
            Ok(()) => false,
            Err(Error::Fp16Overflow { .. }) => true,
            Err(e) => panic!("rank {}: {e}", comm.rank()),
        };
        (mem.result(), over)
    })
}

/// Every pair and algorithm over 2-5 ranks, with one and two sends in
/// flight, whole blocks and 32-element slices, on inputs with every special: the CPU backend's bits (NaN
/// payloads aside where two NaNs meet), and the same overflow report on
/// every rank.
#[test]
fn staged_over_threads_matches_the_cpu_backend() {
    let mut rng = SmallRng::seed_from_u64(21);
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let algos = [Algorithm::Ring, Algorithm::RecursiveDoubling, Algorithm::Tree, Algorithm::HalvingDoubling];
    let mut cases = 0;
    for (i, &(buffer, wire)) in PAIRS.iter().enumerate() {
        for size in [2usize, 3, 4, 5] {
            for count in [1usize, 3, 1000, 10007] {
                let op = ops[(i + size + count) % ops.len()];
                for (a, algo) in algos.into_iter().enumerate() {
                    let what = format!("{size} ranks, {count} {buffer} over {wire}, {op}, {algo:?}");
                    let input = inputs(&mut rng, size, count, buffer, op);
                    let (want, want_over) = cpu_allreduce(&input, buffer, wire, op, algo).unwrap();
                    // Small messages on every other case: blocks go in many
                    // slices, more than the slots in flight.
                    let opts = AllreduceOpts::default().algorithm(algo).slots(1 + a % 2);
                    let opts = if (a + size) % 2 == 0 { opts.slice_bytes(128) } else { opts };
                    let got = staged(&input, buffer, wire, op, &opts);
                    for (r, (bytes, over)) in got.iter().enumerate() {
                        if let Some(e) = first_difference(bytes, &want[r], buffer) {
                            panic!("{what}: rank {r} differs at {}", show(bytes, &want[r], &input, e, buffer.size()));
                        }
                        assert_eq!(*over, want_over, "{what}: rank {r}'s overflow report");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * 4 * 4 * 4);
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
