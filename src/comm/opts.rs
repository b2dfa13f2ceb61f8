//! Per-call options: which schedule runs ([`Algorithm`]) and how
//! ([`AllreduceOpts`]).

use std::time::Duration;

use crate::codec::Codec;
use crate::element::DType;
pub use crate::schedule::Algorithm;
use crate::schedule::Shape;
use crate::tuning::Tuning;

use super::env::{Settings, MAX_TIMEOUT};
use crate::error::{Error, Result};

/// The most messages in flight each way ([`AllreduceOpts::slots`]): the
/// shared-memory carrier numbers its slots in a byte, and past a few dozen
/// more slots only cost memory.
pub const MAX_SLOTS: usize = 64;
/// The largest message payload ([`AllreduceOpts::slice_bytes`]), 64 MiB:
/// a pool holds `2 * slots + 2` of them.
pub const MAX_SLICE_BYTES: usize = 64 << 20;

pub use crate::transport::DEFAULT_SLICE_BYTES;

/// The deadline of a single wait unless set ([`AllreduceOpts::timeout`],
/// `RINGFUSE_TIMEOUT_MS`): long enough for a rank that is merely slow
/// (a first call that compiles kernels, a loaded host), short enough that
/// a lost rank ends the job the same hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Per-call options; every field can be set with a builder method.
///
/// `AllreduceOpts::default()` holds the built-in defaults and never reads
/// the environment; [`AllreduceOpts::from_env`] adds the `RINGFUSE_*`
/// overrides, and a communicator's plain methods use those
/// ([`crate::Communicator::defaults`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AllreduceOpts {
    /// Wire format (default [`Codec::Native`]).
    pub codec: Codec,
    /// Payload bytes of one message on the wire (the pipelining unit).
    /// Default 0: the carrier's size ([`crate::Communicator::message_bytes`]),
    /// [`DEFAULT_SLICE_BYTES`] except over MPI between hosts
    /// ([`crate::mpi::ACROSS_HOSTS_SLICE_BYTES`]).
    pub slice_bytes: usize,
    /// Messages in flight each way per rank (default 4). Extra memory per
    /// rank is about `(2 * slots + 2) * slice_bytes`, whatever the buffer.
    pub slots: usize,
    /// Deadline of every single wait (default [`DEFAULT_TIMEOUT`], 300 s;
    /// `RINGFUSE_TIMEOUT_MS` in [`Self::from_env`]); at most
    /// [`super::env::MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Allreduce schedule (default [`Algorithm::Auto`]; `RINGFUSE_ALGO` in
    /// [`Self::from_env`]). The other collectives have one schedule each
    /// and do not read it.
    pub algorithm: Algorithm,
    /// Under `Auto` without a tuning, buffers of at most this many wire
    /// bytes use recursive doubling, larger ones the ring. Default 0: the
    /// communicator's rule ([`crate::tuning::rule`]), which depends only on
    /// the ranks, the hosts and whether they are oversubscribed.
    pub small_bytes: usize,
    /// Seal every message with a CRC-32C of its payload, checked on
    /// receipt: a corrupted message becomes [`crate::Error::Checksum`] naming the
    /// peer, step and slice. Off by default (`RINGFUSE_CHECKSUM=1` turns it
    /// on in [`Self::from_env`]): MPI and TCP already check their frames, and the CRC reads
    /// every payload byte once more.
    pub checksum: bool,
    /// Compare every message's call fingerprint with this rank's call, so
    /// ranks that called different collectives get [`crate::Error::Mismatch`].
    /// On by default; `RINGFUSE_VERIFY_CALLS=0` turns it off in
    /// [`Self::from_env`], which exists
    /// to measure its cost (docs/guide/debugging.md) and is not recommended.
    pub verify_calls: bool,
    /// Elements per scale of the block-scaled codecs
    /// ([`Codec::Fp16Scaled`], [`Codec::Int8`]); 1 to
    /// [`crate::codec::MAX_SCALE_BLOCK`], the same on every rank. Default
    /// [`crate::codec::DEFAULT_SCALE_BLOCK`].
    pub scale_block: usize,
}

impl Default for AllreduceOpts {
    /// The built-in defaults. They never read the environment, so a
    /// program that sets every option it cares about runs the same job
    /// whatever `RINGFUSE_*` says; [`Self::from_env`] adds those overrides.
    fn default() -> Self {
        Self::from_settings(&Settings::default())
    }
}

impl AllreduceOpts {
    /// The built-in defaults with the process's `RINGFUSE_TIMEOUT_MS`,
    /// `RINGFUSE_ALGO`, `RINGFUSE_CHECKSUM` and `RINGFUSE_VERIFY_CALLS`
    /// overrides: what [`crate::Communicator::defaults`] holds and the plain
    /// methods (`allreduce`, ...) use. Build a call's options from this
    /// where the launcher's environment should reach them, as a debugging
    /// knob must (`RINGFUSE_TIMEOUT_MS=2000` to make a hang fail fast).
    ///
    /// # Errors
    /// [`Error::Setting`] naming the variable, its value and what is
    /// accepted, where one of the `RINGFUSE_*` variables cannot be parsed.
    pub fn from_env() -> Result<Self> {
        Ok(Self::from_settings(super::env::settings()?))
    }

