//! Memory of a large book: places 1,000,000 resting orders from 100,000 users on one market and
//! prints the process's resident set size before and after.
//!
//! `cargo run --release -p viaduct-benches --bin matcher-memory`

use std::time::Instant;

use viaduct_benches::{funded_matcher, T0};
use viaduct_matcher::command::{Command, PutLimit};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::Events;

const USERS: u32 = 100_000;
const ORDERS: u32 = 1_000_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn main() {
    let base = rss_mib();
    let mut m = funded_matcher(USERS, 0);
    let funded = rss_mib();
    let mut events = Events::default();
    let started = Instant::now();
    for i in 0..ORDERS {
        // Asks above 1 and bids below it on a grid of 5,000 levels a side: nothing crosses.
        let (side, price) = if i % 2 == 0 {
            (Side::Ask, 100_000_000 + 10_000 * i128::from(1 + i % 5_000))
        } else {
            (Side::Bid, 100_000_000 - 10_000 * i128::from(1 + i % 5_000))
        };
        let cmd = Command::PutLimit(PutLimit {
            user: 1 + i % USERS,
            market: 0,
            side,
            amount: 100_000_000,
            price,
            taker_fee: 10,
            maker_fee: 5,
            source: Source::new("memory").expect("short"),
        });
        m.apply(T0, &cmd, &mut events).expect("order rests");
        events.clear();
    }
    let elapsed = started.elapsed();
    let full = rss_mib();
    assert_eq!(m.book(0).len(), ORDERS as usize);
    println!("users {USERS}, resting orders {ORDERS}");
    println!("rss: start {base:.1} MiB, funded users {funded:.1} MiB, with the book {full:.1} MiB");
    println!(
        "book alone: {:.1} MiB, {:.0} bytes per resting order",
        full - funded,
        (full - funded) * 1048576.0 / f64::from(ORDERS)
    );
    println!(
        "placing took {:.2} s ({:.0} ns per order)",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / f64::from(ORDERS)
    );
}
