//! Which `k` entries of a bucket have the largest magnitudes, ties going
//! to the lower index, so that the choice depends on the values alone.
//!
//! A selection over every magnitude of a bucket (`select_nth`) costs
//! several branchy passes over millions of elements, the bulk of a top-k
//! step. A strided sample of the magnitudes gives a bound that about
//! twice `k` entries clear; one pass keeps those, and the selection runs
//! on them alone. When fewer than `k` clear the bound (a sample that
//! missed the large entries), every entry is a candidate. Either way the
//! k-th largest magnitude among the candidates is the bucket's, since
//! every entry at or above it is a candidate: the same choice as a
//! selection over the whole bucket.

use std::cmp::Ordering;

/// Magnitudes sampled for the bound.
const SAMPLES: usize = 4096;

/// Scratch kept between steps, so a step allocates nothing once warm.
#[derive(Default)]
pub(crate) struct Selector {
    sample: Vec<f32>,
    /// The candidates' magnitudes and indices, in index order.
    magnitude: Vec<f32>,
    index: Vec<u32>,
    /// The magnitudes again, for the selection to reorder.
    scratch: Vec<f32>,
}

impl Selector {
    /// Puts into `chosen` the indices of the `k` entries of `values`
    /// (1 <= k <= len) with the largest magnitudes, in ascending order;
    /// of entries equal to the k-th largest, the lowest indices.
    pub fn largest(&mut self, values: &[f32], k: usize, chosen: &mut Vec<u32>) {
        let len = values.len();
        let bound = self.bound(values, k);
        self.collect(values, bound);
        if self.index.len() < k {
            self.collect(values, 0.0);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.magnitude);
        let c = self.scratch.len();
        let (_, &mut threshold, larger) = self.scratch.select_nth_unstable_by(c - k, |a, b| a.total_cmp(b));
        // The selection leaves the k-1 magnitudes at or above the pivot
        // after it: those strictly above are sent whatever their index,
        // and the rest of the k go to the lowest indices equal to it.
        let over = larger.iter().filter(|m| m.total_cmp(&threshold).is_gt()).count();
        let mut ties = k - over;
        chosen.clear();
        for (m, &i) in self.magnitude.iter().zip(&self.index) {
            let keep = match m.total_cmp(&threshold) {
                Ordering::Greater => true,
                Ordering::Equal if ties > 0 => {
                    ties -= 1;
                    true
                }
                _ => false,
            };
            if keep {
                chosen.push(i);
            }
        }
        debug_assert_eq!(chosen.len(), k.min(len));
    }

    /// A magnitude that about `2k` entries reach, from a strided sample
    /// (0 for buckets too small to gain: every entry a candidate).
    fn bound(&mut self, values: &[f32], k: usize) -> f32 {
        let len = values.len();
        if len < 16 * SAMPLES {
            return 0.0;
        }
        self.sample.clear();
        self.sample.extend((0..SAMPLES).map(|j| values[j * (len / SAMPLES)].abs()));
        // Samples expected at or above the k-th largest, doubled, with
        // room for the sample's spread.
        let above = (2 * SAMPLES * k).div_ceil(len) + 16;
        if above >= SAMPLES {
            return 0.0;
        }
        *self.sample.select_nth_unstable_by(SAMPLES - 1 - above, |a, b| a.total_cmp(b)).1
    }

    /// Keeps the entries whose magnitude reaches `bound`, in index order.
    fn collect(&mut self, values: &[f32], bound: f32) {
        self.magnitude.clear();
        self.index.clear();
        for (i, v) in values.iter().enumerate() {
            let m = v.abs();
            if m.total_cmp(&bound).is_ge() {
                self.magnitude.push(m);
                self.index.push(i as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The k largest by a full sort, ties to the lower index.
    fn by_sorting(values: &[f32], k: usize) -> Vec<u32> {
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_by(|&a, &b| values[b as usize].abs().total_cmp(&values[a as usize].abs()).then(a.cmp(&b)));
        let mut top = order[..k].to_vec();
        top.sort();
        top
    }

    #[test]
    fn the_same_choice_as_sorting_everything() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut sel = Selector::default();
        let mut chosen = Vec::new();
        let big = 16 * SAMPLES + 123;
        // Smooth values, values with many ties, mostly zeros (the bound
        // is 0), a sample that sees only the few large entries (fewer than
        // k clear the bound, so every entry is a candidate), small buckets.
        let cases: Vec<(Vec<f32>, usize)> = vec![
            ((0..big).map(|_| rng.random_range(-1.0f32..1.0)).collect(), big / 100),
            ((0..big).map(|_| rng.random_range(-4i32..=4) as f32).collect(), big / 50),
            ((0..big).map(|i| if i % 1000 == 7 { 1.0 } else { 0.0 }).collect(), big / 100),
            (
                (0..big)
                    .map(|i| if i % (big / SAMPLES) == 0 { 5.0 - (i % 3) as f32 } else { 0.5 + (i % 7) as f32 / 100.0 })
                    .collect(),
                2 * SAMPLES,
            ),
            ((0..300).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect(), 15),
            (vec![-2.0, 2.0, 1.0], 3),
        ];
        for (n, (values, k)) in cases.iter().enumerate() {
            sel.largest(values, *k, &mut chosen);
            assert_eq!(chosen, by_sorting(values, *k), "case {n}");
        }
    }
}
