//! The fault matrix on in-process ranks: every fault against every
//! collective, 4 ranks, with rank 1's second message spoiled (mid-call),
//! its last message, and for broadcast the root's second message.
//! Prints the table (`--nocapture` to see it).

mod common;

use std::time::Duration;

use common::faults::{faults, judge, run_one, Coll, COLLS, FAULTY, FAULT_MSG};
use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::Communicator;

const T: Duration = Duration::from_millis(600);

/// Which message of which rank a cell spoils.
#[derive(Clone, Copy, Debug)]
enum Spoil {
    /// Rank 1's second send.
    Mid,
    /// Rank 1's last send of the collective.
    Last,
    /// The broadcast root's (rank 0's) second send.
    Root,
}

/// How many messages this rank sends in `coll`: one fault-free run
/// (results checked by the rules as any cell's), read off the flight
/// record.
fn sends(comm: &mut Communicator, coll: Coll) -> u64 {
    let o = run_one(comm, coll, T);
    assert!(o.result.is_ok() && o.correct, "{coll}: the fault-free run failed: {:?}", o.result);
    comm.flight_record().ops[0].msgs_sent as u64
}

fn matrix_row(kind: &FaultKind, coll: Coll, spoil: Spoil) -> Result<String, String> {
    let faulty = if let Spoil::Root = spoil { 0 } else { FAULTY };
    let outs = ringfuse::local::run(4, |mut comm| {
        let msg = match spoil {
            Spoil::Mid | Spoil::Root => FAULT_MSG,
            // Counted from the injection on: the next call's first send
            // follows the last one of this call.
            Spoil::Last => sends(&mut comm, coll).saturating_sub(1),
        };
        let mut comm = comm.inject_fault(Fault { rank: faulty, msg, kind: kind.clone() });
        run_one(&mut comm, coll, T)
    });
    judge(kind, faulty, coll, T, &outs).map(|row| format!("{row} {spoil:?} |"))
}

#[test]
fn every_fault_against_every_collective_ends_in_a_clear_error_in_time() {
    std::env::set_var("RINGFUSE_FLIGHT_ON_ERROR", "0");
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    // One thread per cell would oversubscribe a 2-core machine; the cells
    // are independent, so run them a few at a time.
    let mut cells: Vec<(FaultKind, Coll, Spoil)> = Vec::new();
    for k in faults(T) {
        for c in COLLS {
            cells.push((k.clone(), c, Spoil::Mid));
            cells.push((k.clone(), c, Spoil::Last));
        }
        cells.push((k, Coll::Broadcast, Spoil::Root));
    }
    for chunk in cells.chunks(4) {
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk.iter().map(|(k, c, w)| s.spawn(move || matrix_row(k, *c, *w))).collect();
            hs.into_iter().map(|h| h.join().expect("matrix cell")).collect()
        });
        for r in results {
            match r {
                Ok(row) => rows.push(row),
                Err(e) => wrong.push(e),
            }
        }
    }
    println!("| fault | collective | outcome per rank (time to return) | message spoiled |\n|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    assert!(wrong.is_empty(), "{} cells broke the rules:\n{}", wrong.len(), wrong.join("\n"));
}
