//! Recursive halving-doubling (Rabenseifner's allreduce): a reduce-scatter
//! by recursive halving, then an allgather by recursive doubling. Each
//! rank sends `2(p-1)/p` of the buffer, like the ring, in `2 log2 p`
//! rounds instead of `2(p-1)` dependent hops.

use std::ops::Range;

use super::{block_range, Prim, Schedule, Step};

/// Halving-doubling allreduce over `size` ranks, with `p` the largest
/// power of two `<= size`.
///
/// The buffer is cut into `p` *leaves*; every step moves one leaf, so
/// every step on a leaf slices it the same way and the executor's rounds
/// (slice `c` of every step before slice `c + 1` of any) never read a
/// slice before it is reduced. Halving round `k` pairs rank `r` with
/// `r ^ (p >> (k+1))`: of the leaves both are still responsible for, each
/// sends the ones the other keeps (`Send`) and reduces the ones it keeps
/// (`RecvReduce`; the last round `RecvReduceCopy`, which finalises leaf
/// `r`). Doubling round `k` pairs `r` with `r ^ (1 << k)`: each sends the
/// `2^k` final leaves it holds (`CopySend`) and stores the partner's
/// (`Recv`). Within a round, up to [`HalvingDoubling::window`] sends run
/// ahead of the receives. Ranks `p..size` first hand their whole buffer, leaf by leaf,
/// to rank `r - p` and get the result back at the end (the usual fold).
/// Only leaf `r`'s owner computes its final value, and re-encoding a
/// decoded value is exact for element-wise wire formats, so every rank
/// ends with the same bits.
#[derive(Clone, Copy, Debug)]
pub struct HalvingDoubling {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Elements in the buffer.
    pub count: usize,
    /// Leaves a round may send before it receives its first (at least 1).
    /// Sending one leaf and then waiting for the partner's costs a round
    /// trip per leaf, which on many ranks (many small leaves) is most of
    /// the time; more than the executor's receive window would deadlock
    /// under rendezvous sends. [`HalvingDoubling::new`] picks it.
    pub window: usize,
}

impl HalvingDoubling {
    /// The schedule for slices of `slice` elements and `slots` messages in
    /// flight (the executor's settings): the widest window whose first
    /// leaves' slices the partner's posted receives can all take.
    pub fn new(rank: usize, size: usize, count: usize, slice: usize, slots: usize) -> HalvingDoubling {
        let me = HalvingDoubling { rank, size, count, window: 1 };
        let slices = super::slice_count(me.block(0).len(), slice).clamp(1, slots.max(1));
        HalvingDoubling { window: (slots / slices).max(1), ..me }
    }

    /// The number of leaves: the largest power of two `<= size`.
    pub fn leaves(&self) -> usize {
        1 << (usize::BITS - 1 - self.size.max(1).leading_zeros())
    }

    fn levels(&self) -> usize {
        self.leaves().trailing_zeros() as usize
    }

    /// Whether this rank folds a rank `>= p` into itself, and which.
    fn extra(&self) -> Option<usize> {
        let e = self.rank + self.leaves();
        (self.rank < self.leaves() && e < self.size).then_some(e)
    }
}

/// Step `t` of a round that sends `m` leaves and receives `m`, with the
/// first `w` sends ahead: `(sends, which)`. The order is
/// `send 0..w`, then `recv i, send i + w` for each `i`, then the last
/// `w` receives; the partner's receives follow its sends the same way.
fn windowed(t: usize, m: usize, w: usize) -> (bool, usize) {
    let w = w.clamp(1, m);
    if t < w {
        return (true, t);
    }
    let u = t - w;
    if u < 2 * (m - w) {
        (u % 2 == 1, if u % 2 == 1 { u / 2 + w } else { u / 2 })
    } else {
        (false, m - w + (u - 2 * (m - w)))
    }
}

/// The `i`-th of the values in `base..base + span` whose bit `mask` is
/// `bit`, in increasing order.
fn nth_with_bit(base: usize, mask: usize, bit: usize, i: usize) -> usize {
    base + (((i & !(mask - 1)) << 1) | bit | (i & (mask - 1)))
}

impl Schedule for HalvingDoubling {
    fn len(&self) -> usize {
        let p = self.leaves();
        if self.size <= 1 {
            0
        } else if self.rank >= p {
            2 * p
        } else {
            // 2(p-1) halving steps, 2(p-1) doubling steps, the fold.
            4 * (p - 1) + if self.extra().is_some() { 2 * p } else { 0 }
        }
    }

    /// Computed in `O(log p)` from `i` (the executor asks hop by hop).
    fn step(&self, i: usize) -> Step {
        let (p, r) = (self.leaves(), self.rank);
        let step = |prim, block, peer| Step { prim, block, recv_from: peer, send_to: peer };
        if r >= p {
            let prim = if i < p { Prim::Send } else { Prim::Recv };
            return step(prim, i % p, r - p);
        }
        let fold = if self.extra().is_some() { p } else { 0 };
        if i < fold {
            return step(Prim::RecvReduce, i, r + p);
        }
        let mut i = i - fold;
        let levels = self.levels();
        if i < 2 * (p - 1) {
            // Halving round k has p >> k steps and starts at 2p - (2p >> k).
            let k = (0..levels).find(|&k| i < 2 * p - (p >> k)).expect("a halving round");
            let t = i - (2 * p - ((2 * p) >> k));
            let (mask, span) = (p >> (k + 1), p >> k);
            let q = r ^ mask;
            let base = r & !(span - 1);
            return match windowed(t, span / 2, self.window) {
                (true, j) => step(Prim::Send, nth_with_bit(base, mask, q & mask, j), q),
                (false, j) => {
                    let prim = if k + 1 == levels { Prim::RecvReduceCopy } else { Prim::RecvReduce };
                    step(prim, nth_with_bit(base, mask, r & mask, j), q)
                }
            };
        }
        i -= 2 * (p - 1);
        if i < 2 * (p - 1) {
            // Doubling round k has 2 << k steps and starts at 2(2^k - 1).
            let k = (0..levels).find(|&k| i < 2 * ((2 << k) - 1)).expect("a doubling round");
            let t = i - 2 * ((1 << k) - 1);
            let span = 1 << k;
            let q = r ^ span;
            return match windowed(t, span, self.window) {
                (true, j) => step(Prim::CopySend, (r & !(span - 1)) + j, q),
                (false, j) => step(Prim::Recv, (q & !(span - 1)) + j, q),
            };
        }
        i -= 2 * (p - 1);
        step(Prim::CopySend, i, r + p)
    }

    fn block(&self, b: usize) -> Range<usize> {
        block_range(self.count, self.leaves(), b)
    }
}
