//! Memory of a large book: places 1,000,000 resting orders from 100,000 users on one market and
//! prints the process's resident set size before and after.
//!
//! `cargo run --release -p viaduct-benches --bin matcher-memory`

use std::time::Instant;

use viaduct_benches::{funded_matcher, place_grid, rss_mib};

const USERS: u32 = 100_000;
const ORDERS: u32 = 1_000_000;

fn main() {
    let base = rss_mib();
    let mut m = funded_matcher(USERS, 0);
    let funded = rss_mib();
    let started = Instant::now();
    place_grid(&mut m, USERS, ORDERS);
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
