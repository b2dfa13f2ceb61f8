//! The scale model: real schedules replayed at cluster sizes, checked
//! for deadlocks and against the closed forms they must agree with.

use ringfuse::sim::{predict, Cluster, Link, Plan};
use ringfuse::Algorithm;

fn cluster(ranks: usize, per_host: usize, latency_s: f64) -> Cluster {
    Cluster {
        ranks,
        ranks_per_host: per_host,
        intra: Link { latency_s: 1e-6, bytes_per_s: 20e9, burst_bytes: 0.0 },
        inter: Link { latency_s, bytes_per_s: 12.5e9, burst_bytes: 0.0 },
        reduce_bytes_per_s: 1e15, // kernels free: only the links count
        overhead_s: 0.0,
        call_s: 0.0,
        cpus: 0,
    }
}

fn plan(algo: Algorithm, count: usize) -> Plan {
    Plan { algo, count, wire_bytes_per_elem: 4.0, slice: 64 << 10, per_round: 4, warmup: 1, timed: 1 }
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

/// A shaped link's token bucket, on a 2-rank ring (each rank sends two
/// blocks of 4000 B a latency apart) with a bucket of 6000 B, 100 us of
/// latency and 10 MB/s, so the bucket refills 1000 B per latency.
#[test]
fn a_token_bucket_lets_a_burst_through_and_refills_at_the_rate() {
    let (latency, rate) = (100e-6, 1e7);
    let mut c = cluster(2, 1, latency);
    let ring = |c: &Cluster| predict(c, &plan(Algorithm::Ring, 2000)).unwrap().time_s;
    c.inter = Link { latency_s: latency, bytes_per_s: rate, burst_bytes: 1e9 };
    assert!((ring(&c) - 2.0 * latency).abs() < 1e-9, "a bucket larger than every call: latency only");
    c.inter.burst_bytes = 0.0;
    let want = 2.0 * (latency + 4000.0 / rate);
    assert!((ring(&c) - want).abs() / want < 0.01, "no bucket: {} vs {want}", ring(&c));
    // First call: block 1 from the full bucket (2000 B left), block 2 at
    // t=100 us with 3000 B, done at 200 us, arrives at 300 us. A barrier
    // (one latency) later, the second call starts at 400 us with 2000 B:
    // block 1 done at 600, arrives 700; block 2 finds 1000 B, done at
    // 1000, arrives 1100 us: 700 us after its start.
    c.inter.burst_bytes = 6000.0;
    assert!((ring(&c) - 700e-6).abs() < 7e-6, "{} vs 700 us", ring(&c));
}

/// Calls that take more from the bucket than the barrier between them
/// gives back drain it over many calls, and the model predicts the median
/// of the benchmark's timed calls. 2-rank ring, blocks of 2000 B, 100 us
/// latency, 10 MB/s, a 20000 B bucket: a call takes 4000 B, and at 200 us
/// plus a 100 us barrier it gets 3000 B back, so each call starts with
/// 1000 B less. The first 18 (from 3000 B up) run at 200 us; from then
/// on each starts with 2000 B: block 1 leaves at once and arrives at 100 us, block 2 waits
/// 100 us for the 1000 B it lacks, leaves at 200 and arrives at 300 us,
/// and the 200 us to the next start refill 2000 B.
#[test]
fn small_calls_drain_a_bucket_and_the_median_of_the_timed_calls_is_predicted() {
    let (latency, rate) = (100e-6, 1e7);
    let mut c = cluster(2, 1, latency);
    c.inter = Link { latency_s: latency, bytes_per_s: rate, burst_bytes: 20000.0 };
    let ring = |warmup, timed| {
        let p = Plan { warmup, timed, ..plan(Algorithm::Ring, 1000) };
        predict(&c, &p).unwrap().time_s
    };
    let near = |t: f64, want: f64| (t - want).abs() < 0.01 * want;
    assert!(near(ring(1, 1), 200e-6), "the second call: {}", ring(1, 1));
    assert!(near(ring(17, 1), 200e-6), "call 18: {}", ring(17, 1));
    assert!(near(ring(18, 1), 300e-6), "call 19: {}", ring(18, 1));
    assert!(near(ring(20, 5), 300e-6), "after the bucket drained: {}", ring(20, 5));
    // Calls 6-25 (ringfuse-perf's defaults): 13 at 200 us, 7 at 300 us.
    assert!(near(ring(5, 20), 200e-6), "ringfuse-perf's defaults: {}", ring(5, 20));
    // Calls 16-23: 3 at 200 us, 5 at 300 us.
    assert!(near(ring(15, 8), 300e-6), "calls 16-23: {}", ring(15, 8));
}

/// CPU time per message: with a core per rank, recursive doubling pays
/// it twice per round (its send and its receive); on one shared core,
/// every rank's messages queue for it.
#[test]
fn message_overhead_queues_for_shared_cores() {
    let (latency, o) = (10e-6, 5e-6);
    let mut c = cluster(8, 1, latency);
    c.overhead_s = o;
    let doubling = |c: &Cluster| predict(c, &plan(Algorithm::RecursiveDoubling, 2)).unwrap();
    let own = doubling(&c);
    let want = 3.0 * (latency + 2.0 * o);
    assert!((own.time_s - want).abs() / want < 0.01, "{} vs {want}", own.time_s);
    c.cpus = 1;
    let shared = doubling(&c).time_s;
    // 8 ranks x 3 rounds x (a send and a receive), one after another.
    assert!(shared >= 48.0 * o, "{shared}");
    c.cpus = 8;
    assert!((doubling(&c).time_s - own.time_s).abs() < 1e-9, "8 cores for 8 ranks is a core each");
}

/// The per-call latency is paid once per call, whatever the schedule or
/// size: every prediction moves by exactly it.
#[test]
fn call_latency_is_added_once_per_call() {
    for algo in Algorithm::FIXED {
        for count in [2usize, 1000, 1 << 18] {
            let base = cluster(16, 4, 5e-6);
            let slow = Cluster { call_s: 7e-6, ..base };
            let (a, b) = (predict(&base, &plan(algo, count)).unwrap(), predict(&slow, &plan(algo, count)).unwrap());
            let d = b.time_s - a.time_s;
            assert!((d - 7e-6).abs() < 1e-12, "{algo:?} count {count}: moved by {d} s");
            assert_eq!(a.messages, b.messages);
        }
    }
}
