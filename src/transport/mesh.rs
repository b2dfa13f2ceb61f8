//! A TCP connection between every pair of ranks of the MPI carrier,
//! carrying nothing but the survivors' agreement after a loss: its job is
//! to close. The kernel closes a process's sockets when it dies, however
//! it dies, so a peer's connection reading end-of-file (or reset) says its
//! process is gone, within a round trip, with no heartbeat traffic. Open
//! MPI 4.1 reports nothing for a dead peer (its requests stay pending),
//! which is why the carrier keeps its own.
//!
//! A host that fails as a whole (power, kernel) closes nothing; TCP
//! keepalive probes an idle connection after [`KEEPALIVE_IDLE`] and gives
//! up after [`KEEPALIVE_PROBES`] unanswered probes
//! [`KEEPALIVE_INTERVAL`] apart, so its ranks are found in about 25 s
//! (and no middlebox drops an idle connection meanwhile). Set-up: every rank listens on a port of its
//! own and announces it with its IPv4 addresses and a random nonce; the
//! higher rank of each pair connects (loopback first where both share a
//! host and network namespace) and names both ends and nonces, and the
//! higher acknowledges only a handshake addressed to itself, so an
//! address that two hosts share (a container bridge) cannot join the
//! wrong ranks.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::agree::{Board, Word};

/// Bytes of one rank's announcement: port, nonce, host, address count and
/// up to [`MAX_ADDRS`] IPv4 addresses.
pub(crate) const RECORD: usize = 2 + 8 + 8 + 1 + 4 * MAX_ADDRS;
const MAX_ADDRS: usize = 12;
/// Bytes of a handshake: from rank, its nonce, to rank, its nonce.
const HELLO: usize = 24;
/// Idle time before a connection is probed.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered probes.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the connection fails.
pub(crate) const KEEPALIVE_PROBES: u32 = 3;

