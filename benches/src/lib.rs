//! # viaduct-benches
//!
//! Workloads shared by viaduct's benchmarks. [`MatcherMix`] is the documented command mix of the
//! `matcher` bench; the pipeline benches and the load generator arrive with their issues.
//!
//! The mix, on one market (`BTCBCH` of the embedded config: 8/8 decimals, fee_prec 4):
//! - 1,000 users, each funded with 1,000,000 BTC and 1,000,000 BCH, so funds never run out;
//! - a book seeded with 1,000 resting orders, 500 a side, on a 0.0001 tick grid around a mid of 1;
//! - then, per command: 60 % limit orders (1 in 6 priced through the mid, so it crosses), 35 %
//!   cancels of a random resting order by its owner, 5 % market orders (half each side); the cancel
//!   share leans so that the book stays near 1,000 orders. Fees are 0.1 % taker, 0.05 % maker.
#![forbid(unsafe_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use viaduct_matcher::command::{Command, PutLimit, PutMarket};
use viaduct_matcher::config::{embedded, Spec};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::{Events, Matcher};

pub const USERS: u32 = 1_000;
pub const RESTING: usize = 1_000;
const TICK: i128 = 10_000; // 0.0001 at money_prec 8
const MID: i128 = 100_000_000; // 1.0
const ONE: i128 = 100_000_000; // 1.0 at stock_prec 8
pub const T0: u64 = 1_700_000_000_000_000;

/// A matcher in the mix's starting state and a command stream valid against it.
pub struct MatcherMix {
    pub start: Matcher,
    pub commands: Vec<Command>,
}

/// A limit order of the mix's market and fees (0.1 % taker, 0.05 % maker), without source.
pub fn limit(user: u32, side: Side, price: i128, amount: i128) -> Command {
    limit_with(user, side, price, amount, Source::EMPTY)
}

/// The embedded config's first market and a matcher with the mix's users funded and no orders.
pub fn funded_matcher(users: u32, orders: usize) -> Matcher {
    let spec = Spec::new(&embedded()).expect("embedded config is valid");
    let (btc, bch) = (spec.asset_id("BTC").unwrap(), spec.asset_id("BCH").unwrap());
    let mut m = Matcher::with_capacity(spec, users as usize, orders);
    let mut events = Events::default();
    for user in 1..=users {
        for (asset, change) in [(btc, 10i128.pow(6 + 12)), (bch, 10i128.pow(6 + 20))] {
            let cmd = Command::BalanceUpdate {
                user,
                asset,
                business: "deposit".into(),
                business_id: u64::from(user),
                change,
                detail: "{}".into(),
            };
            m.apply(T0, &cmd, &mut events).expect("deposit");
            events.clear();
        }
    }
    m
}

impl MatcherMix {
    /// Builds the starting state and `count` commands from `seed`.
    pub fn new(seed: u64, count: usize) -> MatcherMix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = funded_matcher(USERS, RESTING * 2);
        let mut events = Events::default();
        for i in 0..RESTING {
            let side = if i % 2 == 0 { Side::Ask } else { Side::Bid };
            let cmd = limit(rng.gen_range(1..=USERS), side, resting_price(&mut rng, side), amount(&mut rng));
            m.apply(T0, &cmd, &mut events).expect("seed order");
            events.clear();
        }
        let start = m.clone();
        let mut commands = Vec::with_capacity(count);
        for _ in 0..count {
            let cmd = next(&mut rng, &m);
            // Run it, so that later cancels name orders that really rest at that point.
            m.apply(T0, &cmd, &mut events).expect("mix commands all succeed");
            events.clear();
            commands.push(cmd);
        }
        MatcherMix { start, commands }
    }
}

fn resting_price(rng: &mut ChaCha8Rng, side: Side) -> i128 {
    let ticks = rng.gen_range(1..=200);
    match side {
        Side::Ask => MID + ticks * TICK,
        Side::Bid => MID - ticks * TICK,
    }
}

fn amount(rng: &mut ChaCha8Rng) -> i128 {
    rng.gen_range(ONE / 100..=ONE * 5)
}

fn next(rng: &mut ChaCha8Rng, m: &Matcher) -> Command {
    let book = m.book(0);
    let resting = book.len();
    let cancel_share = if resting > RESTING {
        45
    } else if resting < RESTING * 9 / 10 {
        20
    } else {
        35
    };
    let roll = rng.gen_range(0..100);
    let market_side = if rng.gen_bool(0.5) { Side::Ask } else { Side::Bid };
    if roll < 5 && book.best(market_side.opposite()).is_some() {
        let side = market_side;
        let amount = match side {
            Side::Ask => amount(rng) / 4,
            Side::Bid => amount(rng) / 4, // money: about as much as the stock at a price near 1
        };
        return Command::PutMarket(PutMarket {
            user: rng.gen_range(1..=USERS),
            market: 0,
            side,
            amount,
            stock_amount: false,
            taker_fee: 10,
            source: Source::EMPTY,
            client_id: 0,
            id_window: Default::default(),
            self_trade: Default::default(),
            session: 0,
        });
    }
    if roll < 5 + cancel_share && resting > 0 {
        // A random resting order: walk a random number of steps into a random side.
        let side = if rng.gen_bool(0.5) { Side::Ask } else { Side::Bid };
        let side = if book.side_totals(side).0 == 0 { side.opposite() } else { side };
        let count = book.side_totals(side).0;
        let o = book.side_orders(side).nth(rng.gen_range(0..count)).expect("in range");
        return Command::Cancel { user: o.user, market: 0, order_id: o.id };
    }
    let side = if rng.gen_bool(0.5) { Side::Ask } else { Side::Bid };
    let price = if rng.gen_ratio(1, 6) {
        // Crossing: priced a few ticks through the mid.
        let through = rng.gen_range(1..=20) * TICK;
        match side {
            Side::Ask => MID - through,
            Side::Bid => MID + through,
        }
    } else {
        resting_price(rng, side)
    };
    limit(rng.gen_range(1..=USERS), side, price, amount(rng))
}

