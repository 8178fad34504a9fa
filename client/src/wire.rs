//! The binary order-entry protocol's messages (`edges/PROTOCOL.md` is their reference), as the
//! server and its clients both encode and decode them.
//!
//! Fixed-size little-endian messages, each opening with a 4-byte header: total length (u16), type
//! (u8), version (u8, [`VERSION`]).
//!
//! Why one file of ~750 lines: every message's layout is encoded and decoded side by side, so a
//! layout changes in one place.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 4;
/// The longest message of either direction; a header announcing more (or less than a header)
/// means the stream cannot be trusted and the connection is closed.
pub const MESSAGE_BYTES_MAX: usize = 128;
pub const KEY_BYTES: usize = 16;
pub const NONCE_BYTES: usize = 32;
pub const MAC_BYTES: usize = 32;
pub const MARKET_BYTES: usize = 16;

/// Message types, client to server.
pub mod client_type {
    pub const HELLO: u8 = 0x01;
    pub const LOGIN: u8 = 0x03;
    pub const LOGIN_REPLAY: u8 = 0x06;
    pub const NEW_LIMIT: u8 = 0x10;
    pub const NEW_MARKET: u8 = 0x11;
    pub const CANCEL: u8 = 0x12;
    pub const CANCEL_BY_CLIENT_ID: u8 = 0x13;
    pub const MASS_CANCEL: u8 = 0x14;
    pub const AMEND: u8 = 0x15;
    pub const ORDER_STATUS: u8 = 0x16;
    pub const HEARTBEAT: u8 = 0x20;
}

/// Message types, server to client.
pub mod server_type {
    pub const CHALLENGE: u8 = 0x02;
    pub const LOGIN_ACK: u8 = 0x04;
    pub const LOGIN_REJECT: u8 = 0x05;
    pub const SESSION_ACK: u8 = 0x07;
    pub const HEARTBEAT: u8 = 0x21;
    pub const ACCEPTED: u8 = 0x30;
    pub const REJECTED: u8 = 0x31;
    pub const FILLED: u8 = 0x32;
    pub const CANCELLED: u8 = 0x33;
    pub const MASS_CANCELLED: u8 = 0x34;
    pub const AMENDED: u8 = 0x35;
    pub const ORDER_STATE: u8 = 0x36;
}

/// Why a request was rejected (REJECTED `reason`).
pub mod reason {
    pub const INVALID_ARGUMENT: u16 = 1;
    pub const INTERNAL: u16 = 2;
    pub const SERVICE_UNAVAILABLE: u16 = 3;
    pub const BALANCE_NOT_ENOUGH: u16 = 10;
    pub const AMOUNT_TOO_SMALL: u16 = 11;
    pub const NO_ENOUGH_TRADER: u16 = 12;
    pub const DUPLICATE_CLIENT_ID: u16 = 13;
    pub const WOULD_TAKE: u16 = 14;
    pub const CANNOT_FILL: u16 = 15;
    pub const ORDER_NOT_FOUND: u16 = 20;
    pub const USER_NOT_MATCH: u16 = 21;
    pub const UNKNOWN_MARKET: u16 = 30;
    pub const BAD_SIDE: u16 = 31;
    pub const BAD_NUMBER: u16 = 32;
    pub const BAD_OPTION: u16 = 33;
    pub const THROTTLED: u16 = 34;
    pub const MALFORMED: u16 = 40;
    pub const UNKNOWN_TYPE: u16 = 41;
    pub const NOT_EXPECTED: u16 = 42;
    /// LOGIN_REJECT reasons.
    pub const UNKNOWN_KEY: u16 = 50;
    pub const BAD_SIGNATURE: u16 = 51;
    /// LOGIN_REPLAY names no session of this key that can be resumed (unknown, expired, or
    /// dropped).
    pub const UNKNOWN_SESSION: u16 = 52;
    /// LOGIN_REPLAY asks for reports the session no longer keeps, or that it never sent.
    pub const REPLAY_GAP: u16 = 53;
    /// The key has as many resumable sessions logged in as it may.
    pub const TOO_MANY_SESSIONS: u16 = 54;
}

