//! Every message of the binary order entry and the RPC framing: encode → decode gives the same
//! message back, byte for byte at the documented offsets, and each way a frame can be malformed
//! is told apart from a good one.

use viaduct_edges::binary::{
    self, client_len, decode_client, decode_server, encode_client, encode_server, ids_of_invalid, reason, server_len,
    BadFrame, ClientMsg, Decoded, LimitOptions, ServerMsg, HEADER_BYTES, MESSAGE_BYTES_MAX, VERSION,
};
use viaduct_edges::rpc::{self, FrameError, Header};

fn market(name: &str) -> [u8; 16] {
    binary::market_bytes(name)
}

fn every_client_msg() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello { key: *b"mm-alpha\0\0\0\0\0\0\0\0" },
        ClientMsg::Login { mac: [0xAB; 32] },
        ClientMsg::NewLimit {
            client_id: u64::MAX - 1,
            market: market("BTCBCH"),
            side: 2,
            options: LimitOptions { time_in_force: 2, flags: LimitOptions::POST_ONLY, self_trade: 4 },
            price: 12_345_678,
            amount: -5,
        },
        ClientMsg::NewMarket {
            client_id: 7,
            market: market("ETHBCH"),
            side: 1,
            self_trade: 3,
            flags: 1,
            amount: i64::MAX,
        },
        ClientMsg::Cancel { market: market("BTCBCH"), order_id: 99 },
        ClientMsg::CancelByClientId { market: market("BTCBCH"), client_id: 1 << 40 },
        ClientMsg::MassCancel { market: market("BTCBCH"), side: 2 },
        ClientMsg::MassCancel { market: [0; 16], side: 0 },
        ClientMsg::Amend { market: market("BTCBCH"), order_id: 77, price: 0, left: 5 },
        ClientMsg::Heartbeat,
        ClientMsg::OrderStatus { market: market("BTCBCH"), order_id: 0, client_id: u64::MAX },
    ]
}

fn every_server_msg() -> Vec<ServerMsg> {
    vec![
        ServerMsg::Challenge { nonce: [7; 32] },
        ServerMsg::LoginAck { seq: 1, user: 42, heartbeat_ms: 1000 },
        ServerMsg::LoginReject { reason: reason::BAD_SIGNATURE },
        ServerMsg::Heartbeat { last_seq: 12 },
        ServerMsg::Accepted {
            seq: 2,
            time_us: 1_700_000_000_000_001,
            client_id: 3,
            order_id: 4,
            market: market("BTCBCH"),
            side: 1,
            kind: 1,
            price: 5,
            amount: 6,
        },
        ServerMsg::Rejected {
            seq: 3,
            client_id: 8,
            order_id: 9,
            reason: reason::DUPLICATE_CLIENT_ID,
            request_type: 0x10,
        },
        ServerMsg::Filled {
            seq: 4,
            time_us: 10,
            client_id: 11,
            order_id: 12,
            deal_id: 13,
            market: market("ETHBCH"),
            side: 2,
            role: binary::ROLE_MAKER,
            fee_scale: 12,
            price: 14,
            amount: 15,
            left: 16,
            fee: -(1i128 << 100),
        },
        ServerMsg::Cancelled {
            seq: 5,
            time_us: 17,
            client_id: 18,
            order_id: 19,
            market: market("BTCBCH"),
            why: binary::CANCEL_MARKET_REMAINDER,
            side: 2,
            left: 20,
            price: 21,
        },
        ServerMsg::MassCancelled { seq: 6, count: 100_000, market: [0; 16], side: 0 },
        ServerMsg::Amended {
            seq: 7,
            time_us: 22,
            client_id: 23,
            order_id: 24,
            old_order_id: 25,
            market: market("BTCBCH"),
            side: 1,
            price: 26,
            left: 27,
        },
        ServerMsg::OrderState {
            seq: 8,
            time_us: 28,
            client_id: 29,
            order_id: 30,
            market: market("ETHBCH"),
            side: 2,
            kind: 3,
            state: binary::STATE_FINISHED,
            fee_scale: 12,
            price: 0,
            amount: 31,
            left: -32,
            deal_stock: 33,
            deal_money: i128::MAX,
            deal_fee: i128::MIN,
        },
    ]
}

