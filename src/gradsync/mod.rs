//! [`GradSync`]: the gradient synchroniser a training loop calls once per
//! step.
//!
//! It packs a model's gradients into buckets (25 MiB by default, filled
//! in reverse registration order, as backward produces them), and runs
//! one allreduce per bucket on a background progress thread as soon as
//! the bucket's last gradient is marked ready, so communication overlaps
//! the rest of the backward pass. Buckets are `f32` whatever the
//! gradients' type (f16 and bf16 gradients are widened on the way in);
//! they are allocated once, so a step allocates nothing.
//!
//! ```
//! use ringfuse::{Codec, GradSync, GradSyncOpts};
//!
//! let out = ringfuse::local::run(2, |comm| {
//!     // Two parameters: a weight matrix and a bias.
//!     let (mut w, mut b) = (vec![comm.rank() as f32; 600], vec![1.0f32; 30]);
//!     let mut sync = GradSync::new(comm, &[w.len(), b.len()], GradSyncOpts::default().codec(Codec::Fp16)).unwrap();
//!     // ... backward computes the gradients into w and b, then:
//!     sync.synchronize(&mut [&mut w, &mut b]).unwrap(); // the one line
//!     (w[0], b[0])
//! });
//! assert_eq!(out, vec![(0.5, 1.0); 2]); // averaged over the 2 ranks
//! ```
//!
//! To overlap, mark each gradient ready as backward produces it, then
//! wait at the end of the step:
//!
//! ```
//! # use ringfuse::{GradSync, GradSyncOpts};
//! # ringfuse::local::run(2, |comm| {
//! # let (mut w, mut b) = (vec![1f32; 600], vec![1f32; 30]);
//! # let mut sync = GradSync::new(comm, &[600, 30], GradSyncOpts::default()).unwrap();
//! sync.mark_ready(1, &b).unwrap(); // the last layer's gradient comes first
//! // ... backward goes on computing w's gradient while b's bucket travels ...
//! sync.mark_ready(0, &w).unwrap();
//! sync.wait(&mut [&mut w, &mut b]).unwrap();
//! # });
//! ```
//!
//! # Threads and MPI
//!
//! The progress thread is the only thread that calls MPI while a step is
//! in flight (from the first `mark_ready` to `wait`), which is what
//! `MPI_THREAD_SERIALIZED` (what [`crate::mpi::init`] asks for) permits:
//! the application must not make its own MPI calls in that window.
//! Between steps, [`GradSync::comm`] may be used freely.
//!
//! # Deadlines
//!
//! `wait` returns when the progress thread has finished every bucket;
//! each bucket's allreduce fails by its own deadline
//! ([`crate::AllreduceOpts::timeout`] per wait) rather than hang, and a
//! progress thread that dies is reported, not waited for.

mod compress;
mod handoff;
mod layout;
mod local_sgd;
mod powersgd;
mod select;
mod topk;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::codec::Codec;
use crate::comm::{AllreduceOpts, Communicator};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::schedule::{Ring, RingKind};
use compress::Compressor;
use handoff::Handoff;
use layout::Layout;
pub use local_sgd::LocalSgd;
use powersgd::PowerState;
use topk::TopKState;
use worker::{Bucket, Done};

/// How gradients are compressed beyond the codec.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Compression {
    /// Every gradient element travels (in the codec's format).
    #[default]
    None,
    /// PowerSGD (PyTorch DDP's `powerSGD_hook`): each gradient matrix that
    /// gains travels as two factors of this rank, warm-started from the
    /// last step, with error feedback; vectors and small matrices travel
    /// whole. Needs the parameters' shapes ([`GradSync::with_shapes`]).
    /// Codec error feedback does not apply (PowerSGD keeps its own).
    PowerSgd {
        /// Rank of the factors (PyTorch's `matrix_approximation_rank`;
        /// 1 to 4 is usual).
        rank: usize,
    },
    /// Top-k sparsification (Deep Gradient Compression): each rank sends
    /// the largest `fraction` of its accumulated gradient entries as
    /// (index, value) pairs, allgathered (the indices on the native wire,
    /// the values in the codec's format); the rest, and the values'
    /// rounding, waits for later steps (error feedback).
    TopK {
        /// Share of each bucket's entries sent per step, in (0, 1]
        /// (0.01: 1%).
        fraction: f32,
        /// Momentum correction: the optimiser's momentum (0.9 for SGD
        /// with momentum), accumulated here instead of in the optimiser,
        /// whose own momentum must then be off; 0 for none.
        momentum: f32,
    },
}

