//! Fault injection: a transport wrapper that spoils one chosen message of
//! one chosen rank, to test that every fault ends in a clear error on every
//! surviving rank, within the deadline.
//!
//! Enabled by [`crate::Communicator::inject_fault`] or, for whole
//! processes under `mpirun`, by `RINGFUSE_FAULT=KIND[=ARG]@RANK:MSG`:
//! rank `RANK` applies `KIND` to the `MSG`-th message (0-based) it sends on
//! each communicator. Kinds: `delay=250ms`, `drop`, `duplicate`,
//! `truncate`, `corrupt` (flips a payload bit), `corrupt-header`, `kill`
//! (the rank goes silent: that message and everything after it vanish, as
//! if the process had frozen), `exit` (the process exits at once, without
//! finalising MPI), `sigkill` (the process kills itself with `SIGKILL`:
//! nothing of it runs after, as when the kernel or a scheduler kills it).

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{Deadline, SlotId, Transport, WaitError};

/// What happens to the chosen message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Sent after sleeping this long.
    Delay(Duration),
    /// Never sent (the sender believes it was).
    Drop,
    /// Sent twice.
    Duplicate,
    /// Sent one byte short.
    Truncate,
    /// Sent with one payload bit flipped.
    Corrupt,
    /// Sent with the header's slice field altered.
    CorruptHeader,
    /// Replaced by these bytes (fuzzing the receive path).
    Replace(Vec<u8>),
    /// The rank goes silent from this message on.
    Kill,
    /// The process exits (code 86) at this message.
    Exit,
    /// The process kills itself with `SIGKILL` at this message.
    Sigkill,
}

impl FaultKind {
    /// Whether the faulty rank's process is gone after it.
    pub fn ends_process(&self) -> bool {
        matches!(self, FaultKind::Exit | FaultKind::Sigkill)
    }
}

/// One fault: rank `rank` applies `kind` to the `msg`-th message it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulty rank.
    pub rank: usize,
    /// Index of the message, counting every message this rank sends on
    /// the communicator from 0.
    pub msg: u64,
    /// What happens to it.
    pub kind: FaultKind,
}

impl FromStr for Fault {
    type Err = String;
    /// `KIND[=ARG]@RANK:MSG`, e.g. `drop@1:3` or `delay=250ms@0:0`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("RINGFUSE_FAULT={s:?}: expected KIND[=ARG]@RANK:MSG, e.g. drop@1:3 or delay=250ms@0:0");
        let (kind, at) = s.split_once('@').ok_or_else(bad)?;
        let (rank, msg) = at.split_once(':').ok_or_else(bad)?;
        let (name, arg) = kind.split_once('=').map_or((kind, None), |(k, a)| (k, Some(a)));
        let kind = match (name, arg) {
            ("delay", Some(a)) => {
                let ms = a.strip_suffix("ms").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                FaultKind::Delay(Duration::from_millis(ms))
            }
            ("drop", None) => FaultKind::Drop,
            ("duplicate", None) => FaultKind::Duplicate,
            ("truncate", None) => FaultKind::Truncate,
            ("corrupt", None) => FaultKind::Corrupt,
            ("corrupt-header", None) => FaultKind::CorruptHeader,
            ("kill", None) => FaultKind::Kill,
            ("exit", None) => FaultKind::Exit,
            ("sigkill", None) => FaultKind::Sigkill,
            _ => return Err(bad()),
        };
        Ok(Fault { rank: rank.parse().map_err(|_| bad())?, msg: msg.parse().map_err(|_| bad())?, kind })
    }
}

/// A transport that applies one [`Fault`] to its inner transport's traffic.
pub struct FaultyTransport {
    inner: Box<dyn Transport>,
    fault: Fault,
    sent: u64,
    dead: bool,
    // Slots whose (dropped or swallowed) send must look complete.
    fake: Vec<Option<usize>>,
    // A duplicate's own slot (the last one reserved) and what it shadows.
    dup: Option<(SlotId, SlotId)>,
    hidden: SlotId,
}

impl FaultyTransport {
    /// Wraps `inner`; only rank `fault.rank` misbehaves.
    pub fn new(inner: Box<dyn Transport>, fault: Fault) -> Self {
        FaultyTransport { inner, fault, sent: 0, dead: false, fake: Vec::new(), dup: None, hidden: 0 }
    }
}

