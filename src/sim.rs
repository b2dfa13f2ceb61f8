//! The scale model: runs the real allreduce schedules, hop by hop in the
//! executor's own order ([`Cursor`]), over a simulated cluster with a
//! latency-bandwidth cost per link, and predicts the time of a collective
//! on more ranks than exist here (8 to 4096 and beyond).
//!
//! The cluster is `ranks / ranks_per_host` hosts; ranks on one host talk
//! over `intra` (shared memory), others over `inter` (the network), one
//! network port per host shared by its ranks, one memory port per rank. A
//! message of `b` bytes starts when its sender is at that hop and both
//! ports are free, holds both for `b / bytes_per_s`, and arrives
//! `latency_s` later; a hop costs its rank `elements * 4 / reduce_bytes_per_s`
//! of kernel time (the fused pass reads and writes `f32`). Sends do not
//! block their sender (the slot window is not modelled), and each pair of
//! ranks delivers in order, as MPI does.
//!
//! Three effects of real links and hosts are optional, because the test
//! cluster of `ci/netsim.sh` has all three and a datacenter has none to the
//! same degree:
//! - a token bucket per port ([`Link::burst_bytes`]): a shaped link (Linux
//!   `tbf`) lets a burst through at once after it has been idle, and only
//!   then holds the rate; what a call finds in the bucket depends on the
//!   calls before, so with one the model replays a benchmark's calls a
//!   barrier apart and predicts the median of the timed ones;
//! - CPU time per message at each end ([`Cluster::overhead_s`], LogP's
//!   `o`) and the cores the ranks share ([`Cluster::cpus`]): namespaces on
//!   one machine run all their ranks on its few cores, so a round in which
//!   every rank sends waits for the cores, where a chain of one message at
//!   a time does not;
//! - a base latency per call ([`Cluster::call_s`]): on `ci/netsim.sh`'s 2
//!   hosts a one-round schedule takes 38-48 us where a two-round one takes
//!   52-55, a cost per call that no latency per round reproduces.
//!
//! Because it replays real schedules, the model also checks them at any
//! size: a receive that no send ever matches ends the run with
//! [`SimError::Deadlock`], and a message left unreceived with
//! [`SimError::Stray`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::schedule::Algorithm;
use crate::schedule::{self, AnySchedule, Cursor, Hop, Prim, Shape};

/// One kind of link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Seconds from a message's last byte leaving to its arrival
    /// (propagation and per-message software cost).
    pub latency_s: f64,
    /// Bytes per second through one port.
    pub bytes_per_s: f64,
    /// Token bucket of the port, bytes (0: none, every byte at the rate).
    /// It starts full; with a bucket, [`predict`] replays the benchmark's
    /// calls a barrier apart ([`Plan::warmup`], [`Plan::timed`]).
    pub burst_bytes: f64,
}

/// The simulated machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cluster {
    /// Ranks in all.
    pub ranks: usize,
    /// Ranks per host (consecutive ranks share a host).
    pub ranks_per_host: usize,
    /// Between ranks of one host.
    pub intra: Link,
    /// Between hosts.
    pub inter: Link,
    /// Bytes per second the fused kernel processes (of `f32` data).
    pub reduce_bytes_per_s: f64,
    /// CPU seconds a message costs its sender and again its receiver.
    pub overhead_s: f64,
    /// Seconds every call costs before its first hop, whatever its size or
    /// schedule: the library's entry and the ranks' start after a
    /// barrier. NCCL's tuning model has the same term (a base latency per
    /// algorithm and protocol, beside a latency per step).
    pub call_s: f64,
    /// Cores all ranks share for that CPU time and the kernels (0: a core
    /// per rank, no contention).
    pub cpus: usize,
}

