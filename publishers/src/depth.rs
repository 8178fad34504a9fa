//! A depth view per market, from the matcher's book-level changes: what the WebSocket edge will
//! push as `depth.update` (SPEC B3.4) — a full `clean` snapshot first, then only the levels that
//! changed (a removed level as amount 0), a side with no change left out, and a full snapshot
//! again instead of a diff once 60 s have passed since the last one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use viaduct_matcher::config::MarketId;
use viaduct_matcher::decimal::Dec;
use viaduct_matcher::event::LevelChange;
use viaduct_matcher::order::Side;
use viaduct_matcher::{Matcher, Spec};

/// A diff becomes a full snapshot once the last one is this old.
pub const CLEAN_EVERY_S: i64 = 60;

#[derive(Debug, Clone, Default)]
struct Levels {
    /// price → amount resting, per side: [asks, bids].
    sides: [BTreeMap<i128, i128>; 2],
    changed: [BTreeSet<i128>; 2],
    last_clean: Option<i64>,
}

/// What to push for one market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthUpdate {
    pub clean: bool,
    /// Best first: asks ascending, bids descending. In a diff, `None` for a side with no change.
    pub asks: Option<Vec<(i128, i128)>>,
    pub bids: Option<Vec<(i128, i128)>>,
}

/// The book levels of every market and what changed since each was last pushed.
#[derive(Debug, Clone)]
pub struct DepthView {
    markets: Vec<Levels>,
}

fn index(side: Side) -> usize {
    match side {
        Side::Ask => 0,
        Side::Bid => 1,
    }
}

impl DepthView {
    /// The levels of `matcher`'s books as they are now.
    pub fn from_matcher(matcher: &Matcher) -> DepthView {
        let mut markets = vec![Levels::default(); matcher.spec().markets.len()];
        for (id, levels) in markets.iter_mut().enumerate() {
            for side in [Side::Ask, Side::Bid] {
                levels.sides[index(side)] = matcher.book(id as MarketId).side_levels(side).collect();
            }
        }
        DepthView { markets }
    }

    /// Takes one level change (the total now resting at that price; 0 when the level is gone).
    pub fn apply(&mut self, l: &LevelChange) {
        let m = &mut self.markets[l.market as usize];
        let side = index(l.side);
        if l.amount == 0 {
            m.sides[side].remove(&l.price);
        } else {
            m.sides[side].insert(l.price, l.amount);
        }
        m.changed[side].insert(l.price);
    }

    /// The levels of one side, best first.
    pub fn levels(&self, market: MarketId, side: Side) -> Vec<(i128, i128)> {
        let map = &self.markets[market as usize].sides[index(side)];
        match side {
            Side::Ask => map.iter().map(|(&p, &a)| (p, a)).collect(),
            Side::Bid => map.iter().rev().map(|(&p, &a)| (p, a)).collect(),
        }
    }

    /// What to push for `market` at `now` (seconds): the first call and every call 60 s after the
    /// last full snapshot give one (if anything changed since the last call, or on the first);
    /// other calls give the changed levels, or `None` when nothing changed.
    pub fn update(&mut self, market: MarketId, now: i64) -> Option<DepthUpdate> {
        let due = self.markets[market as usize].last_clean.is_none_or(|t| now - t >= CLEAN_EVERY_S);
        let m = &mut self.markets[market as usize];
        let nothing = m.changed.iter().all(BTreeSet::is_empty);
        if nothing && m.last_clean.is_some() {
            return None;
        }
        let changed = std::mem::take(&mut m.changed);
        if due {
            m.last_clean = Some(now);
            return Some(DepthUpdate {
                clean: true,
                asks: Some(self.levels(market, Side::Ask)),
                bids: Some(self.levels(market, Side::Bid)),
            });
        }
        let diff = |side: Side| -> Option<Vec<(i128, i128)>> {
            let set = &changed[index(side)];
            if set.is_empty() {
                return None;
            }
            let map = &m.sides[index(side)];
            let at = |p: &i128| (*p, map.get(p).copied().unwrap_or(0));
            Some(match side {
                Side::Ask => set.iter().map(at).collect(),
                Side::Bid => set.iter().rev().map(at).collect(),
            })
        };
        Some(DepthUpdate { clean: false, asks: diff(Side::Ask), bids: diff(Side::Bid) })
    }
}

impl DepthUpdate {
    /// The `depth.update` params: `[clean, {"asks": [[price, amount], …], "bids": …}, market]`.
    pub fn params_json(&self, spec: &Spec, market: MarketId) -> String {
        let mk = spec.market(market);
        let rows = |side: &Option<Vec<(i128, i128)>>| {
            side.as_ref().map(|levels| {
                levels
                    .iter()
                    .map(|&(p, a)| (Dec::new(p, mk.money_prec), Dec::new(a, mk.stock_prec)))
                    .collect::<Vec<_>>()
            })
        };
        #[derive(Serialize)]
        struct Sides {
            #[serde(skip_serializing_if = "Option::is_none")]
            asks: Option<Vec<(Dec, Dec)>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            bids: Option<Vec<(Dec, Dec)>>,
        }
        let sides = Sides { asks: rows(&self.asks), bids: rows(&self.bids) };
        serde_json::to_string(&(self.clean, sides, &mk.name)).expect("depth always serializes")
    }
}
