//! The WebSocket edge (ViaBTC's accessws, SPEC B3.1 and B3.2): RFC 6455 through `tungstenite`
//! over the edge's `mio` loop, on its own thread `viaduct-ws`.
//!
//! What it serves: the handshake with its `protocol` and `origin` checks; masked client frames,
//! text or binary, ping → pong, close → close; the JSON envelope (a message that is not one
//! closes the connection, SPEC B3.1); `server.ping`, `server.time`; the public queries and
//! subscriptions (`kline`, `depth`, `price`, `state`, `today`, `deals`) and, once `server.auth` or
//! `server.sign` (SPEC B3.3, through the operator's service, `auth.rs`) bound a user, the user's
//! (`order.*`, `asset.*`; error 6 before). Queries are answered by their owners through the
//! method table; any other method gets error 4 (SPEC A2). Pushes (SPEC B3.4): market feeds
//! polled once per `push_interval` for all their subscribers, the user's orders and balances from
//! the durable events of the commands that touched them (the engine sends this edge every command
//! touching a user it follows, [`Backend::follow`]).
//!
//! The files: this one, the event loop and its connections (handshake, reading, replies,
//! closing); `methods.rs`, what each method asks; `feeds.rs`, the subscriptions and the
//! fan-out; `push.rs`, what each push says; `tls.rs`, `wss://`. Why this one is ~600 lines: one
//! event loop, whose connection table, reading, writing and closing work on the same state and
//! read best together, as in `http.rs` and `tcp.rs`.
//!
//! Bounds: `connections_max` (more are accepted and closed at once), `message_bytes_max` (a
//! longer message closes the connection), `write_bytes_max` (a client that lets more replies pile
//! up unread is closed with 1008), `pending_max` requests in the engine per connection (past it
//! the connection is not read until replies make room), `handshake_timeout`, `keep_alive` (a
//! connection that sent nothing for that long is closed). Subscriptions are bounded by what
//! they name: each market or asset once, known ones only. If this edge falls so far behind that
//! the engine drops a followed user's events, every connection subscribed to orders or assets is
//! closed (1008) to re-query and resubscribe rather than go on with a silent gap.

mod feeds;
mod methods;
mod push;
mod tls;

pub use tls::server_config as tls_server_config;

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use serde_json::Value;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};
use viaduct_matcher::book::{BlockIdHasher, IdMap};
use viaduct_matcher::config::AssetId;
use viaduct_matcher::RpcError;
use viaduct_protocol::{self as protocol, error_response, response_json, Routed};

use crate::auth::{Ask, Auth, AuthConfig, Job, Refused};
use crate::net::{free_slot, run, EdgeLoop, EdgeThread, Loop, FIRST_CONN};
use crate::{Backend, Delivered, Notify};
use feeds::{user_pushes, Fanout, Own, OWN};
use methods::{ws_method, Route, Subscription};
use push::{Feed, FeedState, Mine};
use tls::Stream;

/// What a connection's messages may fill of its write buffer before they are written without
/// waiting for the end of the turn, which writes each connection's in one `write`.
const WRITE_COALESCE_BYTES: usize = 64 * 1024;

/// The WebSocket edge's bounds and checks (`[edges.ws]`).
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub bind: SocketAddr,
    pub connections_max: usize,
    /// The largest message a client may send; a longer one closes the connection.
    pub message_bytes_max: usize,
    /// Reply bytes a client may leave unread; past it the connection is closed (1008).
    pub write_bytes_max: usize,
    /// Requests in the engine per connection; past it the connection is not read.
    pub pending_max: usize,
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (ViaBTC `keep_alive`).
    pub keep_alive: Duration,
    /// A client that names subprotocols must name this one, which is echoed (ViaBTC `protocol`).
    pub protocol: String,
    /// When not empty, the `Origin` header must end with it (ViaBTC `origin`).
    pub origin: String,
    /// The authentication service (`[auth]`); without it `server.auth` answers error 2.
    pub auth: Option<AuthConfig>,
    /// How often market feeds are polled and their changes pushed (at most every 50 ms).
    pub push_interval: Duration,
    /// When set, connections speak TLS (`wss://`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The `limit`s a `depth.subscribe` may ask (ViaBTC `depth_limit`).
    pub depth_limits: Vec<u64>,
    /// The merge intervals a `depth.subscribe` may ask, compared as numbers (ViaBTC `depth_merge`).
    pub depth_merges: Vec<String>,
    /// Its live counts, for the metrics.
    pub stats: Arc<crate::EdgeStats>,
}