/// One collective to predict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// The schedule (a fixed algorithm).
    pub algo: Algorithm,
    /// Elements in the buffer.
    pub count: usize,
    /// Wire bytes per element (4 for native `f32`, 2 for FP16, ...).
    pub wire_bytes_per_elem: f64,
    /// Elements per message (the executor's slice).
    pub slice: usize,
    /// Slices of a step per round (the executor's `slots`).
    pub per_round: usize,
    /// The benchmark's untimed calls before the timed ones. Calls differ
    /// only where a link has a token bucket ([`Link::burst_bytes`]).
    pub warmup: usize,
    /// Its timed calls (at least one), whose median is predicted.
    pub timed: usize,
}

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Seconds until the last rank finishes.
    pub time_s: f64,
    /// Messages sent, all ranks.
    pub messages: u64,
    /// Payload bytes rank 0 sent.
    pub rank0_bytes: u64,
}

/// A schedule the model found broken.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// Some rank waits for a message no rank will send.
    #[error("{algo:?} on {ranks} ranks deadlocks: rank {rank} waits at step {step} for rank {peer}")]
    Deadlock {
        /// The algorithm.
        algo: Algorithm,
        /// Ranks simulated.
        ranks: usize,
        /// A rank that cannot go on.
        rank: usize,
        /// Its step.
        step: usize,
        /// The peer it waits for.
        peer: usize,
    },
    /// A message was sent that no receive took.
    #[error("{algo:?} on {ranks} ranks: rank {from} sent rank {to} a message nobody received")]
    Stray {
        /// The algorithm.
        algo: Algorithm,
        /// Ranks simulated.
        ranks: usize,
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
}

struct Rank {
    sched: AnySchedule,
    cursor: Cursor,
    next: Option<Hop>,
    clock: f64,
    /// An exchange's send went out; its receive is still to come.
    sent_early: bool,
    /// Arrival times of messages to this rank, per sender (a schedule
    /// has few peers: a short list beats a map).
    inbox: Vec<(usize, VecDeque<f64>)>,
    /// The sender this rank waits for, when parked.
    waiting_on: Option<usize>,
}

impl Rank {
    fn inbox(&mut self, from: usize) -> &mut VecDeque<f64> {
        let i = match self.inbox.iter().position(|q| q.0 == from) {
            Some(i) => i,
            None => {
                self.inbox.push((from, VecDeque::new()));
                self.inbox.len() - 1
            }
        };
        &mut self.inbox[i].1
    }
}

/// One direction of a port: busy until `free_at`; its token bucket held
/// `tokens` bytes at time `at`.
#[derive(Clone, Copy)]
struct Port {
    free_at: f64,
    tokens: f64,
    at: f64,
}

impl Port {
    fn new(link: &Link) -> Port {
        Port { free_at: 0.0, tokens: link.burst_bytes, at: 0.0 }
    }

    /// When `bytes` starting at `start` have passed this port, and the
    /// bucket's state then.
    fn pass(&self, link: &Link, start: f64, bytes: f64) -> (f64, Port) {
        let tokens = (self.tokens + (start - self.at) * link.bytes_per_s).min(link.burst_bytes);
        let (done, left) =
            if bytes <= tokens { (start, tokens - bytes) } else { (start + (bytes - tokens) / link.bytes_per_s, 0.0) };
        (done, Port { free_at: done, tokens: left, at: done })
    }
}

/// Ports of one kind, both directions.
struct Ports {
    out: Vec<Port>,
    inn: Vec<Port>,
}

impl Ports {
    fn new(n: usize, link: &Link) -> Ports {
        Ports { out: vec![Port::new(link); n], inn: vec![Port::new(link); n] }
    }
}

struct Sim<'a> {
    cluster: &'a Cluster,
    plan: &'a Plan,
    ranks: Vec<Rank>,
    mem: Ports,
    nic: Ports,
    /// Free-at time per shared core (empty: a core per rank).
    cores: Vec<f64>,
    /// Ranks ready to run (their next hop or its send half), earliest first
    /// (non-negative f64s order as their bits).
    ready: BinaryHeap<Reverse<(u64, usize)>>,
    messages: u64,
    rank0_bytes: u64,
}

fn is_exchange(h: &Hop) -> bool {
    matches!(h.step.prim, Prim::Exchange | Prim::ExchangeFinal)
}