impl MatcherMix {
    /// The deposits and resting orders the mix starts from, as commands, so that a fresh engine
    /// or journal reaches the same starting state (and the same order ids).
    pub fn seed_commands(&self) -> Vec<Command> {
        let m = &self.start;
        let mut out = Vec::new();
        for user in 1..=USERS {
            for asset in 0..m.spec().assets.len() as u16 {
                let total = m.balance(user, asset).total();
                if total > 0 {
                    let detail = "{}".to_string();
                    let business_id = u64::from(user);
                    out.push(Command::BalanceUpdate {
                        user,
                        asset,
                        business: "deposit".into(),
                        business_id,
                        change: total,
                        detail,
                    });
                }
            }
        }
        for o in m.book(0).orders_by_id() {
            out.push(Command::PutLimit(PutLimit {
                user: o.user,
                market: o.market,
                side: o.side,
                amount: o.left,
                price: o.price,
                taker_fee: o.taker_fee,
                maker_fee: o.maker_fee,
                source: o.source,
                client_id: o.client_id,
                id_window: Default::default(),
                options: Default::default(),
                session: 0,
            }));
        }
        out
    }
}

/// Places `orders` resting limit orders on market 0 from `users` users: asks above 1 and bids
/// below it on a grid of 5,000 levels a side, so nothing crosses.
pub fn place_grid(m: &mut Matcher, users: u32, orders: u32) {
    let mut events = Events::default();
    for i in 0..orders {
        let level = 10_000 * i128::from(1 + i % 5_000);
        let (side, price) = if i % 2 == 0 { (Side::Ask, MID + level) } else { (Side::Bid, MID - level) };
        let source = Source::new("grid").expect("short");
        let cmd = limit_with(1 + i % users, side, price, ONE, source);
        m.apply(T0, &cmd, &mut events).expect("grid orders rest");
        events.clear();
    }
}

fn limit_with(user: u32, side: Side, price: i128, amount: i128, source: Source) -> Command {
    Command::PutLimit(PutLimit {
        user,
        market: 0,
        side,
        amount,
        price,
        taker_fee: 10,
        maker_fee: 5,
        source,
        client_id: 0,
        id_window: Default::default(),
        options: Default::default(),
        session: 0,
    })
}

/// What [`pipeline_throughput`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Commands answered per second.
    pub rate: f64,
    /// Commands per journal commit (`fdatasync`), on average.
    pub per_commit: f64,
    /// With history on: commands per second counted until the history writer had committed
    /// them all, so the rate the whole engine sustains when history must keep up.
    pub with_history: Option<f64>,
}

/// Commands per second of the benchmark mix (`n` commands, after funding its users) through a
/// whole engine on `data`, one in-process client pipelining, and the average journal group size.
pub fn pipeline_throughput(
    data: &std::path::Path,
    n: usize,
    profile: &viaduct::profile::Profile,
    options: viaduct::engine::EngineOptions,
) -> Throughput {
    pipeline_throughput_with(data, n, profile, options, || {}, || {})
}

/// [`pipeline_throughput`], calling `timed` just before the timed part starts and `done` just
/// after it ends, before the engine stops.
pub fn pipeline_throughput_with(
    data: &std::path::Path,
    n: usize,
    profile: &viaduct::profile::Profile,
    options: viaduct::engine::EngineOptions,
    timed: impl FnOnce(),
    done: impl FnOnce(),
) -> Throughput {
    let mix = MatcherMix::new(7, n);
    let spec = mix.start.spec().clone();
    let (engine, _) = viaduct::engine::Engine::start_with(data, spec, profile, options, |_| {}).expect("engine");
    let mut client = engine.client();
    for (i, cmd) in mix.seed_commands().into_iter().enumerate() {
        let mut cmd = cmd;
        while let Err(back) = client.submit_command(-(i as i64) - 1, cmd) {
            cmd = back;
            while client.try_recv().is_some() {}
        }
    }
    while client.inflight() > 0 {
        client.recv();
    }
    timed();
    let (durable_before, commits_before) = (engine.durable_seq(), engine.journal_commits());
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    while sent < mix.commands.len() {
        let mut cmd = mix.commands[sent].clone();
        loop {
            match client.submit_command(sent as i64, cmd) {
                Ok(()) => break,
                Err(back) => {
                    cmd = back;
                    client.recv();
                }
            }
        }
        sent += 1;
        while client.try_recv().is_some() {}
    }
    while client.inflight() > 0 {
        client.recv();
    }
    let secs = started.elapsed().as_secs_f64();
    let journaled = engine.durable_seq() - durable_before;
    let commits = (engine.journal_commits() - commits_before).max(1);
    done();
    let with_history = engine.history_committed().map(|_| {
        let durable = engine.durable_seq();
        while engine.history_committed().unwrap_or(u64::MAX) < durable {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        n as f64 / started.elapsed().as_secs_f64()
    });
    drop(client);
    engine.shutdown();
    Throughput { rate: n as f64 / secs, per_commit: journaled as f64 / commits as f64, with_history }
}

/// The process's resident set size in MiB (NaN where /proc is missing).
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}
