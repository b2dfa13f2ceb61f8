//! The scale model: real schedules replayed at cluster sizes, checked
//! for deadlocks and against the closed forms they must agree with.

use ringfuse::sim::{predict, Cluster, Link, Plan};
use ringfuse::Algorithm;

fn cluster(ranks: usize, per_host: usize, latency_s: f64) -> Cluster {
    Cluster {
        ranks,
        ranks_per_host: per_host,
        intra: Link { latency_s: 1e-6, bytes_per_s: 20e9 },
        inter: Link { latency_s, bytes_per_s: 12.5e9 },
        reduce_bytes_per_s: 1e15, // kernels free: only the links count
    }
}

fn plan(algo: Algorithm, count: usize) -> Plan {
    Plan { algo, count, wire_bytes_per_elem: 4.0, slice: 64 << 10, per_round: 4 }
}

/// Every algorithm at cluster sizes, in the executor's hop order with
/// real slicing: no deadlock, no stray message.
#[test]
fn every_algorithm_completes_from_64_to_1024_ranks() {
    for n in [64, 100, 256, 513, 1024] {
        for algo in Algorithm::FIXED {
            for count in [1usize, 1000, 1 << 20] {
                let c = cluster(n, 8, 5e-6);
                let p = predict(&c, &plan(algo, count)).unwrap_or_else(|e| panic!("{e}"));
                assert!(p.time_s > 0.0 && p.messages > 0, "{algo:?} n={n} count={count}: {p:?}");
            }
        }
    }
}

/// One rank per host, free kernels: the ring with one slice per block
/// takes 2(n-1) hops of latency plus 2(n-1)/n of the buffer per port.
#[test]
fn the_ring_matches_its_closed_form() {
    for n in [2usize, 8, 64] {
        let count = n * 1000; // one slice per block
        let c = cluster(n, 1, 10e-6);
        let p = predict(&c, &plan(Algorithm::Ring, count)).unwrap();
        let block = 1000.0 * 4.0;
        let want = 2.0 * (n - 1) as f64 * (10e-6 + block / 12.5e9);
        assert!((p.time_s - want).abs() / want < 0.01, "n={n}: {} vs {want}", p.time_s);
        assert_eq!(p.rank0_bytes as f64, 2.0 * (n - 1) as f64 * block);
    }
}

/// Latency-bound: the tree's 2 log n hops beat the ring's 2(n-1) by far
/// at many ranks; bandwidth-bound: the ring and halving-doubling move the
/// fewest bytes and win.
#[test]
fn small_buffers_favour_the_tree_and_large_ones_the_ring() {
    let c = cluster(256, 1, 20e-6);
    let t = |algo, count| predict(&c, &plan(algo, count)).unwrap().time_s;
    assert!(t(Algorithm::Tree, 2) < 0.1 * t(Algorithm::Ring, 2));
    let big = 1 << 26;
    assert!(t(Algorithm::Ring, big) < t(Algorithm::Tree, big));
    assert!(t(Algorithm::Ring, big) < 0.5 * t(Algorithm::RecursiveDoubling, big));
}
