//! Top-k sparsification with error feedback and momentum correction
//! (Lin et al., "Deep Gradient Compression", 2018): each rank sends only
//! the `k` largest entries of its accumulated gradient, as (index, value)
//! pairs, and keeps the rest for later steps.
//!
//! The exchange is an allgather of every rank's pairs: each rank needs
//! every other rank's entries, which fall on different indices, so a ring
//! that reduced them would carry the union, growing towards dense hop by
//! hop. Every rank then adds the pairs into a zeroed bucket in rank
//! order: the same additions in the same order, so the same bits.

use super::select::Selector;
use crate::comm::{AllreduceOpts, Communicator};
use crate::error::{Error, Result};

/// Largest bucket top-k carries: indices travel as `f32` values, exact
/// up to 2^24.
pub(crate) const MAX_ELEMENTS: usize = 1 << 24;

/// A bucket's top-k state.
pub(crate) struct TopKState {
    k: usize,
    momentum: f32,
    feedback: bool,
    /// Momentum-corrected velocity (DGC's `u`; empty without momentum).
    velocity: Vec<f32>,
    /// What is accumulated and not sent yet (DGC's `v`).
    pending: Vec<f32>,
    /// This rank's pairs, then every rank's (sized for the ranks at the
    /// start).
    mine: [Vec<f32>; 2],
    all: [Vec<f32>; 2],
    /// Which entries to send (the k largest magnitudes), and those sent.
    select: Selector,
    chosen: Vec<u32>,
}

impl TopKState {
    /// For a bucket of `len` elements on `ranks` ranks, sending
    /// `fraction` of them (rounded, at least one).
    pub fn new(len: usize, ranks: usize, fraction: f32, momentum: f32, feedback: bool) -> TopKState {
        // Rounded, not ceiled: 5% of 200 is 10, though 0.05f32 is a hair over.
        let k = ((len as f64 * fraction as f64).round() as usize).clamp(1, len.max(1));
        let keep = |on: bool| if on { vec![0.0; len] } else { Vec::new() };
        TopKState {
            k,
            momentum,
            feedback,
            velocity: keep(feedback && momentum > 0.0),
            pending: vec![0.0; len],
            mine: [vec![0.0; k], vec![0.0; k]],
            all: [vec![0.0; k * ranks], vec![0.0; k * ranks]],
            select: Selector::default(),
            chosen: Vec::with_capacity(k),
        }
    }

    /// Entries each rank sends per step.
    pub fn k(&self) -> usize {
        self.k
    }

    /// One step on `data` (this rank's bucket, each element still to be
    /// divided by `divisor` for averaging): afterwards it holds the sum of
    /// every rank's top-k entries, the same on every rank.
    ///
    /// A step that fails takes its gradient back out of the accumulators
    /// (to rounding), so that running it again (after
    /// [`crate::GradSync::shrink`]) counts it once.
    pub fn step(&mut self, comm: &Communicator, opts: &AllreduceOpts, data: &mut [f32], divisor: f32) -> Result<()> {
        let len = data.len();
        if len > MAX_ELEMENTS {
            let detail = format!("top-k carries buckets of up to {MAX_ELEMENTS} elements, this one has {len}");
            return Err(Error::GradSync { rank: comm.rank(), step: 0, detail });
        }
        if !self.feedback {
            self.pending.iter_mut().zip(data.iter()).for_each(|(v, g)| *v = g / divisor);
        } else if self.velocity.is_empty() {
            self.pending.iter_mut().zip(data.iter()).for_each(|(v, g)| *v += g / divisor);
        } else {
            // Momentum correction: accumulate the velocity, not the
            // gradient, so momentum is not lost on entries held back.
            for ((v, u), g) in self.pending.iter_mut().zip(&mut self.velocity).zip(data.iter()) {
                *u = self.momentum * *u + g / divisor;
                *v += *u;
            }
        }
        let (k, n) = (self.k, comm.size());
        self.select.largest(&self.pending, k, &mut self.chosen);
        for (j, &i) in self.chosen.iter().enumerate() {
            self.mine[0][j] = i as f32;
            self.mine[1][j] = self.pending[i as usize];
        }
        // Indices must arrive exactly: always the native wire. Values go
        // in the codec's format (FP16 or BF16 halve them).
        let exact = AllreduceOpts { codec: crate::Codec::Native, ..opts.clone() };
        // As many ranks' pairs as there are now: fewer after a shrink.
        let [indices, values] = &mut self.all;
        let gathered = comm
            .allgather_with(&self.mine[0], &mut indices[..k * n], &exact)
            .and_then(|()| comm.allgather_with(&self.mine[1], &mut values[..k * n], opts));
        if let Err(e) = gathered {
            self.take_back(data, divisor);
            return Err(e);
        }
        data.fill(0.0);
        for (&i, &v) in self.all[0][..k * n].iter().zip(&self.all[1][..k * n]) {
            data[i as usize] += v;
        }
        // What arrived leaves the accumulators, as every rank received it:
        // a codec's rounding of a value stays pending. DGC's momentum
        // factor masking clears the velocity there too.
        let me = comm.rank() * k;
        for (j, &i) in self.chosen.iter().enumerate() {
            self.pending[i as usize] -= self.all[1][me + j];
            if let Some(u) = self.velocity.get_mut(i as usize) {
                *u = 0.0;
            }
        }
        Ok(())
    }

