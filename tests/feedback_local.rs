//! Error feedback: with it, the running sum of many lossy allreduces
//! tracks the exact running sum (the errors telescope); without it, the
//! same rounding repeats every step and the running sum drifts.

use ringfuse::{AllreduceOpts, Codec, ReduceOp};

/// Sums `steps` allreduces of the same gradients on `n` ranks and
/// returns the largest deviation of the running total from the exact one.
fn drift(n: usize, codec: Codec, feedback: bool, steps: usize) -> f64 {
    let count = 3000;
    let grad =
        |rank: usize, i: usize| ((i * 7 + rank * 13) % 101) as f32 * 1e-3 - 0.05 + if i % 500 == 0 { 3.0 } else { 0.0 };
    let exact: Vec<f64> = (0..count).map(|i| (0..n).map(|r| grad(r, i) as f64).sum()).collect();
    let out = ringfuse::local::run(n, |comm| {
        let opts = AllreduceOpts::default().codec(codec).slice_bytes(1024);
        let mut residual = vec![0f32; count];
        let mut total = vec![0f64; count];
        for _ in 0..steps {
            let mut g: Vec<f32> = (0..count).map(|i| grad(comm.rank(), i)).collect();
            if feedback {
                comm.allreduce_with_feedback(&mut g, &mut residual, &opts).unwrap();
            } else {
                comm.allreduce_with(&mut g, ReduceOp::Sum, &opts.clone().algorithm(ringfuse::Algorithm::Ring)).unwrap();
            }
            total.iter_mut().zip(&g).for_each(|(t, v)| *t += *v as f64);
        }
        total
    });
    assert!(out.iter().all(|t| t == &out[0]), "ranks disagree");
    out[0].iter().zip(&exact).map(|(t, e)| (t - e * steps as f64).abs()).fold(0.0, f64::max)
}

#[test]
fn feedback_keeps_the_running_sum_on_track_and_its_absence_drifts() {
    for n in [2, 3, 5] {
        for codec in [Codec::Int8, Codec::Fp16, Codec::Fp16Scaled, Codec::Bf16] {
            let with = drift(n, codec, true, 200);
            let without = drift(n, codec, false, 200);
            // One step's worst rounding, for scale: int8 steps are 1/127 of
            // the block max (3 * n here).
            let one_step = drift(n, codec, false, 1);
            assert!(with <= 2.0 * one_step + 1e-6, "{codec} n={n}: with feedback off by {with}, one step {one_step}");
            assert!(without > 20.0 * with, "{codec} n={n}: without feedback {without}, with {with}");
            eprintln!("{codec} n={n}: 200 steps, max drift with feedback {with:.3e}, without {without:.3e}");
        }
    }
}

#[test]
fn feedback_with_a_lossless_wire_changes_nothing() {
    let out = ringfuse::local::run(3, |comm| {
        let mut g: Vec<f32> = (0..1000).map(|i| (i + comm.rank()) as f32).collect();
        let mut residual = vec![0.5f32; 1000];
        comm.allreduce_with_feedback(&mut g, &mut residual, &AllreduceOpts::default()).unwrap();
        (g, residual)
    });
    for (g, residual) in &out {
        assert!(residual.iter().all(|r| *r == 0.0), "native f32 loses nothing");
        assert!(g.iter().enumerate().all(|(i, v)| *v == (3 * i + 3) as f32 + 1.5));
    }
}

#[test]
fn a_residual_of_the_wrong_length_is_an_error() {
    let out = ringfuse::local::run(2, |comm| {
        let mut g = vec![1f32; 10];
        comm.allreduce_with_feedback(&mut g, &mut [0f32; 9], &AllreduceOpts::default()).unwrap_err().to_string()
    });
    assert!(out[0].contains("residual") && out[0].contains("rank 0"), "{}", out[0]);
}
