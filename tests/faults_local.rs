//! The fault matrix on in-process ranks: every fault against every
//! collective, 4 ranks, with rank 1's second message spoiled (mid-call),
//! its last message, and for broadcast the root's second message.
//! Prints the table (`--nocapture` to see it).

mod common;

use std::time::Duration;

use common::faults::{faults, judge, prepare, run_one, Coll, Spoil, COLLS};
use ringfuse::transport::fault::FaultKind;
use ringfuse::Communicator;

/// Every wait's deadline in a cell, at least (see `prepare`).
const T: Duration = Duration::from_millis(600);

fn matrix_row(kind: &FaultKind, coll: Coll, spoil: Spoil) -> Result<String, String> {
    let outs = ringfuse::local::run(4, |comm| {
        let (mut comm, t) = prepare(comm, kind, coll, spoil, T)?;
        Ok(run_one(&mut comm, coll, t))
    });
    let outs = outs.into_iter().collect::<Result<Vec<_>, String>>()?;
    judge(kind, spoil.faulty(), coll, T, &outs).map(|row| format!("{row} {spoil:?} |"))
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

/// Both ranks' lines of one stray case, or what went wrong.
fn two_ranks(case: fn(Communicator) -> Result<String, String>) {
    std::env::set_var("RINGFUSE_FLIGHT_ON_ERROR", "0");
    let lines = ringfuse::local::run(2, case);
    let wrong: Vec<&String> = lines.iter().filter_map(|l| l.as_ref().err()).collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    println!("{lines:?}");
}

#[test]
fn a_duplicate_of_a_calls_last_message_is_dropped_by_name() {
    two_ranks(common::strays::duplicate_is_dropped);
}

#[test]
fn an_abort_notice_that_comes_after_the_call_ends_the_next_call_at_once() {
    two_ranks(common::strays::late_abort_notice_ends_the_next_call);
}
