//! Going on without a lost rank over shared memory: the survivors agree
//! on who is lost through mailboxes in their control files, then build a
//! carrier over themselves from fresh control files.
//!
//! Why it can agree at all: on one host a loss is certain, never
//! suspected. A process that exited shows through its pidfd, a carrier
//! that was dropped through its life line, and neither comes back. So a
//! flooding protocol suffices: each survivor publishes the set it knows
//! and takes in every other survivor's, and decides when every rank
//! outside its set published that same set. Two survivors cannot decide
//! differently: a rank that decided never publishes a larger set, so
//! another can only decide a set without it by seeing it dead. A rank
//! that sees a decision adopts it, even if it has seen a later death
//! since: the new carrier then fails its first collective naming that
//! rank, and the survivors shrink again.
//!
//! A mailbox is words in its owner's control file, behind a sequence
//! stamp (odd while the owner writes): `[stamp, epoch, phase, pid, fd,
//! nonce, lost bits...]`. The epoch numbers the shrinks of one lineage of
//! carriers, so nothing a rank wrote for an earlier shrink is read as
//! this one's; the new carrier's files are new, and start at zero.

use std::sync::atomic::{fence, Ordering};

use super::{ctl_bytes, file_name, life, Access, Deadline, Segment, ShmTransport};

const PROPOSE: u64 = 1;
const DECIDED: u64 = 2;
const HEADER_WORDS: usize = 6;

/// Bytes of a mailbox of a carrier of `size` ranks.
pub(super) fn mailbox_bytes(size: usize) -> usize {
    8 * (HEADER_WORDS + size.div_ceil(64))
}

/// One survivor's word in a shrink.
#[derive(Clone, Debug, PartialEq)]
struct Mail {
    epoch: u64,
    phase: u64,
    pid: u32,
    fd: i32,
    nonce: u64,
    lost: Vec<bool>,
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
        let mut words = vec![m.epoch, m.phase, m.pid as u64, m.fd as u64, m.nonce];
        words.extend((0..self.size.div_ceil(64)).map(|w| {
            (0..64).filter(|b| m.lost.get(w * 64 + b).copied().unwrap_or(false)).fold(0u64, |acc, b| acc | 1 << b)
        }));
        for (i, w) in words.iter().enumerate() {
            self.ctl.counter(at + 8 * (i + 1)).store(*w, Ordering::Relaxed);
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
            let words: Vec<u64> = (0..n).map(|i| seg.counter(at + 8 * (i + 1)).load(Ordering::Relaxed)).collect();
            fence(Ordering::Acquire);
            if stamp.load(Ordering::Relaxed) != s1 {
                continue;
            }
            let bits = &words[HEADER_WORDS - 1..];
            return Some(Mail {
                epoch: words[0],
                phase: words[1],
                pid: words[2] as u32,
                fd: words[3] as i32,
                nonce: words[4],
                lost: (0..self.size).map(|q| bits[q / 64] >> (q % 64) & 1 == 1).collect(),
            });
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
        let mut lost: Vec<bool> = (0..n).map(|p| known.contains(&p) || self.is_lost(p).is_some()).collect();
        if lost[me] {
            return Err(format!("rank {me} is itself among the lost ranks"));
        }
        let (pid, nonce) = (std::process::id(), rand::random::<u64>());
        // Sized for every old rank: an upper bound on the survivors, known
        // before the agreement ends.
        let ctl = Segment::create(ctl_bytes(n), &file_name(pid, nonce))
            .map_err(|e| format!("rank {me}: a control file for the survivors: {e}"))?;
        let mine = |phase: u64, lost: &[bool]| Mail { epoch, phase, pid, fd: ctl.fd(), nonce, lost: lost.to_vec() };
        self.post_mail(&mine(PROPOSE, &lost));
        let decided = loop {
            if deadline.passed() {
                let waiting: Vec<usize> = (0..n).filter(|&p| p != me && !lost[p]).collect();
                return Err(format!(
                    "rank {me}: the survivors did not agree on the lost ranks in time; \
                     this rank knows {:?} lost and waited on ranks {waiting:?} to say the same",
                    indices(&lost)
                ));
            }
            match self.round(&mut lost, epoch) {
                Round::Adopt(d) => break d,
                Round::Grew => {
                    if lost[me] {
                        return Err(format!("rank {me}: another survivor counts this rank lost"));
                    }
                    self.post_mail(&mine(PROPOSE, &lost));
                }
                Round::Agreed => break lost,
                Round::Wait => std::thread::yield_now(),
            }
        };
        if decided[me] {
            return Err(format!("rank {me}: the survivors decided that this rank is lost"));
        }
        self.post_mail(&mine(DECIDED, &decided));
        self.rebuild(ctl, file_name(pid, nonce), &decided, epoch)
    }

    /// One look at every survivor's mailbox, taking in what it knows.
    fn round(&self, lost: &mut [bool], epoch: u64) -> Round {
        let (mut grew, mut same) = (false, true);
        let this_epoch = |m: Option<Mail>| m.filter(|m| m.epoch == epoch);
        for p in 0..self.size {
            if p == self.rank || lost[p] {
                continue;
            }
            let mut mail = this_epoch(self.read_mail(p));
            if self.is_lost(p).is_some() {
                // Read again after seeing it gone: a survivor decides
                // before it drops its old carrier (which raises its life
                // line), so its decision shows here if it made one.
                mail = this_epoch(self.read_mail(p));
                if mail.as_ref().is_none_or(|m| m.phase != DECIDED) {
                    lost[p] = true;
                    grew = true;
                    continue;
                }
            }
            match mail {
                Some(m) if m.phase == DECIDED => return Round::Adopt(m.lost),
                Some(m) => {
                    for (q, &l) in m.lost.iter().enumerate() {
                        if l && !lost[q] {
                            lost[q] = true;
                            grew = true;
                        }
                    }
                    same &= m.lost == *lost;
                }
                None => same = false,
            }
        }
        if grew {
            Round::Grew
        } else if same {
            Round::Agreed
        } else {
            Round::Wait
        }
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
                .filter(|m| m.epoch == epoch)
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
        let mut t = ShmTransport::from_parts(rank, pids, names, ctl, peer_ctl, epoch, self._keep.clone());
        // The pidfds opened when the old carrier was made: they name the
        // processes that were checked then, whatever their PIDs are now.
        for (i, &p) in members.iter().enumerate() {
            if let Some(fd) = self.pidfds[p].take() {
                t.pidfds[i] = Some(fd);
            }
        }
        Ok((t, indices(lost)))
    }
}

fn indices(set: &[bool]) -> Vec<usize> {
    set.iter().enumerate().filter(|(_, &l)| l).map(|(p, _)| p).collect()
}

enum Round {
    /// A survivor decided this set.
    Adopt(Vec<bool>),
    /// This rank learned of more lost ranks.
    Grew,
    /// Every survivor published this rank's set.
    Agreed,
    /// Some survivor has not said the same yet.
    Wait,
}
