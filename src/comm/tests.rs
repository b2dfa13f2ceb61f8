use std::time::Duration;

use super::call::test_hooks;
use super::*;

/// The deadlock the executor's rounds prevent: with rendezvous sends,
/// walking whole steps stalls as soon as a block has more slices than
/// the receive and send windows hold; walking in rounds completes.
#[test]
fn rounds_prevent_the_rendezvous_deadlock() {
    let opts = AllreduceOpts::default().slice_bytes(256).slots(2).algorithm(Algorithm::Ring);
    // The walk that completes gets a deadline no loaded machine reaches;
    // the one that deadlocks a short one.
    let run = |step_major: bool| {
        let opts = opts.clone().timeout(Duration::from_millis(if step_major { 300 } else { 30_000 }));
        crate::local::run(2, |comm| {
            test_hooks::walk_step_major(step_major);
            let mut v = vec![1f32; 64 * 20]; // 10 slices per block
            comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).map(|_| v[0])
        })
    };
    assert!(run(false).iter().all(|r| matches!(r, Ok(x) if *x == 2.0)));
    assert!(run(true).iter().all(|r| matches!(r, Err(Error::Timeout { .. }))), "step-major walk should deadlock");
}

/// Calls whose output streams (by default those of half the
/// last-level cache and more), or whose messages do, give the bits of
/// calls that write through the cache, in place and out of place, for
/// every algorithm, element-wise codec and an odd rank count.
#[test]
fn calls_that_stream_their_output_or_messages_give_the_cached_bits() {
    use crate::cpu::stores::test_hooks::STREAM_FROM_BYTES;
    use crate::cpu::WireStores;
    use std::sync::atomic::Ordering::Relaxed;
    let run = |from: usize, wire: WireStores| {
        STREAM_FROM_BYTES.store(from, Relaxed);
        let mut all = Vec::new();
        for n in [2, 3] {
            all.push(crate::local::run(n, |mut comm| {
                comm.set_wire_stores(wire);
                let mut got = Vec::new();
                for algo in [Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling, Algorithm::RecursiveDoubling]
                {
                    for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
                        let o = AllreduceOpts::default().algorithm(algo).codec(codec).slice_bytes(4096);
                        let input: Vec<f32> =
                            (0..10007).map(|i| ((i * 7 + comm.rank()) % 1000) as f32 * 0.37).collect();
                        let mut out = vec![0f32; input.len()];
                        comm.allreduce_into_with(&input, &mut out, ReduceOp::Avg, &o).unwrap();
                        let mut inplace = input.clone();
                        comm.allreduce_with(&mut inplace, ReduceOp::Sum, &o).unwrap();
                        got.push((
                            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            inplace.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        ));
                    }
                }
                got
            }));
        }
        all
    };
    let cached = run(usize::MAX, WireStores::Cached);
    let streamed = run(1, WireStores::Cached);
    let wire_streamed = run(usize::MAX, WireStores::Streaming);
    let both = run(1, WireStores::Streaming);
    STREAM_FROM_BYTES.store(0, Relaxed);
    assert!(cached == streamed, "streaming the output changed a result");
    assert!(cached == wire_streamed, "streaming the messages changed a result");
    assert!(cached == both, "streaming both changed a result");
}

/// A call that leaves `slice_bytes` at 0 slices by its carrier's
/// message size; one that sets it, by its own.
#[test]
fn the_carrier_sizes_messages_unless_the_call_does() {
    use crate::transport::local::{LocalTransport, LocalWorld};
    let world = LocalWorld::new(2);
    let sends: Vec<(u32, u32, usize)> = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                let world = world.clone();
                s.spawn(move || {
                    let t = LocalTransport::new(world, rank).with_message_bytes(4096);
                    let comm = Communicator::from_transport(Box::new(t)).unwrap();
                    let ring = AllreduceOpts::default().algorithm(Algorithm::Ring);
                    // 256 KiB: a block of 128 KiB per rank and step.
                    let mut v = vec![1f32; 1 << 16];
                    comm.allreduce_with(&mut v, ReduceOp::Sum, &ring).unwrap();
                    assert!(v.iter().all(|&x| x == 2.0));
                    comm.allreduce_with(&mut v, ReduceOp::Sum, &ring.clone().slice_bytes(64 << 10)).unwrap();
                    assert!(v.iter().all(|&x| x == 4.0));
                    let ops = comm.flight_record().ops;
                    (ops[0].msgs_sent, ops[1].msgs_sent, comm.message_bytes(&ring))
                })
            })
            .collect();
        ranks.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Two steps (reduce-scatter, allgather) of a 128 KiB block: 32
    // messages each at 4 KiB, 2 at 64 KiB.
    assert_eq!(sends, vec![(64, 4, 4096); 2]);
}
