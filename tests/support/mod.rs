//! What the end-to-end tests share.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// `viaduct run --stdio` with `args`, its standard input and output piped, its log discarded.
pub fn spawn_stdio(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(["run", "--stdio"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("viaduct starts")
}

/// Every matcher method of SPEC B2.4 and each of its errors (B5.8), in an order that makes each
/// one meaningful; edge tests send it and compare with the matcher's own replies.
pub fn every_method_script() -> Vec<(&'static str, Value)> {
    vec![
        ("balance.update", json!([1, "BTC", "deposit", 1, "10", {"a": 1}])),
        ("balance.update", json!([2, "BCH", "deposit", 1, "10", {}])),
        ("balance.update", json!([2, "BCH", "deposit", 1, "10", {}])),
        ("balance.update", json!([3, "BCH", "withdraw", 1, "-1", {}])),
        ("order.put_limit", json!([1, "BTCBCH", 1, "2", "0.1", "0.002", "0.001", "s"])),
        ("order.put_limit", json!([1, "BTCBCH", 1, "1", "0.3", "0.002", "0.001", "s"])),
        ("order.put_limit", json!([2, "BTCBCH", 2, "1", "0.2", "0.002", "0.001", "s"])),
        ("order.put_limit", json!([2, "BTCBCH", 2, "1000", "0.2", "0.002", "0.001", "s"])),
        ("order.put_limit", json!([1, "BTCBCH", 1, "0.0001", "0.2", "0.002", "0.001", "s"])),
        ("order.put_market", json!([2, "BTCBCH", 2, "0.05", "0.002", "m"])),
        ("order.put_market", json!([2, "ETHBCH", 2, "0.05", "0.002", "m"])),
        ("order.put_market", json!([1, "BTCBCH", 1, "100", "0.002", "m"])),
        ("order.put_market", json!([2, "BTCBCH", 2, "0.0000001", "0.002", "m"])),
        ("order.cancel", json!([2, "BTCBCH", 2])),
        ("order.cancel", json!([1, "BTCBCH", 999])),
        ("order.cancel", json!([1, "BTCBCH", 2])),
        ("order.book", json!(["BTCBCH", 1, 0, 10])),
        ("order.book", json!(["BTCBCH", 1, 0, 102])),
        ("order.depth", json!(["BTCBCH", 10, "0.1"])),
        ("order.depth", json!(["BTCBCH", 10, "-1"])),
        ("order.pending", json!([1, "BTCBCH", 0, 10])),
        ("order.pending_detail", json!(["BTCBCH", 1])),
        ("order.pending_detail", json!(["BTCBCH", 3])),
        ("balance.query", json!([1])),
        ("balance.query", json!([0])),
        ("asset.list", json!([])),
        ("asset.summary", json!([])),
        ("market.list", json!([])),
        ("market.summary", json!(["BTCBCH"])),
        ("market.summary", json!(["NOPE"])),
    ]
}

/// What some steps of [`every_method_script`] must answer, worked out by hand from SPEC B2.4 and
/// B5 rather than by running a matcher, so that an edge test comparing with the matcher also
/// checks the answers themselves: (step, error, result without times).
pub fn answers_by_hand() -> Vec<(usize, Value, Value)> {
    let order = |id: u64, side: u8, user: u32, price: &str, amount: &str, left: &str, deal: [&str; 3]| {
        json!({"id": id, "market": "BTCBCH", "source": "s", "type": 1, "side": side, "user": user,
               "price": price, "amount": amount, "taker_fee": "0.002", "maker_fee": "0.001", "left": left,
               "deal_stock": deal[0], "deal_money": deal[1], "deal_fee": deal[2]})
    };
    let error = |code: u32, message: &str| json!({"code": code, "message": message});
    vec![
        (0, Value::Null, json!({"status": "success"})),
        // The same (user, asset, business, business_id) again.
        (2, error(10, "repeat update"), Value::Null),
        // A withdrawal from nothing.
        (3, error(11, "balance not enough"), Value::Null),
        // Asks of 2 at 0.1 and 1 at 0.3 rest.
        (4, Value::Null, order(1, 1, 1, "0.1", "2", "2", ["0", "0", "0"])),
        // A bid of 1 at 0.2 takes 1 of the ask at 0.1 (the maker's price): 0.1 BCH, and the
        // taker's 0.2 % fee of the 1 BTC it receives.
        (6, Value::Null, order(3, 2, 2, "0.2", "1", "0", ["1", "0.1", "0.002"])),
        // 1000 × 0.2 = 200 BCH, of the 9.9 left.
        (7, error(10, "balance not enough"), Value::Null),
        // Below min_amount 0.001, checked after the balance.
        (8, error(11, "amount too small"), Value::Null),
    ]
}

/// Checks `reply`, step `step` of [`every_method_script`], against [`answers_by_hand`].
pub fn check_by_hand(step: usize, reply: &Value) {
    for (s, error, result) in answers_by_hand() {
        if s == step {
            let reply = strip_times(reply.clone());
            assert_eq!((&reply["error"], &reply["result"]), (&error, &result), "step {step}, by hand");
        }
    }
}

/// `v` without `ctime` and `mtime`, which differ between an engine and a reference matcher.
pub fn strip_times(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("ctime");
            map.remove("mtime");
            for x in map.values_mut() {
                *x = strip_times(x.take());
            }
        }
        Value::Array(items) => {
            for x in items.iter_mut() {
                *x = strip_times(x.take());
            }
        }
        _ => {}
    }
    v
}

