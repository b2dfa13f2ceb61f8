//! Schedules: pure code, no I/O. A schedule tells one rank, step by step,
//! which primitive to run on which block of the buffer and with which peers.
//! The executor walks it; the tests below check a
//! schedule alone by simulating every rank's steps symbolically.
//!
//! The primitives are NCCL's (`src/device/prims_simple.h`), so a reader who
//! knows NCCL's ring recognises the sequence:
//!
//! | primitive              | receives | reduces | stores final | sends |
//! |------------------------|----------|---------|--------------|-------|
//! | `Send`                 |          |         |              | yes   |
//! | `CopySend`             |          |         | yes          | yes   |
//! | `RecvReduceSend`       | yes      | yes     |              | yes   |
//! | `RecvReduceCopySend`   | yes      | yes     | yes          | yes   |
//! | `RecvReduceCopy`       | yes      | yes     | yes          |       |
//! | `RecvCopySend`         | yes      |         | yes          | yes (forwards the bytes it got) |
//! | `Recv`                 | yes      |         | yes          |       |
//! | `RecvReduce`           | yes      | yes     |              |       |
//! | `Exchange`             | yes      | yes     |              | yes (before it receives) |
//! | `ExchangeFinal`        | yes      | yes     | yes          | yes (before it receives) |
//!
//! `Exchange` is recursive doubling's step: both partners send their partial
//! result and combine the two *wire* values in rank order, so both compute
//! the same bits.

mod algorithm;
mod chunk;
mod cursor;
mod doubling;
mod halving;
mod hier;
mod ring;
mod tree;

pub use algorithm::Algorithm;
pub use chunk::{block_range, slice_count, slice_range};
pub use cursor::{Cursor, Hop};
pub use doubling::RecursiveDoubling;
pub use halving::HalvingDoubling;
pub use hier::Hierarchical;
pub use ring::{Chain, Ring, RingKind};
pub use tree::{btree, dtree, DoubleTree, TreeNode};

use std::ops::Range;

/// What one step does; see the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prim {
    /// Encode the local block (a first partial result) and send it.
    Send,
    /// Encode a local block that is already final (allgather, broadcast
    /// root), store the decoded wire value as the local result, send it.
    CopySend,
    /// Receive a partial result, reduce the local block into it, send it on.
    RecvReduceSend,
    /// As `RecvReduceSend`, and the result is final: store it locally too.
    RecvReduceCopySend,
    /// Receive a partial result and reduce it into the final local value.
    RecvReduceCopy,
    /// Receive a final value, store it, and forward the same bytes.
    RecvCopySend,
    /// Receive a final value and store it.
    Recv,
    /// Receive a partial result and reduce it into the local partial (the
    /// fold of a rank that sits out recursive doubling).
    RecvReduce,
    /// Send the local partial, receive the partner's, combine both wire
    /// values (lower rank's first) into the local partial.
    Exchange,
    /// As `Exchange`, and the result is final: divide for `Avg`, round to
    /// the wire, store the decoded value.
    ExchangeFinal,
}

impl Prim {
    /// Whether the step waits for a message.
    pub fn receives(self) -> bool {
        !matches!(self, Prim::Send | Prim::CopySend)
    }
    /// Whether the step sends a message.
    pub fn sends(self) -> bool {
        matches!(
            self,
            Prim::Send
                | Prim::CopySend
                | Prim::RecvReduceSend
                | Prim::RecvReduceCopySend
                | Prim::RecvCopySend
                | Prim::Exchange
                | Prim::ExchangeFinal
        )
    }
}

/// One step of one rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The primitive.
    pub prim: Prim,
    /// Which block of the buffer it works on.
    pub block: usize,
    /// Peer it receives from, when `prim.receives()`.
    pub recv_from: usize,
    /// Peer it sends to, when `prim.sends()`.
    pub send_to: usize,
}

/// A rank's view of one collective: how the buffer splits into blocks and
/// the steps it runs over them. Computed, not stored, so walking a schedule
/// allocates nothing.
pub trait Schedule {
    /// Number of steps this rank runs.
    fn len(&self) -> usize;
    /// Whether this rank runs no step at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Step `i`, for `i < len()`.
    fn step(&self, i: usize) -> Step;
    /// Element range of block `b`.
    fn block(&self, b: usize) -> Range<usize>;
    /// Which phase step `i` belongs to (non-decreasing in `i`): the
    /// executor finishes every slice of one phase before the next (see
    /// [`Cursor`]). One phase unless a schedule re-cuts the buffer.
    fn phase(&self, _i: usize) -> usize {
        0
    }
}