impl WsConfig {
    pub fn new(bind: SocketAddr) -> WsConfig {
        WsConfig {
            bind,
            connections_max: 10_000,
            message_bytes_max: 64 * 1024,
            write_bytes_max: 4 * 1024 * 1024,
            pending_max: 64,
            handshake_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3600),
            protocol: "chat".to_string(),
            origin: String::new(),
            auth: None,
            push_interval: Duration::from_millis(100),
            tls: None,
            depth_limits: vec![1, 5, 10, 20, 30, 50, 100],
            depth_merges: ["0", "0.00000001", "0.0000001", "0.000001", "0.00001", "0.0001", "0.001", "0.01", "0.1"]
                .map(String::from)
                .to_vec(),
            stats: Arc::default(),
        }
    }
}

/// A running WebSocket edge; dropping it stops the event loop.
pub struct WsEdge {
    thread: EdgeThread,
}

impl WsEdge {
    /// Binds `cfg.bind` and starts the event loop; `backend` is built with the function that
    /// wakes the loop when replies are ready.
    pub fn start<B: Backend>(cfg: WsConfig, backend: impl FnOnce(Notify) -> B) -> io::Result<WsEdge> {
        let build = |l: Loop| Server {
            auth: cfg.auth.clone().and_then(|a| {
                Auth::start(a, Arc::clone(&l.notify))
                    .map_err(|e| tracing::error!("ws: the authentication workers did not start: {e}"))
                    .ok()
            }),
            cfg: cfg.clone(),
            wake: Arc::clone(&l.notify),
            fanout: VecDeque::new(),
            written: Vec::new(),
            poll: l.poll,
            listener: l.listener,
            backend: backend(l.notify),
            conns: Vec::new(),
            live: 0,
            next_gen: 1,
            next_tag: 1,
            waiting: IdMap::default(),
            feeds: HashMap::new(),
            own: IdMap::default(),
            followers: HashMap::new(),
            dirty: Vec::new(),
            asking: Default::default(),
            last_poll: Instant::now(),
        };
        let thread = EdgeThread::spawn("viaduct-ws", cfg.bind, build, |mut s, stop| run(&mut s, stop))?;
        tracing::info!("ws: listening on {}", thread.addr);
        Ok(WsEdge { thread })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.thread.addr
    }
}

/// The handshake's checks of the client's headers (SPEC B3.1).
struct Check {
    protocol: String,
    origin: String,
}

impl Callback for Check {
    fn on_request(self, request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        let refuse = |status: u16, why: &str| {
            let mut r = ErrorResponse::new(Some(why.to_string()));
            *r.status_mut() = tungstenite::http::StatusCode::from_u16(status).expect("a valid status");
            r
        };
        let headers = request.headers();
        if !self.origin.is_empty() {
            let origin = headers.get("origin").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !origin.ends_with(&self.origin) {
                return Err(refuse(403, "origin not allowed"));
            }
        }
        if let Some(asked) = headers.get("sec-websocket-protocol") {
            let asked = asked.to_str().unwrap_or("");
            if !asked.split(',').any(|p| p.trim() == self.protocol) {
                return Err(refuse(400, "subprotocol not supported"));
            }
            let echoed =
                tungstenite::http::HeaderValue::from_str(&self.protocol).map_err(|_| refuse(500, "bad protocol"))?;
            response.headers_mut().insert("sec-websocket-protocol", echoed);
        }
        Ok(response)
    }
}

enum Phase {
    Handshake(MidHandshake<ServerHandshake<Stream, Check>>),
    Open(WebSocket<Stream>),
}

