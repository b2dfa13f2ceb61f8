//! `Algorithm::Auto`'s cost model: the probe agrees on one set of
//! constants on every rank, the choice respects what each algorithm can
//! carry, and the cached file is read back (and re-probed when it was
//! measured with another rank count).

use half::f16;
use ringfuse::{Algorithm, AllreduceOpts, Codec, DType, ReduceOp, Tuning};

#[test]
fn the_probe_gives_every_rank_the_same_constants_and_auto_follows_them() {
    let out = ringfuse::local::run(3, |mut comm| {
        let t = Tuning::probe_within(&comm, None).unwrap();
        comm.set_tuning(Some(t.clone()));
        // Auto now runs what the model predicts fastest, and still reduces.
        let opts = AllreduceOpts::default();
        let mut v = vec![1f32; 50_000];
        comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap();
        assert!(v.iter().all(|x| *x == 3.0));
        let picked: Vec<Algorithm> =
            [1usize, 1 << 10, 1 << 20, 1 << 26].iter().map(|&c| comm.algorithm_for(&opts, DType::F32, c)).collect();
        (t, picked)
    });
    let (t, picked) = &out[0];
    assert!(out.iter().all(|o| &o.0 == t && &o.1 == picked), "ranks disagree");
    assert_eq!(t.ranks, 3);
    // No hosts declared: the hierarchical algorithm cannot run, gets no line.
    assert!(t.predict(Algorithm::Hierarchical, 8).is_none());
    for a in Algorithm::FIXED.into_iter().filter(|a| *a != Algorithm::Hierarchical) {
        let l = t.lines.iter().find(|l| l.algo == a.name()).expect("a line per algorithm");
        // Without a budget, the whole grid (the network's if the barrier
        // was slow: three ranks share two cores here).
        let sizes: Vec<usize> = l.points.iter().map(|p| p.0).collect();
        assert!(sizes == ringfuse::tuning::SIZES || sizes == ringfuse::tuning::NET_SIZES, "{sizes:?}");
        assert!(l.points.iter().all(|p| p.1 > 0.0), "{l:?}");
    }
    // Each pick is the model's minimum, the ring unless beaten by the
    // margin; past twice the largest probed size, the ring.
    let probed = t.lines[0].points.last().unwrap().0;
    for (&c, &a) in [1usize, 1 << 10, 1 << 20, 1 << 26].iter().zip(picked) {
        if c * 4 > 2 * probed {
            // No hosts declared: the hierarchical schedule is not measured.
            assert_eq!(a, Algorithm::Ring, "{c} elements");
            continue;
        }
        let ring = t.predict(Algorithm::Ring, c * 4).unwrap();
        let best = Algorithm::FIXED.iter().filter_map(|&x| t.predict(x, c * 4)).fold(f64::INFINITY, f64::min);
        if a == Algorithm::Ring {
            assert!(best >= ring * ringfuse::tuning::MARGIN, "{c} elements: the ring, though {best} < {ring}");
        } else {
            assert_eq!(t.predict(a, c * 4).unwrap(), best, "{c} elements: {a:?}");
        }
    }
}

/// A budget too small for anything past the first size: the probe still
/// measures that size on every rank alike, and `Auto` runs the ring past
/// twice it.
#[test]
fn a_spent_budget_leaves_one_size_and_every_rank_agrees() {
    let out = ringfuse::local::run(3, |mut comm| {
        let t = Tuning::probe_within(&comm, Some(std::time::Duration::ZERO)).unwrap();
        comm.set_tuning(Some(t.clone()));
        let picked = comm.algorithm_for(&AllreduceOpts::default(), DType::F32, 1000);
        (t, picked)
    });
    let (t, picked) = &out[0];
    assert!(out.iter().all(|o| &o.0 == t && &o.1 == picked), "ranks disagree");
    assert!(t.seconds > 0.0);
    for l in &t.lines {
        assert_eq!(l.points.len(), 1, "{l:?}");
        assert_eq!(l.points[0].0, 8);
        assert!(l.points[0].1 > 0.0);
    }
    assert_eq!(*picked, Algorithm::Ring, "4000 B is past twice the 8 B probed");
}

/// Straight lines between the measured sizes, the last one extended.
#[test]
fn lines_join_the_measured_points() {
    let l = ringfuse::tuning::Line { algo: "ring".into(), points: vec![(8, 1e-6), (1008, 2e-6), (2008, 4e-6)] };
    let near = |a: f64, b: f64| (a - b).abs() < 1e-15;
    assert!(near(l.at(0), 1e-6) && near(l.at(8), 1e-6));
    assert!(near(l.at(508), 1.5e-6) && near(l.at(1508), 3e-6));
    assert!(near(l.at(3008), 6e-6), "extended by the last segment");
}

