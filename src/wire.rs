//! The 16-byte header in front of every message's payload.
//!
//! It carries what a receiver needs to know the message is the one its
//! schedule expects (collective sequence number, block, slice index), and
//! the flags that must reach every rank (a partial result overflowed the
//! wire format). Flags are OR-ed hop by hop, so the allgather delivers each
//! slice's final flags to every rank and all ranks fail alike.

/// Bytes of header before each payload (keeps `f64` payloads aligned).
pub const HEADER: usize = 16;
const MAGIC: u16 = 0x5246; // "RF"

/// A partial or final value of this slice overflowed the wire format.
pub const FLAG_OVERFLOW: u16 = 1;

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
}

impl Header {
    /// Writes the header into the first [`HEADER`] bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        buf[2..4].copy_from_slice(&self.flags.to_le_bytes());
        buf[4..8].copy_from_slice(&self.seq.to_le_bytes());
        buf[8..12].copy_from_slice(&self.block.to_le_bytes());
        buf[12..16].copy_from_slice(&self.slice.to_le_bytes());
    }

    /// Reads a header from any bytes; `None` if too short or not ours.
    pub fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER || u16::from_le_bytes([buf[0], buf[1]]) != MAGIC {
            return None;
        }
        let u32at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        Some(Header { flags: u16::from_le_bytes([buf[2], buf[3]]), seq: u32at(4), block: u32at(8), slice: u32at(12) })
    }
}