/// How a [`GradSync`] synchronises.
#[derive(Clone, Debug, PartialEq)]
pub struct GradSyncOpts {
    /// Bytes of `f32` gradients per bucket (default 25 MiB, PyTorch DDP's
    /// default). Smaller buckets start communicating earlier; larger ones
    /// make fewer calls.
    pub bucket_bytes: usize,
    /// The allreduce options of every bucket (codec, slicing, deadline);
    /// [`AllreduceOpts::default`] unless set.
    pub allreduce: AllreduceOpts,
    /// Divide each gradient by the number of ranks *before* encoding, so
    /// the wire carries the mean's parts (a sum of many ranks' gradients
    /// could overflow FP16). Default on.
    pub average: bool,
    /// Error feedback: carry each step's encode errors into the next step
    /// (see [`Communicator::allreduce_with_feedback`]). `None` (the
    /// default) means on for [`Codec::Int8`], off otherwise.
    pub error_feedback: Option<bool>,
    /// Compute, each step, every bucket's error against an exact `f64`
    /// shadow allreduce (one more allreduce of twice the bytes per bucket:
    /// for debugging, off by default, and free when off).
    pub report: bool,
    /// Compression beyond the codec (default none).
    pub compression: Compression,
}

impl Default for GradSyncOpts {
    /// The built-in defaults; never reads the environment
    /// ([`GradSyncOpts::from_env`] does).
    fn default() -> Self {
        GradSyncOpts {
            bucket_bytes: 25 << 20,
            allreduce: AllreduceOpts::default(),
            average: true,
            error_feedback: None,
            report: false,
            compression: Compression::None,
        }
    }
}

impl GradSyncOpts {
    /// The defaults with the buckets' allreduce options from
    /// [`AllreduceOpts::from_env`] (the `RINGFUSE_*` overrides).
    ///
    /// # Errors
    /// [`Error::Setting`] where a `RINGFUSE_*` variable cannot be parsed.
    pub fn from_env() -> Result<Self> {
        Ok(GradSyncOpts { allreduce: AllreduceOpts::from_env()?, ..Self::default() })
    }

    /// Sets the wire format of every bucket.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.allreduce.codec = codec;
        self
    }
    /// Sets the bucket size in bytes.
    pub fn bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes;
        self
    }
    /// Turns error feedback on or off (default: on for `Int8` only).
    pub fn error_feedback(mut self, on: bool) -> Self {
        self.error_feedback = Some(on);
        self
    }
    /// Turns the per-step error report on or off.
    pub fn report(mut self, on: bool) -> Self {
        self.report = on;
        self
    }
    /// Turns averaging on or off.
    pub fn average(mut self, on: bool) -> Self {
        self.average = on;
        self
    }
    /// Sets the compression beyond the codec.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
    /// Whether error feedback is on for these options: the codec's
    /// (default on for `Int8`) without compression, the compressor's
    /// own (default on) with it.
    pub fn feedback_on(&self) -> bool {
        match self.compression {
            Compression::None => self.error_feedback.unwrap_or(self.allreduce.codec == Codec::Int8),
            _ => self.error_feedback.unwrap_or(true),
        }
    }
}

/// One bucket's figures for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BucketReport {
    /// Bucket index (0 is the first to be reduced: the last parameters).
    pub bucket: usize,
    /// Gradient elements in the bucket.
    pub elements: usize,
    /// Payload bytes this rank sent for the bucket.
    pub wire_bytes: usize,
    /// Largest `|synchronised - exact|` (exact: the `f64` sum, or mean,
    /// of this step's gradients), when reporting.
    pub max_abs_err: Option<f64>,
    /// `max_abs_err` over the bucket's largest `|exact|` (a norm-wise
    /// relative error: element-wise ratios explode near zero).
    pub max_rel_err: Option<f64>,
}

/// What the last step moved and, when reporting, how far it was from
/// exact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Steps completed before this one.
    pub step: u64,
    /// Per bucket, in bucket order.
    pub buckets: Vec<BucketReport>,
}

