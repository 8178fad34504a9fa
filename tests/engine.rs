//! The engine in-process: snapshots taken by the shadow matcher, old segments removed, and the
//! state recovered from snapshot + journal equal to the state the engine stopped with.

use serde_json::{json, Value};
use viaduct::engine::Engine;
use viaduct::profile::Profile;
use viaduct_journaler::recovery::{journal_dir, recover, snapshot_dir};
use viaduct_journaler::segment::list_segments;
use viaduct_journaler::snapshot;
use viaduct_matcher::config::embedded;
use viaduct_matcher::Spec;

fn small_profile() -> Profile {
    let mut p = Profile::load("default").unwrap();
    p.ring.input_slots = 1024;
    p.ring.output_slots = 1024;
    p.segment_bytes_max = 16 * 1024;
    p.snapshot_interval = 700;
    p.snapshots_keep = 2;
    p.inflight_max = 256;
    p
}

/// An engine on `dir` with the embedded config and [`small_profile`].
fn start(dir: &std::path::Path) -> Engine {
    Engine::start(dir, Spec::new(&embedded()).unwrap(), &small_profile(), |_| {}).unwrap().0
}

fn params(v: Value) -> Vec<Value> {
    v.as_array().unwrap().clone()
}

/// Submits `n` requests in a pipelined stream and waits for every reply.
fn drive(engine: &Engine, start: u64, n: u64) -> u64 {
    let mut client = engine.client();
    let mut ok = 0;
    let mut sent = 0;
    let mut received = 0;
    while received < n {
        while sent < n && client.inflight() < 200 {
            let i = start + sent;
            let user = i % 13 + 1;
            let (method, p) = match i % 5 {
                0 => ("balance.update", json!([user, "BCH", "deposit", i, "100", {}])),
                1 => ("balance.update", json!([user, "BTC", "deposit", i, "100", {}])),
                2 | 3 => (
                    "order.put_limit",
                    json!([user, "BTCBCH", i % 2 + 1, "0.3", format!("0.{}", 90 + i % 20), "0.002", "0.001", "e"]),
                ),
                _ => ("order.put_market", json!([user, "BTCBCH", i % 2 + 1, "0.1", "0.002", "e"])),
            };
            client.submit(i as i64, method, &params(p)).expect("room in flight");
            sent += 1;
        }
        let r = client.recv();
        received += 1;
        ok += u64::from(r.journal_seq != 0);
    }
    ok
}

#[test]
fn snapshots_cover_the_journal_and_recovery_reproduces_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let (engine, startup) = Engine::start(dir.path(), spec.clone(), &small_profile(), |_| {}).unwrap();
    assert_eq!(startup.last_seq, 0);
    let journaled = drive(&engine, 1, 5_000);
    assert!(journaled > 3_000, "most commands should succeed ({journaled})");
    let (seq, hash) = engine.shutdown();
    assert_eq!(seq, journaled);

    let snaps = snapshot::list(&snapshot_dir(dir.path())).unwrap();
    assert_eq!(snaps.len(), 2, "keeps two snapshots: {snaps:?}");
    assert!(snaps.iter().all(|(s, _)| *s <= seq));
    let segments = list_segments(&journal_dir(dir.path())).unwrap();
    assert!(segments[0].0 > 1, "segments covered by the older snapshot are removed: {segments:?}");
    assert!(segments[0].0 <= snaps[0].0 + 1, "but not those the older snapshot still needs");

    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!(r.snapshot_seq, Some(snaps[1].0));
    assert_eq!((r.last_seq, r.matcher.state_hash()), (seq, hash));

    // A restart carries on from there, and its journal continues the sequence.
    let (engine, startup) = Engine::start(dir.path(), spec.clone(), &small_profile(), |_| {}).unwrap();
    assert_eq!((startup.last_seq, startup.state_hash), (seq, hash));
    let more = drive(&engine, 10_001, 500);
    let (seq2, hash2) = engine.shutdown();
    assert_eq!(seq2, seq + more);
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.last_seq, r.matcher.state_hash()), (seq2, hash2));
}

