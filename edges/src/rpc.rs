//! ViaBTC's internal RPC framing (SPEC B4): a 36-byte little-endian header, then `ext`, then the
//! body. Requests carry a JSON params array; replies copy the request's header with
//! `pkg_type = 1` and carry the JSON-RPC response. Command 0 is the heartbeat.

/// `0x70656562`: the bytes `b"beep"` on the wire.
pub const MAGIC: u32 = 0x7065_6562;
pub const HEADER_BYTES: usize = 36;
pub const PKG_REQUEST: u16 = 0;
pub const PKG_REPLY: u16 = 1;
pub const CMD_HEARTBEAT: u32 = 0;
/// Heartbeat TLV type carrying the client's timeout in ms (u32).
pub const TLV_TIMEOUT: u16 = 1;

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command: u32,
    pub pkg_type: u16,
    pub result: u32,
    pub sequence: u32,
    pub req_id: u64,
    pub body_size: u32,
    pub ext_size: u16,
}

/// A stream that cannot be read further (bad magic, CRC or size): the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic")]
    Magic,
    #[error("bad CRC")]
    Crc,
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// One packet: header, ext and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub ext: Vec<u8>,
    pub body: Vec<u8>,
}

/// Reads the packet at the front of `buf`: `Ok(None)` until it is whole; with its length.
pub fn decode(buf: &[u8], packet_bytes_max: usize) -> Result<Option<(Packet, usize)>, FrameError> {
    if buf.len() >= 4 && u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) != MAGIC {
        return Err(FrameError::Magic);
    }
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let u16_at = |i: usize| u16::from_le_bytes(buf[i..i + 2].try_into().expect("2 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let header = Header {
        command: u32_at(4),
        pkg_type: u16_at(8),
        result: u32_at(10),
        sequence: u32_at(18),
        req_id: u64::from_le_bytes(buf[22..30].try_into().expect("8 bytes")),
        body_size: u32_at(30),
        ext_size: u16_at(34),
    };
    let total = HEADER_BYTES + header.ext_size as usize + header.body_size as usize;
    if total > packet_bytes_max {
        return Err(FrameError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if crc(&buf[..total]) != u32_at(14) {
        return Err(FrameError::Crc);
    }
    let ext_end = HEADER_BYTES + header.ext_size as usize;
    Ok(Some((Packet { header, ext: buf[HEADER_BYTES..ext_end].to_vec(), body: buf[ext_end..total].to_vec() }, total)))
}

/// CRC-32 (IEEE) of a whole packet with its CRC field taken as zero.
fn crc(packet: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&packet[..14]);
    h.update(&[0; 4]);
    h.update(&packet[18..]);
    h.finalize()
}

/// Appends a whole packet to `out`, sizes and CRC filled in.
pub fn encode(header: &Header, ext: &[u8], body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&header.command.to_le_bytes());
    out.extend_from_slice(&header.pkg_type.to_le_bytes());
    out.extend_from_slice(&header.result.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&header.sequence.to_le_bytes());
    out.extend_from_slice(&header.req_id.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(ext.len() as u16).to_le_bytes());
    out.extend_from_slice(ext);
    out.extend_from_slice(body);
    let crc = crc(&out[start..]);
    out[start + 14..start + 18].copy_from_slice(&crc.to_le_bytes());
}

/// The client's heartbeat timeout from a heartbeat body's TLV list, if it names one.
pub fn heartbeat_timeout_ms(body: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_le_bytes([body[at], body[at + 1]]);
        let len = u16::from_le_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == TLV_TIMEOUT && len == 4 {
            return Some(u32::from_le_bytes(value.try_into().expect("4 bytes")));
        }
        at += 4 + len;
    }
    None
}

/// The method a command number names (SPEC B2.2), for the methods this engine serves
/// ([`viaduct_protocol::METHODS`]).
pub fn method_of(command: u32) -> Option<&'static str> {
    viaduct_protocol::by_command(command).map(|m| m.name)
}

/// The command number of a method (SPEC B2.2).
pub fn command_of(method: &str) -> Option<u32> {
    viaduct_protocol::method(method).map(|m| m.command)
}
