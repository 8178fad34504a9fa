//! The engine against the reference model over a seeded random workload: every reply compared,
//! command by command, and the global invariants checked throughout. A difference names the seed
//! and the command number, so it can be replayed.

mod common;
mod model;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use viaduct_matcher::config::{AssetConfig, Config, MarketConfig, MarketSide};
use viaduct_matcher::event::OrderEventKind;
use viaduct_matcher::{Command, EventRef, Events, Matcher, Reply, Spec};
use viaduct_protocol::{decode, response_json};

use model::Model;

/// Three markets that between them exercise every scale rule: the ViaBTC sample (8/8, money kept
/// at 20), a coarse stock (4 decimals), and a market whose money keeps fewer decimals than an
/// ask's fee has (6 < 6 + 0 + 2), with prices in whole units (precision 0).
fn config() -> Config {
    let asset = |name: &str, save, show| AssetConfig { name: name.into(), prec_save: save, prec_show: Some(show) };
    let market = |name: &str, stock: &str, sp, money: &str, mp, fp, min: &str| MarketConfig {
        name: name.into(),
        stock: MarketSide { name: stock.into(), prec: sp },
        money: MarketSide { name: money.into(), prec: mp },
        fee_prec: Some(fp),
        min_amount: Some(min.into()),
    };
    Config {
        assets: vec![asset("BCH", 20, 8), asset("BTC", 12, 8), asset("ETH", 10, 6), asset("USD", 6, 4)],
        markets: vec![
            market("BTCBCH", "BTC", 8, "BCH", 8, 4, "0.001"),
            market("ETHBCH", "ETH", 4, "BCH", 8, 4, "0.01"),
            market("BTCUSD", "BTC", 6, "USD", 0, 2, "0.0001"),
        ],
    }
}

struct Workload {
    rng: ChaCha8Rng,
    now: u64,
    users: u32,
    markets: Vec<String>,
    assets: Vec<String>,
    /// Mid price per market, as a random walk.
    mids: Vec<f64>,
    updates: Vec<(u32, String, String, u64)>,
    business_id: u64,
}

impl Workload {
    fn decimal(&mut self, value: f64, max_decimals: usize) -> String {
        let decimals = self.rng.gen_range(0..=max_decimals);
        format!("{value:.decimals$}")
    }

    fn user(&mut self) -> u32 {
        self.rng.gen_range(1..=self.users)
    }

    fn fee(&mut self) -> String {
        ["0", "0.001", "0.002", "0.0015", "0.00255", "0.01", "0.003999"][self.rng.gen_range(0..7)].to_string()
    }

