//! A client of viaduct's binary order entry (`edges/PROTOCOL.md`): the messages ([`wire`]) and a
//! blocking session over one TCP connection ([`Session`]) that logs in, sends orders, reads the
//! server's messages and checks their session sequence, so that a gap is an error rather than a
//! lost report. A session can be resumable: after a reconnect it asks for the reports from the
//! sequence after the last one it read ([`Session::login_resumable`]).
//!
//! ```no_run
//! use viaduct_client::wire::{market_bytes, ClientMsg, LimitOptions, ServerMsg};
//! use viaduct_client::Session;
//!
//! let mut s = Session::connect("127.0.0.1:7316").unwrap();
//! s.login("maker", b"the key's secret").unwrap();
//! let market = market_bytes("BTCBCH");
//! s.send(&ClientMsg::NewLimit {
//!     client_id: 1,
//!     market,
//!     side: 1,
//!     options: LimitOptions::PLAIN,
//!     price: 10_000_000,   // 0.1 at the market's money precision (8)
//!     amount: 100_000_000, // 1 at its stock precision (8)
//! })
//! .unwrap();
//! match s.next_report().unwrap() {
//!     ServerMsg::Accepted { order_id, .. } => println!("resting as {order_id}"),
//!     other => println!("{other:?}"),
//! }
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

pub mod wire;

use wire::{login_mac, market_bytes, BadFrame, ClientMsg, Decoded, ServerMsg, KEY_BYTES};

