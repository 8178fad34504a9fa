//! What market makers expect of order entry, in the matcher, through the JSON interface: time in
//! force, post-only, self-trade prevention, amend and mass cancel (README "Order options").
//! Each refusal changes nothing (`Engine::err` checks the state hash and the events).

mod common;

use common::Engine;
use serde_json::{json, Value};
use viaduct_matcher::event::OrderEventKind;
use viaduct_matcher::Event;

const ASK: u8 = 1;
const BID: u8 = 2;

/// Users 1 and 2 funded in both assets of BTCBCH; user 1 offers 1 BTC at 0.1 and 1 at 0.2.
fn book() -> Engine {
    let mut e = Engine::new();
    for user in [1, 2] {
        e.deposit(user, "BTC", "100");
        e.deposit(user, "BCH", "100");
    }
    e.limit(1, ASK, "1", "0.1");
    e.limit(1, ASK, "1", "0.2");
    e
}

fn put(e: &mut Engine, user: u32, side: u8, amount: &str, price: &str, options: Value) -> Value {
    e.call("order.put_limit", json!([user, "BTCBCH", side, amount, price, "0", "0", "mm", options]))
}

/// Ids of the orders resting on `side`, in priority order.
fn side_ids(e: &mut Engine, side: u8) -> Vec<u64> {
    let r = e.ok("order.book", json!(["BTCBCH", side, 0, 100]));
    r["orders"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect()
}

fn finished(e: &Engine) -> Vec<u64> {
    e.events
        .iter()
        .filter_map(|ev| match ev {
            Event::Order { kind: OrderEventKind::Finish, order } => Some(order.id),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ioc_order_trades_what_it_can_and_never_rests() {
    let mut e = book();
    let r = put(&mut e, 2, BID, "1.5", "0.1", json!({"time_in_force": "IOC"}));
    assert_eq!((r["result"]["deal_stock"].as_str(), r["result"]["left"].as_str()), (Some("1"), Some("0.5")));
    assert!(side_ids(&mut e, BID).is_empty(), "its rest does not rest");
    assert_eq!(e.balance(2, "BCH"), ("99.9".into(), "0".into()), "nothing stays frozen");
    // With nothing to trade, it is finished at once.
    let r = put(&mut e, 2, BID, "1", "0.05", json!({"time_in_force": "IOC"}));
    assert_eq!(r["result"]["deal_stock"], "0");
    assert!(side_ids(&mut e, BID).is_empty());
}

#[test]
fn a_fok_order_fills_completely_or_changes_nothing() {
    let mut e = book();
    let fok = json!({"time_in_force": "FOK"});
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", BID, "2.5", "0.2", "0", "0", "mm", fok])), 15);
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", BID, "1.5", "0.1", "0", "0", "mm", fok])), 15);
    let r = put(&mut e, 2, BID, "1.5", "0.2", fok.clone());
    assert_eq!((r["result"]["deal_stock"].as_str(), r["result"]["left"].as_str()), (Some("1.5"), Some("0")));
    // User 1's own resting rest does not count when self-trade prevention would stop the order.
    let stp = json!({"time_in_force": "FOK", "self_trade": "cancel_taker"});
    assert_eq!(e.err("order.put_limit", json!([1, "BTCBCH", BID, "0.1", "0.2", "0", "0", "mm", stp])), 15);
}

#[test]
fn a_post_only_order_that_would_take_is_refused() {
    let mut e = book();
    let post = json!({"post_only": true});
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", BID, "1", "0.1", "0", "0", "mm", post])), 14);
    let r = put(&mut e, 2, BID, "1", "0.09", post.clone());
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(side_ids(&mut e, BID), [r["result"]["id"].as_u64().unwrap()]);
    // Post-only with IOC or FOK, an unknown option or value: invalid argument.
    for bad in [
        json!({"post_only": true, "time_in_force": "IOC"}),
        json!({"time_in_force": "DAY"}),
        json!({"post_only": "yes"}),
        json!({"expire": 5}),
        json!({"self_trade": "cancel_newest"}),
        json!("IOC"),
    ] {
        assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", BID, "1", "0.01", "0", "0", "mm", bad])), 1, "{bad}");
    }
}

#[test]
fn self_trade_prevention_cancels_the_taker_the_maker_or_both() {
    // User 1 bids against its own ask at 0.1 (id 1), behind which user 2 offers at 0.1 too.
    let setup = || {
        let mut e = book();
        e.limit(2, ASK, "1", "0.1");
        e
    };
    let mut e = setup();
    let r = put(&mut e, 1, BID, "0.5", "0.1", json!({"self_trade": "none"}));
    assert_eq!(r["result"]["deal_stock"], "0.5", "ViaBTC's behaviour: it trades with itself");

    let mut e = setup();
    let r = put(&mut e, 1, BID, "0.5", "0.1", json!({"self_trade": "cancel_taker"}));
    assert_eq!((r["result"]["deal_stock"].as_str(), r["result"]["left"].as_str()), (Some("0"), Some("0.5")));
    assert_eq!(side_ids(&mut e, ASK), [1, 3, 2], "the resting orders stay");
    assert!(side_ids(&mut e, BID).is_empty(), "the taker's rest is cancelled");

    let mut e = setup();
    let r = put(&mut e, 1, BID, "0.5", "0.1", json!({"self_trade": "cancel_maker"}));
    assert_eq!(finished(&e)[0], 1, "the own resting order is cancelled");
    assert_eq!(r["result"]["deal_stock"], "0.5", "and it trades with the next one");
    assert_eq!(side_ids(&mut e, ASK), [3, 2]);
    assert_eq!(e.balance(1, "BTC"), ("99.5".into(), "1".into()), "order 1's 1 BTC is back, and 0.5 bought");

    let mut e = setup();
    let r = put(&mut e, 1, BID, "0.5", "0.1", json!({"self_trade": "cancel_both"}));
    assert_eq!(
        (r["result"]["deal_stock"].as_str(), finished(&e)),
        (Some("0"), vec![1, r["result"]["id"].as_u64().unwrap()])
    );
    assert_eq!(side_ids(&mut e, ASK), [3, 2]);
    assert!(side_ids(&mut e, BID).is_empty());

    // A market order too.
    let mut e = setup();
    let r = e.ok("order.put_market", json!([1, "BTCBCH", BID, "0.05", "0", "mm", {"self_trade": "cancel_maker"}]));
    assert_eq!(r["deal_stock"], "0.5");
    assert_eq!(side_ids(&mut e, ASK), [3, 2]);
    assert_eq!(e.err("order.put_market", json!([1, "BTCBCH", BID, "0.05", "0", "mm", {"time_in_force": "IOC"}])), 1);
}

#[test]
fn amend_keeps_priority_only_for_a_smaller_amount_at_the_same_price() {
    let mut e = book();
    e.limit(2, ASK, "1", "0.1"); // id 3, behind id 1
                                 // Smaller at the same price: in place, first still.
    let r = e.ok("order.amend", json!([1, "BTCBCH", 1, null, "0.4"]));
    assert_eq!((r["id"].as_u64(), r["left"].as_str(), r["amount"].as_str()), (Some(1), Some("0.4"), Some("0.4")));
    assert_eq!(side_ids(&mut e, ASK), [1, 3, 2]);
    assert_eq!(e.balance(1, "BTC"), ("98.6".into(), "1.4".into()));
    // Larger: a new order (id 4) at the back of the level.
    let r = e.ok("order.amend", json!([1, "BTCBCH", 1, null, "0.6"]));
    assert_eq!((r["id"].as_u64(), r["left"].as_str()), (Some(4), Some("0.6")));
    assert_eq!(side_ids(&mut e, ASK), [3, 4, 2]);
    assert_eq!(e.balance(1, "BTC"), ("98.4".into(), "1.6".into()));
    // A new price: a new order again, at its own level.
    let r = e.ok("order.amend", json!([1, "BTCBCH", 4, "0.15", null]));
    assert_eq!((r["id"].as_u64(), r["price"].as_str(), r["left"].as_str()), (Some(5), Some("0.15"), Some("0.6")));
    assert_eq!(side_ids(&mut e, ASK), [3, 5, 2]);
    // An amend never trades; refusals change nothing.
    e.limit(2, BID, "1", "0.05");
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 5, "0.05", null])), 14);
    assert_eq!(e.err("order.amend", json!([2, "BTCBCH", 5, "0.12", null])), 11, "another user's order");
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 99, "0.12", null])), 10, "no such order");
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 5, null, "1000"])), 10, "balance not enough");
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 5, null, "0.0001"])), 11, "amount too small");
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 5, null, null])), 1);
    assert_eq!(e.err("order.amend", json!([1, "BTCBCH", 5, "0", null])), 1);
    // The same values: the order as it is.
    let r = e.ok("order.amend", json!([1, "BTCBCH", 5, "0.15", "0.6"]));
    assert_eq!(r["id"], 5);
    assert!(e.events.is_empty());
    e.m.check_invariants().unwrap();
}

