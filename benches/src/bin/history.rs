//! History: rows per second committed into each store (SQLite and the MariaDB on
//! 127.0.0.1:3306, a database of its own dropped after), in the writer's transactions; and the
//! pipeline's throughput with no history, with history written to a private MariaDB, and with the
//! writer stalled (that server frozen by SIGSTOP), the lag bound set out of reach; and the rate of
//! the whole run counted until the shared MariaDB holds every row (what the engine sustains when
//! history must keep up).
//!
//! `cargo run --release -p viaduct-benches --bin history -- [commands]`

#[path = "../../../tests/support/mariadb.rs"]
mod mariadb;

use std::time::Instant;

use mariadb::PrivateMariaDb;

use mysql::prelude::Queryable;
use viaduct::engine::EngineOptions;
use viaduct::profile::Profile;
use viaduct_benches::{pipeline_throughput, pipeline_throughput_with, MatcherMix};
use viaduct_matcher::Events;
use viaduct_publishers::history::store::{self, Store};
use viaduct_publishers::history::writer::HistoryConfig;
use viaduct_publishers::history::Rows;

/// The allocator of the `viaduct` binary, so the engine measured here allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0_US: u64 = 1_700_000_000_000_000;

/// The rows of the mix's commands, grouped as the writer groups them for the store at `url` when
/// it is behind: (last sequence, rows).
fn transactions(n: usize, url: &str) -> (Vec<(u64, Rows)>, usize) {
    let mix = MatcherMix::new(7, n);
    let spec = mix.start.spec().clone();
    let mut m = mix.start.clone();
    let mut events = Events::with_capacity(64);
    let tx_rows = HistoryConfig::new(url.into()).batch_rows_max;
    let (mut out, mut rows, mut total) = (Vec::new(), Rows::default(), 0);
    for (i, cmd) in mix.commands.iter().enumerate() {
        events.clear();
        m.apply(T0_US + i as u64 * 1000, cmd, &mut events).expect("the mix succeeds");
        rows.add(&spec, events.view());
        if rows.len() >= tx_rows {
            total += rows.len();
            out.push((i as u64 + 1, std::mem::take(&mut rows)));
        }
    }
    total += rows.len();
    out.push((n as u64, rows));
    (out, total)
}

fn rows_per_second(name: &str, store: &mut dyn Store, txs: &[(u64, Rows)], total: usize) {
    store.create_tables().expect("tables");
    let started = Instant::now();
    for (seq, rows) in txs {
        store.write(rows, *seq).expect("write");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{name}: {total} rows in {} transactions, {:.1} s: {:.0} rows/s", txs.len(), secs, total as f64 / secs);
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let root = std::env::temp_dir().join(format!("viaduct-history-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let sqlite_url = format!("sqlite://{}", root.join("rows.db").display());
    let (txs, total) = transactions(n, &sqlite_url);
    println!(
        "{n} commands of the benchmark mix leave {total} history rows ({:.2} per command)",
        total as f64 / n as f64
    );

    rows_per_second("sqlite ", &mut *store::open(&sqlite_url).unwrap(), &txs, total);
    let base = std::env::var("VIADUCT_BENCH_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let db = format!("viaduct_bench_{}", std::process::id());
    let mut admin = mysql::Conn::new(mysql::Opts::from_url(&base).unwrap()).expect("MariaDB at 127.0.0.1:3306");
    admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
    let mysql_url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    let (txs, total) = transactions(n, &mysql_url);
    rows_per_second("mariadb", &mut *store::open(&mysql_url).unwrap(), &txs, total);
    admin.query_drop(format!("DROP DATABASE `{db}`")).unwrap();
    drop(txs);
    if std::env::var("VIADUCT_BENCH_ONLY").as_deref() == Ok("rows") {
        std::fs::remove_dir_all(&root).ok();
        return;
    }

    let mut profile = Profile::load("default").unwrap();
    profile.snapshot_interval = u64::MAX / 2;
    // The writer stalled: a private MariaDB (never the shared one), frozen with SIGSTOP for the
    // timed part and thawed before the engine stops, so that it can drain.
    let mut private = PrivateMariaDb::install(&root.join("mariadb"));
    private.start();
    let admin_url = private.url("mysql");
    let db_url = |db: &str| format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
    let history = |db: &str| {
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(&admin_url).unwrap()).unwrap();
        admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
        Some(HistoryConfig { lag_max: u64::MAX / 2, ..HistoryConfig::new(db_url(db)) })
    };
    for round in 0..3 {
        let none = pipeline_throughput(&root.join(format!("none{round}")), n, &profile, EngineOptions::default()).rate;
        let on = EngineOptions { history: history(&format!("on{round}")), ..EngineOptions::default() };
        let on = pipeline_throughput(&root.join(format!("on{round}")), n, &profile, on).rate;
        let stalled = EngineOptions { history: history(&format!("stalled{round}")), ..EngineOptions::default() };
        let frozen = std::cell::RefCell::new(&mut private);
        let stalled = pipeline_throughput_with(
            &root.join(format!("stalled{round}")),
            n,
            &profile,
            stalled,
            || frozen.borrow_mut().pause(true),
            || frozen.borrow_mut().pause(false),
        )
        .rate;
        // The whole run, counted until the shared server holds every row.
        let db = format!("viaduct_bench_{}_{round}", std::process::id());
        admin.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
        let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
        let shared = EngineOptions {
            history: Some(HistoryConfig { lag_max: u64::MAX / 2, ..HistoryConfig::new(url) }),
            ..EngineOptions::default()
        };
        let shared = pipeline_throughput(&root.join(format!("shared{round}")), n, &profile, shared);
        admin.query_drop(format!("DROP DATABASE `{db}`")).unwrap();
        println!(
            "round {round}: pipeline, fsync, history in MariaDB: none {none:.0} /s; written {on:.0} /s ({:.2}x); writer stalled {stalled:.0} /s ({:.2}x); until every row is in the shared server {:.0} commands/s",
            on / none,
            stalled / none,
            shared.with_history.unwrap_or(f64::NAN)
        );
    }
    std::fs::remove_dir_all(&root).ok();
}
