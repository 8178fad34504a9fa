//! The HTTP JSON-RPC edge (SPEC B2.1): POST with a JSON-RPC body on any path, HTTP/1.1
//! keep-alive and pipelining, replies in request order per connection.
//!
//! - A request that is not a POST with a body, or whose body is not the JSON-RPC envelope, gets
//!   `400` with an empty body and the connection is closed.
//! - A method nobody serves gets `404` with error 4 `method not found`.
//! - A reply not ready within `reply_timeout` gets `504` with error 5 `service timeout`.
//! - Everything else gets `200` with the engine's reply, once the command is durable.
//! - Replies carry only `Date` and `Content-Length` headers.
//! - Bounds: `connections_max` (more are accepted and closed at once), `request_bytes_max` (a
//!   longer request gets `413` and is closed), `write_bytes_max` (a client that lets more replies
//!   pile up unread is disconnected), `idle_timeout` (a quiet connection is closed).
//!
//! Why one file of ~670 lines (and its tests): one event loop, whose parsing, routing, ordering of
//! replies per connection and timers work on the same connection table.

use std::collections::{HashSet, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::Poll;
use serde_json::Value;
use viaduct_matcher::book::{BlockIdHasher, IdMap};
use viaduct_matcher::RpcError;
use viaduct_protocol::{self as protocol, error_response, response_json, Routed};

use crate::net::{free_slot, run, want_writable, write_some, EdgeLoop, EdgeThread, Loop};
use crate::{Backend, Delivered, Notify};

const READ_CHUNK: usize = 16 * 1024;
const HEADERS_MAX: usize = 32;

/// The edge's bounds and address.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    pub connections_max: usize,
    /// Head and body of one request (ViaBTC's sample `max_pkg_size`: 102,400).
    pub request_bytes_max: usize,
    /// Reply bytes waiting for one slow reader before it is disconnected.
    pub write_bytes_max: usize,
    /// Requests one connection may have waiting for the engine; past it the connection is not
    /// read until replies drain, so one client cannot take the engine's whole capacity.
    pub pending_max: usize,
    /// A connection quiet this long is closed (ViaBTC `keep_alive`: 3,600 s).
    pub idle_timeout: Duration,
    /// A request must be whole this long after its first byte (or, for a new connection, after
    /// it opened), or the connection is closed: a client that trickles a head, or opens and sends
    /// nothing, holds a slot for seconds, not for the idle timeout.
    pub header_timeout: Duration,
    /// A reply not ready this long after its request is answered 504 (ViaBTC `timeout`: 1 s).
    pub reply_timeout: Duration,
    /// Its live counts, for the metrics.
    pub stats: Arc<crate::EdgeStats>,
}

impl HttpConfig {
    pub fn new(bind: SocketAddr) -> HttpConfig {
        HttpConfig {
            bind,
            connections_max: 10_000,
            request_bytes_max: 102_400,
            write_bytes_max: 4 * 1024 * 1024,
            pending_max: 64,
            idle_timeout: Duration::from_secs(3600),
            header_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(1),
            stats: Arc::default(),
        }
    }
}

/// A running HTTP edge; dropping it stops the event loop.
pub struct HttpEdge {
    thread: EdgeThread,
    slow_readers_closed: Arc<AtomicU64>,
}

impl HttpEdge {
    /// Binds `cfg.bind` and starts the event loop. `backend` is built here with the function the
    /// backend must call to wake the loop when replies are ready.
    pub fn start<B: Backend>(cfg: HttpConfig, backend: impl FnOnce(Notify) -> B) -> io::Result<HttpEdge> {
        let slow_readers_closed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&slow_readers_closed);
        let build = |l: Loop| Server {
            slow_readers_closed: counter,
            evicted: 0,
            cfg: cfg.clone(),
            poll: l.poll,
            listener: l.listener,
            backend: backend(l.notify),
            conns: Vec::new(),
            live: 0,
            waiting: IdMap::default(),
            expired: HashSet::new(),
            next_tag: 1,
            date: DateCache::default(),
        };
        let thread = EdgeThread::spawn("viaduct-http", cfg.bind, build, |mut s, stop| run(&mut s, stop))?;
        tracing::info!("http: listening on {}", thread.addr);
        Ok(HttpEdge { thread, slow_readers_closed })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.thread.addr
    }

    /// Connections closed so far because their unread replies passed `write_bytes_max`.
    pub fn slow_readers_closed(&self) -> u64 {
        self.slow_readers_closed.load(Ordering::Relaxed)
    }
}

