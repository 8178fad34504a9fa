//! The reply stage's JSON: the replies of the matcher bench's mix, encoded as the reply stage
//! encodes them, timed per reply (best of several rounds).
//!
//! `cargo run --release -p viaduct-benches --bin reply-json -- [rounds]`

use std::hint::black_box;
use std::time::Instant;

use viaduct_benches::{MatcherMix, T0};
use viaduct_matcher::Events;
use viaduct_protocol::response_json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let mix = MatcherMix::new(42, 100_000);
    let mut m = mix.start.clone();
    let spec = m.spec().clone();
    let replies: Vec<_> = mix
        .commands
        .iter()
        .map(|cmd| {
            let mut events = Events::with_capacity(16);
            let outcome = m.apply(T0, cmd, &mut events);
            (outcome, events)
        })
        .collect();
    let mut best = f64::MAX;
    let mut bytes = 0usize;
    for _ in 0..rounds {
        bytes = 0;
        let t = Instant::now();
        for (i, (outcome, events)) in replies.iter().enumerate() {
            bytes += black_box(response_json(&spec, i as i64, outcome, events)).len();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let n = replies.len() as f64;
    println!(
        "{} replies: best round {:.0} ns per reply, {:.0} bytes per reply",
        replies.len(),
        best / n * 1e9,
        bytes as f64 / n
    );
}
