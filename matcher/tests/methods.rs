//! Every matchengine method and every error path of SPEC B2.4 and B5.8, through the JSON interface.

mod common;

use common::{Engine, T0};
use serde_json::{json, Value};
use viaduct_matcher::config::{self, Spec};
use viaduct_matcher::event::{Business, EventRef, OrderEventKind};
use viaduct_matcher::{Event, Matcher, SnapshotError};

const ASK: u8 = 1;
const BID: u8 = 2;

fn bal(avail: &str, freeze: &str) -> (String, String) {
    (avail.to_string(), freeze.to_string())
}

#[test]
fn worked_fee_example_of_b5_4() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "2");
    e.deposit(2, "BCH", "1");
    let maker = e.ok("order.put_limit", json!([1, "BTCBCH", ASK, "2", "0.1", "0.002", "0.001", "maker"]));
    assert_eq!(e.balance(1, "BTC"), bal("0", "2"));
    let taker = e.ok("order.put_limit", json!([2, "BTCBCH", BID, "1", "0.2", "0.002", "0.001", "taker"]));
    let events = e.events.clone();
    assert_eq!(taker["left"], "0");
    assert_eq!(taker["deal_stock"], "1");
    assert_eq!(taker["deal_money"], "0.1");
    assert_eq!(taker["deal_fee"], "0.002");
    assert_eq!(taker["price"], "0.2");
    // Taker: BCH −0.1; BTC +1 then −0.002 (fee in stock).
    assert_eq!(e.balance(2, "BCH"), bal("0.9", "0"));
    assert_eq!(e.balance(2, "BTC"), bal("0.998", "0"));
    // Maker: BTC freeze −1; BCH +0.1 then −0.0001 (fee = deal × 0.001, in money).
    assert_eq!(e.balance(1, "BTC"), bal("0", "1"));
    assert_eq!(e.balance(1, "BCH"), bal("0.0999", "0"));
    let m = e.ok("order.pending_detail", json!(["BTCBCH", maker["id"]]));
    assert_eq!(
        (m["left"].as_str(), m["deal_fee"].as_str(), m["deal_money"].as_str()),
        (Some("1"), Some("0.0001"), Some("0.1"))
    );
    let spec = e.m.spec().clone();
    assert_eq!(e.m.fees(spec.asset_id("BTC").unwrap()), 2_000_000_000); // 0.002 at prec_save 12
    assert_eq!(e.m.fees(spec.asset_id("BCH").unwrap()), 10_000_000_000_000_000); // 0.0001 at 20
                                                                                 // Events: the deal, six balance legs, the maker's update, its level, the taker's finish.
    let kinds: Vec<&str> = events
        .iter()
        .map(|ev| match ev {
            Event::Deal(_) => "deal",
            Event::Balance(_) => "balance",
            Event::Order { kind: OrderEventKind::Update, .. } => "update",
            Event::Order { kind: OrderEventKind::Finish, .. } => "finish",
            Event::Order { kind: OrderEventKind::Put, .. } => "put",
            Event::Level(_) => "level",
        })
        .collect();
    assert_eq!(
        kinds,
        ["deal", "balance", "balance", "balance", "balance", "balance", "balance", "update", "level", "finish"]
    );
    let Event::Deal(d) = &events[0] else { unreachable!() };
    assert_eq!((d.id, d.ask_order_id, d.bid_order_id, d.ask_user, d.bid_user), (1, 1, 2, 1, 2));
    assert_eq!((d.price, d.amount, d.deal), (10_000_000, 100_000_000, 1_000_000_000_000_000));
    let Event::Balance(fee_leg) = &events[3] else { unreachable!() };
    assert_eq!((fee_leg.user, fee_leg.change, fee_leg.change_scale), (2, -2_000_000_000, 12));
    assert_eq!(fee_leg.business, Business::Trade { deal_id: 1, order_id: 2, fee: true });
    e.m.check_invariants().unwrap();
}

#[test]
fn balance_query_lists_config_order_and_truncates_to_prec_show() {
    let mut e = Engine::new();
    e.deposit(5, "BTC", "1.123456789");
    let all = e.ok("balance.query", json!([5]));
    let names: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 8);
    assert_eq!(all["BTC"], json!({"available": "1.12345678", "freeze": "0"}));
    assert_eq!(all["BCH"], json!({"available": "0", "freeze": "0"}));
    let two = e.ok("balance.query", json!([5, "ETH", "BTC"]));
    let keys: Vec<&str> = two.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(e.err("balance.query", json!([0])), 1);
    assert_eq!(e.err("balance.query", json!([])), 1);
    assert_eq!(e.err("balance.query", json!(["5"])), 1);
    assert_eq!(e.err("balance.query", json!([5, "XYZ"])), 1);
    assert_eq!(e.err("balance.query", json!([5, 3])), 1);
    assert_eq!(e.err("balance.query", json!([-5])), 1);
    assert_eq!(e.err("balance.query", json!([4294967296u64])), 1);
}

