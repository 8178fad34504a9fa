//! A matcher driven the way an edge drives it: method name and JSON params in, JSON reply out.
#![allow(dead_code)]

use serde_json::{json, Value};
use viaduct_matcher::{config, Event, Events, Matcher, Spec};
use viaduct_protocol::{decode, response_json};

pub const T0: u64 = 1_700_000_000_000_000;

pub struct Engine {
    pub m: Matcher,
    pub now: u64,
    /// The last call's events, owned.
    pub events: Vec<Event>,
    buf: Events,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::with_spec(Spec::new(&config::embedded()).unwrap())
    }

    pub fn with_spec(spec: Spec) -> Engine {
        Engine::with_matcher(Matcher::new(spec), T0)
    }

    pub fn with_matcher(m: Matcher, now: u64) -> Engine {
        Engine { m, now, events: Vec::new(), buf: Events::default() }
    }

    /// Calls `method` and returns the whole JSON-RPC response; events land in `self.events`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.buf.clear();
        let params = params.as_array().expect("params array").clone();
        let outcome =
            decode(self.m.spec(), method, &params).and_then(|cmd| self.m.apply(self.now, &cmd, &mut self.buf));
        self.events = self.buf.to_vec();
        let text = response_json(self.m.spec(), 7, &outcome, &self.buf);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], 7);
        v
    }

    /// The result of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params.clone());
        assert!(v["error"].is_null(), "{method} {params} failed: {v}");
        v["result"].clone()
    }

    /// The error code of a call that must fail, after checking it changed nothing.
    pub fn err(&mut self, method: &str, params: Value) -> i64 {
        let before = self.m.state_hash();
        let v = self.call(method, params.clone());
        assert!(v["result"].is_null(), "{method} {params} succeeded: {v}");
        assert!(self.events.is_empty(), "{method} {params} failed but emitted events");
        assert_eq!(before, self.m.state_hash(), "{method} {params} failed but changed state");
        let code = v["error"]["code"].as_i64().unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        let expected = match code {
            1 => "invalid argument",
            3 => "service unavailable",
            4 => "method not found",
            _ => message,
        };
        assert_eq!(message, expected);
        code
    }

    pub fn deposit(&mut self, user: u32, asset: &str, amount: &str) {
        let id = self.now + u64::from(user);
        self.now += 1;
        self.ok("balance.update", json!([user, asset, "deposit", id, amount, {}]));
    }

    /// (available, freeze) as `balance.query` prints them; leaves `self.events` as it was.
    pub fn balance(&mut self, user: u32, asset: &str) -> (String, String) {
        let events = std::mem::take(&mut self.events);
        let r = self.ok("balance.query", json!([user, asset]));
        self.events = events;
        (r[asset]["available"].as_str().unwrap().to_string(), r[asset]["freeze"].as_str().unwrap().to_string())
    }

    pub fn limit(&mut self, user: u32, side: u8, amount: &str, price: &str) -> Value {
        self.ok("order.put_limit", json!([user, "BTCBCH", side, amount, price, "0", "0", "test"]))
    }
}
