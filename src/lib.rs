//! tmp
#![allow(missing_docs)]
pub mod codec;
pub mod cpu;
pub mod element;
pub mod error;
pub mod op;
pub mod schedule;
