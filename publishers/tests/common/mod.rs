//! Helpers shared by this crate's integration tests.

use serde_json::json;
use viaduct_matcher::{Events, Matcher, Spec};
use viaduct_protocol::decode;

pub const T0: u64 = 1_700_000_000_000_000;

/// User 1's deposit of 1 BTC as the command of sequence `seq`, applied to `m`: (seq, its events).
pub fn deposit(m: &mut Matcher, spec: &Spec, seq: u64) -> (u64, Events) {
    let mut events = Events::default();
    let params = json!([1, "BTC", "deposit", seq, "1", {}]);
    m.apply(T0 + seq, &decode(spec, "balance.update", params.as_array().unwrap()).unwrap(), &mut events).unwrap();
    (seq, events)
}
