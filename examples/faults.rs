//! One cell of the fault matrix under `mpirun`, one process per rank:
//! `RINGFUSE_FAULT=drop@1:1 mpirun -np 4 faults allreduce/ring`.
//! Every rank runs the collective while rank 1 spoils its second message,
//! checks its own outcome against the rules in `tests/common/faults.rs`,
//! and rank 0 prints the row and the verdict. Exits non-zero if any rule
//! is broken. `ci/faults.sh` runs the whole matrix.

#[path = "../tests/common/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::process::ExitCode;

use faults::{check_rank, run_one, verdict, Cell, COLLS, FAULTY, FAULT_MSG};
use mpi::traits::{Communicator as _, Destination as _, Source as _};
use ringfuse::transport::fault::{Fault, FaultKind};

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some(coll) = COLLS.into_iter().find(|c| c.to_string() == arg) else {
        eprintln!("usage: faults <{}>", COLLS.map(|c| c.to_string()).join("|"));
        return ExitCode::from(2);
    };
    let fault: Option<Fault> = std::env::var("RINGFUSE_FAULT").ok().and_then(|s| s.parse().ok());
    let Some(fault) = fault.filter(|f| f.rank == FAULTY && f.msg == FAULT_MSG) else {
        eprintln!("set RINGFUSE_FAULT=KIND@{FAULTY}:{FAULT_MSG} (the matrix's faulty rank and message)");
        return ExitCode::from(2);
    };
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let mut comm = mpi.world();
    let t = comm.defaults().timeout;
    let outcome = run_one(&mut comm, coll, t);
    let mine = check_rank(&fault.kind, coll, t, &outcome);
    let line = match &mine {
        Ok(c) => format!("{}{}{}", c.failed as u8, c.blamed as u8, c.text),
        Err(e) => format!("00BROKEN {e}"),
    };
    // Said by each rank for itself too: with `exit`, the gather below
    // cannot complete (its peer is gone) and only these lines remain.
    // One write, so that lines of different ranks do not interleave.
    let own = format!("rank {}: {}\n", comm.rank(), &line[2..]);
    let _ = std::io::Write::write_all(&mut std::io::stderr(), own.as_bytes());
    // Gather over plain MPI (the world, not ringfuse's communicator, which
    // may be poisoned by the fault).
    let world = mpi.universe().world();
    if world.rank() != 0 {
        world.process_at_rank(0).send(line.as_bytes());
        return if mine.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let mut lines = vec![line];
    for r in 1..world.size() {
        if r as usize == FAULTY && fault.kind == FaultKind::Exit {
            // It left the job at the fault and will never send its line.
            lines.push(format!("00r{r} exited"));
            continue;
        }
        lines.push(String::from_utf8_lossy(&world.process_at_rank(r).receive_vec::<u8>().0).into_owned());
    }
    let broken: Vec<&String> = lines.iter().filter(|l| l[2..].starts_with("BROKEN")).collect();
    let cells: Vec<Cell> = lines
        .iter()
        .map(|l| Cell { failed: &l[..1] == "1", blamed: &l[1..2] == "1", text: l[2..].to_string() })
        .collect();
    match verdict(&fault.kind, coll, t, &cells) {
        Ok(row) if broken.is_empty() => {
            println!("{row}");
            ExitCode::SUCCESS
        }
        Ok(row) => {
            println!("{row}\nBROKEN: {broken:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("BROKEN: {e}");
            ExitCode::FAILURE
        }
    }
}
