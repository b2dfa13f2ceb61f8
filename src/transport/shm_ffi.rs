//! The only `unsafe` of the shared-memory carrier: anonymous memory files
//! (`memfd_create`), mapping them, mapping a peer's through
//! `/proc/<pid>/fd/<fd>`, and reading and writing them.
//!
//! A peer's file is trusted only as far as it is checked: it must be a
//! memory file of the name its owner announced (`ringfuse-<pid>-<nonce>`,
//! the nonce random per process, so a reused PID or another job's file on
//! the same host is refused), sealed against shrinking and growing (a
//! shrunk file would kill its readers with SIGBUS), and a peer's slots are
//! mapped read-only (only its counters are written, in its control file).
//!
//! A [`Segment`] is one mapping. Who may touch which bytes when is the
//! protocol's business (`shm.rs`): a sender writes a slot only while no
//! message on it is in flight; a receiver copies a message out only after
//! the sender published it (release/acquire on the counters) and before it
//! acknowledges it. Across processes Rust cannot check that, so this
//! module never hands out references into a peer's memory: peers' bytes
//! are only copied out, and counters are read and written as atomics.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

/// One mapping of a shared memory file.
pub(super) struct Segment {
    ptr: *mut u8,
    len: usize,
    // Kept open by the owner, so peers can open it through /proc for as
    // long as the owner lives; peers' mappings need no descriptor.
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is plain memory owned by this value; the raw pointer
// is only an address, valid until Drop, wherever the value moves.
unsafe impl Send for Segment {}

/// Seals a memory file carries: its size is fixed, and so are the seals.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// How a peer's file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Its counters are written too (a control file).
    ReadWrite,
    /// Only read (a peer's slots).
    ReadOnly,
}

fn map(fd: i32, len: usize, access: Access) -> io::Result<*mut u8> {
    let prot = match access {
        Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Access::ReadOnly => libc::PROT_READ,
    };
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; the
    // kernel picks the address, and the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as *mut u8)
}