    /// The built-in defaults with `s`'s overrides.
    pub(crate) fn from_settings(s: &Settings) -> Self {
        AllreduceOpts {
            codec: Codec::Native,
            slice_bytes: 0,
            slots: crate::transport::DEFAULT_SLOTS,
            timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
            algorithm: s.algorithm.unwrap_or(Algorithm::Auto),
            small_bytes: 0,
            checksum: s.checksum.unwrap_or(false),
            verify_calls: s.verify_calls.unwrap_or(true),
            scale_block: crate::codec::DEFAULT_SCALE_BLOCK,
        }
    }

    /// The algorithm an allreduce of `count` elements of `dtype` runs with
    /// these options: `Auto`'s choice (by `tuning`'s cost model, or without
    /// one recursive doubling up to [`Self::small_bytes`], or where that is
    /// 0 up to `doubling_up_to`, the communicator's rule, and the ring
    /// above), or the forced one where it [supports](Algorithm::supports)
    /// the buffer and codec, else the ring.
    pub(crate) fn resolve(
        &self,
        dtype: DType,
        count: usize,
        tuning: Option<&Tuning>,
        shape: Shape,
        doubling_up_to: usize,
    ) -> Algorithm {
        let wire_bytes = self.codec.wire_bytes(dtype, count, self.scale_block);
        let small = if self.small_bytes == 0 { doubling_up_to } else { self.small_bytes };
        let model = || tuning.map(|t| t.best(dtype, self.codec, wire_bytes));
        self.algorithm.resolve(dtype, self.codec, wire_bytes, shape, small, model)
    }

    /// Refuses options outside their bounds with [`Error::Setting`] naming
    /// the option, its value and what is accepted.
    pub(crate) fn check_bounds(&self, rank: usize) -> Result<()> {
        let bad = |name: &str, value: String, expected: String| {
            Err(Error::Setting { rank: Some(rank), name: name.into(), value, expected })
        };
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return bad("slots", self.slots.to_string(), format!("1 to {MAX_SLOTS} messages in flight"));
        }
        if self.slice_bytes != 0 && !(64..=MAX_SLICE_BYTES).contains(&self.slice_bytes) {
            return bad(
                "slice_bytes",
                self.slice_bytes.to_string(),
                format!("0 (the carrier's) or 64 to {MAX_SLICE_BYTES} bytes"),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad("timeout", format!("{:?}", self.timeout), format!("1 ms to {MAX_TIMEOUT:?}"));
        }
        Ok(())
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
    pub(super) fn slice_bytes_or(&self, carrier: usize) -> usize {
        if self.slice_bytes == 0 {
            carrier
        } else {
            self.slice_bytes
        }
    }

    /// [`Self::slice_elems`] with `carrier` bytes where `slice_bytes` is 0.
    pub(crate) fn slice_elems_or(&self, dtype: DType, carrier: usize) -> usize {
        self.codec.slice_elems(dtype, self.slice_bytes_or(carrier), self.scale_block)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a child process of the test binary with
    /// `RINGFUSE_TIMEOUT_MS=1234` and `RINGFUSE_ALGO=ring` (see
    /// `default_is_pure_and_from_env_reads_the_environment`): the settings
    /// are read once per process, so only a fresh process can show what
    /// each constructor does with them.
    #[test]
    fn env_child() {
        if std::env::var_os("RINGFUSE_OPTS_CHILD").is_none() {
            return;
        }
        let pure = AllreduceOpts::default();
        assert_eq!((pure.timeout, pure.algorithm), (DEFAULT_TIMEOUT, Algorithm::Auto));
        let env = AllreduceOpts::from_env().unwrap();
        assert_eq!((env.timeout, env.algorithm), (Duration::from_millis(1234), Algorithm::Ring));
        assert_eq!(crate::GradSyncOpts::default().allreduce, pure);
        assert_eq!(crate::GradSyncOpts::from_env().unwrap().allreduce, env);
        let defaults = crate::local::run(2, |c| c.defaults().clone());
        assert_eq!(defaults, vec![env.clone(), env]);
        println!("env_child checked");
    }

    #[test]
    fn default_is_pure_and_from_env_reads_the_environment() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "comm::opts::tests::env_child", "--nocapture", "--test-threads=1"])
            .env("RINGFUSE_OPTS_CHILD", "1")
            .env("RINGFUSE_TIMEOUT_MS", "1234")
            .env("RINGFUSE_ALGO", "ring")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("env_child checked"),
            "child test failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn from_env_names_a_bad_variable() {
        let s = Settings::parse(|k| (k == "RINGFUSE_TIMEOUT_MS").then(|| "abc".into()));
        assert!(matches!(s, Err(Error::Setting { ref name, .. }) if name == "RINGFUSE_TIMEOUT_MS"), "{s:?}");
    }
}
