//! The TCP edge: one port, two framings, told apart by a connection's first four bytes.
//!
//! - `b"beep"` (ViaBTC's RPC magic) starts the framed JSON-RPC of SPEC B4 ([`crate::rpc`]): the
//!   same methods as HTTP, each packet's reply carrying its header back with `pkg_type = 1`;
//!   command 0 is the heartbeat, answered at once, and its TLV timeout (clamped to 2..600 s)
//!   becomes the connection's idle timeout.
//! - Anything else must be the binary order entry's HELLO ([`crate::binary`], `PROTOCOL.md`):
//!   HELLO → CHALLENGE → LOGIN (HMAC of the nonce) → LOGIN_ACK, then orders and cancels for the
//!   key's user, answered with execution reports; fills of the user's resting orders arrive as
//!   they happen. The server sends a HEARTBEAT after a quiet `heartbeat` and closes a session
//!   quiet for `heartbeat_timeout`.
//!
//! Bounds: `connections_max`, `packet_bytes_max` (an RPC packet over it closes the connection),
//! `pending_max` requests in the engine per connection (past it the socket is not read),
//! `write_bytes_max` unread reply bytes (past it the client is disconnected), `login_timeout`.
//!
//! Why one file of ~800 lines: one event loop, whose connection table, the two framings' dispatch,
//! the binary sessions and the timers all work on the same connections; the codecs are `rpc.rs`
//! and `binary.rs`.

use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Poll;
use serde_json::Value;
use viaduct_matcher::book::{BlockIdHasher, IdMap};
use viaduct_matcher::event::{EventRef, OrderEventKind};
use viaduct_matcher::order::Order;
use viaduct_matcher::{Command, Events, Reply, RpcError, Spec};
use viaduct_protocol::{self as protocol, error_response, response_json, Routed};

use crate::binary::{self, client_type, reason, ClientMsg, Decoded, ServerMsg, Trader};
use crate::net::{free_slot, prepare, run, want_writable, write_some, EdgeLoop, EdgeThread, Loop, Turns};
use crate::rpc::{self, Header};
use crate::{Backend, Delivered, Notify};

const READ_CHUNK: usize = 16 * 1024;

/// One API key of the binary order entry and what its sessions trade as.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: [u8; binary::KEY_BYTES],
    pub secret: Vec<u8>,
    pub trader: Trader,
    /// Its sessions get every report of its user, from any session or edge (a drop copy).
    pub drop_copy: bool,
    /// When one of its sessions ends, for any reason, the orders that session placed and that
    /// still rest are cancelled (one `order.cancel_all` of the session, through the journal).
    pub cancel_on_disconnect: bool,
    /// Its sessions are closed (and so, with `cancel_on_disconnect`, their orders cancelled)
    /// after this long without a message from the client: a dead-man timer. `None`: the edge's
    /// `heartbeat_timeout`.
    pub heartbeat_timeout: Option<Duration>,
    /// Order-entry messages per second its sessions may send together (0: no bound); past it a
    /// message is REJECTED with reason 34 and does nothing.
    pub rate_max: u32,
    /// Past this many per second (0: no bound), the session that sends one more is closed.
    pub rate_logout: u32,
}

impl ApiKey {
    /// Checks a configured key: `key` is 1–16 ASCII bytes, the secret at least 16 bytes, the fee
    /// rates valid decimals below 1 with no more decimals than any market's `fee_prec` (a rate
    /// that would be cut is refused, not truncated), `source` at most 30 bytes.
    pub fn new(
        spec: &Spec,
        key: &str,
        secret: &str,
        user: u32,
        taker_fee: &str,
        maker_fee: &str,
        source: &str,
    ) -> Result<ApiKey, String> {
        if key.is_empty() || key.len() > binary::KEY_BYTES || !key.is_ascii() {
            return Err(format!("api key {key:?}: must be 1 to 16 ASCII characters"));
        }
        if secret.len() < 16 {
            return Err(format!("api key {key:?}: the secret must be at least 16 bytes"));
        }
        if user == 0 {
            return Err(format!("api key {key:?}: user_id must be above 0"));
        }
        let rates = |text: &str| -> Result<Vec<u32>, String> {
            spec.markets
                .iter()
                .map(|m| {
                    use viaduct_matcher::decimal::{parse, pow10};
                    // Read at a precision past any `fee_prec` (at most 6): digits the market's
                    // would cut show as a remainder.
                    const FINE: u32 = 18;
                    match (parse(text, m.fee_prec), parse(text, FINE)) {
                        (Ok(v), Ok(fine)) if (0..pow10(m.fee_prec)).contains(&v) => {
                            if fine % pow10(FINE - m.fee_prec) != 0 {
                                return Err(format!(
                                    "api key {key:?}: fee rate {text:?} has more decimals than market {} allows (fee_prec {})",
                                    m.name, m.fee_prec
                                ));
                            }
                            Ok(v as u32)
                        }
                        _ => Err(format!("api key {key:?}: fee rate {text:?} is not a decimal in [0, 1)")),
                    }
                })
                .collect()
        };
        let source = viaduct_matcher::order::Source::new(source)
            .ok_or_else(|| format!("api key {key:?}: source is longer than 30 bytes"))?;
        let mut k = [0u8; binary::KEY_BYTES];
        k[..key.len()].copy_from_slice(key.as_bytes());
        Ok(ApiKey {
            key: k,
            secret: secret.as_bytes().to_vec(),
            trader: Trader {
                user,
                taker_fee: rates(taker_fee)?,
                maker_fee: rates(maker_fee)?,
                source,
                self_trade: Default::default(),
                id_window: Default::default(),
            },
            drop_copy: false,
            cancel_on_disconnect: true,
            heartbeat_timeout: None,
            rate_max: 0,
            rate_logout: 0,
        })
    }
}

/// The edge's address, bounds and keys.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub bind: SocketAddr,
    pub connections_max: usize,
    /// Largest RPC packet, header included (ViaBTC's sample `max_pkg_size`: 102,400).
    pub packet_bytes_max: usize,
    pub write_bytes_max: usize,
    pub pending_max: usize,
    /// An RPC connection quiet this long is closed, unless its heartbeat named another timeout.
    pub idle_timeout: Duration,
    /// A binary session sends a HEARTBEAT after this long without sending anything.
    pub heartbeat: Duration,
    /// A binary session that sends nothing this long is closed.
    pub heartbeat_timeout: Duration,
    /// A binary connection not logged in this long after it opened is closed.
    pub login_timeout: Duration,
    /// The reports a resumable session (LOGIN_REPLAY) keeps for a reconnect to replay: its last
    /// this many.
    pub replay_max: usize,
    /// How long a resumable session that ended may be resumed.
    pub replay_keep: Duration,
    pub keys: Vec<ApiKey>,
    /// Its live counts, for the metrics.
    pub stats: Arc<crate::EdgeStats>,
}