#[test]
fn prec_show_keeps_order_of_keys_in_the_raw_text() {
    let mut e = Engine::new();
    let params = vec![json!(9), json!("LTC"), json!("BTC")];
    let cmd = viaduct_protocol::decode(e.m.spec(), "balance.query", &params).unwrap();
    let mut events = viaduct_matcher::Events::default();
    let reply = e.m.apply(T0, &cmd, &mut events).unwrap();
    let text = viaduct_protocol::result_json(e.m.spec(), &reply, &events);
    assert_eq!(text, r#"{"LTC":{"available":"0","freeze":"0"},"BTC":{"available":"0","freeze":"0"}}"#);
}

#[test]
fn balance_update_deposits_withdraws_and_dedupes_for_24_hours() {
    let mut e = Engine::new();
    let r = e.ok("balance.update", json!([3, "BCH", "deposit", 1, "10.123456789", {"note": "x"}]));
    assert_eq!(r, json!({"status": "success"}));
    // Parsed at prec_show (8): the ninth decimal is dropped.
    assert_eq!(e.balance(3, "BCH"), bal("10.12345678", "0"));
    match &e.events[..] {
        [Event::Balance(b)] => {
            assert_eq!(b.user, 3);
            assert_eq!(b.change, 1_012_345_678_000_000_000_000);
            assert_eq!(b.balance, b.change);
            assert!(
                matches!(&b.business, Business::Update(u) if u.business == "deposit" && u.business_id == 1 && u.detail == r#"{"note":"x"}"#)
            );
        }
        other => panic!("unexpected events {other:?}"),
    }
    assert_eq!(e.err("balance.update", json!([3, "BCH", "deposit", 1, "5", {}])), 10);
    // Another business, asset or id is not a repeat.
    e.ok("balance.update", json!([3, "BCH", "deposit", 2, "5", {}]));
    e.ok("balance.update", json!([3, "BCH", "bonus", 1, "5", {}]));
    e.ok("balance.update", json!([3, "BTC", "deposit", 1, "5", {}]));
    e.ok("balance.update", json!([3, "BCH", "withdraw", 1, "-20.12345678", {}]));
    assert_eq!(e.balance(3, "BCH"), bal("0", "0"));
    assert_eq!(e.err("balance.update", json!([3, "BCH", "withdraw", 2, "-0.00000001", {}])), 11);
    assert_eq!(e.err("balance.update", json!([4, "ETH", "withdraw", 1, "-1", {}])), 11);
    e.ok("balance.update", json!([3, "BCH", "zero", 1, "0", {}]));
    assert_eq!(e.err("balance.update", json!([3, "BCH", "zero", 1, "0", {}])), 10);
    // One microsecond before 24 h: still a repeat. At 24 h: accepted again.
    e.now = T0 + 86_400_000_000 - 1;
    assert_eq!(e.err("balance.update", json!([3, "BCH", "deposit", 1, "5", {}])), 10);
    e.now = T0 + 86_400_000_000;
    e.ok("balance.update", json!([3, "BCH", "deposit", 1, "5", {}]));
    e.m.check_invariants().unwrap();
}

#[test]
fn balance_update_answers_3_when_the_dedupe_window_is_full() {
    let mut e = Engine::new();
    e.m.set_dedupe_entries_max(2);
    e.ok("balance.update", json!([1, "BTC", "deposit", 1, "1", {}]));
    e.now += 1_000_000;
    e.ok("balance.update", json!([1, "BTC", "deposit", 2, "1", {}]));
    assert_eq!(e.err("balance.update", json!([1, "BTC", "deposit", 3, "1", {}])), 3);
    // Once the oldest key is 24 h old it makes room.
    e.now = T0 + 86_400_000_000;
    e.ok("balance.update", json!([1, "BTC", "deposit", 3, "1", {}]));
    assert_eq!(e.err("balance.update", json!([1, "BTC", "deposit", 4, "1", {}])), 3);
    assert_eq!(e.balance(1, "BTC"), bal("3", "0"));
}

#[test]
fn balance_update_refuses_bad_params() {
    let mut e = Engine::new();
    let bad = [
        json!([3, "BCH", "deposit", 1, "1"]),
        json!([3, "BCH", "deposit", 1, "1", {}, 1]),
        json!([3, "BCH", "deposit", 1, "1", null]),
        json!([3, "BCH", "deposit", 1, "1", []]),
        json!([3, "NOPE", "deposit", 1, "1", {}]),
        json!([3, "BCH", 5, 1, "1", {}]),
        json!([3, "BCH", "deposit", "1", "1", {}]),
        json!([3, "BCH", "deposit", -1, "1", {}]),
        json!([3, "BCH", "deposit", 1, 1, {}]),
        json!([3, "BCH", "deposit", 1, "abc", {}]),
        json!([3, "BCH", "deposit", 1, "NaN", {}]),
        json!([3, "BCH", "deposit", 1, "", {}]),
        json!([3, "BCH", "deposit", 1, "1e40", {}]),
        json!([3, "BCH", "x".repeat(31), 1, "1", {}]),
        json!([1.5, "BCH", "deposit", 1, "1", {}]),
        json!(["3", "BCH", "deposit", 1, "1", {}]),
    ];
    for params in bad {
        assert_eq!(e.err("balance.update", params), 1);
    }
    // Past the supply bound: 10^32 at prec_save 20 is 10^12 BCH.
    e.ok("balance.update", json!([3, "BCH", "deposit", 1, "1000000000000", {}]));
    assert_eq!(e.err("balance.update", json!([3, "BCH", "deposit", 2, "0.00000001", {}])), 1);
}

#[test]
fn asset_list_and_summary() {
    let mut e = Engine::new();
    let list = e.ok("asset.list", json!([]));
    assert_eq!(list[0], json!({"name": "BCH", "prec": 8}));
    assert_eq!(list.as_array().unwrap().len(), 8);
    e.deposit(1, "BTC", "2");
    e.deposit(2, "BTC", "3.5");
    e.limit(1, ASK, "0.5", "1");
    let s = e.ok("asset.summary", json!(["BTC"]));
    assert_eq!(
        s,
        json!([{"name": "BTC", "total_balance": "5.5", "available_count": 2, "available_balance": "5",
                "freeze_count": 1, "freeze_balance": "0.5"}])
    );
    assert_eq!(e.ok("asset.summary", json!([])).as_array().unwrap().len(), 8);
    assert_eq!(e.err("asset.summary", json!(["BTC", "NOPE"])), 1);
    assert_eq!(e.err("asset.summary", json!([1])), 1);
}

#[test]
fn put_limit_rests_and_freezes() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "10");
    let o = e.limit(1, BID, "2", "1.5");
    assert_eq!(o["id"], 1);
    assert_eq!(o["market"], "BTCBCH");
    assert_eq!(o["source"], "test");
    assert_eq!(o["type"], 1);
    assert_eq!(o["side"], 2);
    assert_eq!(o["user"], 1);
    assert_eq!(o["ctime"], json!(T0 as f64 / 1e6 + 1e-6));
    assert_eq!(
        (o["left"].as_str(), o["deal_stock"].as_str(), o["deal_fee"].as_str()),
        (Some("2"), Some("0"), Some("0"))
    );
    assert_eq!(e.balance(1, "BCH"), bal("7", "3"));
    let keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 16);
    assert!(matches!(e.events[..], [Event::Order { kind: OrderEventKind::Put, .. }, Event::Level(_)]));
}

