//! Load generator: open-loop requests at a fixed offered rate over many connections, so that a
//! stall delays every request scheduled behind it and shows in the histogram (no coordinated
//! omission). Each request's latency runs from when it was due to when its reply arrived.
//!
//! Modes:
//! - `http`: `order.put_limit` over HTTP/1.1 keep-alive to a running `viaduct run`;
//! - `echo`: the same schedule against a loopback TCP echo server it starts itself (one thread
//!   waiting on every connection, as an edge's event loop does), with messages of the same size:
//!   the network baseline for the same run;
//! - `max`: as many `order.put_limit` as the server takes, each connection keeping a window of
//!   requests in flight, for the sustained rate.
//! - `tcp`: NEW_LIMIT over the binary order entry (`edges/PROTOCOL.md`), open loop like `http`;
//!   latency runs to the order's ACCEPTED (or REJECTED). Connection i logs in as key `load<i>`
//!   (see `benches/loadgen.toml`). `--echo-bytes 48` makes `echo` its baseline. `http`, `echo`
//!   and `tcp` send from one thread and read from another, whatever the number of connections.
//! - `tcp-max`: as `max`, over the binary order entry.
//! - `echo-max`: `tcp-max`'s closed loop against the loopback echo server (`--echo-bytes 48`):
//!   the baseline for `tcp-max` in the same run.
//! - `disk`: `write` + `fdatasync` of 64 bytes, one after the other, in `--dir`: the baseline for
//!   `fsync` durability.
//! - `ws-fanout`: WebSocket subscribers to depth, deals and their own orders and assets while
//!   orders that cross come over HTTP (`fanout.rs`).
//!
//! It prints p50 … p99.99 and max, writes `<out>/<name>.hgrm` and `<out>/<name>.svg` (a
//! latency-by-percentile plot).
//!
//! `cargo run --release -p viaduct-benches --bin loadgen -- --mode http --rate 20000 --seconds 5`
//!
//! One file (past the ~500 lines STYLE asks of the server's code): a tool, whose modes share the
//! connection, pacing and histogram helpers that sit beside them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use viaduct_client::wire::{self as binary, ClientMsg, Decoded, LimitOptions, ServerMsg};
use viaduct_client::Session;

mod arrival;
mod fanout;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// http, echo, max, tcp, tcp-max, echo-max, disk, sweep or ws-fanout.
    #[arg(long, default_value = "http")]
    mode: String,
    /// The server's HTTP address (http and max modes).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Requests per second offered, over all connections (http and echo modes).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests in flight per connection (max, tcp-max and echo-max modes).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Where the .hgrm and .svg files go.
    #[arg(long, default_value = "loadgen-out")]
    out: PathBuf,
    /// Users the orders are spread over (each is funded first).
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// The TCP edge's address (tcp and tcp-max modes).
    #[arg(long, default_value = "127.0.0.1:7316")]
    tcp: SocketAddr,
    /// The secret of the load<i> keys.
    #[arg(long, default_value = "loadgen-secret-0123456789")]
    secret: String,
    /// Message size of the echo mode (default: the HTTP body's size).
    #[arg(long)]
    echo_bytes: Option<usize>,
    /// Where the disk mode writes.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// The orders of the binary modes and of `max`: `cross` (asks and bids in turn at one price,
    /// so every bid trades and leaves history rows) or `rest` (a bid below the market, then its
    /// cancel, by client order id over TCP and by the order id of its reply over HTTP: nothing
    /// trades, no history row, so the edge and the pipeline are measured without the history
    /// writer); `max` and `tcp-max` also take `book` (that bid, never cancelled: the book grows by
    /// every order), and `max` takes `mixed` (one order in ten crosses as in `cross`, the others
    /// rest and are cancelled as in `rest`: a market maker's order-to-trade ratio of ten).
    #[arg(long, default_value = "cross")]
    flow: String,
    /// Resting asks the sweep mode places before its one market bid takes them all.
    #[arg(long, default_value_t = 10_000)]
    resting: u64,
    /// The server's process id: its resident set (sweep mode), its CPU time per order (max mode),
    /// its WebSocket thread's CPU time (ws-fanout mode).
    #[arg(long)]
    pid: Option<u32>,
    /// The WebSocket edge's address (ws-fanout mode).
    #[arg(long, default_value = "127.0.0.1:8090")]
    ws: SocketAddr,
    /// WebSocket connections, one user each (ws-fanout mode).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Where ws-fanout serves the stand-in authentication service (the server's `[auth] url`).
    #[arg(long, default_value_t = 9000)]
    auth_port: u16,
}

