//! Processes launched by `mpirun`: initialise MPI once, get the world.

use std::any::Any;
use std::sync::Arc;

use ::mpi::environment::Universe;
use ::mpi::Threading;

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::transport::mpi::MpiTransport;

/// Keeps MPI initialised; MPI is finalised when this guard and every
/// communicator made from it are dropped.
pub struct Mpi {
    universe: Arc<Universe>,
    threading: Threading,
}

/// Initialises MPI (`MPI_Init_thread`, asking for
/// `MPI_THREAD_SERIALIZED`: ringfuse makes MPI calls from whichever thread
/// calls a collective, one at a time per communicator).
///
/// ```no_run
/// let mpi = ringfuse::mpi::init().unwrap();
/// let comm = mpi.world();
/// let mut v = vec![1.0f32; 1 << 20];
/// comm.allreduce(&mut v, ringfuse::ReduceOp::Sum).unwrap();
/// assert_eq!(v[0], comm.size() as f32);
/// ```
pub fn init() -> Result<Mpi> {
    let (universe, threading) = ::mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::MpiInit("MPI is already initialised; use Communicator::from_mpi".into()))?;
    Ok(Mpi { universe: Arc::new(universe), threading })
}

impl Mpi {
    /// A communicator over all processes (a duplicate of `MPI_COMM_WORLD`).
    /// Collective: `Algorithm::Auto`'s cost model is probed here unless
    /// `RINGFUSE_TUNING` says otherwise ([`crate::tuning`]).
    pub fn world(&self) -> Communicator {
        let keep: Arc<dyn Any + Send + Sync> = self.universe.clone();
        let world = self.universe.world();
        Communicator::tuned(Box::new(MpiTransport::new(&world, Some(keep))), true, ranks_per_host(&world))
    }

    /// The rsmpi universe, for the application's own MPI calls.
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    /// The thread support MPI granted.
    pub fn threading(&self) -> Threading {
        self.threading
    }
}

/// Ranks per host of `comm` (MPI's shared-memory split), if every host has
/// the same number of consecutive ranks; else 0 (hosts unknown, and
/// [`crate::Algorithm::Hierarchical`] runs the ring). Collective.
pub(crate) fn ranks_per_host<C: ::mpi::traits::Communicator>(comm: &C) -> usize {
    use ::mpi::collective::SystemOperation;
    use ::mpi::traits::{Communicator as _, CommunicatorCollectives};
    let local = comm.split_shared(comm.rank());
    let (k, r) = (local.size(), comm.rank());
    // Consecutive and equal: local rank = rank mod k, on every rank.
    let mine = [k, if local.rank() == r % k { k } else { 0 }];
    let (mut lo, mut hi) = ([0i32; 2], [0i32; 2]);
    comm.all_reduce_into(&mine[..], &mut lo[..], SystemOperation::min());
    comm.all_reduce_into(&mine[..], &mut hi[..], SystemOperation::max());
    if lo == hi && lo[1] == k && comm.size() % k == 0 {
        k as usize
    } else {
        0
    }
}
