//! A MariaDB outage under load, on a private MariaDB this test starts on a port of its own (never
//! the shared one): matching goes on while the writer retries, lag stays within its bound because
//! state-changing requests get error 3 past it, and once the server is back every history row is
//! there exactly once.

#[path = "support/mariadb.rs"]
mod mariadb;
mod support;

use std::time::{Duration, Instant};

use mariadb::PrivateMariaDb;

use serde_json::json;
use viaduct::engine::{Engine, EngineOptions};
use viaduct::profile::Profile;
use viaduct_matcher::config::embedded;
use viaduct_matcher::Spec;
use viaduct_publishers::history::writer::HistoryConfig;

/// Drives a mix of deposits and crossing orders for `how_long` at about 5,000 a second (well
/// within what the writer takes, so that only the outage builds lag); returns (acknowledged,
/// refused with error 3).
fn drive(engine: &Engine, next: &mut u64, how_long: Duration) -> (u64, u64) {
    drive_until(engine, next, how_long, |_, _| false)
}

/// [`drive`] until `done(acknowledged, refused)` or for `how_long` at most.
fn drive_until(engine: &Engine, next: &mut u64, how_long: Duration, done: impl Fn(u64, u64) -> bool) -> (u64, u64) {
    let mut client = engine.client();
    let (mut acked, mut refused, mut sent) = (0, 0, 0u64);
    let until = Instant::now() + how_long;
    let started = Instant::now();
    while Instant::now() < until && !done(acked, refused) {
        let due = started.elapsed().as_secs_f64() * 5_000.0;
        if (sent + refused) as f64 >= due {
            std::thread::sleep(Duration::from_millis(1));
        }
        while client.inflight() < 64 && ((sent + refused) as f64) < due {
            *next += 1;
            let i = *next;
            let user = i % 20 + 1;
            let (method, params) = match i % 4 {
                0 => ("balance.update", json!([user, "BTC", "deposit", i, "1", {}])),
                1 => ("balance.update", json!([user, "BCH", "deposit", i, "1", {}])),
                _ => ("order.put_limit", json!([user, "BTCBCH", i % 2 + 1, "0.01", "0.5", "0.001", "0.001", "o"])),
            };
            match client.submit(i as i64, method, params.as_array().unwrap()) {
                Ok(()) => sent += 1,
                Err(r) => {
                    assert!(r.0.json().contains(r#""code":3"#), "{}", r.0.json());
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    break;
                }
            }
        }
        if client.inflight() > 0 {
            let r = client.recv();
            acked += u64::from(r.journal_seq != 0);
        }
    }
    while client.inflight() > 0 {
        acked += u64::from(client.recv().journal_seq != 0);
    }
    let _ = sent;
    (acked, refused)
}

#[test]
fn a_mariadb_outage_under_load_loses_and_repeats_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = PrivateMariaDb::install(&dir.path().join("mariadb"));
    db.start();
    {
        use mysql::prelude::Queryable;
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(&db.url("mysql")).unwrap()).unwrap();
        admin.query_drop("CREATE DATABASE viaduct").unwrap();
    }
    let data = dir.path().join("data");
    let spec = Spec::new(&embedded()).unwrap();
    let mut profile = Profile::load("default").unwrap();
    profile.ring.input_slots = 1024;
    profile.ring.output_slots = 1024;
    let lag_max = 5_000;
    let history = HistoryConfig { lag_max, ..HistoryConfig::new(db.url("viaduct")) };
    let options = EngineOptions { history: Some(history), ..EngineOptions::default() };
    let (engine, _) = Engine::start_with(&data, spec.clone(), &profile, options, |_| {}).unwrap();
    let mut next = 0;

    let (before, refused_before) = drive_until(&engine, &mut next, Duration::from_secs(60), |acked, _| acked >= 1_000);
    assert!(before >= 1_000 && refused_before == 0, "{before} acknowledged, {refused_before} refused");

    // The outage: matching goes on until the lag reaches its bound, then writes get error 3.
    // What the writer had not committed when the database went counts toward the bound already.
    let lag_at_kill = engine.durable_seq() - engine.history_committed().unwrap();
    db.kill();
    let (during, refused) = drive_until(&engine, &mut next, Duration::from_secs(60), |_, refused| refused > 0);
    assert!(
        during + lag_at_kill >= lag_max - 64,
        "matching went on during the outage up to the bound ({during}, with {lag_at_kill} unwritten before it)"
    );
    let lag = engine.durable_seq() - engine.history_committed().unwrap();
    assert!(during > 0, "matching stopped with the database");
    assert!(refused > 0, "back-pressure never applied ({during} acknowledged during the outage)");
    assert!(lag <= lag_max + 64, "the writer lags {lag}, past its bound {lag_max} by more than one client's window");
    // Reads never wait for history.
    let mut reader = engine.client();
    reader.submit(1, "balance.query", json!([1]).as_array().unwrap()).unwrap();
    assert!(reader.recv().json().contains("available"));
    drop(reader);

    // Back: the writer catches up and writes resume.
    db.start();
    wait_caught_up(&engine, Duration::from_secs(60));
    let (after, refused_after) = drive(&engine, &mut next, Duration::from_millis(1000));
    assert!(after > 0 && refused_after == 0, "{after} acknowledged, {refused_after} refused after the outage");

    // A stop while the database is down does not wait for it; the next start catches up.
    db.kill();
    let (last, _) = drive(&engine, &mut next, Duration::from_millis(500));
    let stopping = Instant::now();
    let (seq_stopped, _) = engine.shutdown();
    assert!(stopping.elapsed() < Duration::from_secs(10), "stopping waited {:?} for the database", stopping.elapsed());
    db.start();
    let history = HistoryConfig { lag_max, ..HistoryConfig::new(db.url("viaduct")) };
    let options = EngineOptions { history: Some(history), ..EngineOptions::default() };
    let (engine, startup) = Engine::start_with(&data, spec.clone(), &profile, options, |_| {}).unwrap();
    assert_eq!(startup.last_seq, seq_stopped);
    assert_eq!(engine.history_committed(), Some(seq_stopped), "caught up before serving");
    let (seq, _) = engine.shutdown();
    assert!(last > 0);

    // Every row of every journaled command, exactly once.
    support::assert_history_matches_journal(&data, &db.url("viaduct"), seq);
    eprintln!(
        "acknowledged {before} before, {during} during ({refused} refused), {after} after the outage; {seq} commands"
    );
}

