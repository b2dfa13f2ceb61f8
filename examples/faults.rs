//! One cell of the fault matrix under `mpirun`, one process per rank:
//! `mpirun -np 4 faults allreduce/ring drop last`. Every rank runs the
//! collective while the cell's rank spoils the cell's message (`mid`: rank
//! 1's second, `last`: rank 1's last, `root`: the broadcast root's
//! second), checks its own outcome against the rules in
//! `tests/common/faults.rs`, and the last rank (never the faulty one)
//! prints the row and the verdict
//! (collected through files in `FAULTS_DIR`: all ranks on one machine).
//! With `RINGFUSE_FAULT=KIND@1:1` set instead (`mid` only), the library
//! injects the fault itself, as it would for a user. Exits non-zero if
//! any rule is broken. `ci/faults.sh` runs the whole matrix.
//!
//! `mpirun -np 2 faults strays`: the cases of `tests/common/strays.rs`
//! (messages of an earlier call reaching a later one).
//!
//! `mpirun -np 3 faults forged [CASES]`: the property of
//! `tests/common/forged.rs` (any bytes in place of a message), CASES
//! deterministic cases (32), each on fresh communicators.

#[path = "../tests/common/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::process::ExitCode;

#[path = "../tests/common/strays.rs"]
mod strays;

#[path = "../tests/common/forged.rs"]
mod forged;

use faults::{check_rank, prepare, run_one, verdict, Cell, Spoil, COLLS, FAULTY, FAULT_MSG};
use ringfuse::transport::fault::Fault;

fn usage() -> ExitCode {
    eprintln!(
        "usage: faults <{}> KIND <mid|last|root>   (KIND as in RINGFUSE_FAULT: drop, delay=250ms, ...)\n       faults strays\n       faults forged [CASES]",
        COLLS.map(|c| c.to_string()).join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("strays") => return strays(),
        Some("forged") => return forged_cases(args.get(1).and_then(|c| c.parse().ok()).unwrap_or(32)),
        _ => {}
    }
    let [coll, kind, spoil] = &args[..] else { return usage() };
    let Some(coll) = COLLS.into_iter().find(|c| c.to_string() == *coll) else { return usage() };
    let Some(spoil) = Spoil::parse(spoil) else { return usage() };
    let Ok(Fault { kind, .. }) = format!("{kind}@0:0").parse::<Fault>() else { return usage() };
    let fault = Fault { rank: spoil.faulty(), msg: FAULT_MSG, kind };
    let from_env = std::env::var_os("RINGFUSE_FAULT").is_some();
    if from_env
        && (spoil != Spoil::Mid || ringfuse::env::settings().ok().and_then(|s| s.fault.clone()) != Some(fault.clone()))
    {
        eprintln!("RINGFUSE_FAULT must say {:?}@{FAULTY}:{FAULT_MSG}, and the cell be `mid`", fault.kind);
        return ExitCode::from(2);
    }
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let comm = mpi.world().expect("communicator");
    let t0 = comm.defaults().timeout;
    let prepared = if from_env { Ok((comm, t0)) } else { prepare(comm, &fault.kind, coll, spoil, t0) };
    let (mut comm, t) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("BROKEN: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run_one(&mut comm, coll, t);
    let mine = check_rank(&fault.kind, fault.rank, coll, &outcome);
    let line = match &mine {
        Ok(c) => c.to_line(),
        Err(e) => format!("000 0 0 BROKEN {e}"),
    };
    // One write, so that lines of different ranks do not interleave.
    let own = format!("rank {}: {}\n", comm.rank(), line.splitn(4, ' ').last().unwrap_or(""));
    let _ = std::io::Write::write_all(&mut std::io::stderr(), own.as_bytes());
    // The last rank collects the lines through files, not MPI: after `exit`
    // or `sigkill` Open MPI is not fault tolerant, and any MPI call
    // (finalize included) may hang on the departed peer. So then nobody
    // finalizes either.
    let code = |ok: bool| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let leave = |ok: bool| -> ExitCode {
        if fault.kind.ends_process() {
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
    if comm.rank() != comm.size() - 1 {
        // mpirun kills the job when a process leaves without finalizing:
        // with `exit` or `sigkill`, stay until the collector has its
        // verdict out.
        while fault.kind.ends_process() && !done.exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        return leave(mine.is_ok());
    }
    let mut lines = Vec::new();
    for r in 0..comm.size() {
        if r == fault.rank && fault.kind.ends_process() {
            // It left the job at the fault and never wrote its line.
            lines.push(Cell::gone(r).to_line());
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
    let cells: Vec<Cell> = lines.iter().filter_map(|l| Cell::from_line(l)).collect();
    let broken: Vec<&String> =
        lines.iter().filter(|l| Cell::from_line(l).is_none_or(|c| c.text.starts_with("BROKEN"))).collect();
    let ok = match verdict(&fault.kind, fault.rank, coll, t0, &cells) {
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

/// Both cases of `tests/common/strays.rs`, each on a fresh communicator;
/// every rank prints its line and fails on a broken rule.
fn strays() -> ExitCode {
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let mut ok = true;
    for case in [strays::duplicate_is_dropped, strays::late_abort_notice_ends_the_next_call] {
        let comm = mpi.world().expect("communicator");
        if comm.size() != 2 {
            eprintln!("faults strays: run it on 2 ranks");
            return ExitCode::from(2);
        }
        match case(comm) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                println!("BROKEN: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cases` cases of the forged-message property, the same in every
/// process (proptest's deterministic runner). Each rank checks its own
/// outcome; whether some rank saw the forgery is summed over a fresh
/// communicator. Prints one line per case on rank 0.
fn forged_cases(cases: usize) -> ExitCode {
    use proptest::strategy::{Strategy, ValueTree};
    let mpi = ringfuse::mpi::init().expect("MPI initialises");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut broken = 0;
    for case in 0..cases {
        let (msg, bytes) = forged::cases().new_tree(&mut runner).expect("a case").current();
        let len = bytes.len();
        let comm = mpi.world().expect("communicator");
        let rank = comm.rank();
        if comm.size() != forged::N {
            eprintln!("faults forged: run it on {} ranks", forged::N);
            return ExitCode::from(2);
        }
        let seen = forged::run_rank(comm, msg, bytes);
        let mine = forged::check_rank(rank, &seen);
        let tally = mpi.world().expect("communicator");
        let mut v = [seen.result.is_err() as u8 as f32, mine.is_err() as u8 as f32];
        tally.allreduce(&mut v, ringfuse::ReduceOp::Sum).expect("the tally");
        if let Err(e) = &mine {
            println!("BROKEN: case {case}: {e}");
        }
        if rank == 0 {
            let verdict = if v[0] == 0.0 { "BROKEN: a replaced message went unnoticed" } else { "ok" };
            println!("case {case}: message {msg} replaced by {len} bytes: {} ranks failed: {verdict}", v[0]);
        }
        if v[0] == 0.0 || v[1] > 0.0 {
            broken += 1;
        }
    }
    if broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
