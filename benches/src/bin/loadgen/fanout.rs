//! `ws-fanout`: the WebSocket edge's pushes under load. `--subscribers` connections, each
//! authenticated as its own user (through a stand-in authentication service this mode serves on
//! `--auth-port`: token `user-N` is user N), subscribe to the market's depth and deals and to
//! their user's orders and assets; meanwhile orders that cross come over HTTP, open loop at
//! `--rate`, from those same users in turn. Measured:
//! - push latency: from the order's acknowledgement (its HTTP reply read here) to the first
//!   `order.update` about it read on its user's connection (both on this machine's clock; a push
//!   read before the reply counts as 0); and the same between their arrivals at the two sockets,
//!   stamped by the kernel (`arrival.rs`), which leaves out how late this program's own threads
//!   were scheduled to read them;
//! - pushes received per second, by method;
//! - the `viaduct-ws` thread's CPU over the run (with `--pid`);
//! - order → ack latency with the subscribers against the same schedule run first without them.
//!
//! The server's config needs `[edges.ws]` and `[auth] url = "http://127.0.0.1:<auth-port>/auth"`
//! (`benches/ws-figures.sh` writes one).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use tungstenite::{Message, WebSocket};

use crate::arrival::{self, Stamped};
use crate::{connect, fund, http_request, http_responses, order_id, put_limit_body, report, scheduled, Args};

type Ws = WebSocket<Stamped>;

/// An order's id, when its acknowledgement (or push) was read, and when it arrived.
type Sighting = (u64, Instant, Option<SystemTime>);

