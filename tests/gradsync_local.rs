//! GradSync on in-process ranks: results, ordering, overlap hand-off,
//! misuse errors and the error report.

use half::f16;
use ringfuse::{Codec, Error, GradSync, GradSyncOpts};

const LENS: [usize; 5] = [3000, 17, 40_000, 1, 999];

fn grad(rank: usize, p: usize, i: usize, step: usize) -> f32 {
    ((i * 31 + p * 7 + rank * 5 + step * 3) % 97) as f32 / 97.0 - 0.5
}

fn grads(rank: usize, step: usize) -> Vec<Vec<f32>> {
    LENS.iter().enumerate().map(|(p, &n)| (0..n).map(|i| grad(rank, p, i, step)).collect()).collect()
}

fn views(g: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    g.iter_mut().map(|v| v.as_mut_slice()).collect()
}

/// Every codec and bucket size: every rank holds the same bits, within
/// the codec's reach of the exact mean.
#[test]
fn synchronize_averages_every_parameter_identically_on_every_rank() {
    for n in [1, 2, 3, 4] {
        for codec in Codec::ALL {
            for bucket_bytes in [64, 20_000, 25 << 20] {
                let out = ringfuse::local::run(n, |comm| {
                    let opts = GradSyncOpts::default().codec(codec).bucket_bytes(bucket_bytes);
                    let mut sync = GradSync::new(comm, &LENS, opts).unwrap();
                    let mut last = Vec::new();
                    for step in 0..3 {
                        let mut g = grads(sync.comm().rank(), step);
                        sync.synchronize(&mut views(&mut g)).unwrap();
                        last = g;
                    }
                    last
                });
                let tol = match codec {
                    Codec::Native => 1e-6,
                    Codec::Fp16 | Codec::Fp16Scaled => 2e-3,
                    Codec::Bf16 => 2e-2,
                    Codec::Int8 => 2e-2,
                };
                for (p, got) in out[0].iter().enumerate() {
                    for (i, &got) in got.iter().enumerate() {
                        let exact: f64 = (0..n).map(|r| grad(r, p, i, 2) as f64).sum::<f64>() / n as f64;
                        let got = got as f64;
                        assert!(
                            (got - exact).abs() <= tol,
                            "n={n} {codec} bucket {bucket_bytes}: param {p}[{i}] = {got}, mean {exact}"
                        );
                    }
                }
                assert!(out.iter().all(|o| o == &out[0]), "n={n} {codec}: ranks differ");
            }
        }
    }
}

/// Marking gradients in any order, with work in between, gives the same
/// bits as the blocking call.
#[test]
fn marking_in_any_order_matches_synchronize() {
    let out = ringfuse::local::run(3, |comm| {
        let rank = comm.rank();
        let opts = GradSyncOpts::default().codec(Codec::Fp16).bucket_bytes(16_000);
        let mut sync = GradSync::new(comm, &LENS, opts).unwrap();
        let mut a = grads(rank, 0);
        sync.synchronize(&mut views(&mut a)).unwrap();
        let mut b = grads(rank, 0);
        for p in [1, 4, 0, 3, 2] {
            sync.mark_ready(p, &b[p]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2)); // "backward" goes on
        }
        sync.wait(&mut views(&mut b)).unwrap();
        (a, b)
    });
    for (a, b) in &out {
        assert_eq!(a, b);
        assert_eq!(a, &out[0].0);
    }
}

/// Gradients written into the buckets (no copy in or out) give the same
/// bits as copied ones, step after step, and the buffers hold the result.
#[test]
fn in_place_gradients_match_copied_ones() {
    for codec in [Codec::Fp16, Codec::Int8] {
        let out = ringfuse::local::run(3, |comm| {
            let rank = comm.rank();
            let opts = GradSyncOpts::default().codec(codec).bucket_bytes(16_000);
            let comm = std::sync::Arc::new(comm); // shared, used one at a time
            let (mut copied, mut in_place) =
                (GradSync::new(comm.clone(), &LENS, opts.clone()).unwrap(), GradSync::new(comm, &LENS, opts).unwrap());
            let mut results = Vec::new();
            for step in 0..3 {
                let mut a = grads(rank, step);
                copied.synchronize(&mut views(&mut a)).unwrap();
                let b = grads(rank, step);
                for p in [1, 4, 0, 3, 2] {
                    in_place.grad_buffer(p).unwrap().copy_from_slice(&b[p]);
                    in_place.mark_written(p).unwrap();
                }
                in_place.wait_in_place().unwrap();
                let b: Vec<Vec<f32>> = (0..LENS.len()).map(|p| in_place.grad(p).unwrap().to_vec()).collect();
                results.push((a, b));
            }
            results
        });
        for rank in &out {
            for (step, (a, b)) in rank.iter().enumerate() {
                assert_eq!(a, b, "{codec} step {step}: in place differs from copied");
                assert_eq!(b, &out[0][step].1, "{codec} step {step}: ranks differ");
            }
        }
    }
}

