//! One GPU with the kernels loaded, and one stream their launches queue on.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig};

use super::{compile, ffi, kernels, Hop, Kind, Src};
use crate::element::DType;
use crate::error::{Error, Result};

const THREADS: u32 = 256;

/// A GPU with every kernel of `kernels/fused.cu` loaded.
pub struct Device {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    lane: Lane,
    funcs: HashMap<(Kind, DType, DType), CudaFunction>,
    max_blocks: u32,
}

/// A queue hops run on: a stream and the overflow flag its encodes set.
/// In-process ranks on one GPU each have their own ([`Device::new_lane`]).
pub struct Lane {
    stream: Arc<CudaStream>,
    overflow: CudaSlice<i32>,
}

impl Lane {
    /// The stream this lane's work is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for the stream, then returns and clears the overflow flag the
    /// hops since the last call set.
    pub fn take_overflow(&mut self) -> Result<bool> {
        let what = "overflow flag";
        let v = self.stream.clone_dtoh(&self.overflow).map_err(err(what))?;
        self.stream.memset_zeros(&mut self.overflow).map_err(err(what))?;
        Ok(v[0] != 0)
    }
}

pub(super) fn err(what: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let what = what.into();
    move |e| Error::Cuda { what, detail: e.to_string() }
}

impl Device {
    /// How many CUDA devices there are: 0 without a driver or a device.
    pub fn count() -> usize {
        if !ffi::driver_present() {
            return 0;
        }
        CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
    }

    /// Opens device `ordinal`, compiles (or loads) the kernels for it and
    /// makes the stream its hops run on.
    pub fn open(ordinal: usize) -> Result<Device> {
        let what = format!("device {ordinal}");
        if !ffi::driver_present() {
            return Err(Error::Cuda { what, detail: "no CUDA driver (libcuda.so) on this machine".into() });
        }
        let ctx = CudaContext::new(ordinal).map_err(err(&what))?;
        let name = ctx.name().map_err(err(&what))?;
        let attr = |a| ctx.attribute(a).map_err(err(&what));
        let major = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let module = ctx.load_module(compile::ptx_for(major, minor)?).map_err(err(&what))?;
        let mut funcs = HashMap::new();
        for (key, name) in kernels() {
            let f = module.load_function(&name).map_err(err(format!("{what}: kernel {name}")))?;
            funcs.insert(key, f);
        }
        let lane = new_lane(&ctx).map_err(err(&what))?;
        // Enough blocks to fill every SM several times over; the grid-stride
        // loop takes the rest.
        let max_blocks = (sms.max(1) as u32) * 16;
        Ok(Device { ordinal, name: format!("{name} (sm_{major}{minor})"), ctx, lane, funcs, max_blocks })
    }

    /// A new lane (stream and overflow flag) on this device.
    pub fn new_lane(&self) -> Result<Lane> {
        new_lane(&self.ctx).map_err(err(format!("device {}: new stream", self.ordinal)))
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name and compute capability.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream [`Device::hop`] queues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.lane.stream
    }

    /// Copies `bytes` to a new device buffer.
    pub fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        self.lane.stream.clone_htod(bytes).map_err(err(format!("device {}: upload", self.ordinal)))
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download(&self, buf: &CudaSlice<u8>) -> Result<Vec<u8>> {
        self.lane.stream.clone_dtoh(buf).map_err(err(format!("device {}: download", self.ordinal)))
    }

    /// Queues `hop` on the device's own lane; see [`Device::hop_on`].
    pub fn hop(
        &self,
        hop: &Hop,
        n: usize,
        recv: Option<(&CudaSlice<u8>, usize)>,
        local: (&mut CudaSlice<u8>, usize),
        out: Option<(&mut CudaSlice<u8>, usize)>,
    ) -> Result<()> {
        self.hop_on(&self.lane, hop, n, recv, local, out)
    }

    /// Queues `hop` on `lane` over `n` elements at byte offsets into
    /// device buffers: `recv` and `out` hold wire elements, `local` buffer
    /// elements; pass `None` where the kind does not touch them.
    pub fn hop_on(
        &self,
        lane: &Lane,
        hop: &Hop,
        n: usize,
        recv: Option<(&CudaSlice<u8>, usize)>,
        local: (&mut CudaSlice<u8>, usize),
        out: Option<(&mut CudaSlice<u8>, usize)>,
    ) -> Result<()> {
        let (ws, bs) = (hop.wire.size(), hop.buffer.size());
        hop.check(n, recv.map_or(0, |_| n * ws), n * bs, out.as_ref().map_or(0, |_| n * ws))?;
        // Looked up by key: a hop formats no name.
        let Some(f) = self.funcs.get(&hop.key()) else {
            return Err(Error::Cuda { what: hop.kernel_name()?, detail: "not loaded".into() });
        };
        // Groups of 4 or 8 elements (kernels/fused.cu): enough threads for 4.
        let groups = n.div_ceil(4).max(1) as u64;
        let blocks = groups.div_ceil(THREADS as u64).min(self.max_blocks as u64) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        ffi::launch(
            &lane.stream,
            f,
            hop,
            cfg,
            n,
            recv.map(|(b, o)| (b, o, n * ws)),
            (local.0, local.1, n * bs),
            out.map(|(b, o)| (b, o, n * ws)),
            &lane.overflow,
        )
    }

    /// Queues `hop` on `lane` for a rank of the device walks (`walk`,
    /// `staged`): its wire input from `recv` (the rank's `inbox` from a byte,
    /// or its outgoing slice `out`), its buffer `local`, its output (where
    /// the kind writes one) at the start of `out`.
    #[allow(clippy::too_many_arguments)] // one rank's buffers, named
    pub(crate) fn hop_src(
        &self,
        lane: &Lane,
        hop: &Hop,
        n: usize,
        recv: Option<Src>,
        local: (&mut CudaSlice<u8>, usize),
        inbox: &CudaSlice<u8>,
        out: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let writes = hop.kind.writes_out(hop.fin);
        match recv {
            Some(Src::Out) if writes => {
                Err(Error::Cuda { what: hop.kernel_name()?, detail: "reads and writes the outgoing slice".into() })
            }
            Some(Src::Out) => self.hop_on(lane, hop, n, Some((out, 0)), local, None),
            Some(Src::Inbox(o)) => self.hop_on(lane, hop, n, Some((inbox, o)), local, writes.then_some((out, 0))),
            None => self.hop_on(lane, hop, n, None, local, writes.then_some((out, 0))),
        }
    }

    /// Waits for the device's own lane, then returns and clears its
    /// overflow flag.
    pub fn take_overflow(&mut self) -> Result<bool> {
        self.lane.take_overflow()
    }
}

fn new_lane(ctx: &Arc<CudaContext>) -> std::result::Result<Lane, cudarc::driver::DriverError> {
    let stream = ctx.new_stream()?;
    let overflow = stream.alloc_zeros::<i32>(1)?;
    Ok(Lane { stream, overflow })
}