impl StepReport {
    /// Payload bytes this rank sent in the step.
    pub fn wire_bytes(&self) -> usize {
        self.buckets.iter().map(|b| b.wire_bytes).sum()
    }
    /// The largest relative error of any bucket (when reporting).
    pub fn max_rel_err(&self) -> Option<f64> {
        self.buckets.iter().filter_map(|b| b.max_rel_err).reduce(f64::max)
    }
}

/// The gradient synchroniser; see the [module docs](self).
pub struct GradSync {
    comm: Arc<Communicator>,
    opts: GradSyncOpts,
    layout: Layout,
    /// Buckets on this thread (`None` while at the worker).
    home: Vec<Option<Bucket>>,
    /// Per bucket: parameters still to be marked this step.
    missing: Vec<usize>,
    /// Per parameter: marked this step.
    marked: Vec<bool>,
    in_flight: usize,
    jobs: Arc<Handoff<Bucket>>,
    done: Arc<Handoff<Done>>,
    worker: Option<JoinHandle<()>>,
    report: StepReport,
}

impl GradSync {
    /// A synchroniser for parameters of `lens` elements (registration
    /// order: the order of the model's layers, first to last), over
    /// `comm` (a `Communicator`, or an `Arc` of one to share it between
    /// synchronisers, one at a time).
    pub fn new(comm: impl Into<Arc<Communicator>>, lens: &[usize], opts: GradSyncOpts) -> Result<GradSync> {
        let comm: Arc<Communicator> = comm.into();
        if let Compression::PowerSgd { .. } = opts.compression {
            let detail = "PowerSGD needs each parameter's shape: build with GradSync::with_shapes".into();
            return Err(Error::GradSync { rank: comm.rank(), step: 0, detail });
        }
        let shapes: Vec<(usize, usize)> = lens.iter().map(|&l| (l, 1)).collect();
        Self::with_shapes(comm, &shapes, opts)
    }

    /// [`new`](Self::new) for parameters of these shapes (rows, columns:
    /// a tensor of more dimensions is its first dimension by the product
    /// of the rest, as PyTorch's PowerSGD reads it; a vector is `(len,
    /// 1)`). Only [`Compression::PowerSgd`] looks at the shapes.
    pub fn with_shapes(
        comm: impl Into<Arc<Communicator>>,
        shapes: &[(usize, usize)],
        opts: GradSyncOpts,
    ) -> Result<GradSync> {
        let comm: Arc<Communicator> = comm.into();
        let rank = comm.rank();
        if opts.bucket_bytes < 4 {
            return Err(Error::GradSync { rank, step: 0, detail: "bucket_bytes must be at least 4".into() });
        }
        let refuse = |detail: String| Err(Error::GradSync { rank, step: 0, detail });
        match opts.compression {
            Compression::PowerSgd { rank: 0 } => return refuse("PowerSGD rank must be at least 1".into()),
            Compression::TopK { fraction, momentum }
                if !(fraction > 0.0 && fraction <= 1.0 && (0.0..1.0).contains(&momentum)) =>
            {
                return refuse(format!(
                    "top-k fraction must be in (0, 1] and momentum in [0, 1): {fraction}, {momentum}"
                ));
            }
            _ => {}
        }
        let lens: Vec<usize> = shapes.iter().map(|&(r, c)| r * c).collect();
        let layout = Layout::new(&lens, opts.bucket_bytes / 4);
        let feedback = opts.feedback_on();
        let n = comm.size();
        let home: Vec<Option<Bucket>> = (layout.buckets.iter().enumerate())
            .map(|(index, &(len, _))| {
                let compressor = match opts.compression {
                    Compression::None => None,
                    Compression::PowerSgd { rank: r } => {
                        let params: Vec<(usize, usize, usize)> = (layout.place.iter().zip(shapes))
                            .filter(|(place, _)| place.0 == index)
                            .map(|(&(_, off, _), &(rows, cols))| (off, rows, cols))
                            .collect();
                        // The same start on every rank, a different one per bucket.
                        let seed = 0x5eed_0000 + index as u64;
                        Some(Compressor::PowerSgd(PowerState::new(len, &params, r, seed, feedback)))
                    }
                    Compression::TopK { fraction, momentum } => {
                        Some(Compressor::TopK(TopKState::new(len, n, fraction, momentum, feedback)))
                    }
                };
                let codec_feedback = feedback && compressor.is_none();
                Some(Bucket {
                    index,
                    data: vec![0.0; len],
                    residual: if codec_feedback { vec![0.0; len] } else { Vec::new() },
                    shadow: if opts.report { vec![0.0; len] } else { Vec::new() },
                    compressor,
                })
            })
            .collect();
        let report = StepReport {
            step: 0,
            buckets: (layout.buckets.iter().enumerate())
                .map(|(bucket, &(elements, _))| BucketReport {
                    bucket,
                    elements,
                    wire_bytes: bucket_wire_bytes(&opts.allreduce, n, elements, home[bucket].as_ref()),
                    ..Default::default()
                })
                .collect(),
        };
        let (jobs, done, worker) = start_worker(&comm, &opts, layout.buckets.len())?;
        Ok(GradSync {
            comm,
            missing: layout.buckets.iter().map(|b| b.1).collect(),
            marked: vec![false; lens.len()],
            layout,
            home,
            opts,
            in_flight: 0,
            jobs,
            done,
            worker: Some(worker),
            report,
        })
    }

