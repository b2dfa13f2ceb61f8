//! The out-of-place allreduce (`Communicator::allreduce_into`) on
//! in-process ranks: for every algorithm, rank count, codec and a spread
//! of counts, it must give the very bits of copying the input into the
//! output and reducing in place, and leave the input as it was. Small
//! slices make the blocks span many messages, so the executor's record of
//! which output ranges still live only in the input is split and merged
//! many ways.

mod common;

use common::*;
use ringfuse::{Algorithm, AllreduceOpts, BufferState, Codec, Element, Error, ReduceOp};

const ALGOS: [Algorithm; 6] = [
    Algorithm::Ring,
    Algorithm::RecursiveDoubling,
    Algorithm::Tree,
    Algorithm::HalvingDoubling,
    Algorithm::Hierarchical,
    Algorithm::Auto,
];

fn case(n: usize, count: usize, op: ReduceOp, codec: Codec, algo: Algorithm, slice_bytes: usize) {
    let what = format!("{n}x{count} {op} {codec} {algo:?} slice {slice_bytes}");
    let opts = AllreduceOpts::default()
        .codec(codec)
        .algorithm(algo)
        .slice_bytes(slice_bytes)
        .timeout(std::time::Duration::from_secs(60));
    let inputs: Vec<Vec<f32>> = (0..n).map(|r| input::<f32>(r, count, op, codec, 11)).collect();
    let out = ringfuse::local::run(n, |mut comm| {
        if algo == Algorithm::Hierarchical && n % 2 == 0 {
            comm.set_ranks_per_host(2).unwrap();
        }
        let mine = &inputs[comm.rank()];
        let mut in_place = mine.clone();
        comm.allreduce_with(&mut in_place, op, &opts).unwrap_or_else(|e| panic!("{what}: in place: {e}"));
        let input = mine.clone();
        let mut output = vec![f32::NAN; count];
        comm.allreduce_into_with(&input, &mut output, op, &opts).unwrap_or_else(|e| panic!("{what}: into: {e}"));
        assert_eq!(bits(&input), bits(mine), "{what}: rank {}: the input changed", comm.rank());
        (in_place, output)
    });
    for (r, (in_place, output)) in out.iter().enumerate() {
        assert_eq!(bits(output), bits(in_place), "{what}: rank {r}: out of place differs from in place");
        assert_eq!(bits(output), bits(&out[0].1), "{what}: rank {r} differs from rank 0");
    }
    check_result(&inputs, &out[0].1, op, codec, &what);
}

#[test]
fn out_of_place_gives_the_bits_of_copy_then_in_place() {
    for n in [1, 2, 3, 4, 5, 8, 9] {
        for count in [0usize, 1, 7, 33, 101, 1009, 10007] {
            for (i, op) in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max].into_iter().enumerate() {
                for codec in CODECS {
                    for algo in ALGOS {
                        if !algo.supports(f32::DTYPE, codec) {
                            continue;
                        }
                        // 64 B slices track fresh ranges from 17 elements up;
                        // 4 KiB ones copy whole buffers below 1025.
                        case(n, count, op, codec, algo, if i % 2 == 0 { 64 } else { 4096 });
                    }
                }
            }
        }
    }
}

#[test]
fn out_of_place_on_the_default_slices() {
    for n in [2, 3, 4] {
        for algo in ALGOS {
            case(n, 3 << 18, ReduceOp::Sum, Codec::Fp16, algo, 0);
        }
    }
}

#[test]
fn out_of_place_names_a_wrong_output_length() {
    let errs = ringfuse::local::run(2, |comm| {
        let mut short = vec![0f32; 9];
        comm.allreduce_into(&[1f32; 10], &mut short, ReduceOp::Sum).unwrap_err()
    });
    for (r, e) in errs.iter().enumerate() {
        match e {
            Error::Length { rank, what, expected: 10, got: 9, .. } => {
                assert_eq!((*rank, *what), (r, "output"));
            }
            other => panic!("rank {r}: {other}"),
        }
    }
    assert!(errs[0].to_string().contains("output"), "{}", errs[0]);
}

/// An error says whether the output was written: a call within one
/// message copies the input in first, so it never calls it untouched; a
/// larger call that fails before any hop leaves it as the caller had it.
#[test]
fn a_failed_call_says_whether_it_wrote_the_output() {
    let out = ringfuse::local::run(2, |comm| {
        comm.abort();
        let state = |count: usize| {
            let mut output = vec![f32::NAN; count];
            match comm.allreduce_into(&vec![1f32; count], &mut output, ReduceOp::Sum) {
                Err(Error::Aborted { buffer, .. }) => (buffer, output.iter().all(|x| x.is_nan())),
                other => panic!("{other:?}"),
            }
        };
        (state(16), state(1 << 20))
    });
    for o in out {
        assert_eq!(o, ((BufferState::Partial, false), (BufferState::Untouched, true)));
    }
}
