//! The one method table: every JSON-RPC method the engine serves, with its ViaBTC command number
//! (the framed TCP RPC's `command`, SPEC B2.2), the stage that owns it, and, for the matcher's
//! methods, the decoder of its params into a typed [`Command`]. The HTTP edge, the framed TCP RPC
//! and the engine's clients route through it and nothing else.

use serde_json::Value;
use viaduct_matcher::command as decoders;
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

/// Every method served, by command number.
pub const METHODS: [Method; 23] = [
    m("balance.query", 101, Matcher(decoders::balance_query)),
    m("balance.update", 102, Matcher(decoders::balance_update)),
    m("balance.history", 103, History),
    m("asset.list", 104, Matcher(decoders::asset_list)),
    m("asset.summary", 105, Matcher(decoders::asset_summary)),
    m("order.put_limit", 201, Matcher(decoders::put_limit)),
    m("order.put_market", 202, Matcher(decoders::put_market)),
    m("order.pending", 203, Matcher(decoders::order_pending)),
    m("order.cancel", 204, Matcher(decoders::order_cancel)),
    m("order.book", 205, Matcher(decoders::order_book)),
    m("order.depth", 206, Matcher(decoders::order_depth)),
    m("order.pending_detail", 207, Matcher(decoders::order_pending_detail)),
    m("order.finished", 208, History),
    m("order.deals", 209, History),
    m("order.finished_detail", 210, History),
    m("market.status", 301, MarketData),
    m("market.kline", 302, MarketData),
    m("market.deals", 303, MarketData),
    m("market.last", 304, MarketData),
    m("market.status_today", 305, MarketData),
    m("market.user_deals", 306, History),
    m("market.list", 307, Matcher(decoders::market_list)),
    m("market.summary", 308, Matcher(decoders::market_summary)),
];

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and command numbers are each unique, and every matcher method's decoder is the one
    /// `viaduct_matcher::decode` uses for that name.
    #[test]
    fn the_table_has_one_row_per_name_and_number_and_agrees_with_the_matcher() {
        for (i, a) in METHODS.iter().enumerate() {
            for b in &METHODS[i + 1..] {
                assert!(a.name != b.name && a.command != b.command, "{a:?} and {b:?}");
            }
            assert_eq!(by_command(a.command).map(|m| m.name), Some(a.name));
        }
        let mut matcher: Vec<&str> = METHODS.iter().filter(|m| m.is_matcher()).map(|m| m.name).collect();
        let mut decoded = viaduct_matcher::command::METHODS.to_vec();
        matcher.sort_unstable();
        decoded.sort_unstable();
        assert_eq!(matcher, decoded);
        let spec = Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        let params = serde_json::json!([1, "BTC"]);
        let params = params.as_array().unwrap();
        for m in METHODS.iter().filter(|m| m.is_matcher()) {
            let Owner::Matcher(decode) = m.owner else { unreachable!() };
            assert_eq!(
                format!("{:?}", decode(&spec, params)),
                format!("{:?}", viaduct_matcher::decode(&spec, m.name, params)),
                "{}",
                m.name
            );
        }
    }
}