#[test]
fn put_limit_errors() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "1");
    e.deposit(2, "BTC", "1");
    // 10: bid needs amount × price of money; ask needs amount of stock.
    assert_eq!(e.err("order.put_limit", json!([1, "BTCBCH", BID, "2", "0.50000001", "0", "0", ""])), 10);
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", ASK, "1.00000001", "1", "0", "0", ""])), 10);
    assert_eq!(e.err("order.put_limit", json!([9, "BTCBCH", ASK, "1", "1", "0", "0", ""])), 10);
    // 11: below min_amount (0.001), checked after the balance.
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", ASK, "0.0009", "1", "0", "0", ""])), 11);
    assert_eq!(e.err("order.put_limit", json!([9, "BTCBCH", ASK, "0.0009", "1", "0", "0", ""])), 10);
    // A price or amount past 2^63 − 1 at the market's precision is an invalid argument (every
    // order fits the binary edge's reports); the largest product of the two is simply more than
    // anyone has.
    assert_eq!(
        e.err("order.put_limit", json!([1, "BTCBCH", BID, "100000000000000000", "100000000000000000", "0", "0", ""])),
        1
    );
    assert_eq!(
        e.err(
            "order.put_limit",
            json!([1, "BTCBCH", BID, "92233720368.54775807", "92233720368.54775807", "0", "0", ""])
        ),
        10
    );
    let bad = [
        json!([1, "BTCBCH", BID, "1", "0.5", "0", "0"]),
        json!([1, "BTCBCH", BID, "1", "0.5", "0", "0", "", 1]),
        json!([1, "NOPE", BID, "1", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", 3, "1", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", 0, "1", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", "2", "1", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "0", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "0.000000001", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "-1", "0.5", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "1", "0", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "1", "0.000000009", "0", "0", ""]),
        json!([1, "BTCBCH", BID, "1", 0.5, "0", "0", ""]),
        json!([1, "BTCBCH", BID, "1", "0.5", "1", "0", ""]),
        json!([1, "BTCBCH", BID, "1", "0.5", "0", "-0.1", ""]),
        json!([1, "BTCBCH", BID, "1", "0.5", "inf", "0", ""]),
        json!([1, "BTCBCH", BID, "1", "0.5", "0", "0", "s".repeat(31)]),
        json!([1, "BTCBCH", BID, "1", "0.5", "0", "0", null]),
    ];
    for params in bad {
        assert_eq!(e.err("order.put_limit", params), 1);
    }
    // 30 bytes of source is the most; a fee rate of 0.99999 truncates to 0.9999.
    let o = e.ok("order.put_limit", json!([1, "BTCBCH", BID, "1", "0.5", "0.99999", "0", "s".repeat(30)]));
    assert_eq!(o["taker_fee"], "0.9999");
}

#[test]
fn matching_is_price_then_time_at_the_makers_price() {
    let mut e = Engine::new();
    for u in 1..=3 {
        e.deposit(u, "BTC", "10");
    }
    e.deposit(9, "BCH", "100");
    let a1 = e.limit(1, ASK, "1", "1.2");
    let a2 = e.limit(2, ASK, "1", "1.1");
    let a3 = e.limit(3, ASK, "1", "1.1");
    let book = e.ok("order.book", json!(["BTCBCH", ASK, 0, 10]));
    let ids: Vec<&Value> = book["orders"].as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert_eq!(ids, [&a2["id"], &a3["id"], &a1["id"]]);
    let t = e.limit(9, BID, "2.5", "1.3");
    assert_eq!(t["deal_stock"], "2.5");
    assert_eq!(t["deal_money"], "2.8"); // 1.1 + 1.1 + 0.5 × 1.2
    assert_eq!(t["left"], "0");
    assert_eq!(e.balance(9, "BCH"), bal("97.2", "0"));
    let left = e.ok("order.pending_detail", json!(["BTCBCH", a1["id"]]));
    assert_eq!(left["left"], "0.5");
    assert!(e.ok("order.pending_detail", json!(["BTCBCH", a2["id"]])).is_null());
    // A bid below the best ask rests.
    let rest = e.limit(9, BID, "1", "1");
    assert_eq!(rest["deal_stock"], "0");
    e.m.check_invariants().unwrap();
}

#[test]
fn a_partially_filled_taker_rests_with_one_put_event() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "1");
    e.deposit(2, "BCH", "10");
    e.limit(1, ASK, "1", "2");
    let t = e.limit(2, BID, "3", "2.5");
    assert_eq!((t["left"].as_str(), t["deal_stock"].as_str()), (Some("2"), Some("1")));
    // Paid 2 for the fill; 2.5 × 2 = 5 frozen for the rest.
    assert_eq!(e.balance(2, "BCH"), bal("3", "5"));
    let puts = e.events.iter().filter(|ev| matches!(ev, Event::Order { kind: OrderEventKind::Put, .. })).count();
    let finishes = e.events.iter().filter(|ev| matches!(ev, Event::Order { kind: OrderEventKind::Finish, .. })).count();
    assert_eq!((puts, finishes), (1, 1));
    e.m.check_invariants().unwrap();
}