/// Market data answers after a restart exactly as before it, though the journal segments that
/// held most of its deals are gone: the snapshot carried it, the journal after it did the rest.
#[test]
fn market_data_survives_a_restart_from_snapshot_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let (engine, _) = Engine::start(dir.path(), spec.clone(), &small_profile(), |_| {}).unwrap();
    drive(&engine, 1, 5_000);
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 1;
    std::thread::sleep(std::time::Duration::from_millis(1100)); // `end` is in the past from here on
    let ask = |engine: &Engine| -> Vec<Value> {
        let mut client = engine.client();
        let queries = [
            ("market.kline", json!(["BTCBCH", end - 120, end, 1])),
            ("market.kline", json!(["BTCBCH", end - 3600, end, 60])),
            ("market.deals", json!(["BTCBCH", 10_000, 0])),
            ("market.last", json!(["BTCBCH"])),
        ];
        queries
            .iter()
            .map(|(method, p)| {
                client.submit(1, method, &params(p.clone())).expect("queued");
                serde_json::from_str(client.recv().json()).unwrap()
            })
            .collect()
    };
    let before = ask(&engine);
    let deals = before[2]["result"].as_array().unwrap().len();
    assert!(deals > 500, "the drive trades ({deals} deals)");
    assert!(before[0]["result"].as_array().unwrap().iter().any(|row| row[5] != "0"), "{}", before[0]);
    engine.shutdown();
    let segments = list_segments(&journal_dir(dir.path())).unwrap();
    assert!(segments[0].0 > 1, "the first segments are gone: {segments:?}");
    let (engine, startup) = Engine::start(dir.path(), spec, &small_profile(), |_| {}).unwrap();
    assert!(startup.snapshot_seq.is_some());
    assert_eq!(ask(&engine), before);
    engine.shutdown();
}

/// A client that has the reply of an order that traded sees that trade in market data at once
/// (the query waits for the deals of the durable sequence; the window this guards is narrow, so
/// the test catches a feed that lags by more than a reply, not every race).
#[test]
fn market_data_shows_a_clients_own_trade_right_after_its_reply() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let mut client = engine.client();
    let mut call = |method: &str, p: Value| -> Value {
        client.submit(1, method, &params(p)).expect("room");
        serde_json::from_str(client.recv().json()).unwrap()
    };
    call("balance.update", json!([1, "BTC", "deposit", 1, "1000", {}]));
    call("balance.update", json!([2, "BCH", "deposit", 1, "1000", {}]));
    for i in 0..200 {
        let price = format!("1.{:02}", i % 100);
        call("order.put_limit", json!([1, "BTCBCH", 1, "0.01", price, "0", "0", ""]));
        let taker = call("order.put_limit", json!([2, "BTCBCH", 2, "0.01", price, "0", "0", ""]));
        assert_eq!(taker["result"]["deal_stock"], "0.01", "{taker}");
        let last = call("market.last", json!(["BTCBCH"]));
        assert_eq!(last["result"], format!("{price}000000"), "order {i}");
    }
    drop(client);
    engine.shutdown();
}

/// An order's reply reads whole through `Client::recv`, `Client::try_recv` and `Replies::recv`,
/// with the request's id and the order it placed.
#[test]
fn order_replies_are_whole_at_every_receiving_end() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let mut client = engine.client();
    let mut replies = None;
    client.submit(1, "balance.update", &params(json!([1, "BCH", "deposit", 1, "1000", {}]))).unwrap();
    assert_eq!(serde_json::from_str::<Value>(client.recv().json()).unwrap()["result"]["status"], "success");
    let put = |id: i64| params(json!([1, "BTCBCH", 2, "0.3", format!("0.9{id}"), "0.002", "0.001", "e"]));
    let mut seen = Vec::new();
    for (id, how) in [(11, "recv"), (12, "try_recv"), (13, "replies")] {
        if how == "replies" {
            replies = Some(client.take_replies());
        }
        client.submit(id, "order.put_limit", &put(id)).unwrap();
        let r = match how {
            "recv" => client.recv(),
            "try_recv" => loop {
                if let Some(r) = client.try_recv() {
                    break r;
                }
                std::thread::yield_now();
            },
            _ => replies.as_mut().unwrap().recv(),
        };
        let v: Value = serde_json::from_str(r.json()).unwrap_or_else(|e| panic!("{how}: {e}: {:?}", r.json()));
        assert_eq!((v["id"].as_i64(), &v["error"]), (Some(id), &Value::Null), "{how}");
        let o = &v["result"];
        assert_eq!(
            (o["market"].as_str(), o["side"].as_i64(), o["amount"].as_str()),
            (Some("BTCBCH"), Some(2), Some("0.3")),
            "{how}"
        );
        assert_eq!(o["price"].as_str(), Some(format!("0.9{id}").as_str()), "{how}");
        seen.push(o["id"].as_u64().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    drop(replies);
    drop(client);
    engine.shutdown();
}