/// CANCELLED `why`.
pub const CANCEL_REQUESTED: u8 = 1;
pub const CANCEL_MARKET_REMAINDER: u8 = 2;
/// The rest of a limit order that reached the matcher's deal cap (`DEALS_PER_ORDER_MAX`).
pub const CANCEL_DEAL_CAP: u8 = 3;
/// The rest of an immediate-or-cancel order.
pub const CANCEL_IOC: u8 = 4;
/// Self-trade prevention: the new order's rest, or a resting order the user's new order met.
pub const CANCEL_SELF_TRADE: u8 = 5;

/// NEW_LIMIT's option bytes: `time_in_force` (0 GTC, 1 IOC, 2 FOK), `flags` (bit 0: post-only;
/// the other bits zero) and `self_trade` (0: the API key's default; 1 none, 2 cancel the new
/// order, 3 cancel the resting order, 4 cancel both). All zero: the key's plain order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOptions {
    pub time_in_force: u8,
    pub flags: u8,
    pub self_trade: u8,
}

impl LimitOptions {
    /// Good till cancelled, may take, the key's self-trade prevention.
    pub const PLAIN: LimitOptions = LimitOptions { time_in_force: 0, flags: 0, self_trade: 0 };
    pub const POST_ONLY: u8 = 1;
}
/// NEW_MARKET `flags` bit 0: a bid's amount is the stock to buy (an order of type 3); an ask's
/// amount is stock either way.
pub const MARKET_STOCK_AMOUNT: u8 = 1;

/// FILLED `role`.
pub const ROLE_TAKER: u8 = 1;
pub const ROLE_MAKER: u8 = 2;

/// A message from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMsg {
    Hello {
        key: [u8; KEY_BYTES],
    },
    Login {
        mac: [u8; MAC_BYTES],
    },
    /// LOGIN for a resumable session: a new one (`session` 0), or the one named, its reports
    /// from `from_seq` on replayed.
    LoginReplay {
        mac: [u8; MAC_BYTES],
        session: u64,
        from_seq: u64,
    },
    NewLimit {
        client_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        options: LimitOptions,
        price: i64,
        amount: i64,
    },
    /// `self_trade` as in [`LimitOptions`]; `flags` bit 0 ([`MARKET_STOCK_AMOUNT`]): a bid's
    /// `amount` is the stock to buy, not the money to spend (the other bits zero).
    NewMarket {
        client_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        self_trade: u8,
        flags: u8,
        amount: i64,
    },
    Cancel {
        market: [u8; MARKET_BYTES],
        order_id: u64,
    },
    CancelByClientId {
        market: [u8; MARKET_BYTES],
        client_id: u64,
    },
    /// Every open order of the session's user in `market` (all NUL: every market), on `side`
    /// (0: both).
    MassCancel {
        market: [u8; MARKET_BYTES],
        side: u8,
    },
    /// `price` and `left` 0: unchanged.
    Amend {
        market: [u8; MARKET_BYTES],
        order_id: u64,
        price: i64,
        left: i64,
    },
    /// Where an order of the session's user stands: by `order_id`, or with `order_id` 0 by
    /// `client_id`.
    OrderStatus {
        market: [u8; MARKET_BYTES],
        order_id: u64,
        client_id: u64,
    },
    Heartbeat,
}

