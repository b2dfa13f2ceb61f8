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
        Communicator::tuned(Box::new(MpiTransport::new(&self.universe.world(), Some(keep))), true)
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
