//! The path every collective shares once its arguments are known:
//! validate, lock, run one schedule through the executor, record.

use super::*;
use crate::cpu::hop::HopKernels;
use crate::cpu::wire_stores::WireChooser;
use crate::exec::HostHops;

impl Communicator {
    /// Records how a collective ended; a mid-flight failure poisons the
    /// communicator and dumps the flight record.
    pub(super) fn finish(&self, st: &mut State, desc: &OpDesc, r: Result<()>) -> Result<()> {
        self.flight.end(desc.seq, r.as_ref().err());
        if let Err(e) = &r {
            if !matches!(e, Error::WireOverflow { .. }) {
                st.transport.cancel_all();
                st.poisoned = Some(e.to_string());
                if super::env::flight_on_error() {
                    self.flight.snapshot(&format!("error in {desc}")).emit();
                }
            }
        }
        r
    }

    pub(super) fn desc<T: Element>(
        &self,
        kind: Collective,
        count: usize,
        op: Option<ReduceOp>,
        root: Option<usize>,
        opts: &AllreduceOpts,
    ) -> OpDesc {
        self.desc_of(kind, T::DTYPE, count, op, root, opts)
    }

    /// [`Self::desc`] for a runtime element type (device buffers).
    pub(super) fn desc_of(
        &self,
        kind: Collective,
        dtype: DType,
        count: usize,
        op: Option<ReduceOp>,
        root: Option<usize>,
        opts: &AllreduceOpts,
    ) -> OpDesc {
        let seq = self.seq.load(Ordering::Relaxed);
        OpDesc { kind, seq, dtype, count, op, codec: opts.codec, root }
    }

    pub(super) fn lock(&self, desc: &OpDesc) -> Result<std::sync::MutexGuard<'_, State>> {
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
    pub(super) fn call<'b, T: Element>(
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
        opts.check_bounds(self.rank)?;
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
        let State { transport, scratch, wire, .. } = &mut *st;
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
            agreed: agreed(sched.code(), opts, slice),
            flight: &self.flight,
        };
        let (codec, block) = (opts.codec, opts.scale_block);
        let r = dispatch::<T, _>(&mut cx, &sched, &mut local, (reduce, avg, residual), (codec, block), wire);
        if r.is_ok() {
            local.settle();
        }
        let r = match r {
            Ok(flags) if flags & FLAG_OVERFLOW != 0 && opts.codec != Codec::Native => {
                Err(Error::WireOverflow { rank: self.rank, op: desc.clone() })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        self.finish(&mut st, &desc, r)
    }
}

/// The options every rank must pass alike, as the headers carry them.
pub(super) fn agreed(schedule: u8, opts: &AllreduceOpts, slice: usize) -> crate::wire::Agreed {
    crate::wire::Agreed {
        schedule,
        // Bounded by check_bounds: slots <= 64, slices <= 64 MiB.
        slots: opts.slots as u8,
        scale_block: if opts.codec.is_block_scaled() { opts.scale_block as u16 } else { 0 },
        slice: slice as u32,
    }
}

/// Rounds of the dissemination barrier: `ceil(log2 n)`.
pub(super) fn n_rounds(n: usize) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

fn dispatch<E: Element, S: Schedule>(
    cx: &mut Ctx<'_>,
    s: &S,
    local: &mut Local<'_, E>,
    how: (ReduceOp, Option<usize>, Option<&mut [f32]>),
    (codec, block): (Codec, usize),
    wire: &WireChooser,
) -> Result<u16> {
    let stores = Stores::for_output(std::mem::size_of_val(local.output()));
    match codec {
        Codec::Fp16Scaled => on_host(cx, &BlockScaled::<ScaledF16>::new(block), s, local, how),
        Codec::Int8 => on_host(cx, &BlockScaled::<Int8>::new(block), s, local, how),
        Codec::Fp16 => on_host(cx, &Elementwise::<f16>::new(stores, wire), s, local, how),
        Codec::Bf16 => on_host(cx, &Elementwise::<bf16>::new(stores, wire), s, local, how),
        Codec::Native => on_host(cx, &Elementwise::<E>::new(stores, wire), s, local, how),
    }
}

/// The executor over the host backend: `local` with kernels `k`.
fn on_host<E: Element, K: HopKernels<E>, S: Schedule>(
    cx: &mut Ctx<'_>,
    k: &K,
    s: &S,
    local: &mut Local<'_, E>,
    (op, avg, residual): (ReduceOp, Option<usize>, Option<&mut [f32]>),
) -> Result<u16> {
    exec::run(cx, &mut HostHops::new(k, local, op, avg, residual), s)
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
