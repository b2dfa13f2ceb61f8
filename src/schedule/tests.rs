//! Schedules checked alone: every rank's steps are run symbolically, with
//! a signature per block standing for "which ranks' contributions are in
//! it" (how many, and the wrapping sum of a 64-bit hash of each rank:
//! a contribution reduced twice or never shows in one or the other).

use std::collections::{HashMap, VecDeque};

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ring(RingKind),
    Chain(usize),
    Doubling,
    /// The double tree with this slice (of 1000 elements): 500 or more
    /// keeps the trees apart, less pipelines them in one order.
    Tree(usize),
    Halving(usize),
}

fn schedule(kind: Kind, rank: usize, size: usize) -> Box<dyn Schedule> {
    match kind {
        Kind::Ring(k) => Box::new(Ring { rank, size, count: 1000, kind: k }),
        Kind::Chain(root) => Box::new(Chain { rank, size, count: 1000, root }),
        Kind::Doubling => Box::new(RecursiveDoubling { rank, size, count: 1000 }),
        Kind::Tree(slice) => Box::new(DoubleTree::new(rank, size, 1000, slice, 4)),
        Kind::Halving(window) => Box::new(HalvingDoubling { rank, size, count: 1000, window }),
    }
}

/// Contributions in a block: how many, and the sum of their hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Sig {
    count: usize,
    hash: u64,
}

