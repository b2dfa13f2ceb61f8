//! The receive path fuzzed: any bytes at all in place of one of rank 1's
//! messages (checksums on) end in an error on some rank within the
//! deadline, never a panic, a hang or a rank returning Ok with a wrong
//! result. Shared by the in-process property (`tests/properties_local.rs`)
//! and the MPI example (`examples/faults.rs forged`, one process per rank,
//! over shared memory or MPI).

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use ringfuse::op::{Collective, OpDesc};
use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::wire::{write_sealed, Header, HEADER};
use ringfuse::{Algorithm, AllreduceOpts, Codec, Communicator, DType, Error, ReduceOp};

/// Ranks of a case.
pub const N: usize = 3;
const COUNT: usize = 300;
/// 64 f32 per slice: two slices per 100-element block.
const SLICE_BYTES: usize = 256;
/// Every wait's deadline.
pub const T: Duration = Duration::from_millis(400);

fn value(rank: usize, i: usize) -> f32 {
    ((rank + 1) * (i % 13)) as f32
}

/// What replaces rank 1's message: any bytes, or a well-formed header of
/// this very call (any block, slice and flags) sealed with a wrong CRC
/// over a payload of any length, which gets past the first checks.
pub fn forged() -> impl Strategy<Value = Vec<u8>> {
    let desc = OpDesc {
        kind: Collective::Allreduce,
        seq: 0,
        dtype: DType::F32,
        count: COUNT,
        op: Some(ReduceOp::Sum),
        codec: Codec::Native,
        root: None,
    };
    prop_oneof![
        vec(any::<u8>(), 0..HEADER + SLICE_BYTES + 16),
        (0u32..4, 0u32..3, any::<u16>(), vec(any::<u8>(), 0..SLICE_BYTES + 16)).prop_map(
            move |(block, slice, flags, payload)| {
                let mut msg = vec![0u8; HEADER + payload.len()];
                msg[HEADER..].copy_from_slice(&payload);
                write_sealed(Header { flags, ..Header::new(&desc, block, slice) }, &mut msg, payload.len());
                msg[32] ^= 1; // wrong CRC: the message is never the genuine one
                msg
            }
        ),
    ]
}

/// One case: which of rank 1's messages is replaced, and by what.
pub fn cases() -> impl Strategy<Value = (u64, Vec<u8>)> {
    (0u64..8, forged())
}

/// What one rank saw.
pub struct Seen {
    pub result: Result<(), Error>,
    /// Ok with the exact sum.
    pub correct: bool,
    pub took: Duration,
}

/// This rank's part of case (`msg`, `bytes`) on `comm` (its first call).
pub fn run_rank(comm: Communicator, msg: u64, bytes: Vec<u8>) -> Seen {
    let comm = comm.inject_fault(Fault { rank: 1, msg, kind: FaultKind::Replace(bytes) });
    let opts = AllreduceOpts::default().timeout(T).slice_bytes(SLICE_BYTES).checksum(true).algorithm(Algorithm::Ring);
    let mut v: Vec<f32> = (0..COUNT).map(|i| value(comm.rank(), i)).collect();
    let t0 = Instant::now();
    let result = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts);
    let took = t0.elapsed();
    let n = comm.size();
    let correct = v.iter().enumerate().all(|(i, x)| *x == (0..n).map(|r| value(r, i)).sum::<f32>());
    Seen { result, correct, took }
}

/// The rules one rank can check alone: it returned within `2T + 1 s`, and
/// an Ok holds the exact sum.
pub fn check_rank(rank: usize, s: &Seen) -> Result<(), String> {
    if s.took >= 2 * T + Duration::from_secs(1) {
        return Err(format!("rank {rank} took {:?}: {:?}", s.took, s.result));
    }
    if s.result.is_ok() && !s.correct {
        return Err(format!("rank {rank} returned Ok with a wrong result"));
    }
    Ok(())
}