#[test]
fn every_client_message_round_trips_with_its_documented_length() {
    for msg in every_client_msg() {
        let mut bytes = Vec::new();
        encode_client(&msg, &mut bytes);
        assert_eq!(bytes.len(), u16::from_le_bytes([bytes[0], bytes[1]]) as usize, "{msg:?}");
        assert_eq!(Some(bytes.len()), client_len(bytes[2]), "{msg:?}");
        assert_eq!(bytes[3], VERSION);
        assert_eq!(decode_client(&bytes), Ok(Decoded::Msg(msg, bytes.len())));
        // One byte short of whole is not yet a message; two in a row decode one at a time.
        assert_eq!(decode_client(&bytes[..bytes.len() - 1]), Ok(Decoded::Partial));
        let twice = [bytes.clone(), bytes.clone()].concat();
        assert_eq!(decode_client(&twice[bytes.len()..]), Ok(Decoded::Msg(msg, bytes.len())));
    }
}

#[test]
fn every_server_message_round_trips_with_its_documented_length() {
    for msg in every_server_msg() {
        let mut bytes = Vec::new();
        encode_server(&msg, &mut bytes);
        assert_eq!(bytes.len(), u16::from_le_bytes([bytes[0], bytes[1]]) as usize, "{msg:?}");
        assert_eq!(Some(bytes.len()), server_len(bytes[2]), "{msg:?}");
        assert_eq!(decode_server(&bytes), Ok(Decoded::Msg(msg, bytes.len())));
        assert_eq!(decode_server(&bytes[..bytes.len() - 1]), Ok(Decoded::Partial));
    }
}

#[test]
fn fields_sit_at_the_documented_offsets() {
    let mut b = Vec::new();
    encode_client(
        &ClientMsg::NewLimit {
            client_id: 0x0102,
            market: market("BTCBCH"),
            side: 2,
            options: LimitOptions::PLAIN,
            price: 0x0304,
            amount: 0x0506,
        },
        &mut b,
    );
    assert_eq!(&b[..4], &[48, 0, 0x10, 1]);
    assert_eq!(u64::from_le_bytes(b[4..12].try_into().unwrap()), 0x0102);
    assert_eq!(&b[12..18], b"BTCBCH");
    assert_eq!(b[28..32], [2, 0, 0, 0]);
    assert_eq!(i64::from_le_bytes(b[32..40].try_into().unwrap()), 0x0304);
    assert_eq!(i64::from_le_bytes(b[40..48].try_into().unwrap()), 0x0506);
    // The option bytes: time in force, flags, self-trade prevention.
    let options = LimitOptions { time_in_force: 1, flags: LimitOptions::POST_ONLY, self_trade: 3 };
    let mut b = Vec::new();
    encode_client(
        &ClientMsg::NewLimit { client_id: 1, market: market("BTCBCH"), side: 1, options, price: 1, amount: 1 },
        &mut b,
    );
    assert_eq!(b[28..32], [1, 1, 1, 3]);
    let mut b = Vec::new();
    encode_client(&ClientMsg::Amend { market: market("BTCBCH"), order_id: 9, price: 0x0304, left: 0x0506 }, &mut b);
    assert_eq!(&b[..4], &[44, 0, 0x15, 1]);
    assert_eq!(&b[4..10], b"BTCBCH");
    assert_eq!(u64::from_le_bytes(b[20..28].try_into().unwrap()), 9);
    assert_eq!(i64::from_le_bytes(b[28..36].try_into().unwrap()), 0x0304);
    assert_eq!(i64::from_le_bytes(b[36..44].try_into().unwrap()), 0x0506);
    let mut b = Vec::new();
    encode_client(&ClientMsg::MassCancel { market: market("BTCBCH"), side: 1 }, &mut b);
    assert_eq!(&b[..4], &[24, 0, 0x14, 1]);
    assert_eq!(b[20..24], [1, 0, 0, 0]);
    let mut b = Vec::new();
    encode_server(&ServerMsg::MassCancelled { seq: 3, count: 5, market: market("BTCBCH"), side: 2 }, &mut b);
    assert_eq!(&b[..4], &[40, 0, 0x34, 1]);
    assert_eq!(u64::from_le_bytes(b[12..20].try_into().unwrap()), 5);
    assert_eq!(b[36], 2);
    let mut b = Vec::new();
    let amended = ServerMsg::Amended {
        seq: 1,
        time_us: 2,
        client_id: 3,
        order_id: 4,
        old_order_id: 5,
        market: market("BTCBCH"),
        side: 1,
        price: 6,
        left: 7,
    };
    encode_server(&amended, &mut b);
    assert_eq!(&b[..4], &[80, 0, 0x35, 1]);
    assert_eq!(u64::from_le_bytes(b[36..44].try_into().unwrap()), 5, "old_order_id");
    assert_eq!(b[60], 1, "side");
    assert_eq!(i64::from_le_bytes(b[64..72].try_into().unwrap()), 6);
    assert_eq!(i64::from_le_bytes(b[72..80].try_into().unwrap()), 7);
}

