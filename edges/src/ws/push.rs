//! What the WebSocket edge pushes (SPEC B3.4), kept apart from the sockets: the market feeds
//! (`kline`, `depth`, `price`, `state`, `today`, `deals`), each polled from its owner once per
//! `push_interval` while somebody subscribes and pushed only when its answer changed, and the
//! users' own `order.update` and `asset.update`, made from the durable events of the commands that
//! touched them.
//!
//! A feed is polled once for all its subscribers and its push encoded once: the fan-out is a
//! reference-counted copy of the same text per connection. Everything here answers from what its
//! owner made durable: market data sees deals only once the journal has them, the matcher's
//! answers are released by the durable sequence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use viaduct_matcher::config::{AssetId, MarketId, Spec};
use viaduct_matcher::event::{EventRef, OrderEventKind};
use viaduct_matcher::Events;
use viaduct_protocol::json::OrderJson;

/// Deals a `deals` feed keeps for a new subscriber (ViaBTC's).
const DEALS_KEPT: usize = 100;
/// How often a `depth` feed sends its whole book instead of a change (SPEC B3.4).
const CLEAN_EVERY: Duration = Duration::from_secs(60);

/// One market feed: what a subscription names, shared by everyone who names the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Feed {
    Kline { market: String, interval: u64 },
    Depth { market: String, limit: u64, interval: String },
    Price(String),
    State(String),
    Today(String),
    Deals(String),
}

/// The kinds of subscription: a `*.subscribe` replaces the connection's feeds of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FeedKind {
    Kline,
    Depth,
    Price,
    State,
    Today,
    Deals,
}

impl Feed {
    pub(super) fn kind(&self) -> FeedKind {
        match self {
            Feed::Kline { .. } => FeedKind::Kline,
            Feed::Depth { .. } => FeedKind::Depth,
            Feed::Price(_) => FeedKind::Price,
            Feed::State(_) => FeedKind::State,
            Feed::Today(_) => FeedKind::Today,
            Feed::Deals(_) => FeedKind::Deals,
        }
    }

    fn market(&self) -> &str {
        match self {
            Feed::Kline { market, .. } | Feed::Depth { market, .. } => market,
            Feed::Price(m) | Feed::State(m) | Feed::Today(m) | Feed::Deals(m) => m,
        }
    }

    /// The method and params that poll this feed at `now` (unix seconds), given the last deal id
    /// a `deals` feed has.
    pub(super) fn poll(&self, now: u64, last_deal_id: u64, push_interval: Duration) -> (&'static str, Vec<Value>) {
        let m = Value::from(self.market());
        match self {
            Feed::Kline { interval, .. } => {
                // The bucket that holds `now` and the one before, which may still be changing.
                let back = interval.saturating_add(push_interval.as_secs() + 1);
                ("market.kline", vec![m, json!(now.saturating_sub(back)), json!(now), json!(interval)])
            }
            Feed::Depth { limit, interval, .. } => ("order.depth", vec![m, json!(limit), json!(interval)]),
            Feed::Price(_) => ("market.last", vec![m]),
            Feed::State(_) => ("market.status", vec![m, json!(86400)]),
            Feed::Today(_) => ("market.status_today", vec![m]),
            Feed::Deals(_) => ("market.deals", vec![m, json!(DEALS_KEPT), json!(last_deal_id)]),
        }
    }
}

/// A feed's subscribers and what it last pushed.
#[derive(Default)]
pub(super) struct FeedState {
    /// Connection index → its generation.
    pub(super) subscribers: HashMap<usize, u64>,
    /// A poll is with the owner; the next waits for its answer.
    pub(super) polling: bool,
    /// The last answer (for `depth`, the whole book it last saw; for `deals`, the deals kept for
    /// newcomers, newest first).
    last: Option<Value>,
    pub(super) last_deal_id: u64,
    last_clean: Option<Instant>,
}

