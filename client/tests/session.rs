//! The session against a scripted server on loopback: the login it sends and what it makes of
//! the answers, the sequence check, heartbeats answered, and the end of the connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use viaduct_client::wire::{self, market_bytes, reason, ClientMsg, Decoded, ServerMsg};
use viaduct_client::{Error, Login, Session};

const SECRET: &[u8] = b"a-secret-of-32-bytes-for-tests!!";
const NONCE: [u8; 32] = [9; 32];

/// The server's end: reads client messages, writes server messages.
struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn read(&mut self) -> Option<ClientMsg> {
        loop {
            match wire::decode_client(&self.buf).unwrap() {
                Decoded::Msg(m, used) => {
                    self.buf.drain(..used);
                    return Some(m);
                }
                Decoded::Invalid { .. } => panic!("the client sent an invalid message"),
                Decoded::Partial => {
                    let mut chunk = [0u8; 256];
                    match self.s.read(&mut chunk) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
    }

    fn write(&mut self, msgs: &[ServerMsg]) {
        let mut out = Vec::new();
        for m in msgs {
            wire::encode_server(m, &mut out);
        }
        self.s.write_all(&out).unwrap();
    }

    /// Answers HELLO with the challenge and checks the LOGIN's signature.
    fn challenge(&mut self) -> ClientMsg {
        assert_eq!(self.read(), Some(ClientMsg::Hello { key: market_bytes("maker") }));
        self.write(&[ServerMsg::Challenge { nonce: NONCE }]);
        let login = self.read().unwrap();
        let mac = match login {
            ClientMsg::Login { mac } | ClientMsg::LoginReplay { mac, .. } => mac,
            other => panic!("{other:?}"),
        };
        assert!(wire::login_mac_ok(SECRET, &NONCE, &market_bytes("maker"), &mac), "signed with the secret");
        login
    }
}

/// A session connected to a server thread that runs `script`.
fn scripted(script: impl FnOnce(Peer) + Send + 'static) -> (Session, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        script(Peer { s, buf: Vec::new() });
    });
    let mut session = Session::connect(addr).unwrap();
    session.stream().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (session, server)
}

fn accepted(seq: u64, order_id: u64) -> ServerMsg {
    ServerMsg::Accepted {
        seq,
        time_us: 1,
        client_id: order_id,
        order_id,
        market: market_bytes("BTCBCH"),
        side: 1,
        kind: 1,
        price: 1,
        amount: 1,
    }
}

#[test]
fn a_login_reports_what_the_server_answered_and_checks_every_sequence_after() {
    let (mut s, server) = scripted(|mut p| {
        p.challenge();
        p.write(&[ServerMsg::LoginAck { seq: 1, user: 11, heartbeat_ms: 1000 }]);
        p.write(&[accepted(2, 100), ServerMsg::Heartbeat { last_seq: 2 }, accepted(3, 101)]);
        // The heartbeat is answered by `next_report`.
        assert_eq!(p.read(), Some(ClientMsg::Heartbeat));
        // A report is missing: 5 where 4 was next.
        p.write(&[accepted(5, 103)]);
    });
    assert_eq!(s.login("maker", SECRET).unwrap(), Login { user: 11, heartbeat_ms: 1000, session: 0, last_seq: 1 });
    assert_eq!(s.next_report().unwrap(), accepted(2, 100));
    assert_eq!(s.next_report().unwrap(), accepted(3, 101));
    assert_eq!(s.last_seq(), 3);
    assert!(matches!(s.next_message(), Err(Error::Gap { expected: 4, got: 5 })));
    server.join().unwrap();
}

#[test]
fn a_resumed_session_asks_for_its_reports_and_checks_them_from_there() {
    let (mut s, server) = scripted(|mut p| {
        let login = p.challenge();
        let ClientMsg::LoginReplay { session: 77, from_seq: 6, .. } = login else { panic!("{login:?}") };
        p.write(&[ServerMsg::SessionAck { session: 77, last_seq: 7, user: 11, heartbeat_ms: 500 }]);
        p.write(&[accepted(6, 1), accepted(7, 2), accepted(7, 2)]);
    });
    let login = s.login_resumable("maker", SECRET, 77, 6).unwrap();
    assert_eq!(login, Login { user: 11, heartbeat_ms: 500, session: 77, last_seq: 7 });
    assert_eq!(s.next_message().unwrap().seq(), Some(6));
    assert_eq!(s.next_message().unwrap().seq(), Some(7));
    assert!(matches!(s.next_message(), Err(Error::Gap { expected: 8, got: 7 })), "a repeated report is caught too");
    server.join().unwrap();
}

#[test]
fn a_refused_login_and_a_closed_connection_are_errors() {
    let (mut s, server) = scripted(|mut p| {
        p.challenge();
        p.write(&[ServerMsg::LoginReject { reason: reason::BAD_SIGNATURE }]);
    });
    assert!(matches!(s.login("maker", SECRET), Err(Error::LoginRejected(reason::BAD_SIGNATURE))));
    assert!(matches!(s.next_message(), Err(Error::Closed)));
    server.join().unwrap();
    // Bytes that are no message of this version.
    let (mut s, server) = scripted(|mut p| {
        p.s.write_all(&[8, 0, 0x7F, wire::VERSION, 0, 0, 0, 0]).unwrap();
    });
    assert!(matches!(s.next_message(), Err(Error::Malformed)));
    server.join().unwrap();
}

#[test]
fn queued_messages_go_out_in_order_on_flush() {
    let (mut s, server) = scripted(|mut p| {
        let got: Vec<ClientMsg> = (0..3).map(|_| p.read().unwrap()).collect();
        let market = market_bytes("BTCBCH");
        assert_eq!(
            got,
            [1, 2, 3].map(|order_id| ClientMsg::Cancel { market, order_id }),
            "in the order they were queued"
        );
    });
    let market = market_bytes("BTCBCH");
    for order_id in 1..=3 {
        s.queue(&ClientMsg::Cancel { market, order_id }).unwrap();
    }
    s.flush().unwrap();
    server.join().unwrap();
}

#[test]
fn a_queue_past_its_bound_is_written_without_waiting_for_a_flush() {
    let market = market_bytes("BTCBCH");
    // 2,400 CANCELs of 28 bytes: past 64 KiB the queue is written; the server reads what came
    // without any flush (its reads would time out otherwise).
    let (mut s, server) = scripted(move |mut p| {
        for order_id in 1..=2_000 {
            assert_eq!(p.read(), Some(ClientMsg::Cancel { market, order_id }));
        }
    });
    for order_id in 1..=2_400 {
        s.queue(&ClientMsg::Cancel { market, order_id }).unwrap();
    }
    server.join().unwrap();
}