    /// The communicator (for calls between steps).
    pub fn comm(&self) -> &Communicator {
        &self.comm
    }

    /// Goes on without lost ranks, after a step failed with
    /// [`Error::PeerLost`]: every survivor calls it, and this synchroniser
    /// then runs over the survivors' [shrunk](Communicator::shrink)
    /// communicator, averaging over the new rank count. Returns the lost
    /// ranks (of the old numbering).
    ///
    /// The failed step was not applied (its [`wait`](Self::wait) returned
    /// the error), so the caller runs it again: compute the gradients of
    /// this step's batch with the new rank and size (so the survivors
    /// cover the lost rank's share) and mark them ready. Every survivor
    /// holds the same weights, bit for bit, as after every finished step;
    /// error feedback keeps each rank's residual.
    ///
    /// # Errors
    /// [`Error::GradSync`] during a step (between `mark_ready` and `wait`);
    /// [`Communicator::shrink`]'s errors.
    pub fn shrink(&mut self) -> Result<Vec<usize>> {
        self.idle("shrink")?;
        let comm = Arc::new(self.comm.shrink()?);
        self.stop();
        let rank = comm.rank();
        let n = comm.size();
        for ((r, &(elements, _)), b) in self.report.buckets.iter_mut().zip(&self.layout.buckets).zip(&self.home) {
            r.wire_bytes = bucket_wire_bytes(&self.opts.allreduce, n, elements, b.as_ref());
        }
        let (jobs, done, worker) = start_worker(&comm, &self.opts, self.layout.buckets.len())?;
        (self.jobs, self.done, self.worker) = (jobs, done, Some(worker));
        let lost = comm.lost_ranks().to_vec();
        tracing::warn!("GradSync: rank {rank} of {n} goes on at step {}, ranks {lost:?} lost", self.report.step);
        self.comm = comm;
        Ok(lost)
    }

    /// The options.
    pub fn opts(&self) -> &GradSyncOpts {
        &self.opts
    }

    /// Buckets and their elements, in the order they are reduced.
    pub fn buckets(&self) -> Vec<usize> {
        self.layout.buckets.iter().map(|b| b.0).collect()
    }

    /// Copies `params` from rank 0 to every rank, so all start from the
    /// same weights (native wire: exact). Not during a step.
    pub fn broadcast_parameters<T: Element>(&self, params: &mut [&mut [T]]) -> Result<()> {
        self.idle("broadcast_parameters")?;
        let opts = AllreduceOpts { codec: Codec::Native, ..self.opts.allreduce.clone() };
        params.iter_mut().try_for_each(|p| self.comm.broadcast_with(p, 0, &opts))
    }

    /// Hands parameter `param`'s gradient over (copied, widened to `f32`);
    /// when it completes its bucket, the bucket's allreduce starts on the
    /// progress thread.
    pub fn mark_ready<T: Element>(&mut self, param: usize, grad: &[T]) -> Result<()> {
        let dst = self.grad_buffer(param)?;
        if grad.len() != dst.len() {
            let len = dst.len();
            return Err(self.err(format!("parameter {param} has {} elements, registered with {len}", grad.len())));
        }
        crate::element::widen(grad, dst);
        self.mark_written(param)
    }

