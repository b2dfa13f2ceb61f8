//! The ring (bandwidth-optimal: every rank sends `2(n-1)/n` of the buffer)
//! and the chain used for broadcast.

use std::ops::Range;

use super::{block_range, Prim, Schedule, Step};

/// Which collective a ring runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// Reduce-scatter then allgather.
    Allreduce,
    /// Only the reduce-scatter half: rank `r` ends with block `r` reduced.
    ReduceScatter,
    /// Only the allgather half: rank `r` starts with block `r`.
    Allgather,
}

/// A ring over `size` ranks in rank order: rank `r` receives from `r - 1`
/// and sends to `r + 1`.
///
/// Why the blocks are what they are: at reduce-scatter step `j` rank `r`
/// sends the partial sum of block `r - 1 - j` (mod n), which by then holds
/// the contributions of ranks `r - j .. r`. After `n - 1` steps the block a
/// rank receives last is its own, `r`, with every contribution in it, so
/// the last reduce (`RecvReduceCopySend`) makes it final. The allgather then
/// passes each final block `n - 1` hops around the ring, the owner's block
/// first; rank `r` receives block `r - 1 - j` at allgather step `j`, which
/// ends at block `r + 1`. This is NCCL's `runRing` in `all_reduce.h`.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Elements in the whole buffer.
    pub count: usize,
    /// The collective.
    pub kind: RingKind,
}

impl Ring {
    fn m(&self, x: isize) -> usize {
        x.rem_euclid(self.size as isize) as usize
    }
}

impl Schedule for Ring {
    /// `n` messages each way need `n + 1` steps: the first only sends, the
    /// last only receives. Allreduce is `2n - 1` steps for `2(n - 1)` sends.
    fn len(&self) -> usize {
        let n = self.size;
        if n <= 1 {
            return 0;
        }
        match self.kind {
            RingKind::Allreduce => 2 * n - 1,
            RingKind::ReduceScatter | RingKind::Allgather => n,
        }
    }

    fn step(&self, i: usize) -> Step {
        let n = self.size;
        let r = self.rank as isize;
        let last = self.len() - 1;
        let (prim, block) = match self.kind {
            // One formula serves both halves: block r-1-i (mod n). At
            // i = n-1 that is r itself, the block this rank finalises.
            RingKind::Allreduce => {
                let prim = match i {
                    0 => Prim::Send,
                    i if i < n - 1 => Prim::RecvReduceSend,
                    i if i == n - 1 => Prim::RecvReduceCopySend,
                    i if i < last => Prim::RecvCopySend,
                    _ => Prim::Recv,
                };
                (prim, self.m(r - 1 - i as isize))
            }
            RingKind::ReduceScatter => {
                let prim = match i {
                    0 => Prim::Send,
                    i if i < last => Prim::RecvReduceSend,
                    _ => Prim::RecvReduceCopy,
                };
                (prim, self.m(r - 1 - i as isize))
            }
            // Rank r starts with block r, so allgather step j moves r-j.
            RingKind::Allgather => {
                let prim = match i {
                    0 => Prim::CopySend,
                    i if i < last => Prim::RecvCopySend,
                    _ => Prim::Recv,
                };
                (prim, self.m(r - i as isize))
            }
        };
        Step { prim, block, recv_from: self.m(r - 1), send_to: self.m(r + 1) }
    }

    fn block(&self, b: usize) -> Range<usize> {
        block_range(self.count, self.size, b)
    }
}

/// A pipelined chain from `root` through `root+1, root+2, ...`: broadcast.
/// One block (the whole buffer); the pipelining comes from slicing it.
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Elements in the buffer.
    pub count: usize,
    /// The rank whose data everyone ends with.
    pub root: usize,
}

impl Schedule for Chain {
    fn len(&self) -> usize {
        usize::from(self.size > 1)
    }
    fn step(&self, _i: usize) -> Step {
        let n = self.size;
        let pos = (self.rank + n - self.root) % n;
        let prim = if pos == 0 {
            Prim::CopySend
        } else if pos + 1 < n {
            Prim::RecvCopySend
        } else {
            Prim::Recv
        };
        Step { prim, block: 0, recv_from: (self.rank + n - 1) % n, send_to: (self.rank + 1) % n }
    }
    fn block(&self, _b: usize) -> Range<usize> {
        0..self.count
    }
}