fn main() {
    let args = Args::parse();
    let flows: &[&str] = match args.mode.as_str() {
        "max" => &["cross", "rest", "book", "mixed"],
        "tcp-max" => &["cross", "rest", "book"],
        _ => &["cross", "rest"],
    };
    assert!(
        flows.contains(&args.flow.as_str()),
        "--flow {:?} is not one of {flows:?} in mode {}",
        args.flow,
        args.mode
    );
    // Threads inherit it: the schedule's sleeps end on time instead of up to 50 µs late.
    nix::sys::prctl::set_timerslack(1000).expect("timer slack");
    std::fs::create_dir_all(&args.out).expect("output directory");
    match args.mode.as_str() {
        "http" => {
            fund(&args);
            let hist = http_open_loop(&args, args.addr);
            report(&args, &format!("http-{}", args.rate), &hist);
        }
        "echo" => {
            let addr = echo_server();
            let body_len = args.echo_bytes.unwrap_or(order_body(0, 1).len());
            let hist = echo_open_loop(&args, addr, body_len);
            report(&args, &format!("echo-{}", args.rate), &hist);
        }
        "echo-max" => {
            let addr = echo_server();
            echo_max(&args, addr, args.echo_bytes.unwrap_or(order_body(0, 1).len()));
        }
        "max" => {
            fund(&args);
            max_rate(&args);
        }
        "tcp" => {
            fund(&args);
            let hist = tcp_open_loop(&args);
            report(&args, &format!("tcp-{}", args.rate), &hist);
        }
        "tcp-max" => {
            fund(&args);
            tcp_max(&args);
        }
        "disk" => {
            let hist = disk(&args);
            report(&Args { connections: 1, ..args.clone() }, "disk-fdatasync", &hist);
        }
        "sweep" => sweep(&args),
        "ws-fanout" => fanout::run(&args),
        other => panic!("mode {other:?} is not http, echo, max, tcp, tcp-max, echo-max, disk, sweep or ws-fanout"),
    }
}

/// Asks and bids in turn at 1: each bid fills the ask before it.
fn order_body(i: u64, users: u64) -> String {
    put_limit_body(i, users, 1 + i % 2, "1")
}

/// `order.put_limit` of 0.01 at `price` on `side`, from user `1 + i % users`, request id `i`.
fn put_limit_body(i: u64, users: u64, side: u64, price: &str) -> String {
    let user = 1 + i % users;
    format!(
        r#"{{"id":{i},"method":"order.put_limit","params":[{user},"BTCBCH",{side},"0.01","{price}","0.001","0.001","load"]}}"#
    )
}

fn http_request(body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: viaduct\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// Deposits enough for every user to place orders for the whole run.
fn fund(args: &Args) {
    let mut s = TcpStream::connect(args.addr).expect("connect to viaduct");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for user in 1..=args.users {
        for (asset, id) in [("BTC", 1_000_000_000 + user), ("BCH", 2_000_000_000 + user)] {
            let body = format!(
                r#"{{"id":1,"method":"balance.update","params":[{user},"{asset}","load",{id},"1000000",{{}}]}}"#
            );
            s.write_all(http_request(&body).as_bytes()).unwrap();
            read_response(&mut reader).expect("funding reply");
        }
    }
}

/// Reads one HTTP response; returns (status, body).
fn read_response(r: &mut impl BufRead) -> Option<(u16, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("Content-Length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// HTTP: each connection sends on a fixed schedule from one thread and reads replies on another.
/// `--connections` connections to `addr`, each sending at once (no Nagle).
fn connect(args: &Args, addr: SocketAddr) -> Vec<TcpStream> {
    (0..args.connections)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).unwrap();
            s
        })
        .collect()
}

/// `order.put_limit` over HTTP/1.1 keep-alive on [`scheduled`]'s two threads; an answer
/// succeeded if its status is 200 and its body holds no error.
fn http_open_loop(args: &Args, addr: SocketAddr) -> Histogram<u64> {
    let streams = connect(args, addr);
    let per_conn = args.rate * args.seconds / args.connections as u64;
    let gap = Duration::from_nanos(1_000_000_000 / args.rate);
    let users = args.users;
    let request = move |c: usize, i: u64, out: &mut Vec<u8>| {
        out.extend_from_slice(http_request(&order_body(i * 1000 + c as u64, users)).as_bytes());
    };
    let parse = |buf: &mut Vec<u8>, oks: &mut Vec<bool>| {
        http_responses(buf, |status, body| {
            oks.push(status == 200 && !String::from_utf8_lossy(body).contains("\"code\""))
        })
    };
    let (hist, errors) = scheduled(streams, per_conn, gap, request, parse);
    if errors > 0 {
        println!("{errors} requests were answered with an error");
    }
    hist
}

/// Hands `each` the status and body of every whole HTTP response at the front of `buf`, then
/// drops them from it (a partial one stays for the next read).
fn http_responses(buf: &mut Vec<u8>, mut each: impl FnMut(u16, &[u8])) -> Result<(), String> {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => break,
            Err(e) => return Err(format!("the server sent a malformed response: {e}")),
        };
        let len = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .ok_or("a response without a Content-Length")?;
        let end = at + head_len + len;
        if buf.len() < end {
            break;
        }
        each(head.code.unwrap_or(0), &buf[at + head_len..end]);
        at = end;
    }
    buf.drain(..at);
    Ok(())
}