#[test]
fn each_malformed_client_frame_is_told_apart() {
    for msg in every_client_msg() {
        let mut good = Vec::new();
        encode_client(&msg, &mut good);
        let msg_type = good[2];
        // A length that does not match the type: rejected and skipped by its own length.
        let mut longer = good.clone();
        longer.push(0);
        longer[0] += 1;
        assert_eq!(
            decode_client(&longer),
            Ok(Decoded::Invalid { msg_type, reason: reason::MALFORMED, len: good.len() + 1 }),
            "{msg:?}"
        );
        // Another version.
        let mut version = good.clone();
        version[3] = VERSION + 1;
        assert_eq!(
            decode_client(&version),
            Ok(Decoded::Invalid { msg_type, reason: reason::MALFORMED, len: good.len() })
        );
    }
    // A length under a header or over the largest message: the stream is not trusted.
    for len in [0u16, 3, MESSAGE_BYTES_MAX as u16 + 1, u16::MAX] {
        let frame = [len.to_le_bytes()[0], len.to_le_bytes()[1], 0x10, VERSION];
        assert_eq!(decode_client(&frame), Err(BadFrame), "length {len}");
    }
    // An unknown type.
    assert_eq!(
        decode_client(&[8, 0, 0x7F, VERSION, 0, 0, 0, 0]),
        Ok(Decoded::Invalid { msg_type: 0x7F, reason: reason::UNKNOWN_TYPE, len: 8 })
    );
    // Padding that is not zero: NEW_MARKET's after its flags, MASS_CANCEL's after its
    // side.
    for (msg, pad) in [(every_client_msg()[3], 31), (every_client_msg()[6], 21)] {
        let mut b = Vec::new();
        encode_client(&msg, &mut b);
        b[pad] = 1;
        assert_eq!(decode_client(&b), Ok(Decoded::Invalid { msg_type: b[2], reason: reason::MALFORMED, len: b.len() }));
    }
    // Fewer bytes than a header.
    assert_eq!(decode_client(&[48, 0]), Ok(Decoded::Partial));
}

/// PROTOCOL.md: a REJECTED for a malformed message echoes the `client_id` (or a CANCEL's
/// `order_id`) it carried when it can be read at its place in version 1.
#[test]
fn a_malformed_order_or_cancel_gives_back_the_ids_it_carried() {
    let market = binary::market_bytes("BTCBCH");
    for (msg, ids) in [
        (
            ClientMsg::NewLimit { client_id: 7, market, side: 1, options: LimitOptions::PLAIN, price: 1, amount: 1 },
            (7, 0),
        ),
        (ClientMsg::NewMarket { client_id: 8, market, side: 2, self_trade: 0, flags: 0, amount: 1 }, (8, 0)),
        (ClientMsg::CancelByClientId { market, client_id: 9 }, (9, 0)),
        (ClientMsg::Cancel { market, order_id: 10 }, (0, 10)),
        (ClientMsg::Amend { market, order_id: 11, price: 1, left: 0 }, (0, 11)),
        (ClientMsg::OrderStatus { market, order_id: 12, client_id: 13 }, (13, 12)),
        (ClientMsg::MassCancel { market, side: 0 }, (0, 0)),
        (ClientMsg::Heartbeat, (0, 0)),
    ] {
        let mut b = Vec::new();
        encode_client(&msg, &mut b);
        // One byte too many: malformed, yet the ids are where version 1 puts them.
        b.push(0);
        b[0] += 1;
        assert_eq!(ids_of_invalid(&b), ids, "{msg:?}");
        // Another version: its layout is not known, nothing is echoed.
        b[3] = VERSION + 1;
        assert_eq!(ids_of_invalid(&b), (0, 0), "{msg:?}");
    }
    // Too short to hold the field.
    assert_eq!(ids_of_invalid(&[8, 0, 0x10, VERSION, 7, 0, 0, 0]), (0, 0));
}

