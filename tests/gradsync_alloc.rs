//! "No allocation per step after the first": a counting allocator sees
//! every allocation of every thread (ranks, progress threads) while
//! GradSync steps run, after a first step has sized everything.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;

use ringfuse::{Codec, GradSync, GradSyncOpts};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steps_after_the_first_allocate_nothing() {
    let lens = [5000usize, 33, 120_000, 7, 2500];
    for codec in [Codec::Native, Codec::Fp16, Codec::Int8] {
        let barrier = Barrier::new(3);
        let counted = ringfuse::local::run(3, |comm| {
            let rank = comm.rank();
            let opts = GradSyncOpts::default().codec(codec).bucket_bytes(100_000);
            let mut sync = GradSync::new(comm, &lens, opts).unwrap();
            let mut g: Vec<Vec<f32>> = lens.iter().map(|&n| vec![rank as f32 * 0.25; n]).collect();
            let mut v: Vec<&mut [f32]> = g.iter_mut().map(|x| x.as_mut_slice()).collect();
            let mut step = || {
                for p in (0..lens.len()).rev() {
                    sync.mark_ready(p, v[p]).unwrap();
                }
                sync.wait(&mut v).unwrap();
            };
            step(); // sizes the slot pools and the channels
            barrier.wait();
            if rank == 0 {
                ALLOCS.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
            }
            barrier.wait();
            for _ in 0..10 {
                step();
            }
            barrier.wait();
            COUNTING.store(false, Ordering::SeqCst);
            ALLOCS.load(Ordering::SeqCst)
        });
        assert_eq!(counted[0], 0, "{codec}: allocations in 10 steps on 3 ranks");
    }
}
