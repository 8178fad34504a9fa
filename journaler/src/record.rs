//! The byte layout of journal segments and records (all little-endian).
//!
//! A segment starts with a 32-byte header: magic `VDJRNL01`, format version (u32), CRC-32 of the
//! header with this field zero (u32), the config fingerprint (u64), and the sequence of its first
//! record (u64). Records follow:
//! payload length (u32), CRC-32 of everything after the CRC field (u32), sequence (u64), time in
//! microseconds (u64), the digest of the command's events as the matcher applied it (u64, see
//! `Events::digest`), the payload (the command in `postcard` form), and the byte [`RECORD_END`].
//! A record thus never ends in a zero byte, so the preallocated zeros after the last record never
//! hide part of it: recovery tells a record cut short by a crash from a whole one damaged later
//! (`segment::read_journal`).
//!
//! Version 3 added the digest, version 4 the header's checksum (so a damaged header is told
//! apart from one written under another config) and the end byte, version 5 the order options,
//! `order.cancel_all` and `order.amend` in the commands, version 6 the market bid by stock amount,
//! version 7 each order's client order id window; a build reads only its own version.

use viaduct_matcher::Command;

pub const SEGMENT_MAGIC: &[u8; 8] = b"VDJRNL01";
pub const SEGMENT_VERSION: u32 = 7;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 32;
/// The largest payload a record may have; a length above it is corruption, not a big command.
pub const RECORD_PAYLOAD_MAX: usize = 64 * 1024;
/// The last byte of every record (covered by its checksum).
pub const RECORD_END: u8 = 0x5a;

/// The bytes of a record whose payload is `len` bytes long.
pub fn record_bytes(len: usize) -> usize {
    RECORD_HEADER_BYTES + len + 1
}

pub fn segment_header(fingerprint: u64, first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&fingerprint.to_le_bytes());
    h[24..32].copy_from_slice(&first_seq.to_le_bytes());
    let crc = header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC-32 of a segment header with its checksum field taken as zero.
fn header_crc(h: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[..12]);
    hasher.update(&[0; 4]);
    hasher.update(&h[16..SEGMENT_HEADER_BYTES]);
    hasher.finalize()
}

/// (fingerprint, first sequence), or why the header is not one of ours.
pub fn parse_segment_header(h: &[u8]) -> Result<(u64, u64), String> {
    if h.len() < SEGMENT_HEADER_BYTES {
        return Err("shorter than a segment header".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let (version, crc) = (u32_at(8), u32_at(12));
    // Versions before 4 kept the checksum field zero.
    if &h[..8] == SEGMENT_MAGIC && version < SEGMENT_VERSION && crc == 0 {
        return Err(format!("segment format version {version}, this build reads {SEGMENT_VERSION}"));
    }
    if crc != header_crc(h) {
        return Err("the segment header is damaged (its checksum does not match)".into());
    }
    if &h[..8] != SEGMENT_MAGIC {
        return Err("not a viaduct journal segment (bad magic)".into());
    }
    if version != SEGMENT_VERSION {
        return Err(format!("segment format version {version}, this build reads {SEGMENT_VERSION}"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    Ok((u64_at(16), u64_at(24)))
}

/// Appends one record to `buf`.
pub fn encode(buf: &mut Vec<u8>, seq: u64, time_us: u64, digest: u64, cmd: &Command) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    let payload = postcard::to_extend(cmd, std::mem::take(buf)).expect("commands always serialize");
    *buf = payload;
    let len = buf.len() - start - RECORD_HEADER_BYTES;
    assert!(len <= RECORD_PAYLOAD_MAX, "a command of {len} bytes exceeds the record bound");
    buf.push(RECORD_END);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    buf[start + 16..start + 24].copy_from_slice(&time_us.to_le_bytes());
    buf[start + 24..start + 32].copy_from_slice(&digest.to_le_bytes());
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading one record at the start of `bytes` found.
#[derive(Debug)]
pub enum Decoded {
    /// A whole, valid record and its length in bytes.
    Record { seq: u64, time_us: u64, digest: u64, cmd: Command, bytes: usize },
    /// The bytes end inside the record (or its length is unreadable): a torn write if at the end.
    Short,
    /// Only zeros from here on: space the file system extended but nothing was written into.
    Zeros,
    /// A whole record whose contents are wrong.
    Bad(String),
}

pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.iter().all(|&b| b == 0) {
        return Decoded::Zeros;
    }
    if bytes.len() < RECORD_HEADER_BYTES {
        return Decoded::Short;
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    if len > RECORD_PAYLOAD_MAX {
        return Decoded::Bad(format!("record length {len} exceeds {RECORD_PAYLOAD_MAX}"));
    }
    let total = record_bytes(len);
    if bytes.len() < total {
        return Decoded::Short;
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[8..total]) != crc {
        return Decoded::Bad("checksum mismatch".into());
    }
    if bytes[total - 1] != RECORD_END {
        return Decoded::Bad("checksum matches but the end byte is wrong".into());
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let time_us = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let digest = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    match postcard::from_bytes::<Command>(&bytes[RECORD_HEADER_BYTES..total - 1]) {
        Ok(cmd) => Decoded::Record { seq, time_us, digest, cmd, bytes: total },
        Err(e) => Decoded::Bad(format!("checksum matches but the command does not decode: {e}")),
    }
}
