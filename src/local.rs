//! In-process ranks: `n` threads, each with its own [`Communicator`], over
//! the same executor and kernels as MPI ranks.

use crate::comm::Communicator;
use crate::transport::local::{LocalTransport, LocalWorld};

/// Runs `f` on `n` ranks, each a thread with its own communicator, and
/// returns each rank's result in rank order.
///
/// If a rank panics, the others' waits are woken with an error (so they do
/// not sit out their deadline) and the panic is re-raised here.
///
/// ```
/// let sums = ringfuse::local::run(4, |comm| {
///     let mut v = vec![comm.rank() as f64; 10];
///     comm.allreduce(&mut v, ringfuse::ReduceOp::Sum).unwrap();
///     v[0]
/// });
/// assert_eq!(sums, vec![6.0; 4]);
/// ```
pub fn run<R, F>(n: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Communicator) -> R + Sync,
{
    assert!(n >= 1, "local::run needs at least one rank");
    let world = LocalWorld::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|rank| {
                let (world, f) = (world.clone(), &f);
                std::thread::Builder::new()
                    .name(format!("ringfuse-rank-{rank}"))
                    .spawn_scoped(s, move || {
                        let comm = Communicator::from_transport(Box::new(LocalTransport::new(world.clone(), rank)));
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(comm)));
                        if r.is_err() {
                            world.abort();
                        }
                        r
                    })
                    .expect("spawn rank thread")
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("rank thread")).collect();
        results.into_iter().map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}
