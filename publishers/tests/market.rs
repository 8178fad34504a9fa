//! Market data against hand-computed expectations: every kline interval kind, empty buckets
//! filled from the previous close, weeks from Monday, calendar months, a time zone, a bucket that
//! spans a restart, retention, the status queries and their validation; and `market.status`
//! against the deals of its period in a seeded random run.

use chrono::TimeZone;
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use viaduct_matcher::config::embedded;
use viaduct_matcher::decimal::parse;
use viaduct_matcher::event::Deal;
use viaduct_matcher::order::Side;
use viaduct_matcher::Spec;
use viaduct_publishers::market::{MarketData, MarketDataConfig};

fn spec() -> Spec {
    Spec::new(&embedded()).unwrap()
}

/// A BTCBCH deal (stock and money at 8 decimals).
fn deal(id: u64, t: i64, price: &str, amount: &str, taker: Side) -> Deal {
    let (p, a) = (parse(price, 8).unwrap(), parse(amount, 8).unwrap());
    Deal {
        id,
        time_us: t as u64 * 1_000_000 + 250_000,
        market: 0,
        ask_order_id: 1,
        bid_order_id: 2,
        ask_user: 1,
        bid_user: 2,
        price: p,
        amount: a,
        deal: p * a,
        ask_fee: 0,
        bid_fee: 0,
        taker_side: taker,
        ask_fee_rate: 0,
        bid_fee_rate: 0,
    }
}