    /// The bucket memory of parameter `param`'s gradient, for a backward
    /// pass that writes its `f32` gradient there directly (PyTorch DDP's
    /// `gradient_as_bucket_view`): no copy in, and with
    /// [`wait_in_place`](Self::wait_in_place) no copy out. It holds the
    /// last step's result until overwritten; overwrite all of it, then call
    /// [`mark_written`](Self::mark_written).
    pub fn grad_buffer(&mut self, param: usize) -> Result<&mut [f32]> {
        let (b, off, len) = self.place(param)?;
        if self.marked[param] {
            return Err(self.err(format!("parameter {param} was already marked ready this step")));
        }
        if self.home[b].is_none() {
            return Err(self.err(format!("bucket {b} of parameter {param} is being reduced")));
        }
        Ok(&mut self.home[b].as_mut().expect("checked above").data[off..off + len])
    }

    /// Says that parameter `param`'s gradient is in its
    /// [`grad_buffer`](Self::grad_buffer); when it completes its bucket,
    /// the bucket's allreduce starts on the progress thread.
    pub fn mark_written(&mut self, param: usize) -> Result<()> {
        let (b, _, _) = self.place(param)?;
        if self.marked[param] {
            return Err(self.err(format!("parameter {param} was already marked ready this step")));
        }
        self.marked[param] = true;
        self.missing[b] -= 1;
        if self.missing[b] == 0 {
            let bucket = self.home[b].take().expect("a bucket with unmarked parameters is home");
            if self.jobs.push(bucket).is_err() {
                return Err(self.err("the progress thread has stopped".into()));
            }
            self.in_flight += 1;
        }
        Ok(())
    }

    /// Waits for every bucket of this step and writes the synchronised
    /// gradients into `grads` (every parameter, registration order), each
    /// bucket's as soon as it arrives. Every parameter must have been
    /// marked ready. After an error the contents of `grads` are
    /// unspecified.
    pub fn wait<T: Element>(&mut self, grads: &mut [&mut [T]]) -> Result<&StepReport> {
        if grads.len() != self.marked.len() {
            return Err(self.err(format!("{} gradients given, {} registered", grads.len(), self.marked.len())));
        }
        if let Some((p, g)) = grads.iter().enumerate().find(|(p, g)| g.len() != self.layout.place[*p].2) {
            let len = self.layout.place[p].2;
            return Err(self.err(format!("gradient {p} has {} elements, registered with {len}", g.len())));
        }
        self.drain(|layout, bucket| {
            for (p, &(b, off, len)) in layout.place.iter().enumerate() {
                if b == bucket.index {
                    let src = &bucket.data[off..off + len];
                    grads[p].iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f32(*s));
                }
            }
        })
    }

    /// Waits for every bucket of this step, leaving the synchronised
    /// gradients in the buckets: read them with [`grad`](Self::grad).
    pub fn wait_in_place(&mut self) -> Result<&StepReport> {
        self.drain(|_, _| {})
    }

    /// Parameter `param`'s gradient in its bucket: after
    /// [`wait_in_place`](Self::wait_in_place), the synchronised one.
    pub fn grad(&self, param: usize) -> Result<&[f32]> {
        let (b, off, len) = self.place(param)?;
        match self.home[b].as_ref() {
            Some(bucket) => Ok(&bucket.data[off..off + len]),
            None => Err(self.err(format!("bucket {b} of parameter {param} is being reduced"))),
        }
    }

    /// Collects every bucket in flight, calling `arrived` on each that
    /// succeeded (until one fails), and closes the step.
    fn drain(&mut self, mut arrived: impl FnMut(&Layout, &Bucket)) -> Result<&StepReport> {
        if let Some(p) = self.marked.iter().position(|m| !m) {
            let missing = self.marked.iter().filter(|m| !**m).count();
            return Err(self.err(format!(
                "wait() before every gradient was marked ready: parameter {p} (and {} more) missing",
                missing - 1
            )));
        }
        let mut first_err = None;
        while self.in_flight > 0 {
            let Some(Done { bucket, result }) = self.done.pop() else {
                return Err(self.err("the progress thread stopped with buckets in flight".into()));
            };
            self.in_flight -= 1;
            match result {
                Err(e) => {
                    tracing::error!(bucket = bucket.index, "GradSync bucket failed: {e}");
                    first_err.get_or_insert(e);
                }
                Ok(()) if first_err.is_none() => arrived(&self.layout, &bucket),
                Ok(()) => {}
            }
            let b = bucket.index;
            self.home[b] = Some(bucket);
        }
        self.marked.iter_mut().for_each(|m| *m = false);
        self.missing.iter_mut().zip(&self.layout.buckets).for_each(|(m, b)| *m = b.1);
        if let Some(e) = first_err {
            return Err(e);
        }
        if self.opts.report {
            for (r, b) in self.report.buckets.iter_mut().zip(&self.home) {
                let b = b.as_ref().expect("home");
                let (mut abs, mut big) = (0f64, 0f64);
                for (g, x) in b.data.iter().zip(&b.shadow) {
                    abs = abs.max((*g as f64 - x).abs());
                    big = big.max(x.abs());
                }
                r.max_abs_err = Some(abs);
                r.max_rel_err = Some(if big > 0.0 { abs / big } else { abs });
            }
        }
        self.report.step += 1;
        Ok(&self.report)
    }

    /// Marks every gradient ready (last parameter first) and waits: the
    /// blocking form of one step.
    pub fn synchronize<T: Element>(&mut self, grads: &mut [&mut [T]]) -> Result<&StepReport> {
        if grads.len() != self.marked.len() {
            return Err(self.err(format!("{} gradients given, {} registered", grads.len(), self.marked.len())));
        }
        for p in (0..grads.len()).rev() {
            self.mark_ready(p, grads[p])?;
        }
        self.wait(grads)
    }

    /// The last step's report (wire bytes always; errors when
    /// [`GradSyncOpts::report`] is on).
    pub fn last_report(&self) -> &StepReport {
        &self.report
    }

    fn idle(&self, what: &str) -> Result<()> {
        if self.in_flight > 0 || self.marked.iter().any(|m| *m) {
            return Err(self.err(format!("{what} during a step (between mark_ready and wait)")));
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.jobs.close(); // the worker's pop returns None and it ends
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }

    /// (bucket, offset, length) of a registered parameter.
    fn place(&self, param: usize) -> Result<(usize, usize, usize)> {
        match self.layout.place.get(param) {
            Some(&p) => Ok(p),
            None => Err(self.err(format!("parameter {param} does not exist ({} registered)", self.marked.len()))),
        }
    }

    fn err(&self, detail: String) -> Error {
        Error::GradSync { rank: self.comm.rank(), step: self.report.step, detail }
    }
}

