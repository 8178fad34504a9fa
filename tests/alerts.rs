//! Alerts through Redis Sentinel (SPEC B9.2) against real, private Redis and Sentinel processes:
//! an alert lands in `alert:message` on the master; after a Sentinel failover alerts go to the
//! new master; with Redis gone, raising never waits and what cannot be queued is counted; and the
//! real binary pushes its own alerts while it keeps matching.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, http, wait_until, Running};
use viaduct_publishers::alert::{AlertKind, AlertSink, Alerts};
use viaduct_publishers::alert_redis::{RedisAlerts, RedisAlertsConfig, ALERT_LIST};

/// A private `redis-server` (or Sentinel, with `--sentinel`) on a free port; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &std::path::Path, args: &[String]) -> Redis {
        let port = free_port();
        let conf = dir.join(format!("redis-{port}.conf"));
        std::fs::write(&conf, "").unwrap();
        let mut all = vec![conf.to_str().unwrap().to_string(), "--port".into(), port.to_string()];
        all.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from));
        all.extend(["--dir".to_string(), dir.to_str().unwrap().to_string()]);
        all.extend(args.iter().cloned());
        let child = Command::new("redis-server")
            .args(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        wait_until("redis to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        Redis { child, port }
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap().get_connection().unwrap()
    }

    fn alerts(&self) -> Vec<String> {
        redis::cmd("LRANGE").arg(ALERT_LIST).arg(0).arg(-1).query(&mut self.conn()).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master, its replica and one Sentinel watching them as `mymaster`.
fn sentinel_set(dir: &std::path::Path) -> (Redis, Redis, Redis) {
    let master = Redis::start(dir, &[]);
    let replica = Redis::start(dir, &["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()]);
    let sentinel = Redis::start(
        dir,
        &[
            "--sentinel".into(),
            "--sentinel".into(),
            "monitor".into(),
            "mymaster".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
            "1".into(),
        ],
    );
    let mut s = sentinel.conn();
    for (key, value) in [("down-after-milliseconds", "1000"), ("failover-timeout", "3000")] {
        let _: () = redis::cmd("SENTINEL").arg("SET").arg("mymaster").arg(key).arg(value).query(&mut s).unwrap();
    }
    // A failover needs the Sentinel to know the replica (it learns of it from the master) and
    // the replica's link to the master to be up.
    wait_until("the sentinel to see a replica in step", Duration::from_secs(30), || {
        let replicas: Vec<std::collections::HashMap<String, String>> =
            redis::cmd("SENTINEL").arg("REPLICAS").arg("mymaster").query(&mut s).unwrap_or_default();
        replicas.iter().any(|r| {
            r.get("flags").map(String::as_str) == Some("slave")
                && r.get("master-link-status").map(String::as_str) == Some("ok")
        })
    });
    (master, replica, sentinel)
}

fn config(sentinel: u16, queue_max: usize) -> RedisAlertsConfig {
    RedisAlertsConfig {
        sentinels: vec![format!("127.0.0.1:{sentinel}")],
        master: "mymaster".into(),
        db: 0,
        host: "test-host".into(),
        redis: None,
        queue_max,
    }
}

#[test]
fn alerts_reach_the_master_sentinel_names_and_follow_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (master, replica, sentinel) = sentinel_set(dir.path());
    let sink = RedisAlerts::start(config(sentinel.port, 64)).unwrap();
    let counts = sink.counts();
    let alerts = Alerts::new(std::sync::Arc::new(sink));
    alerts.raise(AlertKind::History, "history", "the store cannot be reached");
    wait_until("the alert on the master", Duration::from_secs(20), || {
        master.alerts() == ["test-host: ALERT history history: the store cannot be reached"]
    });
    // The same kind from the same stage again at once: held back, and counted.
    alerts.raise(AlertKind::History, "history", "still not reached");
    wait_until("the repeat to be held back", Duration::from_secs(10), || counts.held_back.load(Ordering::Acquire) == 1);
    // Sentinel moves the master to the replica; the next alert goes there.
    let mut s = sentinel.conn();
    // (Asked again while Sentinel finds no replica it may promote yet.)
    wait_until("Sentinel to start a failover", Duration::from_secs(30), || {
        redis::cmd("SENTINEL").arg("FAILOVER").arg("mymaster").query::<()>(&mut s).is_ok()
    });
    wait_until("the failover", Duration::from_secs(30), || {
        let addr: Vec<String> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg("mymaster").query(&mut s).unwrap_or_default();
        addr.get(1) == Some(&replica.port.to_string())
    });
    alerts.raise(AlertKind::Snapshots, "snapshots", "the snapshot worker stopped");
    wait_until("the alert on the new master", Duration::from_secs(30), || {
        replica.alerts().iter().any(|a| a == "test-host: ALERT snapshots snapshots: the snapshot worker stopped")
    });
    assert_eq!(counts.dropped.load(Ordering::Acquire), 0);
}

#[test]
fn with_redis_away_raising_never_waits_and_what_cannot_wait_is_counted() {
    // A Sentinel address where nothing listens.
    let sink = RedisAlerts::start(config(free_port(), 16)).unwrap();
    let counts = sink.counts();
    let started = Instant::now();
    for i in 0..2_000 {
        sink.raise(viaduct_publishers::alert::Alert {
            kind: AlertKind::Lag,
            stage: "test",
            message: format!("alert {i}"),
            time_us: 0,
        });
    }
    // Raising only queues: 2,000 alerts take no network time (a generous bound for a slow box).
    assert!(started.elapsed() < Duration::from_secs(2), "raising waited {:?}", started.elapsed());
    let (dropped, pushed) = (counts.dropped.load(Ordering::Acquire), counts.pushed.load(Ordering::Acquire));
    assert_eq!(pushed, 0);
    // At most the queue and the one being retried were kept.
    assert!(dropped >= 2_000 - 17, "{dropped} dropped");
}

#[test]
fn the_server_pushes_its_alerts_and_keeps_matching() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _replica, sentinel) = sentinel_set(dir.path());
    let extra =
        format!("[alerts]\nsentinels = [\"127.0.0.1:{}\"]\nmaster = \"mymaster\"\nhost = \"box-1\"\n", sentinel.port);
    // A history store where nothing listens: the engine starts without it and raises an alert.
    let nowhere = format!("[history]\nurl = \"mysql://root@127.0.0.1:{}/viaduct\"", free_port());
    let server = Running::start_edited("", &extra, None, &|example| example.replacen("[history]", &nowhere, 1));
    wait_until("the server's alert on the master", Duration::from_secs(30), || {
        master.alerts().iter().any(|a| a.starts_with("box-1: ALERT history history: "))
    });
    // It matches meanwhile.
    let r = http(server.http, "balance.update", json!([1, "BTC", "deposit", 1, "1", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    // And Redis going away changes nothing for clients.
    drop(master);
    let r = http(server.http, "balance.query", json!([1, "BTC"]));
    assert_eq!(r["result"]["BTC"]["available"], "1", "{r}");
}

/// A server that cannot start (its journal was written under another config, which recovery
/// refuses) pushes that alert to Redis before it exits.
#[test]
fn a_refused_recovery_is_alerted_before_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), &[]);
    let example = std::fs::read_to_string(format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let alerts = format!("[alerts]\nredis = \"redis://127.0.0.1:{}\"\nhost = \"box-2\"\n", redis.port);
    let (first, second) = (dir.path().join("first.toml"), dir.path().join("second.toml"));
    std::fs::write(&first, format!("{example}\n{alerts}")).unwrap();
    let changed = example.replacen("fee_prec = 4", "fee_prec = 3", 1);
    assert_ne!(changed, example, "the example config has a fee_prec to change");
    std::fs::write(&second, format!("{changed}\n{alerts}")).unwrap();
    let data = dir.path().join("data");
    let run = |config: &std::path::Path, input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct"))
            .args(["run", "--stdio", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let deposit = r#"{"id":1,"method":"balance.update","params":[1,"BTC","deposit",1,"1",{}]}"#;
    assert!(run(&first, &format!("{deposit}\n")).status.success());
    let refused = run(&second, "");
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{log}");
    let pushed = redis.alerts();
    assert!(
        pushed.iter().any(|a| a.starts_with("box-2: ALERT recovery recovery: the engine did not start: ")),
        "{pushed:?} {log}"
    );
}