/// How long the scheduled reader waits for any answer before it gives the rest up.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The open loop of `http`, `echo` and `tcp`, on two threads whatever the number of connections (each
/// thread more is another sleeper for two cores to wake, and the generator's own wake-ups then
/// count in both the server's latency and its baseline's). One thread sends: request `k` of
/// the run is due at `start + k × gap`, on connection `k mod n`; it sleeps until the next is due
/// and then writes every request that is, one write per connection. The other waits on every
/// connection at once (`poll`), reads what has arrived, and hands each connection's bytes to
/// `answers`, which takes the whole answers from the front of the buffer and pushes whether each
/// succeeded. Answers on a connection come in the order of its requests; each one's latency
/// runs from its request's due time. Prints how late the sender woke for the requests due (the
/// generator's own delay, which counts in every latency; if it is large, the generator, not the
/// server, is the bottleneck). Returns the histogram and the count of failed answers.
fn scheduled(
    streams: Vec<TcpStream>,
    per_conn: u64,
    gap: Duration,
    request: impl Fn(usize, u64, &mut Vec<u8>) + Send + 'static,
    mut answers: impl FnMut(&mut Vec<u8>, &mut Vec<bool>) -> Result<(), String>,
) -> (Histogram<u64>, u64) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    let n = streams.len() as u64;
    let total = per_conn * n;
    let gap_ns = gap.as_nanos() as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let due = move |k: u64| start + Duration::from_nanos(gap_ns * k);
    let mut writers: Vec<TcpStream> = streams.iter().map(|s| s.try_clone().unwrap()).collect();
    let sender = std::thread::spawn(move || {
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); writers.len()];
        let mut late = Histogram::<u64>::new(3).unwrap();
        let mut k = 0;
        while k < total {
            sleep_until(due(k));
            let now = Instant::now();
            late.record(now.duration_since(due(k)).as_nanos().max(1) as u64).ok();
            while k < total && due(k) <= now {
                let c = (k % n) as usize;
                request(c, k / n, &mut out[c]);
                k += 1;
            }
            for (w, bytes) in writers.iter_mut().zip(out.iter_mut()) {
                if !bytes.is_empty() {
                    if w.write_all(bytes).is_err() {
                        return late;
                    }
                    bytes.clear();
                }
            }
        }
        late
    });
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0u64;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
    let mut got = vec![0u64; streams.len()];
    let mut open: Vec<usize> = (0..streams.len()).collect();
    let mut oks = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let timeout = PollTimeout::try_from(ANSWER_WAIT).expect("a poll timeout");
    while !open.is_empty() {
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> =
                open.iter().map(|&c| PollFd::new(streams[c].as_fd(), PollFlags::POLLIN)).collect();
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    println!(
                        "no answer for {} s: {} answers missing",
                        ANSWER_WAIT.as_secs(),
                        total - got.iter().sum::<u64>()
                    );
                    break;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
            fds.iter().zip(&open).filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty())).map(|(_, &c)| c).collect()
        };
        for c in ready {
            // Stamped with its arrival when the socket asked for it (`arrival::stamp`).
            let read = arrival::read_stamped(&streams[c], &mut chunk);
            let mut done = matches!(read, Ok(0) | Err(_));
            if let Ok(len) = read {
                bufs[c].extend_from_slice(&chunk[..len]);
                if let Err(e) = answers(&mut bufs[c], &mut oks) {
                    println!("connection {c}: {e}");
                    done = true;
                }
            }
            for ok in oks.drain(..) {
                hist.record(due(got[c] * n + c as u64).elapsed().as_nanos().max(1) as u64).ok();
                got[c] += 1;
                errors += u64::from(!ok);
            }
            if got[c] >= per_conn || done {
                open.retain(|&o| o != c);
            }
        }
    }
    if let Ok(late) = sender.join() {
        let us = |q: f64| late.value_at_quantile(q) / 1000;
        println!(
            "  the sender woke after requests were due by p50 {} µs, p90 {}, p99 {}, max {} (which counts in their latency)",
            us(0.5),
            us(0.9),
            us(0.99),
            late.max() / 1000
        );
    }
    (hist, errors)
}

