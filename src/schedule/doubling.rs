//! Recursive doubling: latency-optimal allreduce for small buffers.
//! `ceil(log2 n)` exchanges of the whole buffer (plus two for the fold when
//! `n` is not a power of two), against the ring's `2(n - 1)` dependent hops.

use std::ops::Range;

use super::{Prim, Schedule, Step};

/// Recursive-doubling allreduce over `size` ranks.
///
/// With `p` the largest power of two `<= size`, ranks `p..size` first fold
/// their data into rank `r - p` (`Send` / `RecvReduce`), the `p` ranks then
/// exchange with partner `r ^ 2^k` for `k = 0..log2 p` (the last exchange
/// final), and the folded ranks receive the result back (`CopySend` /
/// `Recv`). After exchange `k` every group of `2^(k+1)` ranks holds the
/// same bits, because both partners combine the same two wire values in
/// the same order.
#[derive(Clone, Copy, Debug)]
pub struct RecursiveDoubling {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Elements in the buffer.
    pub count: usize,
}

impl RecursiveDoubling {
    fn pow2(&self) -> usize {
        1 << (usize::BITS - 1 - self.size.leading_zeros())
    }
    fn rounds(&self) -> usize {
        self.pow2().trailing_zeros() as usize
    }
}

impl Schedule for RecursiveDoubling {
    fn len(&self) -> usize {
        let (n, p, r) = (self.size, self.pow2(), self.rank);
        if n <= 1 {
            0
        } else if r >= p {
            2 // send in, receive result
        } else if r + p < n {
            self.rounds() + 2 // receive fold, exchanges, send result back
        } else {
            self.rounds()
        }
    }

    fn step(&self, i: usize) -> Step {
        let (n, p, r) = (self.size, self.pow2(), self.rank);
        let whole = |prim, peer| Step { prim, block: 0, recv_from: peer, send_to: peer };
        if r >= p {
            return whole(if i == 0 { Prim::Send } else { Prim::Recv }, r - p);
        }
        let folds = r + p < n;
        let k = if folds { i.checked_sub(1) } else { Some(i) };
        match k {
            None => whole(Prim::RecvReduce, r + p),
            Some(k) if k < self.rounds() => {
                let prim = if k + 1 == self.rounds() { Prim::ExchangeFinal } else { Prim::Exchange };
                whole(prim, r ^ (1 << k))
            }
            Some(_) => whole(Prim::CopySend, r + p),
        }
    }

    fn block(&self, _b: usize) -> Range<usize> {
        0..self.count
    }
}