    /// The next request: (method, params).
    fn next(&mut self, model: &Model) -> (&'static str, Vec<Value>) {
        self.now += self.rng.gen_range(0..2_000_000);
        if self.rng.gen_ratio(1, 20_000) {
            self.now += 43_200_000_000; // half a day: dedupe entries expire
        }
        let m = self.rng.gen_range(0..self.markets.len());
        let market = self.markets[m].clone();
        self.mids[m] *= 1.0 + self.rng.gen_range(-0.002..0.002);
        let roll = self.rng.gen_range(0..100);
        let crowded = model.orders.len() > 500;
        match roll {
            0..=7 => self.deposit(),
            8..=9 => {
                let (user, asset) = (self.user(), self.assets[self.rng.gen_range(0..self.assets.len())].clone());
                let amount = self.rng.gen_range(0.0..50.0);
                let change = format!("-{}", self.decimal(amount, 9));
                self.business_id += 1;
                (
                    "balance.update",
                    vec![
                        json!(user),
                        json!(asset),
                        json!("withdraw"),
                        json!(self.business_id),
                        json!(change),
                        json!({}),
                    ],
                )
            }
            10 if !self.updates.is_empty() => {
                let (user, asset, business, id) = self.updates[self.rng.gen_range(0..self.updates.len())].clone();
                (
                    "balance.update",
                    vec![json!(user), json!(asset), json!(business), json!(id), json!("1"), json!({"again": true})],
                )
            }
            11..=54 if !crowded => {
                let side = self.rng.gen_range(1..=2u8);
                let skew = if side == 1 { 1.0 } else { -1.0 } * self.rng.gen_range(-0.01..0.05);
                let price = self.decimal(self.mids[m] * (1.0 + skew), 10);
                let amount = self.amount();
                let (tf, mf) = (self.fee(), self.fee());
                let user = self.trader(model, m);
                let mut params = vec![
                    json!(user),
                    json!(market),
                    json!(side),
                    json!(amount),
                    json!(price),
                    json!(tf),
                    json!(mf),
                    json!("gen"),
                ];
                if self.rng.gen_ratio(2, 5) {
                    params.push(self.options());
                }
                ("order.put_limit", params)
            }
            55..=62 => {
                let side = self.rng.gen_range(1..=2u8);
                // How the amount is given: the side's own unit (absent, or named), a bid by
                // stock, now and then one that is refused.
                let amount_in = match self.rng.gen_range(0..20) {
                    0..=7 => None,
                    8..=15 => Some("stock"),
                    16..=18 if side == 2 => Some("money"),
                    16..=18 => None,
                    _ => Some(["money", "shares", ""][self.rng.gen_range(0..3)]),
                };
                let money = self.rng.gen_range(0.0..3.0) * self.mids[m];
                let amount =
                    if side == 2 && amount_in != Some("stock") { self.decimal(money, 10) } else { self.amount() };
                let (user, fee) = (self.trader(model, m), self.fee());
                let mut params = vec![json!(user), json!(market), json!(side), json!(amount), json!(fee), json!("")];
                let mut options = serde_json::Map::new();
                if self.rng.gen_ratio(1, 3) {
                    options.insert("self_trade".into(), json!(self.self_trade()));
                }
                if let Some(unit) = amount_in {
                    options.insert("amount_in".into(), json!(unit));
                }
                if !options.is_empty() {
                    params.push(Value::Object(options));
                }
                ("order.put_market", params)
            }
            67..=69 => self.amend(model),
            70 => {
                let user = match model.orders.is_empty() {
                    false if self.rng.gen_ratio(4, 5) => model.orders[self.rng.gen_range(0..model.orders.len())].user,
                    _ => self.user(),
                };
                let params = match self.rng.gen_range(0..3) {
                    0 => vec![json!(user)],
                    1 => vec![json!(user), json!(market)],
                    _ => vec![json!(user), json!(market), json!(self.rng.gen_range(1..=2))],
                };
                ("order.cancel_all", params)
            }
            63..=66 | 11..=54 => self.cancel(model),
            71..=78 => ("order.book", vec![json!(market), json!(self.rng.gen_range(1..=2)), json!(0), json!(20)]),
            89..=91 => {
                let interval = ["0", "0.001", "0.01", "0.0005", "10", "100"][self.rng.gen_range(0..6)];
                ("order.depth", vec![json!(market), json!(20), json!(interval)])
            }
            79..=94 => ("balance.query", vec![json!(self.user())]),
            95..=96 => ("order.pending", vec![json!(self.user()), json!(market), json!(0), json!(100)]),
            97 => {
                let id = self.rng.gen_range(1..=model.orders.last().map_or(1, |o| o.id + 2));
                ("order.pending_detail", vec![json!(market), json!(id)])
            }
            98 => ("market.summary", vec![]),
            _ => ("asset.summary", vec![]),
        }
    }

    /// A user for a new order in market `m`: often one with open orders there, so that orders
    /// meet their own user's and self-trade prevention has work.
    fn trader(&mut self, model: &Model, m: usize) -> u32 {
        let there: Vec<u32> = model.orders.iter().filter(|o| o.market == m).map(|o| o.user).collect();
        if !there.is_empty() && self.rng.gen_ratio(1, 3) {
            there[self.rng.gen_range(0..there.len())]
        } else {
            self.user()
        }
    }