impl Transport for FaultyTransport {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn message_bytes(&self) -> usize {
        self.inner.message_bytes()
    }
    fn tag_mask(&self) -> u32 {
        self.inner.tag_mask()
    }
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn reserve(&mut self, count: usize, bytes: usize) -> Result<(), String> {
        // One slot more than asked, hidden, for a duplicate's copy.
        self.inner.reserve(count + 1, bytes)?;
        self.hidden = self.hidden.max(count);
        self.fake.resize(self.hidden + 1, None);
        Ok(())
    }
    fn slot_bytes(&self) -> usize {
        self.inner.slot_bytes()
    }
    fn peers_read_in_place(&self) -> bool {
        self.inner.peers_read_in_place()
    }
    fn slot_mut(&mut self, id: SlotId) -> &mut [u8] {
        self.inner.slot_mut(id)
    }
    fn slot_pair(&mut self, a: SlotId, b: SlotId) -> (&[u8], &mut [u8]) {
        self.inner.slot_pair(a, b)
    }
    fn slot(&mut self, id: SlotId) -> &[u8] {
        self.inner.slot(id)
    }
    fn release(&mut self, id: SlotId) {
        self.inner.release(id)
    }

    fn post_send(&mut self, id: SlotId, len: usize, peer: usize, tag: u32) -> Result<(), String> {
        let nth = self.sent;
        self.sent += 1;
        if self.dead {
            self.fake[id] = Some(len);
            return Ok(());
        }
        if self.inner.rank() != self.fault.rank || nth != self.fault.msg {
            return self.inner.post_send(id, len, peer, tag);
        }
        tracing::warn!("ringfuse fault injection: rank {} message {nth}: {:?}", self.fault.rank, self.fault.kind);
        match &self.fault.kind {
            FaultKind::Delay(d) => {
                std::thread::sleep(*d);
                self.inner.post_send(id, len, peer, tag)
            }
            FaultKind::Drop => {
                self.fake[id] = Some(len);
                Ok(())
            }
            FaultKind::Kill => {
                self.dead = true;
                self.fake[id] = Some(len);
                Ok(())
            }
            FaultKind::Exit => std::process::exit(86),
            FaultKind::Sigkill => {
                let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
                // The signal is delivered before kill returns to a process
                // signalling itself; should it not be, go silent.
                self.dead = true;
                self.fake[id] = Some(len);
                Ok(())
            }
            FaultKind::Duplicate => {
                let hidden = self.hidden;
                let (src, dst) = self.inner.slot_pair(id, hidden);
                dst[..len].copy_from_slice(&src[..len]);
                self.inner.post_send(id, len, peer, tag)?;
                self.dup = Some((hidden, id));
                self.inner.post_send(hidden, len, peer, tag)
            }
            FaultKind::Truncate => self.inner.post_send(id, len.saturating_sub(1), peer, tag),
            FaultKind::Corrupt => {
                let buf = self.inner.slot_mut(id);
                // The last payload byte; a header-only message gets its
                // last header byte flipped instead.
                buf[len - 1] ^= 0x10;
                self.inner.post_send(id, len, peer, tag)
            }
            FaultKind::CorruptHeader => {
                self.inner.slot_mut(id)[12] ^= 0x01; // low byte of the slice index
                self.inner.post_send(id, len, peer, tag)
            }
            FaultKind::Replace(bytes) => {
                let buf = self.inner.slot_mut(id);
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                self.inner.post_send(id, n, peer, tag)
            }
        }
    }

    fn post_recv(&mut self, id: SlotId, peer: usize, tag: u32) -> Result<(), String> {
        if self.dead {
            return Ok(()); // never completes: wait() reports the death
        }
        self.inner.post_recv(id, peer, tag)
    }

    fn wait(&mut self, id: SlotId, deadline: &mut Deadline, abort: &AtomicBool) -> Result<usize, WaitError> {
        if let Some(len) = self.fake.get_mut(id).and_then(Option::take) {
            return Ok(len);
        }
        if self.dead {
            return Err(WaitError::Failed(format!("rank {} was killed by fault injection", self.fault.rank)));
        }
        let r = self.inner.wait(id, deadline, abort);
        if let Some((hidden, of)) = self.dup {
            if of == id {
                self.dup = None;
                self.inner.wait(hidden, deadline, abort)?;
            }
        }
        r
    }

    fn lost_peers(&self) -> Vec<(usize, String)> {
        self.inner.lost_peers()
    }
    fn watches_peers(&self) -> bool {
        self.inner.watches_peers()
    }
    // The survivors' carrier carries no fault: the fault's rank and
    // message counts belong to the old one.
    fn shrink(&mut self, lost: &[usize], deadline: &mut super::Deadline) -> Result<super::Shrunk, String> {
        self.inner.shrink(lost, deadline)
    }

    fn cancel_all(&mut self) {
        self.fake.iter_mut().for_each(|f| *f = None);
        self.dup = None;
        self.inner.cancel_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_reject_typos() {
        let f: Fault = "delay=250ms@2:7".parse().unwrap();
        assert_eq!(f, Fault { rank: 2, msg: 7, kind: FaultKind::Delay(Duration::from_millis(250)) });
        assert_eq!("kill@0:0".parse::<Fault>().unwrap().kind, FaultKind::Kill);
        for bad in ["drop", "drop@1", "drop@x:1", "delay@1:1", "delay=3s@1:1", "explode@1:1", "drop=1@1:1"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad} should not parse");
        }
    }
}
