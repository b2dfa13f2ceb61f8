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
    q: Vec<f32>,
    flat: Vec<f32>,
    /// The part of each matrix the factors missed (bucket-sized; zero
    /// outside matrices; empty without error feedback).
    residual: Vec<f32>,
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
        PowerState { rank, mats, plain, p: vec![0.0; p_len], q, flat, residual: vec![0.0; len] }
    }

    /// Elements each allreduce of a step carries: uncompressed, `P`, `Q`.
    pub fn counts(&self) -> [usize; 3] {
        [self.flat.len(), self.p.len(), self.q.len()]
    }

    /// One step on `data` (this rank's bucket, already scaled for
    /// averaging): afterwards it holds the synchronised approximation,
    /// the same on every rank.
    pub fn step(&mut self, comm: &Communicator, opts: &AllreduceOpts, data: &mut [f32]) -> Result<()> {
        let r = self.rank;
        if !self.flat.is_empty() {
            let mut at = 0;
            for &(off, len) in &self.plain {
                self.flat[at..at + len].copy_from_slice(&data[off..off + len]);
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
        // M += residual, then P = M Q.
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let len = m.rows * m.cols;
            let mm = &mut data[m.off..m.off + len];
            if !self.residual.is_empty() {
                mm.iter_mut().zip(&self.residual[m.off..m.off + len]).for_each(|(x, e)| *x += e);
            }
            multiply(mm, m.rows, m.cols, &self.q[qa..qa + m.cols * r], r, &mut self.p[pa..pa + m.rows * r], false);
            pa += m.rows * r;
            qa += m.cols * r;
        }
        comm.allreduce_with(&mut self.p, ReduceOp::Sum, opts)?;
        // Q = M^T P, with P's columns orthonormal.
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let p = &mut self.p[pa..pa + m.rows * r];
            orthonormalise(p, m.rows, r);
            let mm = &data[m.off..m.off + m.rows * m.cols];
            multiply(mm, m.rows, m.cols, p, r, &mut self.q[qa..qa + m.cols * r], true);
            pa += m.rows * r;
            qa += m.cols * r;
        }
        comm.allreduce_with(&mut self.q, ReduceOp::Sum, opts)?;
        // M ~ P Q^T, the sum over ranks. Each rank keeps its share of
        // what that misses, its own M less 1/n of the sum, so that the
        // residuals of all ranks add up to exactly the sum's error.
        let share = 1.0 / comm.size() as f32;
        let (mut pa, mut qa) = (0, 0);
        for m in &self.mats {
            let (p, q) = (&self.p[pa..pa + m.rows * r], &self.q[qa..qa + m.cols * r]);
            for i in 0..m.rows {
                for j in 0..m.cols {
                    let mut x = 0.0f32;
                    for k in 0..r {
                        x += p[i * r + k] * q[j * r + k];
                    }
                    let at = m.off + i * m.cols + j;
                    if let Some(e) = self.residual.get_mut(at) {
                        *e = data[at] - x * share;
                    }
                    data[at] = x;
                }
            }
            pa += m.rows * r;
            qa += m.cols * r;
        }
        Ok(())
    }
}

/// `out (rows x r) = m (rows x cols) * x (cols x r)`, or with
/// `transposed` `out (cols x r) = m^T * x (rows x r)`; row-major, in one
/// fixed order.
fn multiply(m: &[f32], rows: usize, cols: usize, x: &[f32], r: usize, out: &mut [f32], transposed: bool) {
    out.fill(0.0);
    for i in 0..rows {
        for j in 0..cols {
            let a = m[i * cols + j];
            let (from, to) = if transposed { (i, j) } else { (j, i) };
            for k in 0..r {
                out[to * r + k] += a * x[from * r + k];
            }
        }
    }
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
            st.step(&comm, &AllreduceOpts::default(), &mut data).unwrap();
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
            st.step(&comm, &AllreduceOpts::default(), &mut data).unwrap();
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
