//! Bad input gets a clear error naming the rank and op; a silent peer a
//! timeout naming the peer and step; FP16 overflow an error on every rank.
//! Never a panic or a hang.

use std::time::{Duration, Instant};

use ringfuse::{Algorithm, AllreduceOpts, Codec, Error, ReduceOp};

/// Options whose deadline no success path on a loaded machine reaches: a
/// test that wants a timeout sets [`SHORT`] itself.
fn with_codec(codec: Codec) -> AllreduceOpts {
    AllreduceOpts::default().codec(codec).timeout(Duration::from_secs(30))
}

/// The deadline of a wait that is meant to time out.
const SHORT: Duration = Duration::from_millis(500);

#[test]
fn wrong_lengths_are_reported_with_rank_and_op() {
    let out = ringfuse::local::run(3, |comm| {
        let input = vec![1f32; 10];
        let mut output = vec![0f32; 4]; // 4 * 3 != 10
        let e1 = comm.reduce_scatter(&input, &mut output, ReduceOp::Sum).unwrap_err();
        let mut all = vec![0f32; 29];
        let e2 = comm.allgather(&input, &mut all).unwrap_err();
        // Argument errors leave the communicator usable.
        let mut v = vec![1f32; 5];
        comm.allreduce(&mut v, ReduceOp::Sum).unwrap();
        (e1.to_string(), e2.to_string(), v[0])
    });
    for (r, (e1, e2, v)) in out.iter().enumerate() {
        assert!(e1.starts_with(&format!("rank {r}: reduce_scatter#0(f32, 10, sum, native)")), "{e1}");
        assert!(e1.contains("expected 12 elements, got 10"), "{e1}");
        assert!(e2.contains("allgather") && e2.contains("expected 30 elements, got 29"), "{e2}");
        assert_eq!(*v, 3.0);
    }
}

#[test]
fn root_out_of_range_is_an_error() {
    let out = ringfuse::local::run(2, |comm| {
        let mut v = vec![0f64; 3];
        comm.broadcast(&mut v, 2).unwrap_err()
    });
    for e in out {
        assert!(matches!(e, Error::Root { root: 2, size: 2, .. }), "{e}");
        assert!(e.to_string().contains("root 2 is out of range for 2 ranks"));
    }
}

#[test]
fn a_silent_peer_times_out_naming_peer_and_step_then_poisons() {
    let out = ringfuse::local::run(3, |comm| {
        if comm.rank() == 2 {
            return None; // never joins
        }
        let mut v = vec![1f32; 3000];
        // Rank 1's deadline is long: only rank 0's abort notice can end its
        // wait quickly.
        let opts = if comm.rank() == 1 { with_codec(Codec::Native) } else { with_codec(Codec::Native).timeout(SHORT) };
        let t0 = Instant::now();
        let e = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap_err();
        let took = t0.elapsed();
        let again = comm.allreduce_with(&mut v, ReduceOp::Sum, &with_codec(Codec::Native)).unwrap_err();
        Some((e, took, again))
    });
    // Rank 0 receives from rank 2 (its ring predecessor): rank 2 is silent.
    let (e0, took0, again0) = out[0].as_ref().unwrap();
    match e0 {
        Error::Timeout { rank: 0, peer: 2, dir: "receive from", step, .. } => assert!(*step <= 4),
        other => panic!("rank 0: {other}"),
    }
    assert!(e0.to_string().contains("allreduce#0(f32, 3000, sum, native)"), "{e0}");
    // Bounded by the deadline, with margin for a loaded machine.
    assert!(*took0 < Duration::from_secs(5), "took {took0:?}");
    assert!(matches!(again0, Error::Poisoned { .. }), "{again0}");
    // Rank 1 waits on rank 0, which gave up and told it so: rank 1 fails
    // with rank 0 named, right after rank 0's deadline, not at its own.
    let (e1, took1, _) = out[1].as_ref().unwrap();
    assert!(matches!(e1, Error::PeerAborted { rank: 1, peer: 0, .. }), "{e1}");
    assert!(*took1 < Duration::from_secs(5), "took {took1:?}");
}