    fn self_trade(&mut self) -> &'static str {
        ["none", "cancel_taker", "cancel_maker", "cancel_both"][self.rng.gen_range(0..4)]
    }

    /// The options object of a limit order: each option present or not; now and then one that is
    /// refused (an unknown key or value, post-only with IOC).
    fn options(&mut self) -> Value {
        let mut o = serde_json::Map::new();
        let tif = ["GTC", "IOC", "FOK"][self.rng.gen_range(0..3)];
        if self.rng.gen_ratio(3, 4) {
            o.insert("time_in_force".into(), json!(tif));
        }
        if self.rng.gen_ratio(1, 3) && (tif == "GTC" || self.rng.gen_ratio(1, 20)) {
            o.insert("post_only".into(), json!(true));
        }
        if self.rng.gen_ratio(1, 2) {
            o.insert("self_trade".into(), json!(self.self_trade()));
        }
        if self.rng.gen_ratio(1, 100) {
            o.insert(["expire", "time_in_force"][self.rng.gen_range(0..2)].into(), json!("DAY"));
        }
        Value::Object(o)
    }

    /// `order.amend` of an open order (now and then someone else's, or one that is gone): a new
    /// price near its own, a new amount left, or both.
    fn amend(&mut self, model: &Model) -> (&'static str, Vec<Value>) {
        let Some(o) = (!model.orders.is_empty()).then(|| &model.orders[self.rng.gen_range(0..model.orders.len())])
        else {
            return self.deposit();
        };
        let user = if self.rng.gen_ratio(1, 20) { self.user() } else { o.user };
        let id = if self.rng.gen_ratio(1, 20) { o.id + 1_000_000 } else { o.id };
        let market = model_market(model, o);
        let price = o.price.to_string().parse::<f64>().unwrap();
        let left = o.left.to_string().parse::<f64>().unwrap();
        let (k, shift, scale) =
            (self.rng.gen_range(0..10), self.rng.gen_range(-0.01..0.01), self.rng.gen_range(0.2..3.0));
        let moved = self.decimal(price * (1.0 + shift), 10);
        let resized = self.decimal(left * scale, 10);
        let (new_price, new_left) = match k {
            0..=3 => (Value::Null, json!(resized)),
            4..=5 => (json!(moved), Value::Null),
            _ => (json!(moved), json!(resized)),
        };
        ("order.amend", vec![json!(user), json!(market), json!(id), new_price, new_left])
    }

    fn amount(&mut self) -> String {
        let amount = match self.rng.gen_range(0..10) {
            0 => self.rng.gen_range(0.0..0.002),
            1..=7 => self.rng.gen_range(0.0..2.0),
            _ => self.rng.gen_range(0.0..20.0),
        };
        self.decimal(amount, 10)
    }

    fn deposit(&mut self) -> (&'static str, Vec<Value>) {
        let (user, asset) = (self.user(), self.assets[self.rng.gen_range(0..self.assets.len())].clone());
        let scale = if asset == "USD" { 20_000.0 } else { 100.0 };
        let amount = self.rng.gen_range(0.0..scale);
        let change = self.decimal(amount, 10);
        self.business_id += 1;
        self.updates.push((user, asset.clone(), "deposit".into(), self.business_id));
        (
            "balance.update",
            vec![json!(user), json!(asset), json!("deposit"), json!(self.business_id), json!(change), json!({"n": 1})],
        )
    }

    fn cancel(&mut self, model: &Model) -> (&'static str, Vec<Value>) {
        let Some(o) = (!model.orders.is_empty()).then(|| &model.orders[self.rng.gen_range(0..model.orders.len())])
        else {
            return self.deposit();
        };
        let user = if self.rng.gen_ratio(1, 10) { self.user() } else { o.user };
        let id = if self.rng.gen_ratio(1, 20) { o.id + 1_000_000 } else { o.id };
        let market = self.markets[self.rng.gen_range(0..self.markets.len())].clone();
        let market = if self.rng.gen_ratio(9, 10) { model_market(model, o) } else { market };
        ("order.cancel", vec![json!(user), json!(market), json!(id)])
    }
}

