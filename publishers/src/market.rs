//! Market data (ViaBTC's marketprice, SPEC B2.6 and B8): per market the last price, the 10,000
//! most recent deals, and second, minute, hour and local-day buckets, from which `market.kline`,
//! `market.status`, `market.status_today`, `market.deals` and `market.last` are answered.
//!
//! A pure state machine like the matcher: deals go in with their own times, queries take the time
//! they are asked at, and the state is a function of the deals alone — so a snapshot plus the
//! deals after it rebuild it exactly. Retention drops buckets by deal time, never by wall clock.
//!
//! Why one file of ~560 lines: the state machine and its queries (kline, status, deals, last) read
//! the same buckets; depth is `depth.rs`, the thread `service.rs`.

use std::collections::VecDeque;

use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use viaduct_matcher::config::MarketId;
use viaduct_matcher::decimal::Dec;
use viaduct_matcher::event::Deal;
use viaduct_matcher::order::Side;
use viaduct_matcher::{RpcError, Spec};

/// The deals kept per market for `market.deals`.
pub const DEALS_MAX: usize = 10_000;
/// The most rows one `market.kline` may return; a query spanning more is an invalid argument.
pub const KLINE_ROWS_MAX: i64 = 100_000;
/// How far back `status_today` and day-based klines look for an earlier day's close.
const DAY_LOOKBACK_S: i64 = 30 * 86_400;
const SNAPSHOT_VERSION: u32 = 1;

/// Retention and the time zone of day, week and month boundaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarketDataConfig {
    pub tz: Tz,
    /// Seconds of second buckets kept (ViaBTC `sec_max`, 7 days); also the longest `market.status`.
    pub sec_max: i64,
    /// Minutes of minute buckets kept (`min_max`, one year).
    pub min_max: i64,
    /// Hours of hour buckets kept (`hour_max`, ten years). Day buckets are kept forever.
    pub hour_max: i64,
}

impl Default for MarketDataConfig {
    fn default() -> MarketDataConfig {
        MarketDataConfig { tz: Tz::UTC, sec_max: 604_800, min_max: 525_600, hour_max: 87_600 }
    }
}

/// One bucket: prices at the market's `money_prec`, `volume` (stock) at `stock_prec`, `deal`
/// (money) at `stock_prec + money_prec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub open: i128,
    pub close: i128,
    pub high: i128,
    pub low: i128,
    pub volume: i128,
    pub deal: i128,
}

impl Bucket {
    /// A bucket opened at `price` with nothing traded: how a new bucket starts (at the previous
    /// last price) and how an empty kline row is filled (at the previous close).
    pub fn flat(price: i128) -> Bucket {
        Bucket { open: price, close: price, high: price, low: price, volume: 0, deal: 0 }
    }

    fn trade(&mut self, price: i128, amount: i128, deal: i128) {
        self.close = price;
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        // Saturating: a deal is below 10^32 (a balance's bound), so only some 10^6 deals each
        // of a whole asset's supply in one bucket could reach 2^127; a sum that large stays
        // at the bound rather than wrap.
        self.volume = self.volume.saturating_add(amount);
        self.deal = self.deal.saturating_add(deal);
    }

    /// `later` folded into `self`: the first open, the last close, the extremes, the sums.
    fn merge(&mut self, later: &Bucket) {
        self.close = later.close;
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.volume = self.volume.saturating_add(later.volume);
        self.deal = self.deal.saturating_add(later.deal);
    }
}

/// One deal as `market.deals` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealRecord {
    pub id: u64,
    pub time_us: u64,
    pub price: i128,
    pub amount: i128,
    pub taker_side: u8,
}

/// Buckets in time order, each under the time it starts at. Deals arrive in time order (but for
/// a few microseconds between edges), so a bucket is almost always added at the end and dropped
/// from the front: a deque without per-entry overhead, searched by bisection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Series(VecDeque<(i64, Bucket)>);

