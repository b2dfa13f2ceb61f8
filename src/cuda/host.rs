//! The kernels of `kernels/fused.cu` compiled for the CPU (C++, the same
//! source with `RF_HOST`, run as one thread). They exist to check the
//! kernels' code bit for bit against the host kernels (`cpu`) on machines without a
//! GPU; the device runs the same bodies.

use super::{ffi, Hop};
use crate::error::Result;

/// Runs `hop` over `n` elements: `recv` and `out` hold wire elements,
/// `local` buffer elements, all as bytes (an unused one empty). Returns
/// whether an encode overflowed the wire.
pub fn run(hop: &Hop, n: usize, recv: &[u8], local: &mut [u8], out: &mut [u8]) -> Result<bool> {
    ffi::host(hop, n, recv, local, out)
}
