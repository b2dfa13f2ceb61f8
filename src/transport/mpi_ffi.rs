//! The only `unsafe` of the MPI carrier: nonblocking point-to-point calls
//! on buffers the carrier owns. rsmpi's safe `immediate_*` API ties a
//! buffer's lifetime to a scope and panics if a request outlives it; a
//! collective that times out must instead leave the request pending and
//! keep its buffer, so the carrier holds raw requests here.

#![allow(unsafe_code)]

use std::os::raw::c_int;

use ::mpi::ffi;

/// A pending MPI request.
pub struct Request(ffi::MPI_Request);

// SAFETY: an MPI_Request is an opaque handle; moving it between threads is
// allowed as long as calls on it are serialised, which the communicator's
// lock guarantees (the library asks for MPI_THREAD_SERIALIZED or better).
unsafe impl Send for Request {}

fn check(code: c_int, what: &str) -> Result<(), String> {
    if code == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(format!("{what} returned MPI error code {code}"))
    }
}

/// `MPI_Isend` of `len` bytes at `ptr`.
///
/// # Safety
/// `ptr..ptr+len` must stay valid and unmodified until the request
/// completes or is freed and its buffer retired.
pub unsafe fn isend(ptr: *const u8, len: usize, peer: usize, tag: u32, comm: ffi::MPI_Comm) -> Result<Request, String> {
    let mut req = ffi::RSMPI_REQUEST_NULL;
    let count = c_int::try_from(len).map_err(|_| format!("message of {len} bytes exceeds MPI's int count"))?;
    // SAFETY: the caller keeps the buffer alive; peer/tag are plain ints.
    let code = unsafe { ffi::MPI_Isend(ptr as *const _, count, ffi::RSMPI_UINT8_T, peer as c_int, tag as c_int, comm, &mut req) };
    check(code, "MPI_Isend").map(|_| Request(req))
}

/// `MPI_Irecv` of at most `len` bytes into `ptr`.
///
/// # Safety
/// `ptr..ptr+len` must stay valid and otherwise unused until the request
/// completes, or is cancelled, or is freed and its buffer retired.
pub unsafe fn irecv(ptr: *mut u8, len: usize, peer: usize, tag: u32, comm: ffi::MPI_Comm) -> Result<Request, String> {
    let mut req = ffi::RSMPI_REQUEST_NULL;
    let count = c_int::try_from(len).map_err(|_| format!("slot of {len} bytes exceeds MPI's int count"))?;
    // SAFETY: as for isend.
    let code = unsafe { ffi::MPI_Irecv(ptr as *mut _, count, ffi::RSMPI_UINT8_T, peer as c_int, tag as c_int, comm, &mut req) };
    check(code, "MPI_Irecv").map(|_| Request(req))
}

/// `MPI_Test`: `Some(bytes)` once complete (the request is then consumed).
pub fn test(req: &mut Request) -> Result<Option<usize>, String> {
    let mut flag: c_int = 0;
    let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::zeroed();
    // SAFETY: req.0 is a live request handle from isend/irecv; status is
    // written by MPI before we read it.
    let code = unsafe { ffi::MPI_Test(&mut req.0, &mut flag, status.as_mut_ptr()) };
    check(code, "MPI_Test")?;
    if flag == 0 {
        return Ok(None);
    }
    let mut count: c_int = 0;
    // SAFETY: MPI_Test completed the request and filled `status`.
    let code = unsafe { ffi::MPI_Get_count(status.as_ptr(), ffi::RSMPI_UINT8_T, &mut count) };
    check(code, "MPI_Get_count")?;
    Ok(Some(count.max(0) as usize))
}

/// Cancels (receives only; cancelling sends is deprecated) and frees a
/// request. Returns whether MPI confirmed the buffer is no longer in use.
pub fn cancel_and_free(mut req: Request, is_recv: bool) -> bool {
    // SAFETY: req.0 is a live request handle; after MPI_Request_free MPI
    // never hands it back, and we drop our copy.
    unsafe {
        if is_recv {
            ffi::MPI_Cancel(&mut req.0);
            let mut flag: c_int = 0;
            // A cancelled receive completes promptly; give it a moment.
            for _ in 0..1000 {
                ffi::MPI_Test(&mut req.0, &mut flag, ffi::RSMPI_STATUS_IGNORE);
                if flag != 0 {
                    return true;
                }
                std::thread::yield_now();
            }
        }
        ffi::MPI_Request_free(&mut req.0);
    }
    false
}

/// An rsmpi communicator that may move to another thread with its carrier.
pub struct SendComm(pub ::mpi::topology::SimpleCommunicator);

// SAFETY: an MPI_Comm is an opaque handle; with MPI_THREAD_SERIALIZED any
// thread may use it as long as calls are serialised, which the owning
// communicator's lock guarantees.
unsafe impl Send for SendComm {}