struct Conn {
    /// `None` only while a handshake step has it.
    phase: Option<Phase>,
    gen: u64,
    opened: Instant,
    last_read: Instant,
    pending: usize,
    /// Held back at `pending_max`, or while an authentication is out: read on when replies make
    /// room or the authentication is answered.
    paused: bool,
    /// A `server.auth` or `server.sign` is with the service: what the client sent after it waits,
    /// so that it is answered as the user the authentication binds.
    authing: bool,
    /// The user `server.auth` or `server.sign` bound the connection to, and its `source`.
    user: Option<(u32, String)>,
    /// The market feeds it subscribes to.
    feeds: Vec<Feed>,
    /// Its user's orders and assets it subscribes to.
    mine: Mine,
}

struct Waiting {
    index: usize,
    gen: u64,
}

struct Server<B> {
    cfg: WsConfig,
    /// Brings the loop round again at once (more fan-out to write).
    wake: Notify,
    /// Feed pushes not yet written to all their subscribers.
    fanout: VecDeque<Fanout>,
    /// Connections written to since the last flush (repeats allowed): each is flushed once at
    /// the end of the turn, all it was sent in one write.
    written: Vec<usize>,
    poll: Poll,
    listener: TcpListener,
    backend: B,
    conns: Vec<Option<Conn>>,
    live: usize,
    next_gen: u64,
    next_tag: u64,
    waiting: IdMap<u64, Waiting, BlockIdHasher>,
    auth: Option<Auth>,
    /// Every feed someone subscribes to.
    feeds: HashMap<Feed, FeedState>,
    /// Requests the edge made itself, by tag ([`OWN`] set).
    own: IdMap<u64, Own, BlockIdHasher>,
    /// Users followed for pushes → their connections subscribed to orders or assets.
    followers: HashMap<u32, Vec<usize>>,
    /// (user, asset) balances changed and not yet queried.
    dirty: Vec<(u32, AssetId)>,
    /// Users with a balance query out.
    asking: std::collections::HashSet<u32>,
    last_poll: Instant,
}

/// The connection the request `tag` came from, if it is still the one that sent it.
fn arrived(waiting: &mut IdMap<u64, Waiting, BlockIdHasher>, conns: &mut [Option<Conn>], tag: u64) -> Option<usize> {
    let w = waiting.remove(&tag)?;
    let c = conns.get_mut(w.index).and_then(Option::as_mut).filter(|c| c.gen == w.gen)?;
    c.pending -= 1;
    Some(w.index)
}

/// What one message asks.
enum Answer {
    /// A reply now.
    Now(String),
    /// A request with the engine or a query's owner.
    Later,
    /// Close the connection (a message that is not the JSON envelope).
    Close,
    /// Answered (and perhaps more pushed) already.
    Sent,
}

impl<B: Backend> EdgeLoop for Server<B> {
    const NAME: &'static str = "ws";

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn listener(&self) -> &TcpListener {
        &self.listener
    }

    fn free_slot(&mut self) -> Option<usize> {
        (self.live < self.cfg.connections_max).then(|| free_slot(&mut self.conns))
    }