impl TcpConfig {
    pub fn new(bind: SocketAddr, keys: Vec<ApiKey>) -> TcpConfig {
        TcpConfig {
            bind,
            connections_max: 10_000,
            packet_bytes_max: 102_400,
            write_bytes_max: 4 * 1024 * 1024,
            pending_max: 1024,
            idle_timeout: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(5),
            replay_max: 10_000,
            replay_keep: Duration::from_secs(60),
            keys,
            stats: Arc::default(),
        }
    }
}

/// A running TCP edge; dropping it stops the event loop.
pub struct TcpEdge {
    thread: EdgeThread,
}

impl TcpEdge {
    /// Binds `cfg.bind` and starts the event loop; `backend` is built with the function that wakes
    /// the loop when replies are ready.
    pub fn start<B: Backend>(cfg: TcpConfig, backend: impl FnOnce(Notify) -> B) -> io::Result<TcpEdge> {
        let build = |l: Loop| Server::new(cfg.clone(), l, backend);
        let thread = EdgeThread::spawn("viaduct-tcp", cfg.bind, build, |mut s, stop| run(&mut s, stop))?;
        tracing::info!("tcp: listening on {} ({} api keys)", thread.addr, cfg.keys.len());
        Ok(TcpEdge { thread })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.thread.addr
    }
}

/// The TCP edge's event loop without a thread of its own: its owner runs it a turn at a time.
/// The engine runs it on the matcher's thread whenever the input ring is empty (the profile's
/// `tcp_edge_with_matcher`), so that a binary order is read, matched, journaled and answered on
/// one thread, with no hand-off between threads.
pub struct TcpLoop<B> {
    server: Server<B>,
    turns: Turns,
    addr: SocketAddr,
}

impl<B: Backend> TcpLoop<B> {
    /// Binds `cfg.bind`. `backend` is built with the function that wakes the loop from a turn's
    /// wait (which this returns too, for other threads that need to wake it).
    pub fn bind(cfg: TcpConfig, backend: impl FnOnce(Notify) -> B) -> io::Result<(TcpLoop<B>, Notify)> {
        let (l, _) = prepare(cfg.bind)?;
        let addr = l.listener.local_addr()?;
        let wake = Arc::clone(&l.notify);
        let keys = cfg.keys.len();
        let server = Server::new(cfg, l, backend);
        tracing::info!("tcp: listening on {addr} ({keys} api keys), in turns on another stage's thread");
        Ok((TcpLoop { server, turns: Turns::default(), addr }, wake))
    }

