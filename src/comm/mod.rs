//! [`Communicator`]: the public face. Every collective validates its
//! arguments, then runs one schedule through the one executor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use half::{bf16, f16};

use crate::codec::Codec;
use crate::cpu::blocked::{Int8, ScaledF16};
use crate::cpu::hop::{BlockScaled, Elementwise};
use crate::cpu::wire_stores::{WireChooser, WireStores};
use crate::cpu::Stores;
use crate::element::{DType, Element, ReduceOp};
use crate::error::{BufferState, Error, Result};
use crate::exec::{self, Ctx, Local, Scratch};
use crate::flight::{FlightDump, FlightRecorder};
use crate::op::{Collective, OpDesc};
use crate::schedule::{self, AnySchedule, Chain, Ring, RingKind, Schedule, Shape};
use crate::transport::fault::{Fault, FaultyTransport};
use crate::transport::Transport;
use crate::tuning::rule::{doubling_up_to, LinkClass};
use crate::tuning::{Memo, Tuning};
use crate::wire::FLAG_OVERFLOW;

use call::n_rounds;
use env::Settings;
pub use opts::{Algorithm, AllreduceOpts, DEFAULT_TIMEOUT};

struct State {
    transport: Box<dyn Transport>,
    poisoned: Option<String>,
    scratch: Scratch,
    /// How hops write their messages, learned from call to call.
    wire: WireChooser,
}

/// `RINGFUSE_WIRE_STORES` if set, else timed where peers read messages
/// in place and cached elsewhere.
fn wire_stores(t: &dyn Transport, settings: &Settings) -> WireStores {
    let default = if t.peers_read_in_place() { WireStores::Auto } else { WireStores::Cached };
    settings.wire_stores.unwrap_or(default)
}

/// A group of ranks that run collectives together.
///
/// Every rank must call the same collectives in the same order with
/// matching arguments, as with MPI or NCCL. Calls on one communicator are
/// serialised by an internal lock. After a collective fails part-way
/// (timeout, transport failure), the communicator refuses further calls
/// with [`Error::Poisoned`]; argument errors leave it usable.
pub struct Communicator {
    rank: usize,
    size: usize,
    defaults: AllreduceOpts,
    // Next call's sequence number. Advanced only under `state`'s lock; an
    // atomic so describing a call (for an argument error) never locks.
    seq: AtomicU64,
    // Raised by abort(); outside the lock so any thread can raise it while
    // a collective holds the lock.
    aborted: AtomicBool,
    flight: Arc<FlightRecorder>,
    state: Mutex<State>,
    /// `Algorithm::Auto`'s cost model, when measured or loaded.
    tuning: Option<Tuning>,
    /// `Auto`'s recent choices under `tuning`.
    memo: Memo,
    /// Ranks per host (consecutive ranks share one); 0 if not known.
    ranks_per_host: usize,
    /// Wire bytes up to which `Auto` without a tuning runs recursive
    /// doubling ([`crate::tuning::rule`]), agreed by every rank.
    doubling_up_to: usize,
    carrier: &'static str,
    /// The carrier's message size, for calls with `slice_bytes` 0.
    message_bytes: usize,
    /// `state.wire`'s mode, readable without the lock.
    wire_stores: WireStores,
    /// The ranks of the communicator this one was shrunk from that were
    /// lost (empty for a first communicator).
    lost_ranks: Vec<usize>,
}

impl Communicator {
    /// A communicator over any transport. If `RINGFUSE_FAULT` is set, its
    /// fault is injected (see [`crate::transport::fault`]).
    ///
    /// `Auto` uses the fixed rule ([`crate::tuning::rule`]) unless
    /// `RINGFUSE_TUNING` asks for a probe or a cached file
    /// ([`crate::tuning`]; then this is collective). Fails with
    /// [`Error::Setting`] when a `RINGFUSE_*` variable holds a value it
    /// does not accept ([`mod@env`]).
    pub fn from_transport(t: Box<dyn Transport>) -> Result<Self> {
        Self::tuned(t, 0)
    }

