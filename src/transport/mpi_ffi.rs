//! The only `unsafe` of the MPI carrier. rsmpi's safe `immediate_*` API ties
//! a buffer's lifetime to a scope and panics if a request outlives it; a
//! collective that times out must instead leave a request pending and keep
//! its buffer. So [`InFlight`] owns both the slot buffers and the raw
//! requests on them, and is the one place that guarantees a buffer lives
//! at least as long as any request on it.

#![allow(unsafe_code)]

use std::os::raw::c_int;

use ::mpi::ffi;

use super::{SlotId, SlotPool, Stray};

struct Posted {
    req: ffi::MPI_Request,
    is_recv: bool,
    peer: c_int,
    tag: u32,
}

/// A stray being received: a message of an earlier call, already matched
/// (taken off MPI's queue) by `MPI_Improbe`, into a buffer owned here
/// until the receive completes.
struct StrayRx {
    req: ffi::MPI_Request,
    peer: usize,
    tag: u32,
    buf: Vec<u8>,
}

/// Slot buffers plus the requests pending on them.
#[derive(Default)]
pub struct InFlight {
    pool: SlotPool,
    posted: Vec<Option<Posted>>,
    // Buffers of requests MPI may still touch: never freed.
    retired: Vec<Vec<u64>>,
    stray: Option<StrayRx>,
}

// SAFETY: MPI_Request and the MPI_Comm handles passed in are opaque
// handles; with MPI_THREAD_SERIALIZED any thread may use them as long as
// calls are serialised, which the owning communicator's lock guarantees.
unsafe impl Send for InFlight {}

fn check(code: c_int, what: &str) -> Result<(), String> {
    if code == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(format!("{what} returned MPI error code {code}"))
    }
}

/// The largest tag `comm` accepts (`MPI_TAG_UB`; the standard promises
/// at least 32767, Open MPI gives 2^31 - 1).
pub fn tag_ub(comm: ffi::MPI_Comm) -> u32 {
    let mut val: *mut c_int = std::ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: `comm` is a live communicator handle; for MPI_TAG_UB MPI
    // stores a pointer to an int it owns in `val` (whose address we pass)
    // and sets `flag` when it did.
    let code = unsafe {
        ffi::MPI_Comm_get_attr(
            comm,
            ffi::MPI_TAG_UB as c_int,
            &mut val as *mut *mut c_int as *mut std::ffi::c_void,
            &mut flag,
        )
    };
    if code != ffi::MPI_SUCCESS as c_int || flag == 0 || val.is_null() {
        return 32767;
    }
    // SAFETY: MPI set `val` to its attribute, a valid int for the
    // communicator's lifetime.
    let ub = unsafe { *val };
    ub.max(32767) as u32
}

/// Makes MPI errors on `comm` come back as return codes instead of
/// aborting the job (`MPI_ERRORS_ARE_FATAL` is the default): a message
/// longer than the receive slot (ranks that called with different element
/// types or slice sizes) must become ringfuse's error, naming the peer.
pub fn errors_return(comm: ffi::MPI_Comm) {
    // SAFETY: `comm` is a live communicator handle (the transport's own
    // duplicate); RSMPI_ERRORS_RETURN is a constant handle from rsmpi's shim.
    let code = unsafe { ffi::MPI_Comm_set_errhandler(comm, ffi::RSMPI_ERRORS_RETURN) };
    debug_assert_eq!(code, ffi::MPI_SUCCESS as c_int, "MPI_Comm_set_errhandler");
}

impl InFlight {
    pub fn pool(&mut self) -> &mut SlotPool {
        &mut self.pool
    }

    pub fn slot_bytes(&self) -> usize {
        self.pool.bytes()
    }

    pub fn reserve(&mut self, count: usize, bytes: usize) {
        debug_assert!(self.posted.iter().all(Option::is_none), "reserve with requests in flight");
        self.pool.reserve(count, bytes);
        self.posted.resize_with(count.max(self.posted.len()), || None);
    }

