//! # viaduct-protocol
//!
//! ViaBTC's JSON-RPC, apart from the matcher: the one method table (this file), the decoders of
//! params into typed commands ([`params`]) and the JSON encoding of typed replies ([`json`]).
//!
//! The table lists every JSON-RPC method the engine serves, with its ViaBTC command number (the
//! framed TCP RPC's `command`, SPEC B2.2), the stage that owns it, and, for the matcher's methods,
//! the decoder of its params into a typed [`Command`]. The HTTP edge, the framed TCP RPC and the
//! engine's clients route through it and nothing else.
#![forbid(unsafe_code)]

pub mod json;
pub mod params;

pub use json::{error_response, response_json, result_json};

use serde_json::Value;
use viaduct_matcher::{Command, RpcError, Spec};

/// Who answers a method.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    /// The matcher, through the input ring: decoded here into a [`Command`].
    Matcher(fn(&Spec, &[Value]) -> Result<Command, RpcError>),
    /// Market data, on its own query queue (ViaBTC's marketprice).
    MarketData,
    /// History's readers, on their own query queue (ViaBTC's readhistory).
    History,
}

/// One method.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub name: &'static str,
    /// ViaBTC's command number for it.
    pub command: u32,
    pub owner: Owner,
}

impl Method {
    /// Whether the matcher answers it.
    pub fn is_matcher(&self) -> bool {
        matches!(self.owner, Owner::Matcher(_))
    }

    /// What a request to this method becomes: a command (its params decoded), or a query for
    /// its owner. Error 1 for params the decoder refuses.
    pub fn route(&self, spec: &Spec, params: &[Value]) -> Result<Routed, RpcError> {
        match self.owner {
            Owner::Matcher(decode) => decode(spec, params).map(Routed::Command),
            owner => Ok(Routed::Query(owner)),
        }
    }
}

const fn m(name: &'static str, command: u32, owner: Owner) -> Method {
    Method { name, command, owner }
}

use Owner::{History, MarketData, Matcher};

/// Every method served, by command number. viaduct's own methods (SPEC A3) take numbers ViaBTC
/// does not use: `order.cancel_all` 211, `order.amend` 212.
pub const METHODS: [Method; 25] = [
    m("balance.query", 101, Matcher(params::balance_query)),
    m("balance.update", 102, Matcher(params::balance_update)),
    m("balance.history", 103, History),
    m("asset.list", 104, Matcher(params::asset_list)),
    m("asset.summary", 105, Matcher(params::asset_summary)),
    m("order.put_limit", 201, Matcher(params::put_limit)),
    m("order.put_market", 202, Matcher(params::put_market)),
    m("order.pending", 203, Matcher(params::order_pending)),
    m("order.cancel", 204, Matcher(params::order_cancel)),
    m("order.book", 205, Matcher(params::order_book)),
    m("order.depth", 206, Matcher(params::order_depth)),
    m("order.pending_detail", 207, Matcher(params::order_pending_detail)),
    m("order.finished", 208, History),
    m("order.deals", 209, History),
    m("order.finished_detail", 210, History),
    m("order.cancel_all", 211, Matcher(params::order_cancel_all)),
    m("order.amend", 212, Matcher(params::order_amend)),
    m("market.status", 301, MarketData),
    m("market.kline", 302, MarketData),
    m("market.deals", 303, MarketData),
    m("market.last", 304, MarketData),
    m("market.status_today", 305, MarketData),
    m("market.user_deals", 306, History),
    m("market.list", 307, Matcher(params::market_list)),
    m("market.summary", 308, Matcher(params::market_summary)),
];

/// The names a command is counted under (the metrics): its method's, and for the binary order
/// entry's cancel by client order id, `order.cancel_by_client_id`.
pub const COMMAND_NAMES: [&str; 18] = [
    "balance.query",
    "balance.update",
    "asset.list",
    "asset.summary",
    "order.put_limit",
    "order.put_market",
    "order.cancel",
    "order.cancel_by_client_id",
    "order.book",
    "order.depth",
    "order.pending",
    "order.pending_detail",
    "market.list",
    "market.summary",
    "order.cancel_all",
    "order.amend",
    "order.cancel_ended_sessions",
    "order.status",
];

/// The index of `cmd`'s name in [`COMMAND_NAMES`].
pub fn command_index(cmd: &Command) -> usize {
    match cmd {
        Command::BalanceQuery { .. } => 0,
        Command::BalanceUpdate { .. } => 1,
        Command::AssetList => 2,
        Command::AssetSummary { .. } => 3,
        Command::PutLimit(_) => 4,
        Command::PutMarket(_) => 5,
        Command::Cancel { .. } => 6,
        Command::CancelByClientId { .. } => 7,
        Command::OrderBook { .. } => 8,
        Command::OrderDepth { .. } => 9,
        Command::OrderPending { .. } => 10,
        Command::OrderPendingDetail { .. } => 11,
        Command::MarketList => 12,
        Command::MarketSummary { .. } => 13,
        Command::CancelAll { .. } => 14,
        Command::Amend(_) => 15,
        Command::CancelEndedSessions { .. } => 16,
        Command::OrderStatus { .. } => 17,
    }
}

/// The method of this name.
pub fn method(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// The method of this ViaBTC command number.
pub fn by_command(command: u32) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.command == command)
}

/// What a request to `name` becomes: a command for the matcher, or a query for `owner`.
pub enum Routed {
    Command(Command),
    Query(Owner),
}

/// Routes and, for the matcher, decodes one request: error 4 (method not found) for a name not in
/// the table, the decoder's error for params it refuses.
pub fn route(spec: &Spec, name: &str, params: &[Value]) -> Result<Routed, RpcError> {
    method(name).ok_or(RpcError::MethodNotFound)?.route(spec, params)
}

/// Decodes a request to one of the matcher's methods into its command. Error 4 for any other
/// method, error 1 for params its decoder refuses.
pub fn decode(spec: &Spec, method: &str, params: &[Value]) -> Result<Command, RpcError> {
    match self::method(method).map(|m| m.owner) {
        Some(Owner::Matcher(decode)) => decode(spec, params),
        _ => Err(RpcError::MethodNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and command numbers are each unique, and a name finds its own row.
    #[test]
    fn the_table_has_one_row_per_name_and_number() {
        for (i, a) in METHODS.iter().enumerate() {
            for b in &METHODS[i + 1..] {
                assert!(a.name != b.name && a.command != b.command, "{a:?} and {b:?}");
            }
            assert_eq!(by_command(a.command).map(|m| m.name), Some(a.name));
            assert_eq!(method(a.name).map(|m| m.command), Some(a.command));
        }
    }

    /// `decode` takes the matcher's methods alone, each to its own command.
    #[test]
    fn decode_answers_the_matchers_methods_and_error_4_for_the_rest() {
        let spec = Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        let none: &[Value] = &[];
        assert!(matches!(decode(&spec, "market.list", none), Ok(Command::MarketList)));
        assert!(matches!(decode(&spec, "asset.list", none), Ok(Command::AssetList)));
        for name in ["market.last", "order.history", "no.such", ""] {
            assert_eq!(decode(&spec, name, none).unwrap_err(), RpcError::MethodNotFound, "{name}");
        }
        let cancel = serde_json::json!([1, "BTCBCH", 7]);
        assert!(matches!(
            decode(&spec, "order.cancel", cancel.as_array().unwrap()),
            Ok(Command::Cancel { user: 1, order_id: 7, .. })
        ));
        assert_eq!(decode(&spec, "order.cancel", none).unwrap_err(), RpcError::InvalidArgument);
    }
}
