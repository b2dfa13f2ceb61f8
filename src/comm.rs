//! [`Communicator`]: the public face. Every collective validates its
//! arguments, then runs one schedule through the one executor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use half::{bf16, f16};

use crate::codec::Codec;
use crate::cpu::blocked::{Int8, ScaledF16};
use crate::cpu::hop::{BlockScaled, Elementwise};
use crate::cpu::Stores;
use crate::element::{DType, Element, ReduceOp};
use crate::error::{BufferState, Error, Result};
use crate::exec::{self, Ctx, Local, Scratch};
use crate::flight::{FlightDump, FlightRecorder};
use crate::op::{Collective, OpDesc};
use crate::schedule::{self, AnySchedule, Chain, Ring, RingKind, Schedule, Shape};
use crate::transport::fault::{Fault, FaultyTransport};
use crate::transport::Transport;
use crate::tuning::{Memo, Tuning};
use crate::wire::FLAG_OVERFLOW;

/// Which allreduce schedule runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The algorithm the communicator's cost model ([`crate::tuning`])
    /// predicts fastest, or without one recursive doubling up to
    /// [`AllreduceOpts::small_bytes`] of wire data and the ring above.
    /// `RINGFUSE_ALGO=ring|doubling|tree|hd` forces one.
    #[default]
    Auto,
    /// The pipelined ring: bandwidth-optimal, `2(n-1)` dependent hops.
    Ring,
    /// Recursive doubling: `log2 n` exchanges of the whole buffer.
    RecursiveDoubling,
    /// NCCL's double binary tree: `2 log2 n` hops, each of two trees
    /// carrying half the buffer.
    Tree,
    /// Recursive halving-doubling (Rabenseifner): the ring's bytes in
    /// `2 log2 n` rounds.
    HalvingDoubling,
    /// Reduce-scatter inside each host, a ring across hosts per block,
    /// allgather inside each host: the network carries each byte once per
    /// host. Needs the communicator's hosts (see
    /// [`Communicator::ranks_per_host`]); the ring runs without them.
    Hierarchical,
}

impl Algorithm {
    /// Every algorithm a caller can force (not `Auto`).
    pub const FIXED: [Algorithm; 5] = [
        Algorithm::Ring,
        Algorithm::RecursiveDoubling,
        Algorithm::Tree,
        Algorithm::HalvingDoubling,
        Algorithm::Hierarchical,
    ];

    /// Parses `ring`, `doubling` (or `rd`), `tree`, `hd` (or `halving`),
    /// `hier` (or `hierarchical`) and `auto`, as `RINGFUSE_ALGO` and
    /// `ringfuse-perf --algo` take them.
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "auto" => Algorithm::Auto,
            "ring" => Algorithm::Ring,
            "doubling" | "rd" => Algorithm::RecursiveDoubling,
            "tree" => Algorithm::Tree,
            "hd" | "halving" => Algorithm::HalvingDoubling,
            "hier" | "hierarchical" => Algorithm::Hierarchical,
            _ => return None,
        })
    }

    /// The short name [`Algorithm::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Ring => "ring",
            Algorithm::RecursiveDoubling => "doubling",
            Algorithm::Tree => "tree",
            Algorithm::HalvingDoubling => "hd",
            Algorithm::Hierarchical => "hier",
        }
    }

    /// Whether this algorithm can carry `dtype` buffers on `codec`'s wire
    /// with the codec's bound and bitwise-identical results; where it
    /// cannot, the ring runs instead.
    ///
    /// All but the ring keep partial results in the buffer between steps:
    /// exact for `f32`/`f64` (the accumulator's precision), an extra
    /// rounding per step for 16-bit buffers, which the bound does not
    /// allow. The tree and halving-doubling also re-encode a final value
    /// they decoded, which gives back the same bytes only for element-wise
    /// formats (a block's scale can change).
    pub fn supports(self, dtype: DType, codec: Codec) -> bool {
        let wide = matches!(dtype, DType::F32 | DType::F64);
        match self {
            Algorithm::Auto | Algorithm::Ring => true,
            Algorithm::RecursiveDoubling => wide,
            Algorithm::Tree | Algorithm::HalvingDoubling | Algorithm::Hierarchical => wide && !codec.is_block_scaled(),
        }
    }
}

/// Message payload when neither the call nor the carrier says otherwise.
pub const DEFAULT_SLICE_BYTES: usize = 256 << 10;

