//! ViaBTC's JSON-RPC params decoded into typed commands (SPEC B2.4), one decoder per matcher
//! method ([`crate::METHODS`] names each one's).
//!
//! Everything that can be checked without the matcher's state is checked here, so that every edge
//! shares one decoder: param count and types, known market and asset, side, decimals truncated to
//! their precision and range-checked, fee rates, `source` length, paging limits.

use serde_json::Value;
use viaduct_matcher::command::{
    Amend, OrderOptions, PutLimit, PutMarket, SelfTrade, TimeInForce, BUSINESS_LEN_MAX, DETAIL_LEN_MAX,
    ORDER_MANTISSA_MAX, QUERY_LIMIT_MAX,
};
use viaduct_matcher::config::{AssetId, MarketId, SUPPLY_MAX};
use viaduct_matcher::decimal::{self, pow10};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::{Command, RpcError, Spec};

type Res<T> = Result<T, RpcError>;
const BAD: RpcError = RpcError::InvalidArgument;

/// `asset.list` (params ignored, as ViaBTC does).
pub fn asset_list(_: &Spec, _: &[Value]) -> Res<Command> {
    Ok(Command::AssetList)
}

/// `asset.summary`: asset names, none for all.
pub fn asset_summary(spec: &Spec, params: &[Value]) -> Res<Command> {
    Ok(Command::AssetSummary { assets: each(params, |v| asset(spec, v))? })
}

/// `order.cancel`: user, market, order id.
pub fn order_cancel(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [u, m, id] = exact(params)?;
    Ok(Command::Cancel { user: user(u)?, market: market(spec, m)?, order_id: uint(id)? })
}

/// `order.book`: market, side, offset, limit.
pub fn order_book(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [m, s, off, lim] = exact(params)?;
    Ok(Command::OrderBook { market: market(spec, m)?, side: side(s)?, offset: uint(off)?, limit: limit(lim)? })
}

/// `order.pending`: user, market, offset, limit.
pub fn order_pending(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [u, m, off, lim] = exact(params)?;
    Ok(Command::OrderPending { user: user(u)?, market: market(spec, m)?, offset: uint(off)?, limit: limit(lim)? })
}

/// `order.pending_detail`: market, order id.
pub fn order_pending_detail(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [m, id] = exact(params)?;
    Ok(Command::OrderPendingDetail { market: market(spec, m)?, order_id: uint(id)? })
}

/// `market.list` (params ignored).
pub fn market_list(_: &Spec, _: &[Value]) -> Res<Command> {
    Ok(Command::MarketList)
}

/// `market.summary`: market names, none for all.
pub fn market_summary(spec: &Spec, params: &[Value]) -> Res<Command> {
    Ok(Command::MarketSummary { markets: each(params, |v| market(spec, v))? })
}

/// `balance.query`: user, then asset names (none for all).
pub fn balance_query(spec: &Spec, params: &[Value]) -> Res<Command> {
    let (first, rest) = params.split_first().ok_or(BAD)?;
    let user = user(first)?;
    if user == 0 {
        return Err(BAD);
    }
    Ok(Command::BalanceQuery { user, assets: each(rest, |v| asset(spec, v))? })
}

/// `balance.update`: user, asset, business, business id, change, detail.
pub fn balance_update(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [u, a, business, business_id, change, detail] = exact(params)?;
    let asset = asset(spec, a)?;
    let business = string(business)?;
    if business.len() > BUSINESS_LEN_MAX {
        return Err(BAD);
    }
    let Value::Object(_) = detail else { return Err(BAD) };
    let detail = serde_json::to_string(detail).map_err(|_| BAD)?;
    if detail.len() > DETAIL_LEN_MAX {
        return Err(BAD);
    }
    let a = spec.asset(asset);
    let shown = decimal::parse(string(change)?, a.prec_show).map_err(|_| BAD)?;
    let change = shown.checked_mul(pow10(a.prec_save - a.prec_show)).ok_or(BAD)?;
    if change.abs() > SUPPLY_MAX {
        return Err(BAD);
    }
    Ok(Command::BalanceUpdate {
        user: user(u)?,
        asset,
        business: business.to_string(),
        business_id: uint(business_id)?,
        change,
        detail,
    })
}