/// One answer in a connection's reply order.
enum Slot {
    /// A status and its body; the head is written when it goes out.
    Ready(u16, String),
    /// A request with the engine: its tag, its JSON-RPC id (a 504 names it) and when it went.
    Waiting { tag: u64, id: i64, since: Instant },
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    order: VecDeque<Slot>,
    last_active: Instant,
    /// Close once everything queued is written (after a 400 or 413, or a request that asked
    /// for it: `Connection: close`, HTTP/1.0 without keep-alive).
    closing: bool,
    /// An HTTP/1.0 client that asked to keep the connection: told so in each reply.
    keep_alive_10: bool,
    /// Whether the poller is asked for writability too (only while replies wait to be written):
    /// it is told only when this changes, not at every flush.
    write_interest: bool,
    /// Held back at `pending_max`, with requests in `rbuf` or the socket: the replies or time-outs
    /// that make room read on ([`Server::read_on`]).
    paused: bool,
    /// Since when a request has been incomplete (from the opening for a new connection); `None`
    /// between whole requests. Bounded by `header_timeout`.
    head_since: Option<Instant>,
    /// Whole requests it has sent: a connection that has sent one is kept over one that has not
    /// when the edge is full.
    requests: u64,
}

struct Server<B> {
    cfg: HttpConfig,
    poll: Poll,
    listener: TcpListener,
    backend: B,
    conns: Vec<Option<Conn>>,
    live: usize,
    /// Tag of a request waiting for the engine → its connection slot. Tags are handed out in
    /// sequence: the block hasher keeps the live ones in a few cache lines, as the TCP edge's.
    waiting: IdMap<u64, usize, BlockIdHasher>,
    /// Tags answered 504: their late replies are dropped.
    expired: HashSet<u64>,
    next_tag: u64,
    date: DateCache,
    /// See [`HttpEdge::slow_readers_closed`].
    slow_readers_closed: Arc<AtomicU64>,
    /// Idle connections closed to make room at `connections_max`.
    evicted: u64,
}

/// What one parsed request asks of the connection.
enum Parsed {
    /// Need more bytes.
    Partial,
    /// A whole request of this many bytes; its answer has been queued.
    Done(usize),
    /// Answer this status with an empty body and close.
    Reject(u16),
}

impl<B: Backend> EdgeLoop for Server<B> {
    const NAME: &'static str = "http";

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// A free slot; at `connections_max`, the one a connection gives up for the newcomer
    /// ([`Server::evict`]).
    fn free_slot(&mut self) -> Option<usize> {
        if self.live < self.cfg.connections_max {
            return Some(free_slot(&mut self.conns));
        }
        self.evict()
    }

    fn opened(&mut self, index: usize, stream: TcpStream) {
        self.conns[index] = Some(Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            order: VecDeque::new(),
            last_active: Instant::now(),
            closing: false,
            keep_alive_10: false,
            write_interest: false,
            paused: false,
            head_since: Some(Instant::now()),
            requests: 0,
        });
        self.live += 1;
        self.cfg.stats.connections.store(self.live as u64, Ordering::Relaxed);
    }

    fn ready(&mut self, index: usize, readable: bool, writable: bool, _read_closed: bool) {
        self.on_ready(index, readable, writable);
    }

    fn take_replies(&mut self) {
        Server::take_replies(self);
    }

    fn tick(&mut self) {
        self.check_timeouts();
    }
}