/// Per-call options. `AllreduceOpts::default()` is what the plain methods
/// use; every field can be set with a builder method.
#[derive(Clone, Debug, PartialEq)]
pub struct AllreduceOpts {
    /// Wire format (default [`Codec::Native`]).
    pub codec: Codec,
    /// Payload bytes of one message on the wire (the pipelining unit).
    /// Default 0: the carrier's size ([`Communicator::message_bytes`]),
    /// [`DEFAULT_SLICE_BYTES`] except over MPI between hosts
    /// ([`crate::mpi::ACROSS_HOSTS_SLICE_BYTES`]).
    pub slice_bytes: usize,
    /// Messages in flight each way per rank (default 4). Extra memory per
    /// rank is about `(2 * slots + 2) * slice_bytes`, whatever the buffer.
    pub slots: usize,
    /// Deadline of every single wait (default 300 s, or
    /// `RINGFUSE_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Allreduce schedule (default [`Algorithm::Auto`]).
    pub algorithm: Algorithm,
    /// Under `Auto`, buffers of at most this many wire bytes use recursive
    /// doubling (default 32 KiB; see the README for the crossover measured).
    pub small_bytes: usize,
    /// Seal every message with a CRC-32C of its payload, checked on
    /// receipt: a corrupted message becomes [`Error::Checksum`] naming the
    /// peer, step and slice. Off by default (`RINGFUSE_CHECKSUM=1` turns it
    /// on): MPI and TCP already check their frames, and the CRC reads
    /// every payload byte once more.
    pub checksum: bool,
    /// Compare every message's call fingerprint with this rank's call, so
    /// ranks that called different collectives get [`Error::Mismatch`].
    /// On by default; `RINGFUSE_VERIFY_CALLS=0` turns it off, which exists
    /// to measure its cost (see the README) and is not recommended.
    pub verify_calls: bool,
    /// Elements per scale of the block-scaled codecs
    /// ([`Codec::Fp16Scaled`], [`Codec::Int8`]); 1 to
    /// [`crate::codec::MAX_SCALE_BLOCK`], the same on every rank. Default
    /// [`crate::codec::DEFAULT_SCALE_BLOCK`].
    pub scale_block: usize,
}

impl Default for AllreduceOpts {
    fn default() -> Self {
        let timeout = std::env::var("RINGFUSE_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(300));
        let algorithm =
            (std::env::var("RINGFUSE_ALGO").ok()).and_then(|a| Algorithm::parse(&a)).unwrap_or(Algorithm::Auto);
        let env_flag = |name: &str, default: bool| match std::env::var(name).as_deref() {
            Ok("1") | Ok("true") | Ok("on") => true,
            Ok("0") | Ok("false") | Ok("off") => false,
            _ => default,
        };
        AllreduceOpts {
            codec: Codec::Native,
            slice_bytes: 0,
            slots: 4,
            timeout,
            algorithm,
            small_bytes: 32 << 10,
            checksum: env_flag("RINGFUSE_CHECKSUM", false),
            verify_calls: env_flag("RINGFUSE_VERIFY_CALLS", true),
            scale_block: crate::codec::DEFAULT_SCALE_BLOCK,
        }
    }
}

impl AllreduceOpts {
    /// The algorithm an allreduce of `count` elements of `dtype` runs with
    /// these options: `Auto`'s choice (by `tuning`'s cost model, or without
    /// one recursive doubling up to [`Self::small_bytes`] and the ring
    /// above), or the forced one where it [supports](Algorithm::supports)
    /// the buffer and codec, else the ring.
    pub(crate) fn resolve(&self, dtype: DType, count: usize, tuning: Option<&Tuning>, shape: Shape) -> Algorithm {
        let wire_bytes = self.codec.wire_bytes(dtype, count, self.scale_block);
        let algo = match (self.algorithm, tuning) {
            (Algorithm::Auto, Some(t)) => t.best(dtype, self.codec, wire_bytes),
            (Algorithm::Auto, None) if wire_bytes <= self.small_bytes => Algorithm::RecursiveDoubling,
            (Algorithm::Auto, None) => Algorithm::Ring,
            (a, _) => a,
        };
        let placed = algo != Algorithm::Hierarchical || shape.hierarchical();
        if algo.supports(dtype, self.codec) && placed {
            algo
        } else {
            Algorithm::Ring
        }
    }

