//! Random params fed to every method: nothing panics, and every error leaves the state exactly as
//! it was (same state hash, no events).

mod common;

use common::Engine;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use viaduct_matcher::command::METHODS;

fn value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    match rng.gen_range(0..16) {
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
        10 => Value::Null,
        11 => json!(rng.gen_bool(0.5)),
        12 if depth < 2 => json!({"k": value(rng, depth + 1)}),
        13 if depth < 2 => Value::Array((0..rng.gen_range(0..3)).map(|_| value(rng, depth + 1)).collect()),
        _ => json!(rng.gen_range(1..4)),
    }
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
    for _ in 0..60_000 {
        let pick = rng.gen_range(0..=METHODS.len());
        let method = METHODS.get(pick).copied().unwrap_or("no.such_method");
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
