//! The progress thread: runs each bucket's allreduce as the bucket is
//! handed over, while the caller's thread keeps computing. It is the only
//! thread that makes MPI calls while a step is in flight (which is what
//! `MPI_THREAD_SERIALIZED` allows).

use std::sync::Arc;

use super::handoff::Handoff;

use super::GradSyncOpts;
use crate::comm::{AllreduceOpts, Communicator};
use crate::element::ReduceOp;
use crate::error::Result;

/// One bucket's memory; it travels to the worker and back each step, so
/// a step allocates nothing.
pub(crate) struct Bucket {
    pub index: usize,
    pub data: Vec<f32>,
    /// Error feedback's residual (empty when off).
    pub residual: Vec<f32>,
    /// The exact result to compare with (empty unless reporting).
    pub shadow: Vec<f64>,
    /// The compressor's state, when compressing.
    pub compressor: Option<super::Compressor>,
}

pub(crate) struct Done {
    pub bucket: Bucket,
    pub result: Result<()>,
}

/// Runs until `jobs` is closed. If the thread panics (a bug), `done` is
/// closed so the caller's `wait` reports it instead of waiting forever.
pub(crate) fn run(comm: Arc<Communicator>, opts: GradSyncOpts, jobs: Arc<Handoff<Bucket>>, done: Arc<Handoff<Done>>) {
    let d = done.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&comm, &opts, &jobs, &d)));
    done.close();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn serve(comm: &Communicator, opts: &GradSyncOpts, jobs: &Handoff<Bucket>, done: &Handoff<Done>) {
    let n = comm.size();
    while let Some(mut b) = jobs.pop() {
        // The shadow is the exact mean (or sum) of what was handed over.
        let scale = if opts.average { 1.0 / n as f64 } else { 1.0 };
        b.shadow.iter_mut().zip(&b.data).for_each(|(s, g)| *s = *g as f64 * scale);
        // Averaging here rather than in `mark_ready` keeps the caller's
        // thread (the backward pass) free of it, and treats copied and
        // in-place gradients alike. A compressor divides in its own first
        // pass over the bucket, which saves one.
        let divisor = if opts.average && n > 1 { n as f32 } else { 1.0 };
        if divisor != 1.0 && b.compressor.is_none() {
            b.data.iter_mut().for_each(|g| *g /= divisor);
        }
        let ar = &opts.allreduce;
        let mut result = if let Some(c) = b.compressor.as_mut() {
            c.step(comm, ar, &mut b.data, divisor)
        } else if b.residual.is_empty() {
            comm.allreduce_with(&mut b.data, ReduceOp::Sum, ar)
        } else {
            comm.allreduce_with_feedback(&mut b.data, &mut b.residual, ar)
        };
        if result.is_ok() && !b.shadow.is_empty() {
            // f64 on a native wire: the reference the report compares with.
            let exact = AllreduceOpts { codec: crate::Codec::Native, ..ar.clone() };
            result = comm.allreduce_with(&mut b.shadow, ReduceOp::Sum, &exact);
        }
        if done.push(Done { bucket: b, result }).is_err() {
            return; // the GradSync is gone
        }
    }
}