/// Past twice the largest size probed, the ring (or the hierarchical
/// schedule), however the other lines slope.
#[test]
fn auto_runs_the_ring_past_twice_the_probed_sizes() {
    let line = |algo: Algorithm, per_byte: f64| ringfuse::tuning::Line {
        algo: algo.name().into(),
        points: vec![(8, 1e-6), (512 << 10, 1e-6 + per_byte * (512 << 10) as f64)],
    };
    let t = Tuning {
        ranks: 8,
        lines: vec![line(Algorithm::Ring, 2e-9), line(Algorithm::HalvingDoubling, 1e-9)],
        seconds: 0.0,
    };
    assert_eq!(t.best(DType::F32, Codec::Native, 256 << 10), Algorithm::HalvingDoubling);
    assert_eq!(t.best(DType::F32, Codec::Native, 1 << 20), Algorithm::HalvingDoubling);
    assert_eq!(t.best(DType::F32, Codec::Native, (1 << 20) + 1), Algorithm::Ring);
    assert_eq!(t.best(DType::F32, Codec::Native, 16 << 20), Algorithm::Ring);
    // The hierarchical schedule, rings too, still competes there.
    let mut t = t;
    t.lines.push(line(Algorithm::Hierarchical, 0.5e-9));
    assert_eq!(t.best(DType::F32, Codec::Native, 16 << 20), Algorithm::Hierarchical);
}

#[test]
fn auto_never_picks_an_algorithm_that_cannot_carry_the_buffer() {
    let t = model_won_by(Algorithm::Tree, 4);
    assert_eq!(t.best(DType::F32, Codec::Fp16, 1000), Algorithm::Tree);
    assert_eq!(t.best(DType::F16, Codec::Fp16, 1000), Algorithm::Ring);
    assert_eq!(t.best(DType::F32, Codec::Int8, 1000), Algorithm::Ring);
    let out = ringfuse::local::run(4, |mut comm| {
        comm.set_tuning(Some(t.clone()));
        let mut v = vec![f16::from_f32(1.0); 1000];
        comm.allreduce_with(&mut v, ReduceOp::Sum, &AllreduceOpts::default().codec(Codec::Fp16)).unwrap();
        (comm.algorithm_for(&AllreduceOpts::default(), DType::F16, 1000), v[999].to_f32())
    });
    assert!(out.iter().all(|o| *o == (Algorithm::Ring, 4.0)));
}

/// A model in which `winner` takes every size it measured.
fn model_won_by(winner: Algorithm, ranks: usize) -> Tuning {
    let lines = (Algorithm::FIXED.iter())
        .map(|a| ringfuse::tuning::Line {
            algo: a.name().into(),
            points: {
                let t = if *a == winner { 1e-9 } else { 1.0 };
                vec![(8, t), (1 << 20, t)]
            },
        })
        .collect();
    Tuning { ranks, lines, seconds: 0.0 }
}

/// `Auto` remembers its recent choices per call shape; a new model or new
/// hosts must not leave it running an old choice.
#[test]
fn auto_forgets_its_choices_when_the_model_or_the_hosts_change() {
    let out = ringfuse::local::run(4, |mut comm| {
        let opts = AllreduceOpts::default();
        let mut seen = Vec::new();
        comm.set_tuning(Some(model_won_by(Algorithm::Tree, 4)));
        seen.push(comm.algorithm_for(&opts, DType::F32, 1000));
        seen.push(comm.algorithm_for(&opts, DType::F32, 1000)); // from the memo
        comm.set_tuning(Some(model_won_by(Algorithm::RecursiveDoubling, 4)));
        seen.push(comm.algorithm_for(&opts, DType::F32, 1000));
        comm.set_tuning(Some(model_won_by(Algorithm::Hierarchical, 4)));
        seen.push(comm.algorithm_for(&opts, DType::F32, 1000)); // no hosts: the ring
        comm.set_ranks_per_host(2).unwrap();
        seen.push(comm.algorithm_for(&opts, DType::F32, 1000));
        let mut v = vec![1f32; 1000];
        comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap();
        (seen, v[999])
    });
    use Algorithm::*;
    let want = vec![Tree, Tree, RecursiveDoubling, Ring, Hierarchical];
    assert!(out.iter().all(|o| o.0 == want && o.1 == 4.0), "{out:?}");
}

#[test]
fn the_cached_file_is_read_back_and_reprobed_for_another_rank_count() {
    let path = std::env::temp_dir().join(format!("ringfuse-tuning-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let first = ringfuse::local::run(2, |comm| Tuning::cached(&comm, &path).unwrap());
    assert!(path.exists(), "rank 0 writes the file");
    let again = ringfuse::local::run(2, |comm| Tuning::cached(&comm, &path).unwrap());
    assert_eq!(again[0], first[0], "read back, not probed again");
    assert_eq!(again[1], first[0]);
    let three = ringfuse::local::run(3, |comm| Tuning::cached(&comm, &path).unwrap());
    assert_eq!(three[0].ranks, 3, "measured with 2 ranks: probed again");
    let _ = std::fs::remove_file(&path);
}
