//! CUDA kernels for device buffers (feature `cuda`).
//!
//! `kernels/fused.cu` holds one fused kernel per hop kind and (buffer,
//! wire) pair, the device twins of the host kernels':
//!
//! | [`Kind`] | host kernel | per element |
//! |---|---|---|
//! | `Encode` | `encode` | `out = wire(local)` (first hop) |
//! | `DecodeReduceEncode` | `reduce_encode` | `out = wire(recv op local)` (middle hops) |
//! | `DecodeReduceStoreEncode` | `reduce_store_encode` | also `local = decode(out)` (last reduce-scatter hop) |
//! | `DecodeStore` | `decode_store` | `local = decode(recv)` (allgather hops) |
//! | `DecodeReduce` | `reduce_into` | `local = recv op local` (the doubling fold) |
//! | `Exchange` | `exchange` | one side of a recursive-doubling exchange |
//!
//! Nothing here needs CUDA at build time. The kernels reach the GPU as
//! PTX: from `nvcc` at build time when one is installed, otherwise
//! compiled by NVRTC ([`compile_ptx`]) at first use; cudarc loads the
//! driver and NVRTC libraries at run time and [`Error::Cuda`] says when
//! one is missing.
//!
//! [`host`] runs the same kernel bodies compiled for the CPU, which is how
//! the tests check them bit for bit against the host path on any machine;
//! [`Device`] runs them on a GPU (checked by `ci/gpu.sh`).
//!
//! Device buffers reach the kernels two ways, both walking the host's
//! schedules (`walk::run_step` maps each primitive to its kernel):
//! [`DeviceRanks`], in-process ranks on one GPU with device-to-device
//! messages, and [`StagedRank`] with
//! [`crate::Communicator::allreduce_device`], the host-staged carrier over
//! any transport. [`mod@bench`] measures the kernels. Not built: the NCCL and
//! CUDA-aware MPI carriers (issue #5).

pub mod bench;
mod compile;
mod device;
mod ffi;
pub mod host;
mod nccl;
mod ranks;
mod reference;
pub(crate) mod staged;
pub(crate) mod staged_rank;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod twin;
pub(crate) mod walk;

pub use compile::{compile_ptx, nvrtc_available, PtxCache, ARCHS};
pub use device::{Device, Lane};
pub use nccl::{nccl_version, NcclVersion};
pub use ranks::DeviceRanks;
pub use reference::{cpu_allreduce, first_difference};
pub use staged_rank::StagedRank;

use crate::codec::Codec;
use crate::element::{DType, ReduceOp};
use crate::error::{Error, Result};

/// Inbox regions start on this many bytes (the kernels' 16-byte vector
/// path needs 16; 256 keeps each in its own cache lines).
pub(crate) const ALIGN: usize = 256;

/// Wire bytes a kernel reads or a message is copied from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// The rank's outgoing slice (what its last encoding kernel wrote).
    Out,
    /// A region of the rank's inbox, from this byte (a received message).
    Inbox(usize),
}

/// The kernels' source, as NVRTC compiles it.
pub const SOURCE: &str = include_str!("../../kernels/fused.cu");

/// What one hop kernel does (see the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `out = wire(local)`.
    Encode,
    /// `out = wire(recv op local)`.
    DecodeReduceEncode,
    /// `out = wire(recv op local [/ n])`, `local = decode(out)`.
    DecodeReduceStoreEncode,
    /// `local = decode(recv)`.
    DecodeStore,
    /// `local = recv op local`.
    DecodeReduce,
    /// A recursive-doubling exchange ([`Hop::mine_first`], [`Hop::fin`]).
    Exchange,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Encode,
        Kind::DecodeReduceEncode,
        Kind::DecodeReduceStoreEncode,
        Kind::DecodeStore,
        Kind::DecodeReduce,
        Kind::Exchange,
    ];

    /// The name in the kernels' entry points.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Encode => "encode",
            Kind::DecodeReduceEncode => "decode_reduce_encode",
            Kind::DecodeReduceStoreEncode => "decode_reduce_store_encode",
            Kind::DecodeStore => "decode_store",
            Kind::DecodeReduce => "decode_reduce",
            Kind::Exchange => "exchange",
        }
    }

    /// Whether the kernel reads a received wire slice.
    pub fn reads_recv(self) -> bool {
        self != Kind::Encode
    }

    /// Whether the kernel writes an outgoing wire slice (`fin`: an
    /// exchange whose result is final).
    pub fn writes_out(self, fin: bool) -> bool {
        matches!(self, Kind::Encode | Kind::DecodeReduceEncode | Kind::DecodeReduceStoreEncode)
            || (self == Kind::Exchange && fin)
    }
}