#[test]
fn sixteen_bit_gradients_are_widened_and_narrowed() {
    let out = ringfuse::local::run(2, |comm| {
        let r = comm.rank() as f32;
        let mut sync = GradSync::new(comm, &[100, 7], GradSyncOpts::default()).unwrap();
        let (mut a, mut b) = (vec![f16::from_f32(r); 100], vec![f16::from_f32(2.0 * r + 1.0); 7]);
        sync.synchronize(&mut [&mut a, &mut b]).unwrap();
        (a[0].to_f32(), b[6].to_f32())
    });
    assert_eq!(out, vec![(0.5, 2.0); 2]);
}

#[test]
fn broadcast_parameters_copies_rank_0s_weights() {
    let out = ringfuse::local::run(3, |comm| {
        let r = comm.rank() as f32;
        let sync = GradSync::new(comm, &[5, 3], GradSyncOpts::default()).unwrap();
        let (mut w, mut b) = (vec![r; 5], vec![r + 10.0; 3]);
        sync.broadcast_parameters(&mut [&mut w, &mut b]).unwrap();
        (w, b)
    });
    assert!(out.iter().all(|(w, b)| w == &vec![0.0; 5] && b == &vec![10.0; 3]));
}

/// Misuse: each is an error naming the parameter, never a hang.
#[test]
fn misuse_is_an_error_naming_the_parameter() {
    let out = ringfuse::local::run(2, |comm| {
        let mut sync = GradSync::new(comm, &[10, 20], GradSyncOpts::default()).unwrap();
        let mut errs = Vec::new();
        let msg = |e: Error| e.to_string();
        errs.push(msg(sync.mark_ready(5, &[0f32; 10]).unwrap_err()));
        errs.push(msg(sync.mark_ready(0, &[0f32; 11]).unwrap_err()));
        sync.mark_ready(0, &[1f32; 10]).unwrap();
        errs.push(msg(sync.mark_ready(0, &[1f32; 10]).unwrap_err()));
        let (mut a, mut b) = (vec![0f32; 10], vec![0f32; 20]);
        errs.push(msg(sync.wait(&mut [&mut a, &mut b]).unwrap_err()));
        errs.push(msg(sync.broadcast_parameters(&mut [&mut a]).unwrap_err()));
        errs.push(msg(sync.grad_buffer(0).unwrap_err()));
        errs.push(msg(sync.mark_written(0).unwrap_err()));
        errs.push(msg(sync.grad(7).unwrap_err()));
        // The step can still complete.
        sync.mark_ready(1, &[1f32; 20]).unwrap();
        sync.wait(&mut [&mut a, &mut b]).unwrap();
        (errs, a[0], b[0])
    });
    let (errs, a, b) = &out[0];
    assert!(errs[0].contains("parameter 5 does not exist"), "{}", errs[0]);
    assert!(errs[1].contains("parameter 0 has 11 elements"), "{}", errs[1]);
    assert!(errs[2].contains("parameter 0 was already marked ready"), "{}", errs[2]);
    assert!(errs[3].contains("parameter 1") && errs[3].contains("missing"), "{}", errs[3]);
    assert!(errs[4].contains("during a step"), "{}", errs[4]);
    assert!(errs[5].contains("parameter 0 was already marked ready"), "{}", errs[5]);
    assert!(errs[6].contains("parameter 0 was already marked ready"), "{}", errs[6]);
    assert!(errs[7].contains("parameter 7 does not exist"), "{}", errs[7]);
    assert!(errs.iter().all(|e| e.contains("rank 0")));
    assert_eq!((*a, *b), (1.0, 1.0));
}

/// The report: exact for the native wire, FP16-sized for fp16, larger for
/// int8; wire bytes shrink with the codec.
#[test]
fn the_report_measures_error_and_wire_bytes() {
    let report = |codec: Codec| {
        ringfuse::local::run(4, |comm| {
            let rank = comm.rank();
            let opts = GradSyncOpts::default().codec(codec).bucket_bytes(50_000).report(true);
            let mut sync = GradSync::new(comm, &LENS, opts).unwrap();
            let mut g = grads(rank, 0);
            sync.synchronize(&mut views(&mut g)).unwrap().clone()
        })
        .remove(0)
    };
    let (native, fp16, int8) = (report(Codec::Native), report(Codec::Fp16), report(Codec::Int8));
    assert!(native.buckets.len() > 1);
    let (en, ef, ei) = (native.max_rel_err().unwrap(), fp16.max_rel_err().unwrap(), int8.max_rel_err().unwrap());
    assert!(en < 1e-6 && ef > en && ef < 2e-3 && ei > ef && ei < 2e-2, "native {en}, fp16 {ef}, int8 {ei}");
    assert_eq!(fp16.wire_bytes() * 2, native.wire_bytes());
    assert!(int8.wire_bytes() * 4 < native.wire_bytes() * 101 / 100);
    assert_eq!(native.step, 1);
}