/// `order.cancel_all`: user, then optionally market, then optionally side.
pub fn order_cancel_all(spec: &Spec, params: &[Value]) -> Res<Command> {
    let (u, rest) = params.split_first().ok_or(BAD)?;
    let (market, side) = match rest {
        [] => (None, None),
        [m] => (Some(market(spec, m)?), None),
        [m, s] => (Some(market(spec, m)?), Some(side(s)?)),
        _ => return Err(BAD),
    };
    Ok(Command::CancelAll { user: user(u)?, market, side, session: None })
}

/// `order.amend`: user, market, order id, price, amount left (`null`: unchanged; not both).
pub fn order_amend(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [u, m, id, price, left] = exact(params)?;
    let market = market(spec, m)?;
    let mk = spec.market(market);
    let or_null = |v: &Value, prec| if v.is_null() { Ok(None) } else { positive(v, prec).map(Some) };
    let (price, left) = (or_null(price, mk.money_prec)?, or_null(left, mk.stock_prec)?);
    if price.is_none() && left.is_none() {
        return Err(BAD);
    }
    Ok(Command::Amend(Amend { user: user(u)?, market, order_id: uint(id)?, price, left }))
}

/// `order.put_limit`: ViaBTC's eight params, then optionally an object of options
/// (`time_in_force`, `post_only`, `self_trade`; see [`order_options`]).
pub fn put_limit(spec: &Spec, params: &[Value]) -> Res<Command> {
    let (params, options) = match params {
        [head @ .., last] if params.len() == 9 => (head, order_options(last)?),
        _ => (params, OrderOptions::default()),
    };
    let [u, m, s, amount, price, taker, maker, source] = exact(params)?;
    let market = market(spec, m)?;
    let mk = spec.market(market);
    Ok(Command::PutLimit(PutLimit {
        user: user(u)?,
        market,
        side: side(s)?,
        amount: positive(amount, mk.stock_prec)?,
        price: positive(price, mk.money_prec)?,
        taker_fee: fee_rate(taker, mk.fee_prec)?,
        maker_fee: fee_rate(maker, mk.fee_prec)?,
        source: self::source(source)?,
        client_id: 0,
        id_window: Default::default(),
        options,
        session: 0,
    }))
}

/// The options object of `order.put_limit`: `time_in_force` (`"GTC"`, the default, `"IOC"` or
/// `"FOK"`), `post_only` (a boolean, default false; only with GTC) and `self_trade`. Any other
/// key, or a value of another type, is an invalid argument: a misspelt option must not leave an
/// order that rests where its sender wanted none.
pub fn order_options(v: &Value) -> Res<OrderOptions> {
    let Value::Object(map) = v else { return Err(BAD) };
    let mut options = OrderOptions::default();
    for (key, value) in map {
        match key.as_str() {
            "time_in_force" => {
                options.time_in_force = match string(value)? {
                    "GTC" => TimeInForce::Gtc,
                    "IOC" => TimeInForce::Ioc,
                    "FOK" => TimeInForce::Fok,
                    _ => return Err(BAD),
                }
            }
            "post_only" => options.post_only = value.as_bool().ok_or(BAD)?,
            "self_trade" => options.self_trade = self_trade(value)?,
            _ => return Err(BAD),
        }
    }
    if !options.consistent() {
        return Err(BAD);
    }
    Ok(options)
}

/// A self-trade prevention mode: `"none"` (the default: ViaBTC's behaviour), `"cancel_taker"`,
/// `"cancel_maker"` or `"cancel_both"`.
pub fn self_trade(v: &Value) -> Res<SelfTrade> {
    match string(v)? {
        "none" => Ok(SelfTrade::Allow),
        "cancel_taker" => Ok(SelfTrade::CancelTaker),
        "cancel_maker" => Ok(SelfTrade::CancelMaker),
        "cancel_both" => Ok(SelfTrade::CancelBoth),
        _ => Err(BAD),
    }
}

