//! # ringfuse
//!
//! Ring allreduce for gradient synchronisation, with the bytes on the wire
//! optionally halved by FP16 or BF16. At every hop one fused pass decodes
//! the received slice, reduces it into the local slice in `f32`, and
//! encodes the outgoing slice. Every rank ends with bitwise-identical
//! results, the same run after run, and each wire format's error is bounded
//! as documented in [`codec`].
//!
//! | layer | module | what it is |
//! |---|---|---|
//! | public face | [`Communicator`], [`AllreduceOpts`] | `allreduce`, `reduce_scatter`, `allgather`, `broadcast`, `barrier` |
//! | start-up | [`mpi`] (feature `mpi`), [`local`] | ranks as MPI processes, or as threads in one process |
//! | wire formats | [`codec`] | `Native`, `Fp16`, `Bf16`, their rounding and error bounds |
//! | fused kernels | `cpu` (feature `unstable`), `cuda` (feature `cuda`) | decode-reduce-encode, AVX2/F16C with run-time detection; the CUDA kernels of `kernels/fused.cu` |
//! | schedules | `schedule` (feature `unstable`; [`Algorithm`] at the root) | pure code: NCCL's ring primitives, recursive doubling, chain broadcast |
//! | executor | `exec` (internal) | walks a schedule over a transport, slots in flight |
//! | carriers | [`transport`] | MPI point-to-point, shared memory (the default when every rank is on one host; `RINGFUSE_TRANSPORT`), in-process mailboxes |
//! | training | [`GradSync`], `candle` (feature `candle`) | buckets, overlap with backward, error feedback; candle's `GradStore` |
//!
//! ## Quick start
//!
//! 1. Add `ringfuse` to `Cargo.toml` (feature `mpi`, on by default, needs
//!    Open MPI: `bash ci/setup.sh` installs it on Debian).
//! 2. Initialise once and take the world communicator:
//!    `let mpi = ringfuse::mpi::init()?; let comm = mpi.world()?;`
//! 3. After each backward pass, reduce the gradients in place:
//!    `comm.allreduce_with(&mut grads, ReduceOp::Avg, &AllreduceOpts::default().codec(Codec::Fp16))?;`
//! 4. Launch with `mpirun -np 4 your-trainer`.
//!
//! The same code runs with ranks as threads, which is how the tests run:
//!
//! ```
//! use ringfuse::{AllreduceOpts, Codec, ReduceOp};
//!
//! let results = ringfuse::local::run(4, |comm| {
//!     let mut grads: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32 * 0.25 + comm.rank() as f32).collect();
//!     let opts = AllreduceOpts::default().codec(Codec::Fp16);
//!     comm.allreduce_with(&mut grads, ReduceOp::Avg, &opts)?;
//!     Ok::<_, ringfuse::Error>(grads)
//! });
//! let first = results[0].as_ref().unwrap();
//! assert!(results.iter().all(|r| r.as_ref().unwrap() == first)); // identical on every rank
//! assert_eq!(first[1], 0.25 + 1.5); // mean of ranks 0..4 added to 0.25
//! ```
//!
//! ## Errors
//!
//! Every failure is an [`Error`] naming the rank, and where there is one the
//! peer, the step and the call (`allreduce#3(f32, 1000, sum, fp16)`). Every
//! wait has a deadline ([`AllreduceOpts::timeout`]); nothing panics or
//! hangs on bad input.

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod buffers;
#[cfg(feature = "candle")]
pub mod candle;
pub mod codec;
mod comm;
/// The fused host kernels. Public with feature `unstable` only: the
/// layers below the communicator are ringfuse's own (its tools, benches
/// and tests use them), with no promise that they keep their shape.
#[cfg(feature = "unstable")]
pub mod cpu;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unused_imports)] // what only the unstable surface uses
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod element;
pub mod error;
mod exec;
pub mod flight;
pub mod gradsync;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod op;
/// The pure schedules (feature `unstable`; see [`cpu`]'s note).
#[cfg(feature = "unstable")]
pub mod schedule;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unused_imports)] // what only the unstable surface uses
mod schedule;
/// The scale model (feature `unstable`; only ringfuse-perf uses it).
#[cfg(feature = "unstable")]
pub mod sim;
pub mod transport;
pub mod tuning;
pub mod verify;
/// The message header (feature `unstable`; see [`cpu`]'s note).
#[cfg(feature = "unstable")]
pub mod wire;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unused_imports)] // what only the unstable surface uses
mod wire;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(all(doctest, feature = "mpi"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use codec::Codec;
pub use comm::env;
pub use comm::{AllreduceOpts, Communicator, DEFAULT_TIMEOUT};
pub use cpu::WireStores;
pub use element::{DType, Element, ReduceOp};
pub use error::{BufferState, Error, Result};
pub use gradsync::{Compression, GradSync, GradSyncOpts, LocalSgd, StepReport};
pub use op::{Collective, OpDesc};
pub use schedule::Algorithm;
pub use transport::DEFAULT_SLICE_BYTES;
pub use tuning::Tuning;