    /// Elements per message for a buffer of `dtype`: `slice_bytes` of
    /// codes, rounded down to whole multiples of 32 elements (the vector
    /// kernels then run on full vectors except at a block's end) and, for
    /// block-scaled codecs, of the scale block (so every scale but a
    /// slice's last covers a full block).
    /// A `slice_bytes` of 0 counts as [`DEFAULT_SLICE_BYTES`] here; a
    /// communicator puts its carrier's size in its place.
    pub fn slice_elems(&self, dtype: DType) -> usize {
        self.slice_elems_or(dtype, DEFAULT_SLICE_BYTES)
    }

    /// `slice_bytes`, or `carrier` where it is 0.
    fn slice_bytes_or(&self, carrier: usize) -> usize {
        if self.slice_bytes == 0 {
            carrier
        } else {
            self.slice_bytes
        }
    }

    /// [`Self::slice_elems`] with `carrier` bytes where `slice_bytes` is 0.
    pub(crate) fn slice_elems_or(&self, dtype: DType, carrier: usize) -> usize {
        let mut slice = ((self.slice_bytes_or(carrier) / self.codec.code_bytes(dtype)) & !31).max(32);
        if self.codec.is_block_scaled() && slice >= self.scale_block {
            slice -= slice % self.scale_block;
        }
        slice
    }

    /// Sets the wire format.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }
    /// Sets the payload bytes per message.
    pub fn slice_bytes(mut self, bytes: usize) -> Self {
        self.slice_bytes = bytes;
        self
    }
    /// Sets the messages in flight each way.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }
    /// Sets the allreduce schedule.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
    /// Sets the deadline of each wait.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Turns payload checksums on or off.
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }
    /// Turns the cross-rank call check on or off.
    pub fn verify_calls(mut self, on: bool) -> Self {
        self.verify_calls = on;
        self
    }
    /// Sets the elements per scale of the block-scaled codecs.
    pub fn scale_block(mut self, elements: usize) -> Self {
        self.scale_block = elements;
        self
    }
}

struct State {
    transport: Box<dyn Transport>,
    poisoned: Option<String>,
    scratch: Scratch,
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
    carrier: &'static str,
    /// The carrier's message size, for calls with `slice_bytes` 0.
    message_bytes: usize,
}

impl Communicator {
    /// A communicator over any transport. If `RINGFUSE_FAULT` is set, its
    /// fault is injected (see [`crate::transport::fault`]).
    ///
    /// `Auto` uses the fixed rule unless `RINGFUSE_TUNING` asks for a probe
    /// or a cached file ([`crate::tuning`]; then this is collective).
    pub fn from_transport(t: Box<dyn Transport>) -> Self {
        Self::tuned(t, false, 0)
    }

    /// Builds with `ranks_per_host` (0: unknown), tunes as
    /// `RINGFUSE_TUNING` says (probing when unset if `probe_by_default`),
    /// then injects `RINGFUSE_FAULT`'s fault: the probe's traffic is not
    /// the traffic a fault test counts.
    pub(crate) fn tuned(t: Box<dyn Transport>, probe_by_default: bool, ranks_per_host: usize) -> Self {
        let mut c = Self::bare(t);
        c.ranks_per_host = ranks_per_host;
        match Tuning::from_env(&c, probe_by_default) {
            Ok(t) => c.tuning = t,
            // Auto still works (the fixed rule); say why it is not tuned.
            Err(e) => tracing::warn!("ringfuse: no tuning for Algorithm::Auto: {e}"),
        }
        // The probe's calls (a couple of thousand) are the library's, not
        // the user's: the user's first call is #0 in errors and flight
        // records. Every rank resets at the same point of its message
        // stream, and messages between two ranks arrive in order, so a
        // probe message can never be taken for a later call's.
        if c.seq.load(Ordering::Relaxed) > 0 {
            c.seq.store(0, Ordering::Relaxed);
            c.flight.forget();
        }
        match crate::transport::fault::from_env() {
            Some(f) => c.inject_fault(f),
            None => c,
        }
    }