#[test]
fn fp16_overflow_is_an_error_on_every_rank_not_inf() {
    for n in [2, 3, 5] {
        let out = ringfuse::local::run(n, |comm| {
            // Each value fits FP16, their sum does not (only in one slice).
            let mut v = vec![1.0f32; 10_000];
            v[7777] = 40_000.0;
            comm.allreduce_with(&mut v, ReduceOp::Sum, &with_codec(Codec::Fp16).slice_bytes(1024)).unwrap_err()
        });
        for (r, e) in out.iter().enumerate() {
            assert!(matches!(e, Error::WireOverflow { rank, .. } if *rank == r), "n={n}: {e}");
            assert!(e.to_string().contains("allreduce#0(f32, 10000, sum, fp16)"), "{e}");
        }
    }
}

#[test]
fn same_sum_within_range_is_fine_with_bf16_and_native() {
    let out = ringfuse::local::run(3, |comm| {
        let mut a = vec![49_152.0f32; 100];
        comm.allreduce_with(&mut a, ReduceOp::Sum, &with_codec(Codec::Bf16)).unwrap();
        let mut b = vec![49_152.0f32; 100];
        comm.allreduce_with(&mut b, ReduceOp::Sum, &with_codec(Codec::Native)).unwrap();
        (a[0], b[0])
    });
    assert!(out.iter().all(|&(a, b)| a == 147_456.0 && b == 147_456.0));
}

#[test]
fn nan_and_inf_inputs_propagate_through_fp16_like_native() {
    for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
        let out = ringfuse::local::run(3, |comm| {
            let mut v = vec![1.0f32; 64];
            if comm.rank() == 1 {
                v[5] = f32::NAN;
                v[9] = f32::INFINITY;
            }
            comm.allreduce_with(&mut v, ReduceOp::Sum, &with_codec(codec)).unwrap();
            let mut m = vec![1.0f32; 64];
            if comm.rank() == 0 {
                m[3] = f32::NAN;
            }
            comm.allreduce_with(&mut m, ReduceOp::Max, &with_codec(codec)).unwrap();
            (v, m)
        });
        for (v, m) in &out {
            assert!(v[5].is_nan() && v[9] == f32::INFINITY && v[0] == 3.0, "{codec}");
            assert!(m[3].is_nan() && m[4] == 1.0, "{codec}: max must keep NaN");
        }
    }
}

#[test]
fn options_out_of_bounds_are_rejected_by_name_value_and_bound() {
    let cases: Vec<(AllreduceOpts, &str)> = vec![
        (with_codec(Codec::Native).slots(0), "slots=\"0\""),
        (with_codec(Codec::Native).slots(65), "slots=\"65\""),
        (with_codec(Codec::Native).slice_bytes(63), "slice_bytes=\"63\""),
        (with_codec(Codec::Native).slice_bytes(1 << 30), "slice_bytes=\"1073741824\""),
        (with_codec(Codec::Native).timeout(Duration::ZERO), "timeout=\"0ns\""),
        (with_codec(Codec::Native).timeout(Duration::MAX), "timeout="),
    ];
    let out = ringfuse::local::run(2, |comm| {
        let mut v = vec![1f32; 8];
        let errs: Vec<String> =
            cases.iter().map(|(o, _)| comm.allreduce_with(&mut v, ReduceOp::Sum, o).unwrap_err().to_string()).collect();
        // Argument errors leave the communicator usable.
        comm.allreduce(&mut v, ReduceOp::Sum).unwrap();
        (errs, v[0])
    });
    for (r, (errs, v)) in out.iter().enumerate() {
        for (e, (_, want)) in errs.iter().zip(&cases) {
            assert!(e.starts_with(&format!("rank {r}: ")) && e.contains(want) && e.contains("expected"), "{e}");
        }
        assert_eq!(*v, 2.0);
    }
}

#[test]
fn a_huge_slice_on_a_small_call_sizes_the_pool_by_the_call() {
    // 64 MiB slices (the bound) with 64 slots would be 8 GiB of slots if
    // the pool were sized by the option; one element needs one element.
    let out = ringfuse::local::run(2, |comm| {
        let mut v = vec![1f32; 1];
        let opts = with_codec(Codec::Native).slice_bytes(64 << 20).slots(64);
        comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).map(|_| v[0])
    });
    assert!(out.iter().all(|r| matches!(r, Ok(x) if *x == 2.0)), "{out:?}");
}

