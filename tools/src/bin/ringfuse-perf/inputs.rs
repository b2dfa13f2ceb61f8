//! Inputs every rank can regenerate for every other rank, so the f64
//! reference needs no communication: a counter-based hash of
//! (seed, rank, index). Never zero, so a lost contribution shows.

use ringfuse::ReduceOp;

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Element `i` of rank `rank`'s input for row `seed`: magnitude in
/// [0.25, 1) with a random sign; near 1 for products, so 2^k ranks'
/// product neither overflows nor vanishes.
pub fn value(seed: u64, rank: usize, i: usize, op: ReduceOp) -> f64 {
    let h = mix(seed ^ mix((rank as u64) << 40 ^ i as u64));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    match op {
        ReduceOp::Prod => 0.9 + 0.2 * u,
        _ => {
            let m = 0.25 + 0.75 * u;
            if h & 1 == 0 {
                m
            } else {
                -m
            }
        }
    }
}

/// An upper bound on every `|value(.., op)|`: each rank's peak, as the
/// block-scaled codecs' error bound needs it.
pub fn peak(op: ReduceOp) -> f64 {
    if op == ReduceOp::Prod {
        1.1
    } else {
        1.0
    }
}
