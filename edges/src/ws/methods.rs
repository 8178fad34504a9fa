//! The WebSocket methods (SPEC B3.2): how each maps onto the method table, the authentication
//! service or a subscription, with ViaBTC's parameter rules.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use viaduct_matcher::config::{AssetId, MarketId, Spec};
use viaduct_matcher::decimal;
use viaduct_matcher::RpcError;

use super::push::{Feed, FeedKind};
use super::WsConfig;
use crate::auth::Ask;

/// Where a WebSocket method goes.
pub(super) enum Route {
    /// Answered here: the `result` as JSON.
    Now(String),
    /// To the method-table method with these params.
    To(&'static str, Vec<Value>),
    /// To the authentication service, with the `source` to keep.
    Auth(Ask, String),
    /// A subscription to set.
    Subscribe(Subscription),
}

/// A subscription request.
pub(super) enum Subscription {
    /// Replaces the connection's feeds of this kind.
    Feeds(FeedKind, Vec<Feed>),
    Orders(Vec<MarketId>),
    Assets(Vec<AssetId>),
}

/// Names and sources longer than ViaBTC's buffers are refused with error 1 (SPEC B3.2).
const MARKET_LEN_MAX: usize = 15;
const ASSET_LEN_MAX: usize = 15;
const INTERVAL_LEN_MAX: usize = 15;
const SOURCE_LEN_MAX: usize = 31;

/// Whether `a` and `b` are the same number (`"0.10"` and `"0.1"`).
fn same_number(a: &str, b: &str) -> bool {
    const PREC: u32 = 18; // more digits than a 15-character interval can have
    matches!((decimal::parse(a, PREC), decimal::parse(b, PREC)), (Ok(x), Ok(y)) if x == y)
}

/// A subscription's markets (or assets): every param a known name, each taken once.
fn names<T: PartialEq>(params: &[Value], find: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, RpcError> {
    let mut out = Vec::with_capacity(params.len());
    for p in params {
        let id = p.as_str().filter(|n| n.len() <= MARKET_LEN_MAX).and_then(&find).ok_or(RpcError::InvalidArgument)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A subscription request, checked against the markets and assets `spec` knows and the depth
/// limits and merge intervals of `cfg` (SPEC B3.2).
fn subscription(spec: &Spec, cfg: &WsConfig, method: &str, params: &[Value]) -> Result<Subscription, RpcError> {
    let market = |name: &str| spec.market_id(name).map(|_| name.to_string());
    let one_market = || params.first().and_then(Value::as_str).and_then(market).ok_or(RpcError::InvalidArgument);
    let feeds = |kind: FeedKind, make: fn(String) -> Feed| -> Result<Subscription, RpcError> {
        Ok(Subscription::Feeds(kind, names(params, market)?.into_iter().map(make).collect()))
    };
    match method {
        "kline.subscribe" => {
            let market = one_market()?;
            let interval = params.get(1).and_then(Value::as_u64).filter(|&i| i > 0).ok_or(RpcError::InvalidArgument)?;
            Ok(Subscription::Feeds(FeedKind::Kline, vec![Feed::Kline { market, interval }]))
        }
        "depth.subscribe" => {
            let market = one_market()?;
            let limit = params.get(1).and_then(Value::as_u64).filter(|l| cfg.depth_limits.contains(l));
            let interval = params.get(2).and_then(Value::as_str).filter(|i| i.len() <= INTERVAL_LEN_MAX);
            let merged = interval.filter(|i| cfg.depth_merges.iter().any(|m| same_number(m, i)));
            let (Some(limit), Some(interval)) = (limit, merged) else { return Err(RpcError::InvalidArgument) };
            let interval = interval.to_string();
            Ok(Subscription::Feeds(FeedKind::Depth, vec![Feed::Depth { market, limit, interval }]))
        }
        "price.subscribe" => feeds(FeedKind::Price, Feed::Price),
        "state.subscribe" => feeds(FeedKind::State, Feed::State),
        "today.subscribe" => feeds(FeedKind::Today, Feed::Today),
        "deals.subscribe" => feeds(FeedKind::Deals, Feed::Deals),
        "order.subscribe" => Ok(Subscription::Orders(names(params, |n| spec.market_id(n))?)),
        "asset.subscribe" => Ok(Subscription::Assets(names(params, |n| spec.asset_id(n))?)),
        "kline.unsubscribe" => Ok(Subscription::Feeds(FeedKind::Kline, Vec::new())),
        "depth.unsubscribe" => Ok(Subscription::Feeds(FeedKind::Depth, Vec::new())),
        "price.unsubscribe" => Ok(Subscription::Feeds(FeedKind::Price, Vec::new())),
        "state.unsubscribe" => Ok(Subscription::Feeds(FeedKind::State, Vec::new())),
        "today.unsubscribe" => Ok(Subscription::Feeds(FeedKind::Today, Vec::new())),
        "deals.unsubscribe" => Ok(Subscription::Feeds(FeedKind::Deals, Vec::new())),
        "order.unsubscribe" => Ok(Subscription::Orders(Vec::new())),
        "asset.unsubscribe" => Ok(Subscription::Assets(Vec::new())),
        _ => Err(RpcError::MethodNotFound),
    }
}

/// A WebSocket method and its params, as SPEC B3.2 maps them onto the method table; `user` is
/// the connection's, once authenticated.
pub(super) fn ws_method(
    spec: &Spec,
    cfg: &WsConfig,
    method: &str,
    params: Vec<Value>,
    user: Option<u32>,
) -> Result<Route, RpcError> {
    let market_ok = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|m| m.len() <= MARKET_LEN_MAX);
    let to = |target: &'static str| Ok(Route::To(target, params.clone()));
    // The user's methods take the connection's user as their first param.
    let as_user = |target: &'static str, user: u32| {
        let mut p = Vec::with_capacity(params.len() + 1);
        p.push(Value::from(user));
        p.extend(params.iter().cloned());
        Ok(Route::To(target, p))
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match method {
        "server.ping" => Ok(Route::Now(r#""pong""#.to_string())),
        "server.time" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            Ok(Route::Now(now.to_string()))
        }
        "kline.query" | "price.query" | "state.query" | "today.query" | "deals.query" if !market_ok(params.first()) => {
            Err(RpcError::InvalidArgument)
        }
        "kline.query" => to("market.kline"),
        "price.query" => to("market.last"),
        "state.query" => to("market.status"),
        "today.query" => to("market.status_today"),
        "deals.query" => to("market.deals"),
        "depth.query" => {
            let interval_ok = params.get(2).and_then(Value::as_str).is_some_and(|i| i.len() <= INTERVAL_LEN_MAX);
            if !market_ok(params.first()) || !interval_ok {
                return Err(RpcError::InvalidArgument);
            }
            to("order.depth")
        }
        "server.auth" => {
            let (Some(token), Some(source), 2) = (text(params.first()), text(params.get(1)), params.len()) else {
                return Err(RpcError::InvalidArgument);
            };
            if source.len() > SOURCE_LEN_MAX {
                return Err(RpcError::InvalidArgument);
            }
            Ok(Route::Auth(Ask::Token { token }, source))
        }
        "server.sign" => {
            let (Some(access_id), Some(authorisation), Some(tonce), 3) =
                (text(params.first()), text(params.get(1)), params.get(2).and_then(Value::as_i64), params.len())
            else {
                return Err(RpcError::InvalidArgument);
            };
            if tonce == 0 {
                return Err(RpcError::InvalidArgument);
            }
            Ok(Route::Auth(Ask::Sign { access_id, authorisation, tonce }, "api".to_string()))
        }
        "order.query" | "order.history" | "order.subscribe" | "order.unsubscribe" | "asset.query" | "asset.history"
        | "asset.subscribe" | "asset.unsubscribe"
            if user.is_none() =>
        {
            Err(RpcError::RequireAuthentication)
        }
        "order.query" => {
            let ints = params.get(1).is_some_and(Value::is_u64) && params.get(2).is_some_and(Value::is_u64);
            if params.len() != 3 || !market_ok(params.first()) || !ints {
                return Err(RpcError::InvalidArgument);
            }
            as_user("order.pending", user.unwrap_or(0))
        }
        "order.history" if params.len() != 6 || !market_ok(params.first()) => Err(RpcError::InvalidArgument),
        "order.history" => as_user("order.finished", user.unwrap_or(0)),
        "asset.query" => {
            if !params.iter().all(|a| a.as_str().is_some_and(|a| a.len() <= ASSET_LEN_MAX)) {
                return Err(RpcError::InvalidArgument);
            }
            as_user("balance.query", user.unwrap_or(0))
        }
        "asset.history" => {
            let asset_ok = params.first().and_then(Value::as_str).is_some_and(|a| a.len() <= ASSET_LEN_MAX);
            if params.len() != 6 || !asset_ok {
                return Err(RpcError::InvalidArgument);
            }
            as_user("balance.history", user.unwrap_or(0))
        }
        m if m.ends_with(".subscribe") || m.ends_with(".unsubscribe") => {
            subscription(spec, cfg, m, &params).map(Route::Subscribe)
        }
        _ => Err(RpcError::MethodNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(method: &str, params: Value) -> Result<Route, RpcError> {
        let spec = Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        let cfg = WsConfig::new("127.0.0.1:0".parse().unwrap());
        ws_method(&spec, &cfg, method, params.as_array().unwrap().clone(), None)
    }

    #[test]
    fn queries_map_onto_their_owners_methods_with_the_same_params() {
        for (ws, target, params) in [
            ("kline.query", "market.kline", json!(["BTCBCH", 1, 2, 60])),
            ("depth.query", "order.depth", json!(["BTCBCH", 10, "0"])),
            ("price.query", "market.last", json!(["BTCBCH"])),
            ("state.query", "market.status", json!(["BTCBCH", 86400])),
            ("today.query", "market.status_today", json!(["BTCBCH"])),
            ("deals.query", "market.deals", json!(["BTCBCH", 10, 0])),
        ] {
            match route(ws, params.clone()) {
                Ok(Route::To(t, p)) => assert_eq!((t, Value::Array(p)), (target, params), "{ws}"),
                _ => panic!("{ws} did not route"),
            }
        }
    }

    #[test]
    fn long_names_user_methods_and_unknown_methods_are_refused() {
        let long = "M".repeat(16);
        assert_eq!(route("price.query", json!([long])).err(), Some(RpcError::InvalidArgument));
        assert_eq!(
            route("depth.query", json!(["BTCBCH", 10, "0.0000000000000001"])).err(),
            Some(RpcError::InvalidArgument)
        );
        assert_eq!(route("price.query", json!([])).err(), Some(RpcError::InvalidArgument));
        assert_eq!(route("asset.query", json!(["BTC"])).err(), Some(RpcError::RequireAuthentication));
        assert_eq!(route("order.query", json!(["BTCBCH", 0, 10])).err(), Some(RpcError::RequireAuthentication));
        assert_eq!(route("no.such", json!([])).err(), Some(RpcError::MethodNotFound));
        assert!(matches!(route("server.ping", json!([])), Ok(Route::Now(p)) if p == r#""pong""#));
    }
}
