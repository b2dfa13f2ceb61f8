//! The 48-byte header in front of every message's payload.
//!
//! It carries what a receiver needs to know the message is the one its
//! schedule expects: the collective's sequence number, block and slice, and
//! a *fingerprint* of the call (kind, element type, count, op, codec,
//! root), so ranks that called different collectives fail with both calls
//! named instead of reducing garbage, and the options every rank must pass
//! alike ([`Agreed`]: schedule, slots, message size, scale block), so ranks
//! that differ there fail with both settings named instead of a deadline or
//! a length error. It also carries flags that must reach
//! every rank: a partial result overflowed the wire format (OR-ed hop by
//! hop, so all ranks fail alike), or the sender gave up on this collective.
//! With checksums on (`AllreduceOpts::checksum`), it also carries the
//! payload's CRC-32C, so a message corrupted in transit is an error instead
//! of a wrong gradient.

use crate::codec::Codec;
use crate::element::{DType, ReduceOp};
use crate::op::{Collective, OpDesc};

/// Bytes of header before each payload (keeps payloads 16-byte aligned).
pub const HEADER: usize = 48;
const MAGIC: u16 = 0x5246; // "RF"

/// A partial or final value of this slice overflowed the wire format.
pub const FLAG_OVERFLOW: u16 = 1;
/// Header-only notice: the sender failed this collective and stopped. The
/// `block` field then holds the rank that failed first.
pub const FLAG_ABORT: u16 = 2;
/// `crc` holds the CRC-32C of the message ([`message_crc`]); the receiver
/// checks it.
pub const FLAG_CHECKSUM: u16 = 4;

/// Options every rank of one call must pass alike, carried in every
/// header: where two ranks differ, a message shows it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Agreed {
    /// The schedule that runs (`AnySchedule::code`; 0 where none is named).
    pub schedule: u8,
    /// Messages in flight each way.
    pub slots: u8,
    /// Elements per scale of a block-scaled codec (0 for the others).
    pub scale_block: u16,
    /// Elements per message.
    pub slice: u32,
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Low 32 bits of the collective's sequence number.
    pub seq: u32,
    /// Schedule block of the payload.
    pub block: u32,
    /// Slice index within the block.
    pub slice: u32,
    /// The sender's call, see [`fingerprint`].
    pub fp: [u8; 16],
    /// [`message_crc`] when `flags` has [`FLAG_CHECKSUM`], else 0.
    pub crc: u32,
    /// The sender's options that must agree.
    pub agreed: Agreed,
}

impl Header {
    /// A header for `desc`'s messages.
    pub fn new(desc: &OpDesc, block: u32, slice: u32) -> Header {
        Header {
            flags: 0,
            seq: desc.seq as u32,
            block,
            slice,
            fp: fingerprint(desc),
            crc: 0,
            agreed: Agreed::default(),
        }
    }

    /// Writes the header into the first [`HEADER`] bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        buf[2..4].copy_from_slice(&self.flags.to_le_bytes());
        buf[4..8].copy_from_slice(&self.seq.to_le_bytes());
        buf[8..12].copy_from_slice(&self.block.to_le_bytes());
        buf[12..16].copy_from_slice(&self.slice.to_le_bytes());
        buf[16..32].copy_from_slice(&self.fp);
        buf[32..36].copy_from_slice(&self.crc.to_le_bytes());
        buf[36] = self.agreed.schedule;
        buf[37] = self.agreed.slots;
        buf[38..40].copy_from_slice(&self.agreed.scale_block.to_le_bytes());
        buf[40..44].copy_from_slice(&self.agreed.slice.to_le_bytes());
        buf[44..48].fill(0);
    }

    /// Reads a header from any bytes; `None` if too short or not ours
    /// (wrong magic, or reserved bytes not zero).
    pub fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER || u16::from_le_bytes([buf[0], buf[1]]) != MAGIC || buf[44..48] != [0; 4] {
            return None;
        }
        let u32at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&buf[16..32]);
        Some(Header {
            flags: u16::from_le_bytes([buf[2], buf[3]]),
            seq: u32at(4),
            block: u32at(8),
            slice: u32at(12),
            fp,
            crc: u32at(32),
            agreed: Agreed {
                schedule: buf[36],
                slots: buf[37],
                scale_block: u16::from_le_bytes([buf[38], buf[39]]),
                slice: u32at(40),
            },
        })
    }
}

/// The CRC-32C a sealed message carries: over the whole header but the CRC
/// itself (flags, sequence, block, slice, fingerprint and agreed options:
/// a flipped flag is caught too) and the payload after the header.
pub fn message_crc(msg: &[u8], payload_bytes: usize) -> u32 {
    let head = crc32c::crc32c_append(crc32c::crc32c(&msg[..32]), &msg[36..HEADER]);
    crc32c::crc32c_append(head, &msg[HEADER..HEADER + payload_bytes])
}

/// Writes `h` into `msg` with [`FLAG_CHECKSUM`] set and the CRC of the
/// header and `payload_bytes` of payload.
pub fn write_sealed(mut h: Header, msg: &mut [u8], payload_bytes: usize) {
    h.flags |= FLAG_CHECKSUM;
    h.crc = 0;
    h.write(msg);
    let crc = message_crc(msg, payload_bytes);
    msg[32..36].copy_from_slice(&crc.to_le_bytes());
}

