//! The client-order-id window as a market maker fills it: one user places an order with a fresh
//! client id and cancels it by that id, `n` times (default 4,500,000, past its window's bound of
//! 4 M ids, so that it also forgets). Prints, for every 500,000 ids, the time per place-and-cancel,
//! the 99.99th percentile and the longest of the single commands, the page faults taken, and
//! the resident memory: what the window costs the matcher as it grows, at its worst moment, and
//! once full. (The longest command also counts any preemption of the thread by the OS; the
//! percentile mostly does not.)
//!
//! `cargo run --release -p viaduct-benches --bin client-ids -- [n]`

use std::time::Instant;

use hdrhistogram::Histogram;

use viaduct_benches::{funded_matcher, rss_mib, T0};
use viaduct_matcher::command::{Command, IdWindow, PutLimit};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::Events;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    after_name.split(' ').nth(10 - 3).and_then(|f| f.parse().ok()).unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(4_500_000, |a| a.parse().unwrap());
    let mut m = funded_matcher(1, 16);
    let mut events = Events::with_capacity(64);
    let (mut worst, mut worst_at) = (0u128, 0u64);
    let (mut chunk_started, mut faults_before) = (Instant::now(), minor_faults());
    println!("ids        ns/place+cancel  p99.99 (µs)  longest (µs)  page faults  RSS (MiB)");
    let mut chunk = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    for id in 1..=n {
        let place = Command::PutLimit(PutLimit {
            user: 1,
            market: 0,
            side: Side::Bid,
            amount: 100_000_000,
            price: 1_000,
            taker_fee: 10,
            maker_fee: 5,
            source: Source::EMPTY,
            client_id: id,
            id_window: IdWindow { max: 4_000_000, seconds: 86_400 },
            options: Default::default(),
            session: 0,
        });
        let cancel = Command::CancelByClientId { user: 1, market: 0, client_id: id };
        for cmd in [&place, &cancel] {
            let t = Instant::now();
            m.apply(T0 + id, cmd, &mut events).expect("place and cancel");
            let took = t.elapsed().as_nanos();
            events.clear();
            chunk.saturating_record(took as u64);
            if took > worst {
                (worst, worst_at) = (took, id);
            }
        }
        if id % 500_000 == 0 || id == n {
            let per = chunk_started.elapsed().as_nanos() as f64 / 500_000f64.min(id as f64);
            let faults = minor_faults();
            println!(
                "{:>9}  {:>15.0}  {:>11.1}  {:>12.1}  {:>11}  {:>9.0}",
                id,
                per,
                chunk.value_at_quantile(0.9999) as f64 / 1000.0,
                chunk.max() as f64 / 1000.0,
                faults - faults_before,
                rss_mib()
            );
            (chunk_started, faults_before) = (Instant::now(), faults);
            chunk.reset();
        }
    }
    println!("longest command: {:.1} µs, at id {worst_at}", worst as f64 / 1000.0);
}
