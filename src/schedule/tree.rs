//! NCCL's double binary tree: latency `O(log n)` hops like recursive
//! doubling, but every rank sends and receives about one buffer's worth,
//! because each of two trees carries half of the buffer and a rank is an
//! interior node in at most one of them.

use std::ops::Range;

use super::{block_range, Prim, Schedule, Step};

/// One rank's place in one binary tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// Parent, `None` at the root.
    pub parent: Option<usize>,
    /// Children, 0 to 2 of them (first, then second).
    pub children: [Option<usize>; 2],
}

/// NCCL's binary tree (`ncclGetBtree` in `src/graph/trees.cc`): rank 0 is
/// the root with one child; a rank's parent clears its lowest set bit and
/// sets the next one up (or just clears it where that would leave the
/// ranks); its children are `rank -+ lowbit/2`, the second halved until it
/// exists. Even ranks are leaves.
pub fn btree(n: usize, rank: usize) -> TreeNode {
    let mut bit = 1;
    while bit < n && bit & rank == 0 {
        bit <<= 1;
    }
    if rank == 0 {
        let child = (n > 1).then_some(bit >> 1);
        return TreeNode { parent: None, children: [child, None] };
    }
    let mut up = (rank ^ bit) | (bit << 1);
    if up >= n {
        up = rank ^ bit;
    }
    let mut low = bit >> 1;
    let first = (low > 0).then(|| rank - low);
    let mut second = None;
    while low > 0 {
        if rank + low < n {
            second = Some(rank + low);
            break;
        }
        low >>= 1;
    }
    TreeNode { parent: Some(up), children: [first, second] }
}

/// The two trees of NCCL's double binary tree (`ncclGetDtree`): the
/// second is the first mirrored (`n - 1 - r`) when `n` is even and shifted
/// by one when it is odd, so that each rank is a leaf in at least one
/// (but for odd `n` the first tree's root, which has one child there).
pub fn dtree(n: usize, rank: usize) -> [TreeNode; 2] {
    let first = btree(n, rank);
    // `to` maps a rank into the first tree's numbering, `from` back.
    let to = |r: usize| if n % 2 == 0 { n - 1 - r } else { (r + n - 1) % n };
    let from = |r: usize| if n % 2 == 0 { n - 1 - r } else { (r + 1) % n };
    let t = btree(n, to(rank));
    let second = TreeNode { parent: t.parent.map(from), children: t.children.map(|c| c.map(from)) };
    [first, second]
}

/// Double-binary-tree allreduce over `size` ranks: tree `t` reduces block
/// `t` (half the buffer) to its root, which finalises it and sends it back
/// down. Both trees climb before either descends, so the two halves
/// travel at once.
///
/// When each half fits one slice (and there are at least 2 slots), a rank
/// takes its steps in the order that keeps the two trees apart, as NCCL's
/// separate channels do: climbing, first the tree it is a leaf in
/// (one send that waits for nothing), then the tree it is inner in;
/// descending, first the tree it is inner in (its subtree waits for the
/// forward), then its leaf's receive. Taking tree 0 then tree 1 instead
/// made a leaf's send in one tree wait for its whole subtree in the
/// other: on 8 netsim hosts the tree took 0.78x the ring's time at 4 KiB
/// for its 6 hops against the ring's 14. Messages from one rank to another
/// still come in the same order on both sides (the receiver of two
/// messages from one sender in one phase is inner in both trees, which
/// only the odd-`n` light root is, and it takes the order of the child it
/// has in both);
/// `schedule::tests` checks that for every pair up to 1024 ranks.
///
/// Pipelined (more than one slice per half), every rank keeps tree 0 then
/// tree 1, up then down: the sends then outnumber the slots, so a rank
/// waits for a send to be taken before it goes on, and with each rank in
/// its own order two ranks can each wait for the other to take its send
/// (4 ranks, 2 MiB, over shared memory did). In one order for all, the
/// ranks never wait in a circle.
///
/// Per tree, a node with children receives from the first (`RecvReduce`
/// into its partial), then from the second reduces and sends up
/// (`RecvReduceSend`), or, at the root, finalises (`RecvReduceCopy`).
/// Down, the root sends the final value (`CopySend`) to each child; an
/// inner node receives and forwards the very bytes to its first child
/// (`RecvCopySend`) and re-encodes the stored value for its second
/// (`CopySend`), which for element-wise wire formats gives back the same
/// bytes. Only the root computes a final value, so every rank ends with
/// the same bits.
#[derive(Clone, Copy, Debug)]
pub struct DoubleTree {
    /// Elements in the buffer.
    pub count: usize,
    /// This rank's steps, worked out once: the executor asks for them hop
    /// by hop. At most 3 up and 2 down per tree.
    steps: [Step; MAX_STEPS],
    len: usize,
}

