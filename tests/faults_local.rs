//! The fault matrix on in-process ranks: every fault against every
//! collective, 4 ranks. Prints the table (`--nocapture` to see it).

mod common;

use std::time::Duration;

use common::faults::{faults, judge, run_one, Coll, COLLS, FAULTY, FAULT_MSG};
use ringfuse::transport::fault::{Fault, FaultKind};

const T: Duration = Duration::from_millis(600);

fn matrix_row(kind: &FaultKind, coll: Coll) -> Result<String, String> {
    let outs = ringfuse::local::run(4, |comm| {
        let mut comm = comm.inject_fault(Fault { rank: FAULTY, msg: FAULT_MSG, kind: kind.clone() });
        run_one(&mut comm, coll, T)
    });
    judge(kind, coll, T, &outs)
}

#[test]
fn every_fault_against_every_collective_ends_in_a_clear_error_in_time() {
    std::env::set_var("RINGFUSE_FLIGHT_ON_ERROR", "0");
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    // One thread per cell would oversubscribe a 2-core machine; the cells
    // are independent, so run them a few at a time.
    let cells: Vec<(FaultKind, Coll)> =
        faults(T).into_iter().flat_map(|k| COLLS.into_iter().map(move |c| (k.clone(), c))).collect();
    for chunk in cells.chunks(4) {
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk.iter().map(|(k, c)| s.spawn(move || matrix_row(k, *c))).collect();
            hs.into_iter().map(|h| h.join().expect("matrix cell")).collect()
        });
        for r in results {
            match r {
                Ok(row) => rows.push(row),
                Err(e) => wrong.push(e),
            }
        }
    }
    println!("| fault | collective | outcome per rank (time to return) |\n|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    assert!(wrong.is_empty(), "{} cells broke the rules:\n{}", wrong.len(), wrong.join("\n"));
}