    /// Builds with `ranks_per_host` (0: unknown), picks `Auto`'s rule,
    /// tunes as `RINGFUSE_TUNING` says, then injects `RINGFUSE_FAULT`'s
    /// fault: the probe's traffic is not the traffic a fault test counts.
    pub(crate) fn tuned(t: Box<dyn Transport>, ranks_per_host: usize) -> Result<Self> {
        let c = Self::tuned_only(t, ranks_per_host)?;
        Ok(match env::settings_for(c.rank)?.fault.clone() {
            Some(f) => c.inject_fault(f),
            None => c,
        })
    }

    /// [`Self::tuned`] without `RINGFUSE_FAULT`'s fault.
    fn tuned_only(t: Box<dyn Transport>, ranks_per_host: usize) -> Result<Self> {
        let settings = env::settings_for(t.rank())?;
        let mut c = Self::bare(t, settings);
        c.ranks_per_host = ranks_per_host;
        c.doubling_up_to = c.agree_on_rule()?;
        c.tuning = Tuning::from_settings(&c, &settings.tuning)?;
        // Start-up's calls (the rule's agreement, a probe's couple of
        // thousand) are the library's, not the user's: the user's first
        // call is #0 in errors and flight records. Every rank resets at the
        // same point of its message stream, and messages between two ranks
        // arrive in order, so a start-up message can never be taken for a
        // later call's.
        if c.seq.load(Ordering::Relaxed) > 0 {
            c.seq.store(0, Ordering::Relaxed);
            c.flight.forget();
        }
        Ok(c)
    }

    /// `Auto`'s crossover by [`crate::tuning::rule`], the same on every
    /// rank (the largest any rank computed: hosts may count their cores
    /// differently). Collective.
    fn agree_on_rule(&self) -> Result<usize> {
        let local = if self.ranks_per_host == 0 { self.size } else { self.ranks_per_host };
        let over = crate::transport::host_oversubscribed(local);
        let class = LinkClass::of(self.size, self.ranks_per_host, over);
        let mine = doubling_up_to(class, self.size);
        // Threads of one process read the same environment and cores.
        if self.size == 1 || self.carrier == "threads" {
            return Ok(mine);
        }
        let mut all = [mine as f64];
        let opts = self.defaults.clone().algorithm(Algorithm::Ring).codec(Codec::Native);
        self.allreduce_with(&mut all, ReduceOp::Max, &opts)
            .map_err(|e| Error::Startup { rank: self.rank, detail: format!("agreeing on Auto's rule: {e}") })?;
        Ok(all[0] as usize)
    }

    fn bare(t: Box<dyn Transport>, settings: &Settings) -> Self {
        let flight = Arc::new(FlightRecorder::new(t.rank(), t.size()));
        crate::flight::signal::register(&flight, settings.flight_signal);
        let wire = wire_stores(t.as_ref(), settings);
        Communicator {
            rank: t.rank(),
            size: t.size(),
            defaults: AllreduceOpts::from_settings(settings),
            seq: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            flight,
            carrier: t.name(),
            message_bytes: t.message_bytes(),
            wire_stores: wire,
            state: Mutex::new(State {
                wire: WireChooser::new(wire),
                transport: t,
                poisoned: None,
                scratch: Scratch::default(),
            }),
            tuning: None,
            memo: Memo::default(),
            ranks_per_host: 0,
            doubling_up_to: 32 << 10,
            lost_ranks: Vec::new(),
        }
    }