const KINDS: [Collective; 5] = [
    Collective::Allreduce,
    Collective::ReduceScatter,
    Collective::Allgather,
    Collective::Broadcast,
    Collective::Barrier,
];
const DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::Bf16];
const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod];
const CODECS: [Codec; 5] = Codec::ALL;

fn index<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).map_or(u8::MAX, |i| i as u8)
}

/// The call in 16 bytes: kind, dtype, op, codec, root, count.
pub fn fingerprint(d: &OpDesc) -> [u8; 16] {
    let mut fp = [0u8; 16];
    fp[0] = index(&KINDS, &d.kind);
    fp[1] = index(&DTYPES, &d.dtype);
    fp[2] = d.op.map_or(u8::MAX, |o| index(&OPS, &o));
    fp[3] = index(&CODECS, &d.codec);
    fp[4..8].copy_from_slice(&d.root.map_or(u32::MAX, |r| r as u32).to_le_bytes());
    fp[8..16].copy_from_slice(&(d.count as u64).to_le_bytes());
    fp
}

/// Reads a fingerprint back into a call description (for the error that
/// names the peer's call). `None` for bytes no ringfuse rank writes.
pub fn describe(fp: &[u8; 16], seq: u32) -> Option<OpDesc> {
    let pick = |all: &[_], i: u8| -> Option<usize> { ((i as usize) < all.len()).then_some(i as usize) };
    let kind = KINDS[pick(&KINDS.map(|_| ()), fp[0])?];
    let dtype = DTYPES[pick(&DTYPES.map(|_| ()), fp[1])?];
    let op = if fp[2] == u8::MAX { None } else { Some(OPS[pick(&OPS.map(|_| ()), fp[2])?]) };
    let codec = CODECS[pick(&CODECS.map(|_| ()), fp[3])?];
    let root = u32::from_le_bytes([fp[4], fp[5], fp[6], fp[7]]);
    let count = u64::from_le_bytes(fp[8..16].try_into().ok()?);
    Some(OpDesc {
        kind,
        seq: seq as u64,
        dtype,
        count: usize::try_from(count).ok()?,
        op,
        codec,
        root: (root != u32::MAX).then_some(root as usize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_and_reject_garbage() {
        let d = OpDesc {
            kind: Collective::Broadcast,
            seq: 7,
            dtype: DType::Bf16,
            count: 123_456_789,
            op: None,
            codec: Codec::Fp16,
            root: Some(3),
        };
        assert_eq!(describe(&fingerprint(&d), 7), Some(d));
        assert_eq!(describe(&[0xee; 16], 0), None);
        let agreed = Agreed { schedule: 3, slots: 64, scale_block: 4096, slice: 1 << 26 };
        let h = Header { flags: FLAG_OVERFLOW, seq: 9, block: 2, slice: 5, fp: [1; 16], crc: 0xdead_beef, agreed };
        let mut buf = [0u8; HEADER];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::read(&buf[..HEADER - 1]), None);
        buf[HEADER - 1] = 1;
        assert_eq!(Header::read(&buf), None, "reserved bytes must be zero");
    }

    // The fuzz targets, as properties that run in `cargo test`: any bytes
    // at all go into the decoders, which must neither panic nor read past
    // what they were given, and what they accept must be what a sender
    // could have written.
    mod fuzz {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn header_read_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2 * HEADER)) {
                if let Some(h) = Header::read(&bytes) {
                    let mut again = [0u8; HEADER];
                    h.write(&mut again);
                    prop_assert_eq!(&again[..], &bytes[..HEADER], "accepted bytes re-encode to themselves");
                }
            }

            #[test]
            fn header_read_takes_near_valid_bytes(
                h in (any::<u16>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<[u8; 16]>(), any::<u32>()),
                a in (any::<u8>(), any::<u8>(), any::<u16>(), any::<u32>()),
                flip in 0usize..HEADER * 8,
            ) {
                let agreed = Agreed { schedule: a.0, slots: a.1, scale_block: a.2, slice: a.3 };
                let h = Header { flags: h.0, seq: h.1, block: h.2, slice: h.3, fp: h.4, crc: h.5, agreed };
                let mut buf = [0u8; HEADER];
                h.write(&mut buf);
                prop_assert_eq!(Header::read(&buf), Some(h));
                buf[flip / 8] ^= 1 << (flip % 8);
                // One flipped bit: rejected (magic, reserved) or a different header.
                prop_assert_ne!(Header::read(&buf), Some(h));
            }

            #[test]
            fn describe_takes_any_fingerprint(
                mut fp in any::<[u8; 16]>(),
                // Indices near the valid ranges, so that both sides of
                // every check are reached (uniform bytes almost never are).
                small in (0u8..7, 0u8..6, prop_oneof![0u8..7, Just(u8::MAX)], 0u8..5),
                seq in any::<u32>(),
                near_valid in any::<bool>(),
            ) {
                if near_valid {
                    (fp[0], fp[1], fp[2], fp[3]) = small;
                }
                if let Some(d) = describe(&fp, seq) {
                    prop_assert_eq!(fingerprint(&d), fp, "only canonical fingerprints are accepted");
                    prop_assert_eq!(d.seq, seq as u64);
                }
            }
        }
    }
}
