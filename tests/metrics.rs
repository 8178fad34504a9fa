//! `[metrics]`: `/health` 503 until the server serves and 200 after, and `/metrics` in
//! Prometheus text with values that follow the work done.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use support::{free_addr, get, http, sample, wait_until, Running};

#[test]
fn health_and_metrics_follow_the_work_done() {
    let metrics = free_addr();
    let server = Running::start(&format!("[metrics]\nbind = \"{metrics}\"\n"));
    wait_until("/health to say ready", Duration::from_secs(30), || {
        TcpStream::connect(metrics).is_ok() && get(metrics, "/health").0 == 200
    });
    let (_, before) = get(metrics, "/metrics");
    let durable_before = sample(&before, "viaduct_durable_sequence").expect("the durable sequence");
    for user in 1..=3 {
        let r = http(server.http, "balance.update", json!([user, "BTC", "deposit", 1, "1", {}]));
        assert_eq!(r["result"]["status"], "success", "{r}");
    }
    let repeat = http(server.http, "balance.update", json!([1, "BTC", "deposit", 1, "1", {}]));
    assert_eq!(repeat["error"]["code"], 10, "{repeat}");
    let (status, text) = get(metrics, "/metrics");
    // Commands by method and code: the three deposits, and the repeat refused (not journaled).
    assert_eq!(sample(&text, r#"viaduct_commands{method="balance.update",code="0"}"#), Some(3), "{text}");
    assert_eq!(sample(&text, r#"viaduct_commands{method="balance.update",code="10"}"#), Some(1), "{text}");
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "viaduct_durable_sequence"), Some(durable_before + 3), "{text}");
    let commits = sample(&text, "viaduct_journal_commit_groups").expect("commit groups");
    assert!((1..=durable_before + 3).contains(&commits), "{commits} groups: {text}");
    assert!(sample(&text, "viaduct_matcher_loop_passes").is_some_and(|p| p > 0), "{text}");
    // Every group's size and times: as many groups as counted, as many commands as journaled,
    // each with its fdatasync (the default profile's fsync).
    assert_eq!(sample(&text, "viaduct_journal_commit_batch_commands_count"), Some(commits), "{text}");
    let sum = format!("viaduct_journal_commit_batch_commands_sum {}.0", durable_before + 3);
    assert!(text.lines().any(|l| l == sum), "{sum}: {text}");
    assert_eq!(sample(&text, "viaduct_journal_commit_seconds_count"), Some(commits), "{text}");
    assert_eq!(sample(&text, "viaduct_journal_fdatasync_seconds_count"), Some(commits), "{text}");
    assert!(text.contains(r#"viaduct_journal_commit_seconds_bucket{le="+Inf"}"#), "{text}");
    assert_eq!(
        sample(&text, r#"viaduct_consumer_lag_max_commands{consumer="history writer"}"#),
        Some(100_000),
        "the example config's [history] lag_max: {text}"
    );
    assert!(sample(&text, r#"viaduct_consumer_lag_commands{consumer="market data"}"#).is_some(), "{text}");
    assert_eq!(sample(&text, r#"viaduct_snapshots{what="taken"}"#), Some(0), "none yet: {text}");
    // The input ring: every command answered came through it in some batch (queries too).
    let through_ring = sample(&text, r#"viaduct_input_ring{what="commands"}"#).unwrap();
    assert!(through_ring >= 4, "the deposits and the repeat: {text}");
    assert!(
        sample(&text, r#"viaduct_input_ring{what="batch_max"}"#).is_some_and(|m| (1..=through_ring).contains(&m)),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // Connections per edge: one held open to the HTTP edge, none to the TCP edge.
    let _held = TcpStream::connect(server.http).unwrap();
    wait_until("the held connection to be counted", Duration::from_secs(10), || {
        sample(&get(metrics, "/metrics").1, r#"viaduct_edge_connections{edge="http"}"#) == Some(1)
    });
    assert_eq!(sample(&get(metrics, "/metrics").1, r#"viaduct_edge_connections{edge="tcp"}"#), Some(0));
    assert_eq!(get(metrics, "/nothing").0, 404);
}

/// The metrics port is bound before the state is rebuilt: while startup is held up (here by a
/// history store that accepts the connection and says nothing) `/health` answers 503 and
/// `/metrics` says not ready, with recovery's progress; once the store gives up, 200.
#[test]
fn health_is_503_until_the_engine_serves() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (metrics, http_addr, tcp_addr) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let store = format!("[history]\nurl = \"mysql://root@{}/test\"", silent.local_addr().unwrap());
    let config = format!(
        "{}\n[edges.http]\nbind = \"{http_addr}\"\n[edges.tcp]\nbind = \"{tcp_addr}\"\n[metrics]\nbind = \"{metrics}\"\n",
        example.replacen("[history]", &store, 1)
    );
    std::fs::write(dir.path().join("viaduct.toml"), config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(["run", "--config", dir.path().join("viaduct.toml").to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The store's connection arrives once startup has reached it; metrics are up by then.
    let (held, _) = silent.accept().unwrap();
    wait_until("the metrics port", Duration::from_secs(30), || TcpStream::connect(metrics).is_ok());
    let (status, body) = get(metrics, "/health");
    assert_eq!((status, body.as_str()), (503, "recovering\n"));
    let (_, text) = get(metrics, "/metrics");
    assert_eq!(sample(&text, "viaduct_ready"), Some(0), "{text}");
    assert_eq!(sample(&text, r#"viaduct_recovery{what="sequence"}"#), Some(0), "{text}");
    assert!(!text.contains("viaduct_consumer_lag_commands{"), "no engine yet: {text}");
    drop(held);
    drop(silent);
    wait_until("/health to say ready", Duration::from_secs(60), || get(metrics, "/health").0 == 200);
    let (_, text) = get(metrics, "/metrics");
    assert_eq!(sample(&text, "viaduct_ready"), Some(1), "{text}");
    assert!(sample(&text, r#"viaduct_consumer_lag_commands{consumer="market data"}"#).is_some(), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}
