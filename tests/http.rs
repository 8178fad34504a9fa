//! The HTTP edge over real sockets (SPEC B2.1): status codes, keep-alive and pipelining, every
//! matcher method with the same replies as the matcher itself, and clients that misbehave.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

mod support;

use serde_json::{json, Value};
use support::strip_times;
use viaduct::engine::{EdgeBackend, Engine};
use viaduct::profile::Profile;
use viaduct_edges::http::{HttpConfig, HttpEdge};
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Events, Matcher, Spec};
use viaduct_protocol::{decode, response_json};

struct Server {
    http: Option<HttpEdge>,
    engine: Option<Engine>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(tweak: impl FnOnce(&mut HttpConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = Profile::load("default").unwrap();
        profile.ring.input_slots = 1024;
        profile.ring.output_slots = 1024;
        let spec = Spec::new(&embedded()).unwrap();
        let (engine, _) = Engine::start(dir.path(), spec, &profile, |_| {}).unwrap();
        let mut cfg = HttpConfig::new("127.0.0.1:0".parse().unwrap());
        tweak(&mut cfg);
        let http = HttpEdge::start(cfg, |notify| EdgeBackend::new(&engine, notify)).unwrap();
        Server { http: Some(http), engine: Some(engine), _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.http.as_ref().unwrap().local_addr()
    }

    fn connect(&self) -> Conn {
        let s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { s, buf: Vec::new() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.http.take()); // the edge's client goes first, then the engine drains
        if let Some(e) = self.engine.take() {
            e.shutdown();
        }
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn post(body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn request(method: &str, params: Value, id: i64) -> String {
    post(&json!({"id": id, "method": method, "params": params}).to_string())
}

impl Conn {
    fn send(&mut self, bytes: &str) {
        self.s.write_all(bytes.as_bytes()).unwrap();
    }

    /// Reads one response; `None` when the server closed the connection first.
    fn read(&mut self) -> Option<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = resp.parse(&self.buf) {
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                if self.buf.len() >= head + len {
                    let reply = Reply {
                        status: resp.code.unwrap(),
                        headers: resp.headers.iter().map(|h| h.name.to_string()).collect(),
                        body: self.buf[head..head + len].to_vec(),
                    };
                    self.buf.drain(..head + len);
                    return Some(reply);
                }
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(&request(method, params, 1));
        let r = self.read().expect("a reply");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// True once the server has closed the connection.
    fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(self.s.read(&mut chunk), Ok(0) | Err(_))
    }
}

#[test]
fn b2_1_status_codes_and_headers() {
    let server = Server::start(|_| {});
    let mut c = server.connect();
    c.send(&request("balance.update", json!([1, "BTC", "deposit", 1, "2", {}]), 7));
    let r = c.read().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers, ["Date", "Content-Length"]);
    assert_eq!(r.json(), json!({"error": null, "result": {"status": "success"}, "id": 7}));
    // The same connection goes on (keep-alive); an unknown method is 404 with error 4.
    c.send(&request("order.finished", json!([1, "BTCBCH", 0, 0, 0, 10, 0]), 8));
    let r = c.read().unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": {"code": 4, "message": "method not found"}, "result": null, "id": 8}));
    // Market data answers from its own thread.
    c.send(&request("market.last", json!(["BTCBCH"]), 10));
    let r = c.read().unwrap();
    assert_eq!((r.status, r.json()), (200, json!({"error": null, "result": "0", "id": 10})));
    // Bad params: 200 with error 1.
    c.send(&request("order.put_limit", json!([1, "BTCBCH", 3, "1", "1", "0", "0", ""]), 9));
    let r = c.read().unwrap();
    assert_eq!((r.status, r.json()["error"]["code"].as_i64()), (200, Some(1)));

    for bad in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        post("not json"),
        post(r#"{"id": "1", "method": "asset.list", "params": []}"#),
        post(r#"{"id": 1, "method": 5, "params": []}"#),
        post(r#"{"id": 1, "method": "asset.list", "params": {}}"#),
        post(r#"[1, 2]"#),
        "POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "garbage\r\n\r\n".to_string(),
    ] {
        let mut c = server.connect();
        c.send(&bad);
        let r = c.read().expect("a 400 before the close");
        assert_eq!((r.status, r.body.len()), (400, 0), "{bad:?}");
        assert!(c.closed(), "{bad:?} must close the connection");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(|_| {});
    let mut c = server.connect();
    let mut burst = String::new();
    burst.push_str(&request("balance.update", json!([5, "BCH", "deposit", 1, "100", {}]), 1));
    burst.push_str(&request("no.such", json!([]), 2));
    for i in 3..60 {
        burst.push_str(&request("order.put_limit", json!([5, "BTCBCH", 2, "1", "0.5", "0", "0", ""]), i));
    }
    burst.push_str(&request("order.pending", json!([5, "BTCBCH", 0, 100]), 60));
    c.send(&burst);
    for id in 1..=60 {
        let r = c.read().unwrap();
        assert_eq!(r.json()["id"], id);
    }
    let last = server.connect().call("order.pending", json!([5, "BTCBCH", 0, 100]));
    assert_eq!(last["result"]["total"], 57);
}

#[test]
fn every_method_answers_as_the_matcher_does() {
    let server = Server::start(|_| {});
    let mut c = server.connect();
    let spec = Spec::new(&embedded()).unwrap();
    let mut direct = Matcher::new(spec.clone());
    let mut events = Events::default();
    let script = support::every_method_script();
    for (i, (method, params)) in script.iter().enumerate() {
        let got = c.call(method, params.clone());
        support::check_by_hand(i, &got);
        events.clear();
        let outcome =
            decode(&spec, method, params.as_array().unwrap()).and_then(|cmd| direct.apply(1, &cmd, &mut events));
        let want: Value = serde_json::from_str(&response_json(&spec, 1, &outcome, &events)).unwrap();
        assert_eq!(strip_times(got), strip_times(want), "step {i}: {method} {params}");
    }
}

/// Replies without `ctime`/`mtime`, which carry each side's own clock.

#[test]
fn misbehaving_clients_do_not_harm_others() {
    let server = Server::start(|cfg| {
        cfg.request_bytes_max = 1024;
        cfg.write_bytes_max = 64 * 1024;
    });
    let mut good = server.connect();
    good.call("balance.update", json!([9, "BTC", "deposit", 1, "1", {}]));

    // Too big: 413 and closed, before the body is even sent.
    let mut big = server.connect();
    big.send("POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    let r = big.read().unwrap();
    assert_eq!((r.status, r.body.len()), (413, 0));
    assert!(big.closed());

    // A head that never ends, past the bound: 413.
    let mut endless = server.connect();
    endless.send(&format!("POST / HTTP/1.1\r\nX-Long: {}", "a".repeat(2000)));
    assert_eq!(endless.read().unwrap().status, 413);

    // Half a request, then gone: nothing changes.
    let mut half = server.connect();
    let full = request("balance.update", json!([9, "BTC", "deposit", 2, "5", {}]), 1);
    half.send(&full[..full.len() - 5]);
    drop(half);

    // A reader that does not read: disconnected once its replies pile up past the bound.
    let mut slow = server.connect();
    slow.s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let sent = 20_000;
    let burst: String = (0..sent).map(|i| request("market.list", json!([]), i)).collect();
    let _ = slow.s.write_all(burst.as_bytes());

    // Meanwhile the good connection is served, and the half request changed nothing.
    let b = good.call("balance.query", json!([9, "BTC"]));
    assert_eq!(b["result"]["BTC"]["available"], "1");
    // Read only once the edge has cut it off: a reader keeping up would never be.
    let http = server.http.as_ref().unwrap();
    support::wait_until("the slow reader's disconnection", Duration::from_secs(20), || http.slow_readers_closed() > 0);
    let mut received = 0;
    while slow.read().is_some() {
        received += 1;
    }
    assert!(received < sent, "the slow reader was served all {sent} replies instead of being cut off");
    let b = good.call("balance.query", json!([9, "BTC"]));
    assert_eq!(b["result"]["BTC"]["available"], "1");
}

/// A client that reads late, but within the write bound, gets every reply in order: the edge
/// waits for the socket to take more (writability) instead of dropping or stalling.
#[test]
fn a_late_reader_within_the_bound_gets_every_reply() {
    let server = Server::start(|cfg| cfg.write_bytes_max = 64 << 20);
    let mut late = server.connect();
    let sent = 20_000;
    let burst: String = (0..sent).map(|i| request("market.list", json!([]), i)).collect();
    let mut writer = late.s.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(burst.as_bytes()).unwrap());
    // Every request is taken while nobody reads, so their replies (some 7 MB) pile up past what
    // the sockets hold, in the edge's buffer.
    support::wait_until("the edge to take every request", Duration::from_secs(20), || sending.is_finished());
    for id in 0..sent {
        let r = late.read().expect("every reply arrives");
        assert_eq!((r.status, r.json()["id"].as_i64()), (200, Some(id)));
    }
    sending.join().unwrap();
    let mut other = server.connect();
    assert!(other.call("market.list", json!([]))["result"].is_array());
}