/// A message from the server. `seq` is the session sequence, stamped when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMsg {
    Challenge {
        nonce: [u8; NONCE_BYTES],
    },
    LoginAck {
        seq: u64,
        user: u32,
        heartbeat_ms: u32,
    },
    LoginReject {
        reason: u16,
    },
    /// The answer to LOGIN_REPLAY: the session (to name when resuming) and the last sequence it
    /// sent; what follows carries `last_seq + 1` on, after the replayed reports.
    SessionAck {
        session: u64,
        last_seq: u64,
        user: u32,
        heartbeat_ms: u32,
    },
    Heartbeat {
        last_seq: u64,
    },
    Accepted {
        seq: u64,
        time_us: u64,
        client_id: u64,
        order_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        kind: u8,
        price: i64,
        amount: i64,
    },
    Rejected {
        seq: u64,
        client_id: u64,
        order_id: u64,
        reason: u16,
        request_type: u8,
    },
    Filled {
        seq: u64,
        time_us: u64,
        client_id: u64,
        order_id: u64,
        deal_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        role: u8,
        fee_scale: u8,
        price: i64,
        amount: i64,
        left: i64,
        fee: i128,
    },
    Cancelled {
        seq: u64,
        time_us: u64,
        client_id: u64,
        order_id: u64,
        market: [u8; MARKET_BYTES],
        why: u8,
        /// The order's side (1 ask, 2 bid).
        side: u8,
        left: i64,
        /// The order's limit price (0 for a market order).
        price: i64,
    },
    /// The answer to MASS_CANCEL: how many orders it cancelled (no CANCELLED is sent for each).
    MassCancelled {
        seq: u64,
        count: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
    },
    /// The answer to AMEND: the order as amended. `order_id` is the order now; `old_order_id` the
    /// one AMEND named, the same unless the amend replaced it (a new price, or more left).
    Amended {
        seq: u64,
        time_us: u64,
        client_id: u64,
        order_id: u64,
        old_order_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        price: i64,
        left: i64,
    },
    /// The answer to ORDER_STATUS. `state`: [`STATE_OPEN`] (the order as it rests now),
    /// [`STATE_FINISHED`] (as it ended), [`STATE_UNKNOWN`] (not open; how it ended is not kept
    /// here: only the ids and the market are set). `deal_money` is at `stock.prec + money.prec`,
    /// `deal_fee` at `fee_scale`.
    OrderState {
        seq: u64,
        time_us: u64,
        client_id: u64,
        order_id: u64,
        market: [u8; MARKET_BYTES],
        side: u8,
        kind: u8,
        state: u8,
        fee_scale: u8,
        price: i64,
        amount: i64,
        left: i64,
        deal_stock: i64,
        deal_money: i128,
        deal_fee: i128,
    },
}

/// ORDER_STATE `state`: the order rests in the book.
pub const STATE_OPEN: u8 = 1;
/// ORDER_STATE `state`: the order is finished (filled or cancelled), as it ended.
pub const STATE_FINISHED: u8 = 2;
/// ORDER_STATE `state`: the order is not open, and how it ended is not kept by this edge.
pub const STATE_UNKNOWN: u8 = 3;

/// The stream cannot be read further: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

/// One message read off the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<M> {
    /// Need more bytes.
    Partial,
    /// A whole message of this many bytes.
    Msg(M, usize),
    /// A frame of this many bytes that is not a valid message: rejected with `reason`, skipped.
    Invalid { msg_type: u8, reason: u16, len: usize },
}

/// Length of each client message type, or `None` for an unknown type.
pub fn client_len(msg_type: u8) -> Option<usize> {
    use client_type::*;
    Some(match msg_type {
        HELLO => HEADER_BYTES + KEY_BYTES,
        LOGIN => HEADER_BYTES + MAC_BYTES,
        LOGIN_REPLAY => HEADER_BYTES + MAC_BYTES + 8 + 8,
        NEW_LIMIT => HEADER_BYTES + 8 + MARKET_BYTES + 4 + 8 + 8,
        NEW_MARKET => HEADER_BYTES + 8 + MARKET_BYTES + 4 + 8,
        CANCEL | CANCEL_BY_CLIENT_ID => HEADER_BYTES + MARKET_BYTES + 8,
        MASS_CANCEL => HEADER_BYTES + MARKET_BYTES + 4,
        AMEND => HEADER_BYTES + MARKET_BYTES + 8 * 3,
        ORDER_STATUS => HEADER_BYTES + MARKET_BYTES + 8 * 2,
        HEARTBEAT => HEADER_BYTES,
        _ => return None,
    })
}

