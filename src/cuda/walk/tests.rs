//! The walk over the kernels' host build against the CPU backend, bit for
//! bit: the same schedules, hop kinds and message order the device runs,
//! checked on any machine.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{allreduce, Call, Lanes, Src};
use crate::cuda::reference::{cpu_allreduce, first_difference};
use crate::cuda::{host, Hop, PAIRS};
use crate::element::{DType, ReduceOp};
use crate::error::Result;
use crate::Algorithm;

/// Each rank's memory as u32 words (so every slice of it is aligned for
/// the host kernels), with the kernels' host build as its "device".
struct HostLanes {
    locals: Vec<Vec<u32>>,
    len: usize,
    outs: Vec<Vec<u32>>,
    inboxes: Vec<Vec<u32>>,
    sent: usize,
    overflow: bool,
}

fn bytes(w: &[u32]) -> &[u8] {
    bytemuck::cast_slice(w)
}

fn bytes_mut(w: &mut [u32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(w)
}

impl HostLanes {
    fn new(inputs: &[Vec<u8>]) -> HostLanes {
        let len = inputs[0].len();
        let locals = inputs
            .iter()
            .map(|b| {
                let mut w = vec![0u32; len.div_ceil(4)];
                bytes_mut(&mut w)[..len].copy_from_slice(b);
                w
            })
            .collect();
        HostLanes { locals, len, outs: vec![], inboxes: vec![], sent: 0, overflow: false }
    }

    fn results(&self) -> Vec<Vec<u8>> {
        self.locals.iter().map(|w| bytes(w)[..self.len].to_vec()).collect()
    }
}

impl Lanes for HostLanes {
    fn prepare(&mut self, inbox: &[usize], out: &[usize]) -> Result<()> {
        self.inboxes = inbox.iter().map(|&b| vec![0u32; b.div_ceil(4)]).collect();
        self.outs = out.iter().map(|&b| vec![0u32; b.div_ceil(4)]).collect();
        Ok(())
    }

    fn hop(&mut self, rank: usize, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        let (ws, bs) = (hop.wire.size(), hop.buffer.size());
        let input: Vec<u8> = match recv {
            Some(Src::Inbox(o)) => bytes(&self.inboxes[rank])[o..o + n * ws].to_vec(),
            Some(Src::Out) => bytes(&self.outs[rank])[..n * ws].to_vec(),
            None => vec![],
        };
        let local = &mut bytes_mut(&mut self.locals[rank])[at * bs..(at + n) * bs];
        let out_len = if hop.kind.writes_out(hop.fin) { n * ws } else { 0 };
        let out = &mut bytes_mut(&mut self.outs[rank])[..out_len];
        self.overflow |= host::run(hop, n, &input, local, out)?;
        Ok(())
    }

    fn send(&mut self, rank: usize, src: Src, to: usize, dst: usize, n: usize) -> Result<usize> {
        let data: Vec<u8> = match src {
            Src::Out => bytes(&self.outs[rank])[..n].to_vec(),
            Src::Inbox(o) => bytes(&self.inboxes[rank])[o..o + n].to_vec(),
        };
        bytes_mut(&mut self.inboxes[to])[dst..dst + n].copy_from_slice(&data);
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

fn inputs(rng: &mut SmallRng, size: usize, count: usize, buffer: DType, op: ReduceOp) -> Vec<Vec<u8>> {
    (0..size)
        .map(|_| {
            let mut v = Vec::with_capacity(count * buffer.size());
            for _ in 0..count {
                let x: f32 = match rng.random_range(0..40) {
                    0 => [f32::NAN, f32::INFINITY, -0.0, 60000.0, 1e-40][rng.random_range(0..5)],
                    _ if op == ReduceOp::Prod => rng.random_range(0.7f32..1.3),
                    _ => rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-3..3)),
                };
                match buffer {
                    DType::F32 => v.extend_from_slice(&x.to_le_bytes()),
                    DType::F16 => v.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                    DType::Bf16 => v.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                    DType::F64 => unreachable!("no device kernels for f64"),
                }
            }
            v
        })
        .collect()
}

/// Element `i` of the device's and the host's results and of every input.
fn show(got: &[u8], want: &[u8], inputs: &[Vec<u8>], i: usize, w: usize) -> String {
    let e = |b: &[u8]| format!("{:02x?}", &b[i * w..(i + 1) * w]);
    format!("element {i}: {} against {}, inputs {:?}", e(got), e(want), inputs.iter().map(|b| e(b)).collect::<Vec<_>>())
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
                    let c = Call { size, count, buffer, wire, op, algo };
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
                    assert_eq!(lanes.overflow && wire != buffer, want_over, "{c:?}: overflow flag");
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
        let c = Call { size: 4, count, buffer: DType::F32, wire: DType::F16, op: ReduceOp::Sum, algo: Algorithm::Ring };
        let input = inputs(&mut rng, 4, count, DType::F32, ReduceOp::Sum);
        let (want, _) = cpu_allreduce(&input, DType::F32, DType::F16, ReduceOp::Sum, Algorithm::Ring).unwrap();
        let mut lanes = HostLanes::new(&input);
        allreduce(&mut lanes, &c).unwrap();
        assert_eq!(lanes.results(), want, "{c:?}");
    }
}
