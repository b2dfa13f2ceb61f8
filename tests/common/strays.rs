//! Messages of an earlier call that reach a later one ("strays"), on two
//! ranks: each rank checks its own outcome. Shared by the in-process test
//! (`tests/faults_local.rs`) and the MPI example (`examples/faults.rs
//! strays`, over shared memory or MPI).
//!
//! - A duplicate of rank 1's last message of a call is dropped by rank 0
//!   (when its next wait on rank 1 lingers, over MPI), named in its
//!   flight record, and every later call is right.
//! - Rank 0's last message of a call is corrupted: rank 0 has finished
//!   the call when rank 1 finds out, so rank 1's abort notice reaches rank
//!   0 only in its next call. That call must fail at once, naming rank 1
//!   as the origin, not wait out its (long) deadline.

use std::time::{Duration, Instant};

use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::{Algorithm, AllreduceOpts, Communicator, Error, ReduceOp};

/// The next call's deadline in the late-notice case: far longer than the
/// failure may take ([`NOTICE_WITHIN`]).
pub const LONG: Duration = Duration::from_secs(30);
/// How soon the late notice must end the next call.
pub const NOTICE_WITHIN: Duration = Duration::from_secs(5);

fn opts() -> AllreduceOpts {
    // The ring, so every call receives from the other rank; one slice per
    // block, so each rank's last message leaves before its last receive.
    AllreduceOpts::default().algorithm(Algorithm::Ring).checksum(true).timeout(LONG)
}

/// Rank `rank`'s input of call `call`.
fn input(rank: usize, call: usize) -> Vec<f32> {
    (0..64).map(|i| ((rank + 1) * (i % 7 + call)) as f32).collect()
}

/// One allreduce: its result, and whether it is the exact sum.
fn call(comm: &Communicator, n: usize, k: usize, opts: &AllreduceOpts) -> (Result<(), Error>, bool) {
    let mut v = input(comm.rank(), k);
    let r = comm.allreduce_with(&mut v, ReduceOp::Sum, opts);
    let want: Vec<f32> = (0..64).map(|i| (0..n).map(|r| input(r, k)[i]).sum()).collect();
    (r, v == want)
}

/// Messages this rank sends in one call of [`opts`] (a fault-free call,
/// checked).
fn sends(comm: &Communicator) -> Result<u64, String> {
    let (r, ok) = call(comm, comm.size(), 0, &opts());
    if r.is_err() || !ok {
        return Err(format!("rank {}: the fault-free call failed: {r:?}", comm.rank()));
    }
    Ok(comm.flight_record().ops.last().map_or(0, |o| o.msgs_sent) as u64)
}

/// The duplicate case on this rank; a line saying what it saw.
pub fn duplicate_is_dropped(comm: Communicator) -> Result<String, String> {
    let (rank, n) = (comm.rank(), comm.size());
    let last = sends(&comm)?.saturating_sub(1);
    let comm = comm.inject_fault(Fault { rank: 1, msg: last, kind: FaultKind::Duplicate });
    for k in 1..=4 {
        if k == 2 && rank == 1 {
            // Over MPI the copy would never match a receive, and only a
            // wait that lingers probes for it: make rank 0's wait linger.
            std::thread::sleep(Duration::from_millis(100));
        }
        let (r, ok) = call(&comm, n, k, &opts());
        if r.is_err() || !ok {
            return Err(format!("rank {rank}: call {k} after a duplicate: {r:?}, exact sum: {ok}"));
        }
    }
    let strays: u32 = comm.flight_record().ops.iter().map(|o| o.strays).sum();
    let want = u32::from(rank == 0);
    if strays != want {
        return Err(format!("rank {rank}: dropped {strays} stray messages, expected {want}"));
    }
    Ok(format!("rank {rank}: 4 calls right after the duplicate, {strays} stray dropped"))
}

/// The late-notice case on this rank; a line saying what it saw.
pub fn late_abort_notice_ends_the_next_call(comm: Communicator) -> Result<String, String> {
    let (rank, n) = (comm.rank(), comm.size());
    let last = sends(&comm)?.saturating_sub(1);
    let comm = comm.inject_fault(Fault { rank: 0, msg: last, kind: FaultKind::Corrupt });
    let (first, _) = call(&comm, n, 1, &opts());
    match (rank, &first) {
        (0, Ok(())) | (1, Err(Error::Checksum { peer: 0, .. })) => {}
        _ => return Err(format!("rank {rank}: the spoiled call ended {first:?}, not as the case needs")),
    }
    let t0 = Instant::now();
    let (next, _) = call(&comm, n, 2, &opts());
    let took = t0.elapsed();
    match (rank, &next) {
        (0, Err(Error::PeerAborted { origin: 1, .. })) if took < NOTICE_WITHIN => {
            Ok(format!("rank 0: next call failed in {} ms: {}", took.as_millis(), next.as_ref().unwrap_err()))
        }
        (1, Err(Error::Poisoned { .. })) => Ok("rank 1: next call refused (poisoned)".into()),
        _ => Err(format!("rank {rank}: the next call ended after {took:?} with {next:?}")),
    }
}