/// Length of each server message type, or `None` for an unknown type.
pub fn server_len(msg_type: u8) -> Option<usize> {
    use server_type::*;
    Some(match msg_type {
        CHALLENGE => HEADER_BYTES + NONCE_BYTES,
        LOGIN_ACK => HEADER_BYTES + 8 + 4 + 4,
        LOGIN_REJECT => HEADER_BYTES + 4,
        SESSION_ACK => HEADER_BYTES + 8 + 8 + 4 + 4,
        HEARTBEAT => HEADER_BYTES + 8,
        ACCEPTED => HEADER_BYTES + 8 * 4 + MARKET_BYTES + 4 + 8 + 8,
        REJECTED => HEADER_BYTES + 8 * 3 + 4,
        FILLED => HEADER_BYTES + 8 * 5 + MARKET_BYTES + 4 + 8 * 3 + 16,
        CANCELLED => HEADER_BYTES + 8 * 4 + MARKET_BYTES + 4 + 8 + 8,
        MASS_CANCELLED => HEADER_BYTES + 8 * 2 + MARKET_BYTES + 4,
        AMENDED => HEADER_BYTES + 8 * 5 + MARKET_BYTES + 4 + 8 * 2,
        ORDER_STATE => HEADER_BYTES + 8 * 4 + MARKET_BYTES + 4 + 8 * 4 + 16 * 2,
        _ => return None,
    })
}

/// Reads little-endian fields in order.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out: [u8; N] = self.buf[self.at..self.at + N].try_into().expect("length checked by the caller");
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn i128(&mut self) -> i128 {
        i128::from_le_bytes(self.take())
    }
    /// Padding must be zero, so that it can carry meaning in a later version.
    fn pad(&mut self, n: usize) -> bool {
        let zero = self.buf[self.at..self.at + n].iter().all(|&b| b == 0);
        self.at += n;
        zero
    }
}

/// Splits the header off the front of `buf`: (type, frame length), after checking length and
/// version.
fn frame(buf: &[u8], len_of: fn(u8) -> Option<usize>) -> Result<Option<(u8, usize, Option<u16>)>, BadFrame> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u16::from_le_bytes([buf[0], buf[1]]) as usize;
    if !(HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&len) {
        return Err(BadFrame);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let (msg_type, version) = (buf[2], buf[3]);
    let problem = match len_of(msg_type) {
        None => Some(reason::UNKNOWN_TYPE),
        Some(_) if version != VERSION => Some(reason::MALFORMED),
        Some(expected) if expected != len => Some(reason::MALFORMED),
        Some(_) => None,
    };
    Ok(Some((msg_type, len, problem)))
}

