//! The binary `tcp-max --flow book` load on the matcher alone: bids at one price from 4 users,
//! every one resting, as many as asked; nanoseconds per order of each round (each on a fresh
//! matcher, so the book grows from empty as the server's does).
//! `cargo run --release -p viaduct-benches --bin book-flow -- [orders] [rounds]`. Two builds are
//! best compared by count, not time: `valgrind --tool=cachegrind --cache-sim=yes book-flow 300000 2`
//! less the same with 1 round is one round's instructions, data references and misses.
use std::hint::black_box;
use std::time::Instant;
use viaduct_benches::{funded_matcher, T0};
use viaduct_matcher::command::{Command, PutLimit};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::Events;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let n: usize = std::env::args().nth(1).map_or(4_000_000, |a| a.parse().unwrap());
    let rounds: usize = std::env::args().nth(2).map_or(3, |a| a.parse().unwrap());
    let cmds: Vec<Command> = (0..n)
        .map(|i| {
            Command::PutLimit(PutLimit {
                user: 1 + (i % 4) as u32,
                market: 0,
                side: Side::Bid,
                amount: 1_000_000,
                price: 50_000_000,
                taker_fee: 10,
                maker_fee: 5,
                source: Source::EMPTY,
                client_id: 0,
                id_window: Default::default(),
                options: Default::default(),
                session: 0,
            })
        })
        .collect();
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