#[test]
fn cancel_all_cancels_by_user_market_and_side_in_one_command() {
    let mut e = book();
    e.limit(1, BID, "1", "0.05");
    e.limit(1, BID, "1", "0.04");
    e.limit(2, BID, "1", "0.03");
    e.deposit(1, "ETH", "10");
    e.ok("order.put_limit", json!([1, "ETHBCH", ASK, "1", "1", "0", "0", "mm"]));
    assert_eq!(e.ok("order.cancel_all", json!([1, "BTCBCH", BID])), json!({"count": 2}));
    assert_eq!(finished(&e), [3, 4], "oldest first");
    assert_eq!(side_ids(&mut e, BID), [5], "user 2's order stays");
    assert_eq!(e.ok("order.cancel_all", json!([1, "BTCBCH"])), json!({"count": 2}));
    assert_eq!(e.ok("order.cancel_all", json!([1])), json!({"count": 1}), "the ETHBCH order");
    assert_eq!(e.ok("order.cancel_all", json!([1])), json!({"count": 0}));
    assert_eq!(e.balance(1, "BTC"), ("100".into(), "0".into()));
    for bad in [json!([]), json!([1, "NOPE"]), json!([1, "BTCBCH", 3]), json!([1, "BTCBCH", 1, 0])] {
        assert_eq!(e.err("order.cancel_all", bad.clone()), 1, "{bad}");
    }
    e.m.check_invariants().unwrap();
}

