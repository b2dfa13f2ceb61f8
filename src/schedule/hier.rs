//! Hierarchical allreduce: the slow links between hosts carry the fewest
//! bytes. Ranks are grouped by host (consecutive ranks, `per_host` each).

use std::ops::Range;

use super::{block_range, Prim, Ring, RingKind, Schedule, Step};

/// Hierarchical allreduce over `size` ranks, `per_host` per host, in three
/// phases, each a ring:
///
/// 0. inside each host, a reduce-scatter: local rank `i` ends holding the
///    host's partial sum of block `i` (of `per_host` blocks), kept in the
///    buffer (`RecvReduce` as the last step, not finalised yet);
/// 1. across hosts, the ranks with local index `i` allreduce block `i`
///    with a ring of their own (its own `hosts` sub-blocks), which
///    finalises it: each host's link carries `2(H-1)/H` of the buffer
///    once, however many ranks the host has;
/// 2. inside each host, an allgather of the final blocks.
///
/// Block ids: `0..per_host` are the host-level blocks, `per_host + j` the
/// `j`-th sub-block of this rank's block in phase 1. Only phase 1's ring
/// computes final values and the allgather re-encodes a decoded value
/// (exact for element-wise wire formats), so every rank ends with the
/// same bits.
#[derive(Clone, Copy, Debug)]
pub struct Hierarchical {
    /// This rank.
    pub rank: usize,
    /// Number of ranks (a multiple of `per_host`).
    pub size: usize,
    /// Elements in the buffer.
    pub count: usize,
    /// Ranks per host.
    pub per_host: usize,
}

impl Hierarchical {
    fn hosts(&self) -> usize {
        self.size / self.per_host
    }
    fn local(&self) -> usize {
        self.rank % self.per_host
    }
    fn host(&self) -> usize {
        self.rank / self.per_host
    }
    /// The intra-host rings (phases 0 and 2), in local ranks.
    fn intra(&self, kind: RingKind) -> Ring {
        Ring { rank: self.local(), size: self.per_host, count: self.count, kind }
    }
    /// The inter-host ring of phase 1, in host numbers, over this rank's block.
    fn inter(&self) -> Ring {
        let mine = block_range(self.count, self.per_host, self.local());
        Ring { rank: self.host(), size: self.hosts(), count: mine.len(), kind: RingKind::Allreduce }
    }
    /// Steps in each phase.
    fn lens(&self) -> [usize; 3] {
        [self.intra(RingKind::ReduceScatter).len(), self.inter().len(), self.intra(RingKind::Allgather).len()]
    }
}

impl Schedule for Hierarchical {
    fn len(&self) -> usize {
        self.lens().iter().sum()
    }

    fn step(&self, i: usize) -> Step {
        let [a, b, _] = self.lens();
        let base = self.host() * self.per_host;
        let local = |mut st: Step| {
            (st.recv_from, st.send_to) = (base + st.recv_from, base + st.send_to);
            st
        };
        if i < a {
            let mut st = local(self.intra(RingKind::ReduceScatter).step(i));
            if st.prim == Prim::RecvReduceCopy {
                // The host's partial is not final: phase 1 finalises it.
                st.prim = Prim::RecvReduce;
            }
            st
        } else if i < a + b {
            let mut st = self.inter().step(i - a);
            let li = self.local();
            (st.recv_from, st.send_to) = (st.recv_from * self.per_host + li, st.send_to * self.per_host + li);
            st.block += self.per_host;
            st
        } else {
            local(self.intra(RingKind::Allgather).step(i - a - b))
        }
    }

    fn block(&self, b: usize) -> Range<usize> {
        if b < self.per_host {
            return block_range(self.count, self.per_host, b);
        }
        let mine = block_range(self.count, self.per_host, self.local());
        let sub = block_range(mine.len(), self.hosts(), b - self.per_host);
        mine.start + sub.start..mine.start + sub.end
    }

    fn phase(&self, i: usize) -> usize {
        let [a, b, _] = self.lens();
        usize::from(i >= a) + usize::from(i >= a + b)
    }
}