    /// Undoes a failed step's accumulation of `data` (still the gradient:
    /// only a step that gathered everything overwrites it). Exact up to
    /// the rounding of the sums it undoes (the velocity's divided by the
    /// momentum).
    fn take_back(&mut self, data: &[f32], divisor: f32) {
        if !self.feedback {
            return; // the next step overwrites `pending`
        }
        if self.velocity.is_empty() {
            self.pending.iter_mut().zip(data).for_each(|(v, g)| *v -= g / divisor);
            return;
        }
        for ((v, u), g) in self.pending.iter_mut().zip(&mut self.velocity).zip(data) {
            *v -= *u;
            *u = (*u - g / divisor) / self.momentum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rank: usize, len: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37 + rank * 11) % 101) as f32 - 50.0) / 7.0).collect()
    }

    /// With k covering the bucket, every entry of every rank arrives: the
    /// exact sum (added in rank order), the same bits everywhere, nothing
    /// pending.
    #[test]
    fn a_k_that_covers_the_bucket_is_exact() {
        let (len, n) = (300, 3);
        let out = crate::local::run(n, |comm| {
            let mut data = input(comm.rank(), len);
            let mut st = TopKState::new(len, n, 1.0, 0.0, true);
            st.step(&comm, &AllreduceOpts::default(), &mut data, 1.0).unwrap();
            (data, st.pending.iter().all(|&x| x == 0.0))
        });
        for i in 0..len {
            let want: f32 = (0..n).map(|r| input(r, len)[i]).fold(0.0, |a, x| a + x);
            for (r, o) in out.iter().enumerate() {
                assert_eq!(o.0[i].to_bits(), want.to_bits(), "rank {r}, element {i}");
                assert!(o.1, "rank {r} kept something pending");
            }
        }
    }

    /// Ties at the threshold go to the lowest indices: the choice depends
    /// on the values alone, whatever order the selection left them in.
    #[test]
    fn ties_at_the_threshold_go_to_the_lowest_indices() {
        let len = 40;
        let out = crate::local::run(1, |comm| {
            // Magnitude 3 at 30 and 35, magnitude 2 (either sign) at every
            // fourth index, 1 elsewhere: k = 5 takes both 3s and the first
            // three 2s.
            let mut data: Vec<f32> = (0..len).map(|i| if i % 4 == 0 { -2.0 } else { 1.0 }).collect();
            data[8] = 2.0;
            data[30] = 3.0;
            data[35] = -3.0;
            let mut st = TopKState::new(len, 1, 5.0 / len as f32, 0.0, true);
            st.step(&comm, &AllreduceOpts::default(), &mut data, 1.0).unwrap();
            st.chosen.clone()
        });
        assert_eq!(out[0], vec![0, 4, 8, 30, 35]);
    }

    /// A step that fails (here: the other rank is gone) takes its gradient
    /// back out of the accumulators, so that running it again counts it
    /// once.
    #[test]
    fn a_failed_step_takes_its_gradient_back() {
        let (len, n) = (300, 2);
        let opts = AllreduceOpts::default().timeout(std::time::Duration::from_millis(300));
        for momentum in [0.0, 0.9] {
            let out = crate::local::run(n, |comm| {
                let mut st = TopKState::new(len, n, 0.05, momentum, true);
                for s in 0..2 {
                    let mut data: Vec<f32> = input(comm.rank() + s, len);
                    st.step(&comm, &opts, &mut data, 2.0).unwrap();
                }
                if comm.rank() == 1 {
                    return None;
                }
                let before = (st.pending.clone(), st.velocity.clone());
                let failed = st.step(&comm, &opts, &mut input(7, len), 2.0).is_err();
                Some((failed, before, (st.pending.clone(), st.velocity.clone())))
            });
            let (failed, before, after) = out[0].clone().expect("rank 0 ran the third step");
            assert!(failed, "a step without its peer must fail");
            assert_eq!(before.1.len(), after.1.len());
            let pairs = before.0.iter().zip(&after.0).chain(before.1.iter().zip(&after.1));
            for (i, (b, a)) in pairs.enumerate() {
                // The inputs are under 8 in magnitude; one rounding is
                // under 1e-6, over the momentum a little more.
                assert!((a - b).abs() < 1e-5, "momentum {momentum}, accumulator entry {i}: {b} before, {a} after");
            }
        }
    }

    /// Each rank sends its k largest magnitudes; what it held back stays
    /// pending, to the element.
    #[test]
    fn the_largest_are_sent_and_the_rest_kept() {
        let (len, n) = (200, 2);
        let out = crate::local::run(n, |comm| {
            let mine = input(comm.rank(), len);
            let mut data = mine.clone();
            let mut st = TopKState::new(len, n, 0.05, 0.0, true);
            st.step(&comm, &AllreduceOpts::default(), &mut data, 1.0).unwrap();
            (mine, data, st.pending.clone(), st.k)
        });
        let k = out[0].3;
        assert_eq!(k, 10);
        for (r, (mine, _, pending, _)) in out.iter().enumerate() {
            let sent: Vec<usize> = (0..len).filter(|&i| pending[i] == 0.0 && mine[i] != 0.0).collect();
            assert_eq!(sent.len(), k, "rank {r}");
            let least_sent = sent.iter().map(|&i| mine[i].abs()).fold(f32::MAX, f32::min);
            let most_kept = (0..len).filter(|i| !sent.contains(i)).map(|i| mine[i].abs()).fold(0.0, f32::max);
            assert!(least_sent >= most_kept, "rank {r}: sent {least_sent}, kept {most_kept}");
            for i in (0..len).filter(|i| !sent.contains(i)) {
                assert_eq!(pending[i], mine[i], "rank {r} element {i} held back");
            }
        }
        assert_eq!(out[0].1, out[1].1, "the same result on both ranks");
        for i in 0..len {
            let sent_by = |r: usize| if out[r].2[i] == 0.0 { out[r].0[i] } else { 0.0 };
            assert_eq!(out[0].1[i], sent_by(0) + sent_by(1), "element {i}");
        }
    }
}