/// Where an allreduce runs: ranks, ranks per host, the executor's slice
/// (elements per message) and slots (messages in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Ranks in all.
    pub size: usize,
    /// Ranks per host, consecutive ranks sharing one (0: not known).
    pub per_host: usize,
    /// Elements per message.
    pub slice: usize,
    /// Messages in flight each way.
    pub slots: usize,
}

impl Shape {
    /// Whether the hierarchical schedule applies: at least two hosts of
    /// equal size.
    pub fn hierarchical(&self) -> bool {
        self.per_host >= 1 && self.size % self.per_host == 0 && self.size / self.per_host >= 2
    }
}

/// Any of the schedules, as one type: what a collective call runs (the
/// executor is built once for it rather than once per schedule).
// The tree carries its steps inline (about 330 bytes): built once per call
// on the stack, where a Box would be an allocation per call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum AnySchedule {
    /// A ring (allreduce, reduce-scatter or allgather).
    Ring(Ring),
    /// Broadcast's chain.
    Chain(Chain),
    /// Recursive doubling.
    Doubling(RecursiveDoubling),
    /// The double binary tree.
    Tree(DoubleTree),
    /// Recursive halving-doubling.
    Halving(HalvingDoubling),
    /// Hierarchical.
    Hier(Hierarchical),
}

impl AnySchedule {
    /// A number for which schedule this is (1-6), carried in every
    /// message's header so ranks that run different ones are told.
    pub fn code(&self) -> u8 {
        match self {
            AnySchedule::Ring(_) => 1,
            AnySchedule::Chain(_) => 2,
            AnySchedule::Doubling(_) => 3,
            AnySchedule::Tree(_) => 4,
            AnySchedule::Halving(_) => 5,
            AnySchedule::Hier(_) => 6,
        }
    }

    /// The name of the schedule with [`Self::code`] `code`.
    pub fn name_of(code: u8) -> &'static str {
        match code {
            1 => "ring",
            2 => "chain",
            3 => "doubling",
            4 => "tree",
            5 => "hd",
            6 => "hier",
            _ => "none",
        }
    }

    fn get(&self) -> &dyn Schedule {
        match self {
            AnySchedule::Ring(s) => s,
            AnySchedule::Chain(s) => s,
            AnySchedule::Doubling(s) => s,
            AnySchedule::Tree(s) => s,
            AnySchedule::Halving(s) => s,
            AnySchedule::Hier(s) => s,
        }
    }
}

impl Schedule for AnySchedule {
    fn len(&self) -> usize {
        self.get().len()
    }
    fn step(&self, i: usize) -> Step {
        self.get().step(i)
    }
    fn block(&self, b: usize) -> Range<usize> {
        self.get().block(b)
    }
    fn phase(&self, i: usize) -> usize {
        self.get().phase(i)
    }
}

/// The schedule rank `rank` runs for an allreduce of `count` elements with
/// `algo` (already resolved: `Auto` means the ring; the hierarchical one
/// where `shape` does not allow it, too): what a communicator runs, and
/// what tools inspect (wire bytes, the scale model).
pub fn allreduce(algo: Algorithm, rank: usize, count: usize, shape: Shape) -> AnySchedule {
    let Shape { size, per_host, slice, slots } = shape;
    use Algorithm as A;
    match algo {
        A::Hierarchical if shape.hierarchical() => AnySchedule::Hier(Hierarchical { rank, size, count, per_host }),
        A::Auto | A::Ring | A::Hierarchical => AnySchedule::Ring(Ring { rank, size, count, kind: RingKind::Allreduce }),
        A::RecursiveDoubling => AnySchedule::Doubling(RecursiveDoubling { rank, size, count }),
        A::Tree => AnySchedule::Tree(DoubleTree::new(rank, size, count, slice, slots)),
        A::HalvingDoubling => AnySchedule::Halving(HalvingDoubling::new(rank, size, count, slice, slots)),
    }
}

/// Elements rank `rank` sends in `s`, message payloads summed per block
/// length by `bytes` (a codec's wire size of that many elements).
pub fn sent_bytes(s: &dyn Schedule, bytes: impl Fn(usize) -> usize) -> usize {
    (0..s.len()).map(|i| s.step(i)).filter(|st| st.prim.sends()).map(|st| bytes(s.block(st.block).len())).sum()
}

#[cfg(test)]
mod tests;
