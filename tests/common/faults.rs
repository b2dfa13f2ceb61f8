//! The fault matrix: one collective on every rank while one rank's chosen
//! message is spoiled, and the rules every outcome must obey. Shared by the
//! in-process test (`tests/faults_local.rs`) and the MPI example
//! (`examples/faults.rs`, one process per rank).

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringfuse::transport::fault::{Fault, FaultKind};
use ringfuse::{Algorithm, AllreduceOpts, BufferState, Communicator, Error, ReduceOp};

/// The rank that misbehaves in most cells (a broadcast's root is the
/// other: `faulty` below is a parameter of every rule).
pub const FAULTY: usize = 1;
/// Index of the message it spoils (its second send: a fault mid-call);
/// other cells spoil its last.
pub const FAULT_MSG: u64 = 1;
/// The deadline of the fault-free run before each cell: a success path,
/// which a loaded machine must not fail.
pub const LONG: Duration = Duration::from_secs(30);
/// A cell's deadline is at least this many times its fault-free run, so
/// a machine slowed by load stretches the deadlines with it.
const SLACK: u32 = 25;

/// Which message of which rank a cell spoils.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    /// Rank 1's second send.
    Mid,
    /// Rank 1's last send of the collective.
    Last,
    /// The broadcast root's (rank 0's) second send.
    Root,
}

impl Spoil {
    pub const ALL: [Spoil; 3] = [Spoil::Mid, Spoil::Last, Spoil::Root];

    /// The rank that spoils it.
    pub fn faulty(self) -> usize {
        if self == Spoil::Root {
            0
        } else {
            FAULTY
        }
    }

    pub fn parse(s: &str) -> Option<Spoil> {
        Spoil::ALL.into_iter().find(|w| format!("{w:?}").eq_ignore_ascii_case(s))
    }
}

/// Sets one cell up on this rank: a fault-free run of `coll` (checked,
/// with its next call) whose time scales the cell's deadline, at least
/// `t`, and which counts this rank's sends for [`Spoil::Last`]; then the
/// fault, injected. Returns the communicator and the cell's deadline.
pub fn prepare(
    comm: Communicator,
    kind: &FaultKind,
    coll: Coll,
    spoil: Spoil,
    t: Duration,
) -> Result<(Communicator, Duration), String> {
    let mut comm = comm;
    let o = run_one(&mut comm, coll, LONG);
    if o.result.is_err() || !o.correct || !matches!(o.next, Some((Ok(()), _))) || !o.next_correct {
        return Err(format!("{coll}: rank {}'s fault-free run failed: {:?}", comm.rank(), o.result));
    }
    let sends = comm.flight_record().ops.iter().rev().nth(1).map_or(0, |op| op.msgs_sent as u64);
    let msg = match spoil {
        Spoil::Mid | Spoil::Root => FAULT_MSG,
        // Counted from the injection on: the next call's first send
        // follows the last one of this call.
        Spoil::Last => sends.saturating_sub(1),
    };
    let t = t.max(o.took * SLACK);
    Ok((comm.inject_fault(Fault { rank: spoil.faulty(), msg, kind: kind.clone() }), t))
}

/// Wall-clock nanoseconds: comparable across the processes of one host.
fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
/// Elements per call, and bytes per message: several slices per block.
pub const COUNT: usize = 6000;
pub const SLICE_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coll {
    AllreduceRing,
    AllreduceDoubling,
    ReduceScatter,
    Allgather,
    Broadcast,
    Barrier,
}

pub const COLLS: [Coll; 6] = [
    Coll::AllreduceRing,
    Coll::AllreduceDoubling,
    Coll::ReduceScatter,
    Coll::Allgather,
    Coll::Broadcast,
    Coll::Barrier,
];

impl fmt::Display for Coll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Coll::AllreduceRing => "allreduce/ring",
            Coll::AllreduceDoubling => "allreduce/doubling",
            Coll::ReduceScatter => "reduce_scatter",
            Coll::Allgather => "allgather",
            Coll::Broadcast => "broadcast",
            Coll::Barrier => "barrier",
        })
    }
}

