//! Buffers at a chosen address alignment, without `unsafe`: a `Vec`
//! over-allocated by one alignment's worth, used from its first aligned
//! element (a `Vec` never moves while it is not grown).

use std::ops::{Deref, DerefMut};

/// A page on the machines this runs on.
pub const PAGE: usize = 4096;

/// `len` elements from an address that is a multiple of `align` bytes.
pub struct Aligned<E> {
    raw: Vec<E>,
    start: usize,
    len: usize,
}

impl<E: Copy> Aligned<E> {
    /// `len` copies of `fill`, the first at a multiple of `align` bytes
    /// (a multiple of the element's size).
    pub fn new(len: usize, fill: E, align: usize) -> Self {
        let size = std::mem::size_of::<E>();
        let raw = vec![fill; len + align / size];
        let start = (align - raw.as_ptr() as usize % align) % align / size;
        Aligned { raw, start, len }
    }
}

impl<E> Deref for Aligned<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl<E> DerefMut for Aligned<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_aligned_and_holds_len_elements() {
        for len in [0, 1, 5, 1000] {
            for align in [4, 64, PAGE] {
                let mut a = Aligned::<f32>::new(len, 1.5, align);
                assert_eq!(a.as_ptr() as usize % align, 0, "len {len} align {align}");
                assert_eq!(a.len(), len);
                assert!(a.iter().all(|&x| x == 1.5));
                a.iter_mut().for_each(|x| *x = 2.0);
                assert!(a.iter().all(|&x| x == 2.0));
            }
        }
        let h = Aligned::<half::f16>::new(3, half::f16::ONE, 64);
        assert_eq!(h.as_ptr() as usize % 64, 0);
    }
}