/// The `echo` baseline: messages of `body_len` bytes, echoed whole.
fn echo_open_loop(args: &Args, addr: SocketAddr, body_len: usize) -> Histogram<u64> {
    let streams = connect(args, addr);
    let per_conn = args.rate * args.seconds / args.connections as u64;
    let gap = Duration::from_nanos(1_000_000_000 / args.rate);
    let users = args.users;
    let request = move |c: usize, i: u64, out: &mut Vec<u8>| {
        out.extend_from_slice(pad(&order_body(i * 1000 + c as u64, users), body_len).as_bytes());
    };
    let parse = move |buf: &mut Vec<u8>, oks: &mut Vec<bool>| {
        let whole = buf.len() / body_len;
        oks.extend((0..whole).map(|_| true));
        buf.drain(..whole * body_len);
        Ok(())
    };
    scheduled(streams, per_conn, gap, request, parse).0
}

fn pad(body: &str, len: usize) -> String {
    let mut s = body.to_string();
    s.truncate(len);
    while s.len() < len {
        s.push(' ');
    }
    s
}

/// Sleeps until `due` (no spinning: on a small machine a spinning generator would steal the
/// server's cores; the timer's slack counts against the server, never for it).
fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// A loopback echo server on one thread of its own, which waits on every connection at once
/// (`poll`), as an edge's event loop does.
fn echo_server() -> SocketAddr {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let (accept, ready): (bool, Vec<usize>) = {
                let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                fds.extend(conns.iter().map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)));
                if poll(&mut fds, PollTimeout::NONE).is_err() {
                    continue;
                }
                let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (is_ready(&fds[0]), fds[1..].iter().enumerate().filter(|(_, f)| is_ready(f)).map(|(i, _)| i).collect())
            };
            let mut closed = Vec::new();
            for i in ready {
                match (&conns[i]).read(&mut buf) {
                    Ok(n) if n > 0 && (&conns[i]).write_all(&buf[..n]).is_ok() => {}
                    _ => closed.push(i),
                }
            }
            for i in closed.into_iter().rev() {
                conns.swap_remove(i);
            }
            if accept {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nodelay(true).unwrap();
                    conns.push(s);
                }
            }
        }
    });
    addr
}

