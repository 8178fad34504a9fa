//! Random params fed to every method: nothing panics, and every error leaves the state exactly as
//! it was (same state hash, no events).

mod common;

use common::Engine;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use viaduct_protocol::METHODS as TABLE;

fn value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    match rng.gen_range(0..17) {
        16 => Value::Null,
        0 => json!(rng.gen_range(0..5)),
        1 => json!(rng.gen_range(-3i64..200)),
        2 => json!([i64::MIN, i64::MAX, u64::MAX as i64, 4_294_967_296i64, -1][rng.gen_range(0..5)]),
        3 => json!(u64::MAX),
        4 => json!(rng.gen_range(-2.0..3.0)),
        5 => json!(["BTCBCH", "ETHBCH", "BTC", "BCH", "LTC", "btcbch", "", "BTCBCH\0"][rng.gen_range(0..8)]),
        6 => json!(
            ["1", "0.5", "0", "-1", "1e3", "1e-9", "0.00000001", "99999999999999999999999999999999999", "1e38"]
                [rng.gen_range(0..9)]
        ),
        7 => json!(["NaN", "inf", "-inf", " 1", "1 ", "0x1", "1..2", "+", "-0", "1e", ".", "١"][rng.gen_range(0..12)]),
        8 => json!("x".repeat(rng.gen_range(0..40))),
        9 => json!(format!("{:.12}", rng.gen_range(0.0..5.0))),
        10 => json!(near_bound(rng)),
        11 => json!(rng.gen_bool(0.5)),
        12 if depth < 2 => json!({"k": value(rng, depth + 1)}),
        13 if depth < 2 => Value::Array((0..rng.gen_range(0..3)).map(|_| value(rng, depth + 1)).collect()),
        _ => json!(rng.gen_range(1..4)),
    }
}

/// A decimal string near a bound the arithmetic meets: a power of ten (± the smallest step) with
/// its point at any precision, the i64 and i128 limits, the supply cap at each `prec_save`.
fn near_bound(rng: &mut ChaCha8Rng) -> String {
    let digits = match rng.gen_range(0..5) {
        0 => i64::MAX.to_string(),
        1 => (i128::from(i64::MAX) + 1).to_string(),
        2 => i128::MAX.to_string(),
        3 => "4853447399393345304378112.02579931".replace('.', ""),
        _ => {
            let k = rng.gen_range(0..40);
            let power = format!("1{}", "0".repeat(k));
            match rng.gen_range(0..3) {
                0 => power,
                1 => "9".repeat(k.max(1)),
                _ => format!("{}1", &power[..power.len() - 1]),
            }
        }
    };
    // The point anywhere from none to 24 places from the right.
    let point = rng.gen_range(0..=24usize.min(digits.len()));
    let mut text = if point == 0 {
        digits
    } else {
        let (int, frac) = digits.split_at(digits.len() - point);
        format!("{}.{frac}", if int.is_empty() { "0" } else { int })
    };
    if rng.gen_bool(0.2) {
        text.insert(0, '-');
    }
    text
}

/// The inputs that overflowed an unchecked multiply (a balance update whose value × 10^(prec_save
/// − prec_show) wraps, a price too large for a report), each an error with no change; a market bid
/// against the largest price is "amount too small" (price × min_amount was unchecked).
#[test]
fn numbers_past_the_arithmetic_are_errors_that_change_nothing() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "10");
    e.deposit(2, "BCH", "10");
    let wraps = "4853447399393345304378112.02579931";
    assert_eq!(e.err("balance.update", json!([1, "BCH", "deposit", 99, wraps, {}])), 1);
    assert_eq!(e.err("order.put_limit", json!([1, "BTCBCH", 1, "1", "9999999999999999999999999", "0", "0", "x"])), 1);
    // The largest price an order may have (2^63 − 1 at 8 decimals), and one step past it.
    assert_eq!(e.err("order.put_limit", json!([1, "BTCBCH", 1, "1", "92233720368.54775808", "0", "0", "x"])), 1);
    assert_eq!(e.err("order.put_limit", json!([2, "BTCBCH", 2, "92233720368.54775808", "1", "0", "0", "x"])), 1);
    e.ok("order.put_limit", json!([1, "BTCBCH", 1, "1", "92233720368.54775807", "0", "0", "x"]));
    // A market bid against it: 1 BCH is below its price × 0.001 BTC.
    assert_eq!(e.err("order.put_market", json!([2, "BTCBCH", 2, "1", "0", "x"])), 11);
    e.m.check_invariants().unwrap();
}

#[test]
fn random_params_never_panic_and_errors_change_nothing() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut e = Engine::new();
    for user in 1..=3 {
        e.deposit(user, "BTC", "100");
        e.deposit(user, "BCH", "100");
        e.deposit(user, "ETH", "100");
    }
    e.limit(1, 1, "1", "2");
    e.limit(2, 2, "1", "1");
    let (mut errors, mut successes) = (0, 0);
    let methods: Vec<&str> = TABLE.iter().filter(|m| m.is_matcher()).map(|m| m.name).collect();
    for _ in 0..60_000 {
        let pick = rng.gen_range(0..=methods.len());
        let method = methods.get(pick).copied().unwrap_or("no.such_method");
        let params: Vec<Value> = (0..rng.gen_range(0..10)).map(|_| value(&mut rng, 0)).collect();
        e.now += 1;
        let before = e.m.state_hash();
        let reply = e.call(method, Value::Array(params.clone()));
        if reply["error"].is_null() {
            successes += 1;
        } else {
            errors += 1;
            assert!(e.events.is_empty(), "{method} {params:?}: error with events");
            assert_eq!(before, e.m.state_hash(), "{method} {params:?}: error changed the state");
            let code = reply["error"]["code"].as_i64().unwrap();
            assert!([1, 3, 4, 10, 11, 12].contains(&code), "{method}: unexpected code {code}");
        }
    }
    e.m.check_invariants().unwrap();
    assert!(errors > 10_000 && successes > 1_000, "errors {errors}, successes {successes}");
}
