//! What one client must not be able to do to the others, against the real binary over real
//! sockets (loopback, bounded in count and time).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::Running;

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `within`.
fn until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).unwrap();
    let (mut got, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
    }
}

fn post(version: &str, extra_headers: &str, body: &str) -> String {
    format!("POST / HTTP/{version}\r\nHost: x\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// One response off `s`: status and body.
fn response(s: &mut TcpStream) -> (u16, String) {
    responses(s, 1).remove(0)
}

/// The next `n` responses off `s` (pipelined), each status and body.
fn responses(s: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = r.parse(&buf) {
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse().unwrap());
            if buf.len() >= head + len {
                out.push((r.code.unwrap(), String::from_utf8_lossy(&buf[head..head + len]).into_owned()));
                buf.drain(..head + len);
                if out.len() == n {
                    assert!(buf.is_empty(), "more than {n} responses");
                    return out;
                }
                continue;
            }
        }
        let n = s.read(&mut chunk).expect("a response");
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

const DEPOSIT: &str = r#"{"id": 1, "method": "balance.update", "params": [1, "BTC", "deposit", 1, "5", {}]}"#;
const QUERY: &str = r#"{"id": 2, "method": "balance.query", "params": [1, "BTC"]}"#;

/// A connection that sends fewer than the 4 bytes that tell the TCP edge's two framings apart is
/// held to the 5 s login timeout, not to the hour of idle time.
#[test]
fn a_tcp_trickle_under_four_bytes_is_closed_at_the_login_timeout() {
    let server = Running::start("");
    let mut trickle = TcpStream::connect(server.tcp).unwrap();
    trickle.write_all(b"\x14\x00\x01").unwrap();
    assert!(until_closed(&mut trickle, Duration::from_secs(30)).is_some(), "still open after 30 s");
}

/// A body framed both by Transfer-Encoding and Content-Length (or by two lengths) is refused
/// with 400 and the connection closed, and nothing in it is applied.
#[test]
fn a_request_framed_two_ways_is_refused_and_closed() {
    let server = Running::start("");
    for framing in ["Transfer-Encoding: chunked\r\n", "Content-Length: 3\r\n", "Transfer-Encoding: identity\r\n"] {
        let mut s = TcpStream::connect(server.http).unwrap();
        s.write_all(post("1.1", framing, DEPOSIT).as_bytes()).unwrap();
        let got = until_closed(&mut s, Duration::from_secs(10)).expect("closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400 "), "{framing:?}: {text}");
    }
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, 200);
    assert!(body.contains(r#""available":"0""#), "a refused deposit was applied: {body}");
}

/// HTTP/1.0 and `Connection: close` get their reply, then the connection is closed; HTTP/1.1
/// keeps it (and HTTP/1.0 with keep-alive).
#[test]
fn connections_are_closed_when_the_client_asks() {
    let server = Running::start("");
    for (version, headers) in
        [("1.0", ""), ("1.1", "Connection: close\r\n"), ("1.1", "Connection: Keep-Alive, close\r\n")]
    {
        let mut s = TcpStream::connect(server.http).unwrap();
        s.write_all(post(version, headers, QUERY).as_bytes()).unwrap();
        let got = until_closed(&mut s, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("HTTP/{version} {headers:?}: kept open"));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 ") && text.contains("Connection: close\r\n"), "{text}");
        assert!(text.contains(r#""available""#), "{text}");
    }
    for (version, headers) in [("1.1", ""), ("1.0", "Connection: keep-alive\r\n")] {
        let mut s = TcpStream::connect(server.http).unwrap();
        for _ in 0..2 {
            s.write_all(post(version, headers, QUERY).as_bytes()).unwrap();
            assert_eq!(response(&mut s).0, 200, "HTTP/{version} {headers:?}: the second request on the connection");
        }
    }
}

/// At the process's open-files limit, new clients are not left hanging in the accept backlog: the
/// edges' connection bounds are fitted below the limit, so a newcomer is taken (an idle
/// connection makes room for it) and served.
#[test]
fn clients_past_the_open_files_limit_are_served_not_left_hanging() {
    // This test's own connections: raise its soft limit to the hard one.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= 2_000, "the hard open-files limit {hard} is too low for this test");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let server = Running::start_with_files("", Some(1_200));
    // More silent connections than the process has descriptors.
    let held: Vec<TcpStream> = (0..1_300).map(|_| TcpStream::connect(server.http).unwrap()).collect();
    // A newcomer past all of them is answered (it hung in the backlog before).
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    assert_eq!(response(&mut s).0, 200);
    drop(held);
}

/// Idle connections up to the bound do not lock new clients out: at `connections_max` the edge
/// closes an idle connection (first one that never sent a whole request) for the newcomer; and a
/// connection that sends nothing whole is closed after the header timeout, not the idle hour.
#[test]
fn idle_connections_at_the_bound_make_room_for_new_clients() {
    let server = Running::start_with("connections_max = 40\nheader_timeout_s = 2", "", None);
    // A client that has sent a whole request, then idles.
    let mut known = TcpStream::connect(server.http).unwrap();
    known.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    assert_eq!(response(&mut known).0, 200);
    // The rest of the bound and more, opened and left silent.
    let mut silent: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(server.http).unwrap()).collect();
    // A newcomer is served.
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    assert_eq!(response(&mut s).0, 200, "a new client was locked out by idle connections");
    // The client that had sent a request kept its connection; the silent ones were the ones
    // closed, at the bound or at the header timeout.
    known.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    assert_eq!(response(&mut known).0, 200);
    for c in silent.iter_mut() {
        assert!(until_closed(c, Duration::from_secs(20)).is_some(), "a silent connection outlived the header timeout");
    }
    // A head trickled byte by byte, never finished, is closed at the header timeout as well.
    let mut trickle = TcpStream::connect(server.http).unwrap();
    trickle.write_all(b"POST / HTTP/1.1\r\nX-Slow: ").unwrap();
    assert!(until_closed(&mut trickle, Duration::from_secs(20)).is_some(), "a trickled head held its connection");
}

/// The TCP edge at its bound closes the oldest connection that has not logged in for a newcomer,
/// which is then answered (here: LOGIN_REJECT for an unknown key), not closed unanswered.
#[test]
fn the_tcp_edge_at_its_bound_makes_room_for_a_newcomer() {
    let server = Running::start("connections_max = 20");
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(server.tcp).unwrap()).collect();
    let mut newcomer = TcpStream::connect(server.tcp).unwrap();
    let mut hello = vec![20, 0, 0x01, 1];
    hello.extend_from_slice(b"nobody\0\0\0\0\0\0\0\0\0\0");
    newcomer.write_all(&hello).unwrap();
    let answer = until_closed(&mut newcomer, Duration::from_secs(10)).expect("answered and closed");
    assert_eq!(answer, [8, 0, 0x05, 1, 50, 0, 0, 0], "LOGIN_REJECT, unknown key");
    // The oldest silent connection made the room.
    assert!(until_closed(&mut silent[0], Duration::from_secs(10)).is_some());
}

/// One order that could sweep the whole book makes at most 10,000 deals and is answered within
/// the HTTP timeout; a client on another connection is answered meanwhile, the rest of the
/// book is there after, and the memory the sweep needed goes back to the system (about 100 MB at
/// its peak, kept for good before the allocator was told to return freed memory at once).
#[test]
fn one_order_sweeping_the_book_is_bounded_and_answered() {
    let server = Running::start("");
    let mut c = TcpStream::connect(server.http).unwrap();
    for (user, asset, amount) in [(1, "BTC", "100"), (2, "BCH", "1000")] {
        let body = format!(
            r#"{{"id": 1, "method": "balance.update", "params": [{user}, "{asset}", "deposit", 1, "{amount}", {{}}]}}"#
        );
        c.write_all(post("1.1", "", &body).as_bytes()).unwrap();
        assert_eq!(response(&mut c).0, 200);
    }
    let resting = 10_050;
    let ask = r#"{"id": 2, "method": "order.put_limit", "params": [1, "BTCBCH", 1, "0.001", "1", "0", "0", "r"]}"#;
    for chunk in 0..(resting / 50) {
        let burst: String = (0..50).map(|_| post("1.1", "", ask)).collect();
        c.write_all(burst.as_bytes()).unwrap();
        assert!(responses(&mut c, 50).iter().all(|r| r.0 == 200), "resting asks of chunk {chunk}");
    }
    let resident_kib = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().strip_suffix(" kB"));
        kib.unwrap().trim().parse::<u64>().unwrap()
    };
    let before = resident_kib();
    let sweep = r#"{"id": 3, "method": "order.put_market", "params": [2, "BTCBCH", 2, "100", "0", "s"]}"#;
    let mut sweeper = TcpStream::connect(server.http).unwrap();
    sweeper.write_all(post("1.1", "", sweep).as_bytes()).unwrap();
    let mut probe = TcpStream::connect(server.http).unwrap();
    probe.write_all(post("1.1", "", QUERY).as_bytes()).unwrap();
    assert_eq!(response(&mut probe).0, 200);
    let (status, body) = response(&mut sweeper);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""deal_stock":"10""#), "10,000 deals of 0.001: {body}");
    let book = r#"{"id": 4, "method": "order.book", "params": ["BTCBCH", 1, 0, 1]}"#;
    probe.write_all(post("1.1", "", book).as_bytes()).unwrap();
    let (_, body) = response(&mut probe);
    assert!(body.contains(r#""total":50"#), "the asks it did not reach: {body}");
    let within = 48 * 1024;
    let mut last = 0;
    // The deadline is generous: in a debug build beside the other tests, the history writer can
    // take seconds to write the sweep's 40,000 rows, and holds them until it has.
    let back = support::poll_until(Duration::from_secs(30), || {
        last = resident_kib();
        last < before + within
    });
    assert!(back, "the sweep's memory did not go back: {last} KiB resident, {before} KiB before it");
}
