//! History against both stores — SQLite in a temporary file and the MariaDB on 127.0.0.1:3306
//! (a database of its own per test, dropped after) — with the same script and the same expected
//! replies: which rows each command leaves (SPEC B6.4) and what each readhistory method answers
//! (B2.5). The MariaDB tests fail, not skip, when the server cannot be reached.

use serde_json::{json, Value};
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Events, Matcher, Spec};
use viaduct_protocol::decode;
use viaduct_publishers::history::query::run;
use viaduct_publishers::history::store::{self, Layout, Store};
use viaduct_publishers::history::Rows;

mod common;
use common::{deposit, T0};

/// Runs the script through a matcher and commits each command's rows with its sequence.
fn fill(store: &mut dyn Store) {
    store.create_tables().unwrap();
    assert_eq!(store.committed_seq().unwrap(), 0);
    let spec = Spec::new(&embedded()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let mut events = Events::default();
    let script = [
        ("balance.update", json!([1, "BTC", "deposit", 1, "10", {"tx": "abc"}])),
        ("balance.update", json!([2, "BCH", "deposit", 2, "10", {}])),
        ("order.put_limit", json!([1, "BTCBCH", 1, "2", "0.1", "0.002", "0.001", "web"])), // order 1 rests
        ("order.put_limit", json!([2, "BTCBCH", 2, "0.5", "0.2", "0.002", "0.001", "app"])), // order 2 fills
        ("order.put_limit", json!([1, "BTCBCH", 1, "1", "0.5", "0.002", "0.001", "web"])), // order 3 rests
        ("order.cancel", json!([1, "BTCBCH", 3])),                                         // no fills: no row
        ("order.put_market", json!([2, "BTCBCH", 2, "0.05", "0.002", "m"])),               // order 4
        ("order.cancel", json!([1, "BTCBCH", 1])),                                         // filled in part
        ("balance.update", json!([3, "ETH", "deposit", 3, "1", {}])),
        ("balance.update", json!([4, "BCH", "deposit", 4, "1", {}])),
        ("order.put_limit", json!([3, "ETHBCH", 1, "1", "0.2", "0", "0", "web"])), // order 5 rests
        ("order.put_market", json!([4, "ETHBCH", 2, "0.4", "0.002", "m", {"amount_in": "stock"}])), // order 6: type 3
    ];
    let mut seq = 0;
    for (i, (method, params)) in script.iter().enumerate() {
        events.clear();
        let cmd = decode(&spec, method, params.as_array().unwrap()).unwrap();
        m.apply(T0 + i as u64 * 1_000_000, &cmd, &mut events).unwrap_or_else(|e| panic!("{method}: {e}"));
        seq += 1;
        let mut rows = Rows::default();
        rows.add(&spec, events.view());
        store.write(&rows, seq).unwrap();
    }
    assert_eq!(store.committed_seq().unwrap(), 12);
}

fn q(store: &mut dyn Store, method: &str, params: Value) -> Value {
    let text = run(store, method, params.as_array().unwrap()).unwrap_or_else(|e| panic!("{method} {params}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn t(i: u64) -> f64 {
    (T0 + i * 1_000_000) as f64 / 1e6
}

fn check(store: &mut dyn Store) {
    // Orders: 2 (filled), 4 (market) and 1 (cancelled after a fill); not 3 (no fill). A cancel
    // leaves `mtime` at the last trade, so that is the finish time (as ViaBTC).
    let finished = q(store, "order.finished", json!([1, "BTCBCH", 0, 0, 0, 10]));
    let records = finished["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0],
        json!({"id": 1, "ctime": t(2), "ftime": t(6), "user": 1, "market": "BTCBCH", "source": "web", "type": 1,
               "side": 1, "price": "0.1", "amount": "2", "taker_fee": "0.002", "maker_fee": "0.001",
               "deal_stock": "1", "deal_money": "0.1", "deal_fee": "0.0001"})
    );
    let user2 = q(store, "order.finished", json!([2, "BTCBCH", 0, 0, 0, 10]));
    let ids: Vec<i64> = user2["records"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [4, 2], "newest first");
    assert_eq!(user2["records"][0]["type"], 2);
    assert_eq!(user2["records"][0]["amount"], "0.05", "a market bid's amount is money");
    assert_eq!(q(store, "order.finished", json!([2, "BTCBCH", 0, 0, 0, 10, 1]))["records"], json!([]));
    assert_eq!(q(store, "order.finished", json!([2, "BTCBCH", 0, 0, 1, 1]))["records"][0]["id"], 2);
    // A market bid by stock amount: type 3, its amount stock.
    let by_stock = q(store, "order.finished", json!([4, "ETHBCH", 0, 0, 0, 10]));
    assert_eq!(
        by_stock["records"],
        json!([{"id": 6, "ctime": t(11), "ftime": t(11), "user": 4, "market": "ETHBCH", "source": "m", "type": 3,
                "side": 2, "price": "0", "amount": "0.4", "taker_fee": "0.002", "maker_fee": "0",
                "deal_stock": "0.4", "deal_money": "0.08", "deal_fee": "0.0008"}])
    );
    // Time filters: >= start, < end, on create time.
    let start = t(3) as i64 + 1; // after order 2 was created, before order 4
    assert_eq!(
        q(store, "order.finished", json!([2, "BTCBCH", start, 0, 0, 10]))["records"].as_array().unwrap().len(),
        1
    );
    assert_eq!(q(store, "order.finished", json!([2, "ETHBCH", 0, 0, 0, 10]))["records"], json!([]));
    // Detail by id, from its own shard.
    assert_eq!(q(store, "order.finished_detail", json!([1]))["deal_stock"], "1");
    assert_eq!(q(store, "order.finished_detail", json!([3])), Value::Null);
    // Deals of an order: its own fee and the counterparty's order.
    let deals = q(store, "order.deals", json!([1, 0, 10]));
    assert_eq!(
        deals,
        json!({"offset": 0, "limit": 10, "records": [
            {"time": t(6), "user": 1, "id": 2, "role": 1, "price": "0.1", "amount": "0.5", "deal": "0.05", "fee": "0.00005", "deal_order_id": 4},
            {"time": t(3), "user": 1, "id": 1, "role": 1, "price": "0.1", "amount": "0.5", "deal": "0.05", "fee": "0.00005", "deal_order_id": 2},
        ]})
    );
    let user_deals = q(store, "market.user_deals", json!([2, "BTCBCH", 0, 1]));
    assert_eq!(
        user_deals["records"],
        json!([{"time": t(6), "user": 2, "id": 2, "side": 2, "role": 2, "price": "0.1", "amount": "0.5",
                "deal": "0.05", "fee": "0.001", "deal_order_id": 1, "market": "BTCBCH"}])
    );
    // Balance history: every change, newest first, with its detail.
    let all = q(store, "balance.history", json!([1, "", "", 0, 0, 0, 100]));
    let records = all["records"].as_array().unwrap();
    assert_eq!(records.len(), 7, "a deposit and three legs per trade: {all}");
    assert_eq!(
        records.last().unwrap(),
        &json!({"time": t(0), "asset": "BTC", "business": "deposit", "change": "10", "balance": "10", "detail": {"id": 1, "tx": "abc"}})
    );
    let fee_leg = &records[0];
    assert_eq!(fee_leg["business"], "trade");
    assert_eq!(fee_leg["change"], "-0.00005");
    assert_eq!(fee_leg["detail"], json!({"a": "0.5", "f": "0.001", "i": 1, "m": "BTCBCH", "p": "0.1"}));
    let deposits = q(store, "balance.history", json!([1, "BTC", "deposit", 0, 0, 0, 10]));
    assert_eq!(deposits["records"].as_array().unwrap().len(), 1);
    assert_eq!(q(store, "balance.history", json!([1, "ETH", "", 0, 0, 0, 10]))["records"], json!([]));
    // Validation: error 1, and unknown methods 4.
    for (method, params) in [
        ("balance.history", json!([0, "", "", 0, 0, 0, 10])),
        ("balance.history", json!([1, "", "", 0, 0, 0, 102])),
        ("balance.history", json!([1, "", "", 0, 0, 0, 0])),
        ("balance.history", json!([1, "", "", 5, 4, 0, 10])),
        ("balance.history", json!([1, 7, "", 0, 0, 0, 10])),
        ("balance.history", json!([1, "", "", 0, 0, 0])),
        ("order.finished", json!([1, "BTCBCH", 0, 0, 0, 10, 3])),
        ("order.finished", json!([1, "BTCBCH", 0, 0, -1, 10])),
        ("order.deals", json!([0, 0, 10])),
        ("order.deals", json!([1, 0])),
        ("order.finished_detail", json!(["1"])),
        ("market.user_deals", json!([1, "BTCBCH", 0, 1000])),
    ] {
        assert_eq!(
            run(store, method, params.as_array().unwrap()),
            Err(viaduct_matcher::RpcError::InvalidArgument),
            "{method} {params}"
        );
    }
    // A market name that would break a formatted statement is only a value here.
    let sneaky = q(store, "market.user_deals", json!([2, "x' OR '1'='1", 0, 10]));
    assert_eq!(sneaky["records"], json!([]));
}

#[test]
fn sqlite_records_and_answers_as_viabtc() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let mut s = store::open(&url).unwrap();
    fill(&mut *s);
    check(&mut *s);
    // Reopened, the tables and the sequence are there.
    let mut again = store::open(&url).unwrap();
    again.create_tables().unwrap();
    assert_eq!(again.committed_seq().unwrap(), 12);
    // A new file has one table of each kind, and no shard.
    assert_eq!(again.layout(), Layout::Single);
    let names = |s: &mut dyn Store| -> Vec<String> {
        let sql = "SELECT `name` FROM `sqlite_master` WHERE `type` = 'table' ORDER BY `name`";
        s.select(sql, &[]).unwrap().into_iter().map(|r| r[0].as_text()).collect()
    };
    let kinds =
        ["balance_history", "deal_history", "history_state", "order_detail", "order_history", "user_deal_history"];
    assert_eq!(names(&mut *again), kinds);
    // A file written in ViaBTC's shards (by a build before the single layout) is read and
    // written in them: the same rows, the same answers.
    let old = dir.path().join("sharded.db");
    store::Sqlite::create_sharded(old.to_str().unwrap()).unwrap();
    let mut s = store::open(&format!("sqlite://{}", old.display())).unwrap();
    assert_eq!(s.layout(), Layout::Sharded);
    fill(&mut *s);
    check(&mut *s);
    let tables = names(&mut *s);
    assert_eq!(tables.len(), 5 * 100 + 1, "{tables:?}");
    assert!(tables.contains(&"order_history_7".to_string()) && !tables.contains(&"order_history".to_string()));
}

/// A database of its own on the shared MariaDB, dropped when the test ends.
pub struct MariaDb {
    admin: mysql::Conn,
    name: String,
}

impl MariaDb {
    pub fn new(tag: &str) -> (MariaDb, String) {
        use mysql::prelude::Queryable;
        let base = std::env::var("VIADUCT_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(&base).unwrap())
            .unwrap_or_else(|e| panic!("MariaDB at {base} is needed by this test and cannot be reached: {e}"));
        let name = format!("viaduct_{tag}_{}", std::process::id());
        admin.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")).unwrap();
        admin.query_drop(format!("CREATE DATABASE `{name}`")).unwrap();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        (MariaDb { admin, name }, url)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        let _ = self.admin.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

#[test]
fn mariadb_records_and_answers_as_viabtc() {
    let (_db, url) = MariaDb::new("history");
    let mut s = store::open(&url).unwrap();
    let started = std::time::Instant::now();
    fill(&mut *s);
    eprintln!("500 tables created and 12 commands written in {:?}", started.elapsed());
    check(&mut *s);
    let mut again = store::open(&url).unwrap();
    again.create_tables().unwrap();
    assert_eq!(again.committed_seq().unwrap(), 12);
}

#[test]
fn mariadb_without_load_data_records_and_answers_alike() {
    // Where the server refuses LOAD DATA LOCAL (local_infile off), rows go in as prepared INSERTs.
    let (_db, url) = MariaDb::new("inserts");
    let mut s = store::Mysql::open_with(&url, false).unwrap();
    fill(&mut s);
    check(&mut s);
}

/// Text no store may alter or be broken by: every byte `LOAD DATA` treats specially, SQL quotes
/// and comments, and the literal spellings of NULL.
const HOSTILE: [&str; 6] = ["a\tb\nc\\d\re", "\\N", "NULL", "x'); DROP TABLE t; --", "\0\"\\\\0é✓", "\\t\\n"];

fn hostile_rows() -> Rows {
    use viaduct_publishers::history::{BalanceRow, OrderRow};
    let mut rows = Rows::default();
    for (i, text) in HOSTILE.iter().enumerate() {
        rows.balances.push(BalanceRow {
            time: t(i as u64),
            user: 7,
            asset: "BTC".into(),
            business: text.to_string(),
            change: "1.5".into(),
            balance: "2.25".into(),
            detail: format!("{{\"k\":{}}}{text}", serde_json::to_string(text).unwrap()),
        });
        rows.orders.push(OrderRow {
            id: 100 + i as u64,
            create_time: t(i as u64),
            finish_time: t(i as u64 + 1),
            user: 7,
            market: "BTCBCH".into(),
            source: text.to_string(),
            kind: 1,
            side: 2,
            price: "1".into(),
            amount: "2".into(),
            taker_fee: "0.002".into(),
            maker_fee: "0.001".into(),
            deal_stock: "2".into(),
            deal_money: "2".into(),
            deal_fee: "0.004".into(),
        });
    }
    rows
}

/// What follows FROM to read the rows of ViaBTC's shard `n` of `kind` (whose shard key is the
/// column `key`) in `layout`: the shard's table, or the one table's rows of that shard.
fn shard(layout: Layout, kind: &str, key: &str, n: u64) -> String {
    match layout {
        Layout::Sharded => format!("`{}`", layout.table(kind, n)),
        Layout::Single => format!("`{kind}` WHERE `{key}` % 100 = {n}"),
    }
}

fn hostile_text_round_trips(store: &mut dyn Store) {
    store.create_tables().unwrap();
    store.write(&hostile_rows(), 1).unwrap();
    let texts = |rows: Vec<Vec<store::SqlValue>>| rows.into_iter().map(|r| r[0].as_text()).collect::<Vec<_>>();
    let layout = store.layout();
    let (balances, orders) =
        (shard(layout, "balance_history", "user_id", 7), shard(layout, "order_history", "user_id", 7));
    let details = shard(layout, "order_detail", "id", 0);
    let business = texts(store.select(&format!("SELECT `business` FROM {balances} ORDER BY `id`"), &[]).unwrap());
    assert_eq!(business, HOSTILE);
    let detail = texts(store.select(&format!("SELECT `detail` FROM {balances} ORDER BY `id`"), &[]).unwrap());
    let want: Vec<String> =
        HOSTILE.iter().map(|t| format!("{{\"k\":{}}}{t}", serde_json::to_string(t).unwrap())).collect();
    assert_eq!(detail, want);
    let source = texts(store.select(&format!("SELECT `source` FROM {orders} ORDER BY `id`"), &[]).unwrap());
    assert_eq!(source, HOSTILE);
    let times = store.select(&format!("SELECT `create_time`, `finish_time` FROM {details}"), &[]).unwrap();
    assert_eq!(times, vec![vec![store::SqlValue::Float(t(0)), store::SqlValue::Float(t(1))]]);
    assert_eq!(store.committed_seq().unwrap(), 1);
}

#[test]
fn hostile_text_round_trips_in_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    hostile_text_round_trips(&mut *store::open(&url).unwrap());
    let (_db, url) = MariaDb::new("hostile_load");
    hostile_text_round_trips(&mut store::Mysql::open_with(&url, true).unwrap());
    let (_db, url) = MariaDb::new("hostile_insert");
    hostile_text_round_trips(&mut store::Mysql::open_with(&url, false).unwrap());
}

#[test]
fn mariadb_refuses_rather_than_truncates() {
    // A value too long for its column is an error on either path, and nothing of the
    // transaction is kept: LOCAL would make it a warning and cut the value.
    for load in [true, false] {
        let (_db, url) = MariaDb::new(if load { "long_load" } else { "long_insert" });
        let mut s = store::Mysql::open_with(&url, load).unwrap();
        s.create_tables().unwrap();
        let mut rows = hostile_rows();
        rows.orders[3].source = "s".repeat(31);
        let err = s.write(&rows, 1).unwrap_err();
        eprintln!("load {load}: {err}");
        assert_eq!(s.committed_seq().unwrap(), 0);
        let kept = s.select("SELECT COUNT(*) FROM `balance_history_7`", &[]).unwrap();
        assert_eq!(kept[0][0].as_i64(), 0);
    }
}

/// SQLite that counts its transactions. When `faulty`, its first write commits and then reports a
/// failure, as a MySQL connection lost during COMMIT does, and its first reconnect fails, as a
/// server still down does.
struct Probe {
    inner: Box<dyn Store>,
    faulty: bool,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    reconnects: usize,
}

impl Probe {
    fn new(inner: Box<dyn Store>, faulty: bool) -> Probe {
        Probe { inner, faulty, writes: std::sync::Arc::default(), reconnects: 0 }
    }
}

impl Store for Probe {
    fn create_tables(&mut self) -> Result<(), store::StoreError> {
        self.inner.create_tables()
    }
    fn committed_seq(&mut self) -> Result<u64, store::StoreError> {
        self.inner.committed_seq()
    }
    fn write(&mut self, rows: &Rows, seq: u64) -> Result<(), store::StoreError> {
        self.inner.write(rows, seq)?;
        let writes = self.writes.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        if self.faulty && writes == 1 {
            let lost = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR);
            return Err(rusqlite::Error::SqliteFailure(lost, Some("the COMMIT's answer was lost".into())).into());
        }
        Ok(())
    }
    fn select(
        &mut self,
        sql: &str,
        params: &[store::SqlValue],
    ) -> Result<Vec<Vec<store::SqlValue>>, store::StoreError> {
        self.inner.select(sql, params)
    }
    fn reconnect(&mut self) -> Result<(), store::StoreError> {
        self.reconnects += 1;
        if self.faulty && self.reconnects == 1 {
            return Err(rusqlite::Error::InvalidQuery.into());
        }
        self.inner.reconnect()
    }
    fn layout(&self) -> Layout {
        self.inner.layout()
    }
}

/// A history writer into SQLite in `dir` whose store is a [`Probe`] (`faulty` as there): the
/// service, the probe's count of transactions, and the store's URL.
fn probed(
    dir: &std::path::Path,
    spec: &Spec,
    faulty: bool,
) -> (viaduct_publishers::history::writer::HistoryService, std::sync::Arc<std::sync::atomic::AtomicUsize>, String) {
    use viaduct_publishers::history::writer::{HistoryConfig, HistoryService, WriterStore};
    let url = format!("sqlite://{}", dir.join("history.db").display());
    let mut inner = store::open(&url).unwrap();
    inner.create_tables().unwrap();
    let probe = Probe::new(inner, faulty);
    let writes = std::sync::Arc::clone(&probe.writes);
    let ready = WriterStore::Ready(Box::new(probe));
    let svc = HistoryService::start(
        &HistoryConfig::new(url.clone()),
        std::sync::Arc::new(spec.clone()),
        ready,
        0,
        viaduct_publishers::alert::Alerts::log(),
        viaduct_publishers::history::writer::WriterPace { durable: Default::default(), idle_priority: false },
    )
    .unwrap();
    (svc, writes, url)
}

#[test]
fn a_commit_whose_answer_was_lost_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let (svc, writes, url) = probed(dir.path(), &spec, true);
    let feed = svc.feed();
    feed.send(deposit(&mut m, &spec, 1)).unwrap();
    // Once its first write has failed, the writer is unsure whether sequence 1 took; more
    // arrives meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while writes.load(std::sync::atomic::Ordering::Acquire) == 0 {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for seq in 2..=4 {
        feed.send(deposit(&mut m, &spec, seq)).unwrap();
    }
    drop(feed);
    // The writer resolves its doubt (a failed reconnect, then one that works) and writes on;
    // stopping now would give a failing store up.
    let committed = svc.committed();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while committed.load(std::sync::atomic::Ordering::Acquire) < 4 {
        assert!(std::time::Instant::now() < deadline, "the writer did not get past the lost COMMIT");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    svc.join();
    let mut s = store::open(&url).unwrap();
    assert_eq!(s.committed_seq().unwrap(), 4);
    let rows = s.select("SELECT `change` FROM `balance_history`", &[]).unwrap();
    assert_eq!(rows.len(), 4, "one row per deposit, none twice: {rows:?}");
}

#[test]
fn commands_without_rows_are_stored_once_a_second_not_once_a_batch() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let (svc, writes, url) = probed(dir.path(), &spec, false);
    let (feed, committed, stored) = (svc.feed(), svc.committed(), svc.stored());
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "waited in vain for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // 50 batches of commands that leave no rows (resting orders, say), each on its own.
    for seq in 1..=50 {
        feed.send((seq, Events::default())).unwrap();
        wait_for("the batch to count as committed", &|| committed.load(Ordering::Acquire) == seq);
    }
    // They moved `committed` (the lag bound reads it) with at most one or two transactions
    // where a transaction per batch would be 50; the store's sequence catches up within a
    // second or so.
    assert!(writes.load(Ordering::Acquire) <= 2, "{} transactions", writes.load(Ordering::Acquire));
    wait_for("the store to hold sequence 50", &|| stored.load(Ordering::Acquire) == 50);
    assert!(writes.load(Ordering::Acquire) <= 3);
    // A command with rows is stored with its sequence: `committed` never runs ahead of `stored`
    // past a row (waiting for rows is not waiting for STORE_EMPTY_EVERY).
    let before = writes.load(Ordering::Acquire);
    feed.send(deposit(&mut Matcher::new(spec.clone()), &spec, 51)).unwrap();
    wait_for("the deposit to be committed", &|| committed.load(Ordering::Acquire) == 51);
    assert_eq!(stored.load(Ordering::Acquire), 51);
    assert_eq!(writes.load(Ordering::Acquire), before + 1, "one transaction for the deposit");
    // Stopping stores the last sequence, even of commands without rows.
    feed.send((52, Events::default())).unwrap();
    drop(feed);
    svc.join();
    let mut s = store::open(&url).unwrap();
    assert_eq!(s.committed_seq().unwrap(), 52);
    assert_eq!(s.select("SELECT `change` FROM `balance_history`", &[]).unwrap().len(), 1);
}

#[test]
fn rows_that_keep_coming_are_committed_together_at_most_every_write_every() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    use viaduct_publishers::history::writer::WRITE_EVERY;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let (svc, writes, url) = probed(dir.path(), &spec, false);
    let (feed, committed) = (svc.feed(), svc.committed());
    let mut m = Matcher::new(spec.clone());
    let wait_for = |seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while committed.load(Ordering::Acquire) < seq {
            assert!(Instant::now() < deadline, "sequence {seq} was never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // After a quiet spell, a row is committed on its own.
    feed.send(deposit(&mut m, &spec, 1)).unwrap();
    wait_for(1);
    assert_eq!(writes.load(Ordering::Acquire), 1);
    // Rows that keep coming share transactions: 200 batches sent one after another (a few
    // milliseconds in all, against WRITE_EVERY between commits) go in a few transactions where
    // one per batch would be 200. A machine 10 times slower than needed to send them within one
    // WRITE_EVERY would still stay far below the bound.
    for seq in 2..=201 {
        feed.send(deposit(&mut m, &spec, seq)).unwrap();
    }
    wait_for(201);
    let n = writes.load(Ordering::Acquire) - 1;
    assert!((1..=20).contains(&n), "{n} transactions for 200 batches (WRITE_EVERY {WRITE_EVERY:?})");
    drop(feed);
    svc.join();
    let mut s = store::open(&url).unwrap();
    assert_eq!(s.select("SELECT `change` FROM `balance_history`", &[]).unwrap().len(), 201);
}

#[test]
fn a_shard_streamed_in_many_packets_reads_back_exactly() {
    // One table shard of several MiB: `LOAD DATA` sends it in packets of 1 MiB, so rows, fields
    // and escapes straddle packet boundaries; every value must still read back as written.
    let base = &hostile_rows().balances;
    let rows = Rows {
        balances: (0..100_000)
            .map(|i| {
                let b = &base[i % base.len()];
                viaduct_publishers::history::BalanceRow {
                    detail: format!("{}{i}{}", b.detail, "\\t".repeat(i % 13)),
                    ..b.clone()
                }
            })
            .collect(),
        ..Rows::default()
    };
    let bytes: usize = rows.balances.iter().map(|b| b.detail.len()).sum();
    assert!(bytes > 3 << 20, "the shard's details alone must span several packets ({bytes} bytes)");
    let (_db, url) = MariaDb::new("packets");
    let mut s = store::Mysql::open_with(&url, true).unwrap();
    s.create_tables().unwrap();
    s.write(&rows, 1).unwrap();
    let read: Vec<String> = s
        .select("SELECT `detail` FROM `balance_history_7` ORDER BY `id`", &[])
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_text())
        .collect();
    let written: Vec<String> = rows.balances.iter().map(|b| b.detail.clone()).collect();
    assert_eq!(read.len(), written.len());
    assert!(read == written, "a detail read back differently");
}

/// The values viaduct writes are MySQL's own: each random value at a random scale, stored whole
/// into a `DECIMAL(30, s)` column by MariaDB, reads back as `decimal::rescale_round` gives it.
#[test]
fn decimals_are_rounded_as_mariadb_rounds_them() {
    use mysql::prelude::Queryable;
    use rand::{Rng, SeedableRng};
    use viaduct_matcher::decimal::{rescale_round, Dec};
    let (_db, url) = MariaDb::new("rounding");
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
    conn.query_drop("CREATE TABLE r (i INT PRIMARY KEY, a DECIMAL(30,4), b DECIMAL(30,8), c DECIMAL(30,16))").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut cases = vec![(192_256_564_256i128, 9u32), (-3_856_778_015, 9), (1_000_000_004, 9), (-1_000_000_005, 9)];
    for _ in 0..2_000 {
        let scale = rng.gen_range(17..=24);
        let digits = rng.gen_range(1..=30.min(scale + 12));
        let mut m = rng.gen_range(0..10i128.pow(digits));
        // Ties at each column's scale, often.
        if rng.gen_bool(0.3) {
            m = m / 10i128.pow(scale - 8) * 10i128.pow(scale - 8) + 5 * 10i128.pow(scale - 9);
        }
        cases.push((if rng.gen_bool(0.5) { -m } else { m }, scale));
    }
    let stmt = conn.prep("INSERT INTO r VALUES (?, ?, ?, ?)").unwrap();
    for (i, (m, scale)) in cases.iter().enumerate() {
        let text = Dec::new(*m, *scale).raw().to_string();
        conn.exec_drop(&stmt, (i, &text, &text, &text)).unwrap();
    }
    let stored: Vec<(usize, String, String, String)> = conn.query("SELECT i, a, b, c FROM r ORDER BY i").unwrap();
    for (i, a, b, c) in stored {
        let (m, scale) = cases[i];
        let ours = |to: u32| Dec::new(rescale_round(m, scale, to), to).raw().to_string();
        let zero_fill = |s: &str, to: usize| if s == "0" { format!("0.{}", "0".repeat(to)) } else { s.to_string() };
        assert_eq!(
            (zero_fill(&ours(4), 4), zero_fill(&ours(8), 8), zero_fill(&ours(16), 16)),
            (a.clone(), b.clone(), c.clone()),
            "{m} at scale {scale}"
        );
    }
}

/// A seeded workload of deposits, withdrawals, crossing limit and market orders with fees and
/// cancels, whose rows carry more decimals than their columns: every row of every table reads
/// back the same from MariaDB and from SQLite.
#[test]
fn every_history_row_is_the_same_in_both_stores() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let (_db, mysql_url) = MariaDb::new("both_stores");
    let sharded = dir.path().join("sharded.db");
    store::Sqlite::create_sharded(sharded.to_str().unwrap()).unwrap();
    let mut stores: [Box<dyn Store>; 3] = [
        store::open(&format!("sqlite://{}", dir.path().join("h.db").display())).unwrap(),
        store::open(&format!("sqlite://{}", sharded.display())).unwrap(),
        store::open(&mysql_url).unwrap(),
    ];
    let spec = Spec::new(&embedded()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let mut events = Events::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for s in stores.iter_mut() {
        s.create_tables().unwrap();
    }
    let (mut seq, mut written) = (0, 0);
    for i in 0..600u64 {
        let user = rng.gen_range(1..=6);
        let fee = |rng: &mut rand_chacha::ChaCha8Rng| format!("0.{:04}", rng.gen_range(0..30));
        let (method, params) = match rng.gen_range(0..10) {
            0 => (
                "balance.update",
                json!([
                    user,
                    "BCH",
                    "deposit",
                    i,
                    format!("{}.{:08}", rng.gen_range(1..500), rng.gen_range(0..100_000_000)),
                    {}
                ]),
            ),
            1 => (
                "balance.update",
                json!([
                    user,
                    "BTC",
                    "deposit",
                    i,
                    format!("{}.{:08}", rng.gen_range(1..50), rng.gen_range(0..100_000_000)),
                    {}
                ]),
            ),
            2 => ("balance.update", json!([user, "BTC", "withdraw", i, "-0.00000003", {}])),
            3 => (
                "order.put_market",
                json!([
                    user,
                    "BTCBCH",
                    rng.gen_range(1..=2),
                    format!("0.{:05}", rng.gen_range(100..9999)),
                    fee(&mut rng),
                    "m"
                ]),
            ),
            4 => ("order.cancel", json!([user, "BTCBCH", rng.gen_range(1..=m.last_order_id().max(1))])),
            _ => {
                let price = format!("{}.{:08}", rng.gen_range(1..3), rng.gen_range(0..100_000_000));
                let amount = format!("0.{:08}", rng.gen_range(100_000..99_999_999));
                let params =
                    json!([user, "BTCBCH", rng.gen_range(1..=2), amount, price, fee(&mut rng), fee(&mut rng), "w"]);
                ("order.put_limit", params)
            }
        };
        events.clear();
        let Ok(cmd) = decode(&spec, method, params.as_array().unwrap()) else { continue };
        if m.apply(T0 + i * 1_000, &cmd, &mut events).is_err() {
            continue;
        }
        seq += 1;
        let mut rows = Rows::default();
        rows.add(&spec, events.view());
        written += rows.balances.len() + rows.orders.len() + rows.deals.len();
        for s in stores.iter_mut() {
            s.write(&rows, seq).unwrap();
        }
    }
    assert!(written > 1_000 && m.last_deal_id() > 100, "{written} rows, {} deals", m.last_deal_id());
    let mut compared = 0;
    let kinds = [
        ("balance_history", "user_id"),
        ("order_history", "user_id"),
        ("order_detail", "id"),
        ("deal_history", "order_id"),
        ("user_deal_history", "user_id"),
    ];
    for (table, key) in kinds {
        for n in 0..100 {
            // A shard of ViaBTC's tables, and the same rows of the single layout's one table.
            let [single, sqlite, mariadb] = [0, 1, 2].map(|i| {
                let sql = format!("SELECT * FROM {} ORDER BY 1", shard(stores[i].layout(), table, key, n));
                stores[i].select(&sql, &[]).unwrap()
            });
            // Each store numbers the rows of an auto-increment `id` its own way (MariaDB leaves
            // gaps after bulk loads); the order tables' `id` is the order's.
            let skip = usize::from(!table.starts_with("order_"));
            let text = |rows: Vec<Vec<viaduct_publishers::history::store::SqlValue>>| -> Vec<Vec<String>> {
                rows.into_iter().map(|r| r.iter().skip(skip).map(|v| v.as_text()).collect()).collect()
            };
            let (single, sqlite, mariadb) = (text(single), text(sqlite), text(mariadb));
            compared += sqlite.len();
            assert_eq!(single, sqlite, "{table}_{n}: SQLite's single layout, then its shards");
            assert_eq!(sqlite.len(), mariadb.len(), "{table}_{n}");
            for (a, b) in sqlite.iter().zip(&mariadb) {
                assert_eq!(a, b, "{table}_{n}: SQLite, then MariaDB");
            }
        }
    }
    assert!(compared > 1_000);
}

#[test]
fn one_shard_takes_many_rows_in_one_transaction() {
    // A few busy users put every row of a large transaction into a few shards: more values than
    // one statement may bind, so the store splits them.
    let many = || {
        let mut rows = hostile_rows();
        let (b, o) = (rows.balances[0].clone(), rows.orders[0].clone());
        for i in 0..5_000 {
            rows.balances.push(b.clone());
            rows.orders.push(viaduct_publishers::history::OrderRow { id: 1_000 + i * 100, ..o.clone() });
        }
        rows
    };
    let count = |s: &mut dyn Store, kind: &str, key: &str, n: u64| {
        let from = shard(s.layout(), kind, key, n);
        s.select(&format!("SELECT COUNT(*) FROM {from}"), &[]).unwrap()[0][0].as_i64()
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let (_db, mysql_url) = MariaDb::new("many_load");
    let (_db2, insert_url) = MariaDb::new("many_insert");
    let stores: [Box<dyn Store>; 3] = [
        store::open(&url).unwrap(),
        Box::new(store::Mysql::open_with(&mysql_url, true).unwrap()),
        Box::new(store::Mysql::open_with(&insert_url, false).unwrap()),
    ];
    for mut s in stores {
        s.create_tables().unwrap();
        s.write(&many(), 1).unwrap();
        assert_eq!(count(&mut *s, "balance_history", "user_id", 7), 5_006);
        assert_eq!(count(&mut *s, "order_history", "user_id", 7), 5_006);
        assert_eq!(count(&mut *s, "order_detail", "id", 0), 5_001);
    }
}