/// Closed-loop saturation: each connection keeps `window` requests in flight, and writes the
/// requests that answers made due in one batch once it has read every answer that has arrived.
/// `--flow rest`: each order is a bid below the market, and its answer is followed by the cancel
/// of the order it names, so nothing trades and the book stays small (the cancels are counted
/// apart). `--flow book`: every order is that bid and stays on the book, as a benchmark that
/// posts one fixed request body over and over does. `--flow mixed`: every tenth order is a
/// crossing one, the rest as in `rest`.
fn max_rate(args: &Args) {
    let done = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let flow = args.flow.clone();
    let cpu_before = args.pid.map(server_cpu_us);
    let mut threads = Vec::new();
    for c in 0..args.connections {
        let mut s = TcpStream::connect(args.addr).unwrap();
        s.set_nodelay(true).unwrap();
        let mut r = BufReader::with_capacity(1 << 16, s.try_clone().unwrap());
        let (done, cancelled, refused) = (Arc::clone(&done), Arc::clone(&cancelled), Arc::clone(&refused));
        let (window, users, flow) = (args.window, args.users, flow.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            // What each request in flight was, oldest first (HTTP answers in order): the user of
            // an order and whether it is to be cancelled once accepted, or None for a cancel.
            let mut pending = std::collections::VecDeque::with_capacity(window);
            // When each request in flight was queued to be sent, for its latency.
            let mut sent: std::collections::VecDeque<Instant> = std::collections::VecDeque::with_capacity(window);
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut batch = Vec::with_capacity(window * 200);
            let mut put = |batch: &mut Vec<u8>,
                           pending: &mut std::collections::VecDeque<Option<(u64, bool)>>,
                           sent: &mut std::collections::VecDeque<Instant>| {
                i += 1;
                let n = i * 1000 + c as u64;
                let crosses = flow == "cross" || (flow == "mixed" && i.is_multiple_of(10));
                let body = if crosses { order_body(n, users) } else { rest_body(n, users) };
                let cancel = flow == "rest" || (flow == "mixed" && !crosses);
                pending.push_back(Some((1 + n % users, cancel)));
                sent.push_back(Instant::now());
                batch.extend_from_slice(http_request(&body).as_bytes());
            };
            for _ in 0..window {
                put(&mut batch, &mut pending, &mut sent);
            }
            while Instant::now() < until {
                if r.buffer().is_empty() && !batch.is_empty() {
                    if s.write_all(&batch).is_err() {
                        return hist;
                    }
                    batch.clear();
                }
                let Some((status, body)) = read_response(&mut r) else { return hist };
                let Some(what) = pending.pop_front() else { return hist };
                if let Some(at) = sent.pop_front() {
                    let _ = hist.record(at.elapsed().as_micros() as u64);
                }
                // Only requests the engine took count; error 3 (back-pressure) does not.
                let ok = status == 200 && !String::from_utf8_lossy(&body).contains("\"code\"");
                match (what, ok) {
                    (Some((user, cancel)), true) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if cancel {
                            let id = order_id(&body).expect("an accepted order's reply names it");
                            let cancel =
                                format!(r#"{{"id":{id},"method":"order.cancel","params":[{user},"BTCBCH",{id}]}}"#);
                            pending.push_back(None);
                            sent.push_back(Instant::now());
                            batch.extend_from_slice(http_request(&cancel).as_bytes());
                            continue;
                        }
                    }
                    (None, true) => {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    (_, false) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        // Back off as a client told "service unavailable" should.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                put(&mut batch, &mut pending, &mut sent);
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in threads {
        hist.add(t.join().unwrap()).unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    let cancels = cancelled.load(Ordering::Relaxed);
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "max ({}): each request sent to its reply: p50 {:.2} ms, p90 {:.2}, p99 {:.2}, max {:.2}",
        args.flow,
        q(0.5),
        q(0.9),
        q(0.99),
        hist.max() as f64 / 1000.0
    );
    if let (Some(before), Some(pid)) = (cpu_before, args.pid) {
        let used = server_cpu_us(pid).saturating_sub(before);
        println!(
            "max ({}): server CPU {:.1} s, {:.0} µs per accepted order",
            args.flow,
            used as f64 / 1e6,
            used as f64 / n.max(1) as f64
        );
    }
    println!(
        "max ({}): {n} order.put_limit accepted in {} s over {} connections (window {}), {cancels} cancelled, {} refused: {:.0} orders/s, {:.0} requests/s",
        args.flow,
        args.seconds,
        args.connections,
        args.window,
        refused.load(Ordering::Relaxed),
        n as f64 / args.seconds as f64,
        (n + cancels) as f64 / args.seconds as f64
    );
}

/// A bid at 0.5, below the asks of the crossing flow at 1: it rests.
fn rest_body(i: u64, users: u64) -> String {
    put_limit_body(i, users, 2, "0.5")
}

/// The order id of an order reply: `{"error":null,"result":{"id":N,…`.
fn order_id(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find(r#""result":{"id":"#)? + r#""result":{"id":"#.len();
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn report(args: &Args, name: &str, hist: &Histogram<u64>) {
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{name}: {} requests, {} connections; latency p50 {:.0} µs, p90 {:.0}, p99 {:.0}, p99.9 {:.0}, p99.99 {:.0}, max {:.0}",
        hist.len(),
        args.connections,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        hist.max() as f64 / 1000.0
    );
    write_hgrm(&args.out.join(format!("{name}.hgrm")), hist);
    plot(&args.out.join(format!("{name}.svg")), name, hist);
}

fn write_hgrm(path: &Path, hist: &Histogram<u64>) {
    let mut text = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in hist.iter_quantiles(1) {
        let p = v.quantile_iterated_to();
        let inv = if p < 1.0 { 1.0 / (1.0 - p) } else { f64::INFINITY };
        text.push_str(&format!(
            "{:12.3} {:14.12} {:10} {:14.2}\n",
            v.value_iterated_to() as f64 / 1000.0,
            p,
            v.count_since_last_iteration(),
            inv
        ));
    }
    text.push_str(&format!("#[Max = {:12.3}, Total count = {}]\n", hist.max() as f64 / 1000.0, hist.len()));
    std::fs::write(path, text).expect("write .hgrm");
}

/// Latency (µs, log scale) by percentile, drawn as "nines": 0 = p0, 1 = p90, 2 = p99, 3 = p99.9.
fn plot(path: &Path, name: &str, hist: &Histogram<u64>) {
    let points: Vec<(f64, f64)> = hist
        .iter_quantiles(4)
        .map(|v| {
            let p = v.quantile_iterated_to().min(0.99999);
            (-(1.0 - p).log10(), (v.value_iterated_to() as f64 / 1000.0).max(1.0))
        })
        .collect();
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: latency by percentile"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..5.0, (1.0..y_max).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("percentile (0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)")
        .y_desc("latency, µs")
        .draw()
        .unwrap();
    chart.draw_series(LineSeries::new(points, &BLUE)).unwrap();
    root.present().unwrap();
}

/// A logged-in binary session as key `load<index>` (user `index`).
fn tcp_session(args: &Args, index: usize) -> Session {
    let mut s = Session::connect(args.tcp).expect("connect to the tcp edge");
    let key = format!("load{index}");
    if let Err(e) = s.login(&key, args.secret.as_bytes()) {
        panic!("login as {key} failed: {e} (is viaduct running with benches/loadgen.toml?)");
    }
    s
}

/// Reads an echo connection's messages as `viaduct_client::Session` reads a binary session's:
/// one `read` takes as many as have arrived into a buffer allocated once.
struct Reader {
    buf: Box<[u8]>,
    at: usize,
    end: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl Reader {
    fn new() -> Reader {
        Reader { buf: vec![0; READ_CHUNK].into_boxed_slice(), at: 0, end: 0 }
    }

    /// Takes the next `len` bytes (one echoed message, shorter than the buffer); None when the
    /// connection ended.
    fn next_echo(&mut self, s: &mut TcpStream, len: usize) -> Option<()> {
        while self.end - self.at < len {
            if !self.fill(s) {
                return None;
            }
        }
        self.at += len;
        Some(())
    }

    /// Reads what has arrived behind the bytes not yet taken (moved to the front first); false
    /// when the connection ended.
    fn fill(&mut self, s: &mut TcpStream) -> bool {
        self.buf.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        let n = s.read(&mut self.buf[self.end..]).unwrap_or(0);
        self.end += n;
        n > 0
    }
}

/// The i-th request of a session. `cross`: asks and bids in turn at 1, so each bid fills the ask
/// before it. `rest`: a bid at 0.5 with client order id `run + i`, then the cancel of that id;
/// `run` keeps the ids of one run apart from those of earlier runs (they stay taken for 24 h).
fn binary_order(flow: &str, run: u64, i: u64) -> ClientMsg {
    let market = binary::market_bytes("BTCBCH");
    match flow {
        "rest" if i % 2 == 1 => ClientMsg::CancelByClientId { market, client_id: run + i - 1 },
        "rest" => ClientMsg::NewLimit {
            client_id: run + i,
            market,
            side: 2,
            options: LimitOptions::PLAIN,
            price: 50_000_000,
            amount: 1_000_000,
        },
        "book" => ClientMsg::NewLimit {
            client_id: 0,
            market,
            side: 2,
            options: LimitOptions::PLAIN,
            price: 50_000_000,
            amount: 1_000_000,
        },
        _ => ClientMsg::NewLimit {
            client_id: 0,
            market,
            side: 1 + (i % 2) as u8,
            options: LimitOptions::PLAIN,
            price: 100_000_000,
            amount: 1_000_000,
        },
    }
}

/// The first client order id of this run: microseconds since the epoch, times 1,000, leaves a
/// million ids a session before the next run's.
fn run_ids() -> u64 {
    let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    (us % 1_000_000_000_000) * 1_000_000
}

/// Whether `m` answers a request (rather than reporting a fill or a heartbeat); false for errors.
fn answers(m: &ServerMsg) -> Option<bool> {
    match m {
        ServerMsg::Accepted { .. } | ServerMsg::Cancelled { .. } => Some(true),
        ServerMsg::Rejected { .. } => Some(false),
        _ => None,
    }
}

fn tcp_open_loop(args: &Args) -> Histogram<u64> {
    // Logged in by the client library; then [`scheduled`] drives the raw streams, reading on one
    // thread and writing on another.
    let sessions: Vec<TcpStream> = (1..=args.connections)
        .map(|i| {
            let (stream, unread) = tcp_session(args, i).into_inner();
            assert!(unread.is_empty(), "nothing but the login's answer before the first order");
            stream
        })
        .collect();
    let per_conn = args.rate * args.seconds / args.connections as u64;
    let gap = Duration::from_nanos(1_000_000_000 / args.rate);
    let run = run_ids();
    let flow = args.flow.clone();
    let request = move |_c: usize, i: u64, out: &mut Vec<u8>| binary::encode_client(&binary_order(&flow, run, i), out);
    let parse = |buf: &mut Vec<u8>, oks: &mut Vec<bool>| {
        let mut at = 0;
        loop {
            match binary::decode_server(&buf[at..]) {
                Ok(Decoded::Msg(m, used)) => {
                    at += used;
                    oks.extend(answers(&m));
                }
                Ok(Decoded::Partial) => break,
                Ok(Decoded::Invalid { .. }) | Err(_) => {
                    return Err("the server sent an undecodable message".to_string())
                }
            }
        }
        buf.drain(..at);
        Ok(())
    };
    let (hist, errors) = scheduled(sessions, per_conn, gap, request, parse);
    if errors > 0 {
        println!("{errors} orders were rejected");
    }
    hist
}

/// Closed-loop saturation over the binary order entry: `window` orders in flight per session.
fn tcp_max(args: &Args) {
    let run = run_ids();
    let sessions: Vec<OrderLoop> = (1..=args.connections)
        .map(|i| OrderLoop { session: tcp_session(args, i), flow: args.flow.clone(), run })
        .collect();
    let (n, rejected) = windowed(args, sessions);
    // In the rest flow every other request is a cancel.
    let orders = if args.flow == "rest" { n / 2 } else { n };
    println!(
        "tcp-max ({}): {n} requests answered in {} s over {} sessions (window {}), {rejected} rejected: {:.0} requests/s, {:.0} new orders/s",
        args.flow,
        args.seconds,
        args.connections,
        args.window,
        n as f64 / args.seconds as f64,
        orders as f64 / args.seconds as f64
    );
}

/// `tcp-max`'s closed loop against the loopback echo server, with messages of `--echo-bytes`
/// (48, a binary order's size): the most a one-thread event loop that only echoes carries over
/// loopback on this machine, the baseline for `tcp-max` in the same run.
fn echo_max(args: &Args, addr: SocketAddr, len: usize) {
    let conns: Vec<EchoLoop> = connect(args, addr)
        .into_iter()
        .map(|stream| EchoLoop { stream, reader: Reader::new(), len, out: Vec::new() })
        .collect();
    let (n, _) = windowed(args, conns);
    println!(
        "echo-max: {n} messages of {len} bytes echoed in {} s over {} connections (window {}): {:.0} messages/s",
        args.seconds,
        args.connections,
        args.window,
        n as f64 / args.seconds as f64
    );
}

/// One connection of [`windowed`]'s closed loop.
trait Looped: Send + 'static {
    /// Queues the connection's i-th request; false once the connection has ended.
    fn queue(&mut self, i: u64) -> bool;
    /// Writes what is queued; false once the connection has ended.
    fn flush(&mut self) -> bool;
    /// Reads the next message: `Some(ok)` for an answer to a request, `None` for anything else;
    /// nothing once the connection has ended.
    fn answer(&mut self) -> Option<Option<bool>>;
}

/// A binary session of `tcp-max`, through the client library (which also checks that the
/// session's sequence has no gap).
struct OrderLoop {
    session: Session,
    flow: String,
    run: u64,
}

impl Looped for OrderLoop {
    fn queue(&mut self, i: u64) -> bool {
        self.session.queue(&binary_order(&self.flow, self.run, i)).is_ok()
    }

    fn flush(&mut self) -> bool {
        self.session.flush().is_ok()
    }

    fn answer(&mut self) -> Option<Option<bool>> {
        match self.session.next_message() {
            Ok(m) => Some(answers(&m)),
            Err(viaduct_client::Error::Closed) => None,
            Err(e) => panic!("tcp-max: {e}"),
        }
    }
}

/// A connection to the echo server: messages of `len` bytes.
struct EchoLoop {
    stream: TcpStream,
    reader: Reader,
    len: usize,
    out: Vec<u8>,
}

impl Looped for EchoLoop {
    fn queue(&mut self, i: u64) -> bool {
        self.out.extend_from_slice(pad(&order_body(i, 1), self.len).as_bytes());
        true
    }

    fn flush(&mut self) -> bool {
        let written = self.stream.write_all(&self.out).is_ok();
        self.out.clear();
        written
    }

    fn answer(&mut self) -> Option<Option<bool>> {
        self.reader.next_echo(&mut self.stream, self.len).map(|()| Some(true))
    }
}

/// The closed loop of `tcp-max` and `echo-max`: one thread per connection keeps `--window`
/// requests in flight for `--seconds`, refilling half the window in one write once half has been
/// answered, as a market maker's gateway would. Returns the answers and how many of them were
/// refusals.
fn windowed<C: Looped>(args: &Args, conns: Vec<C>) -> (u64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let window = args.window as u64;
    let mut threads = Vec::new();
    for mut c in conns {
        let (done, refused) = (Arc::clone(&done), Arc::clone(&refused));
        threads.push(std::thread::spawn(move || {
            let (mut sent, mut answered) = (0u64, 0u64);
            for _ in 0..window {
                if !c.queue(sent) {
                    return;
                }
                sent += 1;
            }
            if !c.flush() {
                return;
            }
            while Instant::now() < until {
                let Some(m) = c.answer() else { return };
                let Some(ok) = m else { continue };
                if !ok {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                answered += 1;
                if sent - answered <= window / 2 {
                    for _ in 0..window / 2 {
                        if !c.queue(sent) {
                            return;
                        }
                        sent += 1;
                    }
                    if !c.flush() {
                        return;
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    (done.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// `write` + `fdatasync` of 64 bytes, back to back, for `seconds`, into a file zero-filled ahead
/// as the journal's segments are (so each sync writes data, not a new size).
fn disk(args: &Args) -> Histogram<u64> {
    use std::os::unix::fs::FileExt;
    let path = args.dir.join(format!("loadgen-disk-{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    let ahead = 64u64 * 1024 * 1024;
    for block in 0..ahead / (1 << 20) {
        file.write_all_at(&vec![0u8; 1 << 20], block << 20).unwrap();
    }
    file.sync_all().unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut at = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        file.write_all_at(&[7u8; 64], at).unwrap();
        file.sync_data().unwrap();
        hist.record(t.elapsed().as_nanos().max(1) as u64).ok();
        at = (at + 64) % ahead;
    }
    drop(file);
    let _ = std::fs::remove_file(path);
    hist
}

/// One order that sweeps the book (README "Limits": deals per order), against `--addr`:
/// `--resting` asks of 0.001 BTC at 1 BCH from user 1, placed 500 at a time on one connection,
/// then one `order.put_market` bid from user 2 large enough to take them all, while a probe
/// connection sends `balance.query` every 5 ms. Prints the sweep's status, reply time and deals,
/// the probe's latency before and during it (to 200 ms after its reply), and the server's resident
/// set (`--pid`): before, at its peak (VmHWM), just after, and 5 s later.
fn sweep(args: &Args) {
    let rss = || {
        args.pid.map_or_else(
            || "(no --pid)".to_string(),
            |pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
                let field = |k: &str| {
                    status.lines().find_map(|l| l.strip_prefix(k)).map_or("?".into(), |v| v.trim().to_string())
                };
                format!("{} (peak {})", field("VmRSS:"), field("VmHWM:"))
            },
        )
    };
    let call = |s: &mut TcpStream, r: &mut BufReader<TcpStream>, body: &str| {
        s.write_all(http_request(body).as_bytes()).expect("send");
        read_response(r).expect("a reply")
    };
    let open = || {
        let s = TcpStream::connect(args.addr).expect("connect to viaduct");
        s.set_nodelay(true).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    };
    let (mut s, mut r) = open();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (user, asset, amount) in [(1, "BTC", "100000"), (2, "BCH", "10000000")] {
        let body = format!(
            r#"{{"id":1,"method":"balance.update","params":[{user},"{asset}","deposit",{stamp},"{amount}",{{}}]}}"#
        );
        let (status, reply) = call(&mut s, &mut r, &body);
        assert!(status == 200 && is_ok(&reply), "deposit refused: {}", String::from_utf8_lossy(&reply));
    }
    let ask = r#"{"id":1,"method":"order.put_limit","params":[1,"BTCBCH",1,"0.001","1","0","0","rest"]}"#;
    let mut placed = 0;
    while placed < args.resting {
        let n = 500.min(args.resting - placed);
        let batch: String = (0..n).map(|_| http_request(ask)).collect();
        s.write_all(batch.as_bytes()).expect("send");
        for _ in 0..n {
            let (status, reply) = read_response(&mut r).expect("a reply");
            assert!(status == 200 && is_ok(&reply), "ask refused: {}", String::from_utf8_lossy(&reply));
        }
        placed += n;
    }
    println!("{} resting asks placed; resident set {}", args.resting, rss());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let epoch = Instant::now();
    let probe = {
        let (stop, (mut s, mut r)) = (Arc::clone(&stop), open());
        std::thread::spawn(move || {
            let body = r#"{"id":1,"method":"balance.query","params":[1,"BTC"]}"#;
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                s.write_all(http_request(body).as_bytes()).expect("send");
                let (status, _) = read_response(&mut r).expect("a probe reply");
                assert_eq!(status, 200, "the probe was refused");
                seen.push((t - epoch, t.elapsed()));
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    // 1 BCH per resting ask of 0.001 at 1: a thousand times what taking them all costs.
    let money = args.resting;
    let body = format!(r#"{{"id":9,"method":"order.put_market","params":[2,"BTCBCH",2,"{money}","0","sweep"]}}"#);
    let (mut sw, mut swr) = open();
    let (t0, started) = (epoch.elapsed(), Instant::now());
    let (status, reply) = call(&mut sw, &mut swr, &body);
    let took = started.elapsed();
    let t1 = epoch.elapsed();
    let after = rss();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let seen = probe.join().expect("probe thread");
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
    let deal_stock = reply["result"]["deal_stock"].as_str().unwrap_or("0").to_string();
    println!(
        "sweep: HTTP {status} in {:.1} ms, deal_stock {deal_stock} ({} deals of 0.001), error {}",
        took.as_secs_f64() * 1e3,
        deal_stock.parse::<f64>().map_or(0, |d| (d * 1000.0).round() as u64),
        reply["error"]
    );
    let summary = |pick: &dyn Fn(Duration) -> bool| {
        let mut h = Histogram::<u64>::new(3).unwrap();
        seen.iter().filter(|(at, _)| pick(*at)).for_each(|(_, d)| h.record(d.as_micros() as u64).unwrap());
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} probes)",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
            h.len()
        )
    };
    println!("probe before: {}", summary(&|at| at < t0));
    println!(
        "probe during (to 200 ms after the reply): {}",
        summary(&|at| at >= t0 && at <= t1 + Duration::from_millis(200))
    );
    println!("resident set just after: {after}");
    std::thread::sleep(Duration::from_secs(5));
    println!("resident set 5 s later: {}", rss());
}

/// Whether a JSON-RPC reply body carries no error.
fn is_ok(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["error"].is_null())
}

/// The CPU time (user and system) process `pid` has used, in microseconds (`/proc/PID/stat`).
fn server_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // /proc counts in USER_HZ, which Linux fixes at 100 a second for user space.
    ticks * 10_000
}