const MAX_STEPS: usize = 10;

impl DoubleTree {
    /// Rank `rank`'s schedule among `size` ranks for `count` elements, cut
    /// into slices of `slice` elements with `slots` in flight each way.
    pub fn new(rank: usize, size: usize, count: usize, slice: usize, slots: usize) -> DoubleTree {
        let none = Step { prim: Prim::Recv, block: 0, recv_from: 0, send_to: 0 };
        let mut me = DoubleTree { count, steps: [none; MAX_STEPS], len: 0 };
        if size > 1 {
            let nodes = dtree(size, rank);
            // At most 4 sends, none awaited before the end while
            // 2 * slots + 2 slots hold them and `slots` receives.
            let apart = count.div_ceil(2) <= slice && slots >= 2;
            let (up, down) = if apart { tree_order(size, &nodes) } else { (0, 0) };
            for (t, down) in [(up, false), (1 - up, false), (down, true), (1 - down, true)] {
                tree_steps(nodes[t], t, down, &mut |st| {
                    me.steps[me.len] = st;
                    me.len += 1;
                });
            }
        }
        me
    }
}

/// Which tree `rank` climbs first and which it descends first.
fn tree_order(n: usize, nodes: &[TreeNode; 2]) -> (usize, usize) {
    let kids = |t: usize| nodes[t].children.iter().flatten().copied();
    let (inner0, inner1) = (kids(0).next().is_some(), kids(1).next().is_some());
    match (inner0, inner1) {
        (true, false) => (1, 0),
        (false, true) => (0, 1),
        // Inner in both (the odd-`n` light root): a child it has in both
        // trees sends in its own order, so take that child's.
        (true, true) => match kids(0).find(|c| kids(1).any(|d| d == *c)) {
            Some(c) => tree_order(n, &dtree(n, c)),
            None => (0, 0),
        },
        (false, false) => (0, 0),
    }
}

/// The steps of tree `t` at `node`, up (`down == false`) or down, into `out`.
fn tree_steps(node: TreeNode, t: usize, down: bool, out: &mut impl FnMut(Step)) {
    let step = |prim, from: usize, to: usize| Step { prim, block: t, recv_from: from, send_to: to };
    let kids = node.children.iter().flatten().copied();
    let (n_kids, last) = (kids.clone().count(), kids.clone().last());
    match (down, node.parent, last) {
        (false, None, None) => {}
        (false, Some(p), None) => out(step(Prim::Send, p, p)),
        (false, parent, Some(last)) => {
            kids.take(n_kids - 1).for_each(|k| out(step(Prim::RecvReduce, k, k)));
            match parent {
                Some(p) => out(step(Prim::RecvReduceSend, last, p)),
                None => out(step(Prim::RecvReduceCopy, last, last)),
            }
        }
        (true, None, _) => kids.for_each(|k| out(step(Prim::CopySend, k, k))),
        (true, Some(p), None) => out(step(Prim::Recv, p, p)),
        (true, Some(p), Some(_)) => {
            let mut kids = kids;
            let first = kids.next().expect("has a child");
            out(step(Prim::RecvCopySend, p, first));
            kids.for_each(|k| out(step(Prim::CopySend, k, k)));
        }
    }
}

impl Schedule for DoubleTree {
    fn len(&self) -> usize {
        self.len
    }

    fn step(&self, i: usize) -> Step {
        self.steps[..self.len][i]
    }

    fn block(&self, b: usize) -> Range<usize> {
        block_range(self.count, 2, b)
    }
}
