//! A bucket's compressor beyond the codec ([`super::Compression`]).

use super::powersgd::PowerState;
use super::topk::TopKState;
use crate::comm::{AllreduceOpts, Communicator};
use crate::error::Result;

pub(crate) enum Compressor {
    PowerSgd(PowerState),
    TopK(TopKState),
}

impl Compressor {
    /// One step on `data` (this rank's bucket, each element still to be
    /// divided by `divisor` for averaging: the compressor's first pass
    /// over it does that): afterwards it holds the synchronised result,
    /// the same on every rank.
    pub fn step(&mut self, comm: &Communicator, opts: &AllreduceOpts, data: &mut [f32], divisor: f32) -> Result<()> {
        match self {
            Compressor::PowerSgd(p) => p.step(comm, opts, data, divisor),
            Compressor::TopK(t) => t.step(comm, opts, data, divisor),
        }
    }

    /// Payload bytes rank 0 sends per step on `n` ranks; `ring` gives a
    /// ring allreduce's for a count.
    pub fn wire_bytes(&self, n: usize, ring: impl Fn(usize) -> usize, codec_bytes: impl Fn(usize) -> usize) -> usize {
        match self {
            Compressor::PowerSgd(p) => p.counts().iter().map(|&c| ring(c)).sum(),
            // A ring allgather: n - 1 blocks of this rank's pairs, the
            // indices as f32, the values in the codec's format.
            Compressor::TopK(t) => (n - 1) * (t.k() * 4 + codec_bytes(t.k())),
        }
    }
}
