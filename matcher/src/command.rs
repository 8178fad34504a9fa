//! Typed commands: what the matcher takes. The edges decode them from ViaBTC's JSON-RPC params
//! (`viaduct_protocol::params`) or the binary order entry, checking what can be checked without
//! the matcher's state against the limits here.

use serde::{Deserialize, Serialize};

use crate::config::{AssetId, MarketId};
use crate::order::{Side, Source};

/// Largest `limit` of `order.book`, `order.depth` and `order.pending`.
pub const QUERY_LIMIT_MAX: u32 = 101;
/// Longest `business` of `balance.update` (the history column is VARCHAR(30)).
pub const BUSINESS_LEN_MAX: usize = 30;
/// Longest `detail` of `balance.update`, as compact JSON.
pub const DETAIL_LEN_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `balance.query`; an empty list means every asset.
    BalanceQuery {
        user: u32,
        assets: Vec<AssetId>,
    },
    /// `balance.update`; `change` at the asset's `prec_save`, parsed at its `prec_show`.
    BalanceUpdate {
        user: u32,
        asset: AssetId,
        business: String,
        business_id: u64,
        change: i128,
        detail: String,
    },
    AssetList,
    /// `asset.summary`; empty means every asset.
    AssetSummary {
        assets: Vec<AssetId>,
    },
    PutLimit(PutLimit),
    PutMarket(PutMarket),
    Cancel {
        user: u32,
        market: MarketId,
        order_id: u64,
    },
    /// Cancels the open order that `user` placed with `client_id` (binary order entry only).
    CancelByClientId {
        user: u32,
        market: MarketId,
        client_id: u64,
    },
    /// Cancels every open order of `user`, of one market if `market` is given, of one side of it if
    /// `side` is too, placed by one binary session if `session` is given (its orders as it ends):
    /// one command, whatever the count.
    CancelAll {
        user: u32,
        market: Option<MarketId>,
        side: Option<Side>,
        session: Option<u64>,
    },
    /// Changes the price and/or what is left of `user`'s resting limit order (`None`: unchanged).
    /// See [`Amend`].
    Amend(Amend),
    /// Cancels every resting order placed by a binary session whose tag is below `before`
    /// (`Order::session`): what sessions of an earlier run left, since a restart ends every
    /// session. The TCP edge sends it as it starts; with no such order it is refused (order not
    /// found) and journals nothing.
    CancelEndedSessions {
        before: u64,
    },
    OrderBook {
        market: MarketId,
        side: Side,
        offset: u64,
        limit: u32,
    },
    /// `interval` at the market's `money_prec`; 0 means per exact price.
    OrderDepth {
        market: MarketId,
        limit: u32,
        interval: i128,
    },
    OrderPending {
        user: u32,
        market: MarketId,
        offset: u64,
        limit: u32,
    },
    OrderPendingDetail {
        market: MarketId,
        order_id: u64,
    },
    /// Whether `user`'s order `order_id` (or, with `order_id` 0, the order `user` placed with
    /// `client_id` within the client-id window) is open in `market`, and as what (binary order
    /// entry only: ORDER_STATUS). An id above the last order id, or a client order id not in the
    /// window, is "order not found".
    OrderStatus {
        user: u32,
        market: MarketId,
        order_id: u64,
        client_id: u64,
    },
    MarketList,
    /// `market.summary`; empty means every market.
    MarketSummary {
        markets: Vec<MarketId>,
    },
}

/// `order.put_limit`: `amount` at `stock_prec`, `price` at `money_prec`, rates at `fee_prec`
/// (below 10^6, as `fee_prec` is at most 6). `client_id` is the caller's own order id (0: none;
/// only the binary order entry sets one): a second order with a live one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutLimit {
    pub user: u32,
    pub market: MarketId,
    pub side: Side,
    pub amount: i128,
    pub price: i128,
    pub taker_fee: u32,
    pub maker_fee: u32,
    pub source: Source,
    pub client_id: u64,
    /// How long, and how many of its user's, a `client_id` is remembered for.
    pub id_window: IdWindow,
    pub options: OrderOptions,
    /// The binary session placing it, if its orders are cancelled when it ends (0: none).
    pub session: u64,
}

