//! PowerSGD (Vogels, Karimireddy and Jaggi, 2019; PyTorch DDP's
//! `powerSGD_hook`): each gradient matrix `M` (rows x cols) travels as two
//! thin factors of rank `r`, `P = M Q` (rows x r) and `Q = M^T P` (cols x
//! r), one power iteration warm-started from the last step's `Q`, with the
//! part the factors miss carried into the next step (error feedback).
//! Vectors (biases) and matrices too small to gain go uncompressed, as in
//! PyTorch.
//!
//! Every rank ends with the same bits: the orthogonalisation and the
//! product `P Q^T` run on factors every rank holds bit for bit (each came
//! out of an allreduce), in a fixed order of plain `f32` operations. Only
//! `M Q` and `M^T P` use a rank's own gradient.

use crate::comm::{AllreduceOpts, Communicator};
use crate::element::ReduceOp;
use crate::error::Result;

/// One matrix of a bucket: where its elements start and its shape
/// (row-major).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Matrix {
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Whether a rows x cols matrix gains from rank `r`: the factors must be
/// under half its size (PyTorch's `min_compression_rate` of 2).
pub(crate) fn worth_compressing(rows: usize, cols: usize, r: usize) -> bool {
    rows > 1 && cols > 1 && 2 * (rows + cols) * r < rows * cols
}

/// A bucket's PowerSGD state: which of its elements are matrices, the
/// factors (kept: `q` is the next step's warm start) and the residual.
pub(crate) struct PowerState {
    rank: usize,
    mats: Vec<Matrix>,
    /// Element ranges sent uncompressed: (offset, length).
    plain: Vec<(usize, usize)>,
    p: Vec<f32>,
    /// The last finished step's `Q` (cols x r per matrix: the warm
    /// start), and this step's until its allreduce has finished, so that a
    /// failed step leaves the warm start as it was.
    q: Vec<f32>,
    q_next: Vec<f32>,
    flat: Vec<f32>,
    /// The part of each matrix the factors missed (bucket-sized; zero
    /// outside matrices; empty without error feedback).
    residual: Vec<f32>,
    /// A factor transposed (r x cols): scratch, so that the inner loops
    /// run along contiguous memory.
    wide: Vec<f32>,
}

impl PowerState {
    /// For a bucket of `len` elements whose parameters are `params`
    /// (offset, rows, cols); `seed` starts `Q` the same on every rank.
    pub fn new(len: usize, params: &[(usize, usize, usize)], rank: usize, seed: u64, feedback: bool) -> PowerState {
        let (mut mats, mut plain) = (Vec::new(), Vec::new());
        for &(off, rows, cols) in params {
            if worth_compressing(rows, cols, rank) {
                mats.push(Matrix { off, rows, cols });
            } else {
                plain.push((off, rows * cols));
            }
        }
        let mut st = Self::with_matrices(len, mats, plain, rank, seed);
        if !feedback {
            st.residual = Vec::new();
        }
        st
    }

    /// As [`Self::new`], with the matrices chosen by the caller (tests
    /// compress matrices that would not gain).
    pub fn with_matrices(
        len: usize,
        mats: Vec<Matrix>,
        plain: Vec<(usize, usize)>,
        rank: usize,
        seed: u64,
    ) -> PowerState {
        use rand::{Rng, SeedableRng};
        let p_len: usize = mats.iter().map(|m| m.rows * rank).sum();
        let q_len: usize = mats.iter().map(|m| m.cols * rank).sum();
        // Any full-rank start works; a seeded generator gives every rank
        // the same one.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let q = (0..q_len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let flat = vec![0.0; plain.iter().map(|r| r.1).sum()];
        let cols = mats.iter().map(|m| m.cols).max().unwrap_or(0);
        let wide = vec![0.0; cols * rank];
        let (p, q_next, residual) = (vec![0.0; p_len], vec![0.0; q_len], vec![0.0; len]);
        PowerState { rank, mats, plain, p, q, q_next, flat, residual, wide }
    }

    /// Elements each allreduce of a step carries: uncompressed, `P`, `Q`.
    pub fn counts(&self) -> [usize; 3] {
        [self.flat.len(), self.p.len(), self.q.len()]
    }

