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
///
/// Rounds run within a [phase](Schedule::phase): every hop of one phase
/// comes before any of the next, because a later phase may cut the buffer
/// into other blocks, whose slices round `c` of the earlier phase has not
/// all finished.
pub struct Cursor {
    round: usize,
    rounds: usize,
    step: usize,
    k: usize,
    slice: usize,
    per_round: usize,
    only_recv: bool,
    /// Steps of the current phase.
    phase: Range<usize>,
}

impl Cursor {
    /// Hops of `s` with slices of `slice` elements, `per_round` slices of
    /// a step per round; with `only_recv`, only the hops that receive.
    pub fn new<S: Schedule + ?Sized>(s: &S, slice: usize, per_round: usize, only_recv: bool) -> Self {
        let mut c = Cursor { round: 0, rounds: 0, step: 0, k: 0, slice, per_round, only_recv, phase: 0..0 };
        c.enter(s, 0);
        c
    }

    /// Starts the phase whose first step is `start`.
    fn enter<S: Schedule + ?Sized>(&mut self, s: &S, start: usize) {
        let n = s.len();
        let p = if start < n { s.phase(start) } else { 0 };
        let end = (start..n).find(|&i| s.phase(i) != p).unwrap_or(n);
        let most = (start..end).map(|i| slice_count(s.block(s.step(i).block).len(), self.slice)).max().unwrap_or(0);
        (self.phase, self.rounds, self.round, self.step, self.k) =
            (start..end, most.div_ceil(self.per_round), 0, start, 0);
    }

    /// The next hop, `None` after the last.
    #[allow(clippy::should_implement_trait)] // it borrows the schedule per call
    pub fn next<S: Schedule + ?Sized>(&mut self, s: &S) -> Option<Hop> {
        loop {
            if self.round >= self.rounds {
                if self.phase.end >= s.len() {
                    return None;
                }
                self.enter(s, self.phase.end);
                continue;
            }
            if self.step >= self.phase.end {
                self.round += 1;
                self.step = self.phase.start;
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
    }
}
