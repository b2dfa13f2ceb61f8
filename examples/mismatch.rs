//! Mismatched calls under `mpirun`: the last rank calls something other
//! than the rest, and every rank must fail fast with an error (never an MPI
//! abort, a hang or a wrong result). `ci/faults.sh` runs each kind:
//!
//! ```text
//! mpirun -np 3 mismatch count|dtype|slice|collective|late-start
//! ```
//! `count`: 1001 elements against 100000 (recursive doubling against the
//! ring as well);
//! `dtype`: f64 against f32 (messages twice as long); `slice`: 1 MiB
//! slices against 4 KiB (messages longer than the peer's receive slots);
//! `collective`: broadcast against allreduce; `late-start`: the last rank
//! starts 3 s late, and the others' start-up must fail at its deadline
//! (run it with `RINGFUSE_TIMEOUT_MS=1000`).
//!
//! The allreduces run the ring, not `Auto`: a mismatch is named by the
//! first rank that receives a message from a rank in another call, and
//! with other schedules the ranks that disagree may only ever wait for
//! each other (then every rank fails at its deadline, naming the peer it
//! waited for, but no rank can name both calls). Which schedule `Auto`
//! picks depends on the machine (its rule counts cores), so a test of the
//! message must not.
//!
//! Every rank must fail within its deadline (2 s here) plus a margin; most
//! fail within milliseconds. Under MPI one wait can run its whole deadline:
//! a rank blocked in a large (rendezvous) send to a peer that has already
//! left the call sees no abort notice until that send times out.
//!
//! `slice` needs `--mca btl_vader_single_copy_mechanism none`: Open MPI
//! 4.1.4's shared-memory single-copy path crashes the receiving process on
//! a truncated receive instead of returning `MPI_ERR_TRUNCATE`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringfuse::{Algorithm, AllreduceOpts, ReduceOp};

fn main() -> ExitCode {
    let kind = std::env::args().nth(1).unwrap_or_default();
    if !["count", "dtype", "slice", "collective", "late-start"].contains(&kind.as_str()) {
        eprintln!("usage: mismatch count|dtype|slice|collective|late-start");
        return ExitCode::from(2);
    }
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let world = ::mpi::traits::Communicator::size(&mpi.universe().world()) as usize;
    let me = ::mpi::traits::Communicator::rank(&mpi.universe().world()) as usize;
    if kind == "late-start" && me + 1 == world {
        std::thread::sleep(Duration::from_secs(3));
    }
    let t0 = Instant::now();
    let comm = match mpi.world() {
        Ok(c) => c,
        Err(e) => {
            println!("{e} (after {:.1?})", t0.elapsed());
            // A rank that never arrived may arrive later and wait in MPI's
            // own start-up calls, which MPI_Finalize would wait for: end
            // the job instead, as MPI programs do on a fatal error.
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            ::mpi::traits::Communicator::abort(&mpi.universe().world(), 1);
        }
    };
    let odd = comm.rank() + 1 == comm.size();
    let deadline = Duration::from_secs(2);
    let opts = AllreduceOpts::default().timeout(deadline).slice_bytes(4096).algorithm(Algorithm::Ring);
    let t0 = Instant::now();
    let mut v = vec![1f32; 100_000];
    let r = match (odd, kind.as_str()) {
        (true, "count") => {
            let doubling = opts.clone().algorithm(Algorithm::RecursiveDoubling);
            comm.allreduce_with(&mut v[..1001], ReduceOp::Sum, &doubling)
        }
        (true, "dtype") => comm.allreduce_with(&mut vec![1f64; 100_000], ReduceOp::Sum, &opts),
        (true, "slice") => comm.allreduce_with(&mut v, ReduceOp::Sum, &opts.clone().slice_bytes(1 << 20)),
        (true, _) => comm.broadcast_with(&mut v, 0, &opts),
        _ => comm.allreduce_with(&mut v, ReduceOp::Sum, &opts),
    };
    let took = t0.elapsed();
    let line = match &r {
        Ok(()) => format!("rank {}: Ok after {took:.1?}\n", comm.rank()),
        Err(e) => format!("rank {}: failed after {took:.1?}: {e}\n", comm.rank()),
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
    if r.is_ok() || took > deadline + Duration::from_secs(1) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
