//! One error type for every collective. Each variant names the rank that saw
//! it and, where there is one, the peer, the step and the operation, so a
//! message in a log is enough to find the failing hop.

use std::time::Duration;

use crate::op::OpDesc;

/// Every error ringfuse returns.
#[derive(Clone, Debug, thiserror::Error)]
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
        "rank {rank}: {op}: timed out after {waited:.3?} waiting to {dir} peer {peer} at step {step} (message {msg}); buffer {buffer}"
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
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// A value the wire format of the call (`op.codec`) cannot carry: a
    /// finite value that would become infinite on an FP16 wire, or an
    /// infinity or NaN on an `Int8` wire. Every rank reports it alike.
    #[error("rank {rank}: {op}: a value could not be carried by the {} wire: {}", op.codec, overflow_hint(op.codec))]
    WireOverflow {
        /// The rank reporting it (every rank reports the same).
        rank: usize,
        /// The collective.
        op: OpDesc,
    },
    /// Ranks called different collectives (or the same one with different
    /// counts, types, ops, codecs or roots).
    #[error("rank {rank} called {op}, but rank {peer} called {theirs}; buffer {buffer}")]
    Mismatch {
        /// The rank that noticed.
        rank: usize,
        /// This rank's call.
        op: OpDesc,
        /// The other rank.
        peer: usize,
        /// The other rank's call.
        theirs: OpDesc,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// [`crate::Communicator::abort`] was called on this rank.
    #[error("rank {rank}: {op}: aborted by Communicator::abort(); buffer {buffer}")]
    Aborted {
        /// The rank that was aborted.
        rank: usize,
        /// The collective in flight (or refused).
        op: OpDesc,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// A peer is gone: its process exited or was killed, or its
    /// communicator was dropped mid-job. Noticed within about twice
    /// [`crate::transport::LIVENESS_INTERVAL`] of a wait that it holds up,
    /// not at the deadline. Every survivor reports it with the same `lost`;
    /// [`crate::Communicator::shrink`] goes on without it.
    #[error("rank {rank}: {op}: rank {lost} is lost ({detail}); the survivors can go on with Communicator::shrink(); buffer {buffer}")]
    PeerLost {
        /// The rank that noticed.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The rank that is gone (the lowest, where several are).
        lost: usize,
        /// How it was noticed.
        detail: String,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// A peer failed this collective and said so before giving up.
    #[error("rank {rank}: {op}: peer {peer} aborted this collective because rank {origin} failed it (rank {origin}'s error names the cause); seen at step {step}; buffer {buffer}")]
    PeerAborted {
        /// The rank that was told.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The neighbour whose notice arrived.
        peer: usize,
        /// The rank that failed first (the notice is relayed unchanged).
        origin: usize,
        /// This rank's step when the notice arrived.
        step: usize,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// A message from a peer did not match what the schedule expects.
    #[error("rank {rank}: {op}: bad message from peer {peer} at step {step}: {detail}; buffer {buffer}")]
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
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// A message's payload does not match its checksum (checksums on).
    #[error("rank {rank}: {op}: checksum mismatch in the message from peer {peer} at step {step} (block {block}, slice {slice}): sent {sent:#010x}, received {got:#010x}; buffer {buffer}")]
    Checksum {
        /// The rank that received it.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The sender.
        peer: usize,
        /// Schedule step of the message.
        step: usize,
        /// Block of the payload.
        block: u32,
        /// Slice within the block.
        slice: u32,
        /// CRC-32C the sender computed.
        sent: u32,
        /// CRC-32C of what arrived.
        got: u32,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// The carrier (MPI, threads) reported a failure.
    #[error("rank {rank}: {op}: transport failure with peer {peer}: {detail}; buffer {buffer}")]
    Transport {
        /// The rank that saw it.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The peer involved.
        peer: usize,
        /// The carrier's own words.
        detail: String,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// `Algorithm::Auto`'s constants could not be read, measured or saved
    /// (see [`crate::tuning`]).
    #[error("rank {rank}: tuning: {detail}")]
    Tuning {
        /// The rank that failed.
        rank: usize,
        /// What failed, naming the file where there is one.
        detail: String,
    },
    /// [`crate::GradSync`] was used out of order or with gradients that do
    /// not match the ones it was built for.
    #[error("rank {rank}: GradSync step {step}: {detail}")]
    GradSync {
        /// The rank that checked.
        rank: usize,
        /// The step (0-based count of completed `wait`s).
        step: u64,
        /// What was wrong, naming the parameter or bucket.
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
    /// A setting (a `RINGFUSE_*` environment variable or an option) holds
    /// a value that is not accepted.
    #[error("{}{name}={value:?} is not accepted; expected {expected}", rank_prefix(*.rank))]
    Setting {
        /// The rank that read it, where a communicator existed.
        rank: Option<usize>,
        /// The variable or option.
        name: String,
        /// The value it held.
        value: String,
        /// What it accepts.
        expected: String,
    },
    /// Ranks called the same collective with options that must agree but
    /// do not (algorithm, slots, message size, scale block).
    #[error("rank {rank}: {op}: this rank's {setting} is {mine}, but rank {peer}'s is {theirs}; every rank must pass the same; buffer {buffer}")]
    OptionMismatch {
        /// The rank that noticed.
        rank: usize,
        /// The collective.
        op: OpDesc,
        /// The other rank.
        peer: usize,
        /// Which option.
        setting: &'static str,
        /// This rank's value.
        mine: Box<str>,
        /// The other rank's value.
        theirs: Box<str>,
        /// What happened to the caller's buffer.
        buffer: BufferState,
    },
    /// Setting up a communicator failed (a deadline passed, a peer
    /// disagreed) before any collective ran. Under MPI the job cannot go
    /// on: a late rank may still enter MPI's own start-up calls, which
    /// `MPI_Finalize` would then wait for, so end the job with
    /// `MPI_Abort` (rsmpi's `world.abort(code)`).
    #[error("rank {rank}: start-up: {detail}")]
    Startup {
        /// The rank that failed.
        rank: usize,
        /// What failed, naming the step and the peer where known.
        detail: String,
    },
    /// The survivors of a lost rank could not go on together
    /// ([`crate::Communicator::shrink`]): the carrier cannot shrink, the
    /// survivors did not agree before the deadline, or a control file for
    /// them could not be made.
    #[error("rank {rank}: shrink: {detail}")]
    Shrink {
        /// The rank that failed.
        rank: usize,
        /// Why, naming the ranks waited for where that is the cause.
        detail: String,
    },
    /// MPI could not be initialised or was initialised twice.
    #[error("mpi: {0}")]
    MpiInit(String),
    /// A CUDA library, device, kernel compilation or launch failed
    /// (feature `cuda`).
    #[error("cuda: {what}: {detail}")]
    Cuda {
        /// What was being done: `nvrtc sm_90`, `device 0`, a kernel's name.
        what: String,
        /// What went wrong, as the library said it.
        detail: String,
    },
}

/// What a failed collective left in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferState {
    /// Nothing was written: the buffer holds what the caller passed in.
    Untouched,
    /// Some elements were written before the failure: the contents are
    /// unspecified and must not be used.
    Partial,
}

impl std::fmt::Display for BufferState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BufferState::Untouched => "untouched",
            BufferState::Partial => "partially written (contents unspecified)",
        })
    }
}

/// Matches the variants of failures that can happen mid-flight (and so
/// carry a [`BufferState`]), binding the state to `$b`.
macro_rules! mid_flight_buffer {
    ($e:expr, $b:ident => $then:expr, $else:expr) => {
        match $e {
            Error::Timeout { buffer: $b, .. }
            | Error::Mismatch { buffer: $b, .. }
            | Error::OptionMismatch { buffer: $b, .. }
            | Error::Aborted { buffer: $b, .. }
            | Error::PeerAborted { buffer: $b, .. }
            | Error::PeerLost { buffer: $b, .. }
            | Error::Protocol { buffer: $b, .. }
            | Error::Checksum { buffer: $b, .. }
            | Error::Transport { buffer: $b, .. } => $then,
            _ => $else,
        }
    };
}

/// What a [`Error::WireOverflow`] on `codec` means and what to do.
fn overflow_hint(codec: crate::codec::Codec) -> &'static str {
    match codec {
        crate::codec::Codec::Int8 => "inf or NaN cannot be scaled to int8; use the native codec, or fp16scaled",
        _ => "beyond FP16's range (|x| > 65504); use codec fp16scaled or bf16, average before summing, or the native codec",
    }
}

