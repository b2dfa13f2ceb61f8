//! A one-hidden-layer perceptron (tanh, sigmoid output, cross-entropy),
//! with its gradients written out by hand: small enough to read, real
//! enough that a bad gradient sum shows in the loss.

use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::logistic::{bce, sigmoid};

pub const HIDDEN: usize = 32;

/// Parameters, in registration (layer) order: w1, b1, w2, b2.
#[derive(Clone, PartialEq)]
pub struct Mlp {
    pub inputs: usize,
    pub p: [Vec<f32>; 4],
}

impl Mlp {
    pub fn new(inputs: usize, seed: u64) -> Mlp {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut init = |n: usize, fan_in: usize| {
            let a = (6.0 / fan_in as f32).sqrt() * 0.5;
            (0..n).map(|_| rng.random_range(-a..a)).collect::<Vec<f32>>()
        };
        Mlp { inputs, p: [init(HIDDEN * inputs, inputs), vec![0.0; HIDDEN], init(HIDDEN, HIDDEN), vec![0.0]] }
    }

    pub fn lens(&self) -> [usize; 4] {
        [self.p[0].len(), self.p[1].len(), self.p[2].len(), self.p[3].len()]
    }

    fn hidden(&self, x: &[f32], h: &mut [f32; HIDDEN]) -> f32 {
        for (j, hj) in h.iter_mut().enumerate() {
            let w = &self.p[0][j * self.inputs..(j + 1) * self.inputs];
            *hj = (w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + self.p[1][j]).tanh();
        }
        let z = h.iter().zip(&self.p[2]).map(|(a, b)| a * b).sum::<f32>() + self.p[3][0];
        sigmoid(z)
    }

    /// Probability of class 1.
    pub fn predict(&self, x: &[f32]) -> f32 {
        self.hidden(x, &mut [0.0; HIDDEN])
    }

    /// Mean cross-entropy over `rows`.
    pub fn loss(&self, xs: &[Vec<f32>], ys: &[f32], rows: &[usize]) -> f64 {
        let s: f64 = rows.iter().map(|&i| bce(self.predict(&xs[i]), ys[i]) as f64).sum();
        s / rows.len() as f64
    }

    /// Adds `scale *` the gradient of the cross-entropy of `rows` to `g`
    /// (same layout as `p`). Backward produces the output layer first.
    pub fn backward(&self, xs: &[Vec<f32>], ys: &[f32], rows: &[usize], scale: f32, g: &mut [Vec<f32>; 4]) {
        let mut h = [0f32; HIDDEN];
        for &i in rows {
            let p = self.hidden(&xs[i], &mut h);
            let dz = (p - ys[i]) * scale;
            g[3][0] += dz;
            for j in 0..HIDDEN {
                g[2][j] += dz * h[j];
                let d1 = dz * self.p[2][j] * (1.0 - h[j] * h[j]);
                g[1][j] += d1;
                for (gw, x) in g[0][j * self.inputs..(j + 1) * self.inputs].iter_mut().zip(&xs[i]) {
                    *gw += d1 * x;
                }
            }
        }
    }
}

/// SGD with momentum.
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    v: [Vec<f32>; 4],
}

impl Sgd {
    pub fn new(m: &Mlp, lr: f32, momentum: f32) -> Sgd {
        Sgd { lr, momentum, v: m.lens().map(|n| vec![0.0; n]) }
    }
    pub fn step(&mut self, m: &mut Mlp, g: &[Vec<f32>; 4]) {
        for k in 0..4 {
            for ((p, v), g) in m.p[k].iter_mut().zip(&mut self.v[k]).zip(&g[k]) {
                *v = self.momentum * *v + g;
                *p -= self.lr * *v;
            }
        }
    }
}