fn q(md: &MarketData, now: i64, method: &str, params: Value) -> Value {
    let text = md.query(now, method, params.as_array().unwrap()).unwrap_or_else(|e| panic!("{method} {params}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn err(md: &MarketData, now: i64, method: &str, params: Value) -> i32 {
    md.query(now, method, params.as_array().unwrap()).expect_err("an error").code()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap().timestamp()
}

fn with(cfg: MarketDataConfig, deals: &[Deal]) -> MarketData {
    let mut md = MarketData::new(&spec(), cfg);
    deals.iter().for_each(|d| md.apply(d));
    md
}

#[test]
fn second_buckets_open_at_the_previous_last_and_empty_ones_repeat_the_close() {
    let md = with(
        MarketDataConfig::default(),
        &[
            deal(1, 1000, "10", "1", Side::Bid),
            deal(2, 1000, "12", "2", Side::Ask),
            deal(3, 1001, "11", "0.5", Side::Ask),
        ],
    );
    let rows = q(&md, 1003, "market.kline", json!(["BTCBCH", 998, 1010, 1]));
    // 998 and 999 have no data and nothing before them: left out. 1002 and 1003 repeat the close
    // of 1001; the end is clamped to now (1003).
    assert_eq!(
        rows,
        json!([
            [1000, "10", "12", "12", "10", "3", "34", "BTCBCH"],
            [1001, "12", "11", "12", "11", "0.5", "5.5", "BTCBCH"],
            [1002, "11", "11", "11", "11", "0", "0", "BTCBCH"],
            [1003, "11", "11", "11", "11", "0", "0", "BTCBCH"],
        ])
    );
    // Two-second rows merge their seconds: open of the first, close of the last.
    let rows = q(&md, 1003, "market.kline", json!(["BTCBCH", 1000, 1003, 2]));
    assert_eq!(
        rows,
        json!([
            [1000, "10", "11", "12", "10", "3.5", "39.5", "BTCBCH"],
            [1002, "11", "11", "11", "11", "0", "0", "BTCBCH"],
        ])
    );
}

#[test]
fn minute_and_hour_klines() {
    let t0 = utc(2024, 3, 5, 10, 0); // a Tuesday, 10:00 UTC
    let md = with(
        MarketDataConfig::default(),
        &[
            deal(1, t0 + 30, "100", "1", Side::Bid),
            deal(2, t0 + 610, "90", "1", Side::Ask),          // 10:10:10
            deal(3, t0 + 3 * 3600 + 5, "95", "2", Side::Bid), // 13:00:05
        ],
    );
    let now = t0 + 4 * 3600;
    // Five-minute rows from 10:00 to 10:20: 10:05 empty (filled from 10:00's close), 10:15 and
    // 10:20 empty too.
    let rows = q(&md, now, "market.kline", json!(["BTCBCH", t0 + 100, t0 + 1200, 300]));
    assert_eq!(
        rows,
        json!([
            [t0, "100", "100", "100", "100", "1", "100", "BTCBCH"],
            [t0 + 300, "100", "100", "100", "100", "0", "0", "BTCBCH"],
            [t0 + 600, "100", "90", "100", "90", "1", "90", "BTCBCH"],
            [t0 + 900, "90", "90", "90", "90", "0", "0", "BTCBCH"],
            [t0 + 1200, "90", "90", "90", "90", "0", "0", "BTCBCH"],
        ])
    );
    // Four-hour rows start at local midnight's grid: 08:00 and 12:00.
    let rows = q(&md, now, "market.kline", json!(["BTCBCH", t0, now, 4 * 3600]));
    assert_eq!(
        rows,
        json!([
            [t0 - 2 * 3600, "100", "90", "100", "90", "2", "190", "BTCBCH"],
            [t0 + 2 * 3600, "90", "95", "95", "90", "2", "190", "BTCBCH"],
        ])
    );
}

#[test]
fn days_follow_the_configured_time_zone() {
    let cfg = MarketDataConfig { tz: Tz::Asia__Shanghai, ..MarketDataConfig::default() }; // UTC+8
                                                                                          // 2024-01-01 20:00 UTC is 2024-01-02 04:00 in Shanghai; 2024-01-02 15:00 UTC is Jan 2 23:00.
    let a = utc(2024, 1, 1, 20, 0);
    let b = utc(2024, 1, 2, 15, 0);
    let md = with(cfg, &[deal(1, a, "5", "1", Side::Bid), deal(2, b, "6", "1", Side::Bid)]);
    let jan2_local = utc(2024, 1, 1, 16, 0); // Shanghai midnight of Jan 2
    let rows = q(&md, b + 60, "market.kline", json!(["BTCBCH", a, b, 86_400]));
    assert_eq!(rows, json!([[jan2_local, "5", "6", "6", "5", "2", "11", "BTCBCH"]]));
    // The same deals in UTC fall on two days.
    let md = with(MarketDataConfig::default(), &[deal(1, a, "5", "1", Side::Bid), deal(2, b, "6", "1", Side::Bid)]);
    let rows = q(&md, b + 60, "market.kline", json!(["BTCBCH", a, b, 86_400]));
    assert_eq!(
        rows,
        json!([
            [utc(2024, 1, 1, 0, 0), "5", "5", "5", "5", "1", "5", "BTCBCH"],
            [utc(2024, 1, 2, 0, 0), "5", "6", "6", "5", "1", "6", "BTCBCH"],
        ])
    );
}

#[test]
fn weeks_start_on_monday_and_months_on_the_first() {
    // Wednesday 2024-01-03, Monday 2024-01-08, and 2024-03-15 (nothing in February).
    let md = with(
        MarketDataConfig::default(),
        &[
            deal(1, utc(2024, 1, 3, 12, 0), "10", "1", Side::Bid),
            deal(2, utc(2024, 1, 8, 0, 30), "20", "1", Side::Bid),
            deal(3, utc(2024, 3, 15, 9, 0), "15", "1", Side::Ask),
        ],
    );
    let now = utc(2024, 3, 20, 0, 0);
    let weeks = q(&md, now, "market.kline", json!(["BTCBCH", utc(2024, 1, 3, 0, 0), utc(2024, 1, 14, 0, 0), 604_800]));
    assert_eq!(
        weeks,
        json!([
            [utc(2024, 1, 1, 0, 0), "10", "10", "10", "10", "1", "10", "BTCBCH"],
            [utc(2024, 1, 8, 0, 0), "10", "20", "20", "10", "1", "20", "BTCBCH"],
        ])
    );
    let months = q(&md, now, "market.kline", json!(["BTCBCH", utc(2024, 1, 20, 0, 0), now, 2_592_000]));
    assert_eq!(
        months,
        json!([
            [utc(2024, 1, 1, 0, 0), "10", "20", "20", "10", "2", "30", "BTCBCH"],
            [utc(2024, 2, 1, 0, 0), "20", "20", "20", "20", "0", "0", "BTCBCH"],
            [utc(2024, 3, 1, 0, 0), "20", "15", "20", "15", "1", "15", "BTCBCH"],
        ])
    );
    // Three-day rows count days from 1970-01-01.
    let t = utc(2024, 1, 3, 12, 0);
    let days_since_epoch = t.div_euclid(86_400);
    let first = days_since_epoch / 3 * 3 * 86_400;
    let rows = q(&md, now, "market.kline", json!(["BTCBCH", t, t, 3 * 86_400]));
    assert_eq!(rows, json!([[first, "10", "10", "10", "10", "1", "10", "BTCBCH"]]));
}

#[test]
fn a_bucket_spanning_a_restart_is_the_same_as_without_one() {
    let deals: Vec<Deal> =
        (0..40).map(|i| deal(i + 1, 5000 + i as i64 * 7, &format!("{}", 10 + i % 5), "1", Side::Bid)).collect();
    let whole = with(MarketDataConfig::default(), &deals);
    let mut first = with(MarketDataConfig::default(), &deals[..23]);
    let restored = MarketData::from_snapshot(&spec(), MarketDataConfig::default(), &first.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), first.state_hash());
    first = restored;
    deals[23..].iter().for_each(|d| first.apply(d));
    assert_eq!(first.state_hash(), whole.state_hash());
    let now = 5000 + 40 * 7;
    for interval in [1, 60, 3600, 86_400] {
        let params = json!(["BTCBCH", 5000, now, interval]);
        assert_eq!(q(&first, now, "market.kline", params.clone()), q(&whole, now, "market.kline", params));
    }
    // A config that dropped a market with data is refused by name.
    let mut config = embedded();
    config.markets.retain(|m| m.name != "BTCBCH");
    let smaller = Spec::new(&config).unwrap();
    let e = MarketData::from_snapshot(&smaller, MarketDataConfig::default(), &whole.snapshot()).unwrap_err();
    assert!(e.contains("BTCBCH"), "{e}");
}

#[test]
fn retention_drops_old_buckets_by_deal_time() {
    let cfg = MarketDataConfig { sec_max: 100, min_max: 10, hour_max: 2, ..MarketDataConfig::default() };
    let md = with(
        cfg,
        &[
            deal(1, 10_000, "1", "1", Side::Bid),
            deal(2, 10_050, "2", "1", Side::Bid),
            deal(3, 20_000, "3", "1", Side::Bid),
        ],
    );
    // Seconds within 100 s of the newest deal, minutes within 10, hours within 2 (the 02:00 hour
    // is 3 hours before the 05:00 one); days forever.
    assert_eq!(md.bucket_counts(0), (1, 1, 1, 1));
    // A second kline starts no earlier than the retention: only the newest second is there, and
    // the seconds before it have no earlier bucket to repeat.
    let rows = q(&md, 20_001, "market.kline", json!(["BTCBCH", 9_000, 20_001, 1]));
    assert_eq!(rows[0][0], 20_000);
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

#[test]
fn status_deals_last_and_today() {
    let day = utc(2024, 5, 1, 0, 0);
    let mut md = with(
        MarketDataConfig::default(),
        &[
            deal(1, day - 3600, "8", "1", Side::Ask), // yesterday
            deal(2, day + 100, "10", "1", Side::Bid), // today
            deal(3, day + 130, "12", "0.5", Side::Ask),
            deal(4, day + 200, "9", "2", Side::Bid),
        ],
    );
    let now = day + 250;
    assert_eq!(q(&md, now, "market.last", json!(["BTCBCH"])), json!("9.00000000"));
    assert_eq!(q(&md, now, "market.last", json!(["ETHBCH"])), json!("0"));
    // The last 140 s: from day+110, i.e. seconds up to day+120, then minutes (day+120 on).
    let s = q(&md, now, "market.status", json!(["BTCBCH", 140]));
    assert_eq!(
        s,
        json!({"period": 140, "last": "9", "open": "10", "close": "9", "high": "12", "low": "9", "volume": "2.5", "deal": "24"})
    );
    let none = q(&md, now, "market.status", json!(["ETHBCH", 60]));
    assert_eq!(none["open"], "0");
    assert_eq!(none["volume"], "0");
    let today = q(&md, now, "market.status_today", json!(["BTCBCH"]));
    assert_eq!(today, json!({"open": "8", "last": "9", "high": "12", "low": "8", "volume": "4.5", "deal": "42"}));
    // Tomorrow, with no deal yet: yesterday's close for all four; volume over the last 24 h.
    let tomorrow = q(&md, day + 86_400 + 10, "market.status_today", json!(["BTCBCH"]));
    assert_eq!(tomorrow, json!({"open": "9", "last": "9", "high": "9", "low": "9", "volume": "3.5", "deal": "34"}));
    // More than 30 days later: nothing to show.
    let later = q(&md, day + 40 * 86_400, "market.status_today", json!(["BTCBCH"]));
    assert_eq!(later["open"], "0");
    // Deals: newest first, only ids above last_id, at most limit.
    let deals = q(&md, now, "market.deals", json!(["BTCBCH", 2, 1]));
    assert_eq!(
        deals,
        json!([
            {"id": 4, "time": (day + 200) as f64 + 0.25, "price": "9", "amount": "2", "type": "buy"},
            {"id": 3, "time": (day + 130) as f64 + 0.25, "price": "12", "amount": "0.5", "type": "sell"},
        ])
    );
    assert_eq!(q(&md, now, "market.deals", json!(["BTCBCH", 100, 3])).as_array().unwrap().len(), 1);
    for i in 0..10_050u64 {
        md.apply(&deal(10 + i, day + 300, "1", "1", Side::Bid));
    }
    assert_eq!(q(&md, now, "market.deals", json!(["BTCBCH", 10_000, 0])).as_array().unwrap().len(), 10_000);
}

#[test]
fn bad_params_are_invalid_arguments_and_unknown_methods_not_found() {
    let md = with(MarketDataConfig::default(), &[deal(1, 1000, "1", "1", Side::Bid)]);
    let now = 2000;
    for (method, params) in [
        ("market.kline", json!(["BTCBCH", 0, 1000, 60])),
        ("market.kline", json!(["BTCBCH", 1500, 1000, 60])),
        ("market.kline", json!(["BTCBCH", 3000, 4000, 60])), // start after now
        ("market.kline", json!(["BTCBCH", 1000, 1500, 7])),
        ("market.kline", json!(["BTCBCH", 1000, 1500, 90])),
        ("market.kline", json!(["BTCBCH", 1000, 1500, 7200 * 5])),
        ("market.kline", json!(["BTCBCH", 1000, 1500, 86_400 * 8])),
        ("market.kline", json!(["BTCBCH", 1000, 1500, 0])),
        ("market.kline", json!(["BTCBCH", "1000", 1500, 60])),
        ("market.kline", json!(["NOPE", 1000, 1500, 60])),
        ("market.kline", json!(["BTCBCH", 1000, 1500])),
        ("market.status", json!(["BTCBCH", 0])),
        ("market.status", json!(["BTCBCH", 604_801])),
        ("market.status", json!(["BTCBCH", 1.5])),
        ("market.deals", json!(["BTCBCH", 0, 0])),
        ("market.deals", json!(["BTCBCH", 10_001, 0])),
        ("market.deals", json!(["BTCBCH", 10, "0"])),
        ("market.last", json!([])),
        ("market.last", json!([1])),
        ("market.status_today", json!(["NOPE"])),
    ] {
        assert_eq!(err(&md, now, method, params.clone()), 1, "{method} {params}");
    }
    assert_eq!(err(&md, now, "market.nope", json!([])), 4);
    // The bound on rows: a week of one-second rows is refused rather than built.
    let busy = with(MarketDataConfig::default(), &[deal(1, 700_000, "1", "1", Side::Bid)]);
    assert_eq!(err(&busy, 700_000 + 200_000, "market.kline", json!(["BTCBCH", 700_000, 900_000, 1])), 1);
}

/// `market.status` over a period against the deals inside it, by definition: volume and deal are
/// their sums; close is the last one's price; open is the price before the first bucket that holds
/// one (or its own price if there is none before); high and low range over those.
#[test]
fn status_equals_the_deals_of_its_period_in_a_seeded_random_run() {
    for seed in 0..4u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut md = MarketData::new(&spec(), MarketDataConfig::default());
        let mut deals: Vec<Deal> = Vec::new();
        let mut t = 1_700_000_000i64;
        for id in 1..=3000 {
            t += rng.gen_range(0..40);
            let price = format!("{}.{:02}", rng.gen_range(1..50), rng.gen_range(0..100));
            let amount = format!("0.{:03}", rng.gen_range(1..1000));
            let d = deal(id, t, &price, &amount, if rng.gen_bool(0.5) { Side::Ask } else { Side::Bid });
            md.apply(&d);
            deals.push(d);
            if id % 50 != 0 {
                continue;
            }
            let now = t + rng.gen_range(0..30);
            let period = rng.gen_range(1..20_000);
            let got = q(&md, now, "market.status", json!(["BTCBCH", period]));
            let start = now - period;
            let secs = |d: &Deal| (d.time_us / 1_000_000) as i64;
            let inside: Vec<&Deal> = deals.iter().filter(|d| secs(d) >= start && secs(d) <= now).collect();
            let dec = |m: i128, scale: u32| viaduct_matcher::decimal::Dec::new(m, scale).to_string();
            let volume: i128 = inside.iter().map(|d| d.amount).sum();
            let money: i128 = inside.iter().map(|d| d.deal).sum();
            assert_eq!(got["volume"], dec(volume, 8), "seed {seed} deal {id}");
            assert_eq!(got["deal"], dec(money, 16), "seed {seed} deal {id}");
            let Some(first) = inside.first() else {
                assert_eq!(got["open"], "0");
                continue;
            };
            // The first bucket: its second if it is before the first whole minute, else its minute.
            let minute = (start + 59).div_euclid(60) * 60;
            let bucket_start = if secs(first) < minute { secs(first) } else { secs(first) / 60 * 60 };
            let open = deals.iter().rev().find(|d| secs(d) < bucket_start).map_or(first.price, |d| d.price);
            let prices = inside.iter().map(|d| d.price).chain([open]);
            assert_eq!(got["open"], dec(open, 8), "seed {seed} deal {id}");
            assert_eq!(got["close"], dec(inside.last().unwrap().price, 8));
            assert_eq!(got["high"], dec(prices.clone().max().unwrap(), 8));
            assert_eq!(got["low"], dec(prices.min().unwrap(), 8));
        }
    }
}

/// Edges stamp times before the matcher orders commands, so a deal may carry a time a few
/// microseconds before the previous one's, across a second: its bucket is filed in time order.
#[test]
fn a_deal_stamped_slightly_earlier_lands_in_its_own_bucket() {
    let md = with(
        MarketDataConfig::default(),
        &[
            deal(1, 1000, "10", "1", Side::Bid),
            deal(2, 1002, "11", "1", Side::Bid),
            deal(3, 1001, "12", "1", Side::Bid),
        ],
    );
    let rows = q(&md, 1002, "market.kline", json!(["BTCBCH", 1000, 1002, 1]));
    assert_eq!(
        rows,
        json!([
            [1000, "10", "10", "10", "10", "1", "10", "BTCBCH"],
            [1001, "11", "12", "12", "11", "1", "12", "BTCBCH"],
            [1002, "10", "11", "11", "10", "1", "11", "BTCBCH"],
        ])
    );
}