#[test]
fn self_trade_is_allowed() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "1");
    e.deposit(1, "BCH", "1");
    e.limit(1, ASK, "1", "0.5");
    let t = e.limit(1, BID, "1", "0.5");
    assert_eq!(t["left"], "0");
    assert_eq!(e.balance(1, "BTC"), bal("1", "0"));
    assert_eq!(e.balance(1, "BCH"), bal("1", "0"));
}

#[test]
fn fees_below_prec_save_truncate_the_balance_and_count_as_collected() {
    // A market whose money keeps exactly stock_prec + money_prec + fee_prec − 2 decimals.
    let mut cfg = config::embedded();
    cfg.assets[0].prec_save = 16;
    cfg.markets.truncate(1);
    let mut e = Engine::with_spec(Spec::new(&cfg).unwrap());
    e.deposit(1, "BTC", "1");
    e.deposit(2, "BCH", "1");
    e.ok("order.put_limit", json!([2, "BTCBCH", BID, "0.00123457", "0.12345679", "0", "0.0003", ""]));
    let t = e.ok("order.put_limit", json!([1, "BTCBCH", ASK, "0.00123457", "0.1", "0.0007", "0", ""]));
    // deal = 0.12345679 × 0.00123457 = 0.0001524160492303 (16 decimals, exact)
    // fee  = deal × 0.0007 = 0.00000010669123446121 (20 decimals): the balance, truncated to 16
    // decimals after the subtraction, loses 0.0000001066912345.
    assert_eq!(t["deal_money"], "0.0001524160492303");
    assert_eq!(t["deal_fee"], "0.00000010669123446121");
    let r = e.ok("balance.query", json!([1, "BCH"]));
    assert_eq!(r["BCH"]["available"], "0.0001523"); // 0.0001523093579958 shown at prec_show 8
    let bch = e.m.spec().asset_id("BCH").unwrap();
    assert_eq!(e.m.balance(1, bch).available, 1_524_160_492_303 - 1_066_912_345);
    assert_eq!(e.m.fees(bch), 1_066_912_345);
    e.m.check_invariants().unwrap();
}