    fn bare(t: Box<dyn Transport>) -> Self {
        let flight = Arc::new(FlightRecorder::new(t.rank(), t.size()));
        crate::flight::signal::register(&flight);
        Communicator {
            rank: t.rank(),
            size: t.size(),
            defaults: AllreduceOpts::default(),
            seq: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            flight,
            carrier: t.name(),
            message_bytes: t.message_bytes(),
            state: Mutex::new(State { transport: t, poisoned: None, scratch: Scratch::default() }),
            tuning: None,
            memo: Memo::default(),
            ranks_per_host: 0,
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
        self.memo.clear();
        Ok(())
    }

    /// Where an allreduce with `opts` on `dtype` runs.
    fn shape(&self, opts: &AllreduceOpts, dtype: DType) -> Shape {
        let slice = opts.slice_elems_or(dtype, self.message_bytes);
        Shape { size: self.size, per_host: self.ranks_per_host, slice, slots: opts.slots }
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

    /// The algorithm an allreduce of `count` elements of `dtype` with
    /// `opts` runs on this communicator.
    pub fn algorithm_for(&self, opts: &AllreduceOpts, dtype: DType, count: usize) -> Algorithm {
        if opts.algorithm != Algorithm::Auto || self.tuning.is_none() {
            return opts.resolve(dtype, count, self.tuning.as_ref(), self.shape(opts, dtype));
        }
        let wire_bytes = opts.codec.wire_bytes(dtype, count, opts.scale_block);
        self.memo.get(dtype, opts.codec, wire_bytes).unwrap_or_else(|| {
            let a = opts.resolve(dtype, count, self.tuning.as_ref(), self.shape(opts, dtype));
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

    /// A communicator on a duplicate of an existing rsmpi communicator. The
    /// caller must keep MPI initialised (its `Universe` alive) for as long
    /// as this communicator lives.
    #[cfg(feature = "mpi")]
    ///
    /// Collective: `Auto`'s cost model is probed here unless
    /// `RINGFUSE_TUNING` says otherwise ([`crate::tuning`]).
    pub fn from_mpi<C: ::mpi::traits::Communicator>(comm: &C) -> Self {
        let per_host = crate::mpi::ranks_per_host(comm);
        Self::tuned(crate::mpi::carrier(comm, None, per_host), true, per_host)
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

    /// Options the plain methods (`allreduce`, ...) use.
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
            flight: &self.flight,
            residual: None,
        };
        self.flight.begin(&desc, (n_rounds(self.size)) as usize);
        let r = exec::barrier(&mut cx);
        self.finish(&mut st, &desc, r)
    }

    /// Records how a collective ended; a mid-flight failure poisons the
    /// communicator and dumps the flight record.
    fn finish(&self, st: &mut State, desc: &OpDesc, r: Result<()>) -> Result<()> {
        self.flight.end(desc.seq, r.as_ref().err());
        if let Err(e) = &r {
            if !matches!(e, Error::Fp16Overflow { .. }) {
                st.transport.cancel_all();
                st.poisoned = Some(e.to_string());
                if std::env::var("RINGFUSE_FLIGHT_ON_ERROR").as_deref() != Ok("0") {
                    self.flight.snapshot(&format!("error in {desc}")).emit();
                }
            }
        }
        r
    }

    fn desc<T: Element>(
        &self,
        kind: Collective,
        count: usize,
        op: Option<ReduceOp>,
        root: Option<usize>,
        opts: &AllreduceOpts,
    ) -> OpDesc {
        let seq = self.seq.load(Ordering::Relaxed);
        OpDesc { kind, seq, dtype: T::DTYPE, count, op, codec: opts.codec, root }
    }

    fn lock(&self, desc: &OpDesc) -> Result<std::sync::MutexGuard<'_, State>> {
        // A panic while holding the lock (a bug) leaves the state as it was
        // at a hop boundary; poison it rather than propagate the panic.
        let st = self.state.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            g.poisoned.get_or_insert_with(|| "a thread panicked inside a collective".into());
            g
        });
        if self.aborted.load(Ordering::SeqCst) {
            return Err(Error::Aborted { rank: self.rank, op: desc.clone(), buffer: BufferState::Untouched });
        }
        if let Some(cause) = &st.poisoned {
            return Err(Error::Poisoned { rank: self.rank, op: desc.clone(), cause: cause.clone() });
        }
        Ok(st)
    }

    /// The common path of every data-moving collective.
    #[allow(clippy::too_many_arguments)] // the call's description, spelled out once for every collective
    fn call<'b, T: Element>(
        &self,
        kind: Collective,
        count: usize,
        op: Option<ReduceOp>,
        root: Option<usize>,
        opts: &AllreduceOpts,
        residual: Option<&mut [f32]>,
        build: impl FnOnce(usize, usize, ()) -> (AnySchedule, Local<'b, T>),
    ) -> Result<()> {
        let desc0 = self.desc::<T>(kind, count, op, root, opts);
        if opts.codec.is_block_scaled() && !(1..=crate::codec::MAX_SCALE_BLOCK).contains(&opts.scale_block) {
            return Err(Error::Unsupported {
                rank: self.rank,
                op: desc0,
                detail: format!(
                    "scale_block must be 1 to {} elements (got {})",
                    crate::codec::MAX_SCALE_BLOCK,
                    opts.scale_block
                ),
            });
        }
        if opts.slots == 0 || (1..64).contains(&opts.slice_bytes) {
            return Err(Error::Unsupported {
                rank: self.rank,
                op: desc0,
                detail: format!(
                    "slots must be >= 1 and slice_bytes 0 (the carrier's) or >= 64 (got {} and {})",
                    opts.slots, opts.slice_bytes
                ),
            });
        }
        if count > u32::MAX as usize * 32 {
            return Err(Error::Unsupported { rank: self.rank, op: desc0, detail: "more than 2^37 elements".into() });
        }
        let mut st = self.lock(&desc0)?;
        let desc = self.desc::<T>(kind, count, op, root, opts);
        self.seq.fetch_add(1, Ordering::Relaxed);
        let (sched, mut local) = build(self.rank, self.size, ());
        let mut residual = residual;
        if let (Some(res), Local::InPlace(buf)) = (residual.as_deref_mut(), &mut local) {
            // Error feedback: last call's encode errors join this call's
            // input (f32 buffers only; checked by the caller).
            for (b, r) in bytemuck::cast_slice_mut::<T, f32>(buf).iter_mut().zip(res.iter_mut()) {
                *b += *r;
                *r = 0.0; // stays 0 where nothing is encoded (one rank)
            }
        }
        let steps = sched.len();
        self.flight.begin(&desc, steps);
        if self.size == 1 {
            local.settle();
            self.flight.end(desc.seq, None);
            // Nothing travels, so no wire rounding applies; Avg divides by 1.
            return Ok(());
        }
        let slice = opts.slice_elems_or(T::DTYPE, self.message_bytes);
        let reduce = op.unwrap_or(ReduceOp::Sum);
        let avg = (reduce == ReduceOp::Avg).then_some(self.size);
        let State { transport, scratch, .. } = &mut *st;
        #[cfg(test)]
        let per_round = test_hooks::per_round(opts.slots);
        #[cfg(not(test))]
        let per_round = opts.slots;
        let mut cx = Ctx {
            t: transport.as_mut(),
            desc: &desc,
            timeout: opts.timeout,
            slice,
            slots: opts.slots,
            per_round,
            abort: &self.aborted,
            scratch,
            checksum: opts.checksum,
            verify_calls: opts.verify_calls,
            flight: &self.flight,
            residual,
        };
        let (codec, block) = (opts.codec, opts.scale_block);
        let r = dispatch::<T, _>(&mut cx, &sched, &mut local, reduce, avg, codec, block);
        if r.is_ok() {
            local.settle();
        }
        let r = match r {
            Ok(flags) if flags & FLAG_OVERFLOW != 0 && opts.codec != Codec::Native => {
                Err(Error::Fp16Overflow { rank: self.rank, op: desc.clone() })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.finish(&mut st, &desc, r)
    }
}

/// Rounds of the dissemination barrier: `ceil(log2 n)`.
fn n_rounds(n: usize) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

fn dispatch<E: Element, S: Schedule>(
    cx: &mut Ctx<'_>,
    s: &S,
    local: &mut Local<'_, E>,
    op: ReduceOp,
    avg: Option<usize>,
    codec: Codec,
    block: usize,
) -> Result<u16> {
    let stores = Stores::for_output(std::mem::size_of_val(local.output()));
    match codec {
        Codec::Fp16Scaled => exec::run(cx, &BlockScaled::<ScaledF16>::new(block), s, local, op, avg),
        Codec::Int8 => exec::run(cx, &BlockScaled::<Int8>::new(block), s, local, op, avg),
        Codec::Fp16 => exec::run(cx, &Elementwise::<f16>::new(stores), s, local, op, avg),
        Codec::Bf16 => exec::run(cx, &Elementwise::<bf16>::new(stores), s, local, op, avg),
        Codec::Native => exec::run(cx, &Elementwise::<E>::new(stores), s, local, op, avg),
    }
}

#[cfg(test)]
pub(crate) mod test_hooks {
    use std::cell::Cell;
    thread_local! {
        static STEP_MAJOR: Cell<bool> = const { Cell::new(false) };
    }
    /// Makes this thread's calls walk whole steps (no rounds).
    pub fn walk_step_major(on: bool) {
        STEP_MAJOR.with(|c| c.set(on));
    }
    pub fn per_round(slots: usize) -> usize {
        if STEP_MAJOR.with(Cell::get) {
            usize::MAX / 2
        } else {
            slots
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The deadlock the executor's rounds prevent: with rendezvous sends,
    /// walking whole steps stalls as soon as a block has more slices than
    /// the receive and send windows hold; walking in rounds completes.
    #[test]
    fn rounds_prevent_the_rendezvous_deadlock() {
        let opts = AllreduceOpts::default()
            .slice_bytes(256)
            .slots(2)
            .timeout(Duration::from_millis(300))
            .algorithm(Algorithm::Ring);
        let run = |step_major: bool| {
            crate::local::run(2, |comm| {
                test_hooks::walk_step_major(step_major);
                let mut v = vec![1f32; 64 * 20]; // 10 slices per block
                comm.allreduce_with(&mut v, ReduceOp::Sum, &opts).map(|_| v[0])
            })
        };
        assert!(run(false).iter().all(|r| matches!(r, Ok(x) if *x == 2.0)));
        assert!(run(true).iter().all(|r| matches!(r, Err(Error::Timeout { .. }))), "step-major walk should deadlock");
    }

    /// Calls whose output streams (by default those of half the
    /// last-level cache and more) give the bits of calls that write
    /// through the cache, in place and out of place, for every algorithm,
    /// element-wise codec and an odd rank count.
    #[test]
    fn calls_that_stream_their_output_give_the_cached_bits() {
        use crate::cpu::stores::test_hooks::STREAM_FROM_BYTES;
        use std::sync::atomic::Ordering::Relaxed;
        let run = |from: usize| {
            STREAM_FROM_BYTES.store(from, Relaxed);
            let mut all = Vec::new();
            for n in [2, 3] {
                all.push(crate::local::run(n, |comm| {
                    let mut got = Vec::new();
                    for algo in
                        [Algorithm::Ring, Algorithm::Tree, Algorithm::HalvingDoubling, Algorithm::RecursiveDoubling]
                    {
                        for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
                            let o = AllreduceOpts::default().algorithm(algo).codec(codec).slice_bytes(4096);
                            let input: Vec<f32> =
                                (0..10007).map(|i| ((i * 7 + comm.rank()) % 1000) as f32 * 0.37).collect();
                            let mut out = vec![0f32; input.len()];
                            comm.allreduce_into_with(&input, &mut out, ReduceOp::Avg, &o).unwrap();
                            let mut inplace = input.clone();
                            comm.allreduce_with(&mut inplace, ReduceOp::Sum, &o).unwrap();
                            got.push((
                                out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                                inplace.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            ));
                        }
                    }
                    got
                }));
            }
            all
        };
        let cached = run(usize::MAX);
        let streamed = run(1);
        STREAM_FROM_BYTES.store(0, Relaxed);
        assert!(cached == streamed, "streaming stores changed a result");
    }

    /// A call that leaves `slice_bytes` at 0 slices by its carrier's
    /// message size; one that sets it, by its own.
    #[test]
    fn the_carrier_sizes_messages_unless_the_call_does() {
        use crate::transport::local::{LocalTransport, LocalWorld};
        let world = LocalWorld::new(2);
        let sends: Vec<(u32, u32, usize)> = std::thread::scope(|s| {
            let ranks: Vec<_> = (0..2)
                .map(|rank| {
                    let world = world.clone();
                    s.spawn(move || {
                        let t = LocalTransport::new(world, rank).with_message_bytes(4096);
                        let comm = Communicator::from_transport(Box::new(t));
                        let ring = AllreduceOpts::default().algorithm(Algorithm::Ring);
                        // 256 KiB: a block of 128 KiB per rank and step.
                        let mut v = vec![1f32; 1 << 16];
                        comm.allreduce_with(&mut v, ReduceOp::Sum, &ring).unwrap();
                        assert!(v.iter().all(|&x| x == 2.0));
                        comm.allreduce_with(&mut v, ReduceOp::Sum, &ring.clone().slice_bytes(64 << 10)).unwrap();
                        assert!(v.iter().all(|&x| x == 4.0));
                        let ops = comm.flight_record().ops;
                        (ops[0].msgs_sent, ops[1].msgs_sent, comm.message_bytes(&ring))
                    })
                })
                .collect();
            ranks.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Two steps (reduce-scatter, allgather) of a 128 KiB block: 32
        // messages each at 4 KiB, 2 at 64 KiB.
        assert_eq!(sends, vec![(64, 4, 4096); 2]);
    }
}
