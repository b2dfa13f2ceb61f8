//! Which allreduce schedule runs: the names a caller forces, and which
//! buffers and wire formats each can carry.

use crate::codec::Codec;
use crate::element::DType;

use super::Shape;

/// Which allreduce schedule runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The algorithm the communicator's cost model ([`crate::tuning`])
    /// predicts fastest, or without one recursive doubling up to
    /// [`crate::AllreduceOpts::small_bytes`] of wire data (by default the
    /// communicator's rule, [`crate::tuning::rule`]: the same choice in
    /// every run) and the ring above.
    /// `RINGFUSE_ALGO=ring|doubling|tree|hd` forces one.
    #[default]
    Auto,
    /// The pipelined ring: bandwidth-optimal, `2(n-1)` dependent hops.
    Ring,
    /// Recursive doubling: `log2 n` exchanges of the whole buffer.
    RecursiveDoubling,
    /// NCCL's double binary tree: `2 log2 n` hops, each of two trees
    /// carrying half the buffer.
    Tree,
    /// Recursive halving-doubling (Rabenseifner): the ring's bytes in
    /// `2 log2 n` rounds.
    HalvingDoubling,
    /// Reduce-scatter inside each host, a ring across hosts per block,
    /// allgather inside each host: the network carries each byte once per
    /// host. Needs the communicator's hosts (see
    /// [`crate::Communicator::ranks_per_host`]); the ring runs without them.
    Hierarchical,
}

impl Algorithm {
    /// Every algorithm a caller can force (not `Auto`).
    pub const FIXED: [Algorithm; 5] = [
        Algorithm::Ring,
        Algorithm::RecursiveDoubling,
        Algorithm::Tree,
        Algorithm::HalvingDoubling,
        Algorithm::Hierarchical,
    ];

    /// Parses `ring`, `doubling` (or `rd`), `tree`, `hd` (or `halving`),
    /// `hier` (or `hierarchical`) and `auto`, as `RINGFUSE_ALGO` and
    /// `ringfuse-perf --algo` take them.
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "auto" => Algorithm::Auto,
            "ring" => Algorithm::Ring,
            "doubling" | "rd" => Algorithm::RecursiveDoubling,
            "tree" => Algorithm::Tree,
            "hd" | "halving" => Algorithm::HalvingDoubling,
            "hier" | "hierarchical" => Algorithm::Hierarchical,
            _ => return None,
        })
    }

    /// The short name [`Algorithm::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Ring => "ring",
            Algorithm::RecursiveDoubling => "doubling",
            Algorithm::Tree => "tree",
            Algorithm::HalvingDoubling => "hd",
            Algorithm::Hierarchical => "hier",
        }
    }

    /// Whether this algorithm can carry `dtype` buffers on `codec`'s wire
    /// with the codec's bound and bitwise-identical results; where it
    /// cannot, the ring runs instead.
    ///
    /// All but the ring keep partial results in the buffer between steps:
    /// exact for `f32`/`f64` (the accumulator's precision), an extra
    /// rounding per step for 16-bit buffers, which the bound does not
    /// allow. The tree and halving-doubling also re-encode a final value
    /// they decoded, which gives back the same bytes only for element-wise
    /// formats (a block's scale can change).
    pub fn supports(self, dtype: DType, codec: Codec) -> bool {
        let wide = matches!(dtype, DType::F32 | DType::F64);
        match self {
            Algorithm::Auto | Algorithm::Ring => true,
            Algorithm::RecursiveDoubling => wide,
            Algorithm::Tree | Algorithm::HalvingDoubling | Algorithm::Hierarchical => wide && !codec.is_block_scaled(),
        }
    }

    /// The algorithm that runs a call of `wire_bytes` on the wire: `Auto`
    /// made concrete (what `model`, a cost model, picks; without one
    /// recursive doubling up to `doubling_up_to` wire bytes and the ring
    /// above), and any algorithm that cannot carry the call (see
    /// [`Self::supports`]; the hierarchical one where `shape` has no
    /// hosts) replaced by the ring. Pure: every rank that passes the same
    /// arguments gets the same answer, which is why the communicator
    /// resolves once and hands the result down.
    pub(crate) fn resolve(
        self,
        dtype: DType,
        codec: Codec,
        wire_bytes: usize,
        shape: Shape,
        doubling_up_to: usize,
        model: impl FnOnce() -> Option<Algorithm>,
    ) -> Algorithm {
        let algo = match self {
            Algorithm::Auto => match model() {
                Some(picked) => picked,
                None if wire_bytes <= doubling_up_to => Algorithm::RecursiveDoubling,
                None => Algorithm::Ring,
            },
            a => a,
        };
        let placed = algo != Algorithm::Hierarchical || shape.hierarchical();
        if algo.supports(dtype, codec) && placed {
            algo
        } else {
            Algorithm::Ring
        }
    }
}