#[test]
fn put_market_ask_sells_into_bids_without_a_price_limit() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "100");
    e.deposit(2, "BTC", "10");
    e.limit(1, BID, "1", "3");
    e.limit(1, BID, "1", "2");
    let o = e.ok("order.put_market", json!([2, "BTCBCH", ASK, "1.5", "0.001", "mkt"]));
    assert_eq!(o["type"], 2);
    assert_eq!(o["price"], "0");
    assert_eq!(o["maker_fee"], "0");
    assert_eq!(o["deal_stock"], "1.5");
    assert_eq!(o["deal_money"], "4");
    assert_eq!(o["deal_fee"], "0.004");
    assert_eq!(o["left"], "0");
    assert_eq!(e.balance(2, "BCH"), bal("3.996", "0"));
    // Selling more than the book holds: the rest is discarded, the order still finishes.
    let o = e.ok("order.put_market", json!([2, "BTCBCH", ASK, "2", "0", ""]));
    assert_eq!((o["left"].as_str(), o["deal_stock"].as_str()), (Some("1.5"), Some("0.5")));
    assert!(matches!(e.events.last(), Some(Event::Order { kind: OrderEventKind::Finish, .. })));
    assert_eq!(e.balance(2, "BTC"), bal("8", "0"));
    e.m.check_invariants().unwrap();
}

#[test]
fn put_market_bid_spends_money() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "10");
    e.deposit(2, "BCH", "100");
    e.limit(1, ASK, "1", "3");
    e.limit(1, ASK, "5", "7");
    // 10 BCH: 1 BTC at 3, then floor(7 / 7) = 1 BTC at 7; 0 left.
    let o = e.ok("order.put_market", json!([2, "BTCBCH", BID, "10", "0.01", ""]));
    assert_eq!((o["amount"].as_str(), o["left"].as_str()), (Some("10"), Some("0")));
    assert_eq!(
        (o["deal_stock"].as_str(), o["deal_money"].as_str(), o["deal_fee"].as_str()),
        (Some("2"), Some("10"), Some("0.02"))
    );
    assert_eq!(e.balance(2, "BTC"), bal("1.98", "0"));
    // 1 BCH at 7 buys 0.14285714 BTC; 0.00000002 BCH stays unspent.
    let o = e.ok("order.put_market", json!([2, "BTCBCH", BID, "1", "0", ""]));
    assert_eq!((o["deal_stock"].as_str(), o["left"].as_str()), (Some("0.14285714"), Some("0.00000002")));
    assert_eq!(e.balance(2, "BCH"), bal("89.00000002", "0"));
    e.m.check_invariants().unwrap();
}

#[test]
fn put_market_errors_in_spec_order() {
    let mut e = Engine::new();
    e.deposit(2, "BCH", "1");
    e.deposit(3, "BTC", "1");
    // Balance first, then the empty book, then the minimum.
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "2", "0", ""])), 10);
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "0.5", "0", ""])), 12);
    assert_eq!(e.err("order.put_market", json!([3, "BTCBCH", ASK, "0.0001", "0", ""])), 12);
    e.deposit(1, "BTC", "1");
    e.deposit(1, "BCH", "1");
    e.limit(1, ASK, "1", "2");
    e.limit(1, BID, "0.1", "1");
    assert_eq!(e.err("order.put_market", json!([3, "BTCBCH", ASK, "0.0009", "0", ""])), 11);
    // A bid must be worth best ask × min_amount = 2 × 0.001 = 0.002.
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", BID, "0.00199999", "0", ""])), 11);
    e.ok("order.put_market", json!([2, "BTCBCH", BID, "0.002", "0", ""]));
    for bad in [
        json!([2, "BTCBCH", BID, "1", "0"]),
        json!([2, "NOPE", BID, "1", "0", ""]),
        json!([2, "BTCBCH", 5, "1", "0", ""]),
        json!([2, "BTCBCH", BID, "0", "0", ""]),
        json!([2, "BTCBCH", BID, "1", "1", ""]),
        json!([2, "BTCBCH", BID, "1", "0", "s".repeat(31)]),
    ] {
        assert_eq!(e.err("order.put_market", bad), 1);
    }
}