/// Checks that the history at `url` holds exactly the rows the journal in `data` leaves, table by
/// table over every shard, and that its committed sequence is `seq`; returns the rows per table.
pub fn assert_history_matches_journal(data: &std::path::Path, url: &str, seq: u64) -> [i64; 5] {
    let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
    let mut expected = RowCount { spec: spec.clone(), counts: [0; 5] };
    viaduct_journaler::recovery::recover(data, &spec, |_| {}, &mut expected).unwrap();
    let mut store = viaduct_publishers::history::store::open(url).unwrap();
    assert_eq!(store.committed_seq().unwrap(), seq, "history's committed sequence");
    let tables = ["balance_history", "order_history", "order_detail", "deal_history", "user_deal_history"];
    for (table, want) in tables.iter().zip(expected.counts) {
        let mut got = 0;
        for shard in 0..store.layout().shards() {
            let name = store.layout().table(table, shard);
            got += store.select(&format!("SELECT COUNT(*) FROM `{name}`"), &[]).unwrap()[0][0].as_i64();
        }
        assert_eq!(got, want, "{table}: rows in history against rows the journal leaves");
    }
    expected.counts
}

/// Counts the history rows each replayed command leaves, per table.
struct RowCount {
    spec: viaduct_matcher::Spec,
    counts: [i64; 5],
}