/// One `order.cancel_all` cancels at most `CANCELS_PER_COMMAND_MAX` orders (one command's work
/// stays bounded); the reply says so, and the next one cancels the rest.
#[test]
fn cancel_all_cancels_at_most_its_bound_per_command() {
    use viaduct_matcher::command::PutLimit;
    use viaduct_matcher::order::{Side, Source};
    use viaduct_matcher::{Command, Events, Reply, CANCELS_PER_COMMAND_MAX};
    let mut e = Engine::new();
    e.deposit(1, "BTC", "100000");
    let mut events = Events::default();
    let n = CANCELS_PER_COMMAND_MAX + 2;
    for i in 0..n {
        let cmd = Command::PutLimit(PutLimit {
            user: 1,
            market: 0,
            side: Side::Ask,
            amount: 1_000_000,
            price: 10_000_000 + (i % 1000) as i128,
            taker_fee: 0,
            maker_fee: 0,
            source: Source::EMPTY,
            client_id: 0,
            id_window: Default::default(),
            options: Default::default(),
            session: 0,
        });
        e.m.apply(e.now, &cmd, &mut events).unwrap();
        events.clear();
    }
    let all = Command::CancelAll { user: 1, market: None, side: None, session: None };
    assert_eq!(e.m.apply(e.now, &all, &mut events), Ok(Reply::Cancelled { count: CANCELS_PER_COMMAND_MAX }));
    events.clear();
    assert_eq!(e.m.apply(e.now, &all, &mut events), Ok(Reply::Cancelled { count: 2 }));
    assert_eq!(e.balance(1, "BTC"), ("100000".into(), "0".into()));
}

