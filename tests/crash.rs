//! Crash test: `viaduct run` in `fsync` mode is killed with SIGKILL at random moments while a
//! driver streams commands into it, then restarted on the same data directory, ten times. Every
//! acknowledged command must be in the journal exactly once, and the recovered state must equal
//! the reference model fed exactly the commands the journal holds.

mod support;

#[path = "../matcher/tests/model/mod.rs"]
#[allow(dead_code)]
mod model;

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use viaduct_journaler::recovery::{journal_dir, recover};
use viaduct_journaler::segment::read_journal;
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Command, Spec};

const ROUNDS: usize = 12;
const USERS: u64 = 20;

/// A profile with small rings so that each start is quick; `fsync` durability. Rounds take turns
/// at where the journal and the replies run: each on a thread of its own, the replies on the
/// journal's thread, and both on the matcher's (as in `default`).
const PROFILE: &str = r#"
[rings]
input_slots = 1024
output_slots = 1024
THREADS
[wait]
strategy = "sleep"
sleep_us = 20
[journal]
durability = "fsync"
segment_bytes_max = 1048576
[snapshots]
interval_commands = 1000000
keep = 3
[clients]
inflight_max = 256
"#;

/// The key that names a command both in what the driver sent and in the journal.
fn key_of(cmd: &Command) -> String {
    match cmd {
        Command::BalanceUpdate { business_id, .. } => format!("b{business_id}"),
        Command::PutLimit(c) => c.source.as_str().to_string(),
        Command::PutMarket(c) => c.source.as_str().to_string(),
        Command::Cancel { order_id, .. } => format!("c{order_id}"),
        other => panic!("a query in the journal: {other:?}"),
    }
}

struct Driver {
    rng: ChaCha8Rng,
    next_id: u64,
    /// key → (method, params) of every write sent.
    sent: HashMap<String, (String, Vec<Value>)>,
    /// Orders known to rest, from replies: (user, order id).
    resting: Vec<(u64, u64)>,
}

impl Driver {
    /// The next request line and its key.
    fn next(&mut self) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        let user = self.rng.gen_range(1..=USERS);
        let (method, params, key) = match self.rng.gen_range(0..10) {
            0..=2 => {
                let asset = if self.rng.gen_bool(0.5) { "BTC" } else { "BCH" };
                let amount = format!("{}.{:03}", self.rng.gen_range(1..50), self.rng.gen_range(0..1000));
                ("balance.update", json!([user, asset, "deposit", id, amount, {}]), format!("b{id}"))
            }
            3..=7 => {
                let side = self.rng.gen_range(1..=2);
                let price = format!("0.{:02}", self.rng.gen_range(90..110));
                let amount = format!("{}.{:02}", self.rng.gen_range(0..3), self.rng.gen_range(1..100));
                let src = format!("r{id}");
                ("order.put_limit", json!([user, "BTCBCH", side, amount, price, "0.002", "0.001", src]), src)
            }
            8 if !self.resting.is_empty() => {
                let (owner, order) = self.resting.swap_remove(self.rng.gen_range(0..self.resting.len()));
                ("order.cancel", json!([owner, "BTCBCH", order]), format!("c{order}"))
            }
            _ => {
                let side = self.rng.gen_range(1..=2);
                let src = format!("r{id}");
                ("order.put_market", json!([user, "BTCBCH", side, "0.5", "0.002", src]), src)
            }
        };
        let line = json!({"id": id, "method": method, "params": params}).to_string();
        self.sent.insert(key.clone(), (method.to_string(), params.as_array().unwrap().clone()));
        (id, line)
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.toml");
    let data = dir.path().join("data");
    let mut driver =
        Driver { rng: ChaCha8Rng::seed_from_u64(2026), next_id: 0, sent: HashMap::new(), resting: Vec::new() };
    // key → the acknowledged reply of a write that succeeded.
    let mut acked: HashMap<String, Value> = HashMap::new();
    let (mut acked_total, mut cut_short) = (0, 0);
    for round in 0..ROUNDS {
        let threads = ["", "replies_with_journal = true", "journal_with_matcher = true"][round % 3];
        std::fs::write(&profile, PROFILE.replace("THREADS", threads)).unwrap();
        let mut child =
            support::spawn_stdio(&["--profile", profile.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Every whole line is a reply; the kill may cut the last one short (the console writes
        // its buffer in pieces), and a reply cut short was never acknowledged.
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut out);
            let whole = out.rfind('\n').map_or("", |end| &out[..end]);
            whole.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>()
        });
        let lines: Vec<(u64, String)> = (0..20_000).map(|_| driver.next()).collect();
        let keys: HashMap<u64, String> = lines.iter().map(|(id, line)| (*id, key_of_line(&driver, line))).collect();
        let kill_after = Duration::from_millis(driver.rng.gen_range(100..1500));
        let writer = std::thread::spawn(move || {
            // Paced, so that the kill lands while commands are in flight.
            for chunk in lines.chunks(100) {
                for (_, line) in chunk {
                    if writeln!(stdin, "{line}").is_err() {
                        return stdin;
                    }
                }
                std::thread::sleep(Duration::from_millis(8));
            }
            stdin // still open: the engine is killed, never drained
        });
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let replies = reader.join().unwrap();
        drop(writer.join().unwrap());
        cut_short += usize::from(replies.len() < 20_000);
        for r in &replies {
            let id = r["id"].as_u64().unwrap();
            if r["error"].is_null() {
                let key = keys[&id].clone();
                if key.starts_with('r') && r["result"]["left"] != "0" && r["result"]["type"] == 1 {
                    driver.resting.push((r["result"]["user"].as_u64().unwrap(), r["result"]["id"].as_u64().unwrap()));
                }
                acked.insert(key, r.clone());
            }
        }
        acked_total += replies.len();
        eprintln!("round {round}: killed after {kill_after:?}, {} replies", replies.len());
    }
    assert!(acked_total > 1_000, "too few acknowledgements ({acked_total}) to prove anything");
    assert!(cut_short >= ROUNDS / 2, "only {cut_short} of {ROUNDS} kills landed while commands were in flight");