#[test]
fn a_panicking_rank_wakes_the_others() {
    let t0 = Instant::now();
    let r = std::panic::catch_unwind(|| {
        ringfuse::local::run(3, |comm| {
            if comm.rank() == 1 {
                panic!("rank 1 fails");
            }
            let mut v = vec![0f32; 100];
            // A long deadline: only the abort can end this wait early.
            comm.allreduce_with(&mut v, ReduceOp::Sum, &AllreduceOpts::default().timeout(Duration::from_secs(120)))
        })
    });
    assert!(r.is_err());
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[test]
fn mismatched_calls_fail_fast_on_every_rank_naming_both_calls() {
    for algo in [ringfuse::Algorithm::Ring, ringfuse::Algorithm::RecursiveDoubling] {
        let t0 = Instant::now();
        let out = ringfuse::local::run(3, |comm| {
            let count = if comm.rank() == 2 { 1001 } else { 1000 };
            let mut v = vec![1f32; count];
            // A long deadline: only the fingerprint check and the abort
            // notices can end these calls quickly.
            let opts = AllreduceOpts::default().codec(Codec::Fp16).timeout(Duration::from_secs(60)).algorithm(algo);
            comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap_err()
        });
        assert!(t0.elapsed() < Duration::from_secs(10), "{algo:?}: took {:?}", t0.elapsed());
        let mut named = 0;
        for (r, e) in out.iter().enumerate() {
            match e {
                Error::Mismatch { rank, peer, .. } => {
                    assert_eq!(*rank, r);
                    let msg = e.to_string();
                    let (mine, theirs) = if r == 2 { ("1001", "1000") } else { ("1000", "1001") };
                    assert!(msg.contains(&format!("rank {r} called allreduce#0(f32, {mine}, sum, fp16)")), "{msg}");
                    assert!(
                        msg.contains(&format!("rank {peer} called allreduce#0(f32, {theirs}, sum, fp16)")),
                        "{msg}"
                    );
                    named += 1;
                }
                Error::PeerAborted { rank, .. } => assert_eq!(*rank, r),
                other => panic!("{algo:?} rank {r}: unexpected {other}"),
            }
        }
        assert!(named >= 1, "{algo:?}: some rank must name both calls");
    }
}

#[test]
fn mismatched_codec_is_named() {
    let out = ringfuse::local::run(2, |comm| {
        let codec = if comm.rank() == 0 { Codec::Native } else { Codec::Bf16 };
        let mut v = vec![1f32; 64];
        comm.allreduce_with(&mut v, ReduceOp::Max, &with_codec(codec)).unwrap_err().to_string()
    });
    assert!(
        out[0].contains(
            "rank 0 called allreduce#0(f32, 64, max, native), but rank 1 called allreduce#0(f32, 64, max, bf16)"
        ),
        "{}",
        out[0]
    );
}

#[test]
fn abort_from_another_thread_ends_the_wait_and_reaches_peers() {
    let t0 = Instant::now();
    let out = ringfuse::local::run(3, |comm| {
        if comm.rank() == 2 {
            return None; // never joins: without abort, ranks 0 and 1 would wait 30 s
        }
        let opts = AllreduceOpts::default().timeout(Duration::from_secs(30));
        std::thread::scope(|s| {
            if comm.rank() == 0 {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    comm.abort();
                });
            }
            let mut v = vec![1f64; 4096];
            let first = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap_err();
            let later = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap_err();
            Some((first, later, t0.elapsed()))
        })
    });
    let (e0, later0, took0) = out[0].as_ref().unwrap();
    assert!(matches!(e0, Error::Aborted { rank: 0, .. }), "{e0}");
    assert!(matches!(later0, Error::Aborted { .. }), "{later0}");
    let (e1, _, took1) = out[1].as_ref().unwrap();
    assert!(matches!(e1, Error::PeerAborted { rank: 1, peer: 0, .. }), "{e1}");
    assert!(*took0 < Duration::from_secs(5) && *took1 < Duration::from_secs(5), "{took0:?} {took1:?}");
}

