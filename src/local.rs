//! In-process ranks: `n` threads, each with its own [`Communicator`], over
//! the same executor and kernels as MPI ranks.

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::transport::local::{LocalTransport, LocalWorld};

/// Runs `f` on `n` ranks, each a thread with its own communicator, and
/// returns each rank's result in rank order (nothing for `n == 0`).
///
/// If a rank panics, the others' waits are woken with an error (so they do
/// not sit out their deadline) and the panic is re-raised here.
///
/// # Panics
///
/// Where [`try_run`] returns an error: when a `RINGFUSE_*` variable holds
/// a value it does not accept, so no communicator can be made.
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
    try_run(n, f).unwrap_or_else(|e| panic!("ringfuse::local::run: {e}"))
}

/// [`run`], with the error that stops any communicator being made (an
/// unaccepted `RINGFUSE_*` value, [`crate::env`]) returned instead of
/// raised; `f` then runs on no rank.
pub fn try_run<R, F>(n: usize, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(Communicator) -> R + Sync,
{
    crate::env::settings()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let world = LocalWorld::new(n);
    std::thread::scope(|s| {
        let spawned: Vec<_> = (0..n)
            .map(|rank| {
                let (world, f) = (world.clone(), &f);
                std::thread::Builder::new().name(format!("ringfuse-rank-{rank}")).spawn_scoped(s, move || {
                    let comm = Communicator::from_transport(Box::new(LocalTransport::new(world.clone(), rank)));
                    let r = comm.map(|comm| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(comm))));
                    if !matches!(r, Ok(Ok(_))) {
                        world.abort();
                    }
                    r
                })
            })
            .collect();
        let mut results = Vec::with_capacity(n);
        let mut first_err = None;
        for h in spawned {
            match h {
                Ok(h) => match h.join() {
                    Ok(Ok(Ok(r))) => results.push(r),
                    Ok(Ok(Err(panic))) | Err(panic) => std::panic::resume_unwind(panic),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                },
                Err(e) => {
                    // The threads already started see the abort and end.
                    world.abort();
                    first_err.get_or_insert(Error::Setting {
                        rank: None,
                        name: "local::run ranks".into(),
                        value: n.to_string(),
                        expected: format!("as many threads as the system can start ({e})"),
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(results),
        }
    })
}
