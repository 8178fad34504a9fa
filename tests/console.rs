//! The real binary: config checking, and `viaduct run` serving JSON-RPC lines on its standard
//! streams, durable across restarts.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

mod support;

fn viaduct() -> Command {
    Command::new(env!("CARGO_BIN_EXE_viaduct"))
}

fn example() -> String {
    format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_config_is_valid() {
    let out = viaduct().args(["check-config", "--config", &example()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("market ETHBCH") && text.contains("config is valid"), "{text}");
}

#[test]
fn a_config_that_breaks_a_precision_rule_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example()).unwrap().replace("prec_save = 20", "prec_save = 14");
    std::fs::write(&path, text).unwrap();
    let out = viaduct().args(["check-config", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("market \"BTCBCH\"")
            && err.contains("stock.prec + money.prec (8 + 8) exceeds prec_save of BCH (14)"),
        "{err}"
    );
}

#[test]
fn tcp_api_keys_are_checked_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let key = |secret: &str, fee: &str| {
        format!(
            "\n[edges.tcp]\nbind = \"127.0.0.1:0\"\n[[edges.tcp.keys]]\nkey = \"mm-alpha\"\nsecret = \"{secret}\"\nuser_id = 7\ntaker_fee = \"{fee}\"\nmaker_fee = \"0.001\"\n"
        )
    };
    let base = std::fs::read_to_string(example()).unwrap();
    for (secret, fee, problem) in [
        ("short", "0.002", "the secret must be at least 16 bytes"),
        ("sixteen-bytes-or-more", "1.5", "fee rate \"1.5\" is not a decimal in [0, 1)"),
        ("sixteen-bytes-or-more", "0.00015", "fee rate \"0.00015\" has more decimals than market"),
    ] {
        std::fs::write(&path, base.clone() + &key(secret, fee)).unwrap();
        let out = viaduct().args(["check-config", "--config", path.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && err.contains("\"mm-alpha\"") && err.contains(problem), "{err}");
    }
    std::fs::write(&path, base + &key("sixteen-bytes-or-more", "0.002")).unwrap();
    let out = viaduct().args(["check-config", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_market_data_setting_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("market.toml");
    let base = std::fs::read_to_string(example()).unwrap();
    for (from, to, problem) in [
        (
            "timezone = \"UTC\"",
            "timezone = \"Mars/Olympus\"",
            "timezone \"Mars/Olympus\" is not an IANA time zone name",
        ),
        ("sec_max = 604800", "sec_max = 0", "sec_max = 0 must be from 1"),
    ] {
        assert!(base.contains(from));
        std::fs::write(&path, base.replace(from, to)).unwrap();
        let out = viaduct().args(["check-config", "--config", path.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && err.contains(problem), "{err}");
    }
}

/// Runs `viaduct run` on `data_dir` with `requests` on its standard input; returns the replies.
fn run(data_dir: &std::path::Path, requests: &[&str]) -> Vec<Value> {
    let mut child = support::spawn_stdio(&["--config", &example(), "--data-dir", data_dir.to_str().unwrap()]);
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn run_serves_a_first_session_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let requests = [
        r#"{"id": 1, "method": "balance.update", "params": [1, "BTC", "deposit", 100, "2", {}]}"#,
        r#"{"id": 2, "method": "balance.update", "params": [2, "BCH", "deposit", 100, "1", {}]}"#,
        r#"{"id": 3, "method": "order.put_limit", "params": [1, "BTCBCH", 1, "2", "0.1", "0.002", "0.001", "web"]}"#,
        r#"{"id": 4, "method": "order.put_limit", "params": [2, "BTCBCH", 2, "1", "0.2", "0.002", "0.001", "web"]}"#,
        r#"{"id": 5, "method": "balance.query", "params": [2, "BTC", "BCH"]}"#,
        r#"{"id": 6, "method": "market.last", "params": ["NOPE"]}"#,
        r#"{"id": "x", "method": "asset.list", "params": []}"#,
        r#"not json"#,
        r#"{"id": 9, "method": "balance.history", "params": [1, "BTC", "", 0, 0, 0, 10]}"#,
    ];
    let replies = run(dir.path(), &requests);
    assert_eq!(replies.len(), requests.len());
    assert_eq!(replies[3]["result"]["deal_stock"], "1");
    assert_eq!(replies[4]["result"]["BTC"]["available"], "0.998");
    assert_eq!(replies[4]["result"]["BCH"]["available"], "0.9");
    // Market data answers from its own thread, in the order of the lines all the same.
    assert_eq!(replies[5]["error"]["code"], 1);
    assert_eq!(replies[8]["result"]["limit"], 10, "history answers: {}", replies[8]);
    assert_eq!(replies[6]["error"]["code"], 1);
    assert_eq!(replies[7]["error"]["code"], 1);
    assert!(replies[7]["id"].is_null());
    // A restart recovers the journal: the balances, the resting order, the dedupe window and the
    // market data.
    let again = run(
        dir.path(),
        &[
            r#"{"id": 7, "method": "balance.query", "params": [1, "BTC", "BCH"]}"#,
            r#"{"id": 8, "method": "order.pending", "params": [1, "BTCBCH", 0, 10]}"#,
            r#"{"id": 9, "method": "balance.update", "params": [1, "BTC", "deposit", 100, "2", {}]}"#,
            r#"{"id": 10, "method": "market.last", "params": ["BTCBCH"]}"#,
            r#"{"id": 11, "method": "balance.history", "params": [1, "", "", 0, 0, 0, 10]}"#,
        ],
    );
    // History holds every balance change of user 1: the deposit, then the trade's three legs.
    let records = again[4]["result"]["records"].as_array().unwrap();
    let business: Vec<&str> = records.iter().map(|r| r["business"].as_str().unwrap()).collect();
    assert_eq!(business, ["trade", "trade", "trade", "deposit"], "{}", again[4]);
    // Market data is rebuilt from the journal with the rest.
    assert_eq!(again[3]["result"], "0.10000000");
    assert_eq!(again[0]["result"]["BTC"], serde_json::json!({"available": "0", "freeze": "1"}));
    assert_eq!(again[0]["result"]["BCH"]["available"], "0.0999");
    assert_eq!(again[1]["result"]["records"][0]["left"], "1");
    assert_eq!(again[2]["error"]["code"], 10);
}

#[test]
fn sigterm_drains_the_engine_and_stops_cleanly() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("viaduct.toml");
    let text = std::fs::read_to_string(example()).unwrap()
        + "\n[edges.http]\nbind = \"127.0.0.1:0\"\n[edges.tcp]\nbind = \"127.0.0.1:0\"\n";
    std::fs::write(&config, text).unwrap();
    let mut child = viaduct()
        .args(["run", "--config", config.to_str().unwrap(), "--data-dir", dir.path().join("data").to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "viaduct exited before listening");
        if let Some(rest) = line.split("http: listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    let body = r#"{"id": 1, "method": "balance.update", "params": [1, "BTC", "deposit", 1, "2", {}]}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reply = [0u8; 512];
    let n = s.read(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).contains(r#""status":"success""#));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "exit {status}: {rest}");
    assert!(rest.contains("stopped at sequence 1,"), "{rest}");
}

/// Two servers on one data directory would each number their own commands into the same journal:
/// the second is refused before it recovers anything, naming the directory and the first's PID.
/// Once the first has stopped (cleanly: its restart reports no torn write), the directory is free.
#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut first = support::spawn_stdio(&["--config", &example(), "--data-dir", data]);
    let mut stdin = first.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(first.stdout.take().unwrap());
    // Once the first answers, it holds the lock.
    writeln!(stdin, r#"{{"id": 1, "method": "balance.update", "params": [1, "BTC", "deposit", 1, "2", {{}}]}}"#)
        .unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(r#""status":"success""#), "{line}");
    // A server with nothing to serve: it recovers, drains and exits.
    let run_empty = || {
        viaduct()
            .args(["run", "--stdio", "--config", &example(), "--data-dir", data])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let second = run_empty();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second server ran: {err}");
    assert!(err.contains(&format!("data directory {data} is in use by another viaduct (PID {}", first.id())), "{err}");
    drop(stdin);
    assert!(first.wait().unwrap().success());
    let again = run_empty();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert!(log.contains("at sequence 1") && !log.contains("torn"), "{log}");
}

/// A table whose keys are left out takes their defaults (SPEC A4): `[edges.http]` and
/// `[edges.ws]` without `bind` are accepted. Sections no component reads yet are each warned
/// about when the engine runs, not silently ignored; `[edges.ws]`, `[auth]`, `[alerts]` and
/// `[kafka]` are read.
#[test]
fn left_out_keys_take_defaults_and_unread_sections_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sections.toml");
    let mut text = std::fs::read_to_string(example()).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("[edges.")), "the example sets no edge table");
    text.push_str(
        "\n[edges.http]\n[edges.ws]\n[kafka]\nbrokers = \"127.0.0.1:9092\"\n[alerts]\nsentinels = [\"127.0.0.1:26379\"]\nmaster = \"mymaster\"\n",
    );
    text.push_str("[auth]\nurl = \"http://127.0.0.1:9000/auth\"\n");
    std::fs::write(&path, &text).unwrap();
    let data = dir.path().join("data");
    let out = viaduct()
        .args(["run", "--stdio", "--config", path.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for read in ["edges.ws", "auth", "alerts", "kafka"] {
        assert!(!log.contains(&format!("config: [{read}] is set")), "[{read}]: {log}");
    }
}

#[test]
fn bad_alert_settings_are_refused_by_name() {
    for (section, problem) in [
        ("master = \"mymaster\"", "needs sentinels"),
        ("sentinels = [\"127.0.0.1:26379\"]", "needs sentinels"),
        ("redis = \"http://x\"", "redis must be a redis:// URL"),
        ("redis = \"redis://127.0.0.1:6379\"\nmaster = \"m\"", "not both"),
        ("sentinels = [\"nowhere\"]\nmaster = \"m\"", "is not host:port"),
        ("redis = \"redis://127.0.0.1:6379\"\nqueue_max = 0", "queue_max must be at least 1"),
    ] {
        refused_naming("[alerts]", section, problem);
    }
}

#[test]
fn bad_websocket_settings_are_refused_by_name() {
    let missing = std::env::temp_dir().join("viaduct-no-such-file.pem");
    for (extra, problem) in [
        ("push_interval_ms = 0".to_string(), "push_interval_ms must be from 1 to 60000"),
        ("depth_limit = []".to_string(), "depth_limit must list limits from 1 to 10000"),
        ("depth_merge = [\"0.1x\"]".to_string(), "depth_merge must list non-negative decimals"),
        (format!("tls_cert = {missing:?}"), "tls_cert and tls_key go together"),
        (
            format!("tls_cert = {missing:?}\ntls_key = {missing:?}"),
            "viaduct-no-such-file.pem: not a PEM certificate chain",
        ),
    ] {
        refused_naming("[edges.ws]", &extra, problem);
    }
}

#[test]
fn bad_kafka_settings_are_refused_by_name() {
    let ok = "brokers = \"127.0.0.1:9092\"";
    for (extra, problem) in [
        ("brokers = \"127.0.0.1\"".to_string(), "\"127.0.0.1\" is not host:port"),
        ("brokers = \"a:1,:2\"".to_string(), "\":2\" is not host:port"),
        (format!("{ok}\ncompression = \"zstd\""), "compression \"zstd\" must be none, gzip, snappy or lz4"),
        (format!("{ok}\nacks = \"1\""), "it is always \"all\""),
        (format!("{ok}\nlag_max = 10"), "lag_max = 10 must be at least 1000"),
        (format!("{ok}\ntopic_prefix = \"a b\""), "topic_prefix \"a b\" may hold only"),
        (format!("{ok}\nbatch_bytes = 1"), "batch_bytes = 1 must be from 1000"),
    ] {
        refused_naming("[kafka]", &extra, problem);
    }
}

/// Kafka publishes from the journal: a profile that writes none is refused with `[kafka]`.
#[test]
fn kafka_without_a_journal_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let profile = std::fs::read_to_string(format!("{}/tuning/default.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let profile = profile.replace("durability = \"fsync\"", "durability = \"none\"");
    assert!(profile.contains("durability = \"none\""));
    let (profile_path, config) = (dir.path().join("none.toml"), dir.path().join("kafka.toml"));
    std::fs::write(&profile_path, profile).unwrap();
    let base = std::fs::read_to_string(example()).unwrap();
    std::fs::write(&config, format!("{base}\n[kafka]\nbrokers = \"127.0.0.1:9\"\n")).unwrap();
    let out = viaduct()
        .args(["run", "--stdio", "--config", config.to_str().unwrap(), "--profile", profile_path.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("[kafka] publishes from the journal, which durability NONE does not write"),
        "{err}"
    );
}

/// PROTOCOL.md "Client order ids": a key's window is within its bounds, and keys of one user agree
/// on it (one set of ids).
#[test]
fn keys_of_one_user_must_agree_on_the_client_id_window() {
    let key = |name: &str, extra: &str| {
        format!("key = \"{name}\"\nsecret = \"0123456789abcdef\"\nuser_id = 7\ntaker_fee = \"0.001\"\nmaker_fee = \"0.001\"\n{extra}")
    };
    let table = "[[edges.tcp.keys]]";
    refused_naming(
        table,
        &format!("{}\n{table}\n{}", key("a", "client_ids_max = 10"), key("b", "")),
        "keys \"a\" and \"b\" have the same user_id 7 but different client_ids_max or client_ids_window_s",
    );
    let bounds = "client_ids_max must be within 1..=16777216 and client_ids_window_s within 1..=604800";
    refused_naming(table, &key("a", "client_ids_max = 0"), bounds);
    refused_naming(table, &key("a", "client_ids_window_s = 604801"), bounds);
}

/// `check-config` refuses the example config with `table` holding `lines`, naming the table and
/// saying `problem`.
fn refused_naming(table: &str, lines: &str, problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.toml");
    let base = std::fs::read_to_string(example()).unwrap();
    std::fs::write(&path, format!("{base}\n{table}\n{lines}\n")).unwrap();
    let out = viaduct().args(["check-config", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains(table) && err.contains(problem), "{table} {lines}: {err}");
}

/// `[log]`: to files in `dir` (one a day, `viaduct.<date>.log`), as JSON lines when asked, at the
/// level given; `RUST_LOG` overrides the level.
#[test]
fn the_log_goes_where_and_at_the_level_the_config_says() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(example()).unwrap();
    let run = |name: &str, log: &str, rust_log: Option<&str>| -> Vec<Value> {
        let logs = dir.path().join(name);
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{base}\n[log]\ndir = {logs:?}\njson = true\n{log}\n")).unwrap();
        let mut cmd = viaduct();
        cmd.env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let data = dir.path().join(format!("{name}-data"));
        let out = cmd
            .args(["run", "--stdio", "--config", path.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("recovery"), "logged to stderr too");
        let files: Vec<_> = std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let file = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert!(file.starts_with("viaduct.") && file.ends_with(".log"), "{file}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    };
    let info = run("info", "level = \"info\"", None);
    let said = |lines: &[Value], what: &str| {
        lines.iter().any(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(what)))
    };
    assert!(said(&info, "recovery"), "{info:?}");
    assert!(info.iter().all(|l| l["level"].is_string()));
    let warn = run("warn", "level = \"warn\"", None);
    assert!(!said(&warn, "recovery"), "{warn:?}");
    let overridden = run("env", "level = \"warn\"", Some("info"));
    assert!(said(&overridden, "recovery"), "{overridden:?}");
}
