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
/// travel at once; each message between two ranks falls in one of four
/// phases (tree 0 up, tree 1 up, tree 0 down, tree 1 down) taken in that
/// order by sender and receiver alike.
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
    /// Rank `rank`'s schedule among `size` ranks for `count` elements.
    pub fn new(rank: usize, size: usize, count: usize) -> DoubleTree {
        let none = Step { prim: Prim::Recv, block: 0, recv_from: 0, send_to: 0 };
        let mut me = DoubleTree { count, steps: [none; MAX_STEPS], len: 0 };
        if size > 1 {
            let nodes = dtree(size, rank);
            for (t, down) in [(0, false), (1, false), (0, true), (1, true)] {
                tree_steps(nodes[t], t, down, &mut |st| {
                    me.steps[me.len] = st;
                    me.len += 1;
                });
            }
        }
        me
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
