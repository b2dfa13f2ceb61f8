//! `--device cuda`: the rows' buffer on a GPU, reduced through
//! `Communicator::allreduce_device` (feature `cuda`). Without the feature
//! the type is empty and `--device cuda` is refused up front.

#[cfg(feature = "cuda")]
pub use real::DeviceRun;

/// Uninhabited without feature `cuda`: no row runs on a device.
#[cfg(not(feature = "cuda"))]
pub enum DeviceRun {}

#[cfg(not(feature = "cuda"))]
impl DeviceRun {
    pub fn new(_rank: usize) -> Result<DeviceRun, String> {
        Err("--device cuda: this ringfuse-perf was built without feature cuda (cargo build --features cuda)".into())
    }
    pub fn load(&mut self, _input: &[u8]) {
        match *self {}
    }
    pub fn reset(&mut self) {
        match *self {}
    }
    pub fn call(
        &mut self,
        _comm: &ringfuse::Communicator,
        _dtype: ringfuse::DType,
        _op: ringfuse::ReduceOp,
        _opts: &ringfuse::AllreduceOpts,
    ) -> ringfuse::Result<()> {
        match *self {}
    }
    pub fn download(&mut self, _out: &mut [u8]) {
        match *self {}
    }
}

#[cfg(feature = "cuda")]
mod real {
    use cudarc::driver::CudaSlice;
    use ringfuse::cuda::{Device, StagedRank};
    use ringfuse::{AllreduceOpts, Communicator, DType, ReduceOp};

    /// This rank's GPU, its staged rank, the row's input kept on the
    /// device, and the buffer each call reduces in place.
    pub struct DeviceRun {
        rank: StagedRank<'static>,
        pristine: Option<CudaSlice<u8>>,
        work: Option<CudaSlice<u8>>,
    }

    fn fail(what: &str, e: impl std::fmt::Display) -> ! {
        eprintln!("ringfuse-perf --device cuda: {what}: {e}");
        std::process::exit(1)
    }

    impl DeviceRun {
        /// GPU `rank % devices`.
        pub fn new(rank: usize) -> Result<DeviceRun, String> {
            let n = Device::count();
            if n == 0 {
                return Err("--device cuda: no CUDA device on this machine".into());
            }
            // The device lives as long as the process: the benchmark's
            // one rank uses it to the end.
            let dev: &'static Device = Box::leak(Box::new(Device::open(rank % n).map_err(|e| e.to_string())?));
            let rank = StagedRank::new(dev).map_err(|e| e.to_string())?;
            Ok(DeviceRun { rank, pristine: None, work: None })
        }

        /// Keeps `input` on the device for this size's rows.
        pub fn load(&mut self, input: &[u8]) {
            self.pristine = Some(self.rank.upload(input).unwrap_or_else(|e| fail("upload", e)));
            self.work = Some(self.rank.upload(input).unwrap_or_else(|e| fail("upload", e)));
        }

        /// Puts the input back into the buffer the calls reduce (untimed).
        pub fn reset(&mut self) {
            let (Some(src), Some(dst)) = (&self.pristine, &mut self.work) else { fail("reset", "nothing loaded") };
            let s = self.rank.lane().stream();
            s.memcpy_dtod(src, dst).unwrap_or_else(|e| fail("copy", e));
            s.synchronize().unwrap_or_else(|e| fail("copy", e));
        }

        /// One allreduce, until its result is on the device.
        pub fn call(
            &mut self,
            comm: &Communicator,
            dtype: DType,
            op: ReduceOp,
            opts: &AllreduceOpts,
        ) -> ringfuse::Result<()> {
            let Some(buf) = &mut self.work else { fail("call", "nothing loaded") };
            comm.allreduce_device(&mut self.rank, buf, dtype, op, opts)?;
            self.rank.lane().stream().synchronize().unwrap_or_else(|e| fail("synchronize", e));
            Ok(())
        }

        /// The buffer's bytes.
        pub fn download(&mut self, out: &mut [u8]) {
            let Some(buf) = &self.work else { fail("download", "nothing loaded") };
            out.copy_from_slice(&self.rank.download(buf).unwrap_or_else(|e| fail("download", e)));
        }
    }
}