impl Sim<'_> {
    /// Runs `secs` of CPU work that can start at `t` and returns when it
    /// ends: at once on the rank's own core, or on the first shared core
    /// to come free.
    fn work(&mut self, t: f64, secs: f64) -> f64 {
        let Some(core) = self.cores.iter_mut().min_by(|a, b| a.total_cmp(b)) else { return t + secs };
        let end = t.max(*core) + secs;
        *core = end;
        end
    }

    /// Queues rank `r` if its next hop can run, or parks it on the queue
    /// it needs a message from.
    fn schedule(&mut self, r: usize) {
        let rk = &mut self.ranks[r];
        let Some(h) = rk.next.as_ref() else { return };
        // An exchange's send half needs no message; everything else that
        // receives does.
        let send_half = is_exchange(h) && !rk.sent_early;
        let needs = h.step.prim.receives() && !send_half;
        if !needs {
            self.ready.push(Reverse((rk.clock.to_bits(), r)));
            return;
        }
        let from = h.step.recv_from;
        match rk.inbox(from).front() {
            Some(&arrival) => self.ready.push(Reverse((rk.clock.max(arrival).to_bits(), r))),
            None => rk.waiting_on = Some(from),
        }
    }

    /// Rank `r` sends `hop`'s slice at time `t`.
    fn send(&mut self, r: usize, hop: &Hop, t: f64) {
        if hop.range.is_empty() {
            return;
        }
        let (c, to) = (self.cluster, hop.step.send_to);
        let bytes = hop.range.len() as f64 * self.plan.wire_bytes_per_elem;
        let per_host = c.ranks_per_host.max(1);
        let (hf, ht) = (r / per_host, to / per_host);
        let (link, out, inn) = if hf == ht {
            (c.intra, &mut self.mem.out[r], &mut self.mem.inn[to])
        } else {
            (c.inter, &mut self.nic.out[hf], &mut self.nic.inn[ht])
        };
        let start = t.max(out.free_at).max(inn.free_at);
        let (sent, o) = out.pass(&link, start, bytes);
        let (taken, i) = inn.pass(&link, start, bytes);
        let done = sent.max(taken);
        *out = Port { free_at: done, ..o };
        *inn = Port { free_at: done, ..i };
        self.ranks[to].inbox(r).push_back(done + link.latency_s);
        self.messages += 1;
        if r == 0 {
            self.rank0_bytes += bytes as u64;
        }
        if self.ranks[to].waiting_on == Some(r) {
            self.ranks[to].waiting_on = None;
            self.schedule(to);
        }
    }

    fn run(&mut self) {
        for r in 0..self.ranks.len() {
            self.schedule(r);
        }
        while let Some(Reverse((_, r))) = self.ready.pop() {
            let hop = self.ranks[r].next.take().expect("a ready rank has a hop");
            let kernel = hop.range.len() as f64 * 4.0 / self.cluster.reduce_bytes_per_s;
            // Empty slices move no message (see `send`), so cost no CPU.
            let o = if hop.range.is_empty() { 0.0 } else { self.cluster.overhead_s };
            let mut t = self.ranks[r].clock;
            if is_exchange(&hop) && !self.ranks[r].sent_early {
                // Exchanges send first, then wait for the partner's half.
                let t = self.work(t, o);
                self.send(r, &hop, t);
                let rk = &mut self.ranks[r];
                rk.clock = t;
                rk.sent_early = true;
                rk.next = Some(hop);
                self.schedule(r);
                continue;
            }
            let mut cpu = kernel;
            if hop.step.prim.receives() {
                let arrival = self.ranks[r].inbox(hop.step.recv_from).pop_front();
                t = t.max(arrival.expect("a ready receive has a message"));
                cpu += o;
            }
            if hop.step.prim.sends() && !is_exchange(&hop) {
                cpu += o;
            }
            t = self.work(t, cpu);
            if hop.step.prim.sends() && !is_exchange(&hop) {
                self.send(r, &hop, t);
            }
            let rk = &mut self.ranks[r];
            rk.clock = t;
            rk.sent_early = false;
            rk.next = rk.cursor.next(&rk.sched);
            self.schedule(r);
        }
    }
}

