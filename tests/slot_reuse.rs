//! The executor's slot pool: a slot whose message a peer has just read
//! is taken again last, so a call never writes its messages over lines
//! the reader may still hold (see `exec::run_hops`). Checked by recording
//! which slots each call sends from.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ringfuse::transport::local::{LocalTransport, LocalWorld};
use ringfuse::transport::{Deadline, SlotId, Transport, WaitError};
use ringfuse::{Algorithm, AllreduceOpts, Communicator, ReduceOp};

/// A carrier that records the slot of every send.
struct Recording {
    inner: LocalTransport,
    sent: Arc<Mutex<Vec<SlotId>>>,
}

impl Transport for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String> {
        self.inner.reserve(count, bytes)
    }
    fn slot_bytes(&self) -> usize {
        self.inner.slot_bytes()
    }
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        self.inner.slot_mut(id)
    }
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.inner.slot_pair(a, b)
    }
    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        self.sent.lock().unwrap().push(id);
        self.inner.post_send(id, len, peer, tag)
    }
    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        self.inner.post_recv(id, peer, tag)
    }
    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError> {
        self.inner.wait(id, deadline, abort)
    }
    fn cancel_all(&mut self) {
        self.inner.cancel_all()
    }
}

#[test]
fn a_call_sends_from_slots_the_call_before_did_not_use() {
    let world = LocalWorld::new(2);
    let sent: Vec<Arc<Mutex<Vec<SlotId>>>> = (0..2).map(|_| Arc::default()).collect();
    let per_call: Vec<Vec<Vec<SlotId>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                let t = Recording { inner: LocalTransport::new(world.clone(), rank), sent: sent[rank].clone() };
                let log = sent[rank].clone();
                s.spawn(move || {
                    let comm = Communicator::from_transport(Box::new(t)).unwrap();
                    // One message per hop, 4 in flight: a pool of 10 slots.
                    let opts = AllreduceOpts::default().algorithm(Algorithm::Ring).slots(4);
                    (0..4)
                        .map(|_| {
                            let mut v = vec![1f32; 1000];
                            comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).unwrap();
                            assert!(v.iter().all(|x| *x == 2.0));
                            std::mem::take(&mut *log.lock().unwrap())
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, calls) in per_call.iter().enumerate() {
        for w in calls.windows(2) {
            assert!(!w[0].is_empty(), "rank {rank} sent nothing");
            assert!(
                w[1].iter().all(|id| !w[0].contains(id)),
                "rank {rank}: a call sent from {:?} right after one sent from {:?}",
                w[1],
                w[0]
            );
        }
    }
}
