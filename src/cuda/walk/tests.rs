//! The walk over the kernels' host build against the CPU backend, bit for
//! bit: the same schedules, hop kinds and message order the device runs,
//! checked on any machine.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{allreduce, Call, Lanes, Src};
use crate::cuda::reference::{cpu_allreduce, first_difference};
use crate::cuda::staged::RankMemory;
use crate::cuda::twin::{bytes_mut, inputs, show, HostRank};
use crate::cuda::{Hop, PAIRS};
use crate::element::{DType, ReduceOp};
use crate::error::Result;
use crate::schedule::Algorithm;

/// Every rank's memory on the host ([`HostRank`]), messages copied
/// between their inboxes.
struct HostLanes {
    ranks: Vec<HostRank>,
    sent: usize,
}

impl HostLanes {
    fn new(inputs: &[Vec<u8>]) -> HostLanes {
        HostLanes { ranks: inputs.iter().map(|b| HostRank::new(b)).collect(), sent: 0 }
    }

    fn results(&self) -> Vec<Vec<u8>> {
        self.ranks.iter().map(HostRank::result).collect()
    }

    fn overflow(&self) -> bool {
        self.ranks.iter().any(|r| r.overflow)
    }
}

impl Lanes for HostLanes {
    fn prepare(&mut self, inbox: &[usize], out: &[usize]) -> Result<()> {
        for (r, rank) in self.ranks.iter_mut().enumerate() {
            rank.resize(inbox[r], out[r]);
        }
        Ok(())
    }

    fn hop(&mut self, rank: usize, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        // The overflow flag stays set: the walk reads it once, at the end.
        RankMemory::hop(&mut self.ranks[rank], hop, n, recv, at)
    }

    fn send(&mut self, rank: usize, src: Src, to: usize, dst: usize, n: usize) -> Result<usize> {
        let data = self.ranks[rank].wire(src, n).to_vec();
        bytes_mut(&mut self.ranks[to].inbox)[dst..dst + n].copy_from_slice(&data);
        self.sent += 1;
        Ok(self.sent - 1)
    }

    fn accept(&mut self, _rank: usize, msg: usize) -> Result<()> {
        assert!(msg < self.sent, "message {msg} accepted before it was sent");
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Every pair, op and algorithm the device runs, over 2-5 and 8 ranks and
/// counts that leave blocks empty, odd and misaligned.
#[test]
fn walk_over_the_host_build_matches_the_cpu_backend_bit_for_bit() {
    let mut rng = SmallRng::seed_from_u64(11);
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
    let algos = [Algorithm::Ring, Algorithm::RecursiveDoubling, Algorithm::Tree, Algorithm::HalvingDoubling];
    let mut cases = 0;
    for (i, &(buffer, wire)) in PAIRS.iter().enumerate() {
        for &size in &[2usize, 3, 4, 5, 8] {
            for &count in &[1usize, 3, 1000, 10007] {
                let op = ops[(i + size + count) % ops.len()];
                for algo in algos {
                    let c = Call::in_process(size, count, buffer, wire, op, algo).unwrap();
                    let input = inputs(&mut rng, size, count, buffer, op);
                    let (want, want_over) = cpu_allreduce(&input, buffer, wire, op, algo).unwrap();
                    let mut lanes = HostLanes::new(&input);
                    allreduce(&mut lanes, &c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
                    let got = lanes.results();
                    for r in 0..size {
                        if let Some(i) = first_difference(&got[r], &want[r], buffer) {
                            let at = show(&got[r], &want[r], &input, i, buffer.size());
                            panic!("{c:?}: rank {r} differs from the CPU backend at {at}");
                        }
                    }
                    // Only a codec's wire reports overflow (a native sum that
                    // overflows is MPI's infinity).
                    assert_eq!(lanes.overflow() && wire != buffer, want_over, "{c:?}: overflow flag");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * 5 * 4 * 4);
}

/// The case, at the sizes the GPU test runs: 4 ranks, f32 over
/// FP16, counts 1, 1000, 10007 (1 << 24 runs on the GPU only).
#[test]
fn four_rank_fp16_ring_matches_the_cpu_backend() {
    let mut rng = SmallRng::seed_from_u64(12);
    for count in [1, 1000, 10007] {
        let c = Call::in_process(4, count, DType::F32, DType::F16, ReduceOp::Sum, Algorithm::Ring).unwrap();
        let input = inputs(&mut rng, 4, count, DType::F32, ReduceOp::Sum);
        let (want, _) = cpu_allreduce(&input, DType::F32, DType::F16, ReduceOp::Sum, Algorithm::Ring).unwrap();
        let mut lanes = HostLanes::new(&input);
        allreduce(&mut lanes, &c).unwrap();
        assert!(lanes.results() == want, "{c:?}: differs from the CPU backend");
    }
}