/// Decodes the client message at the front of `buf`.
pub fn decode_client(buf: &[u8]) -> Result<Decoded<ClientMsg>, BadFrame> {
    use client_type::*;
    let Some((msg_type, len, problem)) = frame(buf, client_len)? else { return Ok(Decoded::Partial) };
    if let Some(reason) = problem {
        return Ok(Decoded::Invalid { msg_type, reason, len });
    }
    let mut r = Reader { buf: &buf[..len], at: HEADER_BYTES };
    let mut pad_ok = true;
    let msg = match msg_type {
        HELLO => ClientMsg::Hello { key: r.take() },
        LOGIN => ClientMsg::Login { mac: r.take() },
        LOGIN_REPLAY => ClientMsg::LoginReplay { mac: r.take(), session: r.u64(), from_seq: r.u64() },
        NEW_LIMIT => {
            let (client_id, market, side) = (r.u64(), r.take(), r.u8());
            let options = LimitOptions { time_in_force: r.u8(), flags: r.u8(), self_trade: r.u8() };
            ClientMsg::NewLimit { client_id, market, side, options, price: r.i64(), amount: r.i64() }
        }
        NEW_MARKET => {
            let (client_id, market, side, self_trade, flags) = (r.u64(), r.take(), r.u8(), r.u8(), r.u8());
            pad_ok = r.pad(1);
            ClientMsg::NewMarket { client_id, market, side, self_trade, flags, amount: r.i64() }
        }
        CANCEL => ClientMsg::Cancel { market: r.take(), order_id: r.u64() },
        CANCEL_BY_CLIENT_ID => ClientMsg::CancelByClientId { market: r.take(), client_id: r.u64() },
        MASS_CANCEL => {
            let (market, side) = (r.take(), r.u8());
            pad_ok = r.pad(3);
            ClientMsg::MassCancel { market, side }
        }
        AMEND => ClientMsg::Amend { market: r.take(), order_id: r.u64(), price: r.i64(), left: r.i64() },
        ORDER_STATUS => ClientMsg::OrderStatus { market: r.take(), order_id: r.u64(), client_id: r.u64() },
        _ => ClientMsg::Heartbeat,
    };
    if !pad_ok {
        return Ok(Decoded::Invalid { msg_type, reason: reason::MALFORMED, len });
    }
    Ok(Decoded::Msg(msg, len))
}

/// The `client_id` and `order_id` a frame that did not decode carried, where they can be read
/// (0 where not): a version-1 order or cancel long enough to hold the field at its place. Its
/// REJECTED echoes them, so that the client knows which request was refused.
pub fn ids_of_invalid(frame: &[u8]) -> (u64, u64) {
    use client_type::*;
    let field = |at: usize| frame.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    if frame.len() < HEADER_BYTES || frame[3] != VERSION {
        return (0, 0);
    }
    let after_market = HEADER_BYTES + MARKET_BYTES;
    match frame[2] {
        NEW_LIMIT | NEW_MARKET => (field(HEADER_BYTES), 0),
        CANCEL_BY_CLIENT_ID => (field(after_market), 0),
        CANCEL | AMEND => (0, field(after_market)),
        ORDER_STATUS => (field(after_market + 8), field(after_market)),
        _ => (0, 0),
    }
}

fn header(out: &mut Vec<u8>, msg_type: u8, len_of: fn(u8) -> Option<usize>) {
    let len = len_of(msg_type).expect("a known type") as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[msg_type, VERSION]);
}

