//! Processes launched by `mpirun`: initialise MPI once, get the world.

use std::any::Any;
use std::sync::Arc;

use ::mpi::environment::Universe;
use ::mpi::Threading;

use crate::comm::env::TransportChoice;
use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::transport::mpi::MpiTransport;

/// Keeps MPI initialised; MPI is finalised when this guard and every
/// communicator made from it are dropped.
pub struct Mpi {
    universe: Arc<Finalizer>,
    threading: Threading,
}

/// The universe, finalised on drop unless a carrier saw a rank lost
/// ([`crate::transport::peer_lost`]): Open MPI 4.1's `MPI_Finalize` then
/// may wait for the dead rank for ever (across hosts it always did: on
/// `ci/netsim.sh` a plain C program whose peer was killed under `mpirun
/// --enable-recovery` hung there, and one that exited without it ended
/// with status 0; on one host over shared memory 1 run in 12 hung), so
/// the survivors leave without it.
struct Finalizer(Option<Universe>);

impl Finalizer {
    fn universe(&self) -> &Universe {
        self.0.as_ref().expect("present until drop")
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        if crate::transport::peer_lost() {
            tracing::info!("ringfuse: a rank was lost: leaving without MPI_Finalize");
            std::mem::forget(self.0.take());
        }
    }
}

/// Initialises MPI (`MPI_Init_thread`, asking for
/// `MPI_THREAD_SERIALIZED`: ringfuse makes MPI calls from whichever thread
/// calls a collective, one at a time per communicator).
///
/// ```no_run
/// let mpi = ringfuse::mpi::init().unwrap();
/// let comm = mpi.world().unwrap();
/// let mut v = vec![1.0f32; 1 << 20];
/// comm.allreduce(&mut v, ringfuse::ReduceOp::Sum).unwrap();
/// assert_eq!(v[0], comm.size() as f32);
/// ```
pub fn init() -> Result<Mpi> {
    let (universe, threading) = ::mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::MpiInit("MPI is already initialised; use Communicator::from_mpi".into()))?;
    Ok(Mpi { universe: Arc::new(Finalizer(Some(universe))), threading })
}

impl Mpi {
    /// A communicator over all processes (a duplicate of `MPI_COMM_WORLD`).
    /// Collective: the ranks agree on `Algorithm::Auto`'s rule here, and
    /// probe its cost model if `RINGFUSE_TUNING` asks ([`crate::tuning`]).
    ///
    /// Fails with [`Error::Setting`] when a `RINGFUSE_*` variable holds a
    /// value it does not accept ([`crate::env`]).
    pub fn world(&self) -> Result<Communicator> {
        let keep: Arc<dyn Any + Send + Sync> = self.universe.clone();
        let world = self.universe.universe().world();
        arrive(&world)?;
        let per_host = ranks_per_host(&world);
        Communicator::tuned(carrier(&world, Some(keep), per_host)?, per_host)
    }

    /// The rsmpi universe, for the application's own MPI calls.
    pub fn universe(&self) -> &Universe {
        self.universe.universe()
    }

    /// The thread support MPI granted.
    pub fn threading(&self) -> Threading {
        self.threading
    }
}

// Built here rather than in `comm`, which sits below MPI start-up.
impl Communicator {
    /// A communicator on a duplicate of an existing rsmpi communicator. The
    /// caller must keep MPI initialised (its `Universe` alive) for as long
    /// as this communicator lives.
    ///
    /// Collective, with the deadline of a wait: every rank must arrive
    /// within it ([`Error::Startup`] otherwise); then the ranks agree on
    /// `Auto`'s rule, and probe its cost model if `RINGFUSE_TUNING` asks
    /// ([`crate::tuning`]).
    pub fn from_mpi<C: ::mpi::traits::Communicator>(comm: &C) -> Result<Self> {
        arrive(comm)?;
        let per_host = ranks_per_host(comm);
        Self::tuned(carrier(comm, None, per_host)?, per_host)
    }
}

