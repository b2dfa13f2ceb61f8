//! Chunk math: how `count` elements split into one block per rank, and a
//! block into slices of at most `slice` elements (the unit of pipelining).

use std::ops::Range;

/// Block `b` of `count` elements split over `n` blocks. The first
/// `count % n` blocks are one element longer, so blocks differ by at most
/// one element and a block may be empty when `count < n`.
pub fn block_range(count: usize, n: usize, b: usize) -> Range<usize> {
    debug_assert!(b < n);
    let (q, r) = (count / n, count % n);
    let start = b * q + b.min(r);
    start..start + q + usize::from(b < r)
}

/// How many slices of at most `slice` elements cover `len` elements
/// (0 for an empty block: it sends no message at all).
pub fn slice_count(len: usize, slice: usize) -> usize {
    len.div_ceil(slice.max(1))
}

/// Slice `k` of `block`.
pub fn slice_range(block: &Range<usize>, slice: usize, k: usize) -> Range<usize> {
    let start = block.start + k * slice;
    start..(start + slice).min(block.end)
}