#[test]
fn cancel_releases_the_freeze() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "10");
    e.deposit(2, "BTC", "1");
    let o = e.limit(1, BID, "2", "2");
    e.limit(2, ASK, "0.5", "2");
    assert_eq!(e.balance(1, "BCH"), bal("6", "3"));
    assert_eq!(e.err("order.cancel", json!([2, "BTCBCH", o["id"]])), 11);
    assert_eq!(e.err("order.cancel", json!([1, "BTCBCH", 999])), 10);
    assert_eq!(e.err("order.cancel", json!([1, "ETHBCH", o["id"]])), 10);
    assert_eq!(e.err("order.cancel", json!([1, "NOPE", o["id"]])), 1);
    assert_eq!(e.err("order.cancel", json!([1, "BTCBCH"])), 1);
    assert_eq!(e.err("order.cancel", json!([1, "BTCBCH", "1"])), 1);
    let c = e.ok("order.cancel", json!([1, "BTCBCH", o["id"]]));
    assert_eq!((c["left"].as_str(), c["deal_stock"].as_str()), (Some("1.5"), Some("0.5")));
    assert_eq!(e.balance(1, "BCH"), bal("9", "0"));
    assert!(matches!(e.events[..], [Event::Level(_), Event::Order { kind: OrderEventKind::Finish, .. }]));
    assert_eq!(e.err("order.cancel", json!([1, "BTCBCH", o["id"]])), 10);
    e.m.check_invariants().unwrap();
}

#[test]
fn order_book_pages_in_priority_order() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "100");
    for price in ["1", "3", "2", "3"] {
        e.limit(1, BID, "1", price);
    }
    let b = e.ok("order.book", json!(["BTCBCH", BID, 1, 2]));
    assert_eq!((b["offset"].as_u64(), b["limit"].as_u64(), b["total"].as_u64()), (Some(1), Some(2), Some(4)));
    let ids: Vec<u64> = b["orders"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [4, 3]);
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(e.ok("order.book", json!(["BTCBCH", ASK, 0, 0]))["orders"], json!([]));
    assert_eq!(e.ok("order.book", json!(["BTCBCH", BID, 10, 101]))["orders"], json!([]));
    assert_eq!(e.err("order.book", json!(["BTCBCH", BID, 0, 102])), 1);
    assert_eq!(e.err("order.book", json!(["BTCBCH", 3, 0, 10])), 1);
    assert_eq!(e.err("order.book", json!(["BTCBCH", BID, -1, 10])), 1);
    assert_eq!(e.err("order.book", json!(["NOPE", BID, 0, 10])), 1);
    assert_eq!(e.err("order.book", json!(["BTCBCH", BID, 0])), 1);
}

#[test]
fn order_depth_merges_by_interval() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "1000");
    e.deposit(1, "BTC", "1000");
    for (price, amount) in [("10.01", "1"), ("10.05", "2"), ("10.11", "3"), ("12", "4")] {
        e.limit(1, ASK, amount, price);
    }
    for (price, amount) in [("9.99", "1"), ("9.95", "2"), ("9.89", "3")] {
        e.limit(1, BID, amount, price);
    }
    let d = e.ok("order.depth", json!(["BTCBCH", 10, "0"]));
    assert_eq!(d["asks"], json!([["10.01", "1"], ["10.05", "2"], ["10.11", "3"], ["12", "4"]]));
    assert_eq!(d["bids"], json!([["9.99", "1"], ["9.95", "2"], ["9.89", "3"]]));
    let d = e.ok("order.depth", json!(["BTCBCH", 10, "0.1"]));
    assert_eq!(d["asks"], json!([["10.1", "3"], ["10.2", "3"], ["12", "4"]]));
    assert_eq!(d["bids"], json!([["9.9", "3"], ["9.8", "3"]]));
    let d = e.ok("order.depth", json!(["BTCBCH", 1, "1"]));
    assert_eq!(d, json!({"asks": [["11", "6"]], "bids": [["9", "6"]]}));
    assert_eq!(e.err("order.depth", json!(["BTCBCH", 10, "-0.1"])), 1);
    assert_eq!(e.err("order.depth", json!(["BTCBCH", 102, "0"])), 1);
    assert_eq!(e.err("order.depth", json!(["BTCBCH", 10, 0])), 1);
    assert_eq!(e.err("order.depth", json!(["NOPE", 10, "0"])), 1);
}