impl viaduct_journaler::recovery::Downstream for RowCount {
    fn load(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn apply(&mut self, _: u64, events: viaduct_matcher::EventsView<'_>) {
        let mut rows = viaduct_publishers::history::Rows::default();
        rows.add(&self.spec, events);
        let (b, o, d) = (rows.balances.len() as i64, rows.orders.len() as i64, rows.deals.len() as i64);
        for (i, n) in [b, o, o, d, d].into_iter().enumerate() {
            self.counts[i] += n;
        }
    }
}

/// Waits until `done()` holds, looking every few milliseconds, and fails naming `what` if it does
/// not within `within`. The one way the end-to-end tests wait: for a condition, with a deadline.
pub fn wait_until(what: &str, within: std::time::Duration, done: impl FnMut() -> bool) {
    assert!(poll_until(within, done), "waited {within:?} in vain for {what}");
}

/// Whether `cond` came true before `within` passed (looked at every 10 ms): for a test that says
/// more than [`wait_until`] when it did not.
pub fn poll_until(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// `viaduct run` on the network edges, on ports of its own (loopback), with `extra` appended to
/// the example config; killed when dropped.
pub struct Running {
    pub child: Child,
    pub http: std::net::SocketAddr,
    pub tcp: std::net::SocketAddr,
    /// The server's data directory.
    pub data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn start(extra: &str) -> Running {
        Running::start_with("", extra, None)
    }

    /// [`Running::start`] with the process's open-files limit (soft and hard) set to `files`.
    pub fn start_with_files(extra: &str, files: Option<u64>) -> Running {
        Running::start_with("", extra, files)
    }

    /// [`Running::start`] with `http_keys` in `[edges.http]` and, if given, the open-files limit
    /// (soft and hard) set to `files`.
    pub fn start_with(http_keys: &str, extra: &str, files: Option<u64>) -> Running {
        Running::start_edited(http_keys, extra, files, &|example| example.to_string())
    }

    /// [`Running::start_with`] on the example config as `edit` changes it.
    pub fn start_edited(http_keys: &str, extra: &str, files: Option<u64>, edit: &dyn Fn(&str) -> String) -> Running {
        Running::start_full(http_keys, extra, files, edit, &[])
    }

    /// [`Running::start_edited`] with `envs` in the server's environment.
    pub fn start_full(
        http_keys: &str,
        extra: &str,
        files: Option<u64>,
        edit: &dyn Fn(&str) -> String,
        envs: &[(&str, &str)],
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (http, tcp) = (free_addr(), free_addr());
        let example = format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"));
        let mut config = edit(&std::fs::read_to_string(example).unwrap());
        config.push_str(&format!(
            "\n[edges.http]\nbind = \"{http}\"\n{http_keys}\n[edges.tcp]\nbind = \"{tcp}\"\n{extra}\n"
        ));
        let path = dir.path().join("viaduct.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = match files {
            // util-linux's prlimit, on every Debian.
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(env!("CARGO_BIN_EXE_viaduct"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_viaduct")),
        };
        let child = command
            .envs(envs.iter().copied())
            .args(["run", "--config", path.to_str().unwrap(), "--data-dir"])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("viaduct starts");
        let mut child = child;
        let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        wait_until("viaduct to listen on both edges", std::time::Duration::from_secs(30), || {
            assert!(child.try_wait().unwrap().is_none(), "viaduct exited: {}", log());
            std::net::TcpStream::connect(http).is_ok() && std::net::TcpStream::connect(tcp).is_ok()
        });
        Running { child, http, tcp, data: dir.path().join("data"), _dir: dir }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now, for a server a test starts later, never the same twice in
/// one test process. It is taken below the kernel's ephemeral range (`ip_local_port_range`), where
/// `bind(0)` and outgoing connections take theirs: a port from that range could become the source
/// port of some connection (a broker client retrying, a test's own request) before the server it
/// was meant for binds it, and that server would then fail to start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOWEST);
    if span < 1_000 {
        // A kernel whose ephemeral range starts low: the kernel's pick it is.
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    // Test processes run one after another, but their servers may outlive them a moment: each
    // process starts at a place of its own.
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free loopback port below {ephemeral_low}");
        let port = (LOWEST + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A GET of `path`: (status, body).
pub fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text[text.find("\r\n\r\n").unwrap() + 4..].to_string())
}

/// The value of the sample named exactly `name` (with its labels) in `text`.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The value of `series` (exactly, labels included) on the `/metrics` of `addr`.
pub fn metric(addr: std::net::SocketAddr, series: &str) -> Option<u64> {
    sample(&get(addr, "/metrics").1, series)
}

/// One HTTP JSON-RPC call to `addr` on a connection of its own; the response's JSON body.
pub fn http(addr: std::net::SocketAddr, method: &str, params: Value) -> Value {
    use std::io::{Read, Write};
    let body = json!({"id": 1, "method": method, "params": params}).to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let at = text.find("\r\n\r\n").expect("a whole response") + 4;
    serde_json::from_str(&text[at..]).unwrap()
}
