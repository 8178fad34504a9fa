//! The longest single `Book::insert` as one book grows to millions of resting orders (bids over
//! 500 price levels, 1,000 users), and the longest first deposit as as many users arrive: what
//! growing state costs the matcher at the worst moment.
//! `cargo run --release -p viaduct-benches --bin book-growth -- [orders] [users]` (default 4,500,000
//! orders from 1,000 users; as many users as orders grows the book's per-user index too).
use std::time::Instant;
use viaduct_matcher::book::Book;
use viaduct_matcher::order::{Order, OrderKind, Side, Source};
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let n: usize = std::env::args().nth(1).map_or(4_500_000, |a| a.parse().unwrap());
    let users: usize = std::env::args().nth(2).map_or(1000, |a| a.parse().unwrap());
    let mut book = Book::default();
    let mut over_1ms = Vec::new();
    let mut worst = (0, 0u128);
    let started = Instant::now();
    for i in 0..n {
        let o = Order {
            id: i as u64 + 1,
            market: 0,
            side: Side::Bid,
            kind: OrderKind::Limit,
            user: (i % users) as u32,
            ctime_us: 0,
            mtime_us: 0,
            price: 100_000_000 - (i % 500) as i128,
            amount: 1000,
            left: 1000,
            taker_fee: 0,
            maker_fee: 0,
            deal_stock: 0,
            deal_money: 0,
            deal_fee: 0,
            source: Source::new("").unwrap(),
            client_id: 0,
            session: 0,
        };
        let t = Instant::now();
        book.insert(o);
        let e = t.elapsed().as_micros();
        if e > worst.1 {
            worst = (i, e);
        }
        if e > 1000 {
            over_1ms.push((i, e));
        }
    }
    println!(
        "{n} inserts in {:.2} s; longest {} µs at {}; over 1 ms: {}",
        started.elapsed().as_secs_f64(),
        worst.1,
        worst.0,
        over_1ms.len()
    );
    over_1ms.sort_by_key(|x| std::cmp::Reverse(x.1));
    println!("top: {:?}", &over_1ms[..over_1ms.len().min(8)]);
    ledger_growth(n);
}

/// The same for the ledger: the longest first deposit of a new user, as users arrive.
fn ledger_growth(n: usize) {
    let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
    let mut ledger = viaduct_matcher::ledger::Ledger::new(&spec, 0);
    let (mut worst, mut over_1ms) = ((0, 0u128), 0);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        ledger.deposit(i as u32 + 1, 0, 1);
        let e = t.elapsed().as_micros();
        if e > worst.1 {
            worst = (i, e);
        }
        over_1ms += usize::from(e > 1000);
    }
    println!(
        "ledger: {n} new users ({} assets) in {:.2} s; longest first deposit {} µs at {}; over 1 ms: {over_1ms}",
        spec.assets.len(),
        started.elapsed().as_secs_f64(),
        worst.1,
        worst.0
    );
}
