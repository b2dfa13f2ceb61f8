//! reduce_scatter, allgather, broadcast and barrier on in-process ranks,
//! including uneven and tiny sizes, and their consistency with allreduce.

mod common;

use common::*;
use half::f16;
use ringfuse::{Algorithm, AllreduceOpts, Codec, ReduceOp};

fn small(codec: Codec) -> AllreduceOpts {
    AllreduceOpts::default().codec(codec).slice_bytes(128).slots(2)
}

#[test]
fn reduce_scatter_then_allgather_equals_ring_allreduce_bitwise() {
    for n in [1, 2, 3, 5, 8] {
        for per_rank in [0, 1, 7, 333] {
            for codec in CODECS {
                let count = per_rank * n;
                let inputs: Vec<Vec<f32>> = (0..n).map(|r| input::<f32>(r, count, ReduceOp::Sum, codec, 9)).collect();
                let out = ringfuse::local::run(n, |comm| {
                    let opts = small(codec);
                    let mut full = inputs[comm.rank()].clone();
                    let ring = opts.clone().algorithm(Algorithm::Ring);
                    comm.allreduce_with(&mut full, ReduceOp::Sum, &ring).unwrap();
                    let mut mine = vec![0f32; per_rank];
                    comm.reduce_scatter_with(&inputs[comm.rank()], &mut mine, ReduceOp::Sum, &opts).unwrap();
                    let mut gathered = vec![0f32; count];
                    comm.allgather_with(&mine, &mut gathered, &opts).unwrap();
                    (full, gathered)
                });
                for (r, (full, gathered)) in out.iter().enumerate() {
                    assert_eq!(bits(full), bits(gathered), "n={n} per_rank={per_rank} {codec} rank {r}");
                }
            }
        }
    }
}

#[test]
fn allgather_places_each_rank_block_in_order() {
    for n in [1, 2, 3, 4, 7] {
        for per_rank in [0, 1, 5, 1000] {
            let out = ringfuse::local::run(n, |comm| {
                let mine: Vec<f64> = (0..per_rank).map(|i| (comm.rank() * 100_000 + i) as f64).collect();
                let mut all = vec![0f64; per_rank * n];
                comm.allgather_with(&mine, &mut all, &small(Codec::Native)).unwrap();
                all
            });
            let want: Vec<f64> = (0..n).flat_map(|r| (0..per_rank).map(move |i| (r * 100_000 + i) as f64)).collect();
            assert!(out.iter().all(|o| o == &want), "n={n} per_rank={per_rank}");
        }
    }
}

#[test]
fn allgather_with_lossy_codec_gives_owner_the_wire_value_too() {
    let out = ringfuse::local::run(3, |comm| {
        let mine = vec![0.1f32 * (comm.rank() + 1) as f32; 50];
        let mut all = vec![0f32; 150];
        comm.allgather_with(&mine, &mut all, &small(Codec::Fp16)).unwrap();
        all
    });
    assert!(out.iter().all(|o| bits(o) == bits(&out[0])));
    assert_eq!(out[0][0], f16::from_f32(0.1).to_f32());
}

#[test]
fn broadcast_from_every_root() {
    for n in [1, 2, 3, 6] {
        for root in 0..n {
            for count in [0, 1, 100, 10007] {
                let out = ringfuse::local::run(n, |comm| {
                    let mut buf: Vec<f32> = if comm.rank() == root {
                        (0..count).map(|i| i as f32 * 0.5).collect()
                    } else {
                        vec![-1.0; count]
                    };
                    comm.broadcast_with(&mut buf, root, &small(Codec::Native)).unwrap();
                    buf
                });
                let want: Vec<f32> = (0..count).map(|i| i as f32 * 0.5).collect();
                assert!(out.iter().all(|o| o == &want), "n={n} root={root} count={count}");
            }
        }
    }
}

#[test]
fn broadcast_with_bf16_wire_is_identical_on_all_ranks_root_included() {
    let out = ringfuse::local::run(4, |comm| {
        let mut buf: Vec<f32> =
            if comm.rank() == 2 { (0..999).map(|i| 1.0 + i as f32 * 1e-3).collect() } else { vec![0.0; 999] };
        comm.broadcast_with(&mut buf, 2, &small(Codec::Bf16)).unwrap();
        buf
    });
    assert!(out.iter().all(|o| bits(o) == bits(&out[0])));
    assert_eq!(out[0][1], half::bf16::from_f32(1.001).to_f32());
}

#[test]
fn barrier_returns_on_every_rank_repeatedly() {
    for n in [1, 2, 3, 5, 8] {
        let out = ringfuse::local::run(n, |comm| {
            for _ in 0..20 {
                comm.barrier().unwrap();
            }
            comm.rank()
        });
        assert_eq!(out, (0..n).collect::<Vec<_>>());
    }
}

/// A barrier holds every rank until the last has entered: each rank counts
/// itself in before the barrier, with ranks arriving at staggered times,
/// and must see every rank counted when it leaves.
#[test]
fn no_rank_leaves_a_barrier_before_the_last_enters() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for n in [2, 3, 5, 8] {
        for round in 0..3usize {
            let entered = AtomicUsize::new(0);
            let seen = ringfuse::local::run(n, |comm| {
                // A different rank is last each round.
                let late = (comm.rank() + round) % n;
                std::thread::sleep(std::time::Duration::from_millis(5 * late as u64));
                entered.fetch_add(1, Ordering::SeqCst);
                comm.barrier().unwrap();
                entered.load(Ordering::SeqCst)
            });
            assert!(seen.iter().all(|&k| k == n), "{n} ranks, round {round}: ranks left having seen {seen:?} enter");
        }
    }
}

#[test]
fn many_calls_in_a_row_reuse_the_communicator() {
    // Sequence numbers and slots carry over between calls; mixing sizes,
    // codecs and collectives on one communicator must keep working.
    let out = ringfuse::local::run(3, |comm| {
        let mut acc = 0f64;
        for i in 0..200usize {
            let codec = CODECS[i % 3];
            let mut v = vec![(comm.rank() + i) as f32; 1 + (i * 37) % 3000];
            comm.allreduce_with(&mut v, ReduceOp::Max, &small(codec)).unwrap();
            acc += v[0] as f64;
            if i % 50 == 0 {
                comm.barrier().unwrap();
            }
        }
        acc
    });
    let want: f64 = (0..200).map(|i| (2 + i) as f64).sum();
    assert!(out.iter().all(|&a| a == want));
}