/// Probes `sock` while idle, so that a peer host that went down fails it.
fn keepalive(sock: &TcpStream) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(sock, true)?;
    sockopt::set_tcp_keepidle(sock, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(sock, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(sock, KEEPALIVE_PROBES)?;
    Ok(())
}

/// Ranks beyond which no mesh is made (a connection per peer, a
/// descriptor each): a lost rank is then found at the deadline.
pub(crate) const MAX_RANKS: usize = 128;

struct Peer {
    sock: TcpStream,
    buf: Vec<u8>,
    word: Option<Word>,
    gone: Option<String>,
    /// Whether it said it leaves (dropped its carrier) before closing:
    /// then its process lives on and will finalise MPI.
    left: bool,
}

/// This rank's connections to every other rank.
pub(crate) struct Mesh {
    rank: usize,
    size: usize,
    peers: RefCell<Vec<Option<Peer>>>,
}

/// This host and network namespace: ranks that share both reach each
/// other on loopback.
fn host_id() -> u64 {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let netns = std::fs::read_link("/proc/self/ns/net").map(|p| p.display().to_string()).unwrap_or_default();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in boot.trim().bytes().chain(netns.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

struct Record {
    port: u16,
    nonce: u64,
    host: u64,
    addrs: Vec<Ipv4Addr>,
}

impl Record {
    fn bytes(&self) -> [u8; RECORD] {
        let mut r = [0u8; RECORD];
        r[..2].copy_from_slice(&self.port.to_le_bytes());
        r[2..10].copy_from_slice(&self.nonce.to_le_bytes());
        r[10..18].copy_from_slice(&self.host.to_le_bytes());
        r[18] = self.addrs.len().min(MAX_ADDRS) as u8;
        for (i, a) in self.addrs.iter().take(MAX_ADDRS).enumerate() {
            r[19 + 4 * i..23 + 4 * i].copy_from_slice(&a.octets());
        }
        r
    }
    fn parse(r: &[u8]) -> Option<Record> {
        if r.len() != RECORD {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
        let count = (r[18] as usize).min(MAX_ADDRS);
        let addrs = (0..count).map(|i| Ipv4Addr::new(r[19 + 4 * i], r[20 + 4 * i], r[21 + 4 * i], r[22 + 4 * i]));
        Some(Record {
            port: u16::from_le_bytes([r[0], r[1]]),
            nonce: u64_at(2),
            host: u64_at(10),
            addrs: addrs.collect(),
        })
    }
}

fn hello(from: usize, from_nonce: u64, to: usize, to_nonce: u64) -> [u8; HELLO] {
    let mut h = [0u8; HELLO];
    h[..4].copy_from_slice(&(from as u32).to_le_bytes());
    h[4..12].copy_from_slice(&from_nonce.to_le_bytes());
    h[12..16].copy_from_slice(&(to as u32).to_le_bytes());
    h[16..24].copy_from_slice(&to_nonce.to_le_bytes());
    h
}

impl Mesh {
    /// Connects every pair of `size` ranks; `share` exchanges one
    /// [`RECORD`] per rank (collective, rank order). Fails naming the
    /// peer that could not be reached by `timeout`.
    pub(crate) fn new(
        rank: usize,
        size: usize,
        share: &mut dyn FnMut(&[u8; RECORD]) -> Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Mesh, String> {
        let until = Instant::now() + timeout;
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let mut addrs: Vec<Ipv4Addr> = if_addrs::get_if_addrs()
            .map_err(|e| format!("this host's addresses: {e}"))?
            .into_iter()
            .filter_map(|i| match i.ip() {
                std::net::IpAddr::V4(a) if !a.is_loopback() => Some(a),
                _ => None,
            })
            .collect();
        addrs.dedup();
        let mine = Record { port, nonce: rand::random(), host: host_id(), addrs };
        let all: Vec<Record> = share(&mine.bytes()).iter().filter_map(|r| Record::parse(r)).collect();
        if all.len() != size {
            return Err(format!("{} of {size} ranks announced a liveness address", all.len()));
        }
        let mut peers: Vec<Option<Peer>> = (0..size).map(|_| None).collect();
        // The higher ranks connect to this one: accept them on a thread
        // while this one connects to the lower ranks, so no rank waits on
        // one that is itself still connecting.
        let accepted = std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept(&listener, rank, &all, size - 1 - rank, until));
            for (p, rec) in all.iter().enumerate().take(rank) {
                peers[p] = Some(connect(rank, mine.nonce, p, rec, mine.host, until)?);
            }
            acceptor.join().map_err(|_| "the liveness acceptor panicked".to_string())?
        })?;
        for (p, sock) in accepted {
            peers[p] = Some(Peer { sock, buf: Vec::new(), word: None, gone: None, left: false });
        }
        for p in peers.iter_mut().flatten() {
            p.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            keepalive(&p.sock).map_err(|e| format!("TCP keepalive: {e}"))?;
        }
        Ok(Mesh { rank, size, peers: RefCell::new(peers) })
    }

    /// The mesh of the ranks `members` (old ranks, in new rank order),
    /// this one among them.
    pub(crate) fn subset(mut self, members: &[usize]) -> Mesh {
        let mut old = std::mem::take(self.peers.get_mut());
        let rank = members.iter().position(|&p| p == self.rank).expect("this rank is a member");
        let peers = members.iter().map(|&p| old[p].take()).collect();
        Mesh { rank, size: members.len(), peers: RefCell::new(peers) }
    }

    /// Reads what peer `p` sent (words) and whether its connection closed.
    fn drain(&self, p: usize) {
        let mut peers = self.peers.borrow_mut();
        let Some(peer) = peers.get_mut(p).and_then(|x| x.as_mut()) else { return };
        if peer.gone.is_some() {
            return;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match peer.sock.read(&mut chunk) {
                Ok(0) => {
                    peer.gone = Some(format!("its liveness connection closed: rank {p}'s process exited"));
                    break;
                }
                Ok(n) => peer.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    peer.gone = Some(format!("its liveness connection failed ({e}): rank {p} is gone"));
                    break;
                }
            }
        }
        while let Some(frame) = take_frame(&mut peer.buf, self.size) {
            match frame {
                Frame::Word(w) => peer.word = Some(w),
                Frame::Leave => peer.left = true,
            }
        }
        if peer.left {
            // It may close at any moment after this: what matters is that
            // it left alive, not how its socket ends.
            peer.gone = Some(format!("its carrier was dropped: rank {p} left the job"));
        } else if peer.gone.is_some() {
            super::saw_peer_lost();
        }
    }

    /// How peer `p` is gone, if it is.
    pub(crate) fn lost(&self, p: usize) -> Option<String> {
        if p == self.rank || p >= self.size {
            return None;
        }
        self.drain(p);
        self.peers.borrow()[p].as_ref().and_then(|x| x.gone.clone())
    }
}

impl Board for Mesh {
    fn post(&mut self, w: &Word) {
        let frame = word_frame(w);
        for (p, peer) in self.peers.get_mut().iter_mut().enumerate() {
            let Some(peer) = peer.as_mut().filter(|x| x.gone.is_none()) else { continue };
            // Small frames into an idle socket's buffer: a short write
            // means the peer stopped reading, which only a gone peer does.
            if let Err(e) = write_all_nonblocking(&mut peer.sock, &frame) {
                peer.gone = Some(format!("a word to rank {p} could not be sent ({e})"));
            }
        }
    }
    fn read(&mut self, p: usize) -> Option<Word> {
        self.drain(p);
        self.peers.borrow()[p].as_ref().and_then(|x| x.word.clone())
    }
    fn gone(&mut self, p: usize) -> bool {
        self.lost(p).is_some()
    }
}

impl Drop for Mesh {
    /// Tells every peer this rank leaves alive, so that none takes the
    /// closing connection for a dead process (and skips `MPI_Finalize`).
    fn drop(&mut self) {
        for peer in self.peers.get_mut().iter_mut().flatten().filter(|x| x.gone.is_none()) {
            let _ = write_all_nonblocking(&mut peer.sock, &LEAVE.to_le_bytes());
        }
    }
}

fn write_all_nonblocking(sock: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let until = Instant::now() + Duration::from_secs(1);
    while !bytes.is_empty() {
        match sock.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < until => std::thread::yield_now(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `[len u32, epoch, phase, mark, lost bits...]`.
fn word_frame(w: &Word) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [w.epoch, w.phase, w.mark] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend(w.lost.iter().map(|&l| l as u8));
    let mut f = (v.len() as u32).to_le_bytes().to_vec();
    f.extend(v);
    f
}

/// The length field of the frame a rank sends as it drops its mesh.
const LEAVE: u32 = u32::MAX;

enum Frame {
    Word(Word),
    /// The peer dropped its carrier: it closes next, but lives on.
    Leave,
}

/// The next whole frame in `buf`, taken out of it; a malformed word is
/// skipped (only ringfuse writes here).
fn take_frame(buf: &mut Vec<u8>, size: usize) -> Option<Frame> {
    loop {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
        if len == LEAVE {
            buf.drain(..4);
            return Some(Frame::Leave);
        }
        let len = len as usize;
        let body = buf.get(4..4 + len)?.to_vec();
        buf.drain(..4 + len);
        if body.len() < 24 || body.len() - 24 != size {
            continue;
        }
        let u = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let lost = body[24..].iter().map(|&b| b != 0).collect();
        return Some(Frame::Word(Word { epoch: u(0), phase: u(8), mark: u(16), lost }));
    }
}

/// Connects to rank `p` by its record, trying loopback first where both
/// share a host; a connection counts once `p` acknowledged the handshake.
fn connect(me: usize, nonce: u64, p: usize, rec: &Record, host: u64, until: Instant) -> Result<Peer, String> {
    let mut tries: Vec<Ipv4Addr> = Vec::new();
    if rec.host == host {
        tries.push(Ipv4Addr::LOCALHOST);
    }
    tries.extend(&rec.addrs);
    let greeting = hello(me, nonce, p, rec.nonce);
    let mut why = String::from("no address announced");
    loop {
        for &a in &tries {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no liveness connection to rank {p} (last: {why})"));
            }
            let attempt = || -> std::io::Result<TcpStream> {
                let addr = SocketAddr::from((a, rec.port));
                let mut s = TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(2)))?;
                s.set_nodelay(true)?;
                s.write_all(&greeting)?;
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack)?;
                if ack[0] != b'k' {
                    return Err(std::io::Error::other("refused"));
                }
                Ok(s)
            };
            match attempt() {
                Ok(sock) => return Ok(Peer { sock, buf: Vec::new(), word: None, gone: None, left: false }),
                Err(e) => why = format!("{a}:{}: {e}", rec.port),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts `count` connections from the ranks above `me` whose handshake
/// names this rank; returns them with their ranks.
fn accept(
    listener: &TcpListener,
    me: usize,
    all: &[Record],
    count: usize,
    until: Instant,
) -> Result<Vec<(usize, TcpStream)>, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut got: Vec<(usize, TcpStream)> = Vec::new();
    while got.len() < count {
        if Instant::now() >= until {
            let have: Vec<usize> = got.iter().map(|g| g.0).collect();
            let missing: Vec<usize> = (me + 1..all.len()).filter(|p| !have.contains(p)).collect();
            return Err(format!("no liveness connection from ranks {missing:?}"));
        }
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(format!("accepting liveness connections: {e}")),
        };
        let checked = (|| -> std::io::Result<Option<usize>> {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut h = [0u8; HELLO];
            s.read_exact(&mut h)?;
            let from = u32::from_le_bytes(h[..4].try_into().expect("4")) as usize;
            let to = u32::from_le_bytes(h[12..16].try_into().expect("4")) as usize;
            let ok = from > me
                && from < all.len()
                && to == me
                && h[..] == hello(from, all[from].nonce, me, all[me].nonce)[..]
                && !got.iter().any(|g| g.0 == from);
            if ok {
                s.write_all(b"k")?;
            }
            Ok(ok.then_some(from))
        })();
        if let Ok(Some(from)) = checked {
            got.push((from, s));
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Mutex};

    use super::*;
    use crate::transport::agree::{agree, DECIDED};
    use crate::transport::Deadline;

    /// `n` meshes as threads of this process, exchanging records the way
    /// MPI's allgather would.
    fn meshes(n: usize) -> Vec<Mesh> {
        let table = Mutex::new(vec![Vec::new(); n]);
        let barrier = Barrier::new(n);
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|rank| {
                    let (table, barrier) = (&table, &barrier);
                    s.spawn(move || {
                        let mut share = |mine: &[u8; RECORD]| {
                            table.lock().unwrap()[rank] = mine.to_vec();
                            barrier.wait();
                            table.lock().unwrap().clone()
                        };
                        Mesh::new(rank, n, &mut share, Duration::from_secs(20)).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Closes `m`'s connections without a word, as the kernel does when
    /// its process dies.
    fn die(mut m: Mesh) {
        m.peers.get_mut().clear();
    }

    /// How `m` sees peer `p` gone, waiting up to a second for it.
    fn seen_gone(m: &Mesh, p: usize) -> Option<String> {
        (0..200).find_map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            m.lost(p)
        })
    }

    /// A rank that drops its mesh says so first: the others see it left
    /// alive, and one that dies is seen to have exited.
    #[test]
    fn a_dropped_mesh_is_seen_to_leave_and_a_dead_one_to_exit() {
        let mut ms = meshes(3);
        drop(ms.remove(2));
        let left = seen_gone(&ms[0], 2).expect("a dropped mesh is seen gone");
        assert!(left.contains("left the job"), "{left}");
        die(ms.remove(1));
        let died = seen_gone(&ms[0], 1).expect("a dead mesh is seen gone");
        assert!(died.contains("exited"), "{died}");
    }

    /// A rank whose connections close (its process died) is seen gone by
    /// every other; the others agree on it over the mesh and the
    /// survivors' mesh still carries their words.
    #[test]
    fn a_closed_peer_is_lost_and_the_rest_agree_over_the_mesh() {
        let mut ms = meshes(4);
        assert!((0..4).all(|r| (0..4).all(|p| ms[r].lost(p).is_none())), "every rank alive at first");
        die(ms.remove(1));
        let words: Vec<Word> = std::thread::scope(|s| {
            let hs: Vec<_> = ms
                .iter_mut()
                .map(|m| {
                    s.spawn(move || {
                        let me = m.rank;
                        let mut deadline = Deadline::after(Duration::from_secs(20));
                        let known = vec![false; 4];
                        agree(m, me, 1, known, 7 + me as u64, &mut deadline).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for w in &words {
            assert_eq!((w.phase, &w.lost, w.mark), (DECIDED, &vec![false, true, false, false], 10), "{words:?}");
        }
        let mut small: Vec<Mesh> = ms.into_iter().map(|m| m.subset(&[0, 2, 3])).collect();
        let w = Word { epoch: 2, phase: 1, lost: vec![false; 3], mark: 0 };
        small[0].post(&w);
        let got = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            small[2].read(0).filter(|x| x.epoch == 2)
        });
        assert_eq!(got, Some(w), "rank 2 of the survivors reads rank 0's word");
        assert!(small[1].lost(0).is_none() && small[1].lost(2).is_none());
    }
}