/// Buckets' hand-offs to and from the progress thread of `comm`'s rank,
/// and the thread, started.
#[allow(clippy::type_complexity)] // the three parts GradSync keeps
fn start_worker(
    comm: &Arc<Communicator>,
    opts: &GradSyncOpts,
    buckets: usize,
) -> Result<(Arc<Handoff<Bucket>>, Arc<Handoff<Done>>, JoinHandle<()>)> {
    let rank = comm.rank();
    let slots = buckets.max(1);
    let (jobs, done) = (Arc::new(Handoff::new(slots)), Arc::new(Handoff::new(slots)));
    let (c, o, j, d) = (comm.clone(), opts.clone(), jobs.clone(), done.clone());
    let worker = std::thread::Builder::new()
        .name(format!("ringfuse-gradsync-{rank}"))
        .spawn(move || worker::run(c, o, j, d))
        .map_err(|e| Error::GradSync { rank, step: 0, detail: format!("cannot start the progress thread: {e}") })?;
    Ok((jobs, done, worker))
}

impl Drop for GradSync {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Payload bytes rank 0 sends for a bucket of `elements`: one allreduce
/// of them all, or what its compressor sends.
fn bucket_wire_bytes(opts: &AllreduceOpts, n: usize, elements: usize, bucket: Option<&Bucket>) -> usize {
    match bucket.and_then(|b| b.compressor.as_ref()) {
        Some(c) => c.wire_bytes(
            n,
            |count| ring_wire_bytes(opts, n, count),
            |count| opts.codec.wire_bytes(crate::DType::F32, count, opts.scale_block),
        ),
        None => ring_wire_bytes(opts, n, elements),
    }
}

/// Payload bytes rank 0 sends in a ring allreduce of `count` f32s (the
/// ring: what GradSync's buckets run, `Auto` picking it for any bucket
/// worth the name).
fn ring_wire_bytes(opts: &AllreduceOpts, n: usize, count: usize) -> usize {
    let s = Ring { rank: 0, size: n, count, kind: RingKind::Allreduce };
    crate::schedule::sent_bytes(&s, |m| opts.codec.wire_bytes(crate::DType::F32, m, opts.scale_block))
}