/// Calls that differ so much that the ranks' schedules differ (another
/// algorithm, another collective): the ranks do not even wait on the same
/// peers, yet every rank must fail fast. A 60 s deadline: only the checks
/// and abort notices can end these calls within the 5 s asserted.
#[test]
fn calls_with_different_schedules_fail_fast_on_every_rank() {
    #[derive(Clone, Copy, Debug)]
    enum Odd {
        /// 1001 elements where the others pass 100000: `Auto` picks
        /// recursive doubling for it and the ring for them.
        SmallCount,
        Broadcast,
        Barrier,
    }
    for odd in [Odd::SmallCount, Odd::Broadcast, Odd::Barrier] {
        let t0 = Instant::now();
        let out = ringfuse::local::run(3, |mut comm| {
            // A fixed crossover, so the two counts get those schedules
            // whatever this machine's cores make the rule say.
            let opts =
                AllreduceOpts { small_bytes: 32 << 10, ..AllreduceOpts::default() }.timeout(Duration::from_secs(60));
            comm.set_defaults(opts.clone());
            let mut v = vec![1f32; 100_000];
            let r = match (comm.rank(), odd) {
                (2, Odd::SmallCount) => comm.allreduce_with(&mut v[..1001], ReduceOp::Sum, &opts),
                (2, Odd::Broadcast) => comm.broadcast_with(&mut v, 0, &opts),
                (2, Odd::Barrier) => comm.barrier(),
                _ => comm.allreduce_with(&mut v, ReduceOp::Sum, &opts),
            };
            (r, t0.elapsed())
        });
        let mut named_both = false;
        for (r, (res, took)) in out.iter().enumerate() {
            let e = res.as_ref().expect_err("every rank fails");
            assert!(*took < Duration::from_secs(5), "{odd:?}: rank {r} took {took:?}: {e}");
            assert!(e.to_string().contains(&format!("rank {r}")), "{odd:?}: {e}");
            named_both |= matches!(e, Error::Mismatch { .. });
        }
        assert!(named_both, "{odd:?}: some rank must name both calls: {out:?}");
    }
}

/// Options that must agree, set differently on rank 1 of 2: both fail
/// fast, naming the option and both values. (On more ranks a rank blocked
/// in a send to the odd rank, which has left the call, waits out its
/// deadline: the known limit in the README's "Errors".)
#[test]
fn ranks_passing_different_options_are_told_which_and_both_values() {
    type Tweak = fn(AllreduceOpts) -> AllreduceOpts;
    // Rank 0's value and rank 1's, as the error prints them.
    let cases: [(&str, Tweak, [&str; 2]); 4] = [
        ("algorithm", |o| o.algorithm(Algorithm::RecursiveDoubling), ["ring", "doubling"]),
        ("slots", |o| o.slots(2), ["4", "2"]),
        ("message size (slice_bytes)", |o| o.slice_bytes(8 << 10), ["4096 elements", "8192 elements"]),
        ("scale_block", |o| o.scale_block(256), ["1024", "256"]),
    ];
    for (setting, tweak, values) in cases {
        let t0 = Instant::now();
        let out = ringfuse::local::run(2, |comm| {
            let base = with_codec(Codec::Int8)
                .timeout(Duration::from_secs(60))
                .algorithm(Algorithm::Ring)
                .slice_bytes(4 << 10);
            let opts = if comm.rank() == 1 { tweak(base) } else { base };
            let mut v = vec![1f32; 100_000];
            (comm.allreduce_with(&mut v, ReduceOp::Sum, &opts), t0.elapsed())
        });
        let mut named = false;
        for (r, (res, took)) in out.iter().enumerate() {
            let e = res.as_ref().expect_err("every rank fails");
            assert!(*took < Duration::from_secs(5), "{setting}: rank {r} took {took:?}: {e}");
            // A rank whose slots are too small for the other's message may
            // fail on its length instead; the other then names the option.
            if let Error::OptionMismatch { setting: s, .. } = e {
                assert_eq!(*s, setting);
                let (mine, theirs) = (values[r], values[1 - r]);
                let want = format!("{setting} is {mine}, but rank {}'s is {theirs}", 1 - r);
                assert!(e.to_string().contains(&want), "{setting}: {e}");
                named = true;
            }
        }
        assert!(named, "{setting}: some rank must name it: {out:?}");
    }
}