/// The (buffer, wire) element pairs the kernels are built for: native
/// f32/f16/bf16, and each 32- and 16-bit buffer over the FP16 and BF16
/// wires. f64 buffers stay on the host path.
pub const PAIRS: [(DType, DType); 7] = [
    (DType::F32, DType::F32),
    (DType::F32, DType::F16),
    (DType::F32, DType::Bf16),
    (DType::F16, DType::F16),
    (DType::F16, DType::Bf16),
    (DType::Bf16, DType::F16),
    (DType::Bf16, DType::Bf16),
];

/// One kernel call's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// What the kernel does.
    pub kind: Kind,
    /// The buffer's element type.
    pub buffer: DType,
    /// The wire's element type.
    pub wire: DType,
    /// The reduction.
    pub op: ReduceOp,
    /// `Some(n)`: divide by `n` (Avg's final hop).
    pub avg_ranks: Option<u32>,
    /// Exchange: this rank is the lower of the pair (its value comes first).
    pub mine_first: bool,
    /// Exchange: the result is final (rounded to the wire, sent, stored).
    pub fin: bool,
}

impl Hop {
    /// A hop of `kind` on `buffer` elements over `wire`, reducing with `op`.
    pub fn new(kind: Kind, buffer: DType, wire: DType, op: ReduceOp) -> Hop {
        Hop { kind, buffer, wire, op, avg_ranks: None, mine_first: false, fin: false }
    }

    /// The entry point's name, `rf_<kind>_<buffer>_<wire>`, or an error for
    /// a pair the kernels are not built for.
    pub fn kernel_name(&self) -> Result<String> {
        if !PAIRS.contains(&(self.buffer, self.wire)) {
            return Err(Error::Cuda {
                what: format!("{} kernel", self.kind.name()),
                detail: format!("no device kernel for {} buffers over a {} wire", self.buffer, self.wire),
            });
        }
        Ok(self.name())
    }

    // The entry point's name, for a pair already known to be built.
    fn name(&self) -> String {
        format!("rf_{}_{}_{}", self.kind.name(), self.buffer, self.wire)
    }

    /// What selects the kernel: kind, buffer and wire.
    fn key(&self) -> (Kind, DType, DType) {
        (self.kind, self.buffer, self.wire)
    }

    /// Checks the byte lengths of one call on `n` elements: `local` holds
    /// `n` buffer elements, `recv` (where read) and `out` (where written)
    /// `n` wire elements; an unused one must be empty.
    pub(crate) fn check(&self, n: usize, recv: usize, local: usize, out: usize) -> Result<()> {
        let want_recv = if self.kind.reads_recv() { n * self.wire.size() } else { 0 };
        let want_out = if self.kind.writes_out(self.fin) { n * self.wire.size() } else { 0 };
        let want_local = n * self.buffer.size();
        if (recv, local, out) != (want_recv, want_local, want_out) {
            return Err(Error::Cuda {
                what: self.kernel_name()?,
                detail: format!(
                    "{n} elements need recv/local/out of {want_recv}/{want_local}/{want_out} bytes, got {recv}/{local}/{out}"
                ),
            });
        }
        Ok(())
    }

    fn op_code(&self) -> i32 {
        match self.op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
            ReduceOp::Min => 2,
            ReduceOp::Max => 3,
            ReduceOp::Prod => 4,
        }
    }
}

/// Every kernel: its (kind, buffer, wire) and its entry point's name.
fn kernels() -> impl Iterator<Item = ((Kind, DType, DType), String)> {
    PAIRS.iter().flat_map(|&(b, w)| {
        Kind::ALL.iter().map(move |&k| {
            let hop = Hop::new(k, b, w, ReduceOp::Sum);
            (hop.key(), hop.name())
        })
    })
}

/// Every entry point's name.
pub fn kernel_names() -> Vec<String> {
    kernels().map(|(_, name)| name).collect()
}

/// The codec that puts `wire` elements on the wire for `buffer` elements.
pub fn codec_for(buffer: DType, wire: DType) -> Result<Codec> {
    match wire {
        w if w == buffer => Ok(Codec::Native),
        DType::F16 => Ok(Codec::Fp16),
        DType::Bf16 => Ok(Codec::Bf16),
        _ => Err(Error::Cuda {
            what: "codec".into(),
            detail: format!("no codec puts {buffer} buffers on a {wire} wire"),
        }),
    }
}
