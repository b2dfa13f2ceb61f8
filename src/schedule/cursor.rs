//! The order in which one rank walks its schedule's hops: the executor
//! runs it, and the scale model replays it.

use std::ops::Range;

use super::{slice_count, slice_range, Schedule, Step};

/// One hop: a slice of a step (one message, where the step sends).
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    /// Index of the step in the schedule.
    pub step_idx: usize,
    /// The step.
    pub step: Step,
    /// Which slice of the step's block.
    pub slice_idx: usize,
    /// The slice's elements.
    pub range: Range<usize>,
}

/// Walks the hops of a schedule in *rounds*: round c runs every step on
/// slices `c*per_round .. (c+1)*per_round` of that step's block.
///
/// Why rounds: walking step by step, a rank's first step (`Send`) would
/// push every slice of a block before consuming a single message. With
/// rendezvous sends (MPI's large-message protocol) and a bounded window of
/// posted receives, every rank then blocks on sends whose receives its
/// neighbour has not posted yet, because the neighbour is blocked the same
/// way: a deadlock once a block has more slices than the two windows hold.
/// Capping each step's run at `per_round = slots` slices keeps a rank's
/// lead over its successor inside the successor's receive window (NCCL's
/// chunk loop with a FIFO of NCCL_STEPS slots does the same).
pub struct Cursor {
    round: usize,
    rounds: usize,
    step: usize,
    k: usize,
    slice: usize,
    per_round: usize,
    only_recv: bool,
}

impl Cursor {
    /// Hops of `s` with slices of `slice` elements, `per_round` slices of
    /// a step per round; with `only_recv`, only the hops that receive.
    pub fn new<S: Schedule + ?Sized>(s: &S, slice: usize, per_round: usize, only_recv: bool) -> Self {
        let most = (0..s.len()).map(|i| slice_count(s.block(s.step(i).block).len(), slice)).max().unwrap_or(0);
        Cursor { round: 0, rounds: most.div_ceil(per_round), step: 0, k: 0, slice, per_round, only_recv }
    }

    /// The next hop, `None` after the last.
    #[allow(clippy::should_implement_trait)] // it borrows the schedule per call
    pub fn next<S: Schedule + ?Sized>(&mut self, s: &S) -> Option<Hop> {
        while self.round < self.rounds {
            if self.step >= s.len() {
                self.round += 1;
                self.step = 0;
                self.k = 0;
                continue;
            }
            let st = s.step(self.step);
            let block = s.block(st.block);
            let idx = self.round * self.per_round + self.k;
            if (self.only_recv && !st.prim.receives())
                || self.k >= self.per_round
                || idx >= slice_count(block.len(), self.slice)
            {
                self.step += 1;
                self.k = 0;
                continue;
            }
            self.k += 1;
            return Some(Hop {
                step_idx: self.step,
                step: st,
                slice_idx: idx,
                range: slice_range(&block, self.slice, idx),
            });
        }
        None
    }
}
