//! The HTTP edge against stand-in backends: one that never answers (504 with error 5 after the
//! reply timeout, naming the request's id as ViaBTC's accesshttp does) and one that is always
//! full (error 3).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use viaduct_edges::http::{HttpConfig, HttpEdge};
use viaduct_edges::{Backend, Delivered};
use viaduct_matcher::{config::embedded, Command, Spec};

/// Takes every command and never replies; or, when `full`, takes none.
struct Stalled {
    spec: Spec,
    full: bool,
}

impl Backend for Stalled {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn submit(&mut self, _tag: u64, _request_id: i64, cmd: Command) -> Result<(), Command> {
        if self.full {
            Err(cmd)
        } else {
            Ok(())
        }
    }

    fn receive(&mut self, _: &mut dyn FnMut(&Spec, Delivered<'_>)) {}
}

fn exchange(full: bool) -> String {
    let mut cfg = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.reply_timeout = Duration::from_millis(200);
    let spec = Spec::new(&embedded()).unwrap();
    let edge = HttpEdge::start(cfg, move |_notify| Stalled { spec, full }).unwrap();
    let mut s = TcpStream::connect(edge.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"id": 42, "method": "balance.query", "params": [1]}"#;
    write!(s, "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !whole_response(&got) {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn a_reply_that_never_comes_is_answered_504_with_error_5() {
    let text = exchange(false);
    assert!(text.starts_with("HTTP/1.1 504 "), "{text}");
    assert!(text.contains(r#"{"error":{"code":5,"message":"service timeout"},"result":null,"id":42}"#), "{text}");
}

#[test]
fn a_full_engine_answers_error_3() {
    let text = exchange(true);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains(r#""error":{"code":3,"message":"service unavailable"},"result":null,"id":42"#), "{text}");
}

/// Whether `bytes` hold a whole response: the head and `Content-Length` bytes of body.
fn whole_response(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_end) = text.find("\r\n\r\n") else { return false };
    let length: usize = text[..head_end]
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + length
}

/// Requests held back at `pending_max` behind requests that time out are taken up once the 504s
/// make room, and time out in their turn: none is left unanswered in the edge's buffer.
#[test]
fn requests_held_back_behind_timed_out_ones_are_answered_too() {
    let mut cfg = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.reply_timeout = Duration::from_millis(100);
    cfg.pending_max = 2;
    let spec = Spec::new(&embedded()).unwrap();
    let edge = HttpEdge::start(cfg, move |_notify| Stalled { spec, full: false }).unwrap();
    let mut s = TcpStream::connect(edge.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut burst = String::new();
    for id in 0..5 {
        let body = format!(r#"{{"id": {id}, "method": "balance.query", "params": [1]}}"#);
        burst.push_str(&format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    }
    s.write_all(burst.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches("HTTP/1.1 504 ").count() < 5 || !whole_response(last(&got)) {
        let n = s.read(&mut chunk).expect("every held-back request is answered");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    assert_eq!(text.matches(r#"{"code":5,"message":"service timeout"}"#).count(), 5, "{text}");
    for id in 0..5 {
        assert!(text.contains(&format!(r#""result":null,"id":{id}}}"#)), "no 504 names {id}: {text}");
    }
}

/// The bytes from the last response's status line on.
fn last(bytes: &[u8]) -> &[u8] {
    let text = String::from_utf8_lossy(bytes);
    let at = text.rfind("HTTP/1.1 ").unwrap_or(0);
    &bytes[at..]
}

/// Takes every command and never replies; once `lost` is set, tells the edge that fills were
/// dropped (the edge fell behind the engine).
struct Losing {
    spec: Spec,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Backend for Losing {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn submit(&mut self, _tag: u64, _request_id: i64, _cmd: Command) -> Result<(), Command> {
        Ok(())
    }

    fn receive(&mut self, each: &mut dyn FnMut(&Spec, Delivered<'_>)) {
        if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
            each(&self.spec, Delivered::FillsLost);
        }
    }
}

/// PROTOCOL.md "Session": should the TCP edge fall so far behind the engine that fills of its
/// users were dropped, it closes every binary session (no stream of theirs can be trusted), and
/// a new login is served.
#[test]
fn the_tcp_edge_closes_every_binary_session_when_fills_were_lost() {
    use std::sync::{atomic::AtomicBool, Arc, Mutex};
    use viaduct_client::wire::{ClientMsg, ServerMsg};
    use viaduct_client::{Error, Session};
    use viaduct_edges::tcp::{ApiKey, TcpConfig, TcpEdge};
    const SECRET: &str = "a-secret-of-32-bytes-for-tests!!";
    let spec = Spec::new(&embedded()).unwrap();
    let mut key = ApiKey::new(&spec, "mm", SECRET, 7, "0.001", "0.001", "mm").unwrap();
    // Quiet sessions outlive the test's wait: only the lost fills can close them.
    key.heartbeat_timeout = Some(Duration::from_secs(60));
    let lost = Arc::new(AtomicBool::new(false));
    let notify: Arc<Mutex<Option<viaduct_edges::Notify>>> = Arc::default();
    let edge = TcpEdge::start(TcpConfig::new("127.0.0.1:0".parse().unwrap(), vec![key]), {
        let (lost, notify) = (lost.clone(), notify.clone());
        move |n| {
            *notify.lock().unwrap() = Some(n);
            Losing { spec, lost }
        }
    })
    .unwrap();
    let login = || {
        let mut s = Session::connect(edge.local_addr()).unwrap();
        s.stream().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.login("mm", SECRET.as_bytes()).unwrap();
        s
    };
    let mut sessions = [login(), login()];
    lost.store(true, std::sync::atomic::Ordering::SeqCst);
    (notify.lock().unwrap().as_ref().expect("the edge built its backend"))();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for s in &mut sessions {
        loop {
            match s.next_message() {
                Ok(ServerMsg::Heartbeat { .. }) if std::time::Instant::now() < deadline => {}
                Err(Error::Closed) => break,
                other => panic!("the session was not closed: {other:?}"),
            }
        }
    }
    let mut again = login();
    again.send(&ClientMsg::Heartbeat).unwrap();
}
