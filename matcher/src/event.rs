//! What a command caused, in order, for the journal's consumers: order events, deals, balance
//! changes and book-level changes. Events are plain values; copying one never allocates except a
//! `balance.update` detail.

use crate::config::{AssetId, MarketId};
use crate::order::{Order, Side};

/// ViaBTC's Kafka `orders` event numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEventKind {
    Put = 1,
    Update = 2,
    Finish = 3,
}

/// One trade: every field of ViaBTC's Kafka `deals` message, plus the money amount.
/// Scales: `price` at `money_prec`, `amount` at `stock_prec`, `deal` at `stock_prec + money_prec`,
/// `ask_fee` at `stock_prec + money_prec + fee_prec` (money), `bid_fee` at `stock_prec + fee_prec`
/// (stock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deal {
    pub id: u64,
    pub time_us: u64,
    pub market: MarketId,
    pub ask_order_id: u64,
    pub bid_order_id: u64,
    pub ask_user: u32,
    pub bid_user: u32,
    pub price: i128,
    pub amount: i128,
    pub deal: i128,
    pub ask_fee: i128,
    pub bid_fee: i128,
    /// The taker's side.
    pub taker_side: Side,
    pub ask_fee_rate: i128,
    pub bid_fee_rate: i128,
}

/// What a balance change was for, with the fields of its history `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Business {
    /// A trade leg: `{"a": amount, "i": order_id, "m": market, "p": price}`, fee legs add
    /// `"f": fee_rate` (at `fee_prec`).
    Trade { market: MarketId, order_id: u64, price: i128, amount: i128, fee_rate: Option<i128> },
    /// `balance.update`: the caller's business name, id and detail object (compact JSON).
    Update { business: String, business_id: u64, detail: String },
}

/// A change of one user's balance of one asset. `change` is the exact amount at `change_scale`;
/// `balance` is the user's total (available + freeze) right after it, at the asset's `prec_save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceChange {
    pub time_us: u64,
    pub user: u32,
    pub asset: AssetId,
    pub change: i128,
    pub change_scale: u32,
    pub balance: i128,
    pub business: Business,
}

/// The total `left` now resting at one price level (0 when the level is gone), at `stock_prec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    pub market: MarketId,
    pub side: Side,
    pub price: i128,
    pub amount: i128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Order { kind: OrderEventKind, order: Order },
    Deal(Deal),
    Balance(BalanceChange),
    Level(LevelChange),
}
