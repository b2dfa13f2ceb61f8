//! The flight recorder on a real hang: one of 4 ranks falls behind while
//! the others wait, a watcher thread on every rank takes its flight record
//! mid-wait, and `flight::diagnose` must name the rank that fell behind.

use std::time::Duration;

use ringfuse::flight::{diagnose, FlightDump, OpState};
use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::{AllreduceOpts, Communicator, ReduceOp};

const SLOW: usize = 2;
/// Long enough that every rank is waiting when the records are taken, far
/// shorter than the deadline so nothing fails.
const BEHIND: Duration = Duration::from_millis(1500);
const LOOK_AT: Duration = Duration::from_millis(500);

/// Runs two allreduces on 4 ranks; `stall(comm)` runs on every rank just
/// before the second. Returns each rank's record taken mid-stall and
/// whether the calls succeeded.
fn records_mid_stall(fault: Option<Fault>, stall: impl Fn(&Communicator) + Sync) -> Vec<(FlightDump, bool)> {
    ringfuse::local::run(4, |comm| {
        let mut comm = match &fault {
            Some(f) => comm.inject_fault(f.clone()),
            None => comm,
        };
        comm.set_defaults(AllreduceOpts::default().timeout(Duration::from_secs(20)).slice_bytes(1024));
        let comm = &comm;
        let mut v = vec![1f32; 4096];
        let first = comm.allreduce(&mut v, ReduceOp::Sum).is_ok();
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                std::thread::sleep(LOOK_AT);
                comm.flight_record()
            });
            stall(comm);
            let second = comm.allreduce(&mut v, ReduceOp::Sum).is_ok();
            (watcher.join().expect("watcher"), first && second)
        })
    })
}

#[test]
fn a_rank_late_to_the_call_is_named() {
    let out = records_mid_stall(None, |comm| {
        if comm.rank() == SLOW {
            std::thread::sleep(BEHIND); // "user code" before the collective
        }
    });
    assert!(out.iter().all(|(_, ok)| *ok), "the calls themselves succeed once the slow rank arrives");
    let dumps: Vec<FlightDump> = out.into_iter().map(|(d, _)| d).collect();
    for d in &dumps {
        let last = d.ops.last().expect("records");
        if d.rank == SLOW {
            assert_eq!((last.seq, last.state), (0, OpState::Done), "rank {SLOW} has not entered #1: {last:?}");
        } else {
            assert_eq!((last.seq, last.state), (1, OpState::Running), "rank {} is stuck in #1: {last:?}", d.rank);
        }
    }
    let diag = diagnose(&dumps);
    println!("{}", diag.report);
    assert_eq!(diag.culprit, Some(SLOW), "{}", diag.report);
    assert!(diag.report.contains(&format!("verdict: rank {SLOW} fell behind")), "{}", diag.report);
}

#[test]
fn a_rank_stuck_inside_the_call_is_found_by_the_wait_chain() {
    // All ranks enter #1; rank 2's first send of it is held back, so its
    // successor waits on it and the others, transitively, on its successor.
    let sends_per_call = sends_of_one_allreduce();
    let fault = Fault { rank: SLOW, msg: sends_per_call, kind: FaultKind::Delay(BEHIND) };
    let out = records_mid_stall(Some(fault), |_| {});
    assert!(out.iter().all(|(_, ok)| *ok), "a delay inside the deadline fails nobody");
    let dumps: Vec<FlightDump> = out.into_iter().map(|(d, _)| d).collect();
    assert!(dumps.iter().all(|d| d.ops.last().map(|o| (o.seq, o.state)) == Some((1, OpState::Running))));
    let diag = diagnose(&dumps);
    println!("{}", diag.report);
    assert_eq!(diag.culprit, Some(SLOW), "{}", diag.report);
    assert!(diag.report.contains(&format!("verdict: rank {SLOW} is holding the others up")), "{}", diag.report);
}

/// Messages one rank sends in the test's allreduce, read from the record
/// of a clean run rather than derived from the schedule here.
fn sends_of_one_allreduce() -> u64 {
    let sent = ringfuse::local::run(4, |comm| {
        let mut v = vec![1f32; 4096];
        let opts = AllreduceOpts::default().slice_bytes(1024);
        comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).expect("clean run");
        comm.flight_record().ops[0].msgs_sent as u64
    });
    assert!(sent.iter().all(|s| *s == sent[0] && *s > 0), "{sent:?}");
    sent[0]
}

#[test]
fn a_rank_without_a_dump_is_named_and_dumps_survive_json() {
    let mut dumps = ringfuse::local::run(4, |comm| {
        let mut v = vec![1f32; 100];
        comm.allreduce(&mut v, ReduceOp::Sum).expect("clean run");
        comm.flight_record()
    });
    // What ringfuse-trace reads back is what was written.
    for d in &dumps {
        let back: FlightDump = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
        assert_eq!(&back, d);
    }
    assert_eq!(diagnose(&dumps).culprit, None, "all in step: nobody to blame");
    dumps.remove(3);
    let diag = diagnose(&dumps);
    assert_eq!((diag.culprit, diag.missing.clone()), (Some(3), vec![3]), "{}", diag.report);
}
