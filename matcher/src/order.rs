//! Orders, sides and the fixed-size `source` text.

use serde::{Deserialize, Serialize};

use crate::config::{Market, MarketId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    Ask = 1,
    Bid = 2,
}

impl Side {
    pub fn from_code(code: i64) -> Option<Side> {
        match code {
            1 => Some(Side::Ask),
            2 => Some(Side::Bid),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Ask => Side::Bid,
            Side::Bid => Side::Ask,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    Limit = 1,
    /// A market order: an ask sells `amount` stock, a bid spends `amount` money (ViaBTC's).
    Market = 2,
    /// A market bid that buys `amount` stock, spending what that costs (an addition: only an
    /// order that asks for it is of this type).
    MarketStock = 3,
}

/// Longest `source` accepted (ViaBTC: length < 31).
pub const SOURCE_LEN_MAX: usize = 30;

/// The request's free-text `source`, kept inline so that copying an order never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    len: u8,
    bytes: [u8; SOURCE_LEN_MAX],
}

impl Source {
    pub const EMPTY: Source = Source { len: 0, bytes: [0; SOURCE_LEN_MAX] };

    /// `None` when `text` is longer than [`SOURCE_LEN_MAX`] bytes.
    pub fn new(text: &str) -> Option<Source> {
        let b = text.as_bytes();
        if b.len() > SOURCE_LEN_MAX {
            return None;
        }
        let mut s = Source::EMPTY;
        s.bytes[..b.len()].copy_from_slice(b);
        s.len = b.len() as u8;
        Some(s)
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from a `&str` cut at its own length, or loaded through `new`.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// An order. Mantissas carry the scales of their market:
/// `price` at `money_prec`; `amount`, `left` and `deal_stock` at `stock_prec` (a market bid's
/// `amount` and `left` are money, at `stock_prec + money_prec`); `deal_money` at
/// `stock_prec + money_prec`; fee rates at `fee_prec`; `deal_fee` at [`Order::fee_scale`].
/// What a resting order keeps frozen follows from it: see [`Order::frozen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub market: MarketId,
    pub side: Side,
    pub kind: OrderKind,
    pub user: u32,
    pub ctime_us: u64,
    pub mtime_us: u64,
    pub price: i128,
    pub amount: i128,
    pub left: i128,
    pub taker_fee: u32,
    pub maker_fee: u32,
    pub deal_stock: i128,
    pub deal_money: i128,
    pub deal_fee: i128,
    pub source: Source,
    /// The caller's own id for the order (0: none), from the binary order entry.
    pub client_id: u64,
    /// The binary order-entry session that placed it, when its API key cancels a session's
    /// orders as it ends (`cancel_on_disconnect`); 0 otherwise. An amend keeps it.
    pub session: u64,
}

impl Order {
    /// Whether `amount` and `left` are money to spend, not stock: a market bid of type 2.
    pub fn spends_money(&self) -> bool {
        self.kind == OrderKind::Market && self.side == Side::Bid
    }

    /// Scale of `amount` and `left`.
    pub fn amount_scale(&self, m: &Market) -> u32 {
        if self.spends_money() {
            m.money_scale()
        } else {
            m.stock_prec
        }
    }

    /// What a resting limit order keeps frozen, at [`Order::freeze_scale`]: an ask its `left`
    /// stock, a bid `price × left` money.
    pub fn frozen(&self) -> i128 {
        match self.side {
            Side::Ask => self.left,
            Side::Bid => self.price * self.left,
        }
    }

    /// Scale of [`Order::frozen`].
    pub fn freeze_scale(&self, m: &Market) -> u32 {
        match self.side {
            Side::Ask => m.stock_prec,
            Side::Bid => m.money_scale(),
        }
    }

    /// Scale of this order's fees: an ask pays `deal × rate` in money, a bid `amount × rate` in stock.
    pub fn fee_scale(&self, m: &Market) -> u32 {
        fee_scale(self.side, m)
    }
}

/// Scale of the fee paid by the `side` of a trade.
pub fn fee_scale(side: Side, m: &Market) -> u32 {
    match side {
        Side::Ask => m.money_scale() + m.fee_prec,
        Side::Bid => m.stock_prec + m.fee_prec,
    }
}