/// `order.put_market`: ViaBTC's six params, then optionally an object of options:
/// `self_trade`, and `amount_in` (`"money"`, a bid's default, or `"stock"`: the bid buys that
/// much stock; an ask's amount is stock, so `"money"` is refused for it).
pub fn put_market(spec: &Spec, params: &[Value]) -> Res<Command> {
    let (params, self_trade, amount_in) = match params {
        [head @ .., Value::Object(map)] if params.len() == 7 => {
            let (mut mode, mut amount_in) = (SelfTrade::Allow, None);
            for (key, value) in map {
                match key.as_str() {
                    "self_trade" => mode = self::self_trade(value)?,
                    "amount_in" => amount_in = Some(string(value)?),
                    _ => return Err(BAD),
                }
            }
            (head, mode, amount_in)
        }
        _ => (params, SelfTrade::Allow, None),
    };
    let [u, m, s, amount, taker, source] = exact(params)?;
    let market = market(spec, m)?;
    let mk = spec.market(market);
    let side = side(s)?;
    let stock_amount = match (side, amount_in) {
        (_, None) => false,
        (_, Some("stock")) => true,
        (Side::Bid, Some("money")) => false,
        _ => return Err(BAD),
    };
    Ok(Command::PutMarket(PutMarket {
        user: user(u)?,
        market,
        side,
        amount: positive(amount, mk.stock_prec)?,
        stock_amount,
        taker_fee: fee_rate(taker, mk.fee_prec)?,
        source: self::source(source)?,
        client_id: 0,
        id_window: Default::default(),
        self_trade,
        session: 0,
    }))
}

/// `order.depth`: market, limit, interval.
pub fn order_depth(spec: &Spec, params: &[Value]) -> Res<Command> {
    let [m, lim, interval] = exact(params)?;
    let market = market(spec, m)?;
    let interval = decimal::parse(string(interval)?, spec.market(market).money_prec).map_err(|_| BAD)?;
    if interval < 0 {
        return Err(BAD);
    }
    Ok(Command::OrderDepth { market, limit: limit(lim)?, interval })
}

fn exact<const N: usize>(params: &[Value]) -> Res<&[Value; N]> {
    params.try_into().map_err(|_| BAD)
}

fn each<T>(params: &[Value], f: impl Fn(&Value) -> Res<T>) -> Res<Vec<T>> {
    params.iter().map(f).collect()
}

fn string(v: &Value) -> Res<&str> {
    v.as_str().ok_or(BAD)
}

fn uint(v: &Value) -> Res<u64> {
    v.as_u64().ok_or(BAD)
}

fn user(v: &Value) -> Res<u32> {
    u32::try_from(uint(v)?).map_err(|_| BAD)
}

fn limit(v: &Value) -> Res<u32> {
    match uint(v)? {
        n if n <= u64::from(QUERY_LIMIT_MAX) => Ok(n as u32),
        _ => Err(BAD),
    }
}

fn side(v: &Value) -> Res<Side> {
    v.as_i64().and_then(Side::from_code).ok_or(BAD)
}

fn market(spec: &Spec, v: &Value) -> Res<MarketId> {
    spec.market_id(string(v)?).ok_or(BAD)
}

fn asset(spec: &Spec, v: &Value) -> Res<AssetId> {
    spec.asset_id(string(v)?).ok_or(BAD)
}

/// A price or amount: positive, at most [`ORDER_MANTISSA_MAX`] at `prec`.
fn positive(v: &Value, prec: u32) -> Res<i128> {
    match decimal::parse(string(v)?, prec) {
        Ok(m) if (1..=ORDER_MANTISSA_MAX).contains(&m) => Ok(m),
        _ => Err(BAD),
    }
}

fn fee_rate(v: &Value, prec: u32) -> Res<u32> {
    match decimal::parse(string(v)?, prec) {
        Ok(m) if (0..pow10(prec)).contains(&m) => Ok(m as u32),
        _ => Err(BAD),
    }
}

fn source(v: &Value) -> Res<Source> {
    Source::new(string(v)?).ok_or(BAD)
}