#[test]
fn order_pending_is_newest_first_per_user_and_market() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "100");
    e.deposit(2, "BCH", "100");
    e.deposit(1, "LTC", "100");
    for u in [1, 2, 1, 1] {
        e.limit(u, BID, "1", "1");
    }
    e.ok("order.put_limit", json!([1, "LTCBCH", ASK, "1", "5", "0", "0", ""]));
    let p = e.ok("order.pending", json!([1, "BTCBCH", 0, 10]));
    let ids: Vec<u64> = p["records"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [4, 3, 1]);
    assert_eq!(p["total"], 3);
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4);
    let p = e.ok("order.pending", json!([1, "BTCBCH", 1, 1]));
    assert_eq!(p["records"][0]["id"], 3);
    assert_eq!(e.ok("order.pending", json!([7, "BTCBCH", 0, 10]))["total"], 0);
    assert_eq!(e.err("order.pending", json!([1, "BTCBCH", 0, 102])), 1);
    assert_eq!(e.err("order.pending", json!([1, "NOPE", 0, 10])), 1);
    assert_eq!(e.err("order.pending_detail", json!(["BTCBCH"])), 1);
    assert_eq!(e.err("order.pending_detail", json!(["BTCBCH", "1"])), 1);
    assert!(e.ok("order.pending_detail", json!(["LTCBCH", 1])).is_null());
}

#[test]
fn market_list_and_summary() {
    let mut e = Engine::new();
    let l = e.ok("market.list", json!([]));
    assert_eq!(
        l[0],
        json!({"name": "BTCBCH", "stock": "BTC", "money": "BCH", "fee_prec": 4, "stock_prec": 8, "money_prec": 8, "min_amount": "0.001"})
    );
    e.deposit(1, "BTC", "10");
    e.limit(1, ASK, "1.5", "2");
    e.limit(1, ASK, "2", "3");
    let s = e.ok("market.summary", json!(["BTCBCH"]));
    assert_eq!(s, json!([{"name": "BTCBCH", "ask_count": 2, "ask_amount": "3.5", "bid_count": 0, "bid_amount": "0"}]));
    assert_eq!(e.ok("market.summary", json!([])).as_array().unwrap().len(), 7);
    assert_eq!(e.err("market.summary", json!(["NOPE"])), 1);
}

#[test]
fn unknown_methods_are_not_found() {
    let mut e = Engine::new();
    assert_eq!(e.err("order.put_stop", json!([])), 4);
    assert_eq!(e.err("market.last", json!(["BTCBCH"])), 4);
    assert_eq!(e.err("", json!([])), 4);
}

#[test]
fn ids_are_global_counters_shared_by_markets() {
    let mut e = Engine::new();
    e.deposit(1, "BCH", "100");
    let a = e.limit(1, BID, "1", "1");
    let b = e.ok("order.put_limit", json!([1, "ETHBCH", BID, "1", "1", "0", "0", ""]));
    assert_eq!((a["id"].as_u64(), b["id"].as_u64()), (Some(1), Some(2)));
    assert_eq!(e.m.last_order_id(), 2);
}

#[test]
fn snapshot_round_trips_and_refuses_a_changed_config() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "3");
    e.deposit(2, "BCH", "30");
    e.ok("order.put_limit", json!([1, "BTCBCH", ASK, "2", "1.5", "0.001", "0.002", "src"]));
    e.ok("order.put_limit", json!([2, "BTCBCH", BID, "1", "2", "0.001", "0.002", ""]));
    e.ok("order.put_limit", json!([2, "BTCBCH", BID, "1", "1", "0.001", "0.002", ""]));
    let bytes = e.m.snapshot();
    let spec = e.m.spec().clone();
    let back = Matcher::from_snapshot(spec.clone(), &bytes).unwrap();
    assert_eq!(back.state_hash(), e.m.state_hash());
    // The restored engine behaves the same: the dedupe window and the book came back.
    let mut e2 = Engine::with_matcher(back, e.now);
    assert_eq!(e2.err("balance.update", json!([1, "BTC", "deposit", common::T0 + 1, "3", {}])), 10);
    let o = e2.ok("order.pending_detail", json!(["BTCBCH", 1]));
    assert_eq!((o["source"].as_str(), o["left"].as_str()), (Some("src"), Some("1")));
    // A config without the market, or with another precision, is refused by name.
    let mut cfg = config::embedded();
    cfg.markets.retain(|m| m.name != "BTCBCH");
    match Matcher::from_snapshot(Spec::new(&cfg).unwrap(), &bytes) {
        Err(SnapshotError::Market(name)) => assert_eq!(name, "BTCBCH"),
        other => panic!("expected a market error, got {:?}", other.err()),
    }
    let mut cfg = config::embedded();
    cfg.assets[1].prec_show = Some(6);
    assert!(
        matches!(Matcher::from_snapshot(Spec::new(&cfg).unwrap(), &bytes), Err(SnapshotError::Asset(n)) if n == "BTC")
    );
    assert!(Matcher::from_snapshot(spec, &bytes[..bytes.len() - 3]).is_err());
}

#[test]
fn decimals_never_print_in_exponent_form() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "0.00000001");
    let r = e.ok("balance.query", json!([1, "BTC"]));
    assert_eq!(r["BTC"]["available"], "0.00000001");
    e.deposit(1, "BTC", "0.001");
    e.ok("order.put_limit", json!([1, "BTCBCH", ASK, "0.001", "0.00000001", "0", "0", ""]));
    let text = serde_json::to_string(&e.call("order.book", json!(["BTCBCH", ASK, 0, 1]))).unwrap();
    assert!(!text.contains("e-"), "{text}");
}

