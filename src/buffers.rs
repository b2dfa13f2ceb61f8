//! Where the blocks of one call live, for the executor: one buffer in
//! place, the two buffers of reduce-scatter and allgather, or the input and
//! output of an out-of-place allreduce.

use std::collections::BTreeMap;
use std::ops::Range;

/// The buffers of one call, as the executor reads and writes its blocks.
pub(crate) enum Local<'a, E> {
    /// One buffer read and written in place (allreduce, broadcast).
    InPlace(&'a mut [E]),
    /// Reduce-scatter: blocks are read from `input`; the own block (whose
    /// range is `own`) is reduced in `output`, which the caller has
    /// initialised with the own block of `input`.
    Scatter { input: &'a [E], output: &'a mut [E], own: Range<usize> },
    /// Allgather: the own block is `input`; every block lands in `output`.
    Gather { input: &'a [E], output: &'a mut [E], own: Range<usize> },
    /// Out-of-place allreduce: `output` starts as garbage and `fresh` says
    /// which of its ranges have not been written yet, so still live only
    /// in `input`. A range is read from `input` while it is fresh, copied
    /// into `output` when a hop must update it, and not copied at all when
    /// a hop overwrites it whole (the allgather's blocks). So the call
    /// touches each element in memory as often as in place, where a copy
    /// up front would cost one more pass over both buffers.
    OutOfPlace { input: &'a [E], output: &'a mut [E], fresh: Fresh },
}

impl<'a, E: Copy> Local<'a, E> {
    /// `output` takes the allreduce of `input`.
    pub fn out_of_place(input: &'a [E], output: &'a mut [E]) -> Self {
        debug_assert_eq!(input.len(), output.len());
        Local::OutOfPlace { fresh: Fresh::all(input.len()), input, output }
    }

    /// The values of elements `r`, for a hop that only reads them.
    pub fn read(&mut self, r: Range<usize>) -> &[E] {
        match self {
            Local::InPlace(b) => &b[r],
            Local::Scatter { input, output, own } => {
                if r.start >= own.start && r.end <= own.end {
                    &output[r.start - own.start..r.end - own.start]
                } else {
                    &input[r]
                }
            }
            Local::Gather { input, own, .. } => &input[r.start - own.start..r.end - own.start],
            Local::OutOfPlace { input, output, fresh } => {
                if fresh.covers(&r) {
                    &input[r]
                } else {
                    fresh.fill(r.clone(), input, output);
                    &output[r]
                }
            }
        }
    }

    /// Elements `r`, for a hop that reads and updates them.
    pub fn write(&mut self, r: Range<usize>) -> &mut [E] {
        match self.update(r) {
            Update::InPlace(b) => b,
            Update::Split(src, dst) => {
                dst.copy_from_slice(src);
                dst
            }
        }
    }

    /// Elements `r`, for a hop that reads each one once and then writes
    /// it: where they are all still fresh, out of place, the values come
    /// from the input and go to the output (`Update::Split`), so the hop
    /// needs no copy of the input first.
    pub fn update(&mut self, r: Range<usize>) -> Update<'_, E> {
        match self {
            Local::InPlace(b) => Update::InPlace(&mut b[r]),
            Local::Scatter { output, own, .. } => Update::InPlace(&mut output[r.start - own.start..r.end - own.start]),
            Local::Gather { output, .. } => Update::InPlace(&mut output[r]),
            Local::OutOfPlace { input, output, fresh } => {
                if fresh.covers(&r) {
                    fresh.take(r.clone(), |_| {});
                    Update::Split(&input[r.clone()], &mut output[r])
                } else {
                    fresh.fill(r.clone(), input, output);
                    Update::InPlace(&mut output[r])
                }
            }
        }
    }

    /// Elements `r`, for a hop that writes every one of them without
    /// reading any.
    pub fn overwrite(&mut self, r: Range<usize>) -> &mut [E] {
        match self {
            Local::OutOfPlace { output, fresh, .. } => {
                fresh.take(r.clone(), |_| {});
                &mut output[r]
            }
            _ => self.write(r),
        }
    }

    /// Copies what no hop wrote (everything, on one rank) into the output.
    pub fn settle(&mut self) {
        if let Local::OutOfPlace { input, output, fresh } = self {
            fresh.fill(0..input.len(), input, output);
        }
    }

    /// The buffer the call writes.
    pub fn output(&self) -> &[E] {
        match self {
            Local::InPlace(buf) => buf,
            Local::Scatter { output, .. } | Local::Gather { output, .. } | Local::OutOfPlace { output, .. } => output,
        }
    }

    pub fn is_in_place(&self) -> bool {
        matches!(self, Local::InPlace(_))
    }
}

