//! One error type for every collective. Each variant names the rank that saw
//! it and, where there is one, the peer, the step and the operation, so a
//! message in a log is enough to find the failing hop.

use std::time::Duration;

use crate::op::OpDesc;

/// Every error ringfuse returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length does not fit the collective.
    #[error("rank {rank}: {op}: {what}: expected {expected} elements, got {got}")]
    Length {
        /// The rank that checked.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// Which buffer.
        what: &'static str,
        /// Length the collective needs.
        expected: usize,
        /// Length that was passed.
        got: usize,
    },
    /// A root rank outside `0..size`.
    #[error("rank {rank}: {op}: root {root} is out of range for {size} ranks")]
    Root {
        /// The rank that checked.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The root that was passed.
        root: usize,
        /// Number of ranks.
        size: usize,
    },
    /// A wait passed its deadline.
    #[error(
        "rank {rank}: {op}: timed out after {waited:?} waiting to {dir} peer {peer} at step {step} (message {msg})"
    )]
    Timeout {
        /// The rank that waited.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The peer that did not answer.
        peer: usize,
        /// `"receive from"` or `"send to"`.
        dir: &'static str,
        /// Schedule step (0-based) of the message.
        step: usize,
        /// Index of the message within this collective, in schedule order.
        msg: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// A value that is finite in the buffer became infinite on an FP16 wire.
    #[error("rank {rank}: {op}: a partial result exceeded FP16's range (|x| > 65504) on the wire; use codec bf16, average before summing, or the native codec")]
    Fp16Overflow {
        /// The rank reporting it (every rank reports the same).
        rank: usize,
        /// The collective.
        op: OpDesc,
    },
    /// Ranks called different collectives (or the same one with different
    /// counts, types, ops, codecs or roots).
    #[error("rank {rank} called {op}, but rank {peer} called {theirs}")]
    Mismatch {
        /// The rank that noticed.
        rank: usize,
        /// This rank's call.
        op: OpDesc,
        /// The other rank.
        peer: usize,
        /// The other rank's call.
        theirs: OpDesc,
    },
    /// [`crate::Communicator::abort`] was called on this rank.
    #[error("rank {rank}: {op}: aborted by Communicator::abort()")]
    Aborted {
        /// The rank that was aborted.
        rank: usize,
        /// The collective in flight (or refused).
        op: OpDesc,
    },
    /// A peer failed this collective and said so before giving up.
    #[error("rank {rank}: {op}: peer {peer} failed this collective and aborted it (its own error names the cause); seen at step {step}")]
    PeerAborted {
        /// The rank that was told.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The rank that failed.
        peer: usize,
        /// This rank's step when the notice arrived.
        step: usize,
    },
    /// A message from a peer did not match what the schedule expects.
    #[error("rank {rank}: {op}: bad message from peer {peer} at step {step}: {detail}")]
    Protocol {
        /// The rank that received it.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The sender.
        peer: usize,
        /// Schedule step of the message.
        step: usize,
        /// What was wrong.
        detail: String,
    },
    /// The carrier (MPI, threads) reported a failure.
    #[error("rank {rank}: {op}: transport failure with peer {peer}: {detail}")]
    Transport {
        /// The rank that saw it.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The peer involved.
        peer: usize,
        /// The carrier's own words.
        detail: String,
    },
    /// A combination of options this build cannot run.
    #[error("rank {rank}: {op}: unsupported: {detail}")]
    Unsupported {
        /// The rank that checked.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// What is unsupported.
        detail: String,
    },
    /// A previous collective failed mid-flight; buffers or messages of it may
    /// still be in flight, so this communicator refuses further calls.
    #[error("rank {rank}: {op}: communicator is unusable after an earlier error: {cause}")]
    Poisoned {
        /// The rank refusing.
        rank: usize,
        /// The refused collective.
        op: OpDesc,
        /// The first error.
        cause: String,
    },
    /// MPI could not be initialised or was initialised twice.
    #[error("mpi: {0}")]
    MpiInit(String),
}

/// `Result` with ringfuse's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