/// The carrier, as `RINGFUSE_TRANSPORT` says (an unaccepted value is an
/// [`Error::Setting`], the same on every rank). Collective.
///
/// - unset or `auto`: shared memory when every rank is on one host (as
///   Open MPI and NCCL themselves carry messages inside a host), else MPI;
/// - `shm`: the same, but a warning when it cannot be had;
/// - `mpi`: MPI point-to-point always.
///
/// Shared memory falls back to MPI when setting it up fails on any rank
/// (another PID namespace per rank, no memfd), so every rank gets the
/// same carrier; the ranks also agree on trying it, in case their
/// environments differ.
pub(crate) fn carrier<C: ::mpi::traits::Communicator>(
    comm: &C,
    keep: Option<Arc<dyn Any + Send + Sync>>,
    per_host: usize,
) -> Result<Box<dyn crate::transport::Transport>> {
    use ::mpi::collective::SystemOperation;
    use ::mpi::traits::CommunicatorCollectives;
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let asked = crate::comm::env::settings_for(rank)?.transport;
    let one_host = size > 1 && per_host == size;
    let insist = asked == TransportChoice::Shm;
    let try_shm = asked != TransportChoice::Mpi && one_host;
    let mut agree = |ok: bool| {
        let mut all = 0i32;
        comm.all_reduce_into(&(ok as i32), &mut all, SystemOperation::min());
        all == 1
    };
    if insist && !one_host {
        tracing::warn!("ringfuse: RINGFUSE_TRANSPORT=shm needs every rank on one host; using MPI");
    }
    if agree(try_shm) {
        let mut share = |pid: u32, fd: i32, nonce: u64| {
            let mine = [pid as i64, fd as i64, nonce as i64];
            let mut all = vec![0i64; 3 * size];
            comm.all_gather_into(&mine[..], &mut all[..]);
            all.chunks(3).map(|c| (c[0] as u32, c[1] as i32, c[2] as u64)).collect()
        };
        let setup = crate::transport::shm::Setup { rank, size, share: &mut share, agree: &mut agree };
        match crate::transport::shm::ShmTransport::new(setup, keep.clone()) {
            Ok(t) => return Ok(Box::new(t)),
            Err(e) if insist => tracing::warn!("ringfuse: shared memory carrier unavailable ({e}); using MPI"),
            Err(e) => tracing::info!("ringfuse: shared memory carrier unavailable ({e}); using MPI"),
        }
    }
    let t = MpiTransport::new(comm, keep);
    let t = match liveness(comm, &mut agree)? {
        Some(mesh) => t.with_mesh(mesh),
        None => t,
    };
    Ok(if one_host { Box::new(t) } else { Box::new(t.with_message_bytes(ACROSS_HOSTS_SLICE_BYTES)) })
}

/// The MPI carrier's liveness connections ([`crate::transport::mesh`]),
/// if every rank could make them (else none, and a lost rank is found at
/// the deadline). Collective.
fn liveness<C: ::mpi::traits::Communicator>(
    comm: &C,
    agree: &mut dyn FnMut(bool) -> bool,
) -> Result<Option<crate::transport::mesh::Mesh>> {
    use crate::transport::mesh::{Mesh, MAX_RANKS, RECORD};
    use ::mpi::traits::CommunicatorCollectives;
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    if !(2..=MAX_RANKS).contains(&size) {
        return Ok(None);
    }
    // Reachable peers connect in milliseconds; a firewalled one should not
    // hold start-up for a whole deadline.
    let timeout = crate::AllreduceOpts::from_settings(crate::comm::env::settings_for(rank)?)
        .timeout
        .min(std::time::Duration::from_secs(10));
    let mut share = |mine: &[u8; RECORD]| {
        let mut all = vec![0u8; RECORD * size];
        comm.all_gather_into(&mine[..], &mut all[..]);
        all.chunks(RECORD).map(<[u8]>::to_vec).collect()
    };
    let mesh = Mesh::new(rank, size, &mut share, timeout);
    if let Err(e) = &mesh {
        tracing::warn!("ringfuse: rank {rank}: no liveness connections ({e}): a lost rank is found at the deadline");
    }
    Ok(if agree(mesh.is_ok()) { mesh.ok() } else { None })
}

/// Waits, within the deadline of a wait (`RINGFUSE_TIMEOUT_MS`, else
/// 300 s), until every rank of `comm` has started making a communicator.
/// Start-up's own collectives (the host split, the carrier's agreement)
/// are blocking MPI calls with no deadline of their own; once every rank
/// has arrived they complete promptly, so this non-blocking barrier is
/// their deadline. Collective.
pub(crate) fn arrive<C: ::mpi::traits::Communicator>(comm: &C) -> Result<()> {
    use ::mpi::traits::CommunicatorCollectives;
    let rank = comm.rank() as usize;
    let timeout = crate::AllreduceOpts::from_settings(crate::comm::env::settings_for(rank)?).timeout;
    let started = std::time::Instant::now();
    let mut req = comm.immediate_barrier();
    loop {
        match req.test() {
            Ok(_) => return Ok(()),
            Err(r) => req = r,
        }
        if started.elapsed() > timeout {
            // MPI cannot cancel a collective, and rsmpi's request must not
            // be dropped unfinished: it stays with MPI, which is finalised
            // when the process ends.
            std::mem::forget(req);
            return Err(Error::Startup {
                rank,
                detail: format!(
                    "not every one of {} ranks started making a communicator within {timeout:?} (RINGFUSE_TIMEOUT_MS): \
                     a rank failed or is late before mpi.world() / Communicator::from_mpi",
                    comm.size()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Message size over MPI between hosts. Open MPI's TCP transport sends
/// messages up to 64 KiB (its eager limit, headers included) at once and
/// larger ones only after a rendezvous round trip each. On `ci/netsim.sh`
/// (2026-11-26) 32 KiB slices instead of 256 KiB took the 16 MiB ring
/// from 195 to 144 ms on 2 hosts at 1 Gbit/s (the line allows 134) and
/// from 246 to 216 ms on 4, halving-doubling from 379 to 217 ms on 4, and
/// were as fast or faster at 10 Gbit/s. Inside one host Open MPI copies
/// large messages once through the kernel, and 256 KiB stays.
pub const ACROSS_HOSTS_SLICE_BYTES: usize = 32 << 10;

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