/// Appends `msg` to `out`.
pub fn encode_client(msg: &ClientMsg, out: &mut Vec<u8>) {
    use client_type::*;
    let start = out.len();
    match *msg {
        ClientMsg::Hello { key } => {
            header(out, HELLO, client_len);
            out.extend_from_slice(&key);
        }
        ClientMsg::Login { mac } => {
            header(out, LOGIN, client_len);
            out.extend_from_slice(&mac);
        }
        ClientMsg::LoginReplay { mac, session, from_seq } => {
            header(out, LOGIN_REPLAY, client_len);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&session.to_le_bytes());
            out.extend_from_slice(&from_seq.to_le_bytes());
        }
        ClientMsg::NewLimit { client_id, market, side, options, price, amount } => {
            header(out, NEW_LIMIT, client_len);
            out.extend_from_slice(&client_id.to_le_bytes());
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, options.time_in_force, options.flags, options.self_trade]);
            out.extend_from_slice(&price.to_le_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        ClientMsg::NewMarket { client_id, market, side, self_trade, flags, amount } => {
            header(out, NEW_MARKET, client_len);
            out.extend_from_slice(&client_id.to_le_bytes());
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, self_trade, flags, 0]);
            out.extend_from_slice(&amount.to_le_bytes());
        }
        ClientMsg::MassCancel { market, side } => {
            header(out, MASS_CANCEL, client_len);
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, 0, 0, 0]);
        }
        ClientMsg::Amend { market, order_id, price, left } => {
            header(out, AMEND, client_len);
            out.extend_from_slice(&market);
            out.extend_from_slice(&order_id.to_le_bytes());
            out.extend_from_slice(&price.to_le_bytes());
            out.extend_from_slice(&left.to_le_bytes());
        }
        ClientMsg::OrderStatus { market, order_id, client_id } => {
            header(out, ORDER_STATUS, client_len);
            out.extend_from_slice(&market);
            out.extend_from_slice(&order_id.to_le_bytes());
            out.extend_from_slice(&client_id.to_le_bytes());
        }
        ClientMsg::Cancel { market, order_id } => {
            header(out, CANCEL, client_len);
            out.extend_from_slice(&market);
            out.extend_from_slice(&order_id.to_le_bytes());
        }
        ClientMsg::CancelByClientId { market, client_id } => {
            header(out, CANCEL_BY_CLIENT_ID, client_len);
            out.extend_from_slice(&market);
            out.extend_from_slice(&client_id.to_le_bytes());
        }
        ClientMsg::Heartbeat => header(out, HEARTBEAT, client_len),
    }
    debug_assert_eq!(out.len() - start, client_len(out[start + 2]).expect("known"));
}

/// Appends `msg` to `out`.
pub fn encode_server(msg: &ServerMsg, out: &mut Vec<u8>) {
    use server_type::*;
    let start = out.len();
    match *msg {
        ServerMsg::Challenge { nonce } => {
            header(out, CHALLENGE, server_len);
            out.extend_from_slice(&nonce);
        }
        ServerMsg::LoginAck { seq, user, heartbeat_ms } => {
            header(out, LOGIN_ACK, server_len);
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&user.to_le_bytes());
            out.extend_from_slice(&heartbeat_ms.to_le_bytes());
        }
        ServerMsg::LoginReject { reason } => {
            header(out, LOGIN_REJECT, server_len);
            out.extend_from_slice(&reason.to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        ServerMsg::SessionAck { session, last_seq, user, heartbeat_ms } => {
            header(out, SESSION_ACK, server_len);
            out.extend_from_slice(&session.to_le_bytes());
            out.extend_from_slice(&last_seq.to_le_bytes());
            out.extend_from_slice(&user.to_le_bytes());
            out.extend_from_slice(&heartbeat_ms.to_le_bytes());
        }
        ServerMsg::Heartbeat { last_seq } => {
            header(out, HEARTBEAT, server_len);
            out.extend_from_slice(&last_seq.to_le_bytes());
        }
        ServerMsg::Accepted { seq, time_us, client_id, order_id, market, side, kind, price, amount } => {
            header(out, ACCEPTED, server_len);
            for v in [seq, time_us, client_id, order_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, kind, 0, 0]);
            out.extend_from_slice(&price.to_le_bytes());
            out.extend_from_slice(&amount.to_le_bytes());
        }
        ServerMsg::Rejected { seq, client_id, order_id, reason, request_type } => {
            header(out, REJECTED, server_len);
            for v in [seq, client_id, order_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&reason.to_le_bytes());
            out.extend_from_slice(&[request_type, 0]);
        }
        ServerMsg::Filled {
            seq,
            time_us,
            client_id,
            order_id,
            deal_id,
            market,
            side,
            role,
            fee_scale,
            price,
            amount,
            left,
            fee,
        } => {
            header(out, FILLED, server_len);
            for v in [seq, time_us, client_id, order_id, deal_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, role, fee_scale, 0]);
            for v in [price, amount, left] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&fee.to_le_bytes());
        }
        ServerMsg::Cancelled { seq, time_us, client_id, order_id, market, why, side, left, price } => {
            header(out, CANCELLED, server_len);
            for v in [seq, time_us, client_id, order_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&market);
            out.extend_from_slice(&[why, side, 0, 0]);
            out.extend_from_slice(&left.to_le_bytes());
            out.extend_from_slice(&price.to_le_bytes());
        }
        ServerMsg::MassCancelled { seq, count, market, side } => {
            header(out, MASS_CANCELLED, server_len);
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, 0, 0, 0]);
        }
        ServerMsg::Amended { seq, time_us, client_id, order_id, old_order_id, market, side, price, left } => {
            header(out, AMENDED, server_len);
            for v in [seq, time_us, client_id, order_id, old_order_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, 0, 0, 0]);
            out.extend_from_slice(&price.to_le_bytes());
            out.extend_from_slice(&left.to_le_bytes());
        }
        ServerMsg::OrderState {
            seq,
            time_us,
            client_id,
            order_id,
            market,
            side,
            kind,
            state,
            fee_scale,
            price,
            amount,
            left,
            deal_stock,
            deal_money,
            deal_fee,
        } => {
            header(out, ORDER_STATE, server_len);
            for v in [seq, time_us, client_id, order_id] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&market);
            out.extend_from_slice(&[side, kind, state, fee_scale]);
            for v in [price, amount, left, deal_stock] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&deal_money.to_le_bytes());
            out.extend_from_slice(&deal_fee.to_le_bytes());
        }
    }
    debug_assert_eq!(out.len() - start, server_len(out[start + 2]).expect("known"));
}