impl Segment {
    /// A new zeroed file of `len` bytes in memory named `name`, sealed at
    /// that size, mapped. Its pages are allocated now (`fallocate`), so a
    /// short machine fails here with an error instead of killing the
    /// process with SIGBUS on first touch.
    pub(super) fn create(len: usize, name: &str) -> io::Result<Segment> {
        let len = len.max(64);
        let name = CString::new(name).map_err(|_| io::Error::other("a memory file name with a NUL"))?;
        // SAFETY: memfd_create with a valid C string; the result is checked
        // and owned from here on.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sizing and allocating our own file.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; fallocate returns the error number itself.
        let rc = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(if rc > 0 { rc } else { libc::EIO }));
        }
        // SAFETY: adding seals to our own memory file; checked.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let ptr = map(fd.as_raw_fd(), len, Access::ReadWrite)?;
        Ok(Segment { ptr, len, fd: Some(fd) })
    }

    /// Maps the whole of process `pid`'s descriptor `fd`, a segment that
    /// process created as `name` and keeps open, after checking it is
    /// that file and sealed.
    pub(super) fn open_peer(pid: u32, fd: i32, name: &str, access: Access) -> io::Result<Segment> {
        if fd < 0 {
            return Err(io::Error::other(format!("descriptor {fd} of process {pid} is not a file")));
        }
        let proc_path = format!("/proc/{pid}/fd/{fd}");
        // What the descriptor is, by the kernel's name for it: a memory
        // file shows as `/memfd:NAME (deleted)`.
        let target = std::fs::read_link(&proc_path)?;
        let want = format!("/memfd:{name} (deleted)");
        if target.as_os_str() != want.as_str() {
            return Err(io::Error::other(format!(
                "{proc_path} is {}, not the peer's {want} (another process took that PID?)",
                target.display()
            )));
        }
        let path = CString::new(proc_path.clone()).map_err(|_| io::Error::other("a path with a NUL"))?;
        let flags = match access {
            Access::ReadWrite => libc::O_RDWR,
            Access::ReadOnly => libc::O_RDONLY,
        };
        // SAFETY: open with a valid C string; checked, and closed by OwnedFd
        // once mapped (the mapping keeps the file).
        let raw = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own alone.
        let file = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fstat fills a zeroed stat of the right type; checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: reading the seals of a file we hold open; checked.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(io::Error::other(format!("{proc_path} is not sealed against resizing")));
        }
        let len = st.st_size as usize;
        if len == 0 {
            return Err(io::Error::other(format!("{proc_path} is empty")));
        }
        let ptr = map(file.as_raw_fd(), len, access)?;
        Ok(Segment { ptr, len, fd: None })
    }

    /// The descriptor peers open this segment by (the owner's only).
    pub(super) fn fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    #[cfg_attr(not(any(feature = "mpi", test)), allow(dead_code))]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The counter at byte `off`.
    pub(super) fn counter(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len, "counter {off} outside a segment of {} bytes", self.len);
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned); the
        // bytes are only ever accessed as this atomic, by every process.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// This process's own bytes `off..off + len`, to write (a slot no
    /// message is in flight on: peers do not read it now).
    pub(super) fn own_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.len, "range {off}+{len} outside a segment of {} bytes", self.len);
        // SAFETY: in bounds; `&mut self` excludes other borrows in this
        // process, and the protocol keeps peers off slots not in flight.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }

    /// Own bytes `a` to read and `b` to write at once; they must not overlap.
    pub(super) fn own_pair(&mut self, a: (usize, usize), b: (usize, usize)) -> (&[u8], &mut [u8]) {
        assert!(a.0 + a.1 <= self.len && b.0 + b.1 <= self.len, "slot outside its segment");
        assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "slot pair overlaps");
        // SAFETY: both in bounds and disjoint (checked); `&mut self` as in
        // `own_mut`.
        unsafe {
            (std::slice::from_raw_parts(self.ptr.add(a.0), a.1), std::slice::from_raw_parts_mut(self.ptr.add(b.0), b.1))
        }
    }

    /// Copies bytes `off..off + dst.len()` (a published message) out.
    pub(super) fn copy_out(&self, off: usize, dst: &mut [u8]) -> io::Result<()> {
        if off.checked_add(dst.len()).is_none_or(|end| end > self.len) {
            return Err(io::Error::other(format!(
                "message {off}+{} outside a segment of {} bytes",
                dst.len(),
                self.len
            )));
        }
        // SAFETY: in bounds (checked); the sender published these bytes
        // (acquire) and leaves them alone until this receiver acknowledges.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Bytes `off..off + len` of a published message, read in place.
    pub(super) fn view(&self, off: usize, len: usize) -> io::Result<&[u8]> {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::other(format!("message {off}+{len} outside a segment of {} bytes", self.len)));
        }
        // SAFETY: in bounds (checked); the sender published these bytes
        // (acquire) and leaves them alone until this receiver acknowledges
        // them, which the transport does only through `&mut self`, after
        // every borrow of this view has ended.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) })
    }

    /// Writes 8-byte words at `off` (a message descriptor in own memory).
    pub(super) fn write_words(&mut self, off: usize, words: &[u64]) {
        self.own_mut(off, 8 * words.len()).copy_from_slice(bytemuck::cast_slice(words));
    }

    /// Reads 8-byte words at `off` (a peer's published descriptor).
    pub(super) fn read_words(&self, off: usize, words: &mut [u64]) -> io::Result<()> {
        self.copy_out(off, bytemuck::cast_slice_mut(words))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value made; nothing
        // borrowed from it outlives `self`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// A pidfd of process `pid`, or `None` where the kernel has none (before
/// Linux 5.3) or the process is gone already. Opened while the peer is
/// known to live (at set-up), it keeps naming that process even if its
/// PID is reused later.
pub(super) fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Whether the process behind `pidfd` has exited (its pidfd polls
/// readable then; a zombie not yet reaped counts as exited).
pub(super) fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0 && fds[0].revents().contains(PollFlags::IN))
}
