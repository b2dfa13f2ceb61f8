//! tmp
#![allow(missing_docs)]
pub mod codec;
pub mod comm;
pub mod cpu;
pub mod element;
pub mod error;
pub mod exec;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod op;
pub mod schedule;
pub mod transport;
pub mod wire;

pub use codec::Codec;
pub use comm::{AllreduceOpts, Communicator};
pub use element::{DType, Element, ReduceOp};
pub use error::{Error, Result};
