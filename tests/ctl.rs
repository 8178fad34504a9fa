//! `viaduct ctl` against a running server, through the operator's socket in its data directory.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{http, Running};

fn ctl(data: &std::path::Path, command: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(["ctl", "--data-dir", data.to_str().unwrap()])
        .args(command)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn answer(data: &std::path::Path, command: &[&str]) -> Value {
    let (ok, out, err) = ctl(data, command);
    assert!(ok, "{command:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{command:?}: {e}: {out}"))
}

#[test]
fn ctl_answers_status_snapshot_balances_and_markets_from_the_running_server() {
    let server = Running::start("");
    let before = answer(&server.data, &["status"]);
    assert_eq!(before["pid"], json!(server.child.id()));
    assert_eq!(before["profile"], "default");
    assert!(before["consumers"]["history writer"]["max"].is_u64(), "{before}");
    let r = http(server.http, "balance.update", json!([7, "BTC", "deposit", 1, "2.5", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    let after = answer(&server.data, &["status"]);
    assert_eq!(after["durable_sequence"].as_u64(), before["durable_sequence"].as_u64().map(|s| s + 1), "{after}");
    let balances = answer(&server.data, &["balances", "7"]);
    assert_eq!(balances["result"]["BTC"], json!({"available": "2.5", "freeze": "0"}), "{balances}");
    let markets = answer(&server.data, &["markets"]);
    let names: Vec<&str> = markets["result"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(names.contains(&"BTCBCH"), "{markets}");
    // An immediate snapshot of what is journaled; none again while nothing new is.
    let snapshot = answer(&server.data, &["snapshot"]);
    assert_eq!(
        (snapshot["taken"].as_bool(), snapshot["sequence"].as_u64()),
        (Some(true), after["durable_sequence"].as_u64()),
        "{snapshot}"
    );
    let file = server.data.join("snapshots").read_dir().unwrap().count();
    assert!(file >= 1, "a snapshot file");
    let again = answer(&server.data, &["snapshot"]);
    assert_eq!(again["taken"], false, "{again}");
    // A snapshot that cannot be written is an error here and an alert in the log; matching goes on.
    std::fs::remove_dir_all(server.data.join("snapshots")).unwrap();
    std::fs::write(server.data.join("snapshots"), b"not a directory").unwrap();
    let r = http(server.http, "balance.update", json!([7, "BTC", "deposit", 2, "1", {}]));
    assert_eq!(r["result"]["status"], "success", "{r}");
    let failed = answer(&server.data, &["snapshot"]);
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("the snapshot failed")), "{failed}");
    let log = std::fs::read_to_string(server.data.parent().unwrap().join("log")).unwrap();
    assert!(log.contains("ALERT snapshots snapshots: the snapshot at sequence"), "{log}");
    assert!(answer(&server.data, &["balances", "nobody"])["error"].is_string());
    assert!(answer(&server.data, &["reboot"])["error"].as_str().unwrap().contains("commands:"));
}

#[test]
fn ctl_says_so_when_no_server_runs_there() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = ctl(dir.path(), &["status"]);
    assert!(!ok && err.contains("no server answers"), "{err}");
}
