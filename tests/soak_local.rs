//! Soak: thousands of mixed collectives back to back on 4 in-process ranks
//! (random collective, algorithm, element type, codec, reduce op, size,
//! slots and slice size), every result checked on every rank against the
//! f64 reference bound of `ringfuse::verify`, and the ranks' results
//! compared bit for bit wherever they must agree.
//!
//! Short form by default (`cargo test`, so `ci/test.sh`); the long form by
//! hand: `RINGFUSE_SOAK_OPS=100000 cargo test --release --test soak_local -- --nocapture`.

mod common;

use std::time::Instant;

use common::{check_result, input, OPS};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use ringfuse::{Algorithm, AllreduceOpts, Codec, Communicator, DType, Element, ReduceOp};

const RANKS: usize = 4;
const SHORT_OPS: u64 = 1500;

#[derive(Clone, Copy, Debug)]
enum Coll {
    Allreduce(Algorithm),
    ReduceScatter,
    Allgather,
    Broadcast(usize),
    Barrier,
}

/// One call of the soak: the same on every rank (drawn from a shared seed).
#[derive(Clone, Debug)]
struct Call {
    coll: Coll,
    dtype: DType,
    codec: Codec,
    op: ReduceOp,
    count: usize,
    opts: AllreduceOpts,
    seed: u64,
}

fn draw(rng: &mut SmallRng) -> Call {
    let coll = match rng.random_range(0..20) {
        0..=3 => Coll::Allreduce(Algorithm::Ring),
        4..=6 => Coll::Allreduce(Algorithm::RecursiveDoubling),
        7..=9 => Coll::Allreduce(Algorithm::Auto),
        10..=12 => Coll::ReduceScatter,
        13..=15 => Coll::Allgather,
        16..=18 => Coll::Broadcast(rng.random_range(0..RANKS)),
        _ => Coll::Barrier,
    };
    let dtype = [DType::F32, DType::F32, DType::F32, DType::F64, DType::F16, DType::Bf16][rng.random_range(0..6)];
    // Lossy codecs narrow f32/f64 buffers; half buffers travel as they are.
    let codec = match dtype {
        DType::F32 | DType::F64 => [Codec::Native, Codec::Fp16, Codec::Bf16][rng.random_range(0..3)],
        _ => Codec::Native,
    };
    // Log-uniform sizes from empty to 128 Ki elements: most calls small,
    // as gradient buckets of a real model are, some large.
    let count = if rng.random_bool(0.05) { rng.random_range(0..RANKS) } else { 1 << rng.random_range(0..17) };
    let count = count + rng.random_range(0..=count / 3);
    let opts = AllreduceOpts::default()
        .codec(codec)
        .slots(rng.random_range(1..=4))
        .slice_bytes(64 << rng.random_range(0..12))
        .checksum(rng.random_bool(0.2));
    Call { coll, dtype, codec, op: OPS[rng.random_range(0..OPS.len())], count, opts, seed: rng.random() }
}

/// FNV-1a over a result's bits: what the ranks compare.
fn digest<E: Element>(v: &[E]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits_u64()).wrapping_mul(0x100_0000_01b3))
}

/// Runs `call` on this rank, checks the result against the reference, and
/// returns the digest the ranks must agree on (`None` where each rank holds
/// a different part, as in reduce-scatter).
fn run_call<E: Element>(comm: &Communicator, c: &Call, i: u64) -> Result<Option<u64>, String> {
    let (rank, n) = (comm.rank(), comm.size());
    let what = format!("call {i} {c:?}");
    let inputs = |len: usize| -> Vec<Vec<E>> { (0..n).map(|r| input::<E>(r, len, c.op, c.codec, c.seed)).collect() };
    let fail = |e: ringfuse::Error| format!("{what}: rank {rank}: {e}");
    // Broadcast and allgather move values, not sums: each element arrives
    // as it went through the wire once.
    let through = |x: E| E::from_f64(ringfuse::verify::through_wire(c.codec, E::DTYPE, x.to_f64()));
    match c.coll {
        Coll::Allreduce(algo) => {
            let ins = inputs(c.count);
            let mut v = ins[rank].clone();
            comm.allreduce_with(&mut v, c.op, &c.opts.clone().algorithm(algo)).map_err(fail)?;
            check_result(&ins, &v, c.op, c.codec, &what);
            Ok(Some(digest(&v)))
        }
        Coll::ReduceScatter => {
            let ins = inputs(c.count * n);
            let mut out = vec![E::from_f64(0.0); c.count];
            comm.reduce_scatter_with(&ins[rank], &mut out, c.op, &c.opts).map_err(fail)?;
            let mine: Vec<Vec<E>> = ins.iter().map(|v| v[rank * c.count..(rank + 1) * c.count].to_vec()).collect();
            check_result(&mine, &out, c.op, c.codec, &what);
            Ok(None)
        }
        Coll::Allgather => {
            let ins = inputs(c.count);
            let mut out = vec![E::from_f64(0.0); c.count * n];
            comm.allgather_with(&ins[rank], &mut out, &c.opts).map_err(fail)?;
            let want: Vec<E> = ins.iter().flatten().map(|&x| through(x)).collect();
            assert_eq!(digest(&out), digest(&want), "{what}: rank {rank}: allgather result differs");
            Ok(Some(digest(&out)))
        }
        Coll::Broadcast(root) => {
            let ins = inputs(c.count);
            let mut v = ins[rank].clone();
            comm.broadcast_with(&mut v, root, &c.opts).map_err(fail)?;
            let want: Vec<E> = ins[root].iter().map(|&x| through(x)).collect();
            assert_eq!(digest(&v), digest(&want), "{what}: rank {rank}: broadcast result differs");
            Ok(Some(digest(&v)))
        }
        Coll::Barrier => comm.barrier().map(|()| None).map_err(fail),
    }
}

#[test]
fn thousands_of_mixed_collectives_stay_exact_and_identical() {
    let ops: u64 = std::env::var("RINGFUSE_SOAK_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(SHORT_OPS);
    let t0 = Instant::now();
    let per_rank = ringfuse::local::run(RANKS, |comm| {
        let mut rng = SmallRng::seed_from_u64(0x50a6);
        let mut digests = Vec::with_capacity(ops as usize);
        let mut elements = 0u64;
        for i in 0..ops {
            let c = draw(&mut rng);
            elements += c.count as u64;
            let d = match c.dtype {
                DType::F32 => run_call::<f32>(&comm, &c, i),
                DType::F64 => run_call::<f64>(&comm, &c, i),
                DType::F16 => run_call::<half::f16>(&comm, &c, i),
                DType::Bf16 => run_call::<half::bf16>(&comm, &c, i),
            };
            digests.push(d.unwrap_or_else(|e| panic!("{e}")));
        }
        (digests, elements)
    });
    for (r, (d, _)) in per_rank.iter().enumerate().skip(1) {
        for (i, (a, b)) in per_rank[0].0.iter().zip(d).enumerate() {
            assert_eq!(a, b, "call {i}: rank {r}'s result differs in its bits from rank 0's");
        }
    }
    let compared = per_rank[0].0.iter().filter(|d| d.is_some()).count();
    println!(
        "soak: {ops} collectives on {RANKS} ranks, {} elements per rank, {compared} compared bit for bit \
         across ranks, every element within its bound, in {:.1} s",
        per_rank[0].1,
        t0.elapsed().as_secs_f64()
    );
}
