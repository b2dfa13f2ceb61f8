//! How the host kernels write the caller's buffer.
//!
//! An ordinary store first reads the line it writes (read for ownership),
//! so a kernel writing an output that is not in cache moves each byte
//! through memory twice. A streaming (non-temporal) store skips that read
//! but leaves the data out of the cache, which costs a caller who reads a
//! small result right back. So calls whose output is at least half the
//! last-level cache, and cannot stay there anyway, stream it; smaller ones
//! keep it in cache.
//!
//! Measured (2026-11-26, this 2-core EPYC VM, 32 MiB L3, `mpirun -np 2
//! ringfuse-perf -c native,fp16`, streaming on and off interleaved, four to
//! six rounds): 1-2 MiB took 1.5-2x longer streamed, 4 MiB was even, 8 MiB
//! fp16 9% faster and native 5% slower, 16 MiB fp16 15-20% faster and
//! native even, 32 and 64 MiB both 5-12% faster.

use std::sync::OnceLock;

/// How a call's kernels write its output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stores {
    /// Through the cache.
    Cached,
    /// Streaming stores, for outputs the cache cannot hold.
    Streaming,
}

impl Stores {
    /// The stores for a call whose output is `bytes` long.
    pub fn for_output(bytes: usize) -> Stores {
        if bytes >= streaming_threshold() {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }
}

/// Half the last-level cache, as the kernel reports it; 16 MiB where it
/// does not.
fn streaming_threshold() -> usize {
    #[cfg(test)]
    if let n @ 1.. = test_hooks::STREAM_FROM_BYTES.load(std::sync::atomic::Ordering::Relaxed) {
        return n;
    }
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| last_level_cache_bytes().map_or(16 << 20, |b| b / 2))
}

#[cfg(test)]
pub(crate) mod test_hooks {
    use std::sync::atomic::AtomicUsize;
    /// Outputs of at least this many bytes stream (0: the machine's rule),
    /// so the executor's tests can stream small calls. Streaming writes
    /// the same bits, so other tests running meanwhile do not care.
    pub static STREAM_FROM_BYTES: AtomicUsize = AtomicUsize::new(0);
}

/// The largest cache of CPU 0 that Linux lists in sysfs.
fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("size")).ok())
        .filter_map(|s| parse_size(s.trim()))
        .max()
}

/// sysfs spells cache sizes `32768K` or `2M`.
fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        "G" => Some(n << 30),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12Q"), None);
    }

    #[test]
    fn small_outputs_stay_in_cache_and_large_ones_stream() {
        assert_eq!(Stores::for_output(64 << 10), Stores::Cached);
        assert_eq!(Stores::for_output(1 << 40), Stores::Streaming);
    }
}