/// Where a hop that updates elements reads and writes them.
pub(crate) enum Update<'a, E> {
    /// One slice, read and written.
    InPlace(&'a mut [E]),
    /// Read from the first, written to the second.
    Split(&'a [E], &'a mut [E]),
}

/// Disjoint ranges of elements, keyed by start. A call leaves at most one
/// fragment per hop, and a B-tree keeps each lookup logarithmic in them
/// (a 1 GiB ring call has thousands of hops).
#[derive(Debug, Default)]
pub(crate) struct Fresh(BTreeMap<usize, usize>);

impl Fresh {
    fn all(n: usize) -> Self {
        let mut m = BTreeMap::new();
        if n > 0 {
            m.insert(0, n);
        }
        Fresh(m)
    }

    /// Whether `r` is non-empty and lies inside one fresh range.
    fn covers(&self, r: &Range<usize>) -> bool {
        !r.is_empty() && self.0.range(..=r.start).next_back().is_some_and(|(_, &end)| end >= r.end)
    }

    /// Copies the fresh pieces of `r` from `input` into `output`, which
    /// then holds them.
    fn fill<E: Copy>(&mut self, r: Range<usize>, input: &[E], output: &mut [E]) {
        self.take(r, |p| output[p.clone()].copy_from_slice(&input[p]));
    }

    /// Removes `r` from the set, handing `each` every fresh piece of it.
    fn take(&mut self, r: Range<usize>, mut each: impl FnMut(Range<usize>)) {
        if r.is_empty() {
            return;
        }
        // The range that starts before `r` may reach into it.
        let before = self.0.range(..r.start).next_back().map(|(&s, &e)| (s, e)).filter(|&(_, e)| e > r.start);
        if let Some((s, e)) = before {
            each(r.start..e.min(r.end));
            self.0.insert(s, r.start);
            if e > r.end {
                self.0.insert(r.end, e);
            }
        }
        while let Some((&s, &e)) = self.0.range(r.start..r.end).next() {
            self.0.remove(&s);
            each(s..e.min(r.end));
            if e > r.end {
                self.0.insert(r.end, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(f: &Fresh) -> Vec<Range<usize>> {
        f.0.iter().map(|(&s, &e)| s..e).collect()
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, meant
    fn fresh_ranges_split_and_hand_out_exactly_what_they_held() {
        let mut f = Fresh::all(100);
        let mut got = Vec::new();
        f.take(10..20, |p| got.push(p));
        assert_eq!(got, [10..20]);
        assert_eq!(ranges(&f), [0..10, 20..100]);
        assert!(f.covers(&(20..100)) && f.covers(&(0..10)) && !f.covers(&(5..25)) && !f.covers(&(12..13)));
        got.clear();
        f.take(5..30, |p| got.push(p));
        assert_eq!(got, [5..10, 20..30]);
        assert_eq!(ranges(&f), [0..5, 30..100]);
        got.clear();
        f.take(0..100, |p| got.push(p));
        assert_eq!(got, [0..5, 30..100]);
        assert!(ranges(&f).is_empty());
        f.take(0..100, |_| panic!("nothing is left"));
        assert!(!Fresh::all(0).covers(&(0..0)));
    }

    #[test]
    fn out_of_place_reads_input_until_written_and_settles_the_rest() {
        let input: Vec<u32> = (0..64).collect();
        let mut output = vec![u32::MAX; 64];
        let mut l = Local::out_of_place(&input, &mut output);
        assert_eq!(l.read(0..8), &input[0..8]);
        l.write(4..12).iter_mut().for_each(|x| *x += 1000);
        // A read across a written and a fresh part sees both as they are.
        assert_eq!(l.read(0..16)[..8], [0, 1, 2, 3, 1004, 1005, 1006, 1007]);
        l.overwrite(20..30).fill(7);
        l.settle();
        let want: Vec<u32> = (0..64)
            .map(|i| {
                if (4..12).contains(&i) {
                    i + 1000
                } else if (20..30).contains(&i) {
                    7
                } else {
                    i
                }
            })
            .collect();
        assert_eq!(output, want);
    }
}
