//! The WebSocket edge against the real binary over real sockets, with `tungstenite` as the client:
//! the handshake and its checks, ping and close, the envelope rules, and the queries answered by
//! their owners from state made by real orders.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use support::{free_addr, http, wait_until, Running};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// A server with the WebSocket edge on a free port, with `extra` in `[edges.ws]`.
fn server(extra: &str) -> (Running, SocketAddr) {
    let ws = free_addr();
    let running = Running::start(&format!("[edges.ws]\nbind = \"{ws}\"\n{extra}\n"));
    wait_until("the WebSocket edge to listen", Duration::from_secs(30), || TcpStream::connect(ws).is_ok());
    (running, ws)
}

/// `running` with user 1 holding 10 BTC, user 2 1,000 BCH, and user 1's ask of 2 BTC at 100.
fn with_an_ask((running, addr): (Running, SocketAddr)) -> (Running, SocketAddr) {
    deposit(running.http, &[(1, "BTC", "10"), (2, "BCH", "1000")]);
    order(running.http, json!([1, "BTCBCH", 1, "2", "100", "0.001", "0.001", ""]));
    (running, addr)
}

fn connect_with(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Ws, Box<tungstenite::Error>> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(request, stream).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => Box::new(e),
        tungstenite::HandshakeError::Interrupted(_) => panic!("a blocking handshake was interrupted"),
    })
}

fn connect(addr: SocketAddr) -> Ws {
    connect_with(addr, &[]).expect("the handshake succeeds")
}

/// Sends one request and reads the next text message as JSON.
fn call<S: Read + Write>(ws: &mut WebSocket<S>, id: i64, method: &str, params: Value) -> Value {
    ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
    next_json(ws)
}

fn next_json<S: Read + Write>(ws: &mut WebSocket<S>) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("not a text message: {other:?}"),
        }
    }
}

/// What the server does after `ws` sent something it must close for: the close frame's code, or
/// `None` if the connection ended without one.
fn closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(Message::Text(t)) => panic!("a reply instead of a close: {t}"),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return None,
            Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return None,
            Err(tungstenite::Error::Protocol(_)) => return None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Places a limit order over HTTP; its reply's result.
fn order(h: SocketAddr, params: Value) -> Value {
    let r = http(h, "order.put_limit", params);
    assert!(r["error"].is_null(), "{r}");
    r["result"].clone()
}

/// Deposits each (user, asset, amount) over HTTP.
fn deposit(h: SocketAddr, deposits: &[(u32, &str, &str)]) {
    for (user, asset, amount) in deposits {
        let r = http(h, "balance.update", json!([user, asset, "deposit", 1, amount, {}]));
        assert_eq!(r["result"]["status"], "success", "{r}");
    }
}

