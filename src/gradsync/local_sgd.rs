//! [`LocalSgd`]: post-local SGD (Lin et al., "Don't Use Large
//! Mini-Batches, Use Local SGD", 2020; PyTorch's `post_localSGD_hook` with
//! a `PeriodicModelAverager`): gradients synchronised every step for a
//! warm-up, then every rank steps on its own gradients and the ranks
//! average their parameters every `period` steps, talking `period` times
//! less.

use std::sync::Arc;

use super::{GradSync, GradSyncOpts, StepReport};
use crate::comm::Communicator;
use crate::element::{Element, ReduceOp};
use crate::error::{Error, Result};

/// Post-local SGD over a [`GradSync`]: gradients synchronised every step
/// for a warm-up, then each rank steps on its own gradients and the ranks
/// average their parameters every `period` steps (PyTorch's
/// `post_localSGD_hook` with a `PeriodicModelAverager`).
///
/// ```
/// use ringfuse::{GradSyncOpts, LocalSgd};
///
/// let out = ringfuse::local::run(2, |comm| {
///     let me = comm.rank() as f32;
///     let mut w = vec![0.0f32; 8];
///     // Warm up for 2 steps, then average every 4.
///     let mut sync = LocalSgd::new(comm, &[w.len()], GradSyncOpts::default(), 4, 2).unwrap();
///     for _ in 0..10 {
///         let mut g: Vec<f32> = w.iter().map(|x| x - me).collect(); // backward
///         sync.sync_gradients(&mut [&mut g]).unwrap();
///         w.iter_mut().zip(&g).for_each(|(x, g)| *x -= 0.5 * g); // the optimiser
///         sync.sync_parameters(&mut [&mut w]).unwrap();
///     }
///     w[0]
/// });
/// assert_eq!(out[0], out[1]); // step 10 is 2 + 2 x 4: averaged
/// ```
pub struct LocalSgd {
    sync: GradSync,
    period: u64,
    warmup: u64,
    step: u64,
    /// The parameters, flattened, for their average (allocated once).
    flat: Vec<f32>,
    last_wire: usize,
}

impl LocalSgd {
    /// For parameters of `lens` elements over `comm`: gradients
    /// synchronised by a [`GradSync`] with `opts` for the first `warmup`
    /// steps, then parameters averaged (over `opts.allreduce`'s codec)
    /// after every `period`-th step past it.
    ///
    /// # Errors
    /// [`Error::GradSync`] for a `period` of 0; [`GradSync::new`]'s.
    pub fn new(
        comm: impl Into<Arc<Communicator>>,
        lens: &[usize],
        opts: GradSyncOpts,
        period: u64,
        warmup: u64,
    ) -> Result<LocalSgd> {
        let sync = GradSync::new(comm, lens, opts)?;
        if period == 0 {
            let detail = "local SGD's period must be at least 1 step".into();
            return Err(Error::GradSync { rank: sync.comm().rank(), step: 0, detail });
        }
        let flat = vec![0.0; lens.iter().sum()];
        Ok(LocalSgd { sync, period, warmup, step: 0, flat, last_wire: 0 })
    }

    /// The communicator.
    pub fn comm(&self) -> &Communicator {
        self.sync.comm()
    }

    /// Steps completed (calls of [`sync_parameters`](Self::sync_parameters)).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether this step is still in the warm-up (gradients synchronised).
    pub fn warming_up(&self) -> bool {
        self.step < self.warmup
    }

    /// After backward: in the warm-up, synchronises `grads` as
    /// [`GradSync::synchronize`] does and returns its report; after it,
    /// leaves them as they are (each rank steps on its own) and returns
    /// `None`.
    pub fn sync_gradients<T: Element>(&mut self, grads: &mut [&mut [T]]) -> Result<Option<&StepReport>> {
        if self.warming_up() {
            self.sync.synchronize(grads).map(Some)
        } else {
            Ok(None)
        }
    }

    /// After the optimiser's step: past the warm-up, every `period`-th
    /// step replaces `params` by their mean over the ranks (the same bits
    /// on every rank); counts the step. Returns whether it averaged. An
    /// optimiser's own state (momentum) stays each rank's.
    pub fn sync_parameters<T: Element>(&mut self, params: &mut [&mut [T]]) -> Result<bool> {
        let total: usize = params.iter().map(|p| p.len()).sum();
        if total != self.flat.len() {
            let detail = format!("{total} parameter elements given, {} registered", self.flat.len());
            return Err(Error::GradSync { rank: self.comm().rank(), step: self.step, detail });
        }
        let s = self.step;
        self.step += 1;
        if s < self.warmup || (s + 1 - self.warmup) % self.period != 0 {
            return Ok(false);
        }
        let n = self.comm().size();
        let mut at = 0;
        for p in params.iter() {
            crate::element::widen(p, &mut self.flat[at..at + p.len()]);
            at += p.len();
        }
        // Divided first, as GradSync does: the wire carries the mean's parts.
        self.flat.iter_mut().for_each(|x| *x /= n as f32);
        let opts = self.sync.opts().allreduce.clone();
        self.sync.comm().allreduce_with(&mut self.flat, ReduceOp::Sum, &opts)?;
        let mut at = 0;
        for p in params.iter_mut() {
            let len = p.len();
            p.iter_mut().zip(&self.flat[at..at + len]).for_each(|(d, s)| *d = T::from_f32(*s));
            at += len;
        }
        self.last_wire = super::ring_wire_bytes(&opts, n, self.flat.len());
        Ok(true)
    }

    /// Payload bytes this rank sent in the last parameter average.
    pub fn last_average_wire_bytes(&self) -> usize {
        self.last_wire
    }

    /// Goes on without lost ranks, as [`GradSync::shrink`].
    ///
    /// # Errors
    /// As [`GradSync::shrink`].
    pub fn shrink(&mut self) -> Result<Vec<usize>> {
        self.sync.shrink()
    }
}
