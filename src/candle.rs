//! [candle](https://github.com/huggingface/candle) integration (feature
//! `candle`): data-parallel training with two added lines.
//!
//! ```ignore
//! let mut sync = ringfuse::candle::CandleSync::new(comm, &varmap, GradSyncOpts::default())?; // rank 0's weights everywhere
//! for batch in my_shard {
//!     let loss = model.forward(&batch)?.loss()?;
//!     let mut grads = loss.backward()?;
//!     sync.synchronize(&mut grads)?; // every rank now holds the mean gradient
//!     opt.step(&grads)?;
//! }
//! ```
//!
//! Why candle rather than burn: candle's gradients are a plain
//! [`GradStore`] (tensor id to tensor) that the training loop holds
//! between `backward()` and `Optimizer::step`, and its parameters are a
//! [`VarMap`] of named [`Var`]s, so a synchroniser can sit between the two
//! calls without the model's cooperation. Burn's gradients are typed per
//! module and reached through its module visitor/mapper traits, so the
//! same hook would need code per model, and its dependency tree is several
//! times larger.
//!
//! Variables are registered sorted by name: a `VarMap` is a `HashMap`,
//! whose order differs between processes, and every rank must register
//! the same parameters in the same order. A variable that received no
//! gradient on this rank (unused in this step's loss) contributes zeros,
//! as PyTorch DDP does with `find_unused_parameters`, and every variable
//! gets the synchronised gradient in the store.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::gradsync::{GradSync, GradSyncOpts, StepReport};

/// A [`GradSync`] over a candle model's variables.
pub struct CandleSync {
    sync: GradSync,
    /// (name, variable), in registration order.
    vars: Vec<(String, Var)>,
}

impl CandleSync {
    /// Registers every variable of `varmap` (sorted by name) and copies
    /// rank 0's values to every rank, as PyTorch DDP does when it wraps a
    /// model, so all ranks start from the same weights.
    pub fn new(comm: impl Into<Arc<Communicator>>, varmap: &VarMap, opts: GradSyncOpts) -> Result<CandleSync> {
        let mut vars: Vec<(String, Var)> = (varmap.data().lock())
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        CandleSync::from_vars(comm, vars, opts)
    }

    /// Registers `vars` in the order given (which must be the same on
    /// every rank) and copies rank 0's values to every rank.
    pub fn from_vars(
        comm: impl Into<Arc<Communicator>>,
        vars: Vec<(String, Var)>,
        opts: GradSyncOpts,
    ) -> Result<CandleSync> {
        let lens: Vec<usize> = vars.iter().map(|(_, v)| v.elem_count()).collect();
        let sync = GradSync::new(comm, &lens, opts)?;
        let me = CandleSync { sync, vars };
        me.broadcast_vars()?;
        Ok(me)
    }

    /// Copies rank 0's variable values to every rank (exactly: through
    /// `f64`, which holds every f32, f16 and bf16 value).
    pub fn broadcast_vars(&self) -> Result<()> {
        let comm = self.sync.comm();
        for (name, var) in &self.vars {
            let mut v: Vec<f64> =
                self.candle(name, var.flatten_all().and_then(|t| t.to_dtype(DType::F64)?.to_vec1()))?;
            comm.broadcast(&mut v, 0)?;
            if comm.rank() != 0 {
                let t = Tensor::from_vec(v, var.shape(), var.device()).and_then(|t| t.to_dtype(var.dtype()));
                self.candle(name, t.and_then(|t| var.set(&t)))?;
            }
        }
        Ok(())
    }

    /// Replaces every variable's gradient in `grads` with the mean (or,
    /// with averaging off, the sum) over all ranks, identical on every
    /// rank. Buckets start travelling while later gradients are still
    /// being converted.
    pub fn synchronize(&mut self, grads: &mut GradStore) -> Result<&StepReport> {
        for p in (0..self.vars.len()).rev() {
            let (name, var) = &self.vars[p];
            let flat = match grads.get(var.as_tensor()) {
                Some(g) => {
                    let g = g.flatten_all().and_then(|g| g.to_dtype(DType::F32)?.to_vec1::<f32>());
                    Some(self.candle(name, g)?)
                }
                None => None,
            };
            let buf = self.sync.grad_buffer(p)?;
            match flat {
                Some(g) if g.len() == buf.len() => buf.copy_from_slice(&g),
                Some(g) => {
                    let detail =
                        format!("variable '{name}': gradient has {} elements, the variable {}", g.len(), buf.len());
                    return Err(self.err(detail));
                }
                None => buf.fill(0.0),
            }
            self.sync.mark_written(p)?;
        }
        self.sync.wait_in_place()?;
        for (p, (name, var)) in self.vars.iter().enumerate() {
            let g =
                Tensor::from_slice(self.sync.grad(p)?, var.shape(), var.device()).and_then(|t| t.to_dtype(var.dtype()));
            let g = self.candle(name, g)?;
            grads.insert(var.as_tensor(), g);
        }
        Ok(self.sync.last_report())
    }

    /// The synchroniser underneath (its options, communicator and report).
    pub fn grad_sync(&self) -> &GradSync {
        &self.sync
    }

    /// The registered variables' names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(n, _)| n.as_str())
    }

    fn candle<T>(&self, name: &str, r: candle_core::Result<T>) -> Result<T> {
        r.map_err(|e| self.err(format!("variable '{name}': candle: {e}")))
    }

    fn err(&self, detail: String) -> Error {
        Error::GradSync { rank: self.sync.comm().rank(), step: self.sync.last_report().step, detail }
    }
}
