//! What every edge's event loop shares: its thread with a stop flag and a waker, and writing a
//! connection's buffered bytes without blocking.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::Notify;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
/// Connection `i` is registered as `Token(FIRST_CONN + i)`.
pub(crate) const FIRST_CONN: usize = 2;
/// How often an edge checks its timers.
const TICK: Duration = Duration::from_millis(50);

/// One edge's part of the shared event loop ([`run`]): what it does with a new connection, a
/// ready one, the replies waiting for it, and its timers.
pub(crate) trait EdgeLoop {
    /// The edge's name in log lines.
    const NAME: &'static str;
    fn poll(&mut self) -> &mut Poll;
    fn listener(&self) -> &TcpListener;
    /// The slot a new connection takes, or `None` at `connections_max` (it is closed at once).
    fn free_slot(&mut self) -> Option<usize>;
    /// Takes a connection registered as `Token(FIRST_CONN + index)`.
    fn opened(&mut self, index: usize, stream: TcpStream);
    /// An event for a connection; `read_closed`: the peer's end of stream came with it (read to
    /// the end, as no later event will announce it).
    fn ready(&mut self, index: usize, readable: bool, writable: bool, read_closed: bool);
    /// Hands the replies the engine has ready to their connections.
    fn take_replies(&mut self);
    fn tick(&mut self);
}

/// Runs an edge's event loop until `stop`.
pub(crate) fn run<L: EdgeLoop>(edge: &mut L, stop: &AtomicBool) {
    let mut turns = Turns::default();
    while !stop.load(Ordering::Acquire) {
        if !turns.turn(edge, Some(TICK)) {
            return;
        }
        edge.take_replies();
    }
}

/// What an event loop keeps from one turn to the next.
pub(crate) struct Turns {
    events: Events,
    last_tick: Instant,
    /// Whether this thread holds its spare descriptor yet (taken at the first turn, on the
    /// thread that runs the loop, while descriptors are to be had).
    spare_held: bool,
}

impl Default for Turns {
    fn default() -> Turns {
        Turns { events: Events::with_capacity(1024), last_tick: Instant::now(), spare_held: false }
    }
}

impl Turns {
    /// One turn of an edge's loop: waits up to `timeout` for its sockets or its waker, handles
    /// what is ready, and checks the timers when they are due (the caller hands out the replies,
    /// once per turn). False when polling failed and the edge must stop.
    pub(crate) fn turn<L: EdgeLoop>(&mut self, edge: &mut L, timeout: Option<Duration>) -> bool {
        if !self.spare_held {
            self.spare_held = SPARE.with(|s| s.borrow().is_some());
        }
        if let Err(e) = edge.poll().poll(&mut self.events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                return true;
            }
            tracing::error!("{}: poll failed: {e}; the edge stops", L::NAME);
            return false;
        }
        for event in self.events.iter() {
            match event.token() {
                LISTENER => accept(edge),
                WAKER => {}
                Token(t) => {
                    edge.ready(t - FIRST_CONN, event.is_readable(), event.is_writable(), event.is_read_closed())
                }
            }
        }
        if self.last_tick.elapsed() >= TICK {
            edge.tick();
            self.last_tick = Instant::now();
        }
        true
    }
}

/// Takes every waiting connection, each registered for reading with its slot's token.
fn accept<L: EdgeLoop>(edge: &mut L) {
    loop {
        let mut stream = match edge.listener().accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE): the connection would wait in the backlog,
                // and with edge-triggered polling no later event would bring it up again. The
                // spare descriptor is given up to accept it and close it at once.
                if !refuse_with_spare(edge.listener()) {
                    warn_limited(L::NAME, &e);
                    return;
                }
                warn_limited(L::NAME, &e);
                continue;
            }
        };
        let Some(index) = edge.free_slot() else { continue }; // at the bound: closed at once
        if edge.poll().registry().register(&mut stream, Token(FIRST_CONN + index), Interest::READABLE).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        edge.opened(index, stream);
    }
}

