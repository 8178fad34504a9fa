//! Runs the `matcher` bench mix in a loop for a profiler: `perf record` or `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p viaduct-benches --bin matcher-profile -- [rounds]`

use std::hint::black_box;
use std::time::Instant;

use viaduct_benches::{MatcherMix, T0};
use viaduct_matcher::Events;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let mix = MatcherMix::new(42, 200_000);
    let mut events = Events::with_capacity(256);
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let mut m = mix.start.clone();
        let t = Instant::now();
        for cmd in &mix.commands {
            black_box(&m.apply(T0, cmd, &mut events));
            events.clear();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut m = mix.start.clone();
    let (mut event_count, deals_before) = (0usize, m.last_deal_id());
    for cmd in &mix.commands {
        black_box(&m.apply(T0, cmd, &mut events));
        event_count += events.len();
        events.clear();
    }
    let n = mix.commands.len() as f64;
    println!(
        "best round: {:.2} M commands/s; per command {:.2} trades, {:.2} events; {} resting at the end",
        n / best / 1e6,
        (m.last_deal_id() - deals_before) as f64 / n,
        event_count as f64 / n,
        m.book(0).len()
    );
}