/// The faults of the matrix, with the deadline `t` every wait has.
pub fn faults(t: Duration) -> Vec<FaultKind> {
    vec![
        FaultKind::Delay(t / 4),
        FaultKind::Delay(t * 5 / 2),
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Truncate,
        FaultKind::Corrupt,
        FaultKind::CorruptHeader,
        FaultKind::Kill,
    ]
}

pub fn fault_name(k: &FaultKind) -> String {
    match k {
        FaultKind::Delay(d) => format!("delay {} ms", d.as_millis()),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// What one rank saw.
pub struct Outcome {
    pub rank: usize,
    /// The call's deadline.
    pub deadline: Duration,
    /// When the call started and returned (wall clock, ns).
    pub entered_ns: u64,
    pub left_ns: u64,
    pub result: Result<(), Error>,
    pub took: Duration,
    /// The output differs from what the caller passed in.
    pub buffer_changed: bool,
    /// For a success: every element is the exact expected value.
    pub correct: bool,
    /// After a success, the next call (an allreduce), and how long it took:
    /// a fault can leave a stray message that only the next call can see.
    pub next: Option<(Result<(), Error>, Duration)>,
    /// The next call's result holds the exact sum on every element.
    pub next_correct: bool,
}

fn value(rank: usize, i: usize) -> f32 {
    ((rank + 1) * (i % 13)) as f32
}

/// Runs `coll` once on this rank with checksums on and deadline `t` (also
/// made the communicator's default, which `barrier` uses).
pub fn run_one(comm: &mut Communicator, coll: Coll, t: Duration) -> Outcome {
    let (rank, n) = (comm.rank(), comm.size());
    let opts = AllreduceOpts::default().timeout(t).slice_bytes(SLICE_BYTES).checksum(true);
    comm.set_defaults(opts.clone());
    let sum = |i: usize| (0..n).map(|r| value(r, i)).sum::<f32>();
    let entered_ns = wall_ns();
    let t0 = Instant::now();
    let (result, changed, correct) = match coll {
        Coll::AllreduceRing | Coll::AllreduceDoubling => {
            let algo = if coll == Coll::AllreduceRing { Algorithm::Ring } else { Algorithm::RecursiveDoubling };
            let input: Vec<f32> = (0..COUNT).map(|i| value(rank, i)).collect();
            let mut v = input.clone();
            let r = comm.allreduce_with(&mut v, ReduceOp::Sum, &opts.algorithm(algo));
            (r, v != input, v.iter().enumerate().all(|(i, x)| *x == sum(i)))
        }
        Coll::ReduceScatter => {
            let input: Vec<f32> = (0..COUNT * n).map(|i| value(rank, i)).collect();
            let mut out = vec![-1f32; COUNT];
            let r = comm.reduce_scatter_with(&input, &mut out, ReduceOp::Sum, &opts);
            (r, out.iter().any(|x| *x != -1.0), out.iter().enumerate().all(|(i, x)| *x == sum(rank * COUNT + i)))
        }
        Coll::Allgather => {
            let input: Vec<f32> = (0..COUNT).map(|i| value(rank, i)).collect();
            let mut out = vec![-1f32; COUNT * n];
            let r = comm.allgather_with(&input, &mut out, &opts);
            let ok = out.iter().enumerate().all(|(i, x)| *x == value(i / COUNT, i % COUNT));
            (r, out.iter().any(|x| *x != -1.0), ok)
        }
        Coll::Broadcast => {
            let input: Vec<f32> = (0..COUNT).map(|i| value(rank, i)).collect();
            let mut v = input.clone();
            let r = comm.broadcast_with(&mut v, 0, &opts);
            (r, v != input, v.iter().enumerate().all(|(i, x)| *x == value(0, i)))
        }
        Coll::Barrier => (comm.barrier(), false, true),
    };
    let took = t0.elapsed();
    let left_ns = wall_ns();
    // Each rank's own values, so a stray message taken for one of this
    // call's would change the sum, not vanish in a sum of ones.
    let mut next_correct = false;
    let next = result.is_ok().then(|| {
        let t1 = Instant::now();
        let mut v: Vec<f32> = (0..64).map(|i| value(rank, i)).collect();
        let r = comm.allreduce(&mut v, ReduceOp::Sum);
        next_correct = v.iter().enumerate().all(|(i, x)| *x == sum(i));
        (r, t1.elapsed())
    });
    Outcome {
        rank,
        deadline: t,
        entered_ns,
        left_ns,
        result,
        took,
        buffer_changed: changed,
        correct,
        next,
        next_correct,
    }
}

/// One rank's part of the verdict.
pub struct Cell {
    /// `r2 timeout(recv 1, step 1) 600ms`.
    pub text: String,
    /// This rank failed (in the call or the next one).
    pub failed: bool,
    /// This rank's error blames the faulty rank directly.
    pub blamed: bool,
    /// This rank's call returned Ok.
    pub call_ok: bool,
    /// When its call started and returned (wall clock, ns; 0: unknown).
    pub entered_ns: u64,
    pub left_ns: u64,
}

impl Cell {
    /// The cell as one line, for a rank of another process.
    pub fn to_line(&self) -> String {
        let (f, b, o) = (self.failed as u8, self.blamed as u8, self.call_ok as u8);
        format!("{f}{b}{o} {} {} {}", self.entered_ns, self.left_ns, self.text)
    }

    /// [`Self::to_line`] read back.
    pub fn from_line(l: &str) -> Option<Cell> {
        let mut it = l.splitn(4, ' ');
        let flags = it.next()?.as_bytes();
        let (entered_ns, left_ns) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
        let text = it.next()?.to_string();
        let flag = |i: usize| flags.get(i) == Some(&b'1');
        Some(Cell { text, failed: flag(0), blamed: flag(1), call_ok: flag(2), entered_ns, left_ns })
    }

    /// A rank that left the job and could not report.
    pub fn gone(rank: usize) -> Cell {
        Cell {
            text: format!("r{rank} exited"),
            failed: false,
            blamed: false,
            call_ok: false,
            entered_ns: 0,
            left_ns: 0,
        }
    }
}

/// Checks the rules one rank can check alone:
///
/// - a rank that succeeds holds exactly the right result;
/// - a surviving rank that fails does so within `2t + 1 s` (a wait that
///   began just before the fault may run its whole deadline), names itself,
///   and says truthfully whether its buffer was written.
pub fn check_rank(kind: &FaultKind, faulty: usize, coll: Coll, o: &Outcome) -> Result<Cell, String> {
    let t = o.deadline;
    let survivor = !(o.rank == faulty && (kind.ends_process() || *kind == FaultKind::Kill));
    let slow_by_design = o.rank == faulty && matches!(kind, FaultKind::Delay(_));
    let limit = 2 * t + Duration::from_secs(1);
    let blames = |e: &Error| e.blamed_rank() == Some(faulty) && !matches!(e, Error::PeerAborted { .. });
    let (entered_ns, left_ns) = (o.entered_ns, o.left_ns);
    let mut cell =
        Cell { text: String::new(), failed: false, blamed: false, call_ok: o.result.is_ok(), entered_ns, left_ns };
    match &o.result {
        Ok(()) if !o.correct => {
            return Err(format!("{coll}, {kind:?}: rank {} returned Ok with a wrong result", o.rank));
        }
        Ok(()) => cell.text = format!("r{} ok {:.0}ms", o.rank, o.took.as_secs_f64() * 1e3),
        Err(e) => {
            if survivor && !slow_by_design && o.took > limit {
                return Err(format!("{coll}, {kind:?}: rank {} took {:?} to fail: {e}", o.rank, o.took));
            }
            if o.buffer_changed && e.buffer() != BufferState::Partial {
                return Err(format!("{coll}, {kind:?}: rank {} wrote its buffer but says {e}", o.rank));
            }
            if !e.to_string().contains(&format!("rank {}", o.rank)) {
                return Err(format!("{coll}, {kind:?}: rank {}'s error does not name it: {e}", o.rank));
            }
            cell = Cell {
                text: format!("r{} {} {:.0}ms", o.rank, short(e), o.took.as_secs_f64() * 1e3),
                failed: true,
                blamed: blames(e),
                ..cell
            };
        }
    }
    if matches!(&o.next, Some((Ok(()), _))) && !o.next_correct {
        return Err(format!("{coll}, {kind:?}: rank {}'s next call returned Ok with a wrong result", o.rank));
    }
    if let Some((Err(e), took)) = &o.next {
        if *took > limit {
            return Err(format!("{coll}, {kind:?}: rank {}'s next call took {took:?} to fail: {e}", o.rank));
        }
        cell.failed = true;
        cell.blamed |= blames(e);
        cell.text.push_str(&format!(" then {} {:.0}ms", short(e), took.as_secs_f64() * 1e3));
    }
    Ok(cell)
}

/// The rules that need every rank: a harmful fault is blamed on the faulty
/// rank by some rank's error (in the call or, for a stray message, in the
/// next call); a delay shorter than the deadline `t` fails nobody; a
/// barrier that returns Ok on a rank returns after every rank entered it.
///
/// One fault may pass unseen: a duplicate of a call's *last* message when
/// every rank got the right result. The copy carries the finished call's
/// tag: a later receive from that peer drops it by name (see
/// `ringfuse::transport::Stray`), and it changes nothing.
pub fn verdict(kind: &FaultKind, faulty: usize, coll: Coll, t: Duration, cells: &[Cell]) -> Result<String, String> {
    if coll == Coll::Barrier {
        let last_in = cells.iter().map(|c| c.entered_ns).max().unwrap_or(0);
        if let Some(c) = cells.iter().find(|c| c.call_ok && c.left_ns < last_in) {
            return Err(format!(
                "barrier, {kind:?}: {} returned Ok {} us before the last rank entered",
                c.text,
                (last_in - c.left_ns) / 1000
            ));
        }
    }
    let all_ok = cells.iter().all(|c| !c.failed);
    if *kind == FaultKind::Duplicate && all_ok {
        let texts: Vec<&str> = cells.iter().map(|c| c.text.as_str()).collect();
        return Ok(format!(
            "| {} | {} | {} (stray copy dropped or never reached) |",
            fault_name(kind),
            coll,
            texts.join(", ")
        ));
    }
    let harmless = matches!(kind, FaultKind::Delay(d) if *d < t);
    let texts: Vec<&str> = cells.iter().map(|c| c.text.as_str()).collect();
    let failed = cells.iter().filter(|c| c.failed).count();
    if harmless && failed > 0 {
        return Err(format!("{coll}, {kind:?}: a delay shorter than the deadline failed {failed} ranks: {texts:?}"));
    }
    if !harmless && !cells.iter().any(|c| c.blamed) {
        return Err(format!("{coll}, {kind:?}: {failed} ranks failed and none blamed rank {faulty}: {texts:?}"));
    }
    Ok(format!("| {} | {} | {} |", fault_name(kind), coll, texts.join(", ")))
}

/// Both checks over the outcomes of all ranks; returns the table row.
pub fn judge(kind: &FaultKind, faulty: usize, coll: Coll, t: Duration, outs: &[Outcome]) -> Result<String, String> {
    let cells = outs.iter().map(|o| check_rank(kind, faulty, coll, o)).collect::<Result<Vec<_>, _>>()?;
    verdict(kind, faulty, coll, t, &cells)
}

/// The error's kind and, where it has one, the peer and step.
pub fn short(e: &Error) -> String {
    match e {
        Error::Timeout { peer, step, dir, .. } => {
            format!("timeout({} {peer}, step {step})", if *dir == "send to" { "send" } else { "recv" })
        }
        Error::Protocol { peer, step, .. } => format!("protocol(peer {peer}, step {step})"),
        Error::Checksum { peer, step, slice, .. } => format!("checksum(peer {peer}, step {step}, slice {slice})"),
        Error::Mismatch { peer, .. } => format!("mismatch(peer {peer})"),
        Error::PeerAborted { peer, origin, .. } => format!("peer-aborted(via {peer}, origin {origin})"),
        Error::PeerLost { lost, .. } => format!("lost(rank {lost})"),
        Error::Transport { peer, .. } => format!("transport(peer {peer})"),
        other => format!("{other}"),
    }
}
