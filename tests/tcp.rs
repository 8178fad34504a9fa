//! The TCP edge over real sockets: ViaBTC's framed JSON-RPC (every method, heartbeats, bad
//! packets) and the binary order entry (login, orders, fills pushed to a resting order's owner,
//! cancels, resends, malformed messages), with clients that misbehave next to ones that do not.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use support::{strip_times, wait_until};
use viaduct::engine::{start_tcp_edge, Engine, TcpEdgeRunning};
use viaduct::profile::Profile;
use viaduct_client::wire::{
    self as binary, client_type, encode_client, market_bytes, reason, ClientMsg, LimitOptions, ServerMsg,
};
use viaduct_client::{Error, Login, Session};
use viaduct_edges::rpc::{self, Header};
use viaduct_edges::tcp::{ApiKey, TcpConfig};
use viaduct_matcher::command::IdWindow;
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Events, Matcher, Spec};
use viaduct_protocol::{decode, response_json};

const SECRET: &str = "a-secret-of-32-bytes-for-tests!!";
const MAKER: u32 = 11;
const TAKER: u32 = 12;

struct Server {
    tcp: Option<TcpEdgeRunning>,
    addr: SocketAddr,
    engine: Option<Engine>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The engine and its TCP edge, arranged as `at` says.
    fn start(at: Arrangement, tweak: impl FnOnce(&mut TcpConfig)) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), at, tweak)
    }

    /// Stops the engine and its edge, and starts them again on the same data directory.
    fn restart(mut self, at: Arrangement, tweak: impl FnOnce(&mut TcpConfig)) -> Server {
        drop(self.tcp.take());
        self.engine.take().unwrap().shutdown();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Server::start_in(dir, at, tweak)
    }

    fn start_in(dir: tempfile::TempDir, at: Arrangement, tweak: impl FnOnce(&mut TcpConfig)) -> Server {
        let mut profile = Profile::load("default").unwrap();
        profile.ring.input_slots = 1024;
        profile.ring.output_slots = 1024;
        let (sleep, idle_sleep) = (Duration::from_micros(20), Duration::from_micros(200));
        let on_matcher = match at {
            Arrangement::OwnThread => false,
            // As in benches/profile-os.toml: each turn of the edge loop waits.
            Arrangement::MatcherSleeping => {
                profile.ring.wait = viaduct_ring::Wait::Sleep { sleep, idle_sleep };
                true
            }
            // The edge loop also turns without waiting while the matcher spins and yields.
            Arrangement::MatcherBackoff => {
                profile.ring.wait = viaduct_ring::Wait::Backoff { sleep, idle_sleep };
                true
            }
        };
        let spec = Spec::new(&embedded()).unwrap();
        let keys = vec![
            ApiKey::new(&spec, "maker", SECRET, MAKER, "0.002", "0.001", "mm").unwrap(),
            ApiKey::new(&spec, "taker", SECRET, TAKER, "0.002", "0.001", "").unwrap(),
        ];
        let (engine, _) = Engine::start(dir.path(), spec, &profile, |_| {}).unwrap();
        let mut cfg = TcpConfig::new("127.0.0.1:0".parse().unwrap(), keys);
        tweak(&mut cfg);
        let (addr, tcp) = start_tcp_edge(&engine, cfg, on_matcher).unwrap();
        assert_eq!(matches!(tcp, TcpEdgeRunning::OnMatcher(_)), on_matcher);
        Server { tcp: Some(tcp), addr, engine: Some(engine), _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connect(&self) -> Conn {
        let s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { session: Session::over(s), buf: Vec::new() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.tcp.take());
        if let Some(e) = self.engine.take() {
            e.shutdown();
        }
    }
}

/// A connection: a binary session through the client library (which checks every message's
/// session sequence), or framed JSON-RPC read into `buf`.
struct Conn {
    session: Session,
    buf: Vec<u8>,
}

impl Conn {
    /// The socket, for bytes of a test's own.
    fn s(&mut self) -> &mut TcpStream {
        self.session.stream()
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.s().read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server closed the connection (after anything it still had to say).
    fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.s().read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn rpc(&mut self, command: u32, sequence: u32, req_id: u64, ext: &[u8], body: &[u8]) {
        let h = Header { command, pkg_type: rpc::PKG_REQUEST, result: 0, sequence, req_id, body_size: 0, ext_size: 0 };
        let mut bytes = Vec::new();
        rpc::encode(&h, ext, body, &mut bytes);
        self.s().write_all(&bytes).unwrap();
    }

    fn rpc_reply(&mut self) -> Option<rpc::Packet> {
        loop {
            if let Some((p, used)) = rpc::decode(&self.buf, 1 << 20).unwrap() {
                self.buf.drain(..used);
                return Some(p);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Calls `method` over the RPC framing and returns the whole JSON-RPC reply.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let command = rpc::command_of(method).unwrap();
        self.rpc(command, 5, 77, b"", params.to_string().as_bytes());
        let p = self.rpc_reply().expect("a reply");
        assert_eq!((p.header.command, p.header.pkg_type, p.header.sequence, p.header.req_id), (command, 1, 5, 77));
        serde_json::from_slice(&p.body).unwrap()
    }

    /// Sends an order that must be accepted; its order id.
    fn rest(&mut self, msg: ClientMsg) -> u64 {
        self.send(msg);
        let ServerMsg::Accepted { order_id, .. } = self.next() else { panic!("no ACCEPTED") };
        order_id
    }

    fn send(&mut self, msg: ClientMsg) {
        self.session.send(&msg).unwrap();
    }

    /// The next server message other than a heartbeat (not answered), its session sequence
    /// checked.
    fn next(&mut self) -> ServerMsg {
        loop {
            let m = self.next_with_heartbeats();
            if !matches!(m, ServerMsg::Heartbeat { .. }) {
                return m;
            }
        }
    }

    /// The next server message, heartbeats included, its session sequence checked.
    fn next_with_heartbeats(&mut self) -> ServerMsg {
        self.session.next_message().unwrap_or_else(|e| panic!("waiting for a message: {e}"))
    }

    /// LOGIN_REPLAY: a new resumable session (`session` 0) or `session` resumed from `from_seq`.
    /// The replayed reports that follow carry `from_seq` on.
    fn try_login_replay(&mut self, name: &str, secret: &str, session: u64, from_seq: u64) -> Result<Login, Error> {
        self.session.login_resumable(name, secret.as_bytes(), session, from_seq)
    }

    fn login_replay(&mut self, name: &str, secret: &str, session: u64, from_seq: u64) -> Login {
        self.try_login_replay(name, secret, session, from_seq).unwrap()
    }

    fn login(&mut self, name: &str, secret: &str) -> Login {
        self.session.login(name, secret.as_bytes()).unwrap()
    }
}

fn rpc_framing_answers_every_method_as_the_matcher_does(at: Arrangement) {
    let server = Server::start(at, |_| {});
    let mut c = server.connect();
    let spec = Spec::new(&embedded()).unwrap();
    let mut direct = Matcher::new(spec.clone());
    let mut events = Events::default();
    for (i, (method, params)) in support::every_method_script().into_iter().enumerate() {
        let got = c.call(method, params.clone());
        support::check_by_hand(i, &got);
        events.clear();
        let outcome =
            decode(&spec, method, params.as_array().unwrap()).and_then(|cmd| direct.apply(1, &cmd, &mut events));
        let want: Value = serde_json::from_str(&response_json(&spec, 77, &outcome, &events)).unwrap();
        assert_eq!(strip_times(got), strip_times(want), "step {i}: {method} {params}");
    }
}

fn rpc_framing_heartbeats_ext_and_unknown_commands(at: Arrangement) {
    let server = Server::start(at, |_| {});
    let mut c = server.connect();
    let mut tlv = Vec::new();
    tlv.extend_from_slice(&rpc::TLV_TIMEOUT.to_le_bytes());
    tlv.extend_from_slice(&4u16.to_le_bytes());
    tlv.extend_from_slice(&3000u32.to_le_bytes());
    c.rpc(rpc::CMD_HEARTBEAT, 9, 0, b"", &tlv);
    let hb = c.rpc_reply().unwrap();
    assert_eq!((hb.header.command, hb.header.pkg_type, hb.header.sequence, hb.body.len()), (0, 1, 9, 0));
    // ext comes back as it was sent.
    c.rpc(104, 1, 3, b"echo-me", b"[]");
    let p = c.rpc_reply().unwrap();
    assert_eq!(p.ext, b"echo-me");
    // Methods this engine does not serve (yet) and numbers no method has: error 4.
    for command in [103, 208, 306, 999] {
        c.rpc(command, 1, 4, b"", b"[]");
        let v: Value = serde_json::from_slice(&c.rpc_reply().unwrap().body).unwrap();
        assert_eq!(v, json!({"error": {"code": 4, "message": "method not found"}, "result": null, "id": 4}));
    }
    // Market data answers over the framing too.
    c.rpc(304, 1, 5, b"", br#"["BTCBCH"]"#);
    let v: Value = serde_json::from_slice(&c.rpc_reply().unwrap().body).unwrap();
    assert_eq!(v, json!({"error": null, "result": "0", "id": 5}));
    // Wrong param types: error 1, nothing changes.
    let v = c.call("balance.update", json!([1, "BTC", "deposit", "x", "1", {}]));
    assert_eq!(v["error"]["code"], 1);
    assert_eq!(c.call("balance.query", json!([1, "BTC"]))["result"]["BTC"]["available"], "0");
}

fn rpc_framing_closes_on_bad_packets_without_harming_others(at: Arrangement) {
    let server = Server::start(at, |cfg| cfg.packet_bytes_max = 4096);
    let mut good = server.connect();
    good.call("balance.update", json!([1, "BTC", "deposit", 1, "5", {}]));
    let frame = |body: &[u8]| {
        let mut b = Vec::new();
        let h = Header { command: 102, pkg_type: 0, result: 0, sequence: 1, req_id: 1, body_size: 0, ext_size: 0 };
        rpc::encode(&h, b"", body, &mut b);
        b
    };
    let deposit = br#"[1, "BTC", "deposit", 2, "5", {}]"#;
    // Bad CRC.
    let mut c = server.connect();
    let mut b = frame(deposit);
    b[20] ^= 0xFF;
    c.s().write_all(&b).unwrap();
    assert!(c.closed());
    // A body that is not a JSON array.
    let mut c = server.connect();
    c.s().write_all(&frame(br#"{"not": "an array"}"#)).unwrap();
    assert!(c.closed());
    // Over the packet bound.
    let mut c = server.connect();
    c.s().write_all(&frame(&vec![b' '; 5000])).unwrap();
    assert!(c.closed());
    // A reply type where a request belongs.
    let mut c = server.connect();
    let mut b = Vec::new();
    let h = Header { command: 102, pkg_type: 1, result: 0, sequence: 1, req_id: 1, body_size: 0, ext_size: 0 };
    rpc::encode(&h, b"", deposit, &mut b);
    c.s().write_all(&b).unwrap();
    assert!(c.closed());
    // Half a request, then gone.
    let mut c = server.connect();
    let b = frame(deposit);
    c.s().write_all(&b[..b.len() - 3]).unwrap();
    // Its end read too: the edge closes it, with the half frame never applied.
    c.s().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());
    // None of them changed anything; the good connection still works.
    let v = good.call("balance.query", json!([1, "BTC"]));
    assert_eq!(v["result"]["BTC"]["available"], "5");
}

fn rpc_framing_slow_reader_is_bounded_and_others_proceed(at: Arrangement) {
    let server = Server::start(at, |cfg| {
        cfg.pending_max = 64;
        cfg.write_bytes_max = 64 * 1024;
    });
    let mut slow = server.connect();
    // Far more asset.list replies (~35 MB) than the write bound and the kernel's buffers hold,
    // never read.
    let mut burst = Vec::new();
    for i in 0..100_000u64 {
        let h = Header { command: 104, pkg_type: 0, result: 0, sequence: 0, req_id: i, body_size: 0, ext_size: 0 };
        rpc::encode(&h, b"", b"[]", &mut burst);
    }
    let mut writer = slow.s().try_clone().unwrap();
    let burst = std::thread::spawn(move || {
        let _ = writer.write_all(&burst);
    });
    let mut other = server.connect();
    for i in 0..20 {
        let v = other.call("balance.query", json!([i + 1, "BTC"]));
        assert_eq!(v["result"]["BTC"]["available"], "0");
    }
    // Without reading a byte: once the server has closed the connection, writes fail.
    let mut probe = slow.s().try_clone().unwrap();
    let mut heartbeat = Vec::new();
    let h = Header { command: 0, pkg_type: 0, result: 0, sequence: 0, req_id: 0, body_size: 0, ext_size: 0 };
    rpc::encode(&h, b"", b"", &mut heartbeat);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let closed = loop {
        if probe.write_all(&heartbeat).is_err() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(closed, "a client that never reads is disconnected");
    burst.join().unwrap();
    assert_eq!(other.call("asset.list", json!([]))["error"], Value::Null);
}

fn rpc_framing_requests_past_the_pending_bound_are_all_answered(at: Arrangement) {
    // Ten times the bound at once: the server stops reading at the bound and must resume as
    // replies free room, from its buffer and from the socket, until every request is answered.
    let server = Server::start(at, |cfg| cfg.pending_max = 8);
    let mut c = server.connect();
    let mut burst = Vec::new();
    for i in 0..80u64 {
        let h = Header { command: 104, pkg_type: 0, result: 0, sequence: 0, req_id: i, body_size: 0, ext_size: 0 };
        rpc::encode(&h, b"", b"[]", &mut burst);
    }
    c.s().write_all(&burst).unwrap();
    c.s().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let ids: Vec<u64> = (0..80).map(|_| c.rpc_reply().expect("a reply to every request").header.req_id).collect();
    assert_eq!(ids, (0..80).collect::<Vec<u64>>());
}

/// An ask of 0.01 BTC at 0.9 on BTCBCH, below any bid the tests rest: it rests.
fn small_ask(client_id: u64) -> ClientMsg {
    ClientMsg::NewLimit {
        client_id,
        market: market_bytes("BTCBCH"),
        side: 1,
        options: LimitOptions::PLAIN,
        price: 90_000_000,
        amount: 1_000_000,
    }
}

fn fund(server: &Server) {
    let mut c = server.connect();
    c.call("balance.update", json!([MAKER, "BTC", "deposit", 1, "10", {}]));
    c.call("balance.update", json!([TAKER, "BCH", "deposit", 1, "10", {}]));
}

fn binary_login_refuses_unknown_keys_bad_signatures_and_early_orders(at: Arrangement) {
    let server = Server::start(at, |_| {});
    let mut c = server.connect();
    c.send(ClientMsg::Hello { key: market_bytes("nobody") });
    assert_eq!(c.next(), ServerMsg::LoginReject { reason: reason::UNKNOWN_KEY });
    assert!(c.closed());
    let mut c = server.connect();
    c.send(ClientMsg::Hello { key: market_bytes("maker") });
    let ServerMsg::Challenge { nonce } = c.next() else { panic!() };
    let mut mac = binary::login_mac(SECRET.as_bytes(), &nonce, &market_bytes("maker"));
    mac[0] ^= 1;
    c.send(ClientMsg::Login { mac });
    assert_eq!(c.next(), ServerMsg::LoginReject { reason: reason::BAD_SIGNATURE });
    assert!(c.closed());
    // An order before logging in.
    let mut c = server.connect();
    c.send(ClientMsg::Cancel { market: market_bytes("BTCBCH"), order_id: 1 });
    assert_eq!(c.next(), ServerMsg::LoginReject { reason: reason::NOT_EXPECTED });
    assert!(c.closed());
    // A frame length no message has.
    let mut c = server.connect();
    c.s().write_all(&[200, 0, 1, 1]).unwrap();
    assert!(c.closed());
    // The right signature.
    let mut c = server.connect();
    assert_eq!(c.login("maker", SECRET), Login { user: MAKER, heartbeat_ms: 1000, session: 0, last_seq: 1 });
}

fn binary_orders_fill_resting_makers_and_cancel(at: Arrangement) {
    let server = Server::start(at, |_| {});
    fund(&server);
    let btcbch = market_bytes("BTCBCH");
    let mut maker = server.connect();
    maker.login("maker", SECRET);
    let mut taker = server.connect();
    taker.login("taker", SECRET);
    // Maker rests 2 BTC at 0.1 (prices at money prec 8, amounts at stock prec 8).
    maker.send(ClientMsg::NewLimit {
        client_id: 500,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 200_000_000,
    });
    let ServerMsg::Accepted { client_id: 500, order_id: resting, side: 1, kind: 1, price, amount, .. } = maker.next()
    else {
        panic!("no ACCEPTED")
    };
    assert_eq!((price, amount), (10_000_000, 200_000_000));
    // Taker buys 0.5 at up to 0.2: accepted, filled at the maker's price.
    taker.send(ClientMsg::NewLimit {
        client_id: 1,
        market: btcbch,
        side: 2,
        options: LimitOptions::PLAIN,
        price: 20_000_000,
        amount: 50_000_000,
    });
    let ServerMsg::Accepted { order_id: taker_order, .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { order_id, role, price, amount, left, fee, fee_scale, deal_id, .. } = taker.next() else {
        panic!()
    };
    assert_eq!((order_id, role, price, amount, left), (taker_order, binary::ROLE_TAKER, 10_000_000, 50_000_000, 0));
    // A bid pays its fee in stock: 0.5 × 0.002 = 0.001 BTC at stock prec 8 + fee prec 4.
    assert_eq!((fee, fee_scale), (1_000_000_000, 12));
    // The maker hears of its fill without asking.
    let ServerMsg::Filled { order_id, client_id, role, left, deal_id: maker_deal, fee, .. } = maker.next() else {
        panic!()
    };
    assert_eq!((order_id, client_id, role, left, maker_deal), (resting, 500, binary::ROLE_MAKER, 150_000_000, deal_id));
    // An ask pays in money: 0.05 BCH × 0.001 = 0.00005 at 8 + 8 + 4.
    assert_eq!(fee, 5_000_000_000_000_000);
    // A resend of the same client order id changes nothing and names the order.
    maker.send(ClientMsg::NewLimit {
        client_id: 500,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 1,
    });
    assert_eq!(
        maker.next(),
        ServerMsg::Rejected {
            seq: maker.session.last_seq(),
            client_id: 500,
            order_id: resting,
            reason: reason::DUPLICATE_CLIENT_ID,
            request_type: client_type::NEW_LIMIT
        }
    );
    // Cancel by client order id: the rest comes back.
    maker.send(ClientMsg::CancelByClientId { market: btcbch, client_id: 500 });
    let ServerMsg::Cancelled { order_id, client_id, why, side, left, price, .. } = maker.next() else { panic!() };
    assert_eq!((order_id, client_id, why, left), (resting, 500, binary::CANCEL_REQUESTED, 150_000_000));
    assert_eq!((side, price), (1, 10_000_000), "the order's side and limit price");
    maker.send(ClientMsg::Cancel { market: btcbch, order_id: resting });
    let ServerMsg::Rejected { reason: r, order_id, request_type, .. } = maker.next() else { panic!() };
    assert_eq!((r, order_id, request_type), (reason::ORDER_NOT_FOUND, resting, client_type::CANCEL));
    // Balances as the JSON side sees them.
    let mut rpc = server.connect();
    let b = rpc.call("balance.query", json!([MAKER]))["result"].clone();
    assert_eq!(b["BTC"], json!({"available": "9.5", "freeze": "0"}));
    assert_eq!(b["BCH"], json!({"available": "0.04995", "freeze": "0"}));
}

fn binary_market_orders_report_an_unfilled_remainder(at: Arrangement) {
    let server = Server::start(at, |_| {});
    fund(&server);
    let btcbch = market_bytes("BTCBCH");
    let mut maker = server.connect();
    maker.login("maker", SECRET);
    maker.send(ClientMsg::NewLimit {
        client_id: 0,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 100_000_000,
    });
    let ServerMsg::Accepted { .. } = maker.next() else { panic!() };
    let mut taker = server.connect();
    taker.login("taker", SECRET);
    // Spend 0.5 BCH at market: 1 BTC at 0.1 costs 0.1; 0.4 BCH is left unspent.
    taker.send(ClientMsg::NewMarket {
        client_id: 9,
        market: btcbch,
        side: 2,
        self_trade: 0,
        flags: 0,
        amount: 50_000_000,
    });
    let ServerMsg::Accepted { kind: 2, amount: 50_000_000, .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { amount: 100_000_000, left: 40_000_000, .. } = taker.next() else { panic!() };
    let ServerMsg::Cancelled { why, left: 40_000_000, client_id: 9, side, price, .. } = taker.next() else { panic!() };
    assert_eq!((why, side, price), (binary::CANCEL_MARKET_REMAINDER, 2, 0), "a market order has no price");
    let ServerMsg::Filled { left: 0, role, .. } = maker.next() else { panic!() };
    assert_eq!(role, binary::ROLE_MAKER);
    // A bid by stock amount (type 3): 0.4 BTC, whatever it costs; amounts and what is left are
    // stock.
    maker.send(ClientMsg::NewLimit {
        client_id: 0,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 20_000_000,
        amount: 100_000_000,
    });
    let ServerMsg::Accepted { .. } = maker.next() else { panic!() };
    let by_stock = binary::MARKET_STOCK_AMOUNT;
    taker.send(ClientMsg::NewMarket {
        client_id: 10,
        market: btcbch,
        side: 2,
        self_trade: 0,
        flags: by_stock,
        amount: 40_000_000,
    });
    let ServerMsg::Accepted { kind: 3, amount: 40_000_000, client_id: 10, .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { amount: 40_000_000, left: 0, price: 20_000_000, .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { left: 60_000_000, .. } = maker.next() else { panic!() };
    taker.send(ClientMsg::NewMarket { client_id: 11, market: btcbch, side: 2, self_trade: 0, flags: 2, amount: 1 });
    let ServerMsg::Rejected { reason: r, .. } = taker.next() else { panic!() };
    assert_eq!(r, reason::BAD_OPTION);
    let mut rpc = server.connect();
    let b = rpc.call("balance.query", json!([TAKER]))["result"].clone();
    assert_eq!(b["BCH"], json!({"available": "9.82", "freeze": "0"}), "0.1 and then 0.4 × 0.2");
}

fn binary_bad_orders_are_rejected_and_the_session_goes_on(at: Arrangement) {
    let server = Server::start(at, |_| {});
    fund(&server);
    let btcbch = market_bytes("BTCBCH");
    let mut s = server.connect();
    s.login("maker", SECRET);
    let cases = [
        (
            ClientMsg::NewLimit {
                client_id: 1,
                market: market_bytes("NOPE"),
                side: 1,
                options: LimitOptions::PLAIN,
                price: 1,
                amount: 1,
            },
            reason::UNKNOWN_MARKET,
        ),
        (
            ClientMsg::NewLimit {
                client_id: 2,
                market: btcbch,
                side: 3,
                options: LimitOptions::PLAIN,
                price: 1,
                amount: 1,
            },
            reason::BAD_SIDE,
        ),
        (
            ClientMsg::NewLimit {
                client_id: 3,
                market: btcbch,
                side: 1,
                options: LimitOptions::PLAIN,
                price: 0,
                amount: 1,
            },
            reason::BAD_NUMBER,
        ),
        (
            ClientMsg::NewLimit {
                client_id: 4,
                market: btcbch,
                side: 1,
                options: LimitOptions::PLAIN,
                price: 1,
                amount: -1,
            },
            reason::BAD_NUMBER,
        ),
        (
            ClientMsg::NewLimit {
                client_id: 5,
                market: btcbch,
                side: 1,
                options: LimitOptions::PLAIN,
                price: 1,
                amount: 100_000_000_000,
            },
            reason::BALANCE_NOT_ENOUGH,
        ),
        (
            ClientMsg::NewLimit {
                client_id: 6,
                market: btcbch,
                side: 1,
                options: LimitOptions::PLAIN,
                price: 1,
                amount: 1,
            },
            reason::AMOUNT_TOO_SMALL,
        ),
        (
            ClientMsg::NewMarket {
                client_id: 7,
                market: btcbch,
                side: 1,
                self_trade: 0,
                flags: 0,
                amount: 100_000_000,
            },
            reason::NO_ENOUGH_TRADER,
        ),
        (ClientMsg::CancelByClientId { market: btcbch, client_id: 42 }, reason::ORDER_NOT_FOUND),
        (ClientMsg::Hello { key: [0; 16] }, reason::NOT_EXPECTED),
    ];
    for (msg, want) in cases {
        s.send(msg);
        let ServerMsg::Rejected { reason: r, .. } = s.next() else { panic!("{msg:?} was not rejected") };
        assert_eq!(r, want, "{msg:?}");
    }
    // Malformed frames that keep the stream in step: rejected and skipped.
    s.s().write_all(&[8, 0, 0x7E, 1, 0, 0, 0, 0]).unwrap();
    let ServerMsg::Rejected { reason: r, request_type: 0x7E, .. } = s.next() else { panic!() };
    assert_eq!(r, reason::UNKNOWN_TYPE);
    let mut wrong_version = Vec::new();
    encode_client(&ClientMsg::Cancel { market: btcbch, order_id: 1 }, &mut wrong_version);
    wrong_version[3] = 9;
    s.s().write_all(&wrong_version).unwrap();
    let ServerMsg::Rejected { reason: r, .. } = s.next() else { panic!() };
    assert_eq!(r, reason::MALFORMED);
    // A malformed order (padding not zero) is rejected with the client order id it carried.
    let mut bad_pad = Vec::new();
    encode_client(
        &ClientMsg::NewMarket { client_id: 77, market: btcbch, side: 1, self_trade: 0, flags: 0, amount: 1 },
        &mut bad_pad,
    );
    bad_pad[31] = 1;
    s.s().write_all(&bad_pad).unwrap();
    let ServerMsg::Rejected { reason: r, client_id, request_type, .. } = s.next() else { panic!() };
    assert_eq!((r, client_id, request_type), (reason::MALFORMED, 77, client_type::NEW_MARKET));
    // An option byte with no meaning, or post-only with IOC: reason 33.
    for options in [
        LimitOptions { time_in_force: 3, flags: 0, self_trade: 0 },
        LimitOptions { time_in_force: 0, flags: 2, self_trade: 0 },
        LimitOptions { time_in_force: 0, flags: 0, self_trade: 5 },
        LimitOptions { time_in_force: 1, flags: LimitOptions::POST_ONLY, self_trade: 0 },
    ] {
        s.send(ClientMsg::NewLimit { client_id: 78, market: btcbch, side: 1, options, price: 1, amount: 1 });
        let ServerMsg::Rejected { reason: r, client_id, .. } = s.next() else { panic!() };
        assert_eq!((r, client_id), (reason::BAD_OPTION, 78), "{options:?}");
    }
    // Nothing changed: the maker's BTC is all there, and a good order still works.
    s.send(ClientMsg::NewLimit {
        client_id: 1,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 100_000_000,
    });
    let ServerMsg::Accepted { client_id: 1, .. } = s.next() else { panic!() };
    let mut rpc = server.connect();
    let b = rpc.call("balance.query", json!([MAKER, "BTC"]))["result"].clone();
    assert_eq!(b["BTC"], json!({"available": "9", "freeze": "1"}));
}

fn binary_sessions_get_heartbeats_and_silent_ones_are_closed(at: Arrangement) {
    let server = Server::start(at, |cfg| {
        cfg.heartbeat = Duration::from_millis(100);
        cfg.heartbeat_timeout = Duration::from_millis(600);
    });
    let mut s = server.connect();
    s.login("maker", SECRET);
    for _ in 0..2 {
        assert_eq!(s.next_with_heartbeats(), ServerMsg::Heartbeat { last_seq: 1 });
    }
    assert!(s.closed(), "a session that sends nothing is closed");
}

/// Where the TCP edge's event loop runs, and how it turns.
#[derive(Clone, Copy)]
enum Arrangement {
    /// On a thread of its own.
    OwnThread,
    /// In the matcher's waits (`rings.tcp_edge_with_matcher`), with the `sleep` wait: every turn
    /// waits for its sockets.
    MatcherSleeping,
    /// In the matcher's waits with the `backoff` wait: turns that do not wait while it spins.
    MatcherBackoff,
}

/// PROTOCOL.md, drop copy: a session of a `drop_copy` key gets every report of its user, from its
/// user's other sessions, from framed JSON-RPC on the same edge, and from any other client of the
/// engine; a session of a plain key of the same user gets only its own reports and maker fills.
fn binary_drop_copy_sessions_get_every_report_of_their_user(at: Arrangement) {
    let server = Server::start(at, |cfg| {
        let spec = Spec::new(&embedded()).unwrap();
        let mut copier = ApiKey::new(&spec, "copier", SECRET, MAKER, "0.002", "0.001", "copy").unwrap();
        copier.drop_copy = true;
        cfg.keys.push(copier);
    });
    fund(&server);
    let btcbch = market_bytes("BTCBCH");
    let mut maker = server.connect();
    maker.login("maker", SECRET);
    let mut copy = server.connect();
    assert_eq!(copy.login("copier", SECRET).user, MAKER);
    // 1. The user's other session: its reports are copied, with the ids it sent.
    maker.send(ClientMsg::NewLimit {
        client_id: 1,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 100_000_000,
    });
    let ServerMsg::Accepted { order_id: first, client_id: 1, .. } = maker.next() else { panic!() };
    let ServerMsg::Accepted { order_id, client_id: 1, side: 1, .. } = copy.next() else { panic!() };
    assert_eq!(order_id, first);
    // 2. Framed JSON-RPC on the same edge, for the same user.
    let mut rpc = server.connect();
    let r = rpc.call("order.put_limit", json!([MAKER, "BTCBCH", 1, "2", "0.2", "0.002", "0.001", "rpc"]));
    let second = r["result"]["id"].as_u64().expect("an order");
    let ServerMsg::Accepted { order_id, price: 20_000_000, .. } = copy.next() else { panic!() };
    assert_eq!(order_id, second);
    // 3. Another client of the engine cancels the first order: CANCELLED with what was left.
    let mut other = server.engine.as_ref().unwrap().client();
    other.submit(1, "order.cancel", &[json!(MAKER), json!("BTCBCH"), json!(first)]).unwrap();
    assert!(other.recv().json().contains(r#""error":null"#));
    let ServerMsg::Cancelled { order_id, why, left: 100_000_000, side: 1, price: 10_000_000, .. } = copy.next() else {
        panic!()
    };
    assert_eq!((order_id, why), (first, binary::CANCEL_REQUESTED));
    // 4. A taker trades with the second order: both of the user's sessions get the maker fill,
    // once each.
    let mut taker = server.connect();
    taker.login("taker", SECRET);
    taker.send(ClientMsg::NewLimit {
        client_id: 3,
        market: btcbch,
        side: 2,
        options: LimitOptions::PLAIN,
        price: 20_000_000,
        amount: 50_000_000,
    });
    let ServerMsg::Accepted { .. } = taker.next() else { panic!() };
    for s in [&mut maker, &mut copy] {
        let ServerMsg::Filled { order_id, role, amount: 50_000_000, .. } = s.next() else { panic!() };
        assert_eq!((order_id, role), (second, binary::ROLE_MAKER));
    }
    // The plain session had nothing of the others: its next report answers its own request.
    maker.send(ClientMsg::Cancel { market: btcbch, order_id: first });
    let ServerMsg::Rejected { reason: r, .. } = maker.next() else { panic!() };
    assert_eq!(r, reason::ORDER_NOT_FOUND);
    // And the drop copy has that refusal too, then nothing more.
    let ServerMsg::Rejected { reason: r, request_type, .. } = copy.next() else { panic!() };
    assert_eq!((r, request_type), (reason::ORDER_NOT_FOUND, client_type::CANCEL));
    copy.send(ClientMsg::Cancel { market: btcbch, order_id: second });
    let ServerMsg::Cancelled { order_id, left: 150_000_000, .. } = copy.next() else { panic!() };
    assert_eq!(order_id, second);
}

/// Every test above, in each arrangement.
/// PROTOCOL.md "Order options", "Mass cancel" and "Amend", end to end: post-only and FOK
/// refusals, an IOC rest cancelled (why 4), self-trade prevention by option and by the key's
/// default (why 5, to every session of the user), MASS_CANCEL's count, and AMEND keeping or
/// losing priority.
fn binary_order_options_self_trade_prevention_mass_cancel_and_amend(at: Arrangement) {
    use viaduct_matcher::command::SelfTrade;
    let server = Server::start(at, |cfg| cfg.keys[0].trader.self_trade = SelfTrade::CancelTaker);
    fund(&server);
    let mut rpc = server.connect();
    rpc.call("balance.update", json!([MAKER, "BCH", "deposit", 2, "10", {}]));
    rpc.call("balance.update", json!([TAKER, "BTC", "deposit", 2, "10", {}]));
    let btcbch = market_bytes("BTCBCH");
    let (mut maker, mut maker2, mut taker) = (server.connect(), server.connect(), server.connect());
    maker.login("maker", SECRET);
    maker2.login("maker", SECRET);
    taker.login("taker", SECRET);
    let plain = LimitOptions::PLAIN;
    let limit = |client_id, side, options, price, amount| ClientMsg::NewLimit {
        client_id,
        market: btcbch,
        side,
        options,
        price,
        amount,
    };
    let a1 = maker.rest(limit(1, 1, plain, 10_000_000, 100_000_000)); // 1 BTC at 0.1
    let a2 = maker.rest(limit(2, 1, plain, 20_000_000, 100_000_000)); // 1 BTC at 0.2

    // Post-only that would take, FOK that cannot fill: refused, nothing changes.
    let post = LimitOptions { flags: LimitOptions::POST_ONLY, ..plain };
    taker.send(limit(7, 2, post, 10_000_000, 100_000_000));
    let ServerMsg::Rejected { reason: r, client_id: 7, .. } = taker.next() else { panic!() };
    assert_eq!(r, reason::WOULD_TAKE);
    let fok = LimitOptions { time_in_force: 2, ..plain };
    taker.send(limit(8, 2, fok, 20_000_000, 300_000_000));
    let ServerMsg::Rejected { reason: r, client_id: 8, .. } = taker.next() else { panic!() };
    assert_eq!(r, reason::CANNOT_FILL);

    // IOC: 1 of 1.5 trades at 0.1; the rest is cancelled, why 4.
    let ioc = LimitOptions { time_in_force: 1, ..plain };
    taker.send(limit(9, 2, ioc, 10_000_000, 150_000_000));
    let ServerMsg::Accepted { order_id: t, .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { amount: 100_000_000, left: 50_000_000, .. } = taker.next() else { panic!() };
    let ServerMsg::Cancelled { order_id, why, left, .. } = taker.next() else { panic!() };
    assert_eq!((order_id, why, left), (t, binary::CANCEL_IOC, 50_000_000));
    for c in [&mut maker, &mut maker2] {
        let ServerMsg::Filled { order_id, left: 0, .. } = c.next() else { panic!() };
        assert_eq!(order_id, a1);
    }

    // Self-trade prevention by option: maker2's bid meets maker's own ask a2, which is cancelled
    // (why 5, to both sessions); the bid rests.
    let cancel_maker = LimitOptions { self_trade: 3, ..plain };
    let b = maker2.rest(limit(10, 2, cancel_maker, 20_000_000, 50_000_000));
    for c in [&mut maker, &mut maker2] {
        let ServerMsg::Cancelled { order_id, client_id, why, left, .. } = c.next() else { panic!() };
        assert_eq!((order_id, client_id, why, left), (a2, 2, binary::CANCEL_SELF_TRADE, 100_000_000));
    }
    // By the key's default (cancel the new order): an ask meeting maker2's bid b is cancelled.
    maker.send(limit(11, 1, plain, 20_000_000, 10_000_000));
    let ServerMsg::Accepted { order_id: a3, .. } = maker.next() else { panic!() };
    let ServerMsg::Cancelled { order_id, why, left, .. } = maker.next() else { panic!() };
    assert_eq!((order_id, why, left), (a3, binary::CANCEL_SELF_TRADE, 10_000_000));
    let a4 = maker.rest(limit(12, 1, plain, 30_000_000, 10_000_000));

    // Mass cancel: maker's two open orders in BTCBCH (b from the other session, and a4), then none.
    maker.send(ClientMsg::MassCancel { market: btcbch, side: 0 });
    let ServerMsg::MassCancelled { count: 2, market, side: 0, .. } = maker.next() else { panic!() };
    assert_eq!(market, btcbch);
    maker.send(ClientMsg::MassCancel { market: [0; 16], side: 0 });
    let ServerMsg::MassCancelled { count: 0, .. } = maker.next() else { panic!() };
    let pending = rpc.call("order.pending", json!([MAKER, "BTCBCH", 0, 10]))["result"].clone();
    assert_eq!(pending["total"], 0, "{pending} ({b}, {a4} cancelled)");

    // Amend: smaller at the same price keeps its place ahead of the taker's bid; larger loses it.
    let mine = maker.rest(limit(13, 2, plain, 5_000_000, 100_000_000));
    let theirs = taker.rest(limit(14, 2, plain, 5_000_000, 100_000_000));
    let bids = |rpc: &mut Conn| -> Vec<u64> {
        let r = rpc.call("order.book", json!(["BTCBCH", 2, 0, 10]))["result"].clone();
        r["orders"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect()
    };
    maker.send(ClientMsg::Amend { market: btcbch, order_id: mine, price: 0, left: 40_000_000 });
    let ServerMsg::Amended { order_id, old_order_id, client_id, price, left, .. } = maker.next() else { panic!() };
    assert_eq!((order_id, old_order_id, client_id, price, left), (mine, mine, 13, 5_000_000, 40_000_000));
    assert_eq!(bids(&mut rpc), [mine, theirs]);
    maker.send(ClientMsg::Amend { market: btcbch, order_id: mine, price: 0, left: 60_000_000 });
    let ServerMsg::Amended { order_id: replaced, old_order_id, client_id: 13, left: 60_000_000, .. } = maker.next()
    else {
        panic!()
    };
    assert!(replaced > theirs && old_order_id == mine);
    assert_eq!(bids(&mut rpc), [theirs, replaced]);
    // The client order id follows the order; an amend that would trade, or names nothing, is refused.
    maker.send(ClientMsg::CancelByClientId { market: btcbch, client_id: 13 });
    let ServerMsg::Cancelled { order_id, .. } = maker.next() else { panic!() };
    assert_eq!(order_id, replaced);
    let ask = taker.rest(limit(15, 1, plain, 30_000_000, 10_000_000));
    taker.send(ClientMsg::Amend { market: btcbch, order_id: theirs, price: 30_000_000, left: 0 });
    let ServerMsg::Rejected { reason: r, order_id, request_type, .. } = taker.next() else { panic!() };
    assert_eq!((r, order_id, request_type), (reason::WOULD_TAKE, theirs, client_type::AMEND));
    taker.send(ClientMsg::Amend { market: btcbch, order_id: ask, price: 0, left: 0 });
    let ServerMsg::Rejected { reason: r, .. } = taker.next() else { panic!() };
    assert_eq!(r, reason::BAD_NUMBER);
}

/// The ids of `user`'s open orders in BTCBCH, as `order.pending` lists them.
fn pending(rpc: &mut Conn, user: u32) -> Vec<u64> {
    let r = rpc.call("order.pending", json!([user, "BTCBCH", 0, 100]))["result"].clone();
    r["records"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect()
}

/// PROTOCOL.md "Cancel on disconnect": a session's resting orders are cancelled when its socket
/// goes, when it stays quiet past its key's heartbeat timeout (the dead-man timer), and, for
/// sessions of an earlier run, when the server starts again; the user's other sessions keep
/// theirs, and a key with `cancel_on_disconnect = false` keeps its orders.
fn binary_sessions_orders_are_cancelled_when_they_end_or_go_quiet(at: Arrangement) {
    let tweak = |cfg: &mut TcpConfig| {
        cfg.keys[1].cancel_on_disconnect = false;
        cfg.keys[0].heartbeat_timeout = Some(Duration::from_millis(2_500));
        let spec = Spec::new(&embedded()).unwrap();
        let mut copy = ApiKey::new(&spec, "maker-copy", SECRET, MAKER, "0.002", "0.001", "").unwrap();
        copy.drop_copy = true;
        cfg.keys.push(copy);
    };
    let server = Server::start(at, tweak);
    fund(&server);
    let mut rpc = server.connect();
    rpc.call("balance.update", json!([TAKER, "BTC", "deposit", 2, "10", {}]));
    let btcbch = market_bytes("BTCBCH");
    let ask = |client_id, price| ClientMsg::NewLimit {
        client_id,
        market: btcbch,
        side: 1,
        options: LimitOptions::PLAIN,
        price,
        amount: 100_000_000,
    };
    let (mut maker, mut maker2, mut taker, mut copy) =
        (server.connect(), server.connect(), server.connect(), server.connect());
    for (c, key) in [(&mut maker, "maker"), (&mut maker2, "maker"), (&mut taker, "taker"), (&mut copy, "maker-copy")] {
        c.login(key, SECRET);
    }
    maker.rest(ask(1, 30_000_000));
    maker.rest(ask(2, 40_000_000));
    let kept = maker2.rest(ask(3, 50_000_000));
    let theirs = taker.rest(ask(4, 60_000_000));
    // The taker's session ends first (its key keeps orders), then the maker's socket goes: once
    // the maker's two are gone, the taker's end has been handled too.
    drop(taker);
    drop(maker);
    wait_until("the ended session's orders to be cancelled", Duration::from_secs(10), || {
        pending(&mut rpc, MAKER) == [kept]
    });
    assert_eq!(pending(&mut rpc, TAKER), [theirs], "a key without cancel on disconnect keeps its orders");
    // The drop copy hears of it: its copies of the three ACCEPTED, then the count.
    let counted = loop {
        if let ServerMsg::MassCancelled { count, market, side, .. } = copy.next() {
            break (count, market, side);
        }
    };
    assert_eq!(counted, (2, [0; 16], 0));

    // The dead-man timer (2.5 s for this key): maker2 answers each of the server's heartbeats
    // (one after each second it sends nothing) with its own, so it is never quiet that long;
    // three server heartbeats on, past the timer, its order still rests. Then it goes quiet and
    // is closed with its order cancelled.
    for _ in 0..3 {
        maker2.send(ClientMsg::Heartbeat);
        let ServerMsg::Heartbeat { .. } = maker2.next_with_heartbeats() else { panic!("a report, not a heartbeat") };
    }
    assert_eq!(pending(&mut rpc, MAKER), [kept], "a session that heartbeats keeps its orders");
    wait_until("the quiet session's orders to be cancelled", Duration::from_secs(10), || {
        pending(&mut rpc, MAKER).is_empty()
    });
    assert!(maker2.closed(), "the quiet session is closed");

    // Orders of sessions that were open when the server stopped are cancelled as it starts.
    let mut maker3 = server.connect();
    maker3.login("maker", SECRET);
    let orphan = maker3.rest(ask(5, 70_000_000));
    assert_eq!(pending(&mut rpc, MAKER), [orphan]);
    drop(rpc);
    let server = server.restart(at, tweak);
    let mut rpc = server.connect();
    wait_until("orders of the earlier run's sessions to be cancelled", Duration::from_secs(10), || {
        pending(&mut rpc, MAKER).is_empty()
    });
    assert_eq!(pending(&mut rpc, TAKER), [theirs]);
    drop(maker3);
}

/// PROTOCOL.md "Throttles": a key's sessions together may send `rate_max` messages a second;
/// past it each is REJECTED with reason 34 and does nothing, and past `rate_logout` the session
/// is closed. Ten orders at once against 5 and 8: five rest, three are throttled, then the
/// session is closed (the taker's key keeps its orders as it ends).
fn binary_throttles_reject_past_rate_max_and_close_past_rate_logout(at: Arrangement) {
    let server = Server::start(at, |cfg| {
        cfg.keys[1].cancel_on_disconnect = false;
        (cfg.keys[1].rate_max, cfg.keys[1].rate_logout) = (5, 8);
    });
    fund(&server);
    let mut rpc = server.connect();
    rpc.call("balance.update", json!([TAKER, "BTC", "deposit", 2, "10", {}]));
    let mut taker = server.connect();
    taker.login("taker", SECRET);
    for client_id in 1..=10 {
        taker.session.queue(&small_ask(client_id)).unwrap();
    }
    taker.session.flush().unwrap();
    let mut throttled = Vec::new();
    loop {
        match taker.session.next_message() {
            Ok(ServerMsg::Rejected { client_id, reason: r, .. }) => {
                assert_eq!(r, reason::THROTTLED);
                throttled.push(client_id);
            }
            Ok(_) => {}
            Err(Error::Closed) => break,
            Err(e) => panic!("waiting for the session to close: {e}"),
        }
    }
    assert_eq!(throttled, [6, 7, 8], "past rate_max rejected, then the session closed");
    wait_until("the five orders within the rate to rest", Duration::from_secs(10), || {
        pending(&mut rpc, TAKER).len() == 5
    });
}

/// PROTOCOL.md "Sessions": a binary session that does not read is closed alone once its unsent
/// reports pass the write bound (4 MiB); another session is served meanwhile. 300,000
/// ORDER_STATUS requests (10.8 MB, changing nothing) ask for 36 MB of ORDER_STATE, far past the
/// bound and the kernel's buffers.
#[test]
fn a_binary_session_that_does_not_read_is_closed_alone() {
    const ASKED: usize = 300_000;
    // The other session waits quietly through all of it (a debug build takes seconds).
    let server =
        Server::start(Arrangement::OwnThread, |cfg| cfg.keys[0].heartbeat_timeout = Some(Duration::from_secs(120)));
    fund(&server);
    let (mut slow, mut other) = (server.connect(), server.connect());
    slow.login("taker", SECRET);
    other.login("maker", SECRET);
    let mut burst = Vec::new();
    for order_id in 1..=ASKED as u64 {
        encode_client(&ClientMsg::OrderStatus { market: market_bytes("BTCBCH"), order_id, client_id: 0 }, &mut burst);
    }
    let mut writer = slow.s().try_clone().unwrap();
    let burst = std::thread::spawn(move || {
        let _ = writer.write_all(&burst);
    });
    other.send(small_ask(1));
    let ServerMsg::Accepted { client_id: 1, order_id, .. } = other.next() else { panic!("no ACCEPTED") };
    burst.join().unwrap();
    // What the kernel and the server had taken before the close, then the end.
    slow.s().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut states = 0;
    let end = loop {
        match slow.session.next_message() {
            Ok(ServerMsg::OrderState { .. }) => states += 1,
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, Error::Closed) || matches!(&end, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{end}"
    );
    assert!(states < ASKED, "closed before all {ASKED} were answered ({states} read)");
    other.send(ClientMsg::Cancel { market: market_bytes("BTCBCH"), order_id });
    assert!(
        matches!(other.next(), ServerMsg::Cancelled { order_id: o, .. } if o == order_id),
        "the other session goes on"
    );
}

/// PROTOCOL.md "Client order ids": a key's `client_ids_max` bounds its own user's ids only. Past
/// it the user's oldest id takes a new order again, while another user's id, older still,
/// refuses a resend.
#[test]
fn a_keys_client_id_window_bounds_its_users_ids_only() {
    let server = Server::start(Arrangement::OwnThread, |cfg| {
        cfg.keys[1].trader.id_window = IdWindow { max: 3, seconds: 86_400 };
    });
    fund(&server);
    let mut rpc = server.connect();
    rpc.call("balance.update", json!([TAKER, "BTC", "deposit", 2, "10", {}]));
    let (mut maker, mut taker) = (server.connect(), server.connect());
    maker.login("maker", SECRET);
    taker.login("taker", SECRET);
    maker.send(small_ask(1));
    let ServerMsg::Accepted { order_id: kept, .. } = maker.next() else { panic!("the maker's order was not accepted") };
    for client_id in 1..=4 {
        taker.send(small_ask(client_id));
        assert!(matches!(taker.next(), ServerMsg::Accepted { client_id: c, .. } if c == client_id));
    }
    taker.send(small_ask(4));
    assert!(matches!(taker.next(), ServerMsg::Rejected { client_id: 4, reason: reason::DUPLICATE_CLIENT_ID, .. }));
    taker.send(small_ask(1));
    assert!(
        matches!(taker.next(), ServerMsg::Accepted { client_id: 1, .. }),
        "the taker's fourth id pushed out its first"
    );
    maker.send(small_ask(1));
    assert!(matches!(
        maker.next(),
        ServerMsg::Rejected { client_id: 1, order_id, reason: reason::DUPLICATE_CLIENT_ID, .. } if order_id == kept
    ));
}

/// PROTOCOL.md "Replay": a resumable session gathers what it would have been sent while it has
/// no connection (a maker fill, the count of its orders cancelled on disconnect), and a
/// LOGIN_REPLAY from any sequence still kept gets exactly the reports from there, then the live
/// stream, with no gap and no duplicate; a sequence no longer kept, or not yet sent, an unknown
/// session or one still logged in are refused.
fn binary_resumed_sessions_replay_exactly_the_reports_they_missed(at: Arrangement) {
    let server = Server::start(at, |cfg| {
        cfg.keys[1].cancel_on_disconnect = false;
        cfg.replay_max = 3;
    });
    fund(&server);
    let mut rpc = server.connect();
    rpc.call("balance.update", json!([TAKER, "BTC", "deposit", 2, "10", {}]));
    rpc.call("balance.update", json!([MAKER, "BCH", "deposit", 2, "10", {}]));
    let btcbch = market_bytes("BTCBCH");
    let limit = |client_id, side, amount| ClientMsg::NewLimit {
        client_id,
        market: btcbch,
        side,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount,
    };
    // A new resumable session: its first report is sequence 1.
    let mut taker = server.connect();
    let Login { session, last_seq: 0, user: TAKER, .. } = taker.login_replay("taker", SECRET, 0, 1) else {
        panic!("a new session has sent nothing")
    };
    taker.send(limit(1, 1, 100_000_000));
    let ServerMsg::Accepted { seq: 1, order_id: ask, .. } = taker.next() else { panic!() };
    drop(taker);
    // While it has no connection, a maker buys 0.4 of its ask.
    let mut maker = server.connect();
    maker.login("maker", SECRET);
    maker.send(limit(2, 2, 40_000_000));
    let ServerMsg::Accepted { .. } = maker.next() else { panic!() };
    let ServerMsg::Filled { .. } = maker.next() else { panic!() };
    // Resumed from 1: its ACCEPTED again, then the fill it missed, then the live stream.
    let mut again = server.connect();
    assert_eq!(again.login_replay("taker", SECRET, session, 1).session, session);
    let ServerMsg::Accepted { seq: 1, order_id, .. } = again.next() else { panic!() };
    assert_eq!(order_id, ask);
    let ServerMsg::Filled { seq: 2, order_id, role, left, .. } = again.next() else { panic!() };
    assert_eq!((order_id, role, left), (ask, binary::ROLE_MAKER, 60_000_000));
    again.send(ClientMsg::Cancel { market: btcbch, order_id: ask });
    let ServerMsg::Cancelled { seq: 3, .. } = again.next() else { panic!() };
    // Resumed while logged in still (its client reconnects before the server saw the old
    // connection fail): the old connection is closed and the new one takes over. From 4 there is
    // nothing to replay; sequence 4 is the next live report.
    let mut third = server.connect();
    assert_eq!(third.login_replay("taker", SECRET, session, 4).last_seq, 3);
    assert!(again.closed(), "the connection it was on is closed");
    third.send(ClientMsg::Cancel { market: btcbch, order_id: ask });
    let ServerMsg::Rejected { seq: 4, reason: r, .. } = third.next() else { panic!() };
    assert_eq!(r, reason::ORDER_NOT_FOUND);
    drop(third);
    // It keeps its last 3 (`replay_max`): from 1 is gone, from 6 was never sent; from 2 is whole.
    for (key, id, from, want) in [
        ("taker", session, 1, reason::REPLAY_GAP),
        ("taker", session, 6, reason::REPLAY_GAP),
        ("taker", session + 1, 1, reason::UNKNOWN_SESSION),
        ("maker", session, 2, reason::UNKNOWN_SESSION), // another key's
    ] {
        let got = server.connect().try_login_replay(key, SECRET, id, from);
        assert!(matches!(got, Err(Error::LoginRejected(r)) if r == want), "{key} {id} from {from}: {got:?}");
    }
    let mut c = server.connect();
    assert_eq!(c.login_replay("taker", SECRET, session, 2).last_seq, 4);
    let seqs: Vec<Option<u64>> = (0..3).map(|_| c.next().seq()).collect();
    assert_eq!(seqs, [Some(2), Some(3), Some(4)]);

    // A resumable session of a key that cancels on disconnect finds the count in its stream.
    let mut mm = server.connect();
    let mm_session = mm.login_replay("maker", SECRET, 0, 1).session;
    mm.send(limit(3, 2, 10_000_000));
    let ServerMsg::Accepted { seq: 1, .. } = mm.next() else { panic!() };
    drop(mm);
    wait_until("the ended session's order to be cancelled", Duration::from_secs(10), || {
        pending(&mut rpc, MAKER).is_empty()
    });
    let mut mm = server.connect();
    mm.login_replay("maker", SECRET, mm_session, 2);
    let ServerMsg::MassCancelled { seq: 2, count: 1, .. } = mm.next() else { panic!() };
}

/// PROTOCOL.md "Order status": ORDER_STATUS by order id or client order id answers an open order
/// as it rests (from the engine), a finished one as it ended (what the edge kept while the user
/// had a session), and STATE_UNKNOWN for an order that is not open and whose end this edge did not
/// keep, or that is another user's; an id no order has, or a client id not in the window, is
/// REJECTED with reason 20 and the ids it carried.
fn binary_order_status_answers_open_finished_and_unknown_orders(at: Arrangement) {
    use viaduct_client::wire::{STATE_FINISHED, STATE_OPEN, STATE_UNKNOWN};
    let server = Server::start(at, |_| {});
    fund(&server);
    let market = market_bytes("BTCBCH");
    let status = |order_id, client_id| ClientMsg::OrderStatus { market, order_id, client_id };
    let (mut maker, mut taker) = (server.connect(), server.connect());
    maker.login("maker", SECRET);
    taker.login("taker", SECRET);
    // The maker offers 2 at 0.1; the taker buys 0.5 of it.
    let ask = maker.rest(ClientMsg::NewLimit {
        client_id: 1,
        market,
        side: 1,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 200_000_000,
    });
    let bid = taker.rest(ClientMsg::NewLimit {
        client_id: 2,
        market,
        side: 2,
        options: LimitOptions::PLAIN,
        price: 10_000_000,
        amount: 50_000_000,
    });
    let ServerMsg::Filled { .. } = taker.next() else { panic!() };
    let ServerMsg::Filled { .. } = maker.next() else { panic!() };
    // Open, by client order id: as it rests now.
    maker.send(status(0, 1));
    let ServerMsg::OrderState {
        state,
        order_id,
        client_id,
        side,
        kind,
        price,
        amount,
        left,
        deal_stock,
        deal_money,
        ..
    } = maker.next()
    else {
        panic!()
    };
    assert_eq!((state, order_id, client_id, side, kind), (STATE_OPEN, ask, 1, 1, 1));
    assert_eq!((price, amount, left, deal_stock), (10_000_000, 200_000_000, 150_000_000, 50_000_000));
    assert_eq!(deal_money, 500_000_000_000_000, "0.05 at stock.prec + money.prec");
    // Filled, by order id: as it ended, its fee in the stock it bought at fee_scale 12.
    taker.send(status(bid, 0));
    let ServerMsg::OrderState { state, left, deal_stock, deal_fee, fee_scale, .. } = taker.next() else { panic!() };
    assert_eq!((state, left, deal_stock, deal_fee, fee_scale), (STATE_FINISHED, 0, 50_000_000, 1_000_000_000, 12));
    // Another user's order is not told about, open or not.
    taker.send(status(ask, 0));
    let ServerMsg::OrderState { state, order_id, deal_stock, .. } = taker.next() else { panic!() };
    assert_eq!((state, order_id, deal_stock), (STATE_UNKNOWN, ask, 0));
    // Cancelled: as it ended.
    maker.send(ClientMsg::Cancel { market, order_id: ask });
    let ServerMsg::Cancelled { .. } = maker.next() else { panic!() };
    maker.send(status(ask, 0));
    let ServerMsg::OrderState { state, left, deal_stock, .. } = maker.next() else { panic!() };
    assert_eq!((state, left, deal_stock), (STATE_FINISHED, 150_000_000, 50_000_000));
    // Ids no order has: refused with the ids asked about.
    maker.send(status(ask + 1_000, 0));
    let ServerMsg::Rejected { reason: r, order_id, request_type, .. } = maker.next() else { panic!() };
    assert_eq!((r, order_id, request_type), (reason::ORDER_NOT_FOUND, ask + 1_000, client_type::ORDER_STATUS));
    maker.send(status(0, 99));
    let ServerMsg::Rejected { reason: r, client_id, .. } = maker.next() else { panic!() };
    assert_eq!((r, client_id), (reason::ORDER_NOT_FOUND, 99));
    // Once the user has no session left, what the edge kept of its orders goes with it.
    drop(maker);
    wait_until("the maker's session to end", Duration::from_secs(10), || {
        let mut again = server.connect();
        again.login("maker", SECRET);
        again.send(status(ask, 0));
        matches!(again.next(), ServerMsg::OrderState { state: STATE_UNKNOWN, .. })
    });
}

macro_rules! in_every_arrangement {
    ($($name:ident),* $(,)?) => {
        mod own_thread {
            $(#[test]
            fn $name() {
                super::$name(super::Arrangement::OwnThread)
            })*
        }
        mod on_matcher_thread_sleeping {
            $(#[test]
            fn $name() {
                super::$name(super::Arrangement::MatcherSleeping)
            })*
        }
        mod on_matcher_thread_backoff {
            $(#[test]
            fn $name() {
                super::$name(super::Arrangement::MatcherBackoff)
            })*
        }
    };
}

in_every_arrangement!(
    rpc_framing_answers_every_method_as_the_matcher_does,
    rpc_framing_heartbeats_ext_and_unknown_commands,
    rpc_framing_closes_on_bad_packets_without_harming_others,
    rpc_framing_slow_reader_is_bounded_and_others_proceed,
    rpc_framing_requests_past_the_pending_bound_are_all_answered,
    binary_login_refuses_unknown_keys_bad_signatures_and_early_orders,
    binary_orders_fill_resting_makers_and_cancel,
    binary_market_orders_report_an_unfilled_remainder,
    binary_bad_orders_are_rejected_and_the_session_goes_on,
    binary_sessions_get_heartbeats_and_silent_ones_are_closed,
    binary_drop_copy_sessions_get_every_report_of_their_user,
    binary_order_options_self_trade_prevention_mass_cancel_and_amend,
    binary_sessions_orders_are_cancelled_when_they_end_or_go_quiet,
    binary_throttles_reject_past_rate_max_and_close_past_rate_logout,
    binary_resumed_sessions_replay_exactly_the_reports_they_missed,
    binary_order_status_answers_open_finished_and_unknown_orders,
);