std::thread_local! {
    /// A descriptor each edge thread holds back for [`refuse_with_spare`].
    static SPARE: std::cell::RefCell<Option<std::fs::File>> = std::cell::RefCell::new(std::fs::File::open("/dev/null").ok());
    /// When this thread last logged a failed accept, and how many it has not logged since.
    static ACCEPT_WARNED: std::cell::Cell<(Option<std::time::Instant>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// At most one log line per this long about failed accepts, with how many were not logged.
const ACCEPT_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Frees the spare descriptor, accepts one connection with it and closes it, then takes the
/// spare back; false if there was no spare or nothing to accept.
fn refuse_with_spare(listener: &TcpListener) -> bool {
    SPARE.with(|spare| {
        let Some(file) = spare.borrow_mut().take() else { return false };
        drop(file);
        let accepted = listener.accept().is_ok(); // and dropped: closed at once
        *spare.borrow_mut() = std::fs::File::open("/dev/null").ok();
        accepted
    })
}

fn warn_limited(name: &str, e: &std::io::Error) {
    ACCEPT_WARNED.with(|w| {
        let (last, quiet) = w.get();
        if last.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
            tracing::warn!("{name}: accept failed: {e}; a client was refused ({quiet} more since the last such line)");
            w.set((Some(std::time::Instant::now()), 0));
        } else {
            w.set((last, quiet + 1));
        }
    });
}

/// A running edge's thread; dropping it stops the event loop and joins it.
pub(crate) struct EdgeThread {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// What an edge's loop starts with: its poller, its bound listener and a [`Notify`] that wakes it.
pub(crate) struct Loop {
    pub poll: Poll,
    pub listener: TcpListener,
    pub notify: Notify,
}

impl EdgeThread {
    /// Binds `bind`, builds the loop's state with `build`, and runs `run(state, stop)` on a thread
    /// named `name`.
    pub fn spawn<S: Send + 'static>(
        name: &str,
        bind: SocketAddr,
        build: impl FnOnce(Loop) -> S,
        run: impl FnOnce(S, &AtomicBool) + Send + 'static,
    ) -> io::Result<EdgeThread> {
        let (l, waker) = prepare(bind)?;
        let addr = l.listener.local_addr()?;
        let state = build(l);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new().name(name.into()).spawn(move || run(state, &stop))?
        };
        Ok(EdgeThread { addr, stop, waker, thread: Some(thread) })
    }
}

/// Binds `bind` and makes an event loop's poller, with the waker its [`Notify`] rings.
pub(crate) fn prepare(bind: SocketAddr) -> io::Result<(Loop, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let notify: Notify = {
        let waker = Arc::clone(&waker);
        Arc::new(move || {
            let _ = waker.wake();
        })
    };
    let mut listener = TcpListener::bind(bind)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    Ok((Loop { poll, listener, notify }, waker))
}

impl Drop for EdgeThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes what it can of `wbuf` and drops what was written; `Err` when the peer is gone.
pub(crate) fn write_some(stream: &mut TcpStream, wbuf: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    while written < wbuf.len() {
        match stream.write(&wbuf[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    wbuf.drain(..written);
    Ok(())
}

/// Registers connection `index` for writability as well as readability while `wbuf` holds bytes,
/// for readability alone once it is empty; `registered` is what the socket is registered for now,
/// so the registration (a system call) changes only when the want does.
pub(crate) fn want_writable(poll: &Poll, stream: &mut TcpStream, index: usize, registered: &mut bool, wbuf: &[u8]) {
    let want = !wbuf.is_empty();
    if *registered != want {
        *registered = want;
        let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _ = poll.registry().reregister(stream, Token(FIRST_CONN + index), interest);
    }
}

/// The free slot to put a new connection in.
pub(crate) fn free_slot<C>(conns: &mut Vec<Option<C>>) -> usize {
    conns.iter().position(Option::is_none).unwrap_or_else(|| {
        conns.push(None);
        conns.len() - 1
    })
}
