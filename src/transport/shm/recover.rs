//! Going on without a lost rank over shared memory: the survivors agree
//! on who is lost ([`crate::transport::agree`]) through mailboxes in their
//! control files, then build a carrier over themselves from fresh control
//! files announced in those mailboxes.
//!
//! A mailbox is words in its owner's control file, behind a sequence
//! stamp (odd while the owner writes): `[stamp, epoch, phase, mark, pid,
//! fd, nonce, lost bits...]`. The epoch numbers the shrinks of one lineage
//! of carriers, so nothing a rank wrote for an earlier shrink is read as
//! this one's; the new carrier's files are new, and start at zero.

use std::sync::atomic::{fence, Ordering};

use super::{ctl_bytes, file_name, life, Access, Deadline, Segment, ShmTransport};
use crate::transport::agree::{agree, indices, Board, Word};

const HEADER_WORDS: usize = 7;

/// Bytes of a mailbox of a carrier of `size` ranks.
pub(super) fn mailbox_bytes(size: usize) -> usize {
    8 * (HEADER_WORDS + size.div_ceil(64))
}

/// A survivor's word and the control file it announces with it.
#[derive(Clone, Debug, PartialEq)]
struct Mail {
    word: Word,
    pid: u32,
    fd: i32,
    nonce: u64,
}

/// The mailboxes of a carrier's ranks, with this rank's announcement.
struct Mailboxes<'a> {
    t: &'a ShmTransport,
    pid: u32,
    fd: i32,
    nonce: u64,
}

impl Board for Mailboxes<'_> {
    fn post(&mut self, w: &Word) {
        self.t.post_mail(&Mail { word: w.clone(), pid: self.pid, fd: self.fd, nonce: self.nonce });
    }
    fn read(&mut self, p: usize) -> Option<Word> {
        self.t.read_mail(p).map(|m| m.word)
    }
    fn gone(&mut self, p: usize) -> bool {
        self.t.is_lost(p).is_some()
    }
}

impl ShmTransport {
    fn mailbox(&self) -> usize {
        life(self.size) + 64
    }

    /// Publishes `m` in this rank's mailbox.
    fn post_mail(&self, m: &Mail) {
        let at = self.mailbox();
        let stamp = self.ctl.counter(at);
        let s = stamp.load(Ordering::Relaxed);
        stamp.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let w = &m.word;
        let mut words = vec![w.epoch, w.phase, w.mark, m.pid as u64, m.fd as u64, m.nonce];
        words.extend((0..self.size.div_ceil(64)).map(|k| {
            (0..64).filter(|b| w.lost.get(k * 64 + b).copied().unwrap_or(false)).fold(0u64, |acc, b| acc | 1 << b)
        }));
        for (i, v) in words.iter().enumerate() {
            self.ctl.counter(at + 8 * (i + 1)).store(*v, Ordering::Relaxed);
        }
        stamp.store(s + 2, Ordering::Release);
    }

    /// Peer `p`'s mailbox, read whole (never half-written), if it has
    /// published anything.
    fn read_mail(&self, p: usize) -> Option<Mail> {
        let seg = self.peer_ctl(p).ok()?;
        let at = self.mailbox();
        let stamp = seg.counter(at);
        loop {
            let s1 = stamp.load(Ordering::Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let n = HEADER_WORDS - 1 + self.size.div_ceil(64);
            let v: Vec<u64> = (0..n).map(|i| seg.counter(at + 8 * (i + 1)).load(Ordering::Relaxed)).collect();
            fence(Ordering::Acquire);
            if stamp.load(Ordering::Relaxed) != s1 {
                continue;
            }
            let bits = &v[HEADER_WORDS - 1..];
            let lost = (0..self.size).map(|q| bits[q / 64] >> (q % 64) & 1 == 1).collect();
            let word = Word { epoch: v[0], phase: v[1], mark: v[2], lost };
            return Some(Mail { word, pid: v[3] as u32, fd: v[4] as i32, nonce: v[5] });
        }
    }

    /// Agrees with every survivor on the lost ranks (at least `known` and
    /// those seen gone), then builds the carrier over the survivors:
    /// returns it and the lost ranks, lowest first.
    pub(super) fn agree_and_rebuild(
        &mut self,
        known: &[usize],
        deadline: &mut Deadline,
    ) -> Result<(ShmTransport, Vec<usize>), String> {
        let (n, me, epoch) = (self.size, self.rank, self.epoch + 1);
        let lost: Vec<bool> = (0..n).map(|p| known.contains(&p)).collect();
        if lost[me] {
            return Err(format!("rank {me} is itself among the lost ranks"));
        }
        let (pid, nonce) = (std::process::id(), rand::random::<u64>());
        // Sized for every old rank: an upper bound on the survivors, known
        // before the agreement ends.
        let ctl = Segment::create(ctl_bytes(n), &file_name(pid, nonce))
            .map_err(|e| format!("rank {me}: a control file for the survivors: {e}"))?;
        let mut board = Mailboxes { t: self, pid, fd: ctl.fd(), nonce };
        let decided = agree(&mut board, me, epoch, lost, 0, deadline)?;
        self.rebuild(ctl, file_name(pid, nonce), &decided.lost, epoch)
    }

    /// The carrier over the ranks not in `lost`, on `ctl` (named
    /// `ctl_name`) and the control files the others announced in their
    /// mailboxes.
    fn rebuild(
        &mut self,
        ctl: Segment,
        ctl_name: String,
        lost: &[bool],
        epoch: u64,
    ) -> Result<(ShmTransport, Vec<usize>), String> {
        let me = self.rank;
        let members: Vec<usize> = (0..self.size).filter(|&p| !lost[p]).collect();
        let size = members.len();
        let (mut pids, mut names, mut peer_ctl) = (Vec::new(), Vec::new(), Vec::new());
        for &p in &members {
            if p == me {
                pids.push(std::process::id());
                names.push(ctl_name.clone());
                peer_ctl.push(None);
                continue;
            }
            let m = self
                .read_mail(p)
                .filter(|m| m.word.epoch == epoch)
                .ok_or_else(|| format!("rank {me}: survivor {p} announced no control file"))?;
            let name = file_name(m.pid, m.nonce);
            let seg = match Segment::open_peer(m.pid, m.fd, &name, Access::ReadWrite) {
                Ok(s) if s.len() >= ctl_bytes(size) => Some(s),
                Ok(s) => return Err(format!("rank {me}: survivor {p}'s control file holds {} bytes", s.len())),
                // Gone since it announced the file: the new carrier names
                // it lost at its first wait on it.
                Err(_) if self.is_lost(p).is_some() => None,
                Err(e) => return Err(format!("rank {me}: cannot map survivor {p}'s control file: {e}")),
            };
            pids.push(m.pid);
            names.push(name);
            peer_ctl.push(seg);
        }
        let rank = members.iter().position(|&p| p == me).expect("this rank is a survivor");
        // The pidfds opened when the old carrier was made: they name the
        // processes that were checked then, whatever their PIDs are now.
        let pidfds = members.iter().map(|&p| self.pidfds[p].take()).collect();
        let t = ShmTransport::from_parts(rank, pids, names, ctl, peer_ctl, pidfds, epoch, self._keep.clone());
        Ok((t, indices(lost)))
    }
}
