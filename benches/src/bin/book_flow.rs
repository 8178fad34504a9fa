//! The binary `tcp-max --flow book` load on the matcher alone: bids at one price from 4 users,
//! every one resting, as many as asked; nanoseconds per order of each round (each on a fresh
//! matcher, so the book grows from empty as the server's does).
//! `cargo run --release -p viaduct-benches --bin book-flow -- [orders] [rounds]`. Two builds are
//! best compared by count, not time: `valgrind --tool=cachegrind --cache-sim=yes book-flow 300000 2`
//! less the same with 1 round is one round's instructions, data references and misses.
use std::hint::black_box;
use std::time::Instant;
use viaduct_benches::{funded_matcher, limit, T0};
use viaduct_matcher::command::Command;
use viaduct_matcher::order::Side;
use viaduct_matcher::Events;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let n: usize = std::env::args().nth(1).map_or(4_000_000, |a| a.parse().unwrap());
    let rounds: usize = std::env::args().nth(2).map_or(3, |a| a.parse().unwrap());
    let cmds: Vec<Command> = (0..n).map(|i| limit(1 + (i % 4) as u32, Side::Bid, 50_000_000, 1_000_000)).collect();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let mut m = funded_matcher(4, 0);
        let mut events = Events::with_capacity(256);
        let t = Instant::now();
        for c in &cmds {
            black_box(&m.apply(T0, c, &mut events));
            events.clear();
        }
        times.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("ns per resting order: {:?}", times);
}