/// Decodes the server message at the front of `buf` (for clients and tests).
pub fn decode_server(buf: &[u8]) -> Result<Decoded<ServerMsg>, BadFrame> {
    use server_type::*;
    let Some((msg_type, len, problem)) = frame(buf, server_len)? else { return Ok(Decoded::Partial) };
    if let Some(reason) = problem {
        return Ok(Decoded::Invalid { msg_type, reason, len });
    }
    let mut r = Reader { buf: &buf[..len], at: HEADER_BYTES };
    let msg = match msg_type {
        CHALLENGE => ServerMsg::Challenge { nonce: r.take() },
        LOGIN_ACK => ServerMsg::LoginAck { seq: r.u64(), user: r.u32(), heartbeat_ms: r.u32() },
        LOGIN_REJECT => ServerMsg::LoginReject { reason: r.u16() },
        SESSION_ACK => {
            ServerMsg::SessionAck { session: r.u64(), last_seq: r.u64(), user: r.u32(), heartbeat_ms: r.u32() }
        }
        HEARTBEAT => ServerMsg::Heartbeat { last_seq: r.u64() },
        ACCEPTED => {
            let (seq, time_us, client_id, order_id, market) = (r.u64(), r.u64(), r.u64(), r.u64(), r.take());
            let (side, kind) = (r.u8(), r.u8());
            r.pad(2);
            ServerMsg::Accepted {
                seq,
                time_us,
                client_id,
                order_id,
                market,
                side,
                kind,
                price: r.i64(),
                amount: r.i64(),
            }
        }
        REJECTED => ServerMsg::Rejected {
            seq: r.u64(),
            client_id: r.u64(),
            order_id: r.u64(),
            reason: r.u16(),
            request_type: r.u8(),
        },
        FILLED => {
            let (seq, time_us, client_id, order_id, deal_id) = (r.u64(), r.u64(), r.u64(), r.u64(), r.u64());
            let market = r.take();
            let (side, role, fee_scale) = (r.u8(), r.u8(), r.u8());
            r.pad(1);
            let (price, amount, left, fee) = (r.i64(), r.i64(), r.i64(), r.i128());
            ServerMsg::Filled {
                seq,
                time_us,
                client_id,
                order_id,
                deal_id,
                market,
                side,
                role,
                fee_scale,
                price,
                amount,
                left,
                fee,
            }
        }
        CANCELLED => {
            let (seq, time_us, client_id, order_id, market) = (r.u64(), r.u64(), r.u64(), r.u64(), r.take());
            let (why, side) = (r.u8(), r.u8());
            r.pad(2);
            let left = r.i64();
            ServerMsg::Cancelled { seq, time_us, client_id, order_id, market, why, side, left, price: r.i64() }
        }
        MASS_CANCELLED => {
            let (seq, count, market, side) = (r.u64(), r.u64(), r.take(), r.u8());
            r.pad(3);
            ServerMsg::MassCancelled { seq, count, market, side }
        }
        ORDER_STATE => {
            let (seq, time_us, client_id, order_id, market) = (r.u64(), r.u64(), r.u64(), r.u64(), r.take());
            let (side, kind, state, fee_scale) = (r.u8(), r.u8(), r.u8(), r.u8());
            let (price, amount, left, deal_stock) = (r.i64(), r.i64(), r.i64(), r.i64());
            ServerMsg::OrderState {
                seq,
                time_us,
                client_id,
                order_id,
                market,
                side,
                kind,
                state,
                fee_scale,
                price,
                amount,
                left,
                deal_stock,
                deal_money: r.i128(),
                deal_fee: r.i128(),
            }
        }
        _ => {
            let (seq, time_us, client_id, order_id, old_order_id) = (r.u64(), r.u64(), r.u64(), r.u64(), r.u64());
            let (market, side) = (r.take(), r.u8());
            r.pad(3);
            let price = r.i64();
            ServerMsg::Amended { seq, time_us, client_id, order_id, old_order_id, market, side, price, left: r.i64() }
        }
    };
    Ok(Decoded::Msg(msg, len))
}

