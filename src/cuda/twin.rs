//! Test support: a rank's memory on the host, with the kernels' host build
//! as its "device", so the device paths' walks run on any machine.

use rand::rngs::SmallRng;
use rand::Rng;

use super::staged::RankMemory;
use super::Src;
use super::{host, Hop};
use crate::element::{DType, ReduceOp};
use crate::error::Result;

/// One rank's buffer, inbox and outgoing slice as u32 words (so every
/// slice of them is aligned for the host kernels).
pub(crate) struct HostRank {
    local: Vec<u32>,
    len: usize,
    pub inbox: Vec<u32>,
    pub out: Vec<u32>,
    /// An encode overflowed since the last [`RankMemory::take_overflow`].
    pub overflow: bool,
}

pub(crate) fn bytes(w: &[u32]) -> &[u8] {
    bytemuck::cast_slice(w)
}

pub(crate) fn bytes_mut(w: &mut [u32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(w)
}

impl HostRank {
    pub fn new(input: &[u8]) -> HostRank {
        let mut local = vec![0u32; input.len().div_ceil(4)];
        bytes_mut(&mut local)[..input.len()].copy_from_slice(input);
        HostRank { local, len: input.len(), inbox: vec![], out: vec![], overflow: false }
    }

    /// The buffer's bytes.
    pub fn result(&self) -> Vec<u8> {
        bytes(&self.local)[..self.len].to_vec()
    }

    /// `n` bytes of `src`.
    pub fn wire(&self, src: Src, n: usize) -> &[u8] {
        match src {
            Src::Inbox(o) => &bytes(&self.inbox)[o..o + n],
            Src::Out => &bytes(&self.out)[..n],
        }
    }

    pub fn resize(&mut self, inbox: usize, out: usize) {
        self.inbox = vec![0u32; inbox.div_ceil(4)];
        self.out = vec![0u32; out.div_ceil(4)];
    }
}

impl RankMemory for HostRank {
    fn prepare(&mut self, bytes: usize) -> Result<()> {
        self.resize(bytes, bytes);
        Ok(())
    }

    fn hop(&mut self, hop: &Hop, n: usize, recv: Option<Src>, at: usize) -> Result<()> {
        let (ws, bs) = (hop.wire.size(), hop.buffer.size());
        let input: Vec<u8> = recv.map_or(vec![], |s| self.wire(s, n * ws).to_vec());
        let local = &mut bytes_mut(&mut self.local)[at * bs..(at + n) * bs];
        let out_len = if hop.kind.writes_out(hop.fin) { n * ws } else { 0 };
        let out = &mut bytes_mut(&mut self.out)[..out_len];
        self.overflow |= host::run(hop, n, &input, local, out)?;
        Ok(())
    }

    fn stage_out(&mut self, src: Src, dst: &mut [u8]) -> Result<()> {
        let n = dst.len();
        dst.copy_from_slice(self.wire(src, n));
        Ok(())
    }

    fn stage_in(&mut self, src: &[u8]) -> Result<()> {
        bytes_mut(&mut self.inbox)[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn take_overflow(&mut self) -> Result<bool> {
        Ok(std::mem::take(&mut self.overflow))
    }
}

/// `size` inputs of `count` `buffer` elements: mostly values for `op`, and
/// one in 40 a special (NaN, infinity, -0, FP16's overflow, a subnormal).
pub(crate) fn inputs(rng: &mut SmallRng, size: usize, count: usize, buffer: DType, op: ReduceOp) -> Vec<Vec<u8>> {
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
pub(crate) fn show(got: &[u8], want: &[u8], inputs: &[Vec<u8>], i: usize, w: usize) -> String {
    let e = |b: &[u8]| format!("{:02x?}", &b[i * w..(i + 1) * w]);
    format!("element {i}: {} against {}, inputs {:?}", e(got), e(want), inputs.iter().map(|b| e(b)).collect::<Vec<_>>())
}
