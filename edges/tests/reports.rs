//! Execution reports built from what the matcher did.

use serde_json::json;
use viaduct_edges::binary::{reports, ServerMsg, CANCEL_DEAL_CAP};
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Command, Events, Matcher, Spec, DEALS_PER_ORDER_MAX};
use viaduct_protocol::decode;

/// A limit order that reaches the deal cap is reported filled that many times, then CANCELLED
/// with reason 3 for its rest, which does not rest on the book.
#[test]
fn a_limit_order_past_the_deal_cap_is_reported_cancelled_for_its_rest() {
    let spec = Spec::new(&embedded()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let mut events = Events::default();
    let apply = |m: &mut Matcher, events: &mut Events, cmd: &Command| {
        events.clear();
        m.apply(1, cmd, events)
    };
    let call = |method: &str, params: serde_json::Value| decode(&spec, method, params.as_array().unwrap()).unwrap();
    apply(&mut m, &mut events, &call("balance.update", json!([1, "BTC", "deposit", 1, "1000", {}]))).unwrap();
    apply(&mut m, &mut events, &call("balance.update", json!([2, "BCH", "deposit", 1, "1000", {}]))).unwrap();
    let ask = call("order.put_limit", json!([1, "BTCBCH", 1, "0.001", "1", "0", "0", "x"]));
    for _ in 0..DEALS_PER_ORDER_MAX + 3 {
        apply(&mut m, &mut events, &ask).unwrap();
    }
    let Command::PutLimit(mut bid) = call("order.put_limit", json!([2, "BTCBCH", 2, "11", "1", "0", "0", "x"])) else {
        unreachable!()
    };
    bid.client_id = 42;
    let bid = Command::PutLimit(bid);
    let outcome = apply(&mut m, &mut events, &bid);
    let mut out = Vec::new();
    reports(&spec, &bid, &outcome, &events, &mut out);
    let filled = out.iter().filter(|r| matches!(r, ServerMsg::Filled { .. })).count();
    assert_eq!(filled, DEALS_PER_ORDER_MAX as usize);
    // 11 BTC asked, 10 bought (10,000 × 0.001): 1 BTC cancelled, at 8 decimals.
    assert!(
        matches!(out.last(), Some(ServerMsg::Cancelled { client_id: 42, why, left: 100_000_000, .. }) if *why == CANCEL_DEAL_CAP),
        "{:?}",
        out.last()
    );
}

/// Decodes a JSON-RPC request into its command.
fn caller(spec: &Spec) -> impl Fn(&str, serde_json::Value) -> Command + '_ {
    |method, params| decode(spec, method, params.as_array().unwrap()).unwrap()
}

/// A matcher of `spec` that applies a command and gives the reports its caller gets.
fn reporter(spec: &Spec) -> impl FnMut(&Command) -> Vec<ServerMsg> + '_ {
    let (mut m, mut events) = (Matcher::new(spec.clone()), Events::default());
    move |cmd| {
        events.clear();
        let outcome = m.apply(1, cmd, &mut events);
        let mut out = Vec::new();
        reports(spec, cmd, &outcome, &events, &mut out);
        out
    }
}

/// PROTOCOL.md, FILLED: `fee_scale` is `stock.prec + fee_prec` for a bid (its fee is stock) and
/// `stock.prec + money.prec + fee_prec` for an ask (money); `BTCBCH` (8, 8, fee_prec 4): 12 and 20,
/// and a 0.0002 fee reads 200000000 and 20000000000000000.
#[test]
fn a_fills_fee_is_at_the_documented_scale_of_the_asset_received() {
    let spec = Spec::new(&embedded()).unwrap();
    let (call, mut apply) = (caller(&spec), reporter(&spec));
    apply(&call("balance.update", json!([1, "BTC", "deposit", 1, "10", {}])));
    apply(&call("balance.update", json!([2, "BCH", "deposit", 1, "10", {}])));
    // Each taker pays 0.002 of 0.1: 0.0002 of what it receives.
    apply(&call("order.put_limit", json!([1, "BTCBCH", 1, "0.1", "1", "0.002", "0.002", "x"])));
    let bid = apply(&call("order.put_limit", json!([2, "BTCBCH", 2, "0.1", "1", "0.002", "0.002", "x"])));
    let fee_of = |out: &[ServerMsg]| {
        out.iter().find_map(|r| match r {
            ServerMsg::Filled { fee, fee_scale, .. } => Some((*fee, *fee_scale)),
            _ => None,
        })
    };
    assert_eq!(fee_of(&bid), Some((200_000_000, 12)), "a bid's fee in BTC: {bid:?}");
    apply(&call("order.put_limit", json!([2, "BTCBCH", 2, "0.1", "1", "0.002", "0.002", "x"])));
    let ask = apply(&call("order.put_limit", json!([1, "BTCBCH", 1, "0.1", "1", "0.002", "0.002", "x"])));
    assert_eq!(fee_of(&ask), Some((20_000_000_000_000_000, 20)), "an ask's fee in BCH: {ask:?}");
}

/// PROTOCOL.md, NEW_MARKET: a bid's amount is the money to spend at `stock.prec` (ViaBTC's rule).
/// In a market with `stock.prec` 4 and `money.prec` 2, spending 12.5 is `125000`; ACCEPTED echoes
/// it as sent, a FILLED `left` is the money still to spend at the same scale, and the unspent rest
/// comes back in CANCELLED.
#[test]
fn a_market_bid_carries_its_money_at_the_stock_precision() {
    let mut config = embedded();
    config.markets.push(viaduct_matcher::config::MarketConfig {
        name: "BTCLTC".to_string(),
        stock: viaduct_matcher::config::MarketSide { name: "BTC".to_string(), prec: 4 },
        money: viaduct_matcher::config::MarketSide { name: "LTC".to_string(), prec: 2 },
        fee_prec: Some(2),
        min_amount: Some("0.01".to_string()),
    });
    let spec = Spec::new(&config).unwrap();
    let (call, mut apply) = (caller(&spec), reporter(&spec));
    apply(&call("balance.update", json!([1, "BTC", "deposit", 1, "10", {}])));
    apply(&call("balance.update", json!([2, "LTC", "deposit", 1, "100", {}])));
    // 1 BTC offered at 10.00 LTC.
    apply(&call("order.put_limit", json!([1, "BTCLTC", 1, "1", "10", "0", "0", "x"])));
    let market = viaduct_edges::binary::market_bytes("BTCLTC");
    let markets = spec.markets.len();
    let source = viaduct_matcher::order::Source::new("mm").unwrap();
    let trader = viaduct_edges::binary::Trader {
        user: 2,
        taker_fee: vec![0; markets],
        maker_fee: vec![0; markets],
        source,
        self_trade: Default::default(),
        id_window: Default::default(),
    };
    let msg = viaduct_edges::binary::ClientMsg::NewMarket {
        client_id: 5,
        market,
        side: 2,
        self_trade: 0,
        flags: 0,
        amount: 125_000,
    };
    let bid = viaduct_edges::binary::command(&spec, &trader, 0, &msg).unwrap();
    let out = apply(&bid);
    let [ServerMsg::Accepted { amount, kind: 2, .. }, ServerMsg::Filled { amount: bought, price, left, .. }, ServerMsg::Cancelled { left: rest, .. }] =
        out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(*amount, 125_000, "12.5 LTC at 4 decimals, as sent");
    assert_eq!((*bought, *price), (10_000, 1_000), "1 BTC at 4 decimals bought at 10.00");
    assert_eq!((*left, *rest), (25_000, 25_000), "2.5 LTC unspent, at 4 decimals");
}
