//! Kafka publishing (SPEC B7) against real, private tansu brokers (a Kafka-protocol broker;
//! `scripts/test` fetches it and names it in `VIADUCT_TEST_TANSU`): a seeded workload's messages
//! are, one for one and in order, what replaying the journal says they must be; and so they stay
//! when the broker is away at startup, when it is killed and restarted mid-stream (lagging past
//! `lag_max` refuses writes with error 3 meanwhile), and when viaduct is killed with SIGKILL
//! mid-stream.
//!
//! tansu keeps its log in memory: a broker that is killed comes back empty. The outage test
//! therefore reads what the first broker acknowledged before killing it, and expects the
//! restarted broker (on the bootstrap list's second address: tansu cannot bind an address its
//! killed predecessor left in TIME_WAIT) to get exactly what came after.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use support::{free_addr, free_port, http, poll_until, wait_until};
use viaduct_journaler::recovery::journal_dir;
use viaduct_journaler::segment::read_journal;
use viaduct_matcher::{Events, Matcher, Spec};
use viaduct_publishers::kafka::{messages, Topic};

/// Whether something listens on `port`: a connection that is not the kernel connecting a socket to
/// itself (which a connect to a free port in the ephemeral range now and then is).
fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// A private tansu broker on `port`, keeping its log in memory; killed when dropped.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(port: u16) -> Broker {
        let bin = std::env::var("VIADUCT_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the tansu broker {bin:?} ({e}): run the tests with scripts/test"));
        wait_until("tansu to listen", Duration::from_secs(20), || listening(port));
        Broker { child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `viaduct run` on the example config with `[kafka]` and `[metrics]`, on a data directory that
/// outlives it (so that it can be started again on it).
struct Server {
    child: Child,
    http: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    config: PathBuf,
}

impl Server {
    fn start(dir: &Path, kafka: &str) -> Server {
        let (http, tcp, metrics) = (free_addr(), free_addr(), free_addr());
        let example = format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"));
        let mut config = std::fs::read_to_string(example).unwrap();
        config.push_str(&format!(
            "\n[edges.http]\nbind = \"{http}\"\n[edges.tcp]\nbind = \"{tcp}\"\n[metrics]\nbind = \"{metrics}\"\n[kafka]\n{kafka}\n"
        ));
        let path = dir.join("viaduct.toml");
        std::fs::write(&path, config).unwrap();
        let n = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("log"))
            .count();
        let log = dir.join(format!("log{n}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct"))
            .args(["run", "--config", path.to_str().unwrap(), "--data-dir"])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("viaduct starts");
        wait_until("viaduct to listen on both edges", Duration::from_secs(30), || {
            assert!(child.try_wait().unwrap().is_none(), "viaduct exited: {}", std::fs::read_to_string(&log).unwrap());
            TcpStream::connect(http).is_ok() && TcpStream::connect(tcp).is_ok()
        });
        Server { child, http, metrics, log, config: path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A value of `/metrics`: `series` exactly, labels included.
    fn metric(&self, series: &str) -> u64 {
        support::metric(self.metrics, series).unwrap_or_else(|| panic!("no {series} on /metrics"))
    }

    fn kafka_lag(&self) -> u64 {
        self.metric(r#"viaduct_consumer_lag_commands{consumer="Kafka publisher"}"#)
    }

    /// SIGTERM, and the exit it must make within the time the publisher is given.
    fn stop(mut self) {
        use nix::sys::signal::{kill, Signal};
        kill(nix::unistd::Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let mut status = None;
        wait_until("viaduct to stop", Duration::from_secs(30), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "{}", self.log());
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deposits for `users` users in both assets of BTCBCH.
fn fund(server: &Server, users: u32) {
    for user in 1..=users {
        for (asset, amount) in [("BTC", "1000"), ("BCH", "1000")] {
            let reply = http(server.http, "balance.update", json!([user, asset, "deposit", 1, amount, {}]));
            assert!(reply["error"].is_null(), "{reply}");
        }
    }
}

/// `n` commands from `rng` that cross, rest, cancel and deposit; returns the replies' errors (the
/// commands they refused are not journaled and make no message).
fn workload(server: &Server, rng: &mut ChaCha8Rng, n: usize, users: u32) -> Vec<Value> {
    let mut orders: Vec<(u32, u64)> = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..n {
        let user = rng.gen_range(1..=users);
        let reply = match rng.gen_range(0..10) {
            0..=5 => {
                let side = rng.gen_range(1..=2);
                let amount = format!("0.{:03}", rng.gen_range(10..100));
                let price = format!("0.{}", rng.gen_range(95..=105));
                http(
                    server.http,
                    "order.put_limit",
                    json!([user, "BTCBCH", side, amount, price, "0.002", "0.001", "k"]),
                )
            }
            6 => http(
                server.http,
                "order.put_market",
                json!([user, "BTCBCH", rng.gen_range(1..=2), "0.01", "0.002", "k"]),
            ),
            7 | 8 if !orders.is_empty() => {
                let (user, id) = orders.swap_remove(rng.gen_range(0..orders.len()));
                http(server.http, "order.cancel", json!([user, "BTCBCH", id]))
            }
            _ => {
                http(server.http, "balance.update", json!([user, "BCH", "deposit", rng.gen::<u32>(), "0.5", {"n": 1}]))
            }
        };
        match reply["result"]["id"].as_u64() {
            Some(id) if reply["result"]["type"] == 1 && reply["result"]["left"] != "0" => orders.push((user, id)),
            _ => {}
        }
        if !reply["error"].is_null() {
            errors.push(reply["error"].clone());
        }
    }
    errors
}

/// One message as read back: its command's sequence, its index, its `viaduct-through` and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    seq: u64,
    part: u32,
    through: u64,
    payload: String,
}

/// Every message of partition 0 of `topic`, from the start to the end the broker reaches.
fn consume(port: u16, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", "viaduct-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    if !metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()) {
        return Vec::new();
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let header = |key: &str| -> u64 {
                    let h = m.headers().unwrap().iter().find(|h| h.key == key).unwrap();
                    std::str::from_utf8(h.value.unwrap()).unwrap().parse().unwrap()
                };
                let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                out.push(Read {
                    seq: header("viaduct-seq"),
                    part: header("viaduct-part") as u32,
                    through: header("viaduct-through"),
                    payload,
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => panic!("reading {topic} timed out"),
        }
    }
}

fn consume_all(port: u16) -> [Vec<Read>; 3] {
    Topic::ALL.map(|t| consume(port, t.name()))
}

/// What each topic must hold: the messages of every journaled command, replayed from the start
/// of the journal of a stopped server.
fn expected(data: &Path, config: &Path) -> [Vec<(u64, u32, String)>; 3] {
    let spec: Spec = viaduct::config::load(Some(config)).unwrap().spec;
    let mut matcher = Matcher::new(spec.clone());
    let (mut events, mut buf) = (Events::default(), Vec::new());
    let mut out: [Vec<(u64, u32, String)>; 3] = Default::default();
    read_journal(&journal_dir(data), spec.fingerprint(), 0, |entry, _| {
        events.clear();
        matcher.apply(entry.time_us, &entry.cmd, &mut events).expect("a journaled command applies");
        let mut parts = [0u32; 3];
        messages(&spec, events.view(), &mut buf, |t, p| {
            let i = t.index();
            out[i].push((entry.seq, parts[i], String::from_utf8(p.to_vec()).unwrap()));
            parts[i] += 1;
        });
        Ok(())
    })
    .unwrap();
    out
}

/// Each topic's messages equal, one for one and in order, what the journal says; each was
/// produced after what its `viaduct-through` says was acknowledged.
fn assert_published_exactly(read: &[Vec<Read>; 3], expected: &[Vec<(u64, u32, String)>; 3]) {
    for t in Topic::ALL {
        let (got, want) = (&read[t.index()], &expected[t.index()]);
        let got_keys: Vec<(u64, u32, &str)> = got.iter().map(|r| (r.seq, r.part, r.payload.as_str())).collect();
        let want_keys: Vec<(u64, u32, &str)> = want.iter().map(|(s, p, m)| (*s, *p, m.as_str())).collect();
        if got_keys != want_keys {
            let first = got_keys.iter().zip(&want_keys).position(|(a, b)| a != b);
            panic!(
                "topic {}: {} messages read, {} expected; first difference at {first:?}: {:?} vs {:?}",
                t.name(),
                got.len(),
                want.len(),
                first.map(|i| got_keys[i]),
                first.map(|i| want_keys[i])
            );
        }
        assert!(got.iter().all(|r| r.through < r.seq), "topic {}: a through at or past its own command", t.name());
    }
}

/// A seeded workload that trades, rests, cancels, takes the book with market orders and
/// deposits: every message is on its topic once, in journal order, as the journal says; and the
/// workload made messages of every kind (so that the comparison compares something).
/// `viaduct kafka-tail` prints them.
#[test]
fn a_workload_is_published_once_per_message_in_journal_order() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(port);
    let server = Server::start(dir.path(), &format!("brokers = \"127.0.0.1:{port}\""));
    fund(&server, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    workload(&server, &mut rng, 400, 8);
    wait_until("the publisher to catch up", Duration::from_secs(30), || server.kafka_lag() == 0);
    assert!(server.metric(r#"viaduct_kafka_messages{topic="deals"}"#) > 0);
    let config = server.config.clone();
    server.stop();
    let want = expected(&dir.path().join("data"), &config);
    assert!(want.iter().all(|t| t.len() > 20), "messages of every kind: {:?}", want.each_ref().map(Vec::len));
    assert!(want[Topic::Orders.index()].iter().any(|(_, _, m)| m.starts_with(r#"{"event":2,"#)), "a maker updated");
    assert_published_exactly(&consume_all(port), &want);
    // The README's consumer command prints the same, a line each.
    let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(["kafka-tail", "--brokers", &format!("127.0.0.1:{port}"), "deals"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> =
        want[Topic::Deals.index()].iter().map(|(seq, part, m)| format!("{seq}/{part} {m}")).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().collect::<Vec<_>>(), lines);
}

/// The broker is away when viaduct starts: matching goes on, an alert is raised, and past
/// `lag_max` writes get error 3; once the broker comes, everything is published and writes are
/// taken again. Then the broker is killed mid-stream and restarted empty: what came meanwhile
/// and after reaches it, once, and nothing the first broker acknowledged is sent again.
#[test]
fn a_broker_away_at_startup_or_killed_mid_stream_costs_no_message_and_repeats_none() {
    let dir = tempfile::tempdir().unwrap();
    // The broker comes back on the second address of the bootstrap list: tansu does not reuse
    // an address its killed self left in TIME_WAIT.
    let (port, port2) = (free_port(), free_port());
    let brokers = format!("brokers = \"127.0.0.1:{port},127.0.0.1:{port2}\"\nlag_max = 1000");
    let server = Server::start(dir.path(), &brokers);
    fund(&server, 4);
    let mut refused = None;
    for i in 0..3000 {
        let reply = http(server.http, "balance.update", json!([1, "BTC", "deposit", 1000 + i, "1", {}]));
        if !reply["error"].is_null() {
            refused = Some((i, reply["error"].clone()));
            break;
        }
    }
    let (taken, error) = refused.expect("writes refused once the publisher lags past lag_max");
    assert_eq!(error["code"], 3, "{error}");
    assert!(taken >= 990, "only {taken} deposits taken before the refusal");
    wait_until("an alert that the brokers cannot be reached", Duration::from_secs(20), || {
        server.log().contains("ALERT kafka kafka: the Kafka brokers 127.0.0.1")
    });
    let broker = Broker::start(port);
    wait_until("the publisher to catch up with a broker", Duration::from_secs(60), || server.kafka_lag() == 0);
    let reply = http(server.http, "balance.update", json!([1, "BTC", "deposit", 9999, "1", {}]));
    assert!(reply["error"].is_null(), "writes are taken again: {reply}");
    let before_kill = consume_all(port);

    drop(broker);
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let errors = workload(&server, &mut rng, 150, 4);
    assert!(errors.iter().all(|e| e["code"] != 3), "matching goes on while the broker is away: {errors:?}");
    assert!(
        poll_until(Duration::from_secs(10), || server.kafka_lag() > 0),
        "nothing acknowledges while the broker is away"
    );
    let _broker = Broker::start(port2);
    workload(&server, &mut rng, 100, 4);
    let caught_up = poll_until(Duration::from_secs(60), || server.kafka_lag() == 0);
    assert!(caught_up, "the publisher did not catch up with the new broker: {}", server.log());
    let after_restart = consume_all(port2);
    let config = server.config.clone();
    server.stop();

    let want = expected(&dir.path().join("data"), &config);
    let mut read = before_kill;
    for (all, more) in read.iter_mut().zip(after_restart) {
        all.extend(more);
    }
    assert_published_exactly(&read, &want);
}

/// viaduct is killed with SIGKILL while messages are on their way (a 200 ms linger holds the
/// last ones back): the next start resumes after the last message of each topic, and every
/// message is there once.
#[test]
fn viaduct_killed_mid_stream_resumes_after_the_last_message_of_each_topic() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(port);
    let kafka = format!("brokers = \"127.0.0.1:{port}\"\nlinger_ms = 200");
    let server = Server::start(dir.path(), &kafka);
    fund(&server, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(28);
    workload(&server, &mut rng, 300, 6);
    let durable = server.metric("viaduct_durable_sequence");
    server.kill();
    let at_kill: usize = consume_all(port).iter().map(Vec::len).sum();

    let server = Server::start(dir.path(), &kafka);
    workload(&server, &mut rng, 300, 6);
    wait_until("the publisher to catch up", Duration::from_secs(30), || server.kafka_lag() == 0);
    assert!(server.log().contains("kafka: publishing to 127.0.0.1"), "{}", server.log());
    let config = server.config.clone();
    server.stop();

    let want = expected(&dir.path().join("data"), &config);
    let before_kill: usize = want.iter().map(|t| t.iter().filter(|(seq, ..)| *seq <= durable).count()).sum();
    assert!(at_kill < before_kill, "killed mid-stream: {at_kill} of {before_kill} messages were published");
    assert_published_exactly(&consume_all(port), &want);
}