#[test]
fn events_append_keeps_the_order_of_both() {
    let spec = Spec::new(&config::embedded()).unwrap();
    let cmd = |m: &str, p: Value| viaduct_protocol::decode(&spec, m, p.as_array().unwrap()).unwrap();
    let mut m = Matcher::new(spec.clone());
    let (mut a, mut b) = (viaduct_matcher::Events::default(), viaduct_matcher::Events::default());
    m.apply(T0, &cmd("balance.update", json!([1, "BTC", "d", 1, "2", {}])), &mut a).unwrap();
    m.apply(T0, &cmd("balance.update", json!([2, "BCH", "d", 1, "2", {}])), &mut a).unwrap();
    m.apply(T0, &cmd("order.put_limit", json!([1, "BTCBCH", ASK, "2", "0.1", "0.002", "0.001", ""])), &mut a).unwrap();
    m.apply(T0, &cmd("order.put_limit", json!([2, "BTCBCH", BID, "1", "0.2", "0.002", "0.001", ""])), &mut b).unwrap();
    let mut all = viaduct_matcher::Events::default();
    all.append_where(&a, |_| true);
    all.append_where(&b, |_| true);
    assert_eq!(all.to_vec(), [a.to_vec(), b.to_vec()].concat());
    assert_eq!((all.len(), all.deals().len()), (a.len() + b.len(), 1));
    assert_eq!(all.last_order(), b.last_order());
    // Only what `keep` takes, still in order, and found by kind as before.
    let mut kept = viaduct_matcher::Events::default();
    let no_orders = |ev: EventRef<'_>| !matches!(ev, EventRef::Order(..));
    kept.append_where(&a, no_orders);
    kept.append_where(&b, no_orders);
    let want: Vec<Event> = all.to_vec().into_iter().filter(|e| !matches!(e, Event::Order { .. })).collect();
    assert!(want.len() >= 3 && want.len() < all.len(), "{want:?}");
    assert_eq!(kept.to_vec(), want);
    assert_eq!((kept.deals(), kept.last_order()), (all.deals(), None));
}

/// One order makes at most `DEALS_PER_ORDER_MAX` deals: a limit order that would make more trades
/// that many and its rest is cancelled (not rested across the book); a market order likewise. The
/// resting orders it did not reach stay as they were, and every balance still adds up.
#[test]
fn one_order_makes_at_most_deals_per_order_max_deals() {
    use viaduct_matcher::DEALS_PER_ORDER_MAX;
    let cap = DEALS_PER_ORDER_MAX as usize;
    let mut e = Engine::new();
    e.deposit(1, "BTC", "100000");
    e.deposit(2, "BCH", "100000");
    let n = 2 * cap + 7;
    for _ in 0..n {
        e.limit(1, 1, "0.001", "1");
    }
    let deals = |e: &Engine| e.events.iter().filter(|ev| matches!(ev, Event::Deal(_))).count();
    // Thousandths as decimal text.
    let milli = |k: usize| format!("{}.{:03}", k / 1000, k % 1000);
    let all = milli(n);
    let bid = e.ok("order.put_limit", json!([2, "BTCBCH", 2, all, "1", "0", "0", "x"]));
    assert_eq!(deals(&e), cap);
    assert_eq!(bid["deal_stock"].as_str().unwrap().parse::<f64>().unwrap(), milli(cap).parse::<f64>().unwrap());
    assert!(
        matches!(e.events.last(), Some(Event::Order { kind: OrderEventKind::Finish, .. })),
        "the rest is cancelled, not rested"
    );
    let pending = e.ok("order.pending", json!([2, "BTCBCH", 0, 10]));
    assert_eq!(pending["total"], 0);
    let asks = e.ok("order.book", json!(["BTCBCH", 1, 0, 1]));
    assert_eq!(asks["total"], n - cap);
    // A market bid spending enough for all that is left: the cap again, the rest cancelled.
    e.ok("order.put_market", json!([2, "BTCBCH", 2, "1000", "0", "x"]));
    assert_eq!(deals(&e), cap);
    assert_eq!(e.ok("order.book", json!(["BTCBCH", 1, 0, 1]))["total"], 7);
    // Below the cap, an order trades and rests as before.
    let bid = e.ok("order.put_limit", json!([2, "BTCBCH", 2, "0.01", "1", "0", "0", "x"]));
    assert_eq!((deals(&e), bid["left"].as_str()), (7, Some("0.003")));
    assert_eq!(e.ok("order.pending", json!([2, "BTCBCH", 0, 10]))["total"], 1);
    e.m.check_invariants().unwrap();
}