#[test]
fn each_malformed_server_frame_is_told_apart() {
    for msg in every_server_msg() {
        let mut good = Vec::new();
        encode_server(&msg, &mut good);
        let mut shorter = good[..good.len() - 1].to_vec();
        shorter[0] -= 1;
        let Decoded::Invalid { reason: r, .. } = decode_server(&shorter).unwrap() else { panic!("{msg:?}") };
        assert_eq!(r, reason::MALFORMED);
    }
    assert_eq!(decode_server(&[2, 0, 0x30, VERSION]), Err(BadFrame));
}

#[test]
fn market_names_must_be_nul_padded_and_known() {
    let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
    assert_eq!(binary::market_of(&spec, &market("BTCBCH")), spec.market_id("BTCBCH"));
    assert_eq!(binary::market_of(&spec, &market("NOPE")), None);
    let mut gap = market("BTCBCH");
    gap[10] = b'X';
    assert_eq!(binary::market_of(&spec, &gap), None);
    assert_eq!(binary::market_of(&spec, &[0xFF; 16]), None);
}

#[test]
fn the_login_mac_is_hmac_sha256_of_nonce_and_key() {
    // Expected value from Python: hmac.new(b"Jefe", nonce + key, hashlib.sha256).hexdigest().
    let nonce: [u8; 32] = *b"what do ya want for nothing?\0\0\0\0";
    let key = [0u8; 16];
    let mac = binary::login_mac(b"Jefe", &nonce, &key);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "2fa50aa9cfafb527161626fe11e420a6ffec4ed767fe6daa9847643d4b1fa84a");
    assert!(binary::login_mac_ok(b"Jefe", &nonce, &key, &mac));
    assert!(!binary::login_mac_ok(b"Jeff", &nonce, &key, &mac));
    assert!(!binary::login_mac_ok(b"Jefe", &nonce, &key, &mac[..31]));
    let mut other = nonce;
    other[0] ^= 1;
    assert!(!binary::login_mac_ok(b"Jefe", &other, &key, &mac));
}

#[test]
fn rpc_packets_round_trip_and_check_magic_crc_and_size() {
    let header =
        Header { command: 201, pkg_type: 0, result: 0, sequence: 77, req_id: 1 << 33, body_size: 0, ext_size: 0 };
    let mut bytes = Vec::new();
    rpc::encode(&header, b"ex", b"[1,2]", &mut bytes);
    assert_eq!(&bytes[..4], b"beep");
    assert_eq!(bytes.len(), rpc::HEADER_BYTES + 7);
    let (p, used) = rpc::decode(&bytes, 1024).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(p.header, Header { body_size: 5, ext_size: 2, ..header });
    assert_eq!((p.ext.as_slice(), p.body.as_slice()), (&b"ex"[..], &b"[1,2]"[..]));
    // The CRC is IEEE CRC-32 of the packet with the CRC field zeroed.
    let mut zeroed = bytes.clone();
    zeroed[14..18].fill(0);
    assert_eq!(u32::from_le_bytes(bytes[14..18].try_into().unwrap()), crc32fast::hash(&zeroed));
    assert_eq!(rpc::decode(&bytes[..bytes.len() - 1], 1024), Ok(None));
    assert_eq!(rpc::decode(&bytes[..10], 1024), Ok(None));
    let mut bad_crc = bytes.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    assert_eq!(rpc::decode(&bad_crc, 1024), Err(FrameError::Crc));
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'x';
    assert_eq!(rpc::decode(&bad_magic, 1024), Err(FrameError::Magic));
    assert_eq!(rpc::decode(&bytes, 40), Err(FrameError::TooLarge(bytes.len())));
}

#[test]
fn rpc_heartbeat_tlv_and_command_numbers() {
    let mut body = Vec::new();
    body.extend_from_slice(&7u16.to_le_bytes());
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&rpc::TLV_TIMEOUT.to_le_bytes());
    body.extend_from_slice(&4u16.to_le_bytes());
    body.extend_from_slice(&3000u32.to_le_bytes());
    assert_eq!(rpc::heartbeat_timeout_ms(&body), Some(3000));
    assert_eq!(rpc::heartbeat_timeout_ms(&body[..body.len() - 1]), None);
    assert_eq!(rpc::heartbeat_timeout_ms(b""), None);
    for (n, m) in [(101, "balance.query"), (201, "order.put_limit"), (204, "order.cancel"), (308, "market.summary")] {
        assert_eq!(rpc::method_of(n), Some(m));
        assert_eq!(rpc::command_of(m), Some(n));
    }
    assert_eq!(rpc::method_of(0), None);
    assert_eq!(rpc::method_of(309), None);
    assert_eq!(HEADER_BYTES, 4);
}

