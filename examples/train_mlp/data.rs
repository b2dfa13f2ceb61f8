//! The red-wine quality data (1599 wines, 11 measurements) from
//! `linfa-datasets`, standardised, labelled good (quality >= 6) or not,
//! split 80/20 by a fixed shuffle.

use rand::seq::SliceRandom;
use rand::{rngs::SmallRng, SeedableRng};

pub struct Data {
    pub inputs: usize,
    pub x: Vec<Vec<f32>>,
    pub y: Vec<f32>,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

pub fn load(seed: u64) -> Data {
    let ds = linfa_datasets::winequality();
    let (r, t) = (ds.records(), ds.targets());
    let (rows, cols) = (r.nrows(), r.ncols());
    let mut x: Vec<Vec<f32>> = vec![vec![0.0; cols]; rows];
    for j in 0..cols {
        let mean = (0..rows).map(|i| r[[i, j]]).sum::<f64>() / rows as f64;
        let var = (0..rows).map(|i| (r[[i, j]] - mean).powi(2)).sum::<f64>() / rows as f64;
        for (i, xi) in x.iter_mut().enumerate() {
            xi[j] = ((r[[i, j]] - mean) / var.sqrt().max(1e-12)) as f32;
        }
    }
    let y = (0..rows).map(|i| if t[i] >= 6 { 1.0 } else { 0.0 }).collect();
    let mut idx: Vec<usize> = (0..rows).collect();
    idx.shuffle(&mut SmallRng::seed_from_u64(seed));
    let test = idx.split_off(rows * 4 / 5);
    Data { inputs: cols, x, y, train: idx, test }
}

impl Data {
    /// The training rows in this epoch's order (the same on every rank).
    pub fn epoch_order(&self, seed: u64) -> Vec<usize> {
        let mut o = self.train.clone();
        o.shuffle(&mut SmallRng::seed_from_u64(seed));
        o
    }
}