fn market(e: &mut Engine, user: u32, side: u8, amount: &str, options: Value) -> Value {
    e.call("order.put_market", json!([user, "BTCBCH", side, amount, "0.001", "mm", options]))
}

#[test]
fn a_market_bid_by_stock_buys_that_much_stock_as_far_as_its_money_goes() {
    let mut e = book();
    let stock = json!({"amount_in": "stock"});
    // 1 at 0.1 and 0.5 at 0.2: 0.2 BCH; the fee is the bid's, in the stock it receives.
    let r = market(&mut e, 2, BID, "1.5", stock.clone());
    let o = &r["result"];
    assert_eq!(
        (&o["type"], &o["amount"], &o["left"], &o["deal_stock"], &o["deal_money"], &o["deal_fee"]),
        (&json!(3), &json!("1.5"), &json!("0"), &json!("1.5"), &json!("0.2"), &json!("0.0015")),
        "{r}"
    );
    assert_eq!(e.balance(2, "BCH"), ("99.8".into(), "0".into()));
    assert_eq!(e.balance(2, "BTC"), ("101.4985".into(), "0".into()));
    // User 3's 0.05 BCH pays for 0.25 of the 0.5 left at 0.2; the rest of the order is cancelled.
    e.deposit(3, "BCH", "0.05");
    let r = market(&mut e, 3, BID, "1", stock.clone());
    let o = &r["result"];
    assert_eq!(
        (&o["deal_stock"], &o["deal_money"], &o["left"]),
        (&json!("0.25"), &json!("0.05"), &json!("0.75")),
        "{r}"
    );
    assert_eq!(e.balance(3, "BCH"), ("0".into(), "0".into()));
    assert_eq!(finished(&e), [o["id"].as_u64().unwrap()], "the order finished; the ask still rests");
    let r = e.ok("order.book", json!(["BTCBCH", ASK, 0, 10]));
    assert_eq!(r["orders"][0]["left"], "0.25");
    // Refused, changing nothing: money that does not pay for the minimum (0.001 at 0.2), an
    // amount below it, a bid without asks, a sell "in money", an unknown unit.
    assert_eq!(e.err("order.put_market", json!([3, "BTCBCH", BID, "1", "0", "mm", stock])), 10);
    e.deposit(3, "BCH", "0.0001999");
    assert_eq!(e.err("order.put_market", json!([3, "BTCBCH", BID, "1", "0", "mm", stock])), 10);
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "0.0009", "0", "mm", stock])), 11);
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", ASK, "1", "0", "mm", {"amount_in": "money"}])), 1);
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "1", "0", "mm", {"amount_in": "BTC"}])), 1);
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "1", "0", "mm", {"amount_in": 1}])), 1);
    e.call("order.cancel", json!([1, "BTCBCH", r["orders"][0]["id"]]));
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "1", "0", "mm", stock])), 12);
    // Named as what it is anyway, the units change nothing: a bid in money, a sell in stock.
    e.limit(1, ASK, "1", "0.5");
    e.limit(1, BID, "1", "0.05");
    let r = market(&mut e, 2, BID, "0.25", json!({"amount_in": "money"}));
    assert_eq!((&r["result"]["type"], &r["result"]["deal_stock"]), (&json!(2), &json!("0.5")), "{r}");
    let r = market(&mut e, 2, ASK, "0.5", stock);
    assert_eq!((&r["result"]["type"], &r["result"]["deal_money"]), (&json!(2), &json!("0.025")), "{r}");
}