impl ServerMsg {
    /// The session sequence field of a message that carries one.
    fn seq_field(&mut self) -> Option<&mut u64> {
        match self {
            ServerMsg::LoginAck { seq, .. }
            | ServerMsg::Accepted { seq, .. }
            | ServerMsg::Rejected { seq, .. }
            | ServerMsg::Filled { seq, .. }
            | ServerMsg::Cancelled { seq, .. }
            | ServerMsg::MassCancelled { seq, .. }
            | ServerMsg::Amended { seq, .. }
            | ServerMsg::OrderState { seq, .. } => Some(seq),
            ServerMsg::Challenge { .. }
            | ServerMsg::LoginReject { .. }
            | ServerMsg::SessionAck { .. }
            | ServerMsg::Heartbeat { .. } => None,
        }
    }

    /// Stamps the session sequence on a message that carries one.
    pub fn set_seq(&mut self, value: u64) {
        if let Some(seq) = self.seq_field() {
            *seq = value;
        }
    }

    /// The session sequence a message carries, if it carries one.
    pub fn seq(&self) -> Option<u64> {
        let mut copy = *self;
        copy.seq_field().copied()
    }
}

/// A market name as the protocol carries it: ASCII, NUL-padded to 16 bytes.
pub fn market_bytes(name: &str) -> [u8; MARKET_BYTES] {
    let mut out = [0u8; MARKET_BYTES];
    let b = name.as_bytes();
    let n = b.len().min(MARKET_BYTES);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// The signature a LOGIN carries: HMAC-SHA256 keyed with the secret over nonce ‖ API key.
pub fn login_mac(secret: &[u8], nonce: &[u8; NONCE_BYTES], key: &[u8; KEY_BYTES]) -> [u8; MAC_BYTES] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(nonce);
    mac.update(key);
    mac.finalize().into_bytes().into()
}

/// Whether `mac` is the right signature, compared in constant time.
pub fn login_mac_ok(secret: &[u8], nonce: &[u8; NONCE_BYTES], key: &[u8; KEY_BYTES], mac: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(nonce);
    m.update(key);
    m.verify_slice(mac).is_ok()
}