impl<B: Backend> Server<B> {
    fn on_ready(&mut self, index: usize, readable: bool, writable: bool) {
        if self.conns.get(index).and_then(Option::as_ref).is_none() {
            return;
        }
        let alive = !readable || self.read(index);
        if alive && (readable || writable) {
            self.flush(index);
        }
    }

    /// Reads what is there and handles every whole request in it; false if the connection closed.
    fn read(&mut self, index: usize) -> bool {
        let limit = self.cfg.request_bytes_max;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let Some(c) = self.conns[index].as_mut() else { return false };
            if c.order.len() >= self.cfg.pending_max {
                // Back-pressure: leave the bytes in the socket until replies drain.
                c.paused = true;
                return true;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    self.close(index);
                    return false;
                }
                Ok(n) => {
                    c.last_active = Instant::now();
                    if c.closing {
                        continue; // a rejected connection's further bytes are ignored
                    }
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    self.handle_requests(index);
                    // Answering may have closed it (a rejected request, a dead peer).
                    let Some(c) = self.conns[index].as_mut() else { return false };
                    // Held back at `pending_max`, the buffer holds whole requests waiting their
                    // turn (a chunk's worth), not one request too long.
                    if !c.closing && !c.paused && c.rbuf.len() > limit {
                        self.reject(index, 413);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(index);
                    return false;
                }
            }
        }
    }

    /// Handles the whole requests at the front of the read buffer, then drops them from it.
    fn handle_requests(&mut self, index: usize) {
        let Some(c) = self.conns[index].as_mut() else { return };
        let rbuf = std::mem::take(&mut c.rbuf);
        let mut at = 0;
        loop {
            let Some(c) = self.conns[index].as_mut() else { return };
            if c.order.len() >= self.cfg.pending_max && !c.closing {
                c.paused = true; // read no further until replies drain: back-pressure
                break;
            }
            if c.closing || at == rbuf.len() {
                break;
            }
            match self.parse_one(index, &rbuf[at..]) {
                Parsed::Partial => break,
                Parsed::Done(n) => at += n,
                Parsed::Reject(status) => return self.reject(index, status),
            }
        }
        if let Some(c) = self.conns[index].as_mut() {
            c.rbuf = rbuf;
            c.rbuf.drain(..at);
            // An incomplete request left behind starts (or keeps) its clock; none stops it.
            c.head_since = match (c.rbuf.is_empty(), c.head_since) {
                (true, _) if c.requests > 0 => None,
                (true, since) => since,
                (false, Some(since)) if at == 0 => Some(since),
                (false, _) => Some(Instant::now()),
            };
        }
    }

    /// Parses one request at the start of `buf` and queues its answer.
    fn parse_one(&mut self, index: usize, buf: &[u8]) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Reject(400),
        };
        if req.method != Some("POST") {
            return Parsed::Reject(400);
        }
        let named = |name: &'static str| req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
        // A body framed two ways (RFC 9112 §6.3), or by lengths that disagree, is where a proxy
        // and this edge could split the stream differently (request smuggling): refused and
        // closed. Only Content-Length framing is taken.
        if named("transfer-encoding").next().is_some() || named("content-length").count() > 1 {
            return Parsed::Reject(400);
        }
        let length = named("content-length")
            .next()
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let Some(length) = length.filter(|&l| l > 0) else { return Parsed::Reject(400) };
        // HTTP/1.0 closes after the reply unless it asks to keep the connection; HTTP/1.1 keeps
        // it unless it asks to close.
        let asks = |token: &str| {
            named("connection").any(|h| {
                std::str::from_utf8(h.value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        let http10 = req.version == Some(0);
        let (close, keep_alive_10) =
            if http10 { (!asks("keep-alive"), asks("keep-alive")) } else { (asks("close"), false) };
        if head + length > self.cfg.request_bytes_max {
            return Parsed::Reject(413);
        }
        if buf.len() < head + length {
            return Parsed::Partial;
        }
        let body = &buf[head..head + length];
        match self.answer(body) {
            Answer::Now(status, json) => self.queue(index, Slot::Ready(status, json)),
            Answer::Later(tag, id) => {
                self.waiting.insert(tag, index);
                self.queue(index, Slot::Waiting { tag, id, since: Instant::now() });
            }
            Answer::Malformed => return Parsed::Reject(400),
        }
        if let Some(c) = self.conns[index].as_mut() {
            c.requests += 1;
            c.keep_alive_10 = keep_alive_10;
            // Answered, then closed: what follows on the connection is not read.
            c.closing |= close;
        }
        Parsed::Done(head + length)
    }

    fn answer(&mut self, body: &[u8]) -> Answer {
        let Ok(req) = serde_json::from_slice::<Envelope>(body) else { return Answer::Malformed };
        let (Some(Value::Number(id)), Some(Value::String(method)), Some(Value::Array(params))) =
            (req.id, req.method, req.params)
        else {
            return Answer::Malformed;
        };
        let Some(id) = id.as_i64() else { return Answer::Malformed };
        let method = method.as_str();
        let cmd = match protocol::route(self.backend.spec(), method, &params) {
            Ok(Routed::Command(cmd)) => cmd,
            Ok(Routed::Query(_)) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                return match self.backend.query(tag, id, method, params) {
                    Ok(()) => Answer::Later(tag, id),
                    Err(RpcError::MethodNotFound) => {
                        Answer::Now(404, error_response(Some(id), RpcError::MethodNotFound))
                    }
                    Err(e) => Answer::Now(200, error_response(Some(id), e)),
                };
            }
            Err(RpcError::MethodNotFound) => {
                return Answer::Now(404, error_response(Some(id), RpcError::MethodNotFound))
            }
            Err(e) => return Answer::Now(200, error_response(Some(id), e)),
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        match self.backend.submit(tag, id, cmd) {
            Ok(()) => Answer::Later(tag, id),
            Err(_) => Answer::Now(200, error_response(Some(id), RpcError::ServiceUnavailable)),
        }
    }

    fn queue(&mut self, index: usize, slot: Slot) {
        if let Some(c) = self.conns[index].as_mut() {
            c.order.push_back(slot);
        }
    }

    /// Answers `status` with an empty body, then closes once it is written.
    fn reject(&mut self, index: usize, status: u16) {
        let Some(c) = self.conns[index].as_mut() else { return };
        c.rbuf.clear();
        c.closing = true;
        c.order.push_back(Slot::Ready(status, String::new()));
        self.flush(index);
    }

    /// Hands every ready engine reply to its connection, encoding a command's outcome as JSON
    /// here, on the edge's thread.
    fn take_replies(&mut self) {
        let mut touched = Vec::new();
        let (expired, waiting, conns) = (&mut self.expired, &mut self.waiting, &mut self.conns);
        self.backend.receive(&mut |spec, delivered| {
            let tag = match delivered {
                Delivered::Outcome { tag, .. } | Delivered::Answer { tag, .. } => tag,
                Delivered::Deals { .. } | Delivered::Activity { .. } | Delivered::FillsLost => return,
            };
            if expired.remove(&tag) {
                return;
            }
            let Some(index) = waiting.remove(&tag) else { return };
            let Some(c) = conns.get_mut(index).and_then(Option::as_mut) else { return };
            let Some(slot) = c.order.iter_mut().find(|s| matches!(s, Slot::Waiting { tag: t, .. } if *t == tag)) else {
                return;
            };
            let json = match delivered {
                Delivered::Outcome { request_id, result, events, .. } => {
                    response_json(spec, request_id, result, events)
                }
                Delivered::Answer { json, .. } => json,
                Delivered::Deals { .. } | Delivered::Activity { .. } | Delivered::FillsLost => return,
            };
            *slot = Slot::Ready(200, json);
            touched.push(index);
        });
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            self.flush(index);
            self.read_on(index);
        }
    }

    /// Reads on where a connection stopped: the requests waiting in its buffer (held back by
    /// `pending_max`), then its socket. Replies call it for every connection they touched (under
    /// load, new requests are there already); time-outs only for one that was held back.
    fn read_on(&mut self, index: usize) {
        let Some(c) = self.conns[index].as_mut() else { return };
        c.paused = false;
        self.handle_requests(index);
        if self.conns[index].is_some() && self.read(index) {
            self.flush(index);
        }
    }

    /// Moves the ready prefix of the reply order into the write buffer and writes what it can.
    fn flush(&mut self, index: usize) {
        let write_max = self.cfg.write_bytes_max;
        let Some(c) = self.conns[index].as_mut() else { return };
        if let Some(Slot::Ready(..)) = c.order.front() {
            let date = self.date.now();
            while let Some(Slot::Ready(..)) = c.order.front() {
                if let Some(Slot::Ready(status, body)) = c.order.pop_front() {
                    let connection = match (c.closing && c.order.is_empty(), c.keep_alive_10) {
                        (true, _) => "Connection: close\r\n",
                        (false, true) => "Connection: keep-alive\r\n",
                        (false, false) => "",
                    };
                    response(&mut c.wbuf, date, status, connection, body.as_bytes());
                }
            }
        }
        if write_some(&mut c.stream, &mut c.wbuf).is_err() {
            self.close(index);
            return;
        }
        if c.wbuf.len() > write_max {
            tracing::info!("http: a client is not reading its replies ({} bytes waiting); disconnected", c.wbuf.len());
            self.slow_readers_closed.fetch_add(1, Ordering::Relaxed);
            self.close(index);
            return;
        }
        if c.wbuf.is_empty() && c.closing && c.order.is_empty() {
            self.close(index);
            return;
        }
        want_writable(&self.poll, &mut c.stream, index, &mut c.write_interest, &c.wbuf);
    }

    /// At `connections_max`, makes room for a new connection by closing one that waits for
    /// nothing: the oldest that has not sent a whole request yet, else the one idle longest.
    /// Connections with requests in flight or replies unwritten are kept; if every one has some,
    /// there is no room (the newcomer is closed at once).
    fn evict(&mut self) -> Option<usize> {
        let idle = |c: &Conn| c.order.is_empty() && c.wbuf.is_empty();
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| idle(c)).map(|c| (i, c)))
            .min_by_key(|(_, c)| (c.requests > 0, c.last_active))
            .map(|(i, _)| i)?;
        self.evicted += 1;
        if self.evicted.is_power_of_two() {
            tracing::info!(
                "http: at connections_max ({}): {} idle connections closed for newcomers so far",
                self.cfg.connections_max,
                self.evicted
            );
        }
        self.close(victim);
        Some(victim)
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        for index in 0..self.conns.len() {
            let Some(c) = self.conns[index].as_mut() else { continue };
            let mut expired_any = false;
            for slot in c.order.iter_mut() {
                if let Slot::Waiting { tag, id, since } = slot {
                    if now.duration_since(*since) >= self.cfg.reply_timeout {
                        self.expired.insert(*tag);
                        self.waiting.remove(tag);
                        *slot = Slot::Ready(504, error_response(Some(*id), RpcError::ServiceTimeout));
                        expired_any = true;
                    }
                }
            }
            let quiet = c.order.is_empty() && c.wbuf.is_empty();
            let idle = quiet && now.duration_since(c.last_active) >= self.cfg.idle_timeout;
            let slow_head = quiet
                && !c.paused
                && !c.closing
                && c.head_since.is_some_and(|t| now.duration_since(t) >= self.cfg.header_timeout);
            if idle || slow_head {
                self.close(index);
            } else if expired_any {
                self.flush(index);
                // The 504s made room: requests held back behind them are taken up.
                if self.conns[index].as_ref().is_some_and(|c| c.paused) {
                    self.read_on(index);
                }
            }
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut c) = self.conns[index].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            for slot in c.order {
                if let Slot::Waiting { tag, .. } = slot {
                    self.waiting.remove(&tag);
                    self.expired.insert(tag);
                }
            }
            self.live -= 1;
            self.cfg.stats.connections.store(self.live as u64, Ordering::Relaxed);
        }
    }
}

