//! The executor's receive path against a peer that sends anything at all:
//! rank 1 is not a ringfuse rank but raw bytes on the carrier, one message
//! forged near a valid one (a real header with any one byte changed, and
//! any length). Rank 1 sends nothing after it, so rank 0's call can never
//! succeed: it must end in an error naming rank 0 within its deadline,
//! whatever the bytes, never in a panic or a hang.

use std::time::Duration;

use proptest::prelude::*;
use ringfuse::op::{Collective, OpDesc};
use ringfuse::transport::local::{LocalTransport, LocalWorld};
use ringfuse::transport::Transport;
use ringfuse::wire::{Agreed, Header, HEADER};
use ringfuse::{Algorithm, AllreduceOpts, Codec, Communicator, DType, ReduceOp};

const COUNT: usize = 64;

fn forged() -> impl Strategy<Value = (usize, u8, usize)> {
    // (byte to change, its new value, bytes to send: mostly the right 176)
    (
        0usize..HEADER + COUNT * 2,
        any::<u8>(),
        prop_oneof![3 => Just(HEADER + COUNT * 2), 1 => 0usize..HEADER + COUNT * 4],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn a_forged_message_ends_the_call_in_an_error_naming_the_rank((at, to, len) in forged()) {
        let world = LocalWorld::new(2);
        let out = std::thread::scope(|s| {
            let w = world.clone();
            let victim = s.spawn(move || {
                let comm = Communicator::from_transport(Box::new(LocalTransport::new(w, 0))).unwrap();
                let opts = AllreduceOpts::default().algorithm(Algorithm::Ring).codec(Codec::Native)
                    .timeout(Duration::from_millis(200));
                let mut v = vec![1f32; COUNT];
                (comm.allreduce_with(&mut v, ReduceOp::Sum, &opts), v)
            });
            // Rank 1: the message rank 0's ring takes first (block 0 of the
            // reduce-scatter: the first half, 32 f32), with one byte
            // changed and a forged length.
            let mut t = LocalTransport::new(world.clone(), 1);
            t.reserve(1, 4 * (HEADER + COUNT * 4)).unwrap();
            let desc = OpDesc { kind: Collective::Allreduce, seq: 0, dtype: DType::F32, count: COUNT, op: Some(ReduceOp::Sum), codec: Codec::Native, root: None };
            let mut msg = vec![0u8; HEADER + COUNT * 4];
            let mut h = Header::new(&desc, 0, 0);
            h.agreed = Agreed { schedule: 1, slots: 4, scale_block: 0, slice: 65536 };
            h.write(&mut msg);
            for x in bytemuck::cast_slice_mut::<u8, f32>(&mut msg[HEADER..]) {
                *x = 1.0;
            }
            msg[at] = to;
            let len = len.min(msg.len());
            t.slot_mut(0)[..len].copy_from_slice(&msg[..len]);
            let _ = t.post_send(0, len, 0, 0);
            victim.join().unwrap()
        });
        match out {
            (Ok(()), v) => prop_assert!(false, "rank 0 finished a ring whose peer sent one message: {v:?}"),
            (Err(e), _) => prop_assert!(e.to_string().starts_with("rank 0"), "{e}"),
        }
    }
}