    // The journal: every key once, and every acknowledged write in it.
    let spec = Spec::new(&embedded()).unwrap();
    let mut journal: Vec<(u64, String)> = Vec::new();
    read_journal(&journal_dir(&data), spec.fingerprint(), 0, |e, _| {
        journal.push((e.time_us, key_of(&e.cmd)));
        Ok(())
    })
    .unwrap();
    let mut seen = HashSet::new();
    for (_, key) in &journal {
        assert!(seen.insert(key.clone()), "{key} is in the journal twice");
    }
    for key in acked.keys() {
        assert!(seen.contains(key), "acknowledged {key} is not in the journal");
    }

    // The recovered state equals the reference model fed exactly the journal's commands.
    let recovered = recover(&data, &spec, |_| {}, &mut ()).unwrap();
    let mut model = model::Model::new(&embedded());
    for (time_us, key) in &journal {
        let (method, params) = &driver.sent[key];
        let outcome = model.call(*time_us, method, params);
        assert!(outcome.is_ok(), "{key}: journaled, so it succeeded, but the model refuses it: {outcome:?}");
        if let Some(reply) = acked.get(key) {
            assert_eq!(
                &reply["result"],
                outcome.as_ref().unwrap(),
                "{key}: the acknowledged reply differs from the model"
            );
        }
    }
    for ((user, asset), (available, freeze)) in &model.balances {
        let id = spec.asset_id(asset).unwrap();
        let b = recovered.matcher.balance(*user, id);
        let prec = spec.asset(id).prec_save;
        let got = (Decimal::from_i128_with_scale(b.available, prec), Decimal::from_i128_with_scale(b.freeze, prec));
        assert_eq!(got, (*available, *freeze), "user {user} {asset}");
    }
    recovered.matcher.check_invariants().unwrap();
    assert_eq!(recovered.last_seq as usize, journal.len());

    // History, exactly once: one more start lets the writer catch up from the journal; then every
    // table holds exactly the rows the journal's commands leave, though each kill found the writer
    // somewhere behind the journal.
    let mut child =
        support::spawn_stdio(&["--profile", profile.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let url = format!("sqlite://{}", data.join("history.db").display());
    let counts = support::assert_history_matches_journal(&data, &url, journal.len() as u64);
    assert!(counts[0] > 1_000, "the run left too few history rows to prove anything");
}

fn key_of_line(driver: &Driver, line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    let id = v["id"].as_u64().unwrap();
    match v["method"].as_str().unwrap() {
        "balance.update" => format!("b{id}"),
        "order.cancel" => format!("c{}", v["params"][2]),
        _ => {
            let _ = driver;
            format!("r{id}")
        }
    }
}