fn model_market(model: &Model, o: &model::Order) -> String {
    let json = model.order_json(o);
    json["market"].as_str().unwrap().to_string()
}

fn message(code: i64) -> &'static str {
    match code {
        1 => "invalid argument",
        10..=15 => "",
        _ => panic!("unexpected code {code}"),
    }
}

fn run(seed: u64, commands: usize) {
    let cfg = config();
    let spec = Spec::new(&cfg).unwrap();
    let mut engine = Matcher::new(spec.clone());
    let mut model = Model::new(&cfg);
    let mut w = Workload {
        rng: ChaCha8Rng::seed_from_u64(seed),
        now: common::T0,
        users: 60,
        markets: model.market_names(),
        assets: model.asset_names(),
        mids: vec![0.05, 0.02, 30_000.0],
        updates: Vec::new(),
        business_id: 0,
    };
    let mut supply: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut events = Events::default();
    // A second engine records the same commands into one buffer per 100 commands, as recovery
    // does; each command's view of it must be exactly that command's events.
    let mut gathering = engine.clone();
    let mut gathered = Events::default();
    let (mut last_id, mut outcomes) = (0u64, BTreeMap::<String, usize>::new());
    for n in 0..commands {
        let (method, params) = w.next(&model);
        events.clear();
        let cmd = decode(&spec, method, &params);
        let outcome = cmd.as_ref().map_err(Clone::clone).and_then(|c| engine.apply(w.now, c, &mut events));
        if let Ok(Reply::Order(Some(ended))) = &outcome {
            *outcomes.entry(format!("ended {ended:?}")).or_default() += 1;
        }
        if matches!(cmd, Ok(Command::PutLimit(_) | Command::PutMarket(_))) {
            let taker = events.last_order().map(|o| o.id);
            let own_cancels = events
                .iter()
                .filter(
                    |e| matches!(e, EventRef::Order(OrderEventKind::Finish, o) if Some(o.id) != taker && o.left > 0),
                )
                .count();
            *outcomes.entry("resting orders cancelled by self-trade prevention".into()).or_default() += own_cancels;
        }
        if let Ok(c) = &cmd {
            if n % 100 == 0 {
                gathered.clear();
            }
            let from = gathered.mark();
            assert_eq!(gathering.apply(w.now, c, &mut gathered).is_ok(), outcome.is_ok());
            let view = gathered.between(from, gathered.mark());
            assert_eq!(view.len(), events.len());
            assert_eq!(
                view.iter().map(|e| e.to_owned()).collect::<Vec<_>>(),
                events.to_vec(),
                "seed {seed}, command {n}"
            );
            assert_eq!(view.deals(), events.deals());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            view.encode_canonical(&mut a);
            events.encode_canonical(&mut b);
            assert_eq!(a, b);
        }
        let got: Value = serde_json::from_str(&response_json(&spec, 1, &outcome, &events)).unwrap();
        let expected = model.call(w.now, method, &params);
        let ctx = || format!("seed {seed}, command {n}: {method} {}", Value::Array(params.clone()));
        match &expected {
            Ok(result) => assert_eq!(&got["result"], result, "{}\nengine: {got}", ctx()),
            Err(code) => {
                assert_eq!(got["error"]["code"], *code, "{}\nengine: {got}", ctx());
                if !message(*code).is_empty() {
                    assert_eq!(got["error"]["message"], message(*code));
                }
                assert!(events.is_empty(), "{}: an error emitted events", ctx());
            }
        }
        *outcomes.entry(format!("{method} {}", expected.as_ref().err().unwrap_or(&0))).or_default() += 1;
        if let (Ok(r), "order.put_limit" | "order.put_market") = (&expected, method) {
            let id = r["id"].as_u64().unwrap();
            assert_eq!(id, last_id + 1, "{}: order ids must advance by one", ctx());
            last_id = id;
        }
        if let (Ok(r), "order.put_market") = (&expected, method) {
            if r["type"] == 3 {
                let rest = if r["left"] == "0" { "bought all" } else { "rest cancelled" };
                *outcomes.entry(format!("market bid by stock, {rest}")).or_default() += 1;
            }
        }
        if let (Ok(r), "order.amend") = (&expected, method) {
            last_id = last_id.max(r["id"].as_u64().unwrap());
        }
        if let (Ok(_), "balance.update") = (&expected, method) {
            let asset = params[1].as_str().unwrap().to_string();
            let prec = spec.asset(spec.asset_id(&asset).unwrap()).prec_show;
            let change = Decimal::from_str_exact(params[4].as_str().unwrap())
                .unwrap()
                .round_dp_with_strategy(prec, rust_decimal::RoundingStrategy::ToZero);
            *supply.entry(asset).or_default() += change;
        }
        if n % 5_000 == 0 || n + 1 == commands {
            check_global(&engine, &model, &supply, &spec).unwrap_or_else(|e| panic!("{}: {e}", ctx()));
        }
    }
    // The workload must have reached every outcome that matters, or it tests less than it claims.
    for key in [
        "order.put_limit 0",
        "order.put_limit 10",
        "order.put_limit 11",
        "order.put_market 0",
        "order.put_market 10",
        "order.put_market 11",
        "order.put_market 1",
        "market bid by stock, bought all",
        "market bid by stock, rest cancelled",
        "order.cancel 0",
        "order.cancel 10",
        "order.cancel 11",
        "order.put_limit 1",
        "order.put_limit 14",
        "order.put_limit 15",
        "order.amend 0",
        "order.amend 10",
        "order.amend 11",
        "order.amend 14",
        "order.cancel_all 0",
        "ended SelfTrade",
        "ended ImmediateOrCancel",
        "ended MarketRest",
        "resting orders cancelled by self-trade prevention",
        "balance.update 10",
        "balance.update 11",
    ] {
        assert!(
            outcomes.get(key).copied().unwrap_or(0) > 0,
            "seed {seed}: the workload never produced {key}: {outcomes:?}"
        );
    }
    assert!(engine.last_deal_id() > commands as u64 / 10, "seed {seed}: too few trades ({})", engine.last_deal_id());
}