/// Little-endian bytes written out field by field from the tables of `edges/PROTOCOL.md`, to
/// compare the encoder with (not built from the encoder's own layout).
struct Bytes(Vec<u8>);

impl Bytes {
    /// The 4-byte header: length, type, version 1.
    fn header(length: u16, kind: u8) -> Bytes {
        let mut b = length.to_le_bytes().to_vec();
        b.extend_from_slice(&[kind, 1]);
        Bytes(b)
    }
    fn u8(mut self, v: u8) -> Bytes {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Bytes {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Bytes {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Bytes {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Bytes {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i128(mut self, v: i128) -> Bytes {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Bytes {
        self.0.extend_from_slice(v);
        self
    }
}

/// Each server message, encoded, is exactly the bytes PROTOCOL.md's "Server → client" table
/// gives: length, type, version, then each field at its size, padding zero.
#[test]
fn server_messages_are_the_documented_bytes() {
    let btcbch = *b"BTCBCH\0\0\0\0\0\0\0\0\0\0";
    let cases = [
        (ServerMsg::Challenge { nonce: [7; 32] }, Bytes::header(36, 0x02).raw(&[7; 32])),
        (
            ServerMsg::LoginAck { seq: 0x0102030405060708, user: 42, heartbeat_ms: 5000 },
            Bytes::header(20, 0x04).u64(0x0102030405060708).u32(42).u32(5000),
        ),
        (ServerMsg::LoginReject { reason: 51 }, Bytes::header(8, 0x05).u16(51).raw(&[0, 0])),
        (ServerMsg::Heartbeat { last_seq: 9 }, Bytes::header(12, 0x21).u64(9)),
        (
            ServerMsg::Accepted {
                seq: 3,
                time_us: 1_700_000_000_000_001,
                client_id: 77,
                order_id: 1001,
                market: btcbch,
                side: 2,
                kind: 1,
                price: 10_000_000,
                amount: 200_000_000,
            },
            Bytes::header(72, 0x30)
                .u64(3)
                .u64(1_700_000_000_000_001)
                .u64(77)
                .u64(1001)
                .raw(&btcbch)
                .u8(2)
                .u8(1)
                .raw(&[0, 0])
                .i64(10_000_000)
                .i64(200_000_000),
        ),
        (
            ServerMsg::Rejected { seq: 4, client_id: 78, order_id: 1002, reason: 13, request_type: 0x10 },
            Bytes::header(32, 0x31).u64(4).u64(78).u64(1002).u16(13).u8(0x10).u8(0),
        ),
        (
            ServerMsg::Filled {
                seq: 5,
                time_us: 1_700_000_000_000_002,
                client_id: 79,
                order_id: 1003,
                deal_id: 55,
                market: btcbch,
                side: 1,
                role: 2,
                fee_scale: 20,
                price: 10_000_000,
                amount: 50_000_000,
                left: -1,
                fee: -(1i128 << 100),
            },
            Bytes::header(104, 0x32)
                .u64(5)
                .u64(1_700_000_000_000_002)
                .u64(79)
                .u64(1003)
                .u64(55)
                .raw(&btcbch)
                .u8(1)
                .u8(2)
                .u8(20)
                .u8(0)
                .i64(10_000_000)
                .i64(50_000_000)
                .i64(-1)
                .i128(-(1i128 << 100)),
        ),
        (
            ServerMsg::Cancelled {
                seq: 6,
                time_us: 1_700_000_000_000_003,
                client_id: 80,
                order_id: 1004,
                market: btcbch,
                why: 2,
                side: 1,
                left: 123,
                price: 10_000_000,
            },
            Bytes::header(72, 0x33)
                .u64(6)
                .u64(1_700_000_000_000_003)
                .u64(80)
                .u64(1004)
                .raw(&btcbch)
                .u8(2)
                .u8(1)
                .raw(&[0, 0])
                .i64(123)
                .i64(10_000_000),
        ),
        (
            ServerMsg::OrderState {
                seq: 7,
                time_us: 1_700_000_000_000_004,
                client_id: 81,
                order_id: 1005,
                market: btcbch,
                side: 2,
                kind: 1,
                state: 1,
                fee_scale: 12,
                price: 10_000_000,
                amount: 300_000_000,
                left: 100_000_000,
                deal_stock: 200_000_000,
                deal_money: 2_000_000_000_000_000,
                deal_fee: 400_000_000,
            },
            Bytes::header(120, 0x36)
                .u64(7)
                .u64(1_700_000_000_000_004)
                .u64(81)
                .u64(1005)
                .raw(&btcbch)
                .u8(2)
                .u8(1)
                .u8(1)
                .u8(12)
                .i64(10_000_000)
                .i64(300_000_000)
                .i64(100_000_000)
                .i64(200_000_000)
                .i128(2_000_000_000_000_000)
                .i128(400_000_000),
        ),
    ];
    for (msg, want) in cases {
        let mut got = Vec::new();
        encode_server(&msg, &mut got);
        assert_eq!(got.len(), usize::from(u16::from_le_bytes([want.0[0], want.0[1]])), "{msg:?}: its length");
        assert_eq!(got, want.0, "{msg:?}");
    }
}

/// The login signature's test vector in `PROTOCOL.md` (HMAC-SHA256 keyed with the secret's bytes
/// over the nonce and the 16-byte key field), computed independently of this crate.
#[test]
fn the_documented_login_mac_vector() {
    let secret = b"at-least-sixteen-bytes-of-secret";
    let key = *b"mm-alpha\0\0\0\0\0\0\0\0";
    let nonce: [u8; 32] = std::array::from_fn(|i| i as u8);
    let mac = binary::login_mac(secret, &nonce, &key);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "545a67f2dac56afd6f00913364acc79f4d39a94d94152af404b48a09cd3e2227");
    assert!(binary::login_mac_ok(secret, &nonce, &key, &mac));
    let doc = include_str!("../PROTOCOL.md");
    assert!(doc.contains(&hex), "PROTOCOL.md gives the same vector");
}

/// Every section of `PROTOCOL.md` names the tests that check what it says, as a file followed by
/// test names (`` `tests/tcp.rs`, `binary_...` ``), and each named test exists in that file: a
/// renamed or removed test, or a section without one, fails here.
#[test]
fn every_section_of_the_protocol_names_tests_that_exist() {
    let doc = include_str!("../PROTOCOL.md");
    let files: [(&str, &str); 12] = [
        ("edges/tests/codec.rs", include_str!("codec.rs")),
        ("edges/tests/reports.rs", include_str!("reports.rs")),
        ("edges/tests/backend.rs", include_str!("backend.rs")),
        ("edges/src/tcp.rs", include_str!("../src/tcp.rs")),
        ("tests/tcp.rs", include_str!("../../tests/tcp.rs")),
        ("tests/abuse.rs", include_str!("../../tests/abuse.rs")),
        ("tests/console.rs", include_str!("../../tests/console.rs")),
        ("tests/python_client.rs", include_str!("../../tests/python_client.rs")),
        ("client/tests/session.rs", include_str!("../../client/tests/session.rs")),
        ("matcher/tests/client_ids.rs", include_str!("../../matcher/tests/client_ids.rs")),
        ("matcher/tests/order_options.rs", include_str!("../../matcher/tests/order_options.rs")),
        ("edges/src/binary.rs", include_str!("../src/binary.rs")),
    ];
    let identifier =
        |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let mut named = 0;
    for section in doc.split("\n## ").skip(1) {
        let title = section.lines().next().unwrap();
        // Backticked spans with the text between them: a `*.rs` span opens a list of test names
        // separated only by commas and blanks.
        let pieces: Vec<&str> = section.split('`').collect();
        let mut tests_here = 0;
        let mut i = 1;
        while i < pieces.len() {
            let file = pieces[i];
            if file.ends_with(".rs") {
                let mut j = i + 2;
                while j < pieces.len()
                    && pieces[j - 1].trim_matches(|c: char| c == ',' || c.is_whitespace()).is_empty()
                    && identifier(pieces[j])
                {
                    let name = pieces[j];
                    let text = files.iter().find(|(f, _)| *f == file).map(|(_, t)| *t);
                    let text =
                        text.unwrap_or_else(|| panic!("\"{title}\" names {file}, which this test does not read"));
                    assert!(text.contains(&format!("fn {name}(")), "\"{title}\" names {file}, {name}: no such test");
                    tests_here += 1;
                    j += 2;
                }
                i = j;
            } else {
                i += 2;
            }
        }
        assert!(tests_here > 0, "the section \"{title}\" names no test");
        named += tests_here;
    }
    assert!(named >= 40, "{named} tests named");
}