    fn opened(&mut self, index: usize, mut stream: TcpStream) {
        // Writable too: edge-triggered, it fires only when a full socket drains, which is when
        // `tungstenite`'s buffered frames can go on.
        let token = Token(FIRST_CONN + index);
        let _ = self.poll.registry().reregister(&mut stream, token, Interest::READABLE | Interest::WRITABLE);
        let now = Instant::now();
        let gen = self.next_gen;
        self.next_gen += 1;
        self.live += 1;
        self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
        let check = Check { protocol: self.cfg.protocol.clone(), origin: self.cfg.origin.clone() };
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.cfg.message_bytes_max))
            .max_frame_size(Some(self.cfg.message_bytes_max))
            .write_buffer_size(WRITE_COALESCE_BYTES.min(self.cfg.write_bytes_max / 2))
            .max_write_buffer_size(self.cfg.write_bytes_max);
        let stream = match Stream::new(stream, self.cfg.tls.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("ws: no TLS session for a new connection: {e}");
                self.live -= 1;
                self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        let phase = match tungstenite::accept_hdr_with_config(stream, check, Some(config)) {
            Ok(ws) => Phase::Open(ws),
            Err(HandshakeError::Interrupted(mid)) => Phase::Handshake(mid),
            Err(HandshakeError::Failure(_)) => {
                self.live -= 1;
                self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        self.conns[index] = Some(Conn {
            phase: Some(phase),
            gen,
            opened: now,
            last_read: now,
            pending: 0,
            paused: false,
            authing: false,
            user: None,
            feeds: Vec::new(),
            mine: Mine::default(),
        });
        self.serve(index);
    }

    fn ready(&mut self, index: usize, _readable: bool, _writable: bool, _read_closed: bool) {
        self.serve(index);
    }

    fn take_replies(&mut self) {
        let mut touched: Vec<(usize, String)> = Vec::new();
        let mut own: Vec<(u64, String)> = Vec::new();
        let mut pushes: Vec<(usize, Message)> = Vec::new();
        let mut lost = false;
        let (waiting, conns, followers, dirty) = (&mut self.waiting, &mut self.conns, &self.followers, &mut self.dirty);
        self.backend.receive(&mut |spec, delivered| match delivered {
            Delivered::Outcome { tag, request_id, result, events, .. } if tag & OWN != 0 => {
                own.push((tag, response_json(spec, request_id, result, events)))
            }
            Delivered::Answer { tag, json, .. } if tag & OWN != 0 => own.push((tag, json)),
            Delivered::Outcome { tag, request_id, result, events, .. } => {
                if let Some(index) = arrived(waiting, conns, tag) {
                    touched.push((index, response_json(spec, request_id, result, events)));
                }
            }
            Delivered::Answer { tag, json, .. } => {
                if let Some(index) = arrived(waiting, conns, tag) {
                    touched.push((index, json));
                }
            }
            Delivered::Activity { events, .. } => user_pushes(spec, events, followers, conns, &mut pushes, dirty),
            Delivered::FillsLost => lost = true,
            Delivered::Deals { .. } => {} // it watches nobody's fills
        });
        while let Some(done) = self.auth.as_ref().and_then(Auth::done) {
            let Some(c) = self.conns.get_mut(done.index).and_then(Option::as_mut).filter(|c| c.gen == done.gen) else {
                continue;
            };
            c.pending -= 1;
            c.authing = false;
            let json = match done.user {
                Ok(user) => {
                    let before = c.user.as_ref().map(|(u, _)| *u);
                    c.user = Some((user, done.source));
                    if before.is_some_and(|b| b != user) {
                        // The old user's orders and balances are not the new one's to see.
                        self.subscribe_mine(done.index, before, |mine| *mine = Mine::default());
                    }
                    format!(r#"{{"error":null,"result":{{"status":"success"}},"id":{}}}"#, done.id)
                }
                Err(Refused::Rpc(e)) => error_response(Some(done.id), e),
                Err(Refused::Service(message)) => {
                    let error = serde_json::json!({"code": 11, "message": message});
                    format!(r#"{{"error":{error},"result":null,"id":{}}}"#, done.id)
                }
            };
            touched.push((done.index, json));
        }
        let mut resumed = Vec::new();
        for (index, json) in touched {
            self.send(index, json);
            if self.conns[index].as_ref().is_some_and(|c| c.paused) {
                resumed.push(index);
            }
        }
        for (index, msg) in pushes {
            self.send_message(index, msg);
        }
        for (tag, json) in own {
            self.own_answered(tag, &json);
        }
        if lost {
            let all: Vec<usize> = self.followers.values().flatten().copied().collect();
            tracing::warn!(
                "ws: fell behind the engine and lost users' events; {} connections closed (1008)",
                all.len()
            );
            for index in all {
                self.close_with(index, CloseCode::Policy, "pushes lost; resubscribe");
            }
        }
        self.query_balances();
        for index in resumed {
            self.serve(index);
        }
        self.fan_out();
        let mut written = std::mem::take(&mut self.written);
        written.sort_unstable();
        written.dedup();
        for &index in &written {
            self.flush(index);
        }
        written.clear();
        self.written = written;
    }

    fn tick(&mut self) {
        let now = Instant::now();
        for index in 0..self.conns.len() {
            let Some(c) = self.conns[index].as_ref() else { continue };
            let expired = match c.phase {
                Some(Phase::Handshake(_)) | None => now.duration_since(c.opened) >= self.cfg.handshake_timeout,
                Some(Phase::Open(_)) => now.duration_since(c.last_read) >= self.cfg.keep_alive && c.pending == 0,
            };
            if expired {
                self.close_with(index, CloseCode::Away, "idle");
            }
        }
        if now.duration_since(self.last_poll) >= self.cfg.push_interval {
            self.last_poll = now;
            let due: Vec<Feed> = self.feeds.iter().filter(|(_, st)| !st.polling).map(|(f, _)| f.clone()).collect();
            for feed in due {
                self.poll_feed(feed);
            }
            self.query_balances();
        }
    }
}

impl<B: Backend> Server<B> {
    /// Drives connection `index`: the handshake, then reading messages and flushing what waits.
    fn serve(&mut self, index: usize) {
        let Some(c) = self.conns[index].as_mut() else { return };
        if matches!(c.phase, Some(Phase::Handshake(_))) {
            let Some(Phase::Handshake(mid)) = c.phase.take() else { unreachable!("matched above") };
            match mid.handshake() {
                Ok(ws) => c.phase = Some(Phase::Open(ws)),
                Err(HandshakeError::Interrupted(mid)) => {
                    c.phase = Some(Phase::Handshake(mid));
                    return;
                }
                Err(HandshakeError::Failure(_)) => return self.drop_conn(index),
            }
        }
        loop {
            let Some(c) = self.conns[index].as_mut() else { return };
            if c.pending >= self.cfg.pending_max || c.authing {
                c.paused = true;
                break;
            }
            c.paused = false;
            let Some(Phase::Open(ws)) = c.phase.as_mut() else { return };
            let text = match ws.read() {
                Ok(Message::Text(t)) => t.as_str().to_owned(),
                Ok(Message::Binary(b)) => match String::from_utf8(b.to_vec()) {
                    Ok(t) => t,
                    Err(_) => return self.close_with(index, CloseCode::Invalid, "not UTF-8 JSON"),
                },
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                    c.last_read = Instant::now();
                    continue;
                }
                // The close reply is queued; flushing it below ends the connection.
                Ok(Message::Close(_)) => break,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Capacity(_)) => {
                    return self.close_with(index, CloseCode::Size, "message too large")
                }
                Err(e) => {
                    tracing::debug!("ws: connection {index} dropped: {e}");
                    return self.drop_conn(index);
                }
            };
            c.last_read = Instant::now();
            match self.handle(index, &text) {
                Answer::Now(json) => self.send(index, json),
                Answer::Later | Answer::Sent => {}
                Answer::Close => return self.close_with(index, CloseCode::Invalid, "not a JSON-RPC request"),
            }
        }
        self.flush(index);
    }

    /// Answers or submits one message.
    fn handle(&mut self, index: usize, text: &str) -> Answer {
        let Ok(Value::Object(mut req)) = serde_json::from_str::<Value>(text) else { return Answer::Close };
        let (Some(id), Some(Value::String(method)), Some(Value::Array(params))) =
            (req.get("id").and_then(Value::as_i64), req.remove("method"), req.remove("params"))
        else {
            return Answer::Close;
        };
        let user = self.conns[index].as_ref().and_then(|c| c.user.as_ref()).map(|(u, _)| *u);
        match ws_method(self.backend.spec(), &self.cfg, &method, params, user) {
            Ok(Route::Now(result)) => Answer::Now(format!(r#"{{"error":null,"result":{result},"id":{id}}}"#)),
            Ok(Route::To(target, params)) => self.forward(index, id, target, params),
            Ok(Route::Auth(ask, source)) => self.authenticate(index, id, ask, source),
            Ok(Route::Subscribe(sub)) => {
                self.send(index, format!(r#"{{"error":null,"result":{{"status":"success"}},"id":{id}}}"#));
                match sub {
                    Subscription::Feeds(kind, feeds) => self.subscribe_feeds(index, kind, feeds),
                    Subscription::Orders(markets) => self.subscribe_mine(index, user, |mine| mine.markets = markets),
                    Subscription::Assets(assets) => self.subscribe_mine(index, user, |mine| mine.assets = assets),
                }
                Answer::Sent
            }
            Err(e) => Answer::Now(error_response(Some(id), e)),
        }
    }

    /// Hands `server.auth` or `server.sign` to the authentication workers.
    fn authenticate(&mut self, index: usize, id: i64, ask: Ask, source: String) -> Answer {
        let Some(auth) = &self.auth else { return Answer::Now(error_response(Some(id), RpcError::Internal)) };
        let Some(c) = self.conns[index].as_mut() else { return Answer::Later };
        match auth.ask(Job { index, gen: c.gen, id, ask, source }) {
            Ok(()) => {
                c.pending += 1;
                c.authing = true;
                Answer::Later
            }
            Err(e) => Answer::Now(error_response(Some(id), e)),
        }
    }

    /// Sends `method` with `params` to its owner through the method table.
    fn forward(&mut self, index: usize, id: i64, method: &str, params: Vec<Value>) -> Answer {
        let tag = self.next_tag;
        self.next_tag += 1;
        let sent = match protocol::route(self.backend.spec(), method, &params) {
            Ok(Routed::Command(cmd)) => self.backend.submit(tag, id, cmd).map_err(|_| RpcError::ServiceUnavailable),
            Ok(Routed::Query(_)) => self.backend.query(tag, id, method, params),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return Answer::Now(error_response(Some(id), e));
        }
        let Some(c) = self.conns[index].as_mut() else { return Answer::Later };
        c.pending += 1;
        self.waiting.insert(tag, Waiting { index, gen: c.gen });
        Answer::Later
    }

    /// Queues `json` for connection `index`; a client past `write_bytes_max` is closed.
    fn send(&mut self, index: usize, json: String) {
        self.send_message(index, Message::text(json))
    }

    fn send_message(&mut self, index: usize, msg: Message) {
        let Some(Phase::Open(ws)) = self.conns[index].as_mut().and_then(|c| c.phase.as_mut()) else { return };
        match ws.write(msg) {
            Ok(()) => self.written.push(index),
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => self.written.push(index),
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                tracing::info!("ws: a client left {} bytes of replies unread; closed (1008)", self.cfg.write_bytes_max);
                self.close_with(index, CloseCode::Policy, "replies left unread");
            }
            Err(_) => self.drop_conn(index),
        }
    }

    /// Writes what waits; a connection whose close handshake is done is dropped.
    fn flush(&mut self, index: usize) {
        let Some(Phase::Open(ws)) = self.conns[index].as_mut().and_then(|c| c.phase.as_mut()) else { return };
        match ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!("ws: connection {index} dropped while writing: {e}");
                self.drop_conn(index)
            }
        }
    }

    /// Sends a close frame (best effort: a client that does not read will not get it) and drops
    /// the connection.
    fn close_with(&mut self, index: usize, code: CloseCode, reason: &str) {
        if let Some(Phase::Open(ws)) = self.conns[index].as_mut().and_then(|c| c.phase.as_mut()) {
            let _ = ws.close(Some(CloseFrame { code, reason: reason.into() }));
            let _ = ws.flush();
        }
        self.drop_conn(index);
    }

    fn drop_conn(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        let (feeds, user) = (std::mem::take(&mut c.feeds), c.user.as_ref().map(|(u, _)| *u));
        for feed in feeds {
            self.leave_feed(index, &feed);
        }
        self.subscribe_mine(index, user, |mine| *mine = Mine::default());
        let Some(mut c) = self.conns.get_mut(index).and_then(Option::take) else { return };
        self.live -= 1;
        self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
        let stream = match c.phase.as_mut() {
            Some(Phase::Open(ws)) => Some(ws.get_mut().socket()),
            Some(Phase::Handshake(mid)) => Some(mid.get_mut().get_mut().socket()),
            None => None,
        };
        if let Some(stream) = stream {
            let _ = self.poll.registry().deregister(stream);
        }
        // Replies still in the engine find no connection of this generation and are dropped.
    }
}
