//! The matcher alone: commands per second on the documented mix (see `viaduct_benches`), the
//! per-command latency distribution, allocations per command, one mass cancel of 100,000 resting
//! orders, and the number representation (scaled `i128` against `rust_decimal`) on the
//! arithmetic of one trade.
//!
//! `cargo bench -p viaduct-benches --bench matcher`

use std::alloc::System;
use std::hint::black_box;
use std::str::FromStr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hdrhistogram::Histogram;
use rust_decimal::{Decimal, RoundingStrategy};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use viaduct_benches::{funded_matcher, place_grid, MatcherMix, T0};
use viaduct_matcher::{Command, Events, Reply};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const COMMANDS: usize = 200_000;

fn throughput(c: &mut Criterion) {
    let mix = MatcherMix::new(42, COMMANDS);
    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.sample_size(20);
    group.bench_function("mix", |b| {
        b.iter_batched(
            || (mix.start.clone(), Events::with_capacity(256)),
            |(mut m, mut events)| {
                for cmd in &mix.commands {
                    let reply = m.apply(T0, cmd, &mut events);
                    black_box(&reply);
                    events.clear();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    latency_and_allocations(&mix);
}

/// `order.cancel_all` (MASS_CANCEL) of one user's 100,000 resting asks, in a book that also holds
/// another user's 100,000 bids: one command, timed whole (criterion's "thrpt" is orders
/// cancelled per second).
fn mass_cancel(c: &mut Criterion) {
    let mut start = funded_matcher(2, 200_000);
    place_grid(&mut start, 2, 200_000);
    let cmd = Command::CancelAll { user: 1, market: None, side: None, session: None };
    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(100_000));
    group.sample_size(10);
    group.bench_function("mass_cancel_100k", |b| {
        b.iter_batched(
            || (start.clone(), Events::with_capacity(1 << 20)),
            |(mut m, mut events)| {
                let reply = m.apply(T0, &cmd, &mut events);
                assert!(matches!(reply, Ok(Reply::Cancelled { count: 100_000 })), "{reply:?}");
                (m, events)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// One pass timing each command (`Instant` costs ~20 ns of its own, included), and one counting
/// allocations.
fn latency_and_allocations(mix: &MatcherMix) {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut m = mix.start.clone();
    let mut events = Events::with_capacity(256);
    for cmd in &mix.commands {
        let t = Instant::now();
        let reply = m.apply(T0, cmd, &mut events);
        let ns = t.elapsed().as_nanos() as u64;
        black_box(&reply);
        events.clear();
        hist.record(ns.max(1)).expect("in range");
    }
    let mut m = mix.start.clone();
    let region = Region::new(GLOBAL);
    for cmd in &mix.commands {
        black_box(&m.apply(T0, cmd, &mut events));
        events.clear();
    }
    let stats = region.change();
    println!(
        "matcher/mix per-command latency: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    println!(
        "matcher/mix allocations: {:.4} per command ({} in {} commands)",
        stats.allocations as f64 / mix.commands.len() as f64,
        stats.allocations,
        mix.commands.len()
    );
}

/// The arithmetic of one trade leg in each representation: deal = price × amount, fee = deal ×
/// rate, then the balance after receiving the deal and paying the fee, truncated to prec_save.
fn numbers(c: &mut Criterion) {
    let mut group = c.benchmark_group("number");
    let inputs: Vec<(i128, i128, i128)> =
        (0..1024).map(|i| (100_000_000 + i * 7_919, 12_345_678 + i * 104_729, 10 + i % 20)).collect();
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("i128_scaled", |b| {
        b.iter(|| {
            let mut balance: i128 = 5 * 10i128.pow(20);
            for &(price, amount, rate) in &inputs {
                let deal = price * amount; // scale 16
                let fee = deal * rate; // scale 20
                balance += deal * 10_000; // to prec_save 20
                balance -= fee;
            }
            black_box(balance)
        })
    });
    let dec: Vec<(Decimal, Decimal, Decimal)> = inputs
        .iter()
        .map(|&(p, a, r)| {
            (
                Decimal::from_i128_with_scale(p, 8),
                Decimal::from_i128_with_scale(a, 8),
                Decimal::from_i128_with_scale(r, 4),
            )
        })
        .collect();
    group.bench_function("rust_decimal", |b| {
        b.iter(|| {
            let mut balance = Decimal::from_str("5").expect("decimal");
            for &(price, amount, rate) in &dec {
                let deal = price * amount;
                let fee = deal * rate;
                balance = (balance + deal).round_dp_with_strategy(20, RoundingStrategy::ToZero);
                balance = (balance - fee).round_dp_with_strategy(20, RoundingStrategy::ToZero);
            }
            black_box(balance)
        })
    });
    group.finish();
}

criterion_group!(benches, throughput, mass_cancel, numbers);
criterion_main!(benches);
