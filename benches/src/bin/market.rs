//! Market data: how many deals per second the consumer absorbs, beside how many the matcher
//! produces in the same run, and the memory one year of minute buckets takes for one market.
//!
//! `cargo run --release -p viaduct-benches --bin market`

use std::time::Instant;

use viaduct_benches::{rss_mib, MatcherMix};
use viaduct_matcher::event::Deal;
use viaduct_matcher::Events;
use viaduct_publishers::market::{MarketData, MarketDataConfig};
use viaduct_publishers::service::MarketService;

const COMMANDS: usize = 1_000_000;
const T0_US: u64 = 1_700_000_000_000_000;
/// Simulated time between commands: 1,000,000 commands span about 17 minutes... times 100.
const STEP_US: u64 = 100_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mix = MatcherMix::new(7, COMMANDS);
    let spec = mix.start.spec().clone();
    // The matcher, over the benchmark mix, with time moving on 100 ms per command (27.8 hours in
    // all, so buckets of every size open and retention applies).
    let mut runs = Vec::new();
    let mut deals: Vec<Deal> = Vec::new();
    for _ in 0..3 {
        let mut m = mix.start.clone();
        let mut events = Events::with_capacity(64);
        deals.clear();
        let started = Instant::now();
        for (i, cmd) in mix.commands.iter().enumerate() {
            events.clear();
            m.apply(T0_US + i as u64 * STEP_US, cmd, &mut events).expect("the mix succeeds");
            deals.extend_from_slice(events.deals());
        }
        runs.push(started.elapsed().as_secs_f64());
    }
    let matcher_s = median(runs);
    let matcher_rate = deals.len() as f64 / matcher_s;
    println!(
        "matcher: {COMMANDS} commands in {:.0} ms, {} deals: {:.2} M deals/s produced",
        matcher_s * 1e3,
        deals.len(),
        matcher_rate / 1e6
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        let mut md = MarketData::new(&spec, MarketDataConfig::default());
        let started = Instant::now();
        deals.iter().for_each(|d| md.apply(d));
        runs.push(started.elapsed().as_secs_f64());
    }
    let apply_rate = deals.len() as f64 / median(runs);
    println!(
        "market data, same thread: {:.2} M deals/s ({:.1}x the matcher's)",
        apply_rate / 1e6,
        apply_rate / matcher_rate
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        let service = MarketService::spawn(MarketData::new(&spec, MarketDataConfig::default()), 0).unwrap();
        let feed = service.feed();
        let started = Instant::now();
        for (i, batch) in deals.chunks(256).enumerate() {
            feed.send((i as u64 + 1, batch.to_vec())).unwrap();
        }
        drop(feed);
        service.join();
        runs.push(started.elapsed().as_secs_f64());
    }
    let service_rate = deals.len() as f64 / median(runs);
    println!(
        "market data thread, fed batches of 256: {:.2} M deals/s ({:.1}x the matcher's)",
        service_rate / 1e6,
        service_rate / matcher_rate
    );
    // One deal every minute for a year: 525,600 minute buckets (and the seconds, hours and days
    // that come with them).
    let before = rss_mib();
    let mut md = MarketData::new(&spec, MarketDataConfig::default());
    let mut deal = deals[0];
    for minute in 0..525_600u64 {
        deal.time_us = T0_US + minute * 60_000_000;
        deal.id = minute + 1;
        md.apply(&deal);
    }
    let after = rss_mib();
    let (sec, min, hour, day) = md.bucket_counts(deal.market);
    println!(
        "one year of minute buckets, one market: {min} minute, {sec} second, {hour} hour, {day} day buckets: {:.1} MiB resident ({:.0} bytes per minute bucket, all buckets counted against it)",
        after - before,
        (after - before) * 1048576.0 / min as f64
    );
}
