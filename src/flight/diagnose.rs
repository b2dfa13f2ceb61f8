//! Merges the dumps of all ranks and names the rank that fell behind.

use std::fmt::Write as _;

use super::dump::{FlightDump, OpRecord, OpState};

/// What the merged dumps say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The rank the others wait for, if one can be named.
    pub culprit: Option<usize>,
    /// Ranks of the communicator with no dump (dead, or not dumped).
    pub missing: Vec<usize>,
    /// A per-rank table and the verdict, for people.
    pub report: String,
}

fn latest(d: &FlightDump) -> Option<&OpRecord> {
    d.ops.iter().max_by_key(|o| o.seq)
}

/// The peer a record is blocked on, parsed back from its `waiting` text.
fn waits_on(o: &OpRecord) -> Option<usize> {
    let w = o.waiting.as_deref()?;
    let rest = w.split("peer ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Names the first rank that fell behind.
///
/// 1. A rank with no dump is named first: it is most likely dead.
/// 2. Otherwise, if ranks are at different collectives, the one at the
///    oldest collective is behind (it has not called what the others wait
///    in).
/// 3. Otherwise follow "waiting to receive from peer X" from rank to rank:
///    the chain ends at the rank that waits for nobody, the one holding
///    everybody up (slow, stuck in user code, or sending garbage).
pub fn diagnose(dumps: &[FlightDump]) -> Diagnosis {
    let size = dumps.iter().map(|d| d.size).max().unwrap_or(0);
    let by_rank = |r: usize| dumps.iter().find(|d| d.rank == r);
    let missing: Vec<usize> = (0..size).filter(|&r| by_rank(r).is_none()).collect();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{:>5}  {:<44} {:<8} {:>9} {:>7}  waiting",
        "rank", "latest collective", "state", "step", "msgs"
    );
    for r in 0..size {
        match by_rank(r).and_then(|d| latest(d).map(|o| (d, o))) {
            Some((_, o)) => {
                let _ = writeln!(
                    report,
                    "{r:>5}  {:<44} {:<8} {:>9} {:>7}  {}",
                    o.op,
                    format!("{:?}", o.state).to_lowercase(),
                    format!("{}/{}", o.step, o.steps),
                    o.msgs_recv + o.msgs_sent,
                    o.waiting.as_deref().unwrap_or("-")
                );
            }
            None if by_rank(r).is_some() => {
                let _ = writeln!(report, "{r:>5}  (no collective yet)");
            }
            None => {
                let _ = writeln!(report, "{r:>5}  (no dump)");
            }
        }
    }
    let culprit = if let Some(&m) = missing.first() {
        let _ = writeln!(report, "verdict: rank {m} left no dump: it is likely dead or was never reached");
        Some(m)
    } else {
        by_seq(dumps, &mut report).or_else(|| by_chain(dumps, &mut report))
    };
    Diagnosis { culprit, missing, report }
}

fn by_seq(dumps: &[FlightDump], report: &mut String) -> Option<usize> {
    let seq_of = |d: &FlightDump| latest(d).map_or(-1, |o| o.seq as i64);
    let newest = dumps.iter().map(seq_of).max()?;
    let behind = dumps.iter().filter(|d| seq_of(d) < newest).min_by_key(|d| (seq_of(d), d.rank))?;
    let ahead = dumps.iter().find(|d| seq_of(d) == newest).and_then(latest)?;
    let _ = writeln!(
        report,
        "verdict: rank {} fell behind: its latest collective is seq {} while others are in {}",
        behind.rank,
        seq_of(behind),
        ahead.op
    );
    Some(behind.rank)
}

fn by_chain(dumps: &[FlightDump], report: &mut String) -> Option<usize> {
    let running =
        |r: usize| dumps.iter().find(|d| d.rank == r).and_then(latest).filter(|o| o.state == OpState::Running);
    let start = dumps.iter().find(|d| running(d.rank).is_some_and(|o| waits_on(o).is_some()))?;
    let mut at = start.rank;
    let mut seen = vec![at];
    while let Some(next) = running(at).and_then(waits_on) {
        if seen.contains(&next) {
            let _ = writeln!(report, "verdict: ranks {seen:?} wait on each other in a cycle; no single rank is behind");
            return None;
        }
        seen.push(next);
        at = next;
    }
    let why = match running(at) {
        Some(o) => format!("it is in {} but waits on no message (busy, or stuck in a send or in user code)", o.op),
        None => "it is not inside the collective the others wait in".to_string(),
    };
    let chain: Vec<String> = seen.iter().map(|r| r.to_string()).collect();
    let _ = writeln!(report, "verdict: rank {at} is holding the others up (wait chain {}): {why}", chain.join(" -> "));
    Some(at)
}
