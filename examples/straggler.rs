//! A job with a straggler, for the flight recorder: every rank runs
//! allreduces in a loop, and at call `AT` rank `SLOW` spends `SECS` seconds
//! in "user code" first, while the others wait inside the collective.
//! `ci/trace.sh` signals the job mid-wait and checks that `ringfuse-trace`
//! names rank `SLOW` from the dumps.
//!
//! ```text
//! RINGFUSE_FLIGHT_DIR=/tmp/fl mpirun -np 4 straggler 2 5 3   # SLOW AT SECS
//! ```

use std::process::ExitCode;
use std::time::Duration;

use ringfuse::ReduceOp;

fn main() -> ExitCode {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (slow, at, secs) = (arg(1, 2) as usize, arg(2, 5), arg(3, 3));
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let comm = mpi.world().expect("communicator");
    let mut v = vec![1f32; 1 << 16];
    for call in 0..at + 3 {
        if call == at && comm.rank() == slow {
            std::thread::sleep(Duration::from_secs(secs));
        }
        if let Err(e) = comm.allreduce(&mut v, ReduceOp::Max) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if comm.rank() == 0 {
        println!(
            "straggler: {} calls done on {} ranks; rank {slow} was {secs} s late to call {at}",
            at + 3,
            comm.size()
        );
    }
    ExitCode::SUCCESS
}