    /// One step on `data` (this rank's bucket, each element still to be
    /// divided by `divisor` for averaging, which the first pass does):
    /// afterwards it holds the synchronised approximation, the same on
    /// every rank.
    ///
    /// A step that fails leaves this state as it was (the residual is
    /// written only after the last allreduce, and the warm start only
    /// once its allreduce has finished), so that running the step again
    /// (after [`crate::GradSync::shrink`]) is a clean repeat.
    pub fn step(&mut self, comm: &Communicator, opts: &AllreduceOpts, data: &mut [f32], divisor: f32) -> Result<()> {
        let r = self.rank;
        // The passes over the gradient run with the widest vectors this CPU
        // has (pulp compiles them for each and picks at run time); none
        // uses a fused multiply-add, so the bits do not depend on which.
        let arch = pulp::Arch::new();
        if !self.flat.is_empty() {
            let mut at = 0;
            for &(off, len) in &self.plain {
                let (flat, part) = (&mut self.flat[at..at + len], &data[off..off + len]);
                flat.iter_mut().zip(part).for_each(|(f, x)| *f = x / divisor);
                at += len;
            }
            comm.allreduce_with(&mut self.flat, ReduceOp::Sum, opts)?;
            let mut at = 0;
            for &(off, len) in &self.plain {
                data[off..off + len].copy_from_slice(&self.flat[at..at + len]);
                at += len;
            }
        }
        if self.mats.is_empty() {
            return Ok(());
        }
        // M = gradient / divisor + residual, then P = M Q, one row at a
        // time while it is in cache.
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let (rows, cols) = (m.rows, m.cols);
            let qt = &mut self.wide[..r * cols];
            transpose(&self.q[qa..qa + cols * r], cols, r, qt);
            let (p, at) = (&mut self.p[pa..pa + rows * r], m.off..m.off + rows * cols);
            let (mm, residual) = (&mut data[at.clone()], self.residual.get(at));
            arch.dispatch(Pass::Project { mm, residual, divisor, qt, p, r });
            pa += rows * r;
            qa += cols * r;
        }
        comm.allreduce_with(&mut self.p, ReduceOp::Sum, opts)?;
        // Q = M^T P, with P's columns orthonormal, built transposed.
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let (rows, cols) = (m.rows, m.cols);
            let p = &mut self.p[pa..pa + rows * r];
            orthonormalise(p, rows, r);
            let mm = &data[m.off..m.off + rows * cols];
            let qt = &mut self.wide[..r * cols];
            arch.dispatch(Pass::Back { mm, p, qt, r });
            transpose(qt, r, cols, &mut self.q_next[qa..qa + cols * r]);
            pa += rows * r;
            qa += cols * r;
        }
        comm.allreduce_with(&mut self.q_next, ReduceOp::Sum, opts)?;
        std::mem::swap(&mut self.q, &mut self.q_next);
        // M ~ P Q^T, the sum over ranks. Every rank holds P and Q bit for
        // bit and computes each element the same way, so every rank gets
        // the same bits. Each rank keeps its share of what the
        // approximation misses, its own M less 1/n of the sum, so that the
        // residuals of all ranks add up to exactly the sum's error.
        let share = 1.0 / comm.size() as f32;
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let (rows, cols) = (m.rows, m.cols);
            let p = &self.p[pa..pa + rows * r];
            let qt = &mut self.wide[..r * cols];
            transpose(&self.q[qa..qa + cols * r], cols, r, qt);
            let at = m.off..m.off + rows * cols;
            let (mm, residual) = (&mut data[at.clone()], self.residual.get_mut(at));
            arch.dispatch(Pass::Rebuild { mm, p, qt, residual, share, r });
            pa += rows * r;
            qa += cols * r;
        }
        Ok(())
    }
}

/// One pass over a matrix, as pulp runs it: `with_simd` is compiled once
/// per instruction set with the pass inlined into it (a closure would be
/// compiled once, for the baseline).
enum Pass<'a> {
    Project { mm: &'a mut [f32], residual: Option<&'a [f32]>, divisor: f32, qt: &'a [f32], p: &'a mut [f32], r: usize },
    Back { mm: &'a [f32], p: &'a [f32], qt: &'a mut [f32], r: usize },
    Rebuild { mm: &'a mut [f32], p: &'a [f32], qt: &'a [f32], residual: Option<&'a mut [f32]>, share: f32, r: usize },
}

impl pulp::WithSimd for Pass<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        match self {
            Pass::Project { mm, residual, divisor, qt, p, r } => project(mm, residual, divisor, qt, p, r),
            Pass::Back { mm, p, qt, r } => project_back(mm, p, qt, r),
            Pass::Rebuild { mm, p, qt, residual, share, r } => rebuild(mm, p, qt, residual, share, r),
        }
    }
}