impl Error {
    /// What the failed call left in the output buffer. `Untouched` for
    /// argument errors and for failures before the first write;
    /// `Partial` once any element was written. An [`Error::WireOverflow`]
    /// leaves the (identical on every rank) result with infinities in it.
    pub fn buffer(&self) -> BufferState {
        match self {
            Error::WireOverflow { .. } => BufferState::Partial,
            _ => mid_flight_buffer!(self, b => *b, BufferState::Untouched),
        }
    }

    /// Marks a mid-flight error as having written the buffer.
    pub(crate) fn with_buffer(mut self, state: BufferState) -> Self {
        mid_flight_buffer!(&mut self, b => *b = state, ());
        self
    }

    /// The rank this error points at, if any: the peer whose message (or
    /// silence) failed the call, or for a relayed abort the rank that
    /// detected the failure first (whose own error names the culprit).
    pub fn blamed_rank(&self) -> Option<usize> {
        match self {
            Error::Timeout { peer, .. }
            | Error::Mismatch { peer, .. }
            | Error::OptionMismatch { peer, .. }
            | Error::Protocol { peer, .. }
            | Error::Checksum { peer, .. }
            | Error::Transport { peer, .. } => Some(*peer),
            Error::PeerAborted { origin, .. } => Some(*origin),
            Error::PeerLost { lost, .. } => Some(*lost),
            _ => None,
        }
    }
}

fn rank_prefix(rank: Option<usize>) -> String {
    rank.map_or_else(String::new, |r| format!("rank {r}: "))
}

/// `Result` with ringfuse's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
