//! The history writer's scheduling: idle priority while it keeps up, normal from a quarter of its
//! lag bound behind. A file of its own: the test finds the writer's thread by name, and no other
//! test of this process may start one.

use viaduct_matcher::config::embedded;
use viaduct_matcher::{Matcher, Spec};
use viaduct_publishers::history::store;

mod common;
use common::deposit;

/// The scheduling policy of this process's thread named `name` (Linux: 0 normal, 5 idle).
fn policy_of(name: &str) -> Option<u32> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Field 41 of the whole line, counted after the command name (which may hold spaces).
        return stat[stat.rfind(')')? + 2..].split(' ').nth(41 - 3)?.parse().ok();
    }
    None
}

/// Waits until the writer's thread has `policy`, at most 10 s.
fn wait_for_policy(policy: u32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = policy_of("viaduct-history");
        if now == Some(policy) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: the writer's policy is {now:?}, not {policy}");
        std::thread::yield_now();
    }
}

#[test]
fn the_writer_is_at_idle_priority_while_it_keeps_up_and_normal_from_a_quarter_of_its_bound_behind() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use viaduct_publishers::history::writer::{HistoryConfig, HistoryService, WriterPace, WriterStore};
    const NORMAL: u32 = 0;
    const IDLE: u32 = 5;
    // Whether this process may return a thread from idle priority (root, CAP_SYS_NICE or
    // RLIMIT_NICE); without, the writer stays at normal priority throughout.
    let permitted = std::thread::spawn(|| viaduct_ring::Background::enter("probe", true).is_idle()).join().unwrap();
    let idle = if permitted { IDLE } else { NORMAL };
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(&embedded()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let mut inner = store::open(&url).unwrap();
    inner.create_tables().unwrap();
    let cfg = HistoryConfig { lag_max: 1000, ..HistoryConfig::new(url) };
    let durable = Arc::new(AtomicU64::new(0));
    let pace = WriterPace { durable: Arc::clone(&durable), idle_priority: true };
    let svc = HistoryService::start(
        &cfg,
        Arc::new(spec.clone()),
        WriterStore::Ready(inner),
        0,
        viaduct_publishers::alert::Alerts::log(),
        pace,
    )
    .unwrap();
    wait_for_policy(idle, "nothing to write");
    // A quarter of the bound behind (the rows not yet sent): normal priority.
    durable.store(250, Ordering::Release);
    wait_for_policy(NORMAL, "250 commands behind with a bound of 1000");
    // Rows that catch up to the durable sequence, once written, let it go back.
    let feed = svc.feed();
    for seq in 1..=250 {
        feed.send(deposit(&mut m, &spec, seq)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while svc.committed().load(Ordering::Acquire) < 250 {
        assert!(std::time::Instant::now() < deadline, "the 250 deposits were not committed");
        std::thread::yield_now();
    }
    wait_for_policy(idle, "everything sent written");
    // Less than a quarter behind is not behind.
    durable.store(250 + 249, Ordering::Release);
    feed.send(deposit(&mut m, &spec, 251)).unwrap();
    while svc.committed().load(Ordering::Acquire) < 251 {
        assert!(std::time::Instant::now() < deadline, "the deposit was not committed");
        std::thread::yield_now();
    }
    assert_eq!(policy_of("viaduct-history"), Some(idle), "248 behind with a bound of 1000");
    drop(feed);
    svc.join();
}