/// The members of a request body that matter. Read as a map would be (a repeated member's last
/// value counts, others are skipped), but without building one: the map's allocations were a
/// quarter of the edge's time at full load.
struct Envelope {
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Id,
            Method,
            Params,
            #[serde(other)]
            Other,
        }
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC request object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut e = Envelope { id: None, method: None, params: None };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Id => e.id = Some(map.next_value()?),
                        Key::Method => e.method = Some(map.next_value()?),
                        Key::Params => e.params = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(e)
            }
        }
        d.deserialize_map(Members)
    }
}

enum Answer {
    Now(u16, String),
    /// With the engine: the request's tag and JSON-RPC id.
    Later(u64, i64),
    Malformed,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Appends a whole HTTP/1.1 response to `out`: status line, `Date` and `Content-Length`, body.
/// A response's head and body; `connection` is a whole `Connection` header line, or empty.
fn response(out: &mut Vec<u8>, date: &str, status: u16, connection: &str, body: &[u8]) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nDate: {date}\r\n{connection}Content-Length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    out.extend_from_slice(body);
}

/// The `Date` header's text, formatted again only when the second changes.
#[derive(Default)]
struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope as the edge read it before: the whole body into a map, then its members.
    fn by_map(body: &str) -> Option<(i64, String, Vec<Value>)> {
        let Ok(Value::Object(req)) = serde_json::from_str::<Value>(body) else { return None };
        let id = req.get("id").filter(|v| v.is_i64())?.as_i64()?;
        Some((id, req.get("method")?.as_str()?.to_string(), req.get("params")?.as_array()?.clone()))
    }

    fn by_envelope(body: &str) -> Option<(i64, String, Vec<Value>)> {
        let e = serde_json::from_str::<Envelope>(body).ok()?;
        let (Some(Value::Number(id)), Some(Value::String(method)), Some(Value::Array(params))) =
            (e.id, e.method, e.params)
        else {
            return None;
        };
        Some((id.as_i64()?, method, params))
    }

    #[test]
    fn the_envelope_reads_a_body_as_its_map_did() {
        let bodies = [
            r#"{"id":1,"method":"asset.list","params":[]}"#,
            r#"{"params":[1,"a",{"x":[2]}],"method":"m","id":-9223372036854775808}"#,
            r#"{"id":1,"method":"m","params":[],"extra":{"deep":[1,2,{"a":null}]},"jsonrpc":"2.0"}"#,
            r#"{"\u0069d":7,"meth\u006fd":"m","params":[]}"#,
            r#"{"id":1,"id":2,"method":"a","method":"b","params":[1],"params":[2]}"#,
            r#"{"id":"1","id":3,"method":"m","params":[]}"#,
            r#"{"id":3,"id":"1","method":"m","params":[]}"#,
            r#"{"id":1.0,"method":"m","params":[]}"#,
            r#"{"id":9223372036854775808,"method":"m","params":[]}"#,
            r#"{"id":null,"method":"m","params":[]}"#,
            r#"{"id":1,"method":5,"params":[]}"#,
            r#"{"id":1,"method":"m","params":{}}"#,
            r#"{"id":1,"method":"m"}"#,
            r#"{"id":1,"method":"m","params":[]} x"#,
            r#"{"id":1,"method":"m","params":[],}"#,
            r#"{"id":1,"method":"m","params":[],"bad":"\x"}"#,
            r#"[1,"m",[]]"#,
            r#""id""#,
            "",
            "{",
            r#"{"ID":1,"method":"m","params":[]}"#,
            r#"{"id":1,"method":"\"q\"","params":["\u00e9"]}"#,
        ];
        for body in bodies {
            assert_eq!(by_envelope(body), by_map(body), "{body}");
        }
        assert!(by_envelope(bodies[3]).is_some() && by_envelope(bodies[5]).is_some());
        assert!(by_envelope(bodies[6]).is_none() && by_envelope(bodies[15]).is_none());
    }
}
