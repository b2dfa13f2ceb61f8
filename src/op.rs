//! A description of one collective call, used in every error message (and
//! later compared across ranks).

use crate::codec::Codec;
use crate::element::{DType, ReduceOp};

/// Which collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collective {
    /// Allreduce.
    Allreduce,
    /// Reduce-scatter.
    ReduceScatter,
    /// Allgather.
    Allgather,
    /// Broadcast.
    Broadcast,
    /// Barrier.
    Barrier,
}

impl Collective {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Collective::Allreduce => "allreduce",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Allgather => "allgather",
            Collective::Broadcast => "broadcast",
            Collective::Barrier => "barrier",
        }
    }
}

/// What a rank called: printed as `allreduce#3(f32, 1000, sum, fp16)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpDesc {
    /// Which collective.
    pub kind: Collective,
    /// Sequence number of the call on this communicator (0-based).
    pub seq: u64,
    /// Element type.
    pub dtype: DType,
    /// Elements in the call's (full) buffer.
    pub count: usize,
    /// Reduction, where the collective reduces.
    pub op: Option<ReduceOp>,
    /// Wire format.
    pub codec: Codec,
    /// Root, for broadcast.
    pub root: Option<usize>,
}

impl std::fmt::Display for OpDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}({}, {}", self.kind.name(), self.seq, self.dtype, self.count)?;
        if let Some(op) = self.op {
            write!(f, ", {op}")?;
        }
        if let Some(root) = self.root {
            write!(f, ", root {root}")?;
        }
        write!(f, ", {})", self.codec)
    }
}
