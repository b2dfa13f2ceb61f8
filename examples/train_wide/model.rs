//! The MLP inputs-width-width-1 (ReLU, sigmoid output, binary
//! cross-entropy), one sample at a time along contiguous rows.

use rand::{Rng, SeedableRng};

use crate::logistic::{bce, sigmoid};

/// Gradients (or momentum), one vector per parameter tensor.
pub struct Grads(pub Vec<Vec<f32>>);

impl Grads {
    pub fn zeros(lens: &[usize]) -> Grads {
        Grads(lens.iter().map(|&l| vec![0.0; l]).collect())
    }
    pub fn fill(&mut self, x: f32) {
        self.0.iter_mut().for_each(|v| v.fill(x));
    }
    pub fn views(&mut self) -> Vec<&mut [f32]> {
        self.0.iter_mut().map(|v| v.as_mut_slice()).collect()
    }
}

/// Parameters: `w1` (width x inputs), `b1`, `w2` (width x width), `b2`,
/// `w3` (1 x width), `b3`, in that order (registration order).
pub struct Wide {
    inputs: usize,
    width: usize,
    p: Grads,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

impl Wide {
    /// He-initialised from `seed`: the same weights on every rank.
    pub fn new(inputs: usize, width: usize, seed: u64) -> Wide {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut init = |len: usize, fan_in: usize| -> Vec<f32> {
            let s = (2.0 / fan_in as f32).sqrt();
            (0..len).map(|_| rng.random_range(-1.0f32..1.0) * s * 1.732).collect()
        };
        let p = vec![
            init(width * inputs, inputs),
            vec![0.0; width],
            init(width * width, width),
            vec![0.0; width],
            init(width, width),
            vec![0.0; 1],
        ];
        Wide { inputs, width, p: Grads(p) }
    }

    /// Parameters in all.
    pub fn len(&self) -> usize {
        self.p.0.iter().map(|v| v.len()).sum()
    }

    /// (rows, columns) per tensor, for PowerSGD.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        let (i, w) = (self.inputs, self.width);
        vec![(w, i), (w, 1), (w, w), (w, 1), (1, w), (1, 1)]
    }

    pub fn views(&mut self) -> Vec<&mut [f32]> {
        self.p.views()
    }

    /// Every parameter, flattened in order.
    pub fn flat(&self) -> Vec<f32> {
        self.p.0.concat()
    }

    /// Sets every parameter from `flat` (as [`Self::flat`] lays them out).
    pub fn load(&mut self, flat: &[f32]) {
        let mut at = 0;
        for v in &mut self.p.0 {
            let n = v.len();
            v.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
    }

    /// Hidden activations of `x` and the output's logit.
    fn forward(&self, x: &[f32], a1: &mut [f32], a2: &mut [f32]) -> f32 {
        let (w, i) = (self.width, self.inputs);
        let p = &self.p.0;
        for h in 0..w {
            a1[h] = (p[1][h] + dot(&p[0][h * i..(h + 1) * i], x)).max(0.0);
        }
        for h in 0..w {
            a2[h] = (p[3][h] + dot(&p[2][h * w..(h + 1) * w], a1)).max(0.0);
        }
        p[5][0] + dot(&p[4], a2)
    }

    pub fn predict(&self, x: &[f32]) -> f32 {
        let (mut a1, mut a2) = (vec![0.0; self.width], vec![0.0; self.width]);
        sigmoid(self.forward(x, &mut a1, &mut a2))
    }

    /// Mean binary cross-entropy over `rows`.
    pub fn loss(&self, xs: &[Vec<f32>], ys: &[f32], rows: &[usize]) -> f64 {
        let (mut a1, mut a2) = (vec![0.0; self.width], vec![0.0; self.width]);
        let total: f64 = rows.iter().map(|&r| bce(sigmoid(self.forward(&xs[r], &mut a1, &mut a2)), ys[r]) as f64).sum();
        total / rows.len().max(1) as f64
    }

    /// Adds `scale` x the gradient of the loss of each sample of `rows`
    /// into `g`.
    pub fn backward(&self, xs: &[Vec<f32>], ys: &[f32], rows: &[usize], scale: f32, g: &mut Grads) {
        let (w, i) = (self.width, self.inputs);
        let p = &self.p.0;
        let (mut a1, mut a2) = (vec![0.0; w], vec![0.0; w]);
        let (mut d1, mut d2) = (vec![0.0; w], vec![0.0; w]);
        for &r in rows {
            let x = &xs[r];
            let out = self.forward(x, &mut a1, &mut a2);
            let d3 = (sigmoid(out) - ys[r]) * scale;
            axpy(&mut g.0[4], d3, &a2);
            g.0[5][0] += d3;
            for h in 0..w {
                d2[h] = if a2[h] > 0.0 { d3 * p[4][h] } else { 0.0 };
            }
            d1.fill(0.0);
            for h in 0..w {
                if d2[h] != 0.0 {
                    axpy(&mut g.0[2][h * w..(h + 1) * w], d2[h], &a1);
                    axpy(&mut d1, d2[h], &p[2][h * w..(h + 1) * w]);
                }
            }
            axpy(&mut g.0[3], 1.0, &d2);
            for h in 0..w {
                let d = if a1[h] > 0.0 { d1[h] } else { 0.0 };
                if d != 0.0 {
                    axpy(&mut g.0[0][h * i..(h + 1) * i], d, x);
                    g.0[1][h] += d;
                }
            }
        }
    }

    /// SGD with momentum (none at 0).
    pub fn sgd(&mut self, g: &Grads, v: &mut Grads, lr: f32, momentum: f32) {
        for ((p, v), g) in self.p.0.iter_mut().zip(&mut v.0).zip(&g.0) {
            for ((p, v), g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = momentum * *v + g;
                *p -= lr * *v;
            }
        }
    }
}
