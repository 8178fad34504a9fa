//! Typed replies: what the matcher answers. The edges encode them as ViaBTC's JSON
//! (`viaduct_protocol::json`) or as binary execution reports.

use crate::config::{AssetId, MarketId};
use crate::order::Order;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssetSummary {
    pub asset: AssetId,
    pub available_count: u64,
    /// At `prec_save`.
    pub available: i128,
    pub freeze_count: u64,
    pub freeze: i128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketSummary {
    pub market: MarketId,
    pub ask_count: usize,
    /// Sum of `left`, at `stock_prec`.
    pub ask_amount: i128,
    pub bid_count: usize,
    pub bid_amount: i128,
}

/// A successful result, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `balance.query`: (asset, available, freeze) at `prec_show`, in request or config order.
    Balances(Vec<(AssetId, i128, i128)>),
    /// `balance.update`: `{"status": "success"}`.
    Success,
    AssetList,
    AssetSummary(Vec<AssetSummary>),
    /// `order.put_limit`, `order.put_market`, `order.cancel`: the order of the command's last order
    /// event ([`Events::last_order`]), which is the taker after matching or the cancelled order.
    Order,
    /// `order.pending_detail`: the order, or `null`.
    MaybeOrder(Option<Order>),
    Book {
        offset: u64,
        limit: u32,
        total: usize,
        orders: Vec<Order>,
    },
    /// `(price, amount)` levels at `money_prec` and `stock_prec`.
    Depth {
        market: MarketId,
        asks: Vec<(i128, i128)>,
        bids: Vec<(i128, i128)>,
    },
    Pending {
        offset: u64,
        limit: u32,
        total: usize,
        records: Vec<Order>,
    },
    MarketList,
    MarketSummary(Vec<MarketSummary>),
}