/// `order.put_market`: `amount` at `stock_prec`: for an ask the stock to sell; for a bid the
/// money to spend, or with `stock_amount` the stock to buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutMarket {
    pub user: u32,
    pub market: MarketId,
    pub side: Side,
    pub amount: i128,
    /// A bid's `amount` is the stock to buy (an order of [`OrderKind::MarketStock`]); an ask's
    /// amount is stock either way.
    ///
    /// [`OrderKind::MarketStock`]: crate::order::OrderKind::MarketStock
    pub stock_amount: bool,
    pub taker_fee: u32,
    pub source: Source,
    pub client_id: u64,
    /// As [`PutLimit::id_window`].
    pub id_window: IdWindow,
    pub self_trade: SelfTrade,
    /// As [`PutLimit::session`].
    pub session: u64,
}

/// `order.amend`: `price` at `money_prec`, `left` (what the order is to have left to trade) at
/// `stock_prec`; `None` keeps the order's own. A smaller `left` at the same price keeps the
/// order's place in its level; any other change replaces it with a new order (a new id, at the
/// back of its level) that keeps its user, side, fees, source and client order id. An amend never
/// trades: a price that would cross the book is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amend {
    pub user: u32,
    pub market: MarketId,
    pub order_id: u64,
    pub price: Option<i128>,
    pub left: Option<i128>,
}

/// How a user's client order ids are remembered: each for `seconds` after the order that took it,
/// and at most `max` of them, the oldest forgotten first (a binary key's `client_ids_window_s` and
/// `client_ids_max`). Each order with an id carries the window it was placed under, so that
/// replaying the journal forgets exactly what the first run forgot whatever the config says now.
/// Out-of-range values are taken as the nearest bound ([`IdWindow::bounded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdWindow {
    pub max: u32,
    pub seconds: u32,
}

impl IdWindow {
    /// The most ids a user may have remembered: 2^24 (about 1.3 GB of memory at ~80 bytes each).
    pub const MAX_MAX: u32 = 1 << 24;
    /// The longest an id may be remembered: 7 days.
    pub const SECONDS_MAX: u32 = 7 * 86_400;

    /// (`max`, `seconds`), each within 1 and its bound.
    pub fn bounded(self) -> (usize, u32) {
        (self.max.clamp(1, Self::MAX_MAX) as usize, self.seconds.clamp(1, Self::SECONDS_MAX))
    }
}

impl Default for IdWindow {
    /// 1,000,000 ids for 24 hours.
    fn default() -> IdWindow {
        IdWindow { max: 1_000_000, seconds: 86_400 }
    }
}

/// How long a limit order may live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: what does not trade at once rests (ViaBTC's only kind).
    #[default]
    Gtc,
    /// Immediate or cancel: trades what it can at once; the rest is cancelled, never rests.
    Ioc,
    /// Fill or kill: trades its whole amount at once, or is refused and nothing happens.
    Fok,
}

/// What an order does when it would trade with a resting order of its own user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelfTrade {
    /// It trades with it (ViaBTC's behaviour).
    #[default]
    Allow,
    /// The new order's rest is cancelled there; what it traded before stays.
    CancelTaker,
    /// The resting order is cancelled and matching goes on.
    CancelMaker,
    /// Both: the resting order is cancelled and so is the new order's rest.
    CancelBoth,
}

/// The options of a limit order. The default is ViaBTC's order: good till cancelled, may take,
/// trades with its own user's orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderOptions {
    pub time_in_force: TimeInForce,
    /// Refused if it would take liquidity (trade on arrival): it only ever rests.
    pub post_only: bool,
    pub self_trade: SelfTrade,
}

impl OrderOptions {
    /// Whether the options can go together: a post-only order rests, so it is good till
    /// cancelled.
    pub fn consistent(&self) -> bool {
        !self.post_only || self.time_in_force == TimeInForce::Gtc
    }
}

impl Command {
    /// Whether the command can change state (and so must be journaled before it is answered).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::BalanceUpdate { .. }
                | Command::PutLimit(_)
                | Command::PutMarket(_)
                | Command::Cancel { .. }
                | Command::CancelByClientId { .. }
                | Command::CancelAll { .. }
                | Command::Amend(_)
                | Command::CancelEndedSessions { .. }
        )
    }
}

/// The largest mantissa of an order's price or amount at its market's precision: every order,
/// deal and remainder fits the 64-bit fields of the binary order entry's reports
/// (`edges/PROTOCOL.md`), whichever edge placed it. 92,233,720,368.54775807 at 8 decimals.
pub const ORDER_MANTISSA_MAX: i128 = i64::MAX as i128;