/// `mm` (rows x cols, this rank's gradient) becomes `mm / divisor +
/// residual`, and `p` (rows x r) becomes `mm qt^T` for `qt` (r x cols).
/// These products use this rank's own gradient and are summed over the
/// ranks next, so their order of additions is free: eight lanes per dot
/// product.
#[inline(always)]
fn project(mm: &mut [f32], residual: Option<&[f32]>, divisor: f32, qt: &[f32], p: &mut [f32], r: usize) {
    let cols = qt.len() / r;
    for (i, mrow) in mm.chunks_exact_mut(cols).enumerate() {
        match residual {
            Some(e) => {
                let e = &e[i * cols..(i + 1) * cols];
                mrow.iter_mut().zip(e).for_each(|(x, e)| *x = *x / divisor + e);
            }
            None => mrow.iter_mut().for_each(|x| *x /= divisor),
        }
        for (k, q) in qt.chunks_exact(cols).enumerate() {
            p[i * r + k] = dot(mrow, q);
        }
    }
}

/// `qt` (r x cols) becomes `p^T mm` for `mm` (rows x cols) and `p` (rows
/// x r): each row of `mm` scaled into each row of `qt` (free order again:
/// summed over the ranks next).
#[inline(always)]
fn project_back(mm: &[f32], p: &[f32], qt: &mut [f32], r: usize) {
    let cols = qt.len() / r;
    qt.fill(0.0);
    for (mrow, pi) in mm.chunks_exact(cols).zip(p.chunks_exact(r)) {
        for (q, &a) in qt.chunks_exact_mut(cols).zip(pi) {
            q.iter_mut().zip(mrow).for_each(|(o, x)| *o += a * x);
        }
    }
}

/// `mm` (rows x cols, this rank's `M`) becomes `P Q^T` for `p` (rows x
/// r) and `qt` (r x cols), eight columns at a time in registers: each
/// element is `0 + p_0 q_0 + p_1 q_1 + ...` in that order, plain `f32`
/// operations, the same bits on every rank and every CPU. With
/// `residual`, that first takes `M - share * (P Q^T)`.
#[inline(always)]
fn rebuild(mm: &mut [f32], p: &[f32], qt: &[f32], mut residual: Option<&mut [f32]>, share: f32, r: usize) {
    let cols = qt.len() / r;
    let whole = cols - cols % 8;
    for (i, (out, pi)) in mm.chunks_exact_mut(cols).zip(p.chunks_exact(r)).enumerate() {
        let mut e = residual.as_deref_mut().map(|e| &mut e[i * cols..(i + 1) * cols]);
        let mut lanes = [0f32; 8];
        for j in (0..whole).step_by(8) {
            lanes.fill(0.0);
            for (k, a) in pi.iter().enumerate() {
                let q = &qt[k * cols + j..k * cols + j + 8];
                for l in 0..8 {
                    lanes[l] += a * q[l];
                }
            }
            let o = &mut out[j..j + 8];
            if let Some(e) = e.as_deref_mut() {
                let e = &mut e[j..j + 8];
                for l in 0..8 {
                    e[l] = o[l] - lanes[l] * share;
                }
            }
            o.copy_from_slice(&lanes);
        }
        for j in whole..cols {
            let x = pi.iter().enumerate().fold(0.0f32, |x, (k, a)| x + a * qt[k * cols + j]);
            if let Some(e) = e.as_deref_mut() {
                e[j] = out[j] - x * share;
            }
            out[j] = x;
        }
    }
}

/// `out (cols x rows) = m^T` for `m` rows x cols, row-major.
fn transpose(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = m[i * cols + j];
        }
    }
}

