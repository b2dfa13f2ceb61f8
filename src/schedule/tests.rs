//! Schedules checked alone: every rank's steps are run symbolically, with a
//! bit mask per block standing for "which ranks' contributions are in it".

use std::collections::VecDeque;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ring(RingKind),
    Chain(usize),
    Doubling,
}

fn schedule(kind: Kind, rank: usize, size: usize) -> Box<dyn Schedule> {
    match kind {
        Kind::Ring(k) => Box::new(Ring { rank, size, count: 1000, kind: k }),
        Kind::Chain(root) => Box::new(Chain { rank, size, count: 1000, root }),
        Kind::Doubling => Box::new(RecursiveDoubling { rank, size, count: 1000 }),
    }
}

/// Runs all ranks until none can move. Panics on any broken invariant;
/// returns each rank's final masks.
fn simulate(kind: Kind, n: usize) -> Vec<Vec<u64>> {
    let scheds: Vec<_> = (0..n).map(|r| schedule(kind, r, n)).collect();
    let blocks = match kind {
        Kind::Chain(_) | Kind::Doubling => 1,
        _ => n,
    };
    let mut have: Vec<Vec<u64>> = (0..n)
        .map(|r| {
            (0..blocks)
                .map(|b| match kind {
                    Kind::Ring(RingKind::Allgather) => u64::from(b == r) << r,
                    Kind::Chain(root) => u64::from(r == root) << r,
                    Kind::Ring(_) | Kind::Doubling => 1 << r,
                })
                .collect()
        })
        .collect();
    let mut queues: Vec<Vec<VecDeque<(usize, u64)>>> = vec![vec![VecDeque::new(); n]; n];
    let mut pc = vec![0usize; n];
    // Exchanges send before they receive; remember which already sent.
    let mut sent_early = vec![false; n];
    loop {
        let mut moved = false;
        for r in 0..n {
            if pc[r] == scheds[r].len() {
                continue;
            }
            let st = scheds[r].step(pc[r]);
            let exchange = matches!(st.prim, Prim::Exchange | Prim::ExchangeFinal);
            if exchange && !sent_early[r] {
                queues[r][st.send_to].push_back((st.block, have[r][st.block]));
                sent_early[r] = true;
                moved = true;
            }
            let got = if st.prim.receives() {
                match queues[st.recv_from][r].pop_front() {
                    None => continue,
                    Some((b, m)) => {
                        assert_eq!(b, st.block, "{kind:?} n={n}: rank {r} step {} got block {b}", pc[r]);
                        m
                    }
                }
            } else {
                0
            };
            let local = have[r][st.block];
            let out = match st.prim {
                Prim::Send | Prim::CopySend => local,
                Prim::RecvReduceSend => {
                    assert_eq!(got & local, 0, "{kind:?} n={n}: contribution reduced twice");
                    got | local
                }
                Prim::RecvReduceCopySend | Prim::RecvReduceCopy => {
                    assert_eq!(got & local, 0, "{kind:?} n={n}: contribution reduced twice");
                    have[r][st.block] = got | local;
                    got | local
                }
                Prim::RecvCopySend | Prim::Recv => {
                    have[r][st.block] = got;
                    got
                }
                Prim::RecvReduce | Prim::Exchange | Prim::ExchangeFinal => {
                    assert_eq!(got & local, 0, "{kind:?} n={n}: contribution reduced twice");
                    have[r][st.block] = got | local;
                    got | local
                }
            };
            sent_early[r] = false;
            if st.prim.sends() && !exchange {
                queues[r][st.send_to].push_back((st.block, out));
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
        for q in &queues[r] {
            assert!(q.is_empty(), "{kind:?} n={n}: rank {r} sent a message nobody received");
        }
    }
    have
}

const SIZES: [usize; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33, 64];

#[test]
fn ring_allreduce_gives_every_rank_every_contribution_once() {
    for n in SIZES {
        let full = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let have = simulate(Kind::Ring(RingKind::Allreduce), n);
        assert!(have.iter().all(|h| h.iter().all(|&m| m == full)), "n={n}");
        if n > 1 {
            assert_eq!(Ring { rank: 0, size: n, count: 1, kind: RingKind::Allreduce }.len(), 2 * n - 1);
        }
    }
}

#[test]
fn recursive_doubling_gives_every_rank_every_contribution_once() {
    for n in SIZES {
        let full = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let have = simulate(Kind::Doubling, n);
        assert!(have.iter().all(|h| h[0] == full), "n={n}");
    }
    // log2 steps, against the ring's 2n - 1.
    assert_eq!(RecursiveDoubling { rank: 0, size: 8, count: 1 }.len(), 3);
    assert_eq!(RecursiveDoubling { rank: 5, size: 6, count: 1 }.len(), 2);
    assert_eq!(RecursiveDoubling { rank: 1, size: 6, count: 1 }.len(), 4);
}

#[test]
fn ring_reduce_scatter_finishes_own_block() {
    for n in SIZES {
        let full = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let have = simulate(Kind::Ring(RingKind::ReduceScatter), n);
        for (r, h) in have.iter().enumerate() {
            assert_eq!(h[r], full, "n={n} rank {r}");
        }
    }
}

#[test]
fn ring_allgather_delivers_each_block_from_its_owner() {
    for n in SIZES {
        let have = simulate(Kind::Ring(RingKind::Allgather), n);
        for h in &have {
            for (b, &m) in h.iter().enumerate() {
                assert_eq!(m, 1 << b, "n={n} block {b}");
            }
        }
    }
}

#[test]
fn chain_broadcast_reaches_every_rank_from_any_root() {
    for n in SIZES {
        for root in [0, n / 2, n - 1] {
            let have = simulate(Kind::Chain(root), n);
            assert!(have.iter().all(|h| h[0] == 1 << root), "n={n} root={root}");
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

    fn full(n: usize) -> u64 {
        if n == 64 {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    }

    fn kind() -> impl Strategy<Value = (Kind, usize)> {
        (1usize..=64).prop_flat_map(|n| {
            prop_oneof![
                Just(Kind::Ring(RingKind::Allreduce)),
                Just(Kind::Ring(RingKind::ReduceScatter)),
                Just(Kind::Ring(RingKind::Allgather)),
                Just(Kind::Doubling),
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
                    Kind::Ring(RingKind::Allreduce) => prop_assert!(h.iter().all(|&m| m == full(n))),
                    Kind::Doubling => prop_assert_eq!(h[0], full(n)),
                    Kind::Ring(RingKind::ReduceScatter) => prop_assert_eq!(h[r], full(n)),
                    Kind::Ring(RingKind::Allgather) => {
                        prop_assert!(h.iter().enumerate().all(|(b, &m)| m == 1 << b))
                    }
                    Kind::Chain(root) => prop_assert_eq!(h[0], 1 << root),
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
