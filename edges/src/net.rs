//! What every edge's event loop shares: its thread with a stop flag and a waker, and writing a
//! connection's buffered bytes without blocking.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token, Waker};

use crate::Notify;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
/// Connection `i` is registered as `Token(FIRST_CONN + i)`.
pub(crate) const FIRST_CONN: usize = 2;

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
        let addr = listener.local_addr()?;
        let state = build(Loop { poll, listener, notify });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new().name(name.into()).spawn(move || run(state, &stop))?
        };
        Ok(EdgeThread { addr, stop, waker, thread: Some(thread) })
    }
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

/// The free slot to put a new connection in.
pub(crate) fn free_slot<C>(conns: &mut Vec<Option<C>>) -> usize {
    conns.iter().position(Option::is_none).unwrap_or_else(|| {
        conns.push(None);
        conns.len() - 1
    })
}
