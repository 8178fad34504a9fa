//! The example market-maker client (`examples/python/viaduct_mm.py`, written from
//! `edges/PROTOCOL.md` alone) walks every message of the document against the real server.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{http, Running};

const SECRET: &str = "python-example-secret-0123456789";

#[test]
fn the_python_example_client_runs_every_message_of_the_protocol() {
    let keys = format!(
        "[[edges.tcp.keys]]\nkey = \"py-maker\"\nsecret = \"{SECRET}\"\nuser_id = 21\ntaker_fee = \"0.002\"\nmaker_fee = \"0.001\"\n\
         [[edges.tcp.keys]]\nkey = \"py-taker\"\nsecret = \"{SECRET}\"\nuser_id = 22\ntaker_fee = \"0.002\"\nmaker_fee = \"0.001\"\n"
    );
    let server = Running::start(&keys);
    for (user, asset) in [(21, "BTC"), (22, "BCH")] {
        let r = http(server.http, "balance.update", json!([user, asset, "deposit", 1, "10", {}]));
        assert_eq!(r["result"]["status"], "success", "{r}");
    }
    let script = format!("{}/examples/python/viaduct_mm.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(script)
        .args(["--addr", &server.tcp.to_string(), "--market", "BTCBCH"])
        .args(["--maker", &format!("py-maker:{SECRET}"), "--taker", &format!("py-taker:{SECRET}")])
        .output()
        .expect("python3 runs (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for name in [
        "LOGIN_REJECT",
        "LOGIN_ACK",
        "ACCEPTED",
        "FILLED",
        "REJECTED",
        "CANCELLED",
        "MASS_CANCELLED",
        "AMENDED",
        "ORDER_STATE",
        "SESSION_ACK",
        "SERVER_HEARTBEAT",
    ] {
        assert!(seen.iter().any(|m| m["type"] == name), "{name} never came: {stdout}");
    }
    assert_eq!(seen.last(), Some(&json!({"done": true})));
    // What the walk did shows in the balances: the maker sold 1.75 BTC at 0.1.
    let b = http(server.http, "balance.query", json!([21, "BTC"]))["result"].clone();
    assert_eq!(b["BTC"], json!({"available": "8.25", "freeze": "0"}));
}