#[test]
fn ping_time_and_unknown_methods() {
    let (_server, addr) = server("");
    let mut ws = connect(addr);
    assert_eq!(call(&mut ws, 1, "server.ping", json!([])), json!({"error": null, "result": "pong", "id": 1}));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let time = call(&mut ws, 2, "server.time", json!([]));
    assert!((time["result"].as_i64().unwrap() - now).abs() <= 5, "{time}");
    // SPEC A2: an unknown method is answered error 4 (ViaBTC stays silent).
    let unknown = call(&mut ws, 3, "no.such_method", json!([]));
    assert_eq!(unknown, json!({"error": {"code": 4, "message": "method not found"}, "result": null, "id": 3}));
    // A user's methods before authentication: error 6.
    for (id, method, params) in [(4, "asset.query", json!(["BTC"])), (5, "order.query", json!(["BTCBCH", 0, 10]))] {
        let r = call(&mut ws, id, method, params);
        assert_eq!(r["error"], json!({"code": 6, "message": "require authentication"}), "{method}: {r}");
    }
    // Binary frames carry the envelope too.
    ws.send(Message::binary(br#"{"id": 6, "method": "server.ping", "params": []}"#.to_vec())).unwrap();
    assert_eq!(next_json(&mut ws)["result"], "pong");
}

#[test]
fn queries_answer_as_their_owners_do_over_http() {
    let (server, addr) = with_an_ask(server(""));
    let h = server.http;
    let bid = http(h, "order.put_limit", json!([2, "BTCBCH", 2, "1", "100", "0.001", "0.001", ""]));
    assert_eq!(bid["result"]["deal_stock"], "1", "{bid}");
    let mut ws = connect(addr);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (i, (ws_method, http_method, params)) in [
        ("price.query", "market.last", json!(["BTCBCH"])),
        ("depth.query", "order.depth", json!(["BTCBCH", 10, "0"])),
        ("deals.query", "market.deals", json!(["BTCBCH", 10, 0])),
        ("today.query", "market.status_today", json!(["BTCBCH"])),
        ("state.query", "market.status", json!(["BTCBCH", 86400])),
        ("kline.query", "market.kline", json!(["BTCBCH", now - 7 * 86400, now, 3600])),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 10 + i as i64;
        let got = call(&mut ws, id, ws_method, params.clone());
        let mut want = http(h, http_method, params);
        want["id"] = json!(id);
        assert!(got["error"].is_null(), "{ws_method}: {got}");
        assert_eq!(got, want, "{ws_method}");
    }
    assert_eq!(call(&mut ws, 30, "price.query", json!(["BTCBCH"]))["result"], "100.00000000");
    // A market name longer than ViaBTC's buffer, and an unknown market: error 1.
    for params in [json!(["BTCBCHBTCBCHBTCBCH"]), json!(["NOSUCH"])] {
        let r = call(&mut ws, 31, "price.query", params);
        assert_eq!(r["error"]["code"], 1, "{r}");
    }
}

#[test]
fn what_is_not_the_envelope_closes_the_connection_and_spares_the_others() {
    let (_server, addr) = server("");
    let mut bystander = connect(addr);
    for bad in [
        "not json",
        r#"{"id": "7", "method": "server.ping", "params": []}"#,
        r#"{"id": 7, "params": []}"#,
        r#"{"id": 7, "method": "server.ping"}"#,
        r#"[1, 2, 3]"#,
    ] {
        let mut ws = connect(addr);
        ws.send(Message::text(bad)).unwrap();
        assert_eq!(closed(&mut ws), Some(CloseCode::Invalid), "{bad}");
        assert_eq!(call(&mut bystander, 1, "server.ping", json!([]))["result"], "pong", "after {bad}");
    }
    // A message over the size bound closes too.
    let mut ws = connect(addr);
    let big = format!(r#"{{"id": 1, "method": "server.ping", "params": ["{}"]}}"#, "x".repeat(70_000));
    let _ = ws.send(Message::text(big));
    assert_eq!(closed(&mut ws), Some(CloseCode::Size));
}

#[test]
fn ping_gets_pong_and_close_gets_close() {
    let (_server, addr) = server("");
    let mut ws = connect(addr);
    ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"hi"),
        other => panic!("{other:?}"),
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_handshake_checks_protocol_and_origin() {
    let (_server, addr) = server("protocol = \"chat\"\norigin = \"example.com\"");
    let ok = [("Origin", "https://www.example.com"), ("Sec-WebSocket-Protocol", "chat")];
    let mut ws = connect_with(addr, &ok).expect("a good origin and protocol");
    assert_eq!(call(&mut ws, 1, "server.ping", json!([]))["result"], "pong");
    // No subprotocol named: nothing to check.
    connect_with(addr, &[("Origin", "https://example.com")]).expect("no subprotocol named");
    for headers in [
        vec![("Origin", "https://example.org"), ("Sec-WebSocket-Protocol", "chat")],
        vec![("Sec-WebSocket-Protocol", "chat")],
        vec![("Origin", "https://example.com"), ("Sec-WebSocket-Protocol", "other")],
    ] {
        match connect_with(addr, &headers) {
            Err(e) => match *e {
                tungstenite::Error::Http(r) => assert!(r.status().is_client_error(), "{headers:?}: {}", r.status()),
                e => panic!("{headers:?}: {e}"),
            },
            Ok(_) => panic!("{headers:?} was accepted"),
        }
    }
}

#[test]
fn a_client_that_does_not_read_is_closed_and_others_keep_being_answered() {
    let (_server, addr) = server("");
    let mut reader = connect(addr);
    // A client that sends requests and never reads: its replies pile up past the bound.
    let mut slow = TcpStream::connect(addr).unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        slow,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut frame = Vec::new();
    let payload = br#"{"id": 1, "method": "server.ping", "params": []}"#;
    // One masked text frame (mask 0: the payload as is).
    frame.extend_from_slice(&[0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    slow.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0u64;
    let mut gone = false;
    for _ in 0..2_000_000 {
        if slow.write_all(&frame).is_err() {
            gone = true;
            break;
        }
        sent += 1;
        if sent.is_multiple_of(10_000) {
            assert_eq!(call(&mut reader, 2, "server.ping", json!([]))["result"], "pong");
        }
    }
    assert!(gone, "a client that never read was still served after {sent} requests");
    assert_eq!(call(&mut reader, 3, "server.ping", json!([]))["result"], "pong");
}

/// A stand-in for the operator's authentication service: answers each GET by its
/// `Authorization` header (and, for `/sign`, its query), as SPEC B3.3's service would. "slow"
/// is never answered: the connection is held until the caller gives up.
fn auth_service() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let token = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")))
                    .unwrap_or("")
                    .to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = match (path.as_str(), token.as_str()) {
                    (_, "slow") => {
                        let _ = s.read_to_end(&mut Vec::new());
                        return;
                    }
                    ("/sign?access_id=ak&tonce=123", "sig") => {
                        r#"{"code": 0, "message": "ok", "data": {"user_id": 3}}"#
                    }
                    ("/auth", "good-1") => r#"{"code": 0, "message": "ok", "data": {"user_id": 1}}"#,
                    ("/auth", "zero") => r#"{"code": 0, "message": "ok", "data": {"user_id": 0}}"#,
                    ("/auth", "garbage") => "<html>",
                    _ => r#"{"code": 7, "message": "token expired"}"#,
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

#[test]
fn auth_and_sign_bind_a_user_through_the_service_and_its_methods_answer_for_that_user() {
    let service = auth_service();
    let auth =
        format!("\n[auth]\nurl = \"http://{service}/auth\"\nsign_url = \"http://{service}/sign\"\ntimeout_ms = 300\n");
    let (server, addr) = server(&auth);
    let h = server.http;
    for (user, amount) in [(1, "7"), (3, "9")] {
        let r = http(h, "balance.update", json!([user, "BTC", "deposit", 1, amount, {}]));
        assert_eq!(r["result"]["status"], "success", "{r}");
    }
    let put = http(h, "order.put_limit", json!([1, "BTCBCH", 1, "2", "100", "0.001", "0.001", "ws"]));
    assert!(put["error"].is_null(), "{put}");
    let mut ws = connect(addr);
    assert_eq!(call(&mut ws, 1, "asset.query", json!(["BTC"]))["error"]["code"], 6);
    for (id, params, code) in [
        (2, json!(["expired", "web"]), 11),
        (3, json!(["zero", "web"]), 2),
        (4, json!(["garbage", "web"]), 2),
        (5, json!(["slow", "web"]), 5),
        (6, json!([1, "web"]), 1),
        (7, json!(["good-1", "s".repeat(32)]), 1),
    ] {
        let r = call(&mut ws, id, "server.auth", params.clone());
        assert_eq!(r["error"]["code"], code, "{params}: {r}");
        assert_eq!(r["id"], id);
    }
    let expired = call(&mut ws, 8, "server.auth", json!(["expired", "web"]));
    assert_eq!(expired["error"], json!({"code": 11, "message": "token expired"}));
    assert_eq!(call(&mut ws, 9, "asset.query", json!(["BTC"]))["error"]["code"], 6, "still no user");
    // History has the deposit before the two ends are compared.
    wait_until("history to hold user 1's deposit", Duration::from_secs(30), || {
        let r = http(h, "balance.history", json!([1, "BTC", "", 0, 0, 0, 10]));
        r["result"]["records"].as_array().is_some_and(|rows| !rows.is_empty())
    });
    let ok = call(&mut ws, 10, "server.auth", json!(["good-1", "web"]));
    assert_eq!(ok, json!({"error": null, "result": {"status": "success"}, "id": 10}));
    for (id, (ws_method, ws_params, http_method, http_params)) in [
        ("asset.query", json!(["BTC"]), "balance.query", json!([1, "BTC"])),
        ("order.query", json!(["BTCBCH", 0, 10]), "order.pending", json!([1, "BTCBCH", 0, 10])),
        ("asset.history", json!(["BTC", "", 0, 0, 0, 10]), "balance.history", json!([1, "BTC", "", 0, 0, 0, 10])),
        ("order.history", json!(["BTCBCH", 0, 0, 0, 10, 0]), "order.finished", json!([1, "BTCBCH", 0, 0, 0, 10, 0])),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 20 + id as i64;
        let got = call(&mut ws, id, ws_method, ws_params);
        let mut want = http(h, http_method, http_params);
        want["id"] = json!(id);
        assert!(got["error"].is_null(), "{ws_method}: {got}");
        assert_eq!(got, want, "{ws_method}");
    }
    assert_eq!(call(&mut ws, 30, "order.query", json!(["BTCBCH", "0", 10]))["error"]["code"], 1);
    // server.sign binds another user; its `tonce` must be a non-zero integer.
    assert_eq!(call(&mut ws, 31, "server.sign", json!(["ak", "sig", 0]))["error"]["code"], 1);
    assert_eq!(call(&mut ws, 32, "server.sign", json!(["ak", "bad", 123]))["error"]["code"], 11);
    let signed = call(&mut ws, 33, "server.sign", json!(["ak", "sig", 123]));
    assert_eq!(signed["result"]["status"], "success", "{signed}");
    let mine = call(&mut ws, 34, "asset.query", json!(["BTC"]));
    assert_eq!(mine["result"]["BTC"]["available"], "9", "{mine}");
}

/// Reads messages until one is a push of `method`, passing over other pushes; its params.
fn next_push<S: Read + Write>(ws: &mut WebSocket<S>, method: &str) -> Value {
    loop {
        let msg = next_json(ws);
        if msg["method"] == method {
            assert_eq!(msg["id"], Value::Null, "{msg}");
            return msg["params"].clone();
        }
        assert!(msg["method"].is_string(), "a reply where a push of {method} was awaited: {msg}");
    }
}

/// Reads until the first push of each of `methods` and the replies (success) to each of `ids`
/// have come, in any order; the first params of each push seen, by method.
fn gather(ws: &mut Ws, methods: &[&str], ids: &[i64]) -> std::collections::HashMap<String, Value> {
    let mut got = std::collections::HashMap::new();
    let mut replies = Vec::new();
    while !methods.iter().all(|m| got.contains_key(*m)) || replies.len() < ids.len() {
        let msg = next_json(ws);
        match msg["method"].as_str() {
            Some(m) => {
                got.entry(m.to_string()).or_insert(msg["params"].clone());
            }
            None => {
                let id = msg["id"].as_i64().unwrap();
                assert!(ids.contains(&id), "an unexpected reply: {msg}");
                assert_eq!(msg, success(id));
                replies.push(id);
            }
        }
    }
    got
}

/// The next message that is not a push of one of `methods`.
fn next_other(ws: &mut Ws, methods: &[&str]) -> Value {
    loop {
        let msg = next_json(ws);
        if !methods.iter().any(|m| msg["method"] == *m) {
            return msg;
        }
    }
}

fn success(id: i64) -> Value {
    json!({"error": null, "result": {"status": "success"}, "id": id})
}

#[test]
fn market_feeds_push_what_they_have_on_subscribe_then_each_change() {
    let metrics = free_addr();
    let (server, addr) = with_an_ask(server(&format!("push_interval_ms = 20\n[metrics]\nbind = \"{metrics}\"")));
    let subscriptions = || support::metric(metrics, "viaduct_ws_subscriptions");
    let h = server.http;
    let mut ws = connect(addr);
    assert_eq!(call(&mut ws, 1, "depth.subscribe", json!(["BTCBCH", 10, "0"])), success(1));
    // The first poll's answer: the whole book.
    let book = next_push(&mut ws, "depth.update");
    assert_eq!(book[1], http(h, "order.depth", json!(["BTCBCH", 10, "0"]))["result"]);
    assert_eq!(book, json!([true, {"asks": [["100", "2"]], "bids": []}, "BTCBCH"]));
    // A second subscriber to the same feed has the book at once.
    let mut other = connect(addr);
    assert_eq!(call(&mut other, 1, "depth.subscribe", json!(["BTCBCH", 10, "0.0"])), success(1));
    let mut second = connect(addr);
    assert_eq!(call(&mut second, 1, "depth.subscribe", json!(["BTCBCH", 10, "0"])), success(1));
    assert_eq!(next_push(&mut second, "depth.update"), book);
    other
        .send(Message::text(json!({"id": 2, "method": "kline.subscribe", "params": ["BTCBCH", 60]}).to_string()))
        .unwrap();
    gather(&mut other, &[], &[2]);
    for (id, kind) in (2..).zip(["price", "deals", "today", "state"]) {
        let request = json!({"id": id, "method": format!("{kind}.subscribe"), "params": ["BTCBCH"]});
        ws.send(Message::text(request.to_string())).unwrap();
    }
    let got = gather(&mut ws, &["deals.update", "today.update", "state.update"], &[2, 3, 4, 5]);
    assert_eq!(got["deals.update"], json!(["BTCBCH", []]));
    assert_eq!(got["today.update"], json!(["BTCBCH", http(h, "market.status_today", json!(["BTCBCH"]))["result"]]));
    assert_eq!(got["state.update"], json!(["BTCBCH", http(h, "market.status", json!(["BTCBCH", 86400]))["result"]]));
    // The metrics count the subscriptions: five of `ws`, two of `other`, one of `second`, one of
    // `third` until it goes.
    assert_eq!(subscriptions(), Some(8));
    let mut third = connect(addr);
    assert_eq!(call(&mut third, 1, "price.subscribe", json!(["BTCBCH"])), success(1));
    assert_eq!(subscriptions(), Some(9));
    drop(third);
    wait_until("a closed connection's subscription to go", Duration::from_secs(10), || subscriptions() == Some(8));
    // A trade: 1 of the 2 at 100. Each feed pushes its change once.
    let bid = http(h, "order.put_limit", json!([2, "BTCBCH", 2, "1", "100", "0.001", "0.001", ""]));
    assert_eq!(bid["result"]["deal_stock"], "1", "{bid}");
    let all = ["depth.update", "price.update", "deals.update", "today.update", "state.update"];
    let got = gather(&mut ws, &all, &[]);
    assert_eq!(got["depth.update"], json!([false, {"asks": [["100", "1"]]}, "BTCBCH"]));
    assert_eq!(got["price.update"], json!(["BTCBCH", "100.00000000"]));
    let want = http(h, "market.deals", json!(["BTCBCH", 100, 0]))["result"].clone();
    assert_eq!(got["deals.update"], json!(["BTCBCH", want]));
    assert_eq!(want.as_array().unwrap().len(), 1, "{want}");
    assert_eq!(got["today.update"], json!(["BTCBCH", http(h, "market.status_today", json!(["BTCBCH"]))["result"]]));
    assert_eq!(got["state.update"], json!(["BTCBCH", http(h, "market.status", json!(["BTCBCH", 86400]))["result"]]));
    // The minute's kline, as market.kline gives it: [time, open, close, high, low, volume, deal, market].
    let klines = gather(&mut other, &["kline.update"], &[])["kline.update"].clone();
    let row = klines.as_array().and_then(|rows| rows.last()).expect("a row").clone();
    assert_eq!(
        row.as_array().unwrap()[1..],
        json!(["100", "100", "100", "100", "1", "100", "BTCBCH"]).as_array().unwrap()[..]
    );
    // The rest of the ask goes: the level is pushed as gone, and only the new deal.
    let bid = http(h, "order.put_limit", json!([2, "BTCBCH", 2, "1", "100", "0.001", "0.001", ""]));
    assert_eq!(bid["result"]["deal_stock"], "1", "{bid}");
    let got = gather(&mut ws, &["depth.update", "deals.update"], &[]);
    assert_eq!(got["depth.update"], json!([false, {"asks": [["100", "0"]]}, "BTCBCH"]));
    let newest = http(h, "market.deals", json!(["BTCBCH", 1, 0]))["result"].clone();
    assert_eq!(got["deals.update"], json!(["BTCBCH", newest]));
    // Unsubscribed, nothing more comes: the next message is the reply to a ping.
    let kinds = ["depth", "price", "deals", "today", "state"];
    for (id, kind) in (6..).zip(kinds) {
        ws.send(Message::text(json!({"id": id, "method": format!("{kind}.unsubscribe"), "params": []}).to_string()))
            .unwrap();
    }
    let pushes = kinds.map(|k| format!("{k}.update"));
    let pushes: Vec<&str> = pushes.iter().map(String::as_str).collect();
    for id in 6..11 {
        assert_eq!(next_other(&mut ws, &pushes), success(id));
    }
    order(h, json!([1, "BTCBCH", 1, "1", "101", "0.001", "0.001", ""]));
    // The other subscriber goes on receiving (past the changes it has not read yet).
    let diff = loop {
        let d = next_push(&mut second, "depth.update");
        if d[1]["asks"][0][0] == "101" {
            break d;
        }
    };
    assert_eq!(diff, json!([false, {"asks": [["101", "1"]]}, "BTCBCH"]));
    assert_eq!(call(&mut ws, 11, "server.ping", json!([]))["result"], "pong", "no push after unsubscribing");
    let _ = other;
}

#[test]
fn a_fan_out_wider_than_a_turn_reaches_every_subscriber_once_with_each_change() {
    let (server, addr) = with_an_ask(server("push_interval_ms = 20"));
    let h = server.http;
    // More subscribers than a turn of the edge writes pushes to (256), each on two feeds: every
    // push takes several turns, the two together.
    let mut all: Vec<Ws> = (0..300).map(|_| connect(addr)).collect();
    for ws in &mut all {
        for (id, method, params) in
            [(1, "depth.subscribe", json!(["BTCBCH", 10, "0"])), (2, "deals.subscribe", json!(["BTCBCH"]))]
        {
            ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
        }
        let got = gather(ws, &["depth.update", "deals.update"], &[1, 2]);
        assert_eq!(got["depth.update"], json!([true, {"asks": [["100", "2"]], "bids": []}, "BTCBCH"]));
        assert_eq!(got["deals.update"], json!(["BTCBCH", []]));
    }
    // A trade changes both feeds.
    let bid = http(h, "order.put_limit", json!([2, "BTCBCH", 2, "1", "100", "0.001", "0.001", ""]));
    assert_eq!(bid["result"]["deal_stock"], "1", "{bid}");
    let deals = http(h, "market.deals", json!(["BTCBCH", 100, 0]))["result"].clone();
    for (i, ws) in all.iter_mut().enumerate() {
        let mut got = std::collections::HashMap::new();
        for _ in 0..2 {
            let push = next_json(ws);
            let method = push["method"].as_str().unwrap_or_default().to_string();
            assert!(got.insert(method, push["params"].clone()).is_none(), "subscriber {i}: {push} twice");
        }
        assert_eq!(got["depth.update"], json!([false, {"asks": [["100", "1"]]}, "BTCBCH"]), "subscriber {i}");
        assert_eq!(got["deals.update"], json!(["BTCBCH", deals]), "subscriber {i}");
        // Each once: the next message is the reply to a ping.
        assert_eq!(call(ws, 3, "server.ping", json!([]))["result"], "pong", "subscriber {i}");
    }
}

#[test]
fn subscriptions_with_bad_params_are_refused_and_the_users_own_need_auth() {
    let (_server, addr) = server("depth_limit = [10]\ndepth_merge = [\"0\", \"0.1\"]");
    let mut ws = connect(addr);
    for (method, params) in [
        ("depth.subscribe", json!(["BTCBCH", 5, "0"])),
        ("depth.subscribe", json!(["BTCBCH", 10, "0.01"])),
        ("depth.subscribe", json!(["NOSUCH", 10, "0"])),
        ("depth.subscribe", json!(["BTCBCH", 10, 0])),
        ("price.subscribe", json!(["BTCBCH", "NOSUCH"])),
        ("deals.subscribe", json!([7])),
        ("kline.subscribe", json!(["BTCBCH", 0])),
        ("kline.subscribe", json!(["BTCBCH"])),
    ] {
        assert_eq!(call(&mut ws, 1, method, params.clone())["error"]["code"], 1, "{method} {params}");
    }
    assert_eq!(call(&mut ws, 2, "depth.subscribe", json!(["BTCBCH", 10, "0.10"])), success(2));
    assert_eq!(next_push(&mut ws, "depth.update"), json!([true, {"asks": [], "bids": []}, "BTCBCH"]));
    for method in ["order.subscribe", "asset.subscribe", "order.unsubscribe", "asset.unsubscribe"] {
        assert_eq!(call(&mut ws, 3, method, json!([]))["error"]["code"], 6, "{method}");
    }
    // An empty list subscribes to nothing; unsubscribing what was never subscribed is fine.
    assert_eq!(call(&mut ws, 4, "price.subscribe", json!([])), success(4));
    assert_eq!(call(&mut ws, 5, "kline.unsubscribe", json!([])), success(5));
}

#[test]
fn order_and_asset_updates_reach_only_their_users_subscribers() {
    let service = auth_service();
    let auth = format!(
        "push_interval_ms = 20\n[auth]\nurl = \"http://{service}/auth\"\nsign_url = \"http://{service}/sign\"\n"
    );
    let (server, addr) = server(&auth);
    let h = server.http;
    deposit(h, &[(1, "BTC", "10"), (3, "BCH", "1000")]);
    let mut one = connect(addr);
    // Sent without waiting: what follows server.auth is answered as the user it binds, in order.
    for (id, method, params) in [
        (1, "server.auth", json!(["good-1", "web"])),
        (2, "order.subscribe", json!(["BTCBCH"])),
        (3, "asset.subscribe", json!(["BTC", "BCH"])),
    ] {
        one.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
    }
    for id in 1..=3 {
        assert_eq!(next_json(&mut one), success(id));
    }
    let mut three = connect(addr);
    assert_eq!(call(&mut three, 1, "server.sign", json!(["ak", "sig", 123])), success(1));
    assert_eq!(call(&mut three, 2, "asset.subscribe", json!(["BCH"])), success(2));
    // User 1 sells 2 at 100: put, and BTC frozen.
    let ask = order(h, json!([1, "BTCBCH", 1, "2", "100", "0.001", "0.002", "web"]));
    assert_eq!(next_push(&mut one, "order.update"), json!([1, ask]));
    let assets = next_push(&mut one, "asset.update");
    let balances = http(h, "balance.query", json!([1, "BTC", "BCH"]))["result"].clone();
    assert_eq!(assets, json!([balances]));
    assert_eq!(assets[0]["BTC"], json!({"available": "8", "freeze": "2"}), "{assets}");
    // User 3 buys 2 at 100 from a client of its own: user 1's order finishes as maker.
    let bid = http(h, "order.put_limit", json!([3, "BTCBCH", 2, "2", "100", "0.001", "0.002", "api"]));
    assert_eq!(bid["result"]["deal_stock"], "2", "{bid}");
    let finished = next_push(&mut one, "order.update");
    assert_eq!(finished[0], 3);
    assert_eq!((finished[1]["id"].clone(), finished[1]["left"].clone()), (ask["id"].clone(), json!("0")));
    let assets = next_push(&mut one, "asset.update");
    assert_eq!(assets, json!([http(h, "balance.query", json!([1, "BTC", "BCH"]))["result"]]));
    // User 3 subscribed to its BCH alone and to no orders: one asset.update with BCH.
    let theirs = next_push(&mut three, "asset.update");
    assert_eq!(theirs, json!([{"BCH": http(h, "balance.query", json!([3, "BCH"]))["result"]["BCH"]}]));
    assert_eq!(call(&mut three, 3, "server.ping", json!([]))["result"], "pong", "no order.update for user 3");
    // Authenticated as another user, the old user's subscriptions are gone.
    assert_eq!(call(&mut one, 4, "server.sign", json!(["ak", "sig", 123])), success(4));
    let r = http(h, "balance.update", json!([1, "BTC", "deposit", 2, "1", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    let r = http(h, "balance.update", json!([3, "BCH", "deposit", 2, "1", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    assert_eq!(next_push(&mut three, "asset.update")[0]["BCH"]["available"], "801", "the deposit to user 3");
    assert_eq!(call(&mut one, 5, "server.ping", json!([]))["result"], "pong", "nothing of user 1's any more");
}

#[test]
fn with_a_certificate_and_key_the_edge_speaks_wss_only() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (server, addr) = server(&format!("tls_cert = {:?}\ntls_key = {:?}\npush_interval_ms = 20", cert, key));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let session = rustls::ClientConnection::new(std::sync::Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let stream = rustls::StreamOwned::new(session, tcp);
    let (mut ws, _) =
        tungstenite::client(format!("wss://localhost:{}/", addr.port()), stream).expect("a TLS handshake");
    assert_eq!(call(&mut ws, 1, "server.ping", json!([])), json!({"error": null, "result": "pong", "id": 1}));
    // Pushes go through TLS too.
    assert_eq!(call(&mut ws, 2, "depth.subscribe", json!(["BTCBCH", 10, "0"])), success(2));
    assert_eq!(next_push(&mut ws, "depth.update"), json!([true, {"asks": [], "bids": []}, "BTCBCH"]));
    let r = http(server.http, "balance.update", json!([1, "BTC", "deposit", 1, "5", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    order(server.http, json!([1, "BTCBCH", 1, "2", "100", "0.001", "0.001", ""]));
    assert_eq!(next_push(&mut ws, "depth.update"), json!([false, {"asks": [["100", "2"]]}, "BTCBCH"]));
    // A plain ws:// client gets no WebSocket from a TLS port.
    assert!(connect_with(addr, &[]).is_err(), "a plain handshake was answered");
}