/// Waits, with a deadline, until history has committed everything durable.
fn wait_caught_up(engine: &Engine, within: Duration) {
    support::wait_until("history to catch up", within, || engine.history_committed().unwrap() >= engine.durable_seq());
}

/// A history store that is down when viaduct starts does not stop the exchange: it starts,
/// matches and acknowledges; a restart while the store is still down does too; once the store
/// is up, the writer writes every row it missed from the journal, then the rest, each once.
#[test]
fn a_store_that_is_down_at_startup_is_caught_up_from_the_journal_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = PrivateMariaDb::install(&dir.path().join("mariadb"));
    let data = dir.path().join("data");
    let spec = Spec::new(&embedded()).unwrap();
    let profile = Profile::load("default").unwrap();
    let start = || {
        let history = HistoryConfig { lag_max: 100_000, ..HistoryConfig::new(db.url("viaduct")) };
        let options = EngineOptions { history: Some(history), ..EngineOptions::default() };
        Engine::start_with(&data, spec.clone(), &profile, options, |_| {}).expect("starts with its store down")
    };
    let mut next = 0;
    let (engine, _) = start();
    let (first, refused) = drive(&engine, &mut next, Duration::from_millis(400));
    assert!(first > 100 && refused == 0, "{first} acknowledged, {refused} refused with the store down");
    let (stopped_at, _) = engine.shutdown();
    // Restarted, the store still down: the rows of the first run are owed from the journal.
    let (engine, startup) = start();
    assert_eq!(startup.last_seq, stopped_at);
    let (second, refused) = drive(&engine, &mut next, Duration::from_millis(400));
    assert!(second > 100 && refused == 0, "{second} acknowledged, {refused} refused with the store down");
    assert!(engine.history_committed().unwrap() <= stopped_at + second);
    db.start();
    {
        use mysql::prelude::Queryable;
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(&db.url("mysql")).unwrap()).unwrap();
        admin.query_drop("CREATE DATABASE viaduct").unwrap();
    }
    // The writer's pauses grow to 30 s at most; it tries again within that.
    wait_caught_up(&engine, Duration::from_secs(90));
    let (third, _) = drive(&engine, &mut next, Duration::from_millis(300));
    assert!(third > 0);
    let (seq, _) = engine.shutdown();
    support::assert_history_matches_journal(&data, &db.url("viaduct"), seq);
}

/// A history store that lost its rows (a deleted `history.db`) while the journal it would need
/// was pruned is refused with what is wrong and the way out; `--history-from-snapshot` starts
/// history afresh from the newest snapshot.
#[test]
fn a_store_whose_journal_was_pruned_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = Spec::new(&embedded()).unwrap();
    let mut profile = Profile::load("default").unwrap();
    profile.snapshot_interval = 300;
    profile.segment_bytes_max = 16 * 1024;
    let db_path = dir.path().join("history.db");
    let url = format!("sqlite://{}", db_path.display());
    let start = |from_snapshot: bool| {
        let history = HistoryConfig::new(url.clone());
        let options =
            EngineOptions { history: Some(history), history_from_snapshot: from_snapshot, ..EngineOptions::default() };
        Engine::start_with(&data, spec.clone(), &profile, options, |_| {})
    };
    let (engine, _) = start(false).unwrap();
    let mut next = 0;
    let first_segment = data.join("journal").join(format!("seg-{:020}.log", 1));
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_segment.exists() {
        assert!(Instant::now() < deadline, "the first segment was never pruned");
        drive(&engine, &mut next, Duration::from_millis(200));
    }
    let (seq, _) = engine.shutdown();
    std::fs::remove_file(&db_path).unwrap();
    let err = format!("{:#}", start(false).err().expect("refused"));
    assert!(err.contains("holds rows up to sequence 0") && err.contains("--history-from-snapshot"), "{err}");
    let (engine, startup) = start(true).unwrap();
    assert_eq!(startup.last_seq, seq);
    assert_eq!(engine.history_committed(), Some(seq), "history starts afresh and is caught up to the journal");
    engine.shutdown();
}
