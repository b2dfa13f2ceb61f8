//! Which bucket each parameter's gradient lives in, and where.

/// Buckets of at most `bucket_elems` elements, filled in *reverse*
/// registration order (backward produces the last layer's gradients
/// first); a parameter larger than a bucket gets a bucket of its own.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    /// Per parameter: (bucket, offset in the bucket, length).
    pub place: Vec<(usize, usize, usize)>,
    /// Per bucket: elements, and how many parameters it holds.
    pub buckets: Vec<(usize, usize)>,
}

impl Layout {
    pub fn new(lens: &[usize], bucket_elems: usize) -> Layout {
        let mut place = vec![(0, 0, 0); lens.len()];
        let mut buckets: Vec<(usize, usize)> = Vec::new();
        for (p, &len) in lens.iter().enumerate().rev() {
            let last = buckets.len().wrapping_sub(1);
            match buckets.last_mut() {
                Some((fill, params)) if *fill + len <= bucket_elems || *fill == 0 => {
                    place[p] = (last, *fill, len);
                    *fill += len;
                    *params += 1;
                }
                _ => {
                    place[p] = (buckets.len(), 0, len);
                    buckets.push((len, 1));
                }
            }
        }
        Layout { place, buckets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_in_reverse_order_and_big_params_stand_alone() {
        let l = Layout::new(&[10, 20, 30, 100, 5], 50);
        // Reverse: 5, 100 (own bucket), 30 + 20 (50), 10.
        assert_eq!(l.buckets, vec![(5, 1), (100, 1), (50, 2), (10, 1)]);
        assert_eq!(l.place[4], (0, 0, 5));
        assert_eq!(l.place[3], (1, 0, 100));
        assert_eq!(l.place[2], (2, 0, 30));
        assert_eq!(l.place[1], (2, 30, 20));
        assert_eq!(l.place[0], (3, 0, 10));
        // Every element has exactly one place.
        let total: usize = l.buckets.iter().map(|b| b.0).sum();
        assert_eq!(total, 165);
        assert_eq!(Layout::new(&[], 50).buckets, vec![]);
    }
}