/// Predicts `plan` on `cluster` by running every rank's schedule.
pub fn predict(cluster: &Cluster, plan: &Plan) -> Result<Prediction, SimError> {
    let n = cluster.ranks;
    let hosts = n.div_ceil(cluster.ranks_per_host.max(1));
    let mut sim = Sim {
        cluster,
        plan,
        ranks: ranks_at(cluster, plan, 0.0),
        mem: Ports::new(n, &cluster.intra),
        nic: Ports::new(hosts, &cluster.inter),
        cores: vec![0.0; cluster.cpus],
        ready: BinaryHeap::new(),
        messages: 0,
        rank0_bytes: 0,
    };
    sim.run();
    let end = finished(&sim)?;
    if cluster.intra.burst_bytes <= 0.0 && cluster.inter.burst_bytes <= 0.0 {
        return Ok(Prediction { time_s: end, messages: sim.messages, rank0_bytes: sim.rank0_bytes });
    }
    // With token buckets a call depends on the calls before it: each finds
    // what the last left plus the refill over the barrier between them.
    // Replay the benchmark's calls (ringfuse-perf, nccl-tests: warm-up,
    // then timed calls a barrier apart, from full buckets) and predict the
    // median of the timed ones as it reports it. Small calls that take more
    // than a barrier gives back drain the buckets over several calls.
    let calls = plan.warmup + plan.timed.max(1);
    let mut times = vec![end];
    let mut end = end;
    while times.len() < calls {
        let start = end + barrier_s(cluster);
        (sim.ranks, sim.messages, sim.rank0_bytes) = (ranks_at(cluster, plan, start), 0, 0);
        sim.run();
        end = finished(&sim)?;
        times.push(end - start);
    }
    let timed = &mut times[plan.warmup..];
    timed.sort_by(f64::total_cmp);
    Ok(Prediction { time_s: timed[timed.len() / 2], messages: sim.messages, rank0_bytes: sim.rank0_bytes })
}

/// Every rank at its first hop, its clock at `start`.
fn ranks_at(cluster: &Cluster, plan: &Plan, start: f64) -> Vec<Rank> {
    let n = cluster.ranks;
    (0..n)
        .map(|r| {
            let shape = Shape { size: n, per_host: cluster.ranks_per_host, slice: plan.slice, slots: plan.per_round };
            let sched = schedule::allreduce(plan.algo, r, plan.count, shape);
            let mut cursor = Cursor::new(&sched, plan.slice, plan.per_round, false);
            let next = cursor.next(&sched);
            Rank {
                sched,
                cursor,
                next,
                clock: start + cluster.call_s,
                sent_early: false,
                inbox: Vec::new(),
                waiting_on: None,
            }
        })
        .collect()
}

/// A dissemination barrier: ceil(log2 n) rounds of one message each way.
fn barrier_s(c: &Cluster) -> f64 {
    let link = if c.ranks > c.ranks_per_host.max(1) { c.inter } else { c.intra };
    let rounds = c.ranks.max(1).next_power_of_two().trailing_zeros() as f64;
    rounds * (link.latency_s + 2.0 * c.overhead_s)
}

/// When the last rank finished, or why some never did.
fn finished(sim: &Sim) -> Result<f64, SimError> {
    let (algo, n) = (sim.plan.algo, sim.ranks.len());
    if let Some((r, rk)) = sim.ranks.iter().enumerate().find(|(_, rk)| rk.next.is_some()) {
        let h = rk.next.as_ref().expect("found");
        return Err(SimError::Deadlock { algo, ranks: n, rank: r, step: h.step_idx, peer: h.step.recv_from });
    }
    for (to, rk) in sim.ranks.iter().enumerate() {
        if let Some((from, _)) = rk.inbox.iter().find(|q| !q.1.is_empty()) {
            return Err(SimError::Stray { algo, ranks: n, from: *from, to });
        }
    }
    Ok(sim.ranks.iter().map(|r| r.clock).fold(0.0, f64::max))
}