    /// One turn: writes out the replies that are ready (the matcher released them since the
    /// last turn), then waits up to `timeout` for the sockets or a wake and handles what is
    /// ready. False when polling failed: the loop cannot go on.
    pub fn turn(&mut self, timeout: Duration) -> bool {
        self.server.take_replies();
        self.turns.turn(&mut self.server, Some(timeout))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

enum Mode {
    /// Fewer than four bytes seen.
    Unknown,
    Rpc,
    /// Binary, waiting for HELLO.
    Hello,
    Challenged {
        key: usize,
        nonce: [u8; binary::NONCE_BYTES],
    },
    Session {
        key: usize,
        seq: u64,
        /// Tags the orders it places when its key cancels them as it ends; 0 otherwise.
        session: u64,
        /// Its resumable stream ([`Stream`]); 0 for a session that logged in with LOGIN.
        stream: u64,
    },
}

/// The most resumable sessions one key has at once, logged in or waiting to be resumed: a new
/// one past it takes the place of the one that ended longest ago, or is refused.
const STREAMS_PER_KEY: usize = 8;

/// A resumable session's reports (PROTOCOL.md "Replay"): every sequenced message it was sent,
/// the last `replay_max` of them kept. It outlives its connection for `replay_keep`, gathering
/// what its connection would have been sent (its requests' late reports, its user's fills),
/// until a LOGIN_REPLAY resumes it on a new connection.
struct Stream {
    key: usize,
    /// The last sequence it carried.
    seq: u64,
    window: std::collections::VecDeque<ServerMsg>,
    /// Its connection, while it has one.
    conn: Option<(usize, u64)>,
    /// When its connection ended, while it has none.
    ended: Option<Instant>,
}

impl Stream {
    /// Keeps `msg` (stamped with its sequence), forgetting the oldest past `max`.
    fn record(&mut self, msg: ServerMsg, max: usize) {
        self.seq = msg.seq().unwrap_or(self.seq);
        self.window.push_back(msg);
        while self.window.len() > max {
            self.window.pop_front();
        }
    }

    /// The first sequence it can still replay.
    fn first_kept(&self) -> u64 {
        self.seq + 1 - self.window.len() as u64
    }
}

struct Conn {
    stream: TcpStream,
    /// Tells this connection from a later one in the same slot, for late replies.
    gen: u64,
    mode: Mode,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pending: usize,
    opened: Instant,
    last_read: Instant,
    last_write: Instant,
    idle_timeout: Duration,
    /// Close once the write buffer is empty.
    closing: bool,
    /// Registered for writability too (a write left bytes waiting); the registration changes
    /// only when this does, not at every flush.
    write_interest: bool,
    /// Reading stopped before the socket was drained, or whole messages wait in the read buffer
    /// (the connection was at `pending_max`): replies resume it. Otherwise the socket's next
    /// readiness does, and replies do not read it again.
    paused: bool,
    /// An event said the peer's stream ended: reads go on to find the end, however short.
    peer_closed: bool,
}

/// A request in the engine: its connection, and for RPC the header and ext of its reply.
struct Waiting {
    index: usize,
    gen: u64,
    rpc: Option<(Header, Vec<u8>)>,
    /// The resumable stream of the session that sent it (0: none): its reports go there should
    /// the connection be gone when they come.
    stream: u64,
}

/// The request `tag` answers, if its connection is still the one that sent it.
fn arrived(waiting: &mut IdMap<u64, Waiting, BlockIdHasher>, conns: &mut [Option<Conn>], tag: u64) -> Option<Waiting> {
    let w = waiting.remove(&tag)?;
    let c = conns.get_mut(w.index).and_then(Option::as_mut).filter(|c| c.gen == w.gen)?;
    c.pending -= 1;
    Some(w)
}

struct Server<B> {
    cfg: TcpConfig,
    poll: Poll,
    listener: TcpListener,
    backend: B,
    conns: Vec<Option<Conn>>,
    live: usize,
    next_gen: u64,
    next_tag: u64,
    /// Requests in the matcher, by tag. Tags are handed out in sequence and mostly come back in
    /// it: the block hasher keeps each run of 8 in adjacent buckets, so the live ones stay in a
    /// few cache lines. (With the default hasher every reply's lookup missed the cache: 10 % of
    /// the matcher's thread at the binary edge's maximum, `benches/README.md`, session 12.)
    waiting: IdMap<u64, Waiting, BlockIdHasher>,
    /// Logged-in sessions per user, for fills.
    sessions: IdMap<u32, Vec<(usize, u64)>>,
    /// Logged-in sessions of drop-copy keys per user: they get every report of the user.
    copies: IdMap<u32, Vec<(usize, u64)>>,
    /// Each key's two throttles, [`ApiKey::rate_max`] and [`ApiKey::rate_logout`].
    throttles: Vec<[Bucket; 2]>,
    /// The last session tag handed out ([`next_session`]).
    last_session: u64,
    /// Cancels of ended sessions' orders the engine did not take yet (its input was full): tried
    /// again at every tick until it does. At most one per session that ended meanwhile, and no
    /// session logs in while one waits, so at most one per connection.
    orphans: Vec<(Command, u64)>,
    /// The tags of those the engine took, with the session's stream, until their outcomes come
    /// back: the stream (if resumable) and a drop-copy session of the user get the count.
    orphan_tags: Vec<(u64, u64)>,
    /// Resumable sessions by id, with their connection or waiting to be resumed.
    streams: IdMap<u64, Stream>,
    /// The resumable sessions that ended and wait to be resumed, per user: they get what a
    /// logged-in session of the user would.
    detached: IdMap<u32, Vec<u64>>,
    /// Per user with a session (logged in or waiting), the orders that finished meanwhile, as
    /// they ended: what ORDER_STATUS answers for an order no longer open.
    finished: IdMap<u32, Finished>,
    /// What each read fills.
    chunk: Vec<u8>,
    /// What the engine handed over in one [`Server::take_replies`], encoded, before it is queued
    /// on the connections; and one outcome's reports and one command's fills on the way there.
    /// Kept for their capacity: this runs on the matcher's thread in the default profile.
    arrived: Vec<Arrival>,
    reports: Vec<ServerMsg>,
    fills: Vec<(u32, ServerMsg)>,
}

/// A user's orders that finished while the user had a session on this edge (logged in or
/// waiting to be resumed), as they ended, from the finished-order events of every command the
/// edge is handed: its own, those with the user's maker fills or self-trade cancels, and all of
/// the user's with a drop-copy session. At most `replay_max` (`[edges.tcp]`), the oldest
/// overwritten first. A ring without an index: keeping one is a copy on the order path (an
/// index cost a hash insert and remove per finished order, 0.85 of the `tcp-max` rest flow), and
/// finding one a scan of at most `replay_max` orders, for ORDER_STATUS alone.
#[derive(Default)]
struct Finished {
    ring: Vec<Order>,
    /// Where the next one goes once the ring is full.
    next: usize,
}

impl Finished {
    fn keep(&mut self, order: &Order, max: usize) {
        if self.ring.len() < max {
            self.ring.push(*order);
        } else if let Some(slot) = self.ring.get_mut(self.next) {
            *slot = *order;
            self.next = (self.next + 1) % max;
        }
    }

    fn find(&self, order_id: u64) -> Option<&Order> {
        self.ring.iter().find(|o| o.id == order_id)
    }
}

/// Keeps the orders `events` finished for the users `watched` says yes to.
fn keep_finished(events: &Events, watched: impl Fn(u32) -> bool, finished: &mut IdMap<u32, Finished>, max: usize) {
    for ev in events.iter() {
        if let EventRef::Order(OrderEventKind::Finish, o) = ev {
            if watched(o.user) {
                finished.entry(o.user).or_default().keep(o, max);
            }
        }
    }
}

/// An ORDER_STATE for an order the engine no longer has open says how it ended where this edge
/// kept that.
fn fill_in_finished(spec: &Spec, cmd: &Command, reports: &mut [ServerMsg], finished: &IdMap<u32, Finished>) {
    let Command::OrderStatus { user, .. } = cmd else { return };
    for msg in reports {
        if let ServerMsg::OrderState { state: binary::STATE_UNKNOWN, order_id, .. } = *msg {
            if let Some(order) = finished.get(user).and_then(|f| f.find(order_id)) {
                *msg = binary::order_state(spec, order, binary::STATE_FINISHED);
            }
        }
    }
}

/// One delivery of the engine, encoded for its connection.
enum Arrival {
    /// The JSON response to a framed RPC request.
    Rpc(Waiting, String),
    /// An execution report for the binary session on connection `index` of generation `gen`.
    Report {
        index: usize,
        gen: u64,
        msg: ServerMsg,
    },
    /// An execution report for a resumable stream whose request's connection is gone.
    Stream {
        stream: u64,
        msg: ServerMsg,
    },
    /// A maker fill for every session of `user`.
    Fill(u32, ServerMsg),
    /// A report of `user`'s for each of the user's drop-copy sessions but the one it answers.
    Copy {
        user: u32,
        except: Option<(usize, u64)>,
        msg: ServerMsg,
    },
    FillsLost,
}

impl<B: Backend> Server<B> {
    fn new(cfg: TcpConfig, l: Loop, backend: impl FnOnce(Notify) -> B) -> Server<B> {
        let throttles = cfg.keys.iter().map(|k| [Bucket::new(k.rate_max), Bucket::new(k.rate_logout)]).collect();
        let mut server = Server {
            cfg,
            poll: l.poll,
            listener: l.listener,
            backend: backend(l.notify),
            conns: Vec::new(),
            live: 0,
            next_gen: 1,
            next_tag: 1,
            waiting: IdMap::default(),
            sessions: IdMap::default(),
            copies: IdMap::default(),
            throttles,
            // Every session of an earlier run has ended: their orders go first.
            last_session: next_session(&mut 0),
            orphans: Vec::new(),
            orphan_tags: Vec::new(),
            streams: IdMap::default(),
            detached: IdMap::default(),
            finished: IdMap::default(),
            chunk: vec![0; READ_CHUNK],
            arrived: Vec::new(),
            reports: Vec::new(),
            fills: Vec::new(),
        };
        let before = server.last_session;
        server.orphans.push((Command::CancelEndedSessions { before }, 0));
        server
    }
}

impl<B: Backend> EdgeLoop for Server<B> {
    const NAME: &'static str = "tcp";

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// A free slot; at `connections_max`, one a connection gives up for the newcomer: the
    /// oldest that has not logged in or told its framing, else the framed JSON-RPC connection
    /// quiet longest with nothing in flight. A logged-in binary session is never closed for a
    /// newcomer; if all are sessions or busy, the newcomer is closed at once.
    fn free_slot(&mut self) -> Option<usize> {
        if self.live < self.cfg.connections_max {
            return Some(free_slot(&mut self.conns));
        }
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter_map(|(i, c)| match c.mode {
                Mode::Unknown | Mode::Hello | Mode::Challenged { .. } => Some((i, (false, c.opened))),
                Mode::Rpc if c.pending == 0 && c.wbuf.is_empty() => Some((i, (true, c.last_read))),
                Mode::Rpc | Mode::Session { .. } => None,
            })
            .min_by_key(|(_, key)| *key)
            .map(|(i, _)| i)?;
        self.close(victim);
        Some(victim)
    }

    fn opened(&mut self, index: usize, stream: TcpStream) {
        let now = Instant::now();
        self.conns[index] = Some(Conn {
            stream,
            gen: self.next_gen,
            mode: Mode::Unknown,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            pending: 0,
            opened: now,
            last_read: now,
            last_write: now,
            idle_timeout: self.cfg.idle_timeout,
            closing: false,
            write_interest: false,
            paused: false,
            peer_closed: false,
        });
        self.next_gen += 1;
        self.live += 1;
        self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn ready(&mut self, index: usize, readable: bool, _writable: bool, read_closed: bool) {
        if read_closed {
            if let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) {
                c.peer_closed = true;
            }
        }
        if readable || read_closed {
            self.read(index);
        }
        self.flush(index);
    }

    fn take_replies(&mut self) {
        Server::take_replies(self);
    }

    fn tick(&mut self) {
        self.cancel_orphans();
        self.check_timers();
    }
}

impl<B: Backend> Server<B> {
    /// Reads what the socket has (unless the connection is at its pending bound) and handles every
    /// whole message in it.
    fn read(&mut self, index: usize) {
        // The server's own buffer: a fresh array here would be zeroed at every read (16 KiB, 2 %
        // of the thread at 100 k orders/s).
        let mut chunk = std::mem::take(&mut self.chunk);
        self.read_into(index, &mut chunk);
        self.chunk = chunk;
    }

    fn read_into(&mut self, index: usize, chunk: &mut [u8]) {
        loop {
            let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
            if c.closing {
                return;
            }
            if c.pending >= self.cfg.pending_max || c.rbuf.len() > self.cfg.packet_bytes_max {
                c.paused = true;
                return;
            }
            match c.stream.read(chunk) {
                Ok(0) => return self.close(index),
                Ok(n) => {
                    c.last_read = Instant::now();
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    self.handle(index);
                    // A read that did not fill the chunk emptied the socket: with mio's
                    // edge-triggered epoll, bytes that arrive later raise a new event, so the
                    // read that would only say "would block" is skipped (one system call fewer
                    // per readable event). Unless an event said the peer's stream ended: that
                    // raises no later event, so the read that finds the end must happen now (or,
                    // for a connection held back at `pending_max`, when replies resume it).
                    let peer_closed = self.conns.get(index).and_then(Option::as_ref).is_some_and(|c| c.peer_closed);
                    if n < chunk.len() && !peer_closed {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(index),
            }
        }
    }

    /// Handles the whole messages at the front of the read buffer, then drops them from it.
    fn handle(&mut self, index: usize) {
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        let rbuf = std::mem::take(&mut c.rbuf);
        let mut at = 0;
        loop {
            let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
            if c.closing {
                break;
            }
            if c.pending >= self.cfg.pending_max {
                c.paused = true;
                break;
            }
            if matches!(c.mode, Mode::Unknown) {
                if rbuf.len() < 4 {
                    break;
                }
                c.mode = if rbuf[..4] == rpc::MAGIC.to_le_bytes() { Mode::Rpc } else { Mode::Hello };
            }
            let rest = &rbuf[at..];
            let used =
                if matches!(c.mode, Mode::Rpc) { self.rpc_one(index, rest) } else { self.binary_one(index, rest) };
            match used {
                Some(0) => break,
                Some(n) => at += n,
                None => return self.shut(index),
            }
        }
        if let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) {
            c.rbuf = rbuf;
            c.rbuf.drain(..at);
        }
    }

    /// Handles one RPC packet: `Some(bytes used)`, `Some(0)` when incomplete, `None` to close.
    fn rpc_one(&mut self, index: usize, buf: &[u8]) -> Option<usize> {
        let (packet, used) = match rpc::decode(buf, self.cfg.packet_bytes_max) {
            Ok(Some(p)) => p,
            Ok(None) => return Some(0),
            Err(e) => {
                tracing::info!("tcp: rpc client sent a bad packet ({e}); disconnected");
                return None;
            }
        };
        let h = packet.header;
        if h.pkg_type != rpc::PKG_REQUEST {
            return None;
        }
        if h.command == rpc::CMD_HEARTBEAT {
            if let Some(ms) = rpc::heartbeat_timeout_ms(&packet.body) {
                let c = self.conns[index].as_mut()?;
                c.idle_timeout =
                    Duration::from_millis(u64::from(ms)).clamp(Duration::from_secs(2), Duration::from_secs(600));
            }
            self.rpc_reply(index, &h, &packet.ext, b"");
            return Some(used);
        }
        let Ok(Value::Array(params)) = serde_json::from_slice::<Value>(&packet.body) else { return None };
        let id = h.req_id as i64;
        let found = protocol::by_command(h.command);
        let method = found.map_or("", |m| m.name);
        let cmd = match found.ok_or(RpcError::MethodNotFound).and_then(|m| m.route(self.backend.spec(), &params)) {
            Ok(Routed::Command(cmd)) => cmd,
            Ok(Routed::Query(_)) => {
                let tag = self.next_tag();
                match self.backend.query(tag, id, method, params) {
                    Ok(()) => self.wait(index, tag, Some((h, packet.ext))),
                    Err(e) => self.rpc_reply(index, &h, &packet.ext, error_response(Some(id), e).as_bytes()),
                }
                return Some(used);
            }
            Err(e) => {
                self.rpc_reply(index, &h, &packet.ext, error_response(Some(id), e).as_bytes());
                return Some(used);
            }
        };
        let tag = self.next_tag();
        match self.backend.submit(tag, id, cmd) {
            Ok(()) => self.wait(index, tag, Some((h, packet.ext))),
            Err(_) => {
                let busy = error_response(Some(id), RpcError::ServiceUnavailable);
                self.rpc_reply(index, &h, &packet.ext, busy.as_bytes());
            }
        }
        Some(used)
    }

    fn rpc_reply(&mut self, index: usize, request: &Header, ext: &[u8], body: &[u8]) {
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        let header = Header { pkg_type: rpc::PKG_REPLY, ..*request };
        rpc::encode(&header, ext, body, &mut c.wbuf);
    }

    /// Handles one binary message, like [`Server::rpc_one`].
    fn binary_one(&mut self, index: usize, buf: &[u8]) -> Option<usize> {
        let decoded = match binary::decode_client(buf) {
            Ok(d) => d,
            Err(_) => {
                tracing::info!("tcp: binary client sent a frame length out of bounds; disconnected");
                return None;
            }
        };
        let logged_in = matches!(self.conns[index].as_ref()?.mode, Mode::Session { .. });
        match decoded {
            Decoded::Partial => Some(0),
            Decoded::Invalid { msg_type, reason, len } if logged_in => {
                let (client_id, order_id) = binary::ids_of_invalid(&buf[..len]);
                self.send(index, binary::rejected(msg_type, client_id, order_id, reason));
                Some(len)
            }
            Decoded::Invalid { reason, .. } => {
                self.send(index, ServerMsg::LoginReject { reason });
                None
            }
            Decoded::Msg(msg, len) if logged_in => {
                self.order_entry(index, &msg);
                Some(len)
            }
            Decoded::Msg(msg, len) => self.login_step(index, &msg).then_some(len),
        }
    }

    /// HELLO and LOGIN; false when the connection is to close (after a LOGIN_REJECT).
    fn login_step(&mut self, index: usize, msg: &ClientMsg) -> bool {
        // While the engine has not taken the cancels of ended sessions, no session starts (which
        // could end and add one more): what waits stays within the sessions there were.
        if matches!(msg, ClientMsg::Login { .. } | ClientMsg::LoginReplay { .. }) && !self.orphans.is_empty() {
            self.cancel_orphans();
            if !self.orphans.is_empty() {
                self.send(index, ServerMsg::LoginReject { reason: reason::SERVICE_UNAVAILABLE });
                return false;
            }
        }
        let Some(c) = self.conns[index].as_mut() else { return false };
        let reject = match (&c.mode, msg) {
            (Mode::Hello, ClientMsg::Hello { key }) => match self.cfg.keys.iter().position(|k| &k.key == key) {
                Some(key) => {
                    let mut nonce = [0u8; binary::NONCE_BYTES];
                    if getrandom::getrandom(&mut nonce).is_err() {
                        tracing::error!("tcp: no randomness for a login nonce");
                        reason::INTERNAL
                    } else {
                        c.mode = Mode::Challenged { key, nonce };
                        self.send(index, ServerMsg::Challenge { nonce });
                        return true;
                    }
                }
                None => reason::UNKNOWN_KEY,
            },
            (&Mode::Challenged { key, nonce }, &ClientMsg::LoginReplay { mac, session, from_seq }) => {
                let k = &self.cfg.keys[key];
                if !binary::login_mac_ok(&k.secret, &nonce, &k.key, &mac) {
                    reason::BAD_SIGNATURE
                } else {
                    match self.resume(index, key, session, from_seq) {
                        Ok(()) => return true,
                        Err(why) => why,
                    }
                }
            }
            (&Mode::Challenged { key, nonce }, ClientMsg::Login { mac }) => {
                let k = &self.cfg.keys[key];
                if binary::login_mac_ok(&k.secret, &nonce, &k.key, mac) {
                    let user = k.trader.user;
                    let session = if k.cancel_on_disconnect { next_session(&mut self.last_session) } else { 0 };
                    c.mode = Mode::Session { key, seq: 0, session, stream: 0 };
                    let ms = self.cfg.heartbeat.as_millis() as u32;
                    self.send(index, ServerMsg::LoginAck { seq: 0, user, heartbeat_ms: ms });
                    self.logged_in(index, key);
                    return true;
                }
                reason::BAD_SIGNATURE
            }
            (_, ClientMsg::Heartbeat) => return true,
            _ => reason::NOT_EXPECTED,
        };
        self.send(index, ServerMsg::LoginReject { reason: reject });
        false
    }

    /// LOGIN_REPLAY with a good signature: a new resumable session (`session` 0), or `session`
    /// resumed with its reports from `from_seq` on; the LOGIN_REJECT reason otherwise.
    fn resume(&mut self, index: usize, key: usize, session: u64, from_seq: u64) -> Result<(), u16> {
        let (id, last_seq) = if session == 0 {
            let mine = self.streams.iter().filter(|(_, s)| s.key == key);
            if mine.clone().count() >= STREAMS_PER_KEY {
                let oldest = mine.filter_map(|(&id, s)| s.ended.map(|t| (t, id))).min();
                let (_, id) = oldest.ok_or(reason::TOO_MANY_SESSIONS)?;
                self.forget_stream(id);
            }
            let id = next_session(&mut self.last_session);
            let stream = Stream { key, seq: 0, window: Default::default(), conn: None, ended: None };
            self.streams.insert(id, stream);
            (id, 0)
        } else {
            // Still on another connection (a client that reconnects before the server saw its
            // old connection fail): that connection is closed, and this one takes over.
            let held = self.streams.get(&session).filter(|s| s.key == key).and_then(|s| s.conn);
            if let Some((old, gen)) = held.filter(|&(old, _)| old != index) {
                if self.conns[old].as_ref().is_some_and(|c| c.gen == gen) {
                    tracing::info!("tcp: resumable session {session} taken over by a new connection");
                    self.close(old);
                }
            }
            let s = self.streams.get(&session).filter(|s| s.key == key && s.conn.is_none());
            let s = s.ok_or(reason::UNKNOWN_SESSION)?;
            if from_seq < s.first_kept() || from_seq > s.seq + 1 {
                return Err(reason::REPLAY_GAP);
            }
            let user = self.cfg.keys[key].trader.user;
            let last_seq = s.seq;
            if let Some(list) = self.detached.get_mut(&user) {
                list.retain(|&d| d != session);
                if list.is_empty() {
                    self.detached.remove(&user);
                }
            }
            (session, last_seq)
        };
        let Some(c) = self.conns[index].as_mut() else { return Ok(()) };
        let k = &self.cfg.keys[key];
        let tag = if k.cancel_on_disconnect { id } else { 0 };
        c.mode = Mode::Session { key, seq: last_seq, session: tag, stream: id };
        let ms = self.cfg.heartbeat.as_millis() as u32;
        let user = k.trader.user;
        binary::encode_server(&ServerMsg::SessionAck { session: id, last_seq, user, heartbeat_ms: ms }, &mut c.wbuf);
        let s = self.streams.get_mut(&id).expect("inserted or found above");
        (s.conn, s.ended) = (Some((index, c.gen)), None);
        for msg in s.window.iter().filter(|m| m.seq().is_some_and(|q| q >= from_seq)) {
            binary::encode_server(msg, &mut c.wbuf);
        }
        self.logged_in(index, key);
        Ok(())
    }

    /// Registers a session that just logged in: its user's fills, and the drop copy.
    fn logged_in(&mut self, index: usize, key: usize) {
        let Some(gen) = self.conns[index].as_ref().map(|c| c.gen) else { return };
        let user = self.cfg.keys[key].trader.user;
        let list = self.sessions.entry(user).or_default();
        list.push((index, gen));
        // Watched already while it has sessions that wait to be resumed.
        self.backend.watch(user, true);
        if self.cfg.keys[key].drop_copy {
            self.copies.entry(user).or_default().push((index, gen));
            self.backend.follow(user, true);
        }
        tracing::info!("tcp: binary session for user {user} logged in");
    }

    /// An order-entry message of a logged-in session.
    fn order_entry(&mut self, index: usize, msg: &ClientMsg) {
        let Some(&Mode::Session { key, session, .. }) = self.conns[index].as_ref().map(|c| &c.mode) else { return };
        if matches!(msg, ClientMsg::Heartbeat) {
            return;
        }
        // No clock read for a key without throttles (most): this is the order path.
        let (throttled, past_logout) = match &mut self.throttles[key] {
            [within, logout] if within.rate != 0 || logout.rate != 0 => {
                let now = Instant::now();
                (!within.take(now), !logout.take(now))
            }
            _ => (false, false),
        };
        let (msg_type, client_id, order_id) = match *msg {
            ClientMsg::NewLimit { client_id, .. } => (client_type::NEW_LIMIT, client_id, 0),
            ClientMsg::NewMarket { client_id, .. } => (client_type::NEW_MARKET, client_id, 0),
            ClientMsg::Cancel { order_id, .. } => (client_type::CANCEL, 0, order_id),
            ClientMsg::CancelByClientId { client_id, .. } => (client_type::CANCEL_BY_CLIENT_ID, client_id, 0),
            ClientMsg::MassCancel { .. } => (client_type::MASS_CANCEL, 0, 0),
            ClientMsg::Amend { order_id, .. } => (client_type::AMEND, 0, order_id),
            ClientMsg::OrderStatus { order_id, client_id, .. } => (client_type::ORDER_STATUS, client_id, order_id),
            ClientMsg::Hello { .. } => (client_type::HELLO, 0, 0),
            ClientMsg::Login { .. } => (client_type::LOGIN, 0, 0),
            ClientMsg::LoginReplay { .. } => (client_type::LOGIN_REPLAY, 0, 0),
            ClientMsg::Heartbeat => unreachable!("handled above"),
        };
        if past_logout {
            let user = self.cfg.keys[key].trader.user;
            tracing::warn!("tcp: binary session of user {user} sent past its key's rate_logout; closed");
            // What it was sent so far still goes out.
            return self.shut(index);
        }
        if throttled {
            return self.send(index, binary::rejected(msg_type, client_id, order_id, reason::THROTTLED));
        }
        let cmd = match binary::command(self.backend.spec(), &self.cfg.keys[key].trader, session, msg) {
            Ok(cmd) => cmd,
            Err(why) => return self.send(index, binary::rejected(msg_type, client_id, order_id, why)),
        };
        let tag = self.next_tag();
        match self.backend.submit(tag, 0, cmd) {
            Ok(()) => self.wait(index, tag, None),
            Err(_) => self.send(index, binary::rejected(msg_type, client_id, order_id, reason::SERVICE_UNAVAILABLE)),
        }
    }

    fn next_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        tag
    }

    fn wait(&mut self, index: usize, tag: u64, rpc: Option<(Header, Vec<u8>)>) {
        let Some(c) = self.conns[index].as_mut() else { return };
        c.pending += 1;
        let stream = match c.mode {
            Mode::Session { stream, .. } => stream,
            _ => 0,
        };
        self.waiting.insert(tag, Waiting { index, gen: c.gen, rpc, stream });
    }

    /// Stamps the session sequence on `msg` and queues it.
    fn send(&mut self, index: usize, mut msg: ServerMsg) {
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        if let Mode::Session { seq, stream, .. } = &mut c.mode {
            if msg.seq().is_some() {
                *seq += 1;
                msg.set_seq(*seq);
                if let Some(s) = self.streams.get_mut(stream) {
                    s.record(msg, self.cfg.replay_max);
                }
            }
        }
        binary::encode_server(&msg, &mut c.wbuf);
    }

    /// Sends `msg` on resumable stream `stream`: on its connection if it has one (the index), or
    /// into what it keeps for a resume.
    fn send_on_stream(&mut self, stream: u64, mut msg: ServerMsg) -> Option<usize> {
        let s = self.streams.get_mut(&stream)?;
        if let Some((index, gen)) = s.conn {
            if self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                self.send(index, msg);
                return Some(index);
            }
            return None;
        }
        msg.set_seq(s.seq + 1);
        s.record(msg, self.cfg.replay_max);
        None
    }

    /// Takes what the engine has ready and encodes it here, on the edge's thread: a framed RPC
    /// request's outcome as JSON, a binary order's as execution reports, and the deals of watched
    /// users as their maker fills.
    fn take_replies(&mut self) {
        let mut arrivals = std::mem::take(&mut self.arrived);
        let (waiting, conns, sessions, copies) = (&mut self.waiting, &mut self.conns, &self.sessions, &self.copies);
        let orphan_tags = &mut self.orphan_tags;
        let mut again = Vec::new();
        let streams = &self.streams;
        let detached = &self.detached;
        // Users with a session logged in or waiting to be resumed: they get maker reports.
        let watched = |user: u32| sessions.contains_key(&user) || detached.contains_key(&user);
        let (reports, fills) = (&mut self.reports, &mut self.fills);
        let (finished, finished_max) = (&mut self.finished, self.cfg.replay_max);
        self.backend.receive(&mut |spec, delivered| match delivered {
            Delivered::Outcome { tag, request_id, cmd, result, events, .. } => {
                keep_finished(events, watched, finished, finished_max);
                // A session's request whose connection went, or the cancel of an ended session's
                // orders: its stream keeps the reports, a drop copy gets copies.
                let (w, stream, orphan) = match waiting.remove(&tag) {
                    Some(w) => match conns.get_mut(w.index).and_then(Option::as_mut).filter(|c| c.gen == w.gen) {
                        Some(c) => {
                            c.pending -= 1;
                            (Some(w), 0, false)
                        }
                        None => (None, w.stream, false),
                    },
                    None => match orphan_tags.iter().position(|&(t, _)| t == tag) {
                        Some(at) => (None, orphan_tags.swap_remove(at).1, true),
                        None => return,
                    },
                };
                let Some(w) = w else {
                    // Capped: more of the ended session's orders may rest; cancelled again.
                    if let (true, Ok(Reply::Cancelled { count })) = (orphan, result) {
                        if *count == viaduct_matcher::CANCELS_PER_COMMAND_MAX {
                            again.push((cmd.clone(), stream));
                        }
                    }
                    if streams.contains_key(&stream) {
                        binary::reports(spec, cmd, result, events, reports);
                        fill_in_finished(spec, cmd, reports, finished);
                        arrivals.extend(reports.drain(..).map(|msg| Arrival::Stream { stream, msg }));
                    }
                    Self::drop_copies(spec, cmd, result, events, copies, None, &mut arrivals);
                    return;
                };
                if w.rpc.is_some() {
                    arrivals.push(Arrival::Rpc(w, response_json(spec, request_id, result, events)));
                    Self::drop_copies(spec, cmd, result, events, copies, None, &mut arrivals);
                } else {
                    binary::reports(spec, cmd, result, events, reports);
                    fill_in_finished(spec, cmd, reports, finished);
                    let (index, gen) = (w.index, w.gen);
                    arrivals.extend(reports.drain(..).map(|msg| Arrival::Report { index, gen, msg }));
                    Self::drop_copies(spec, cmd, result, events, copies, Some((index, gen)), &mut arrivals);
                }
            }
            Delivered::Answer { tag, json, .. } => {
                if let Some(w) = arrived(waiting, conns, tag) {
                    arrivals.push(Arrival::Rpc(w, json));
                }
            }
            Delivered::Deals { cmd, events } => {
                keep_finished(events, watched, finished, finished_max);
                binary::maker_fills(spec, cmd, events, watched, fills);
                arrivals.extend(fills.drain(..).map(|(user, msg)| Arrival::Fill(user, msg)));
            }
            Delivered::FillsLost => arrivals.push(Arrival::FillsLost),
            // A command that touched a user with drop-copy sessions: it stands for the deals too.
            Delivered::Activity { own, cmd, result, events } => {
                // This edge's own commands were kept as their outcomes came.
                if !own {
                    keep_finished(events, watched, finished, finished_max);
                }
                binary::maker_fills(spec, cmd, events, watched, fills);
                arrivals.extend(fills.drain(..).map(|(user, msg)| Arrival::Fill(user, msg)));
                // This edge's own commands were copied with their outcome.
                if !own {
                    Self::drop_copies(spec, cmd, result, events, copies, None, &mut arrivals);
                }
            }
        });
        if !again.is_empty() {
            self.orphans.extend(again);
            self.cancel_orphans();
        }
        let mut touched: Vec<usize> = Vec::new();
        for arrival in arrivals.drain(..) {
            match arrival {
                Arrival::Rpc(w, json) => {
                    if let Some((h, ext)) = &w.rpc {
                        self.rpc_reply(w.index, h, ext, json.as_bytes());
                        touched.push(w.index);
                    }
                }
                Arrival::Report { index, gen, msg } => {
                    if self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                        self.send(index, msg);
                        touched.push(index);
                    }
                }
                Arrival::Stream { stream, msg } => {
                    if let Some(index) = self.send_on_stream(stream, msg) {
                        touched.push(index);
                    }
                }
                Arrival::Fill(user, msg) => {
                    for k in 0..self.sessions.get(&user).map_or(0, Vec::len) {
                        let (index, gen) = self.sessions[&user][k];
                        if self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                            self.send(index, msg);
                            touched.push(index);
                        }
                    }
                    for k in 0..self.detached.get(&user).map_or(0, Vec::len) {
                        let stream = self.detached[&user][k];
                        self.send_on_stream(stream, msg);
                    }
                }
                Arrival::Copy { user, except, msg } => {
                    for k in 0..self.copies.get(&user).map_or(0, Vec::len) {
                        let (index, gen) = self.copies[&user][k];
                        if Some((index, gen)) != except && self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                            self.send(index, msg);
                            touched.push(index);
                        }
                    }
                    for k in 0..self.detached.get(&user).map_or(0, Vec::len) {
                        let stream = self.detached[&user][k];
                        if self.streams.get(&stream).is_some_and(|s| self.cfg.keys[s.key].drop_copy) {
                            self.send_on_stream(stream, msg);
                        }
                    }
                }
                Arrival::FillsLost => self.drop_sessions(),
            }
        }
        self.arrived = arrivals;
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            self.flush(index);
            // Messages held back by `pending_max`, in the buffer or still in the socket.
            let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { continue };
            if std::mem::take(&mut c.paused) {
                self.handle(index);
                self.read(index);
                self.flush(index);
            }
        }
    }

    /// Drop copies of the reports of `cmd` for its user's drop-copy sessions (all but `except`, the
    /// session that has them as its own).
    fn drop_copies(
        spec: &Spec,
        cmd: &Command,
        result: &Result<Reply, RpcError>,
        events: &Events,
        copies: &IdMap<u32, Vec<(usize, u64)>>,
        except: Option<(usize, u64)>,
        arrivals: &mut Vec<Arrival>,
    ) {
        let Some(user) = binary::order_user(cmd).filter(|u| copies.contains_key(u)) else { return };
        let mut out = Vec::new();
        binary::reports(spec, cmd, result, events, &mut out);
        arrivals.extend(out.into_iter().map(|msg| Arrival::Copy { user, except, msg }));
    }

    /// Fills were lost: every session is closed so that its client reconnects and reconciles.
    fn drop_sessions(&mut self) {
        tracing::error!("tcp: fills were dropped (the edge fell behind); closing every binary session");
        let all: Vec<(usize, u64)> = self.sessions.values().flatten().copied().collect();
        for (index, gen) in all {
            if self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                self.close(index);
            }
        }
        // What they keep has a gap now: none can be resumed.
        self.streams.clear();
        for user in std::mem::take(&mut self.detached).into_keys() {
            self.interest_ends(user);
        }
    }

    /// Stops watching and following `user` if nothing of this edge needs the user's fills or
    /// activity any more: no session logged in, none waiting to be resumed.
    fn interest_ends(&mut self, user: u32) {
        if self.detached.get(&user).is_some_and(|d| !d.is_empty()) {
            return;
        }
        self.detached.remove(&user);
        if !self.sessions.contains_key(&user) {
            self.backend.watch(user, false);
            self.finished.remove(&user);
        }
        if !self.copies.contains_key(&user) {
            self.backend.follow(user, false);
        }
    }

    fn flush(&mut self, index: usize) {
        let write_max = self.cfg.write_bytes_max;
        let Some(c) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        if c.wbuf.is_empty() && !c.closing {
            return;
        }
        let before = c.wbuf.len();
        if write_some(&mut c.stream, &mut c.wbuf).is_err() {
            return self.close(index);
        }
        if c.wbuf.len() < before {
            c.last_write = Instant::now();
        }
        if c.wbuf.len() > write_max {
            tracing::info!("tcp: a client is not reading ({} bytes waiting); disconnected", c.wbuf.len());
            return self.close(index);
        }
        if c.wbuf.is_empty() && c.closing {
            return self.close(index);
        }
        want_writable(&self.poll, &mut c.stream, index, &mut c.write_interest, &c.wbuf);
    }

    /// Closes once what is queued (a LOGIN_REJECT) is written.
    fn shut(&mut self, index: usize) {
        if let Some(c) = self.conns[index].as_mut() {
            c.closing = true;
            c.rbuf.clear();
        }
        self.flush(index);
    }

    /// Submits the cancels of ended sessions' orders, in the order the sessions ended; what the
    /// engine refuses now (its input is full) waits for the next tick. Their outcomes come back
    /// to no connection and are dropped (a drop-copy session gets the count as MASS_CANCELLED).
    fn cancel_orphans(&mut self) {
        while let Some((cmd, stream)) = self.orphans.first().cloned() {
            let tag = self.next_tag();
            if self.backend.submit(tag, 0, cmd).is_err() {
                return;
            }
            self.orphan_tags.push((tag, stream));
            match self.orphans.remove(0).0 {
                Command::CancelAll { user, session: Some(session), .. } => {
                    tracing::info!(
                        "tcp: binary session {session} of user {user} ended; its resting orders are cancelled"
                    )
                }
                _ => tracing::info!("tcp: resting orders of binary sessions of an earlier run are cancelled"),
            }
        }
    }

    fn check_timers(&mut self) {
        let now = Instant::now();
        self.expire_streams(now);
        for index in 0..self.conns.len() {
            let Some(c) = self.conns[index].as_ref() else { continue };
            let quiet = now.duration_since(c.last_read);
            let expired = match c.mode {
                Mode::Session { key, .. } => {
                    quiet >= self.cfg.keys[key].heartbeat_timeout.unwrap_or(self.cfg.heartbeat_timeout)
                }
                // Until its first four bytes tell the framing, a connection is held to the login
                // timeout too: a trickle of under four bytes would otherwise hold a slot for the
                // idle timeout (an hour).
                Mode::Unknown | Mode::Hello | Mode::Challenged { .. } => {
                    now.duration_since(c.opened) >= self.cfg.login_timeout
                }
                Mode::Rpc => quiet >= c.idle_timeout && c.pending == 0,
            };
            if expired {
                self.close(index);
                continue;
            }
            if let Mode::Session { seq, .. } = c.mode {
                if now.duration_since(c.last_write) >= self.cfg.heartbeat && c.wbuf.is_empty() {
                    self.send(index, ServerMsg::Heartbeat { last_seq: seq });
                    self.flush(index);
                }
            }
        }
    }

    fn close(&mut self, index: usize) {
        let Some(mut c) = self.conns.get_mut(index).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.live -= 1;
        self.cfg.stats.connections.store(self.live as u64, std::sync::atomic::Ordering::Relaxed);
        if let Mode::Session { key, session, stream, .. } = c.mode {
            let user = self.cfg.keys[key].trader.user;
            // A resumable session waits to be resumed, gathering what it would have been sent.
            if let Some(s) = self.streams.get_mut(&stream) {
                (s.conn, s.ended) = (None, Some(Instant::now()));
                self.detached.entry(user).or_default().push(stream);
            }
            if session != 0 {
                let cancel = Command::CancelAll { user, market: None, side: None, session: Some(session) };
                self.orphans.push((cancel, stream));
                self.cancel_orphans();
            }
            if let Some(list) = self.sessions.get_mut(&user) {
                list.retain(|&(i, g)| (i, g) != (index, c.gen));
                if list.is_empty() {
                    self.sessions.remove(&user);
                }
            }
            if let Some(list) = self.copies.get_mut(&user) {
                list.retain(|&(i, g)| (i, g) != (index, c.gen));
                if list.is_empty() {
                    self.copies.remove(&user);
                }
            }
            self.interest_ends(user);
        }
        // Replies still in the engine find no connection of this generation: a resumable
        // session's go to its stream, the others' are dropped.
    }

    /// Drops the resumable sessions that ended longer than `replay_keep` ago.
    fn expire_streams(&mut self, now: Instant) {
        let keep = self.cfg.replay_keep;
        let expired: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ended.is_some_and(|t| now.duration_since(t) >= keep))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.forget_stream(id);
        }
    }

    /// Forgets resumable session `id` (ended), and the interest in its user it held.
    fn forget_stream(&mut self, id: u64) {
        let Some(s) = self.streams.remove(&id) else { return };
        let user = self.cfg.keys[s.key].trader.user;
        if let Some(list) = self.detached.get_mut(&user) {
            list.retain(|&d| d != id);
        }
        self.interest_ends(user);
    }
}

