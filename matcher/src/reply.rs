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

/// Why an order ended with something left untraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its user cancelled it.
    Requested,
    /// A market order: the book ran out, or what is left cannot buy one unit.
    MarketRest,
    /// A limit order that made [`crate::DEALS_PER_ORDER_MAX`] deals: its rest does not go
    /// on the book.
    DealCap,
    /// An immediate-or-cancel order's rest.
    ImmediateOrCancel,
    /// Self-trade prevention cancelled the new order's rest.
    SelfTrade,
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
    /// `order.put_limit`, `order.put_market`, `order.cancel`, `order.amend`: the order of the
    /// command's last order event ([`Events::last_order`]), which is the taker after matching, the
    /// cancelled order, or the amended one; and, when the command ended it with something left,
    /// why.
    Order(Option<Ended>),
    /// `order.cancel_all`: how many orders it cancelled.
    Cancelled {
        count: u64,
    },
    /// `order.pending_detail`: the order, or `null`. Boxed, as in `Status`: an order inline
    /// would make every reply as large as it (208 bytes against 56), and a reply is copied
    /// onto a client's reply ring with each command.
    MaybeOrder(Option<Box<Order>>),
    /// [`crate::Command::OrderStatus`]: the order id asked about (found from the client order id
    /// when that was given), and the order if it is open and the user's.
    Status {
        order_id: u64,
        open: Option<Box<Order>>,
    },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RpcError;

    /// Every command's result is copied onto its client's reply ring: a variant that holds an
    /// order inline would make every result as large as the order.
    #[test]
    fn a_result_is_a_fraction_of_an_order() {
        let result = std::mem::size_of::<Result<Reply, RpcError>>();
        assert!(result <= 64, "a result takes {result} bytes");
        assert!(std::mem::size_of::<Order>() >= 2 * result);
    }
}