    /// What carries this communicator's messages: `shm` (shared memory,
    /// the default when every rank is on one host), `mpi`, or `threads`
    /// (in-process ranks). See `RINGFUSE_TRANSPORT` in [`crate::mpi`].
    pub fn carrier(&self) -> &'static str {
        self.carrier
    }

    /// Payload bytes per message of a call with `opts`: its `slice_bytes`,
    /// or the carrier's size when that is 0.
    pub fn message_bytes(&self, opts: &AllreduceOpts) -> usize {
        opts.slice_bytes_or(self.message_bytes)
    }

    /// Ranks per host (consecutive ranks share a host), as detected for an
    /// MPI communicator (MPI's shared-memory split) or set; 0 if unknown.
    /// [`Algorithm::Hierarchical`] needs it.
    pub fn ranks_per_host(&self) -> usize {
        self.ranks_per_host
    }

    /// Declares `k` consecutive ranks per host (to model hosts with
    /// in-process ranks, or to override detection). The same on every
    /// rank; `k` must divide the number of ranks.
    pub fn set_ranks_per_host(&mut self, k: usize) -> Result<()> {
        if k == 0 || self.size % k != 0 {
            return Err(Error::Tuning {
                rank: self.rank,
                detail: format!("{k} ranks per host does not divide {} ranks into equal hosts", self.size),
            });
        }
        self.ranks_per_host = k;
        if k < self.size {
            // Several hosts: the network's crossover, which needs no
            // local facts, so every rank computes the same.
            self.doubling_up_to = doubling_up_to(LinkClass::Network, self.size);
        }
        self.memo.clear();
        Ok(())
    }

    /// Where an allreduce with `opts` on `dtype` runs.
    fn shape(&self, opts: &AllreduceOpts, dtype: DType) -> Shape {
        let slice = opts.slice_elems_or(dtype, self.message_bytes);
        Shape { size: self.size, per_host: self.ranks_per_host, slice, slots: opts.slots }
    }

    /// Wire bytes up to which `Algorithm::Auto` runs recursive doubling
    /// when no cost model is loaded and the call's
    /// [`AllreduceOpts::small_bytes`] is 0: this communicator's rule
    /// ([`crate::tuning::rule`]), the same on every rank.
    pub fn doubling_up_to(&self) -> usize {
        self.doubling_up_to
    }

    /// `Algorithm::Auto`'s cost model, if measured or loaded.
    pub fn tuning(&self) -> Option<&Tuning> {
        self.tuning.as_ref()
    }

    /// Sets (or, with `None`, removes) `Auto`'s cost model. It must be the
    /// same on every rank: [`Tuning::probe`] agrees on one.
    pub fn set_tuning(&mut self, tuning: Option<Tuning>) {
        self.tuning = tuning;
        self.memo.clear();
    }

    /// How hops write their messages (see [`WireStores`]): by default timed
    /// where peers read messages in place (shared memory) and through the
    /// cache elsewhere; `RINGFUSE_WIRE_STORES` sets it for every
    /// communicator. Either gives the same bits, so ranks may differ.
    pub fn set_wire_stores(&mut self, stores: WireStores) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.wire = WireChooser::new(stores);
        self.wire_stores = stores;
    }

    /// How hops write their messages ([`Self::set_wire_stores`]).
    pub fn wire_stores(&self) -> WireStores {
        self.wire_stores
    }

    /// The algorithm an allreduce of `count` elements of `dtype` with
    /// `opts` runs on this communicator.
    pub fn algorithm_for(&self, opts: &AllreduceOpts, dtype: DType, count: usize) -> Algorithm {
        if opts.algorithm != Algorithm::Auto || self.tuning.is_none() {
            return opts.resolve(dtype, count, self.tuning.as_ref(), self.shape(opts, dtype), self.doubling_up_to);
        }
        let wire_bytes = opts.codec.wire_bytes(dtype, count, opts.scale_block);
        self.memo.get(dtype, opts.codec, wire_bytes).unwrap_or_else(|| {
            let a = opts.resolve(dtype, count, self.tuning.as_ref(), self.shape(opts, dtype), self.doubling_up_to);
            self.memo.put(dtype, opts.codec, wire_bytes, a);
            a
        })
    }

    /// This communicator with its traffic suffering `fault` (if
    /// `fault.rank` is this rank), for testing how failures surface. See
    /// [`crate::transport::fault`].
    pub fn inject_fault(self, fault: Fault) -> Self {
        let mut st = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        st.transport = Box::new(FaultyTransport::new(st.transport, fault));
        Communicator { state: Mutex::new(st), ..self }
    }

    /// This rank's flight record: the last [`crate::flight::DEPTH`]
    /// collectives and where each is. Works while a collective is stuck
    /// (it takes no lock the collective holds).
    ///
    /// ```
    /// let dumps = ringfuse::local::run(2, |comm| {
    ///     let mut v = vec![1f32; 100];
    ///     comm.allreduce(&mut v, ringfuse::ReduceOp::Sum).unwrap();
    ///     comm.flight_record()
    /// });
    /// assert_eq!(dumps[1].ops[0].op, "allreduce#0(f32, 100, sum, native)");
    /// assert_eq!(ringfuse::flight::diagnose(&dumps).culprit, None); // nobody is behind
    /// ```
    pub fn flight_record(&self) -> FlightDump {
        self.flight.snapshot("api")
    }

    /// Ends this rank's collective in flight, from any thread: its waits
    /// return [`Error::Aborted`] within milliseconds, the peers waiting on
    /// this rank are told (and fail with [`Error::PeerAborted`]), and every
    /// later call on this communicator fails with `Aborted`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let out = ringfuse::local::run(2, |comm| {
    ///     if comm.rank() == 1 {
    ///         return None; // never joins
    ///     }
    ///     std::thread::scope(|s| {
    ///         s.spawn(|| {
    ///             std::thread::sleep(Duration::from_millis(50));
    ///             comm.abort();
    ///         });
    ///         let mut v = vec![1f32; 8];
    ///         Some(comm.allreduce(&mut v, ringfuse::ReduceOp::Sum).unwrap_err())
    ///     })
    /// });
    /// assert!(matches!(out[0], Some(ringfuse::Error::Aborted { rank: 0, .. })));
    /// ```
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    /// This rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Options the plain methods (`allreduce`, ...) use: when the
    /// communicator is made, [`AllreduceOpts::from_env`] (the built-in
    /// defaults with the process's `RINGFUSE_*` overrides).
    pub fn defaults(&self) -> &AllreduceOpts {
        &self.defaults
    }

    /// Replaces the options the plain methods use.
    pub fn set_defaults(&mut self, opts: AllreduceOpts) {
        self.defaults = opts;
    }

    /// Reduces `buf` across all ranks in place; every rank ends with the
    /// same bits.
    pub fn allreduce<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.allreduce_with(buf, op, &self.defaults.clone())
    }

    /// [`Self::allreduce`] with explicit options (codec, slicing, deadline).
    ///
    /// ```
    /// use ringfuse::{AllreduceOpts, Codec, ReduceOp};
    /// let out = ringfuse::local::run(3, |comm| {
    ///     let mut grads = vec![comm.rank() as f32 + 0.5; 1000];
    ///     let opts = AllreduceOpts::default().codec(Codec::Fp16);
    ///     comm.allreduce_with(&mut grads, ReduceOp::Sum, &opts).unwrap();
    ///     grads
    /// });
    /// assert_eq!(out[0][0], 4.5); // 0.5 + 1.5 + 2.5, exact in FP16
    /// assert!(out.iter().all(|g| g == &out[0]));
    /// ```
    pub fn allreduce_with<T: Element>(&self, buf: &mut [T], op: ReduceOp, opts: &AllreduceOpts) -> Result<()> {
        let count = buf.len();
        self.call::<T>(Collective::Allreduce, count, Some(op), None, opts, None, |rank, _, _| {
            (self.allreduce_schedule(opts, T::DTYPE, rank, count), Local::InPlace(buf))
        })
    }

    /// Reduces `input` across all ranks into `output` (the same length),
    /// leaving `input` as it was: NCCL's and MPI's out-of-place allreduce.
    /// Gives the same bits as copying `input` into `output` and calling
    /// [`Self::allreduce`], without that copy's extra pass over both
    /// buffers: a block is read from `input` until a hop updates it, and
    /// blocks that arrive whole are never copied.
    ///
    /// ```
    /// use ringfuse::ReduceOp;
    /// let out = ringfuse::local::run(2, |comm| {
    ///     let grads = vec![comm.rank() as f32 + 1.0; 100_000];
    ///     let mut sum = vec![0f32; grads.len()];
    ///     comm.allreduce_into(&grads, &mut sum, ReduceOp::Sum).unwrap();
    ///     (grads[0], sum[0])
    /// });
    /// assert_eq!(out, [(1.0, 3.0), (2.0, 3.0)]);
    /// ```
    pub fn allreduce_into<T: Element>(&self, input: &[T], output: &mut [T], op: ReduceOp) -> Result<()> {
        self.allreduce_into_with(input, output, op, &self.defaults.clone())
    }

    /// [`Self::allreduce_into`] with explicit options.
    pub fn allreduce_into_with<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
        opts: &AllreduceOpts,
    ) -> Result<()> {
        let count = input.len();
        if output.len() != count {
            let desc = self.desc::<T>(Collective::Allreduce, count, Some(op), None, opts);
            return Err(Error::Length {
                rank: self.rank,
                op: desc,
                what: "output",
                expected: count,
                got: output.len(),
            });
        }
        // Within one message the buffer sits in cache whichever way it is
        // read, and a copy costs less than keeping track of fresh ranges.
        // A failed call has written the output already (the copy), so an
        // error never calls it untouched.
        if std::mem::size_of_val(input) <= self.message_bytes(opts) {
            output.copy_from_slice(input);
            return self.allreduce_with(output, op, opts).map_err(|e| e.with_buffer(BufferState::Partial));
        }
        self.call::<T>(Collective::Allreduce, count, Some(op), None, opts, None, |rank, _, _| {
            (self.allreduce_schedule(opts, T::DTYPE, rank, count), Local::out_of_place(input, output))
        })
    }

    /// The schedule an allreduce of `count` elements runs on this rank.
    fn allreduce_schedule(&self, opts: &AllreduceOpts, dtype: DType, rank: usize, count: usize) -> AnySchedule {
        let algo = self.algorithm_for(opts, dtype, count);
        schedule::allreduce(algo, rank, count, self.shape(opts, dtype))
    }

    /// Ring allreduce (`Sum`) of `buf` with *error feedback*, as used by
    /// [`crate::GradSync`] with lossy codecs: first `buf += residual`, then
    /// the allreduce, during which `residual` takes, for every element this
    /// rank encodes (once per element: its own input or the partial sum it
    /// forwards, at positions fixed by the ring), the value before the
    /// encode minus the value the wire carries. Feeding `residual` into the
    /// next call puts back what this call's rounding lost, so the sum of
    /// results over many calls tracks the exact sum instead of drifting.
    /// Always the ring ([`Algorithm`] is ignored).
    ///
    /// ```
    /// use ringfuse::{AllreduceOpts, Codec};
    /// let out = ringfuse::local::run(2, |comm| {
    ///     let opts = AllreduceOpts::default().codec(Codec::Int8);
    ///     let mut residual = vec![0f32; 3];
    ///     let mut total = 0f64;
    ///     for _ in 0..100 {
    ///         let mut g = vec![1.0f32, 0.01, 0.003];
    ///         comm.allreduce_with_feedback(&mut g, &mut residual, &opts).unwrap();
    ///         total += g[2] as f64;
    ///     }
    ///     total
    /// });
    /// // 100 steps of 2 x 0.003: off by at most one step's rounding.
    /// assert!((out[0] - 0.6).abs() < 0.01, "{}", out[0]);
    /// ```
    pub fn allreduce_with_feedback(&self, buf: &mut [f32], residual: &mut [f32], opts: &AllreduceOpts) -> Result<()> {
        let count = buf.len();
        if residual.len() != count {
            let op = self.desc::<f32>(Collective::Allreduce, count, Some(ReduceOp::Sum), None, opts);
            return Err(Error::Length { rank: self.rank, op, what: "residual", expected: count, got: residual.len() });
        }
        let op = Some(ReduceOp::Sum);
        self.call::<f32>(Collective::Allreduce, count, op, None, opts, Some(residual), |rank, size, _| {
            let s = AnySchedule::Ring(Ring { rank, size, count, kind: RingKind::Allreduce });
            (s, Local::InPlace(buf))
        })
    }

    /// Reduces `input` (`output.len() * size()` elements) across ranks and
    /// leaves block `rank()` of the result in `output`. Values are the
    /// decoded wire values, so `reduce_scatter` then `allgather` gives the
    /// same bits as a ring `allreduce` ([`Algorithm::Ring`]).
    pub fn reduce_scatter<T: Element>(&self, input: &[T], output: &mut [T], op: ReduceOp) -> Result<()> {
        self.reduce_scatter_with(input, output, op, &self.defaults.clone())
    }

    /// [`Self::reduce_scatter`] with explicit options.
    pub fn reduce_scatter_with<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
        opts: &AllreduceOpts,
    ) -> Result<()> {
        let count = input.len();
        let desc = self.desc::<T>(Collective::ReduceScatter, count, Some(op), None, opts);
        if count != output.len() * self.size {
            return Err(Error::Length {
                rank: self.rank,
                op: desc,
                what: "input (output.len() * size)",
                expected: output.len() * self.size,
                got: count,
            });
        }
        self.call::<T>(Collective::ReduceScatter, count, Some(op), None, opts, None, |rank, size, _| {
            let own = crate::schedule::block_range(count, size, rank);
            output.copy_from_slice(&input[own.clone()]);
            let s = AnySchedule::Ring(Ring { rank, size, count, kind: RingKind::ReduceScatter });
            (s, Local::Scatter { input, output, own })
        })
    }

    /// Gathers every rank's `input` into `output` (`input.len() * size()`
    /// elements), rank order. With a lossy codec every rank, the owner
    /// included, holds the decoded wire values.
    pub fn allgather<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        self.allgather_with(input, output, &self.defaults.clone())
    }

    /// [`Self::allgather`] with explicit options.
    pub fn allgather_with<T: Element>(&self, input: &[T], output: &mut [T], opts: &AllreduceOpts) -> Result<()> {
        let count = output.len();
        let desc = self.desc::<T>(Collective::Allgather, count, None, None, opts);
        if count != input.len() * self.size {
            return Err(Error::Length {
                rank: self.rank,
                op: desc,
                what: "output (input.len() * size)",
                expected: input.len() * self.size,
                got: count,
            });
        }
        self.call::<T>(Collective::Allgather, count, None, None, opts, None, |rank, size, _| {
            let own = crate::schedule::block_range(count, size, rank);
            if size == 1 {
                output.copy_from_slice(input);
            }
            let s = AnySchedule::Ring(Ring { rank, size, count, kind: RingKind::Allgather });
            (s, Local::Gather { input, output, own })
        })
    }

    /// Copies `root`'s `buf` to every rank (a pipelined chain).
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.broadcast_with(buf, root, &self.defaults.clone())
    }

    /// [`Self::broadcast`] with explicit options.
    pub fn broadcast_with<T: Element>(&self, buf: &mut [T], root: usize, opts: &AllreduceOpts) -> Result<()> {
        let count = buf.len();
        if root >= self.size {
            let op = self.desc::<T>(Collective::Broadcast, count, None, Some(root), opts);
            return Err(Error::Root { rank: self.rank, op, root, size: self.size });
        }
        self.call::<T>(Collective::Broadcast, count, None, Some(root), opts, None, |rank, size, _| {
            (AnySchedule::Chain(Chain { rank, size, count, root }), Local::InPlace(buf))
        })
    }

    /// Returns once every rank has entered the barrier (or an error by the
    /// default deadline).
    pub fn barrier(&self) -> Result<()> {
        let opts = self.defaults.clone();
        let mut st = self.lock(&self.desc::<f32>(Collective::Barrier, 0, None, None, &opts))?;
        let desc = self.desc::<f32>(Collective::Barrier, 0, None, None, &opts);
        self.seq.fetch_add(1, Ordering::Relaxed);
        let State { transport, scratch, .. } = &mut *st;
        let mut cx = Ctx {
            t: transport.as_mut(),
            desc: &desc,
            timeout: opts.timeout,
            slice: 1,
            slots: 1,
            per_round: 1,
            abort: &self.aborted,
            scratch,
            checksum: opts.checksum,
            verify_calls: opts.verify_calls,
            agreed: Default::default(),
            flight: &self.flight,
        };
        self.flight.begin(&desc, (n_rounds(self.size)) as usize);
        let r = exec::barrier(&mut cx);
        self.finish(&mut st, &desc, r)
    }
}

mod call;
#[cfg(feature = "cuda")]
mod device;
pub mod env;
mod opts;
mod probe;
mod shrink;
#[cfg(test)]
mod tests;
