//! One cell of the fault matrix under `mpirun`, one process per rank:
//! `RINGFUSE_FAULT=drop@1:1 mpirun -np 4 faults allreduce/ring`.
//! Every rank runs the collective while rank 1 spoils its second message,
//! checks its own outcome against the rules in `tests/common/faults.rs`,
//! and rank 0 prints the row and the verdict (collected through files in
//! `FAULTS_DIR`: all ranks on one machine). Exits non-zero if any rule
//! is broken. `ci/faults.sh` runs the whole matrix.

#[path = "../tests/common/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::process::ExitCode;

use faults::{check_rank, run_one, verdict, Cell, COLLS, FAULTY, FAULT_MSG};
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
    let mut comm = mpi.world().expect("communicator");
    let t = comm.defaults().timeout;
    let outcome = run_one(&mut comm, coll, t);
    let mine = check_rank(&fault.kind, FAULTY, coll, t, &outcome);
    let line = match &mine {
        Ok(c) => format!("{}{}{}", c.failed as u8, c.blamed as u8, c.text),
        Err(e) => format!("00BROKEN {e}"),
    };
    // One write, so that lines of different ranks do not interleave.
    let own = format!("rank {}: {}\n", comm.rank(), &line[2..]);
    let _ = std::io::Write::write_all(&mut std::io::stderr(), own.as_bytes());
    // Rank 0 collects the lines through files, not MPI: after `exit` Open
    // MPI is not fault tolerant, and any MPI call (finalize included) may
    // hang on the departed peer. So with `exit` nobody finalizes either.
    let code = |ok: bool| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let leave = |ok: bool| -> ExitCode {
        if fault.kind == FaultKind::Exit {
            std::process::exit(if ok { 0 } else { 1 });
        }
        code(ok)
    };
    let Some(dir) = std::env::var_os("FAULTS_DIR").map(std::path::PathBuf::from) else {
        eprintln!("set FAULTS_DIR to a directory all ranks share (ci/faults.sh does)");
        return leave(false);
    };
    let file = |r: usize| dir.join(format!("rank{r}.txt"));
    let tmp = dir.join(format!("rank{}.tmp", comm.rank()));
    if std::fs::write(&tmp, &line).and_then(|()| std::fs::rename(&tmp, file(comm.rank()))).is_err() {
        eprintln!("cannot write {}", file(comm.rank()).display());
        return leave(false);
    }
    let until = std::time::Instant::now() + 2 * t + std::time::Duration::from_secs(10);
    let done = dir.join("done");
    if comm.rank() != 0 {
        // mpirun kills the job when a process leaves without finalizing:
        // with `exit`, stay until rank 0 has its verdict out.
        while fault.kind == FaultKind::Exit && !done.exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        return leave(mine.is_ok());
    }
    let mut lines = Vec::new();
    for r in 0..comm.size() {
        if r == FAULTY && fault.kind == FaultKind::Exit {
            // It left the job at the fault and never wrote its line.
            lines.push(format!("00r{r} exited"));
            continue;
        }
        loop {
            if let Ok(l) = std::fs::read_to_string(file(r)) {
                lines.push(l);
                break;
            }
            if std::time::Instant::now() > until {
                println!("BROKEN: rank {r} never reported (hung?)");
                return leave(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let broken: Vec<&String> = lines.iter().filter(|l| l[2..].starts_with("BROKEN")).collect();
    let cells: Vec<Cell> = lines
        .iter()
        .map(|l| Cell { failed: &l[..1] == "1", blamed: &l[1..2] == "1", text: l[2..].to_string() })
        .collect();
    let ok = match verdict(&fault.kind, FAULTY, coll, t, &cells) {
        Ok(row) if broken.is_empty() => {
            println!("{row}");
            true
        }
        Ok(row) => {
            println!("{row}\nBROKEN: {broken:?}");
            false
        }
        Err(e) => {
            println!("BROKEN: {e}");
            false
        }
    };
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::fs::write(&done, "");
    leave(ok)
}
