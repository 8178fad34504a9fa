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