/// `a . b` in eight lanes (an order of additions that vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Makes the `r` columns of `p` (rows x r, row-major) orthonormal by
/// Gram-Schmidt, in place; a column that vanishes stays zero (its
/// direction adds nothing), as PyTorch's epsilon does.
fn orthonormalise(p: &mut [f32], rows: usize, r: usize) {
    for k in 0..r {
        for prev in 0..k {
            let dot: f32 = (0..rows).map(|i| p[i * r + k] * p[i * r + prev]).sum();
            (0..rows).for_each(|i| p[i * r + k] -= dot * p[i * r + prev]);
        }
        let norm = (0..rows).map(|i| p[i * r + k] * p[i * r + k]).sum::<f32>().sqrt();
        let scale = if norm > 1e-8 { 1.0 / norm } else { 0.0 };
        (0..rows).for_each(|i| p[i * r + k] *= scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matrices_that_gain_are_compressed() {
        assert!(worth_compressing(256, 256, 4));
        assert!(!worth_compressing(256, 1, 4), "a vector");
        assert!(!worth_compressing(8, 8, 4), "factors as big as the matrix");
        let st = PowerState::new(256 * 64 + 64, &[(0, 256, 64), (256 * 64, 64, 1)], 4, 1, true);
        assert_eq!(st.counts(), [64, 256 * 4, 64 * 4]);
    }

    #[test]
    fn columns_come_out_orthonormal() {
        let (rows, r) = (7, 3);
        let mut p: Vec<f32> = (0..rows * r).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        orthonormalise(&mut p, rows, r);
        for a in 0..r {
            for b in 0..r {
                let dot: f32 = (0..rows).map(|i| p[i * r + a] * p[i * r + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-5, "columns {a}, {b}: {dot}");
            }
        }
    }

    /// Whatever a step misses is kept, to the element: the ranks'
    /// residuals add up to the sum of their inputs less the result.
    #[test]
    fn the_residuals_add_up_to_what_the_step_missed() {
        let (rows, cols, n) = (8, 6, 3);
        let out = crate::local::run(n, |comm| {
            let me = comm.rank();
            let input: Vec<f32> = (0..rows * cols).map(|i| ((i * 5 + me * 11) % 13) as f32 - 6.0).collect();
            let mut data = input.clone();
            let mut st = PowerState::with_matrices(rows * cols, vec![Matrix { off: 0, rows, cols }], vec![], 1, 9);
            st.step(&comm, &AllreduceOpts::default(), &mut data, 1.0).unwrap();
            (input, data, st.residual.clone())
        });
        let mut missed = 0f32;
        for i in 0..rows * cols {
            let inputs: f32 = out.iter().map(|o| o.0[i]).sum();
            let residuals: f32 = out.iter().map(|o| o.2[i]).sum();
            assert!((inputs - out[0].1[i] - residuals).abs() < 1e-4, "element {i}");
            missed = missed.max(residuals.abs());
        }
        assert!(missed > 0.1, "rank 1 of a 8 x 6 matrix should miss something: {missed}");
    }

    /// A step that fails (here: the other rank is gone after the `P`
    /// allreduce, before the `Q` one) leaves the residual and the warm
    /// start as they were, so that running the step again is a clean
    /// repeat.
    #[test]
    fn a_failed_step_leaves_the_residual_and_warm_start_as_they_were() {
        let (rows, cols) = (16, 12);
        let opts = AllreduceOpts::default().timeout(std::time::Duration::from_millis(300));
        let out = crate::local::run(2, |comm| {
            let me = comm.rank();
            let grad = |s: usize| -> Vec<f32> {
                (0..rows * cols).map(|i| ((i * 5 + me * 11 + s * 3) % 13) as f32 - 6.0).collect()
            };
            let mut st = PowerState::with_matrices(rows * cols, vec![Matrix { off: 0, rows, cols }], vec![], 2, 9);
            for s in 0..2 {
                st.step(&comm, &opts, &mut grad(s), 2.0).unwrap();
            }
            if me == 1 {
                // Its part of the third step's `P` allreduce, and gone.
                comm.allreduce_with(&mut vec![0f32; st.counts()[1]], ReduceOp::Sum, &opts).unwrap();
                return None;
            }
            let (residual, q) = (st.residual.clone(), st.q.clone());
            let failed = st.step(&comm, &opts, &mut grad(2), 2.0).is_err();
            Some((failed, residual, q, st.residual.clone(), st.q.clone()))
        });
        let (failed, residual, q, residual_after, q_after) = out[0].clone().expect("rank 0 ran the third step");
        assert!(failed, "a step without its peer must fail");
        assert!(residual.iter().any(|e| e.abs() > 0.1), "rank 2 of 16 x 12 should miss something");
        assert_eq!(residual, residual_after, "the residual changed");
        assert_eq!(q, q_after, "the warm start changed");
    }

    /// With rank as large as the matrix's smaller side, one power step
    /// recovers the mean exactly (to f32 rounding), on every rank the
    /// same bits, and the ranks' residuals cancel.
    #[test]
    fn a_rank_that_covers_the_matrix_is_exact() {
        let (rows, cols) = (6, 4);
        let n = 3;
        let out = crate::local::run(n, |comm| {
            let me = comm.rank();
            let grad: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 + me * 13) % 17) as f32 - 8.0).collect();
            let mut data: Vec<f32> = grad.iter().map(|g| g / n as f32).collect();
            let mut st = PowerState::with_matrices(rows * cols, vec![Matrix { off: 0, rows, cols }], vec![], cols, 5);
            st.step(&comm, &AllreduceOpts::default(), &mut data, 1.0).unwrap();
            (data, st.residual.clone())
        });
        for i in 0..rows * cols {
            let sum: f32 = out.iter().map(|o| o.1[i]).sum();
            assert!(sum.abs() < 1e-4, "element {i}: the residuals add up to {sum}");
        }
        let exact: Vec<f64> = (0..rows * cols)
            .map(|i| (0..n).map(|me| ((i * 7 + me * 13) % 17) as f64 - 8.0).sum::<f64>() / n as f64)
            .collect();
        for (data, _) in &out {
            assert_eq!(
                data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                out[0].0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            for (got, want) in data.iter().zip(&exact) {
                assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
            }
        }
    }
}