/// Global checks: the engine's own invariants, every balance and fee total equal to the model's,
/// and balances plus fees equal to deposits minus withdrawals.
fn check_global(
    engine: &Matcher,
    model: &Model,
    supply: &BTreeMap<String, Decimal>,
    spec: &Spec,
) -> Result<(), String> {
    engine.check_invariants()?;
    let to_dec = |m: i128, scale: u32| Decimal::from_i128_with_scale(m, scale);
    for (a, asset) in spec.assets.iter().enumerate() {
        let fees = to_dec(engine.fees(a as u16), asset.prec_save);
        let model_fees = model.fees.get(&asset.name).copied().unwrap_or_default();
        if fees != model_fees {
            return Err(format!("fees of {}: engine {fees}, model {model_fees}", asset.name));
        }
        let total = model.totals().get(&asset.name).copied().unwrap_or_default();
        let deposited = supply.get(&asset.name).copied().unwrap_or_default();
        if total != deposited {
            return Err(format!("{}: balances + fees {total} != deposits − withdrawals {deposited}", asset.name));
        }
    }
    for ((user, asset), (av, fr)) in &model.balances {
        let id = spec.asset_id(asset).unwrap();
        let b = engine.balance(*user, id);
        let prec = spec.asset(id).prec_save;
        if (to_dec(b.available, prec), to_dec(b.freeze, prec)) != (*av, *fr) {
            return Err(format!("user {user} {asset}: engine {b:?}, model ({av}, {fr})"));
        }
    }
    Ok(())
}

#[test]
fn engine_equals_model_seed_1() {
    run(1, 250_000);
}

#[test]
fn engine_equals_model_seed_2() {
    run(2, 250_000);
}

#[test]
fn engine_equals_model_seed_3() {
    run(3, 250_000);
}

#[test]
fn engine_equals_model_seed_4() {
    run(4, 250_000);
}
