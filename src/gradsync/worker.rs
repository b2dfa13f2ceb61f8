//! The progress thread: runs each bucket's allreduce as the bucket is
//! handed over, while the caller's thread keeps computing. It is the only
//! thread that makes MPI calls while a step is in flight (which is what
//! `MPI_THREAD_SERIALIZED` allows).

use std::sync::Arc;

use super::handoff::Handoff;

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
}

pub(crate) struct Done {
    pub bucket: Bucket,
    pub result: Result<()>,
}

/// Runs until `jobs` is closed. If the thread panics (a bug), `done` is
/// closed so the caller's `wait` reports it instead of waiting forever.
pub(crate) fn run(comm: Arc<Communicator>, opts: AllreduceOpts, jobs: Arc<Handoff<Bucket>>, done: Arc<Handoff<Done>>) {
    let d = done.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&comm, &opts, &jobs, &d)));
    done.close();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn serve(comm: &Communicator, opts: &AllreduceOpts, jobs: &Handoff<Bucket>, done: &Handoff<Done>) {
    while let Some(mut b) = jobs.pop() {
        let mut result = if b.residual.is_empty() {
            comm.allreduce_with(&mut b.data, ReduceOp::Sum, opts)
        } else {
            comm.allreduce_with_feedback(&mut b.data, &mut b.residual, opts)
        };
        if result.is_ok() && !b.shadow.is_empty() {
            // f64 on a native wire: the reference the report compares with.
            let exact = AllreduceOpts { codec: crate::Codec::Native, ..opts.clone() };
            result = comm.allreduce_with(&mut b.shadow, ReduceOp::Sum, &exact);
        }
        if done.push(Done { bucket: b, result }).is_err() {
            return; // the GradSync is gone
        }
    }
}