/// A token bucket of `rate` messages a second, holding at most a second's worth; `rate` 0 takes
/// everything.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket { rate, tokens: f64::from(rate), last: None }
    }

    /// Whether one more message is within the rate at `now` (it is counted either way).
    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let elapsed = self.last.map_or(0.0, |last| now.saturating_duration_since(last).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A tag for a new session: the time in microseconds, or one more than the last tag if the clock
/// has not moved past it. Unique across restarts as long as the clock does not go back by more
/// than the time the server was down.
fn next_session(last: &mut u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    *last = now.max(*last + 1);
    *last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fee rate the market's `fee_prec` would cut is refused when the key is configured.
    #[test]
    fn a_key_fee_rate_finer_than_a_markets_fee_prec_is_refused() {
        let spec = Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        let key = |taker: &str, maker: &str| ApiKey::new(&spec, "mm", "at-least-sixteen-bytes", 7, taker, maker, "mm");
        let k = key("0.0015", "0.001").expect("four decimals fit fee_prec 4");
        assert_eq!((k.trader.taker_fee[0], k.trader.maker_fee[0]), (15, 10));
        let err = key("0.00015", "0.001").err().unwrap();
        assert!(err.contains("more decimals than market") && err.contains("fee_prec 4"), "{err}");
        assert!(key("0.001", "0.00011").is_err());
        assert!(key("0.0015000", "0").is_ok(), "trailing zeros cut nothing");
        assert!(key("1", "0").is_err() && key("-0.001", "0").is_err() && key("x", "0").is_err());
    }

    /// What ORDER_STATUS finds of a user's finished orders: the last `replay_max` of them.
    #[test]
    fn a_users_finished_orders_are_kept_to_the_last_replay_max() {
        let order = |id: u64| Order {
            id,
            market: 0,
            side: viaduct_matcher::order::Side::Ask,
            kind: viaduct_matcher::order::OrderKind::Limit,
            user: 7,
            ctime_us: 0,
            mtime_us: 0,
            price: 1,
            amount: 1,
            left: id as i128,
            taker_fee: 0,
            maker_fee: 0,
            deal_stock: 0,
            deal_money: 0,
            deal_fee: 0,
            source: viaduct_matcher::order::Source::EMPTY,
            client_id: 0,
            session: 0,
        };
        let mut f = Finished::default();
        for id in 1..=7 {
            f.keep(&order(id), 3);
        }
        let kept: Vec<u64> = (1..=7).filter(|&id| f.find(id).is_some()).collect();
        assert_eq!(kept, [5, 6, 7]);
        assert_eq!(f.find(6).map(|o| o.left), Some(6));
        assert_eq!(f.ring.len(), 3, "the ring never grows past its bound");
        let mut none = Finished::default();
        none.keep(&order(1), 0);
        assert!(none.find(1).is_none(), "a bound of 0 keeps nothing");
    }
}