/// What went wrong with a session.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// The server sent bytes that are not a message of this protocol version.
    Malformed,
    /// LOGIN_REJECT with its reason (`wire::reason`).
    LoginRejected(u16),
    /// A message where the login expected another.
    Unexpected(Box<ServerMsg>),
    /// A message whose session sequence is not the next one: reports were lost (or repeated).
    Gap {
        expected: u64,
        got: u64,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => write!(f, "the server closed the session"),
            Error::Malformed => write!(f, "the server sent a message this client cannot read"),
            Error::LoginRejected(reason) => write!(f, "login rejected, reason {reason}"),
            Error::Unexpected(m) => write!(f, "unexpected message during login: {m:?}"),
            Error::Gap { expected, got } => write!(f, "session sequence {got} where {expected} was next"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<BadFrame> for Error {
    fn from(_: BadFrame) -> Error {
        Error::Malformed
    }
}

/// What a login answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    /// The user the key trades as.
    pub user: u32,
    /// How often the server sends a heartbeat when it has nothing else to send.
    pub heartbeat_ms: u32,
    /// The resumable session's id (0 for a plain session): give it to the next login to resume.
    pub session: u64,
    /// The last sequence the server has sent on this session (its reports up to it are kept for
    /// a replay while the server's window holds them).
    pub last_seq: u64,
}

/// The read buffer: a read takes as much as has arrived, up to this. What a read leaves
/// undecoded is less than one message, so there is always room behind it.
const READ_BUF: usize = 64 * 1024;
/// Queued messages are written once this many bytes wait, so that the queue stays bounded.
const QUEUE_MAX: usize = 64 * 1024;

/// One connection to the TCP edge's binary order entry. Blocking: each call waits for the socket
/// (set timeouts on [`Session::stream`] to bound the waits). Messages can be queued and written
/// together ([`Session::queue`], [`Session::flush`]) to pipeline many orders.
pub struct Session {
    stream: TcpStream,
    /// Bytes read and not yet decoded are `buf[at..end]`.
    buf: Box<[u8]>,
    at: usize,
    end: usize,
    out: Vec<u8>,
    /// The sequence the next message that carries one must have (0 before a login).
    next_seq: u64,
}

impl Session {
    /// Connects (with Nagle's delay off: orders go out as they are sent).
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<Session> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Session::over(stream))
    }

    /// A session over a connected stream.
    pub fn over(stream: TcpStream) -> Session {
        Session { stream, buf: vec![0; READ_BUF].into_boxed_slice(), at: 0, end: 0, out: Vec::new(), next_seq: 0 }
    }

    /// The connection, for timeouts, shutdown, or bytes of one's own.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The sequence of the last message read that carried one (0: none yet): a resumed session
    /// asks for `last_seq() + 1`.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// HELLO and LOGIN as API key `key` signed with `secret`: a plain session.
    pub fn login(&mut self, key: &str, secret: &[u8]) -> Result<Login, Error> {
        let key = self.hello(key)?;
        let mac = login_mac(secret, &self.challenge()?, &key);
        self.send(&ClientMsg::Login { mac })?;
        self.next_seq = 1;
        match self.next_message()? {
            ServerMsg::LoginAck { user, heartbeat_ms, seq } => {
                Ok(Login { user, heartbeat_ms, session: 0, last_seq: seq })
            }
            ServerMsg::LoginReject { reason } => Err(Error::LoginRejected(reason)),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// HELLO and LOGIN_REPLAY: a new resumable session (`session` 0), or session `session`
    /// resumed, its reports from `from_seq` on sent again before the live ones. The messages that
    /// follow are checked from `from_seq` (from 1 for a new session).
    pub fn login_resumable(&mut self, key: &str, secret: &[u8], session: u64, from_seq: u64) -> Result<Login, Error> {
        let key = self.hello(key)?;
        let mac = login_mac(secret, &self.challenge()?, &key);
        self.send(&ClientMsg::LoginReplay { mac, session, from_seq })?;
        match self.next_message()? {
            ServerMsg::SessionAck { session: id, last_seq, user, heartbeat_ms } => {
                self.next_seq = if session == 0 { 1 } else { from_seq };
                Ok(Login { user, heartbeat_ms, session: id, last_seq })
            }
            ServerMsg::LoginReject { reason } => Err(Error::LoginRejected(reason)),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    fn hello(&mut self, key: &str) -> Result<[u8; KEY_BYTES], Error> {
        let key = market_bytes(key);
        self.send(&ClientMsg::Hello { key })?;
        Ok(key)
    }

    fn challenge(&mut self) -> Result<[u8; 32], Error> {
        match self.next_message()? {
            ServerMsg::Challenge { nonce } => Ok(nonce),
            ServerMsg::LoginReject { reason } => Err(Error::LoginRejected(reason)),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Encodes `msg` behind what is queued; it is written by [`Session::flush`], or here once
    /// 64 KiB are queued.
    pub fn queue(&mut self, msg: &ClientMsg) -> io::Result<()> {
        wire::encode_client(msg, &mut self.out);
        if self.out.len() >= QUEUE_MAX {
            return self.flush();
        }
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result
    }

    /// Writes `msg` (after anything queued).
    pub fn send(&mut self, msg: &ClientMsg) -> io::Result<()> {
        wire::encode_client(msg, &mut self.out);
        self.flush()
    }

    /// The next message from the server, heartbeats included. A message that carries a
    /// sequence must carry the next one, or this is [`Error::Gap`].
    pub fn next_message(&mut self) -> Result<ServerMsg, Error> {
        loop {
            match wire::decode_server(&self.buf[self.at..self.end])? {
                Decoded::Msg(m, used) => {
                    self.at += used;
                    if let Some(seq) = m.seq() {
                        if self.next_seq != 0 && seq != self.next_seq {
                            return Err(Error::Gap { expected: self.next_seq, got: seq });
                        }
                        self.next_seq = seq + 1;
                    }
                    return Ok(m);
                }
                Decoded::Invalid { .. } => return Err(Error::Malformed),
                Decoded::Partial => self.fill()?,
            }
        }
    }

    /// The next message that is not a heartbeat; each heartbeat on the way is answered with the
    /// client's own, so that a key's dead-man timer sees a session that reads as alive.
    pub fn next_report(&mut self) -> Result<ServerMsg, Error> {
        loop {
            match self.next_message()? {
                ServerMsg::Heartbeat { .. } => self.send(&ClientMsg::Heartbeat)?,
                m => return Ok(m),
            }
        }
    }

    /// The connection and the bytes read from it that no message has taken yet, for a caller
    /// that reads and writes the stream itself from here on (as the load generator's open loop
    /// does, from two threads).
    pub fn into_inner(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf[self.at..self.end].to_vec())
    }

    /// Reads what has arrived behind the bytes not yet taken (moved to the front first).
    fn fill(&mut self) -> Result<(), Error> {
        self.buf.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(Error::Closed),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Error::Closed),
            Err(e) => Err(Error::Io(e)),
        }
    }
}