impl Series {
    /// The bucket at `key`, opened at `open` if it is new.
    fn entry(&mut self, key: i64, open: i128) -> &mut Bucket {
        let at = match self.0.back() {
            Some(&(k, _)) if k < key => self.0.len(),
            Some(&(k, _)) if k == key => self.0.len() - 1,
            None => 0,
            Some(_) => self.0.partition_point(|(k, _)| *k < key),
        };
        if self.0.get(at).is_none_or(|(k, _)| *k != key) {
            self.0.insert(at, (key, Bucket::flat(open)));
        }
        &mut self.0[at].1
    }

    fn prune_before(&mut self, keep_from: i64) {
        while self.0.front().is_some_and(|(k, _)| *k < keep_from) {
            self.0.pop_front();
        }
    }

    /// The buckets with keys in `[from, to)`, oldest first.
    fn range(&self, from: i64, to: i64) -> impl DoubleEndedIterator<Item = &Bucket> + '_ {
        let a = self.0.partition_point(|(k, _)| *k < from);
        let b = self.0.partition_point(|(k, _)| *k < to).max(a);
        self.0.range(a..b).map(|(_, b)| b)
    }

    fn get(&self, key: i64) -> Option<&Bucket> {
        self.range(key, key + 1).next()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Market {
    last: Option<i128>,
    sec: Series,
    min: Series,
    hour: Series,
    /// Keyed by the local midnight (a UTC timestamp) the day starts at.
    day: Series,
    /// Newest first.
    deals: VecDeque<DealRecord>,
}

/// The market data of every market of a spec.
#[derive(Debug, Clone)]
pub struct MarketData {
    cfg: MarketDataConfig,
    names: Vec<String>,
    /// (stock_prec, money_prec) per market.
    precs: Vec<(u32, u32)>,
    markets: Vec<Market>,
    /// The local day the last deal fell in: [start, end), so most deals skip the time zone.
    day_cache: (i64, i64),
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    markets: Vec<(String, Market)>,
}

impl MarketData {
    pub fn new(spec: &Spec, cfg: MarketDataConfig) -> MarketData {
        MarketData {
            cfg,
            names: spec.markets.iter().map(|m| m.name.clone()).collect(),
            precs: spec.markets.iter().map(|m| (m.stock_prec, m.money_prec)).collect(),
            markets: vec![Market::default(); spec.markets.len()],
            day_cache: (0, 0),
        }
    }

    pub fn config(&self) -> &MarketDataConfig {
        &self.cfg
    }

    /// Takes one deal. Deals arrive in the matcher's order, so times never go back.
    pub fn apply(&mut self, d: &Deal) {
        let t = (d.time_us / 1_000_000) as i64;
        let day = self.local_day(t);
        let cfg = self.cfg;
        let m = &mut self.markets[d.market as usize];
        // A market's very first bucket opens at its first deal's price (ViaBTC would say 0).
        let open = m.last.unwrap_or(d.price);
        for (map, key, keep_from) in [
            (&mut m.sec, t, t - cfg.sec_max),
            (&mut m.min, t / 60 * 60, t / 60 * 60 - cfg.min_max * 60),
            (&mut m.hour, t / 3600 * 3600, t / 3600 * 3600 - cfg.hour_max * 3600),
            (&mut m.day, day, i64::MIN),
        ] {
            map.entry(key, open).trade(d.price, d.amount, d.deal);
            map.prune_before(keep_from);
        }
        m.last = Some(d.price);
        let taker_side = d.taker_side.code();
        m.deals.push_front(DealRecord { id: d.id, time_us: d.time_us, price: d.price, amount: d.amount, taker_side });
        m.deals.truncate(DEALS_MAX);
    }

    /// The local midnight that starts the day `t` falls in.
    fn local_day(&mut self, t: i64) -> i64 {
        if !(self.day_cache.0..self.day_cache.1).contains(&t) {
            let start = local_midnight(self.cfg.tz, t);
            let next = local_date(self.cfg.tz, t).succ_opt();
            let end = next.map_or(start + 86_400, |d| midnight_of(self.cfg.tz, d));
            self.day_cache = (start, end);
        }
        self.day_cache.0
    }

    /// The last price of `market`, at its `money_prec`.
    pub fn last(&self, market: MarketId) -> Option<i128> {
        self.markets[market as usize].last
    }

    /// The bucket maps, for tests and the memory bench: (seconds, minutes, hours, days) held.
    pub fn bucket_counts(&self, market: MarketId) -> (usize, usize, usize, usize) {
        let m = &self.markets[market as usize];
        (m.sec.len(), m.min.len(), m.hour.len(), m.day.len())
    }

    /// Canonical bytes of the whole state.
    pub fn snapshot(&self) -> Vec<u8> {
        let markets = self.names.iter().cloned().zip(self.markets.iter().cloned()).collect();
        postcard::to_stdvec(&Snapshot { version: SNAPSHOT_VERSION, markets }).expect("market data always serializes")
    }

    /// A 64-bit hash of the whole state.
    pub fn state_hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.snapshot())
    }

    /// Rebuilds the state from [`MarketData::snapshot`] bytes under `spec`, which may add markets
    /// but not drop one that has data.
    pub fn from_snapshot(spec: &Spec, cfg: MarketDataConfig, bytes: &[u8]) -> Result<MarketData, String> {
        let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| format!("market data is not readable: {e}"))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!("market data version {} is not supported", snap.version));
        }
        let mut md = MarketData::new(spec, cfg);
        for (name, market) in snap.markets {
            match spec.market_id(&name) {
                Some(id) => md.markets[id as usize] = market,
                None if market == Market::default() => {}
                None => return Err(format!("market data holds market {name:?}, which the config no longer has")),
            }
        }
        Ok(md)
    }

    /// Answers a marketprice method: its JSON result, or the error ViaBTC gives.
    pub fn query(&self, now: i64, method: &str, params: &[Value]) -> Result<String, RpcError> {
        let market = |v: &Value| -> Result<MarketId, RpcError> {
            v.as_str().and_then(|n| self.names.iter().position(|x| x == n)).map(|i| i as MarketId).ok_or(BAD)
        };
        match (method, params) {
            ("market.last", [m]) => {
                let id = market(m)?;
                let money = self.precs[id as usize].1;
                let last = self.markets[id as usize].last.unwrap_or(0);
                Ok(serde_json::to_string(&Dec::new(last, money).raw().to_string()).expect("a string"))
            }
            ("market.deals", [m, limit, last_id]) => {
                let id = market(m)?;
                let limit = limit.as_i64().filter(|l| (1..=DEALS_MAX as i64).contains(l)).ok_or(BAD)?;
                let last_id = int(last_id)?;
                Ok(to_json(&self.deals(id, limit as usize, last_id)))
            }
            ("market.kline", [m, start, end, interval]) => {
                let id = market(m)?;
                let rows = self.kline(id, now, int(start)?, int(end)?, int(interval)?)?;
                Ok(to_json(&rows))
            }
            ("market.status", [m, period]) => {
                let id = market(m)?;
                let period = int(period)?;
                if !(1..=self.cfg.sec_max).contains(&period) {
                    return Err(BAD);
                }
                Ok(to_json(&self.status(id, now, period)))
            }
            ("market.status_today", [m]) => Ok(to_json(&self.status_today(market(m)?, now))),
            ("market.last" | "market.deals" | "market.kline" | "market.status" | "market.status_today", _) => Err(BAD),
            _ => Err(RpcError::MethodNotFound),
        }
    }

    fn deals(&self, id: MarketId, limit: usize, last_id: i64) -> Vec<DealJson> {
        let (stock, money) = self.precs[id as usize];
        self.markets[id as usize]
            .deals
            .iter()
            .take_while(|d| i128::from(d.id) > i128::from(last_id))
            .take(limit)
            .map(|d| DealJson {
                id: d.id,
                time: d.time_us as f64 / 1e6,
                price: Dec::new(d.price, money),
                amount: Dec::new(d.amount, stock),
                r#type: if d.taker_side == Side::Ask.code() { "sell" } else { "buy" },
            })
            .collect()
    }

    /// Buckets of `base` with keys in `[from, to)`, merged; `None` if there are none.
    fn merged(map: &Series, from: i64, to: i64) -> Option<Bucket> {
        if from >= to {
            return None;
        }
        let mut it = map.range(from, to);
        let mut out = *it.next()?;
        it.for_each(|b| out.merge(b));
        Some(out)
    }

    fn status(&self, id: MarketId, now: i64, period: i64) -> StatusJson {
        let m = &self.markets[id as usize];
        let start = now - period;
        let minute = (start + 59).div_euclid(60) * 60;
        let secs = Self::merged(&m.sec, start, minute.min(now + 1));
        let mins = Self::merged(&m.min, minute, now + 1);
        let merged = match (secs, mins) {
            (Some(mut a), Some(b)) => {
                a.merge(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let b = merged.unwrap_or(Bucket::flat(0));
        let (stock, money) = self.precs[id as usize];
        let p = |v| Dec::new(v, money);
        StatusJson {
            period,
            last: p(m.last.unwrap_or(0)),
            open: p(b.open),
            close: p(b.close),
            high: p(b.high),
            low: p(b.low),
            volume: Dec::new(b.volume, stock),
            deal: Dec::new(b.deal, stock + money),
        }
    }

    fn status_today(&self, id: MarketId, now: i64) -> TodayJson {
        let m = &self.markets[id as usize];
        let today = local_midnight(self.cfg.tz, now);
        let (open, last, high, low) = match m.day.get(today) {
            Some(b) => (b.open, b.close, b.high, b.low),
            None => match m.day.range(today - DAY_LOOKBACK_S, today).next_back() {
                Some(b) => (b.close, b.close, b.close, b.close),
                None => (0, 0, 0, 0),
            },
        };
        let day = self.status(id, now, 86_400);
        let money = self.precs[id as usize].1;
        let p = |v| Dec::new(v, money);
        TodayJson { open: p(open), last: p(last), high: p(high), low: p(low), volume: day.volume, deal: day.deal }
    }

    fn kline(&self, id: MarketId, now: i64, start: i64, end: i64, interval: i64) -> Result<Vec<KlineRow>, RpcError> {
        if start <= 0 {
            return Err(BAD);
        }
        let end = end.min(now);
        if end <= 0 || start > end {
            return Err(BAD);
        }
        let plan = self.plan(now, start, interval)?;
        let m = &self.markets[id as usize];
        let (stock, money) = self.precs[id as usize];
        let base = match plan.base {
            Base::Sec => &m.sec,
            Base::Min => &m.min,
            Base::Hour => &m.hour,
            Base::Day => &m.day,
        };
        let lookback_from = match plan.base {
            Base::Day => plan.first - DAY_LOOKBACK_S,
            _ => i64::MIN,
        };
        let mut prev = base.range(lookback_from, plan.first).next_back().map(|b| b.close);
        let mut rows = Vec::new();
        let mut t = plan.first;
        while t <= end {
            let next = plan.step.next(self.cfg.tz, t);
            let row = Self::merged(base, t, next).or_else(|| prev.map(Bucket::flat));
            if let Some(b) = row {
                if rows.len() as i64 >= KLINE_ROWS_MAX {
                    return Err(BAD);
                }
                rows.push(KlineRow(t, b, stock, money, self.names[id as usize].clone()));
                prev = Some(b.close);
            }
            t = next;
        }
        Ok(rows)
    }

    /// Which buckets a kline merges, where its first row starts and how rows step (SPEC B8.4).
    /// Second, minute and hour klines start no earlier than their buckets' retention.
    fn plan(&self, now: i64, start: i64, interval: i64) -> Result<Plan, RpcError> {
        let (cfg, tz) = (&self.cfg, self.cfg.tz);
        let fixed = |base, first, interval| Plan { base, first, step: Step::Fixed(interval) };
        Ok(match interval {
            i if i > 0 && i < 60 && 60 % i == 0 => {
                let s = start.max(now - cfg.sec_max);
                fixed(Base::Sec, s / i * i, i)
            }
            i if (60..3600).contains(&i) && i % 60 == 0 && 3600 % i == 0 => {
                let s = start.max(now - cfg.min_max * 60);
                fixed(Base::Min, s / i * i, i)
            }
            i if (3600..86_400).contains(&i) && i % 3600 == 0 && 86_400 % i == 0 => {
                let s = start.max(now - cfg.hour_max * 3600);
                let midnight = local_midnight(tz, s);
                fixed(Base::Hour, midnight + (s - midnight) / i * i, i)
            }
            i if (86_400..604_800).contains(&i) && i % 86_400 == 0 => {
                let days = i / 86_400;
                let date = local_date(tz, start);
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                let n = (date - epoch).num_days().div_euclid(days) * days;
                Plan { base: Base::Day, first: midnight_of(tz, epoch + Duration::days(n)), step: Step::Days(days) }
            }
            604_800 => {
                let date = local_date(tz, start);
                let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
                Plan { base: Base::Day, first: midnight_of(tz, monday), step: Step::Days(7) }
            }
            2_592_000 => {
                let date = local_date(tz, start);
                let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("a month's first day");
                Plan { base: Base::Day, first: midnight_of(tz, first), step: Step::Month }
            }
            _ => return Err(BAD),
        })
    }
}

const BAD: RpcError = RpcError::InvalidArgument;

fn int(v: &Value) -> Result<i64, RpcError> {
    v.as_i64().ok_or(BAD)
}

#[derive(Debug, Clone, Copy)]
enum Base {
    Sec,
    Min,
    Hour,
    Day,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Fixed(i64),
    Days(i64),
    Month,
}

impl Step {
    fn next(self, tz: Tz, t: i64) -> i64 {
        match self {
            Step::Fixed(i) => t + i,
            Step::Days(n) => midnight_of(tz, local_date(tz, t) + Duration::days(n)),
            Step::Month => {
                let d = local_date(tz, t);
                let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
                midnight_of(tz, NaiveDate::from_ymd_opt(y, m, 1).expect("a month's first day"))
            }
        }
    }
}

struct Plan {
    base: Base,
    first: i64,
    step: Step,
}

/// The local date `t` falls on.
fn local_date(tz: Tz, t: i64) -> NaiveDate {
    tz.timestamp_opt(t, 0).single().expect("a UTC instant has one local time").date_naive()
}

/// The UTC timestamp of the first moment of local `date` (midnight, or the first hour that exists
/// when a clock change skips midnight).
pub fn midnight_of(tz: Tz, date: NaiveDate) -> i64 {
    for hour in 0..24 {
        let local = date.and_hms_opt(hour, 0, 0).expect("a valid hour");
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.timestamp();
        }
    }
    date.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp()
}

/// The local midnight that starts the day `t` falls in.
pub fn local_midnight(tz: Tz, t: i64) -> i64 {
    midnight_of(tz, local_date(tz, t))
}

#[derive(Serialize)]
struct DealJson {
    id: u64,
    time: f64,
    price: Dec,
    amount: Dec,
    r#type: &'static str,
}

#[derive(Serialize)]
struct StatusJson {
    period: i64,
    last: Dec,
    open: Dec,
    close: Dec,
    high: Dec,
    low: Dec,
    volume: Dec,
    deal: Dec,
}

#[derive(Serialize)]
struct TodayJson {
    open: Dec,
    last: Dec,
    high: Dec,
    low: Dec,
    volume: Dec,
    deal: Dec,
}

/// `[time, open, close, high, low, volume, deal, market]`.
struct KlineRow(i64, Bucket, u32, u32, String);

impl Serialize for KlineRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let KlineRow(t, b, stock, money, market) = self;
        let mut tup = s.serialize_tuple(8)?;
        tup.serialize_element(t)?;
        for price in [b.open, b.close, b.high, b.low] {
            tup.serialize_element(&Dec::new(price, *money))?;
        }
        tup.serialize_element(&Dec::new(b.volume, *stock))?;
        tup.serialize_element(&Dec::new(b.deal, stock + money))?;
        tup.serialize_element(market)?;
        tup.end()
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("replies always serialize")
}