/// A push as ViaBTC writes it: `{"method": ..., "params": [...], "id": null}`, in that order.
fn push(method: &str, params: Value) -> String {
    format!(r#"{{"method":"{method}","params":{params},"id":null}}"#)
}

impl FeedState {
    /// What a new subscriber is sent at once, from what the feed has (SPEC B3.4): the whole book,
    /// the last price if not zero, the status, the kept deals.
    pub(super) fn greeting(&self, feed: &Feed) -> Option<String> {
        let m = feed.market();
        match feed {
            Feed::Deals(_) => self.last.as_ref().map(|kept| push("deals.update", json!([m, kept]))),
            Feed::Depth { .. } => self.last.as_ref().map(|book| push("depth.update", json!([true, book, m]))),
            Feed::Price(_) => match &self.last {
                Some(p) if !is_zero(p) => Some(push("price.update", json!([m, p]))),
                _ => None,
            },
            Feed::Kline { .. } => self.last.as_ref().map(|rows| push("kline.update", rows.clone())),
            Feed::State(_) => self.last.as_ref().map(|s| push("state.update", json!([m, s]))),
            Feed::Today(_) => self.last.as_ref().map(|s| push("today.update", json!([m, s]))),
        }
    }

    /// Takes a poll's `result`; returns the push for every subscriber when it changed.
    pub(super) fn answered(&mut self, feed: &Feed, result: Value, now: Instant) -> Option<String> {
        let m = feed.market();
        match feed {
            Feed::Deals(_) => {
                let Value::Array(new) = result else { return None };
                if let Some(id) = new.first().and_then(|d| d.get("id")).and_then(Value::as_u64) {
                    self.last_deal_id = self.last_deal_id.max(id);
                }
                // The first answer is pushed even when empty; later ones only with new deals.
                let kept = match self.last.take() {
                    Some(Value::Array(kept)) if new.is_empty() => {
                        self.last = Some(Value::Array(kept));
                        return None;
                    }
                    Some(Value::Array(kept)) => kept,
                    _ => Vec::new(),
                };
                let pushed = push("deals.update", json!([m, new]));
                let mut all = new;
                all.extend(kept);
                all.truncate(DEALS_KEPT);
                self.last = Some(Value::Array(all));
                Some(pushed)
            }
            Feed::Depth { .. } => {
                let clean_due = self.last_clean.is_none_or(|at| now.duration_since(at) >= CLEAN_EVERY);
                let pushed = match &self.last {
                    Some(old) if *old == result => return None,
                    Some(old) if !clean_due => push("depth.update", json!([false, depth_diff(old, &result), m])),
                    _ => {
                        self.last_clean = Some(now);
                        push("depth.update", json!([true, result, m]))
                    }
                };
                self.last = Some(result);
                Some(pushed)
            }
            Feed::Kline { .. } => {
                let last_row = |v: &Value| v.as_array().and_then(|rows| rows.last()).cloned();
                if result.as_array().is_none_or(Vec::is_empty)
                    || self.last.as_ref().is_some_and(|old| last_row(old) == last_row(&result))
                {
                    return None;
                }
                self.last = Some(result.clone());
                Some(push("kline.update", result))
            }
            Feed::Price(_) | Feed::State(_) | Feed::Today(_) => {
                if self.last.as_ref() == Some(&result) {
                    return None;
                }
                let first = self.last.is_none();
                self.last = Some(result.clone());
                if first && feed.kind() == FeedKind::Price && is_zero(&result) {
                    return None; // a market that never traded has no price to show
                }
                let method = match feed.kind() {
                    FeedKind::Price => "price.update",
                    FeedKind::State => "state.update",
                    _ => "today.update",
                };
                Some(push(method, json!([m, result])))
            }
        }
    }
}

/// Whether a price is a zero ("0", "0.00").
fn is_zero(price: &Value) -> bool {
    price.as_str().is_some_and(|p| p.trim_start_matches(['0', '.']).is_empty())
}

/// The change from book `old` to book `new` (`{"asks": [[price, amount], ...], "bids": ...}`):
/// per side, the levels that are new or changed with their amount and the levels gone with
/// `"0"`; a side without a change is left out (SPEC B3.4).
fn depth_diff(old: &Value, new: &Value) -> Value {
    let mut diff = serde_json::Map::new();
    for side in ["asks", "bids"] {
        let levels = |book: &Value| -> Vec<(String, Value)> {
            let rows = book.get(side).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            rows.iter().filter_map(|l| Some((l.get(0)?.as_str()?.to_string(), l.get(1)?.clone()))).collect()
        };
        let (before, after) = (levels(old), levels(new));
        let was: HashMap<&str, &Value> = before.iter().map(|(p, a)| (p.as_str(), a)).collect();
        let mut changed: Vec<Value> =
            after.iter().filter(|(p, a)| was.get(p.as_str()) != Some(&a)).map(|(p, a)| json!([p, a])).collect();
        let now: HashMap<&str, ()> = after.iter().map(|(p, _)| (p.as_str(), ())).collect();
        changed.extend(before.iter().filter(|(p, _)| !now.contains_key(p.as_str())).map(|(p, _)| json!([p, "0"])));
        if !changed.is_empty() {
            diff.insert(side.to_string(), Value::Array(changed));
        }
    }
    Value::Object(diff)
}

/// One connection's subscriptions to its user's orders and assets.
#[derive(Debug, Default, Clone)]
pub(super) struct Mine {
    pub(super) markets: Vec<MarketId>,
    pub(super) assets: Vec<AssetId>,
}

impl Mine {
    pub(super) fn is_empty(&self) -> bool {
        self.markets.is_empty() && self.assets.is_empty()
    }
}

/// The `order.update` push of each order event in `events` that `wanted` (user, market), handed
/// to `each` with the order's user and market.
pub(super) fn order_updates(
    spec: &Spec,
    events: &Events,
    wanted: impl Fn(u32, MarketId) -> bool,
    mut each: impl FnMut(u32, MarketId, String),
) {
    for e in events.iter() {
        if let EventRef::Order(kind, order) = e {
            if !wanted(order.user, order.market) {
                continue;
            }
            let code = match kind {
                OrderEventKind::Put => 1,
                OrderEventKind::Update => 2,
                OrderEventKind::Finish => 3,
            };
            // The order's fields in ViaBTC's order, as in every other reply with an order.
            let json = serde_json::to_string(&OrderJson { spec, order }).expect("an order encodes");
            each(
                order.user,
                order.market,
                format!(r#"{{"method":"order.update","params":[{code},{json}],"id":null}}"#),
            );
        }
    }
}

/// Adds the (user, asset) pairs whose balance `events` may have changed (an order event its
/// market's two assets, frozen or traded; a balance change its own) to `out`, each once.
pub(super) fn touched_assets(spec: &Spec, events: &Events, out: &mut Vec<(u32, AssetId)>) {
    for e in events.iter() {
        match e {
            EventRef::Order(_, o) => {
                let mk = spec.market(o.market);
                out.extend([(o.user, mk.stock), (o.user, mk.money)]);
            }
            EventRef::Balance(b) => out.push((b.user, b.asset)),
            EventRef::Deal(_) | EventRef::Level(_) => {}
        }
    }
    out.sort_unstable();
    out.dedup();
}

/// The `asset.update` push of the assets in `balances` (a `balance.query` result) that `wanted`
/// names; none when it names none of them.
pub(super) fn asset_update(spec: &Spec, balances: &Value, wanted: &[AssetId]) -> Option<String> {
    let Value::Object(all) = balances else { return None };
    let mut picked = serde_json::Map::new();
    for &asset in wanted {
        let name = &spec.asset(asset).name;
        if let Some(b) = all.get(name) {
            picked.insert(name.clone(), b.clone());
        }
    }
    (!picked.is_empty()).then(|| push("asset.update", json!([picked])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(asks: Value, bids: Value) -> Value {
        json!({"asks": asks, "bids": bids})
    }

    fn params(text: &str) -> Value {
        serde_json::from_str::<Value>(text).unwrap()["params"].clone()
    }

    #[test]
    fn depth_first_pushes_the_book_then_only_the_changed_side_with_gone_levels_at_zero() {
        let feed = Feed::Depth { market: "BTCBCH".into(), limit: 10, interval: "0".into() };
        let mut state = FeedState::default();
        let t0 = Instant::now();
        assert_eq!(state.greeting(&feed), None);
        let first = book(json!([["10", "1"], ["11", "2"]]), json!([["9", "3"]]));
        let pushed = state.answered(&feed, first.clone(), t0).unwrap();
        assert_eq!(params(&pushed), json!([true, first, "BTCBCH"]));
        assert_eq!(state.answered(&feed, first.clone(), t0), None, "no change, no push");
        let second = book(json!([["10", "1.5"], ["12", "1"]]), json!([["9", "3"]]));
        let pushed = state.answered(&feed, second.clone(), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(params(&pushed), json!([false, {"asks": [["10", "1.5"], ["12", "1"], ["11", "0"]]}, "BTCBCH"]));
        assert_eq!(params(&state.greeting(&feed).unwrap()), json!([true, second, "BTCBCH"]));
        // A minute after the last whole book, a change sends the whole book again.
        let third = book(json!([]), json!([["9", "3"]]));
        let pushed = state.answered(&feed, third.clone(), t0 + CLEAN_EVERY).unwrap();
        assert_eq!(params(&pushed), json!([true, third, "BTCBCH"]));
    }

    #[test]
    fn deals_push_the_new_ones_and_keep_a_hundred_for_newcomers() {
        let feed = Feed::Deals("BTCBCH".into());
        let mut state = FeedState::default();
        assert_eq!(state.greeting(&feed), None);
        let deal = |id: u64| json!({"id": id});
        // The first answer is pushed even when empty: subscribers learn there is nothing yet.
        assert_eq!(params(&state.answered(&feed, json!([]), Instant::now()).unwrap()), json!(["BTCBCH", []]));
        assert_eq!(state.answered(&feed, json!([]), Instant::now()), None);
        let newest: Vec<Value> = (1..=150).rev().map(deal).collect();
        state.answered(&feed, Value::Array(newest), Instant::now()).unwrap();
        assert_eq!(state.last_deal_id, 150);
        assert_eq!(feed.poll(0, state.last_deal_id, Duration::from_millis(100)).1[2], json!(150));
        let pushed = state.answered(&feed, json!([deal(151)]), Instant::now()).unwrap();
        assert_eq!(params(&pushed), json!(["BTCBCH", [deal(151)]]));
        let kept = params(&state.greeting(&feed).unwrap())[1].as_array().unwrap().clone();
        assert_eq!(kept.len(), DEALS_KEPT);
        assert_eq!((kept[0].clone(), kept[99].clone()), (deal(151), deal(52)));
    }

    #[test]
    fn price_state_and_kline_push_on_change_and_a_zero_price_greets_nobody() {
        let price = Feed::Price("BTCBCH".into());
        let mut state = FeedState::default();
        assert_eq!(state.answered(&price, json!("0"), Instant::now()), None);
        assert_eq!(state.greeting(&price), None);
        assert_eq!(state.answered(&price, json!("0"), Instant::now()), None);
        let pushed = state.answered(&price, json!("1.5"), Instant::now()).unwrap();
        assert_eq!(params(&pushed), json!(["BTCBCH", "1.5"]));
        assert_eq!(params(&state.greeting(&price).unwrap()), json!(["BTCBCH", "1.5"]));

        let kline = Feed::Kline { market: "BTCBCH".into(), interval: 60 };
        let mut state = FeedState::default();
        let rows = json!([[60, "1", "1", "1", "1", "1", "1", "BTCBCH"]]);
        assert_eq!(params(&state.answered(&kline, rows.clone(), Instant::now()).unwrap()), rows);
        assert_eq!(state.answered(&kline, rows, Instant::now()), None);
        assert_eq!(state.answered(&kline, json!([]), Instant::now()), None, "an empty answer is no change");
    }
}