    /// `MPI_Isend` of the first `len` bytes of slot `id`.
    pub fn send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32, comm: ffi::MPI_Comm) -> Result<(), String> {
        self.post(id, Some(len), peer, tag, comm)
    }

    /// `MPI_Irecv` into slot `id` (its whole length).
    pub fn recv(&mut self, id: SlotId, peer: usize, tag: u32, comm: ffi::MPI_Comm) -> Result<(), String> {
        self.post(id, None, peer, tag, comm)
    }

    /// A send of `Some(len)` bytes, or a receive (`None`) into the whole slot.
    fn post(
        &mut self,
        id: SlotId,
        send_len: Option<usize>,
        peer: usize,
        tag: u32,
        comm: ffi::MPI_Comm,
    ) -> Result<(), String> {
        if self.is_posted(id) || id >= self.posted.len() {
            return Err(format!("slot {id} is in flight or was never reserved"));
        }
        let buf = self.pool.get_mut(id);
        let len = send_len.unwrap_or(buf.len());
        if len > buf.len() {
            return Err(format!("a send of {len} bytes from a slot of {}", buf.len()));
        }
        let count = c_int::try_from(len).map_err(|_| format!("message of {len} bytes exceeds MPI's int count"))?;
        let (peer, tag) = (peer as c_int, tag as c_int);
        // SAFETY: a constant handle defined by rsmpi's C shim; only read.
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: the buffer is slot `id` of our pool. It is neither freed
        // nor handed out while `posted[id]` is Some: reserve() refuses then,
        // and cancel_all() retires the buffer if MPI may still touch it. A
        // receive writes at most `count` bytes into it.
        let code = unsafe {
            match send_len {
                Some(_) => {
                    ffi::MPI_Isend(buf.as_ptr() as *const _, count, ffi::RSMPI_UINT8_T, peer, tag, comm, &mut req)
                }
                None => {
                    ffi::MPI_Irecv(buf.as_mut_ptr() as *mut _, count, ffi::RSMPI_UINT8_T, peer, tag, comm, &mut req)
                }
            }
        };
        check(code, if send_len.is_some() { "MPI_Isend" } else { "MPI_Irecv" })?;
        self.posted[id] = Some(Posted { req, is_recv: send_len.is_none(), peer, tag: tag as u32 });
        Ok(())
    }

    /// The MPI rank of slot `id`'s pending request, if any.
    pub fn peer_of(&self, id: SlotId) -> Option<usize> {
        self.posted.get(id)?.as_ref().map(|p| p.peer as usize)
    }

    /// Whether slot `id` has a request pending.
    pub fn is_posted(&self, id: SlotId) -> bool {
        self.posted.get(id).is_some_and(Option::is_some)
    }

    /// `MPI_Test` on slot `id`: `Some(bytes)` once complete.
    pub fn test(&mut self, id: SlotId) -> Result<Option<usize>, String> {
        let p = self.posted[id].as_mut().ok_or_else(|| format!("slot {id} has nothing posted"))?;
        let mut flag: c_int = 0;
        let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::zeroed();
        // SAFETY: p.req is a live request from send/recv; MPI writes status.
        let code = unsafe { ffi::MPI_Test(&mut p.req, &mut flag, status.as_mut_ptr()) };
        if code != ffi::MPI_SUCCESS as c_int {
            // A failed request (a truncated receive, say) is over, but its
            // buffer is not trusted again: retire it, as cancel_all does.
            self.posted[id] = None;
            let old = self.pool.retire(id);
            self.retired.push(old);
            let mut text = vec![0u8; ffi::MPI_MAX_ERROR_STRING as usize];
            let mut len: c_int = 0;
            // SAFETY: MPI writes at most MPI_MAX_ERROR_STRING bytes and the
            // length it wrote.
            unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr() as *mut _, &mut len) };
            text.truncate(len.clamp(0, ffi::MPI_MAX_ERROR_STRING as c_int) as usize);
            return Err(format!("MPI_Test failed: {}", String::from_utf8_lossy(&text)));
        }
        if flag == 0 {
            return Ok(None);
        }
        self.posted[id] = None;
        let mut count: c_int = 0;
        // SAFETY: MPI_Test completed the request and filled `status`.
        let code = unsafe { ffi::MPI_Get_count(status.as_ptr(), ffi::RSMPI_UINT8_T, &mut count) };
        check(code, "MPI_Get_count")?;
        Ok(Some(count.max(0) as usize))
    }

    /// A message of an earlier call from the peer slot `id` receives from
    /// (its tag behind the receive's, on tags that wrap at `mask`): MPI
    /// would never match it again, and it may be an abort notice this rank
    /// must see. The first probe that finds one matches it and starts
    /// receiving it; `Some` once it is whole.
    pub fn stray(&mut self, id: SlotId, comm: ffi::MPI_Comm, mask: u32) -> Result<Option<Stray>, String> {
        if self.stray.is_none() {
            let Some(p) = self.posted.get(id).and_then(Option::as_ref).filter(|p| p.is_recv) else {
                return Ok(None);
            };
            let (peer, tag) = (p.peer, p.tag);
            let mut flag: c_int = 0;
            let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::zeroed();
            // SAFETY: `comm` is the carrier's live communicator; MPI writes
            // `flag` and, when set, `status`. A probe matches nothing.
            check(
                unsafe { ffi::MPI_Iprobe(peer, ffi::RSMPI_ANY_TAG, comm, &mut flag, status.as_mut_ptr()) },
                "MPI_Iprobe",
            )?;
            if flag == 0 {
                return Ok(None);
            }
            // SAFETY: MPI_Iprobe set `flag`, so it filled `status`.
            let first = unsafe { status.assume_init() };
            let got = first.MPI_TAG as u32;
            if first.MPI_TAG < 0 || !super::is_behind(got, tag, mask) {
                return Ok(None);
            }
            let mut msg = std::mem::MaybeUninit::<ffi::MPI_Message>::zeroed();
            // SAFETY: as for MPI_Iprobe; on `flag` MPI also writes a message
            // handle, which is then ours to receive (and only ours).
            check(
                unsafe {
                    ffi::MPI_Improbe(peer, first.MPI_TAG, comm, &mut flag, msg.as_mut_ptr(), status.as_mut_ptr())
                },
                "MPI_Improbe",
            )?;
            if flag == 0 {
                return Ok(None);
            }
            let mut count: c_int = 0;
            // SAFETY: MPI_Improbe set `flag`, so it filled `status`.
            check(unsafe { ffi::MPI_Get_count(status.as_ptr(), ffi::RSMPI_UINT8_T, &mut count) }, "MPI_Get_count")?;
            let mut buf = vec![0u8; count.max(0) as usize];
            // SAFETY: a constant handle defined by rsmpi's C shim; only read.
            let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
            // SAFETY: `msg` is the matched message MPI_Improbe handed over;
            // `buf` holds `count` bytes and is owned by `self.stray` until
            // the request completes (or is leaked by cancel_all / leak).
            let code = unsafe {
                ffi::MPI_Imrecv(
                    buf.as_mut_ptr() as *mut _,
                    count.max(0),
                    ffi::RSMPI_UINT8_T,
                    msg.as_mut_ptr(),
                    &mut req,
                )
            };
            check(code, "MPI_Imrecv")?;
            self.stray = Some(StrayRx { req, peer: peer as usize, tag: got, buf });
        }
        let Some(rx) = self.stray.as_mut() else { return Ok(None) };
        let mut flag: c_int = 0;
        // SAFETY: rx.req is the live request of MPI_Imrecv above.
        check(unsafe { ffi::MPI_Test(&mut rx.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) }, "MPI_Test (stray)")?;
        if flag == 0 {
            return Ok(None);
        }
        Ok(self.stray.take().map(|rx| Stray::new(rx.peer, rx.tag, rx.buf.len(), &rx.buf)))
    }

    /// After a failure: cancels pending receives and frees every request.
    /// A buffer MPI may still touch is retired (kept for the life of the
    /// process) and its slot replaced.
    pub fn cancel_all(&mut self) {
        if let Some(mut rx) = self.stray.take() {
            // SAFETY: a live request; a matched receive cannot be cancelled,
            // so it is freed and its buffer leaked (MPI may still write it).
            unsafe { ffi::MPI_Request_free(&mut rx.req) };
            std::mem::forget(rx.buf);
        }
        for id in 0..self.posted.len() {
            let Some(mut p) = self.posted[id].take() else { continue };
            let mut done = false;
            // SAFETY: p.req is a live request; after MPI_Request_free we
            // never use it again.
            unsafe {
                if p.is_recv {
                    ffi::MPI_Cancel(&mut p.req);
                    let mut flag: c_int = 0;
                    for _ in 0..1000 {
                        ffi::MPI_Test(&mut p.req, &mut flag, ffi::RSMPI_STATUS_IGNORE);
                        if flag != 0 {
                            done = true;
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                if !done {
                    ffi::MPI_Request_free(&mut p.req);
                }
            }
            if !done {
                let old = self.pool.retire(id);
                self.retired.push(old);
            }
        }
    }

    /// When MPI is already finalised nothing may be called: leak it all.
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.posted));
        std::mem::forget(std::mem::take(&mut self.retired));
        std::mem::forget(self.stray.take());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Retired buffers may still be written by MPI until it finalises.
        std::mem::forget(std::mem::take(&mut self.retired));
    }
}

/// An rsmpi communicator that may move to another thread with its carrier.
pub struct SendComm(pub ::mpi::topology::SimpleCommunicator);

// SAFETY: as for InFlight: an opaque handle used under the communicator's lock.
unsafe impl Send for SendComm {}
// SAFETY: shared only between the carriers of one lineage (a carrier and
// the survivors' carrier its shrink made), and only one of them is ever
// used: the old one's communicator is poisoned by then, and what it still
// does (cancelling its own requests) does not touch the handle's state.
unsafe impl Sync for SendComm {}