/// Serves `GET` with `Authorization: user-N` as `{"code": 0, ... "user_id": N}`, on keep-alive
/// connections, a thread each.
fn auth_service(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the auth port is free");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut user = 0u64;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = l.split_once(':') {
                            if name.eq_ignore_ascii_case("authorization") {
                                user = value.trim().strip_prefix("user-").and_then(|n| n.parse().ok()).unwrap_or(0);
                            }
                        }
                    }
                    let body = format!(r#"{{"code":0,"message":"ok","data":{{"user_id":{user}}}}}"#);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if out.write_all((head + &body).as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Opens `n` connections, user `1 + i` each, authenticated and subscribed; sockets left
/// non-blocking.
fn subscribers(args: &Args, n: usize) -> Vec<Ws> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let tcp = TcpStream::connect(args.ws).expect("connect to the WebSocket edge");
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        arrival::stamp(&tcp);
        let (mut ws, _) = tungstenite::client(format!("ws://{}/", args.ws), Stamped(tcp, None)).expect("a handshake");
        let user = 1 + i as u64;
        let requests = [
            format!(r#"{{"id":1,"method":"server.auth","params":["user-{user}","web"]}}"#),
            r#"{"id":2,"method":"order.subscribe","params":["BTCBCH"]}"#.to_string(),
            r#"{"id":3,"method":"asset.subscribe","params":["BTC","BCH"]}"#.to_string(),
            r#"{"id":4,"method":"depth.subscribe","params":["BTCBCH",10,"0"]}"#.to_string(),
            r#"{"id":5,"method":"deals.subscribe","params":["BTCBCH"]}"#.to_string(),
        ];
        for r in requests {
            ws.send(Message::text(r)).unwrap();
        }
        all.push(ws);
    }
    // Each connection's five replies (pushes may come between them).
    for ws in &mut all {
        let mut replies = 0;
        while replies < 5 {
            match ws.read().expect("a reply") {
                Message::Text(t) if t.as_str().contains(r#""result":{"status":"success"}"#) => replies += 1,
                Message::Text(t) if t.as_str().contains(r#""error":{"#) => panic!("refused: {t}"),
                _ => {}
            }
        }
        ws.get_mut().0.set_nonblocking(true).unwrap();
    }
    all
}

/// What one reader saw: when each `order.update` came (order id, time), pushes by method.
#[derive(Default)]
struct Seen {
    orders: Vec<Sighting>,
    counts: std::collections::BTreeMap<String, u64>,
    closed: usize,
}

/// The order id of an `order.update` push, `{"id":null,"method":"order.update","params":[E,{"id":N,…`.
fn pushed_order(text: &str) -> Option<u64> {
    let at = text.find(r#""params":["#)? + r#""params":["#.len();
    let rest = &text[at..];
    let at = rest.find(r#"{"id":"#)? + r#"{"id":"#.len();
    let digits = &rest[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

fn method(text: &str) -> &str {
    let Some(at) = text.find(r#""method":""#) else { return "reply" };
    let rest = &text[at + r#""method":""#.len()..];
    &rest[..rest.find('"').unwrap_or(rest.len())]
}

/// Reads every connection of `conns` until `stop`, noting what came (one `epoll` set: waiting
/// costs nothing per idle connection).
fn read_all(mut conns: Vec<Ws>, stop: Arc<AtomicBool>, counting: Arc<AtomicBool>) -> Seen {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let mut seen = Seen::default();
    let epoll = Epoll::new(EpollCreateFlags::empty()).expect("epoll");
    for (i, ws) in conns.iter().enumerate() {
        epoll.add(&ws.get_ref().0, EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).expect("epoll add");
    }
    let mut events = vec![EpollEvent::empty(); 1024];
    while !stop.load(Ordering::Acquire) {
        let n = match epoll.wait(&mut events, EpollTimeout::from(100u16)) {
            Ok(n) => n,
            Err(_) => continue,
        };
        for e in &events[..n] {
            let i = e.data() as usize;
            loop {
                match conns[i].read() {
                    Ok(Message::Text(t)) => {
                        let now = Instant::now();
                        let text = t.as_str();
                        let m = method(text);
                        if m == "order.update" {
                            if let Some(id) = pushed_order(text) {
                                seen.orders.push((id, now, conns[i].get_ref().1));
                            }
                        }
                        if counting.load(Ordering::Relaxed) {
                            *seen.counts.entry(m.to_string()).or_default() += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        let _ = epoll.delete(&conns[i].get_ref().0);
                        seen.closed += 1;
                        break;
                    }
                }
            }
        }
    }
    seen
}

/// CPU time (user + system, in clock ticks of 10 ms) of `pid`'s thread named `name`.
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
    }
    None
}

/// Orders that cross over HTTP, open loop: order `k` (over all connections) is user
/// `1 + k mod users`'s, an ask when `k` is even, a bid at the same price when odd. Each reply's
/// order id and arrival time go to `acks`.
fn orders(args: &Args, acks: Arc<Mutex<Vec<Sighting>>>) -> Histogram<u64> {
    let streams = connect(args, args.addr);
    for s in &streams {
        arrival::stamp(s);
    }
    let n = streams.len() as u64;
    let per_conn = args.rate * args.seconds / n;
    let gap = Duration::from_nanos(1_000_000_000 / args.rate);
    let users = args.users;
    let request = move |c: usize, i: u64, out: &mut Vec<u8>| {
        let k = i * n + c as u64;
        out.extend_from_slice(http_request(&put_limit_body(k, users, 1 + k % 2, "1")).as_bytes());
    };
    let parse = move |buf: &mut Vec<u8>, oks: &mut Vec<bool>| {
        http_responses(buf, |_, body| match order_id(body) {
            Some(id) => {
                acks.lock().unwrap().push((id, Instant::now(), arrival::last()));
                oks.push(true);
            }
            None => oks.push(false),
        })
    };
    let (hist, errors) = scheduled(streams, per_conn, gap, request, parse);
    if errors > 0 {
        println!("{errors} orders were answered with an error");
    }
    hist
}

pub(crate) fn run(args: &Args) {
    raise_open_files();
    auth_service(args.auth_port);
    let n = args.subscribers;
    let args = &Args { users: n.max(2) as u64, ..args.clone() };
    fund(args);
    // The same schedule without subscribers first: the baseline of order → ack.
    let unused = Arc::new(Mutex::new(Vec::new()));
    let base = orders(args, unused);
    report(args, &format!("ws-fanout-{}-base", args.rate), &base);
    let opened = Instant::now();
    let conns = subscribers(args, n);
    println!("{n} subscribers connected, authenticated and subscribed in {:.1} s", opened.elapsed().as_secs_f64());
    let (stop, counting) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut halves: Vec<Vec<Ws>> = vec![Vec::new(), Vec::new()];
    for (i, ws) in conns.into_iter().enumerate() {
        halves[i % 2].push(ws);
    }
    let readers: Vec<_> = halves
        .into_iter()
        .map(|half| {
            let (stop, counting) = (Arc::clone(&stop), Arc::clone(&counting));
            std::thread::spawn(move || read_all(half, stop, counting))
        })
        .collect();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let ticks_before = args.pid.and_then(|p| thread_ticks(p, "viaduct-ws"));
    counting.store(true, Ordering::Release);
    let started = Instant::now();
    let loaded = orders(args, Arc::clone(&acks));
    let elapsed = started.elapsed();
    counting.store(false, Ordering::Release);
    let ticks_after = args.pid.and_then(|p| thread_ticks(p, "viaduct-ws"));
    // The pushes of the last orders are on their way: a bounded wait for them.
    // (A benchmark's drain, not a synchronisation: what has not come within a second is counted
    // as never pushed.)
    let acked = acks.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Release);
    let seen: Vec<Seen> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    report(args, &format!("ws-fanout-{}-{n}-ack", args.rate), &loaded);
    // The first push about each order: when it was read, and when it arrived.
    let mut first: std::collections::HashMap<u64, (Instant, Option<SystemTime>)> = std::collections::HashMap::new();
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut closed = 0;
    for s in &seen {
        for &(id, at, arrived) in &s.orders {
            first.entry(id).and_modify(|t| *t = (*t).min((at, arrived))).or_insert((at, arrived));
        }
        for (m, c) in &s.counts {
            *counts.entry(m.clone()).or_default() += c;
        }
        closed += s.closed;
    }
    let mut push = Histogram::<u64>::new(3).unwrap();
    // Arrival of the push less arrival of the acknowledgement (0 when the push came first).
    let mut arrived = Histogram::<u64>::new(3).unwrap();
    let (mut missing, mut early) = (0, 0);
    for &(id, acked_at, ack_arrived) in acks.lock().unwrap().iter() {
        if let (Some((_, Some(pushed))), Some(ack)) = (first.get(&id), ack_arrived) {
            let after = pushed.duration_since(ack).unwrap_or(Duration::ZERO);
            arrived.record(after.as_nanos().max(1) as u64).ok();
        }
        match first.get(&id).map(|&(at, _)| at) {
            Some(at) if at >= acked_at => {
                push.record(at.duration_since(acked_at).as_nanos().max(1) as u64).ok();
            }
            Some(_) => {
                early += 1;
                push.record(1).ok();
            }
            None => missing += 1,
        }
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "ws-fanout rate {} subscribers {n}: order.update after the ack p50 {:.0} µs, p99 {:.0}, p99.9 {:.0}, max {:.0} ({} orders, {early} pushed before their reply was read, {missing} never pushed, {closed} connections closed)",
        args.rate,
        q(&push, 0.5),
        q(&push, 0.99),
        q(&push, 0.999),
        push.max() as f64 / 1000.0,
        acked
    );
    println!(
        "  the same between their arrivals at the sockets (kernel stamps, {} orders): p50 {:.0} µs, p99 {:.0}, p99.9 {:.0}, max {:.0}",
        arrived.len(),
        q(&arrived, 0.5),
        q(&arrived, 0.99),
        q(&arrived, 0.999),
        arrived.max() as f64 / 1000.0
    );
    let secs = elapsed.as_secs_f64();
    let per_s: Vec<String> = counts.iter().map(|(m, c)| format!("{m} {:.0}", *c as f64 / secs)).collect();
    println!("  pushes received per second: {}", per_s.join(", "));
    if let (Some(a), Some(b)) = (ticks_before, ticks_after) {
        println!("  viaduct-ws CPU over the run: {:.0} %", (b - a) as f64 / secs);
    }
    println!(
        "  order → ack p50 {:.0} µs with subscribers, {:.0} µs without: ratio {:.2}",
        q(&loaded, 0.5),
        q(&base, 0.5),
        q(&loaded, 0.5) / q(&base, 0.5)
    );
    crate::write_hgrm(&args.out.join(format!("ws-fanout-{}-{n}-push.hgrm", args.rate)), &push);
}

/// Ten thousand connections need more descriptors than the usual soft limit.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