impl Sig {
    fn of(rank: usize) -> Sig {
        // splitmix64: distinct ranks, unrelated hashes.
        let mut z = (rank as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Sig { count: 1, hash: z ^ (z >> 31) }
    }
    fn all(n: usize) -> Sig {
        (0..n).map(Sig::of).fold(Sig::default(), |a, b| a.plus(b))
    }
    fn plus(self, o: Sig) -> Sig {
        Sig { count: self.count + o.count, hash: self.hash.wrapping_add(o.hash) }
    }
}

/// Runs all ranks until none can move. Panics on any broken invariant
/// (a message for the wrong block, a rank stuck, a message never
/// received, more contributions in a block than ranks); returns each
/// rank's final signatures.
fn simulate(kind: Kind, n: usize) -> Vec<Vec<Sig>> {
    let scheds: Vec<_> = (0..n).map(|r| schedule(kind, r, n)).collect();
    let blocks = match kind {
        Kind::Chain(_) | Kind::Doubling => 1,
        Kind::Tree(_) => 2,
        Kind::Halving(_) => HalvingDoubling { rank: 0, size: n, count: 0, window: 1 }.leaves(),
        Kind::Ring(_) => n,
    };
    let mut have: Vec<Vec<Sig>> = (0..n)
        .map(|r| {
            (0..blocks)
                .map(|b| match kind {
                    Kind::Ring(RingKind::Allgather) if b != r => Sig::default(),
                    Kind::Chain(root) if r != root => Sig::default(),
                    _ => Sig::of(r),
                })
                .collect()
        })
        .collect();
    let mut queues: HashMap<(usize, usize), VecDeque<(usize, Sig)>> = HashMap::new();
    let mut pc = vec![0usize; n];
    // Exchanges send before they receive; remember which already sent.
    let mut sent_early = vec![false; n];
    let reduce = |got: Sig, local: Sig, r: usize, step: usize| {
        let sum = got.plus(local);
        assert!(sum.count <= n, "{kind:?} n={n}: rank {r} step {step}: a contribution reduced twice");
        sum
    };
    loop {
        let mut moved = false;
        for r in 0..n {
            if pc[r] == scheds[r].len() {
                continue;
            }
            let st = scheds[r].step(pc[r]);
            let exchange = matches!(st.prim, Prim::Exchange | Prim::ExchangeFinal);
            if exchange && !sent_early[r] {
                queues.entry((r, st.send_to)).or_default().push_back((st.block, have[r][st.block]));
                sent_early[r] = true;
                moved = true;
            }
            let got = if st.prim.receives() {
                match queues.get_mut(&(st.recv_from, r)).and_then(|q| q.pop_front()) {
                    None => continue,
                    Some((b, m)) => {
                        assert_eq!(b, st.block, "{kind:?} n={n}: rank {r} step {} got block {b}", pc[r]);
                        m
                    }
                }
            } else {
                Sig::default()
            };
            let local = have[r][st.block];
            let out = match st.prim {
                Prim::Send | Prim::CopySend => local,
                Prim::RecvReduceSend => reduce(got, local, r, pc[r]),
                Prim::RecvReduceCopySend
                | Prim::RecvReduceCopy
                | Prim::RecvReduce
                | Prim::Exchange
                | Prim::ExchangeFinal => {
                    have[r][st.block] = reduce(got, local, r, pc[r]);
                    have[r][st.block]
                }
                Prim::RecvCopySend | Prim::Recv => {
                    have[r][st.block] = got;
                    got
                }
            };
            sent_early[r] = false;
            if st.prim.sends() && !exchange {
                queues.entry((r, st.send_to)).or_default().push_back((st.block, out));
            }
            pc[r] += 1;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    for r in 0..n {
        assert_eq!(pc[r], scheds[r].len(), "{kind:?} n={n}: rank {r} is stuck at step {} (deadlock)", pc[r]);
    }
    for ((from, to), q) in &queues {
        assert!(q.is_empty(), "{kind:?} n={n}: rank {from} sent rank {to} a message nobody received");
    }
    have
}

const SIZES: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33, 64];

#[test]
fn ring_allreduce_gives_every_rank_every_contribution_once() {
    for n in SIZES {
        let have = simulate(Kind::Ring(RingKind::Allreduce), n);
        assert!(have.iter().all(|h| h.iter().all(|&m| m == Sig::all(n))), "n={n}");
        if n > 1 {
            assert_eq!(Ring { rank: 0, size: n, count: 1, kind: RingKind::Allreduce }.len(), 2 * n - 1);
        }
    }
}

#[test]
fn recursive_doubling_gives_every_rank_every_contribution_once() {
    for n in SIZES {
        let have = simulate(Kind::Doubling, n);
        assert!(have.iter().all(|h| h[0] == Sig::all(n)), "n={n}");
    }
    // log2 steps, against the ring's 2n - 1.
    assert_eq!(RecursiveDoubling { rank: 0, size: 8, count: 1 }.len(), 3);
    assert_eq!(RecursiveDoubling { rank: 5, size: 6, count: 1 }.len(), 2);
    assert_eq!(RecursiveDoubling { rank: 1, size: 6, count: 1 }.len(), 4);
}

#[test]
fn double_tree_and_halving_doubling_give_every_rank_every_contribution_once() {
    for kind in
        [Kind::Tree(1000), Kind::Tree(100), Kind::Halving(1), Kind::Halving(2), Kind::Halving(4), Kind::Halving(64)]
    {
        for n in SIZES.into_iter().chain([10, 11, 12, 13, 15, 17, 31, 100]) {
            let have = simulate(kind, n);
            assert!(have.iter().all(|h| h.iter().all(|&m| m == Sig::all(n))), "{kind:?} n={n}");
        }
    }
}

/// The large rank counts a cluster has, checked from the schedules alone:
/// every send has its receive, nothing deadlocks, every block ends with
/// every contribution exactly once.
#[test]
fn every_allreduce_schedule_holds_from_64_to_1024_ranks() {
    for n in [64, 100, 128, 255, 256, 513, 1024] {
        for kind in [
            Kind::Tree(1000),
            Kind::Tree(100),
            Kind::Halving(1),
            Kind::Halving(4),
            Kind::Doubling,
            Kind::Ring(RingKind::Allreduce),
        ] {
            if matches!(kind, Kind::Ring(_)) && n > 256 {
                continue; // n blocks x n ranks x 2n steps: minutes, and the proptest covers the ring
            }
            let have = simulate(kind, n);
            assert!(have.iter().all(|h| h.iter().all(|&m| m == Sig::all(n))), "{kind:?} n={n}");
        }
    }
}

/// NCCL's double binary tree: each tree spans every rank once, parents
/// and children agree, and no rank is an inner node of both trees except
/// the first tree's root, which has a single child there (odd `n`).
#[test]
#[allow(clippy::needless_range_loop)] // ranks index several tables at once
fn double_tree_is_two_spanning_trees_sharing_no_inner_node() {
    for n in 1..=200 {
        let nodes: Vec<[TreeNode; 2]> = (0..n).map(|r| dtree(n, r)).collect();
        for t in 0..2 {
            let roots: Vec<usize> = (0..n).filter(|&r| nodes[r][t].parent.is_none()).collect();
            assert_eq!(roots.len(), 1, "n={n} tree {t}: roots {roots:?}");
            for r in 0..n {
                for c in nodes[r][t].children.iter().flatten() {
                    assert!(*c < n && nodes[*c][t].parent == Some(r), "n={n} tree {t}: {r} -> {c}");
                }
                if let Some(p) = nodes[r][t].parent {
                    assert!(nodes[p][t].children.contains(&Some(r)), "n={n} tree {t}: parent of {r}");
                }
                // Reaches the root: no cycles.
                let (mut x, mut hops) = (r, 0);
                while let Some(p) = nodes[x][t].parent {
                    x = p;
                    hops += 1;
                    assert!(hops <= n, "n={n} tree {t}: cycle from {r}");
                }
                // Depth is logarithmic.
                assert!(hops <= 2 * (usize::BITS - n.leading_zeros()) as usize, "n={n}: depth {hops}");
            }
        }
        if n > 2 {
            for r in 0..n {
                let inner = |t: usize| nodes[r][t].children.iter().any(Option::is_some);
                let light_root = nodes[r][0].parent.is_none() && nodes[r][0].children[1].is_none();
                assert!(!(inner(0) && inner(1)) || light_root, "n={n}: rank {r} is inner in both trees");
            }
        }
    }
}

/// Halving-doubling sends `2(p-1)/p` of the buffer per rank, like the
/// ring, in `2 log2 p` rounds.
#[test]
fn halving_doubling_sends_what_the_ring_sends() {
    for n in [2usize, 4, 8, 16, 64] {
        for r in 0..n {
            let s = HalvingDoubling { rank: r, size: n, count: 1 << 20, window: 2 };
            let sent: usize =
                (0..s.len()).map(|i| s.step(i)).filter(|st| st.prim.sends()).map(|st| s.block(st.block).len()).sum();
            assert_eq!(sent, 2 * (n - 1) * (1 << 20) / n, "n={n} rank {r}");
        }
    }
}

#[test]
fn ring_reduce_scatter_finishes_own_block() {
    for n in SIZES {
        let have = simulate(Kind::Ring(RingKind::ReduceScatter), n);
        for (r, h) in have.iter().enumerate() {
            assert_eq!(h[r], Sig::all(n), "n={n} rank {r}");
        }
    }
}

#[test]
fn ring_allgather_delivers_each_block_from_its_owner() {
    for n in SIZES {
        let have = simulate(Kind::Ring(RingKind::Allgather), n);
        for h in &have {
            for (b, &m) in h.iter().enumerate() {
                assert_eq!(m, Sig::of(b), "n={n} block {b}");
            }
        }
    }
}

#[test]
fn chain_broadcast_reaches_every_rank_from_any_root() {
    for n in SIZES {
        for root in [0, n / 2, n - 1] {
            let have = simulate(Kind::Chain(root), n);
            assert!(have.iter().all(|h| h[0] == Sig::of(root)), "n={n} root={root}");
        }
    }
}

#[test]
fn ring_follows_nccl_primitive_sequence() {
    let n = 5;
    let prims: Vec<Prim> =
        (0..9).map(|i| Ring { rank: 2, size: n, count: 10, kind: RingKind::Allreduce }.step(i).prim).collect();
    use Prim::*;
    assert_eq!(
        prims,
        [
            Send,
            RecvReduceSend,
            RecvReduceSend,
            RecvReduceSend,
            RecvReduceCopySend,
            RecvCopySend,
            RecvCopySend,
            RecvCopySend,
            Recv
        ]
    );
}

#[test]
fn blocks_tile_the_buffer_evenly() {
    for count in [0usize, 1, 3, 4, 5, 100, 1001, 10007] {
        for n in [1usize, 2, 3, 4, 5, 8, 13] {
            let mut next = 0;
            for b in 0..n {
                let r = block_range(count, n, b);
                assert_eq!(r.start, next);
                assert!(r.len() == count / n || r.len() == count / n + 1);
                next = r.end;
            }
            assert_eq!(next, count);
        }
    }
}

#[test]
fn slices_tile_a_block() {
    for (len, slice) in [(0usize, 4usize), (1, 4), (4, 4), (5, 4), (1000, 7), (10007, 1024)] {
        let block = 10..10 + len;
        let k = slice_count(len, slice);
        let mut next = block.start;
        for i in 0..k {
            let s = slice_range(&block, slice, i);
            assert_eq!(s.start, next);
            assert!(!s.is_empty() && s.len() <= slice);
            next = s.end;
        }
        assert_eq!(next, block.end);
    }
}

/// The same invariants for any rank count the masks can hold, any root,
/// and any count, block count and slice size for the chunk math.
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = (Kind, usize)> {
        (1usize..=64).prop_flat_map(|n| {
            prop_oneof![
                Just(Kind::Ring(RingKind::Allreduce)),
                Just(Kind::Ring(RingKind::ReduceScatter)),
                Just(Kind::Ring(RingKind::Allgather)),
                Just(Kind::Doubling),
                Just(Kind::Tree(1000)),
                Just(Kind::Tree(100)),
                (1usize..8).prop_map(Kind::Halving),
                (0..n).prop_map(Kind::Chain),
            ]
            .prop_map(move |k| (k, n))
        })
    }

    proptest! {
        #[test]
        fn every_schedule_completes_and_delivers_exactly_once((kind, n) in kind()) {
            // simulate() itself fails on deadlock, stray messages and any
            // contribution reduced twice.
            let have = simulate(kind, n);
            for (r, h) in have.iter().enumerate() {
                match kind {
                    Kind::Ring(RingKind::Allreduce) | Kind::Doubling | Kind::Tree(_) | Kind::Halving(_) => {
                        prop_assert!(h.iter().all(|&m| m == Sig::all(n)))
                    }
                    Kind::Ring(RingKind::ReduceScatter) => prop_assert_eq!(h[r], Sig::all(n)),
                    Kind::Ring(RingKind::Allgather) => {
                        prop_assert!(h.iter().enumerate().all(|(b, &m)| m == Sig::of(b)))
                    }
                    Kind::Chain(root) => prop_assert_eq!(h[0], Sig::of(root)),
                }
            }
        }

        #[test]
        fn blocks_and_slices_tile_any_buffer(count in 0usize..10_000_000, n in 1usize..2048, slice in 1usize..1 << 20) {
            let mut next = 0;
            for b in 0..n {
                let block = block_range(count, n, b);
                prop_assert_eq!(block.start, next);
                prop_assert!(block.len() == count / n || block.len() == count / n + 1);
                let k = slice_count(block.len(), slice);
                // Check the first and last slices of big blocks; all of small ones.
                for i in (0..k).filter(|&i| i < 4 || i + 4 >= k) {
                    let s = slice_range(&block, slice, i);
                    prop_assert!(!s.is_empty() && s.len() <= slice);
                    prop_assert_eq!(s.start, block.start + i * slice);
                    prop_assert!(s.end <= block.end);
                }
                if k > 0 {
                    prop_assert_eq!(slice_range(&block, slice, k - 1).end, block.end);
                }
                next = block.end;
            }
            prop_assert_eq!(next, count);
        }
    }
}
