//! A small reference model of ViaBTC's matchengine, written for obviousness, not speed: decimals
//! are `rust_decimal` values truncated after every step, open orders one `Vec` scanned linearly,
//! balances a `BTreeMap`. It reads the same JSON params as the engine and answers JSON, so the two
//! share no code but `serde_json`.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};
use viaduct_matcher::config::Config;

type D = Decimal;

fn trunc(d: D, prec: u32) -> D {
    d.round_dp_with_strategy(prec, RoundingStrategy::ToZero)
}

fn show(d: D) -> Value {
    if d.is_zero() {
        return json!("0");
    }
    json!(d.normalize().to_string())
}

fn parse(v: &Value, prec: u32) -> Option<D> {
    D::from_str(v.as_str()?).ok().map(|d| trunc(d, prec))
}

#[derive(Clone)]
pub struct Order {
    pub id: u64,
    pub market: usize,
    pub side: u8,
    kind: u8,
    pub user: u32,
    ctime: f64,
    mtime: f64,
    pub price: D,
    amount: D,
    pub left: D,
    taker_fee: D,
    maker_fee: D,
    deal_stock: D,
    deal_money: D,
    deal_fee: D,
    source: String,
}

struct Asset {
    name: String,
    save: u32,
    show: u32,
}

struct Market {
    name: String,
    stock: String,
    money: String,
    sp: u32,
    mp: u32,
    fp: u32,
    min: D,
}

pub struct Model {
    assets: Vec<Asset>,
    markets: Vec<Market>,
    /// (user, asset) → (available, freeze)
    pub balances: BTreeMap<(u32, String), (D, D)>,
    pub fees: BTreeMap<String, D>,
    /// Open orders of every market, in id order.
    pub orders: Vec<Order>,
    order_id: u64,
    deal_id: u64,
    dedupe: HashMap<(u32, String, String, u64), u64>,
}

pub type Outcome = Result<Value, i64>;

impl Model {
    pub fn new(cfg: &Config) -> Model {
        let assets = cfg
            .assets
            .iter()
            .map(|a| Asset { name: a.name.clone(), save: a.prec_save, show: a.prec_show.unwrap_or(a.prec_save) })
            .collect();
        let markets = cfg
            .markets
            .iter()
            .map(|m| Market {
                name: m.name.clone(),
                stock: m.stock.name.clone(),
                money: m.money.name.clone(),
                sp: m.stock.prec,
                mp: m.money.prec,
                fp: m.fee_prec.unwrap_or(4),
                min: trunc(D::from_str(m.min_amount.as_deref().unwrap_or("0.01")).unwrap(), m.stock.prec),
            })
            .collect();
        Model {
            assets,
            markets,
            balances: BTreeMap::new(),
            fees: BTreeMap::new(),
            orders: Vec::new(),
            order_id: 0,
            deal_id: 0,
            dedupe: HashMap::new(),
        }
    }

    fn asset(&self, name: &str) -> &Asset {
        self.assets.iter().find(|a| a.name == name).unwrap()
    }

    fn market(&self, v: &Value) -> Option<usize> {
        self.markets.iter().position(|m| Some(m.name.as_str()) == v.as_str())
    }

    pub fn bal(&self, user: u32, asset: &str) -> (D, D) {
        self.balances.get(&(user, asset.to_string())).copied().unwrap_or_default()
    }

    /// Adds `d` to available (or freeze) and truncates the result to `prec_save`; returns what changed.
    fn change(&mut self, user: u32, asset: &str, d: D, frozen: bool) -> D {
        let save = self.asset(asset).save;
        let e = self.balances.entry((user, asset.to_string())).or_default();
        let slot = if frozen { &mut e.1 } else { &mut e.0 };
        let before = *slot;
        *slot = trunc(*slot + d, save);
        assert!(*slot >= D::ZERO, "model: negative balance");
        *slot - before
    }

    pub fn call(&mut self, now_us: u64, method: &str, p: &[Value]) -> Outcome {
        let now = now_us as f64 / 1e6;
        match method {
            "balance.update" => self.balance_update(now_us, p),
            "balance.query" => {
                let user = p[0].as_u64().unwrap() as u32;
                let mut out = serde_json::Map::new();
                for a in &self.assets {
                    let (av, fr) = self.bal(user, &a.name);
                    out.insert(
                        a.name.clone(),
                        json!({"available": show(trunc(av, a.show)), "freeze": show(trunc(fr, a.show))}),
                    );
                }
                Ok(Value::Object(out))
            }
            "order.put_limit" => self.put_limit(now, p),
            "order.put_market" => self.put_market(now, p),
            "order.cancel" => self.cancel(p),
            "order.cancel_all" => self.cancel_all(p),
            "order.amend" => self.amend(now, p),
            "order.pending" => {
                let (user, m) = (p[0].as_u64().unwrap() as u32, self.market(&p[1]).unwrap());
                let mine: Vec<&Order> = self.orders.iter().rev().filter(|o| o.user == user && o.market == m).collect();
                let recs: Vec<Value> = mine.iter().take(100).map(|o| self.order_json(o)).collect();
                Ok(json!({"limit": 100, "offset": 0, "total": mine.len(), "records": recs}))
            }
            "order.book" => {
                let (m, side) = (self.market(&p[0]).unwrap(), p[1].as_u64().unwrap() as u8);
                let sorted = self.sorted(m, side);
                let orders: Vec<Value> = sorted.iter().take(20).map(|o| self.order_json(o)).collect();
                Ok(json!({"offset": 0, "limit": 20, "total": sorted.len(), "orders": orders}))
            }
            "order.depth" => {
                let m = self.market(&p[0]).unwrap();
                let interval = parse(&p[2], self.markets[m].mp).unwrap();
                Ok(json!({"asks": self.depth(m, 1, interval), "bids": self.depth(m, 2, interval)}))
            }
            "order.pending_detail" => {
                let (m, id) = (self.market(&p[0]).unwrap(), p[1].as_u64().unwrap());
                Ok(self.orders.iter().find(|o| o.id == id && o.market == m).map_or(Value::Null, |o| self.order_json(o)))
            }
            "market.summary" => Ok(Value::Array((0..self.markets.len()).map(|m| self.market_summary(m)).collect())),
            "asset.summary" => Ok(Value::Array(self.assets.iter().map(|a| self.asset_summary(&a.name)).collect())),
            _ => panic!("model does not know {method}"),
        }
    }

    fn balance_update(&mut self, now_us: u64, p: &[Value]) -> Outcome {
        let (user, asset) = (p[0].as_u64().unwrap() as u32, p[1].as_str().unwrap().to_string());
        let key = (user, asset.clone(), p[2].as_str().unwrap().to_string(), p[3].as_u64().unwrap());
        let change = parse(&p[4], self.asset(&asset).show).ok_or(1)?;
        if self.dedupe.get(&key).is_some_and(|&t| t + 86_400_000_000 > now_us) {
            return Err(10);
        }
        if change < D::ZERO && self.bal(user, &asset).0 < -change {
            return Err(11);
        }
        self.change(user, &asset, change, false);
        self.dedupe.insert(key, now_us);
        Ok(json!({"status": "success"}))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_order(
        &mut self,
        now: f64,
        m: usize,
        side: u8,
        kind: u8,
        user: u32,
        price: D,
        amount: D,
        tf: D,
        mf: D,
        src: &str,
    ) -> Order {
        self.order_id += 1;
        Order {
            id: self.order_id,
            market: m,
            side,
            kind,
            user,
            ctime: now,
            mtime: now,
            price,
            amount,
            left: amount,
            taker_fee: tf,
            maker_fee: mf,
            deal_stock: D::ZERO,
            deal_money: D::ZERO,
            deal_fee: D::ZERO,
            source: src.to_string(),
        }
    }

    fn put_limit(&mut self, now: f64, p: &[Value]) -> Outcome {
        let (mut tif, mut post_only, mut stp) = ("GTC", false, "none");
        if let Some(options) = p.get(8) {
            for (k, v) in options.as_object().unwrap() {
                match k.as_str() {
                    "time_in_force" => tif = v.as_str().unwrap(),
                    "post_only" => post_only = v.as_bool().unwrap(),
                    "self_trade" => stp = v.as_str().unwrap(),
                    _ => return Err(1),
                }
            }
        }
        if (post_only && tif != "GTC") || !["GTC", "IOC", "FOK"].contains(&tif) {
            return Err(1);
        }
        let m = self.market(&p[1]).unwrap();
        let (sp, mp, fp) = (self.markets[m].sp, self.markets[m].mp, self.markets[m].fp);
        let (user, side) = (p[0].as_u64().unwrap() as u32, p[2].as_u64().unwrap() as u8);
        let amount = parse(&p[3], sp).unwrap();
        let price = parse(&p[4], mp).unwrap();
        let (tf, mf) = (parse(&p[5], fp).unwrap(), parse(&p[6], fp).unwrap());
        if amount <= D::ZERO || price <= D::ZERO {
            return Err(1);
        }
        let mk = &self.markets[m];
        let enough = if side == 1 {
            self.bal(user, &mk.stock).0 >= amount
        } else {
            self.bal(user, &mk.money).0 >= amount * price
        };
        if !enough {
            return Err(10);
        }
        if amount < mk.min {
            return Err(11);
        }
        let crosses = |o: &Order| if side == 1 { price <= o.price } else { price >= o.price };
        if post_only && self.best(m, 3 - side).is_some_and(|o| crosses(&o)) {
            return Err(14);
        }
        if tif == "FOK" {
            // What would trade: the crossing orders in priority order, up to one of the user's own
            // that stops the order, leaving out those self-trade prevention cancels.
            let mut fillable = D::ZERO;
            for o in self.sorted(m, 3 - side).iter().take_while(|o| crosses(o)) {
                match (o.user == user, stp) {
                    (true, "cancel_maker") => continue,
                    (true, "cancel_taker" | "cancel_both") => break,
                    _ => fillable += o.left,
                }
            }
            if fillable < amount {
                return Err(15);
            }
        }
        let mut taker = self.new_order(now, m, side, 1, user, price, amount, tf, mf, p[7].as_str().unwrap());
        let stopped = self.take(&mut taker, now, true, stp);
        if taker.left > D::ZERO && !stopped && tif == "GTC" {
            let mk = &self.markets[m];
            let (asset, freeze) =
                if side == 1 { (mk.stock.clone(), taker.left) } else { (mk.money.clone(), taker.price * taker.left) };
            self.change(user, &asset, -freeze, false);
            self.change(user, &asset, freeze, true);
            self.orders.push(taker.clone());
        }
        Ok(self.order_json(&taker))
    }

    fn put_market(&mut self, now: f64, p: &[Value]) -> Outcome {
        let option = |key: &str| p.get(6).and_then(|o| o.get(key)).map(|v| v.as_str().unwrap_or("?"));
        let stp = option("self_trade").unwrap_or("none");
        let m = self.market(&p[1]).unwrap();
        let (user, side) = (p[0].as_u64().unwrap() as u32, p[2].as_u64().unwrap() as u8);
        let by_stock = match (side, option("amount_in")) {
            (_, None) | (2, Some("money")) => false,
            (_, Some("stock")) => side == 2,
            _ => return Err(1),
        };
        let mk = &self.markets[m];
        let amount = parse(&p[3], mk.sp).unwrap();
        let tf = parse(&p[4], mk.fp).unwrap();
        if amount <= D::ZERO {
            return Err(1);
        }
        if by_stock {
            // It buys `amount` stock, as far as its money and the book go; its money must pay for
            // the minimum amount at the best price.
            let Some(best) = self.best(m, 1) else { return Err(12) };
            let mk = &self.markets[m];
            if amount < mk.min {
                return Err(11);
            }
            if self.bal(user, &mk.money).0 < best.price * mk.min {
                return Err(10);
            }
            let mut taker = self.new_order(now, m, side, 3, user, D::ZERO, amount, tf, D::ZERO, p[5].as_str().unwrap());
            self.take(&mut taker, now, false, stp);
            return Ok(self.order_json(&taker));
        }
        let funds = if side == 1 { &mk.stock } else { &mk.money };
        if self.bal(user, funds).0 < amount {
            return Err(10);
        }
        let Some(best) = self.best(m, 3 - side) else { return Err(12) };
        let mk = &self.markets[m];
        if (side == 1 && amount < mk.min) || (side == 2 && amount < best.price * mk.min) {
            return Err(11);
        }
        let mut taker = self.new_order(now, m, side, 2, user, D::ZERO, amount, tf, D::ZERO, p[5].as_str().unwrap());
        self.take(&mut taker, now, false, stp);
        Ok(self.order_json(&taker))
    }

    /// Open orders of one market side in priority order.
    fn sorted(&self, m: usize, side: u8) -> Vec<Order> {
        let mut v: Vec<Order> = self.orders.iter().filter(|o| o.market == m && o.side == side).cloned().collect();
        v.sort_by(|a, b| {
            let by_price = if side == 1 { a.price.cmp(&b.price) } else { b.price.cmp(&a.price) };
            by_price.then(a.id.cmp(&b.id))
        });
        v
    }

    /// The first order of one market side in priority order.
    fn best(&self, m: usize, side: u8) -> Option<Order> {
        let better = |a: &&Order, b: &&Order| {
            let by_price = if side == 1 { a.price.cmp(&b.price) } else { b.price.cmp(&a.price) };
            by_price.then(a.id.cmp(&b.id))
        };
        self.orders.iter().filter(|o| o.market == m && o.side == side).min_by(better).cloned()
    }

    /// Trades `taker` with the book; true if self-trade prevention (`stp`) cancelled its rest.
    fn take(&mut self, taker: &mut Order, now: f64, limit: bool, stp: &str) -> bool {
        let m = taker.market;
        loop {
            if taker.left <= D::ZERO {
                break;
            }
            let Some(maker) = self.best(m, 3 - taker.side) else { break };
            if limit
                && ((taker.side == 1 && taker.price > maker.price) || (taker.side == 2 && taker.price < maker.price))
            {
                break;
            }
            let price = maker.price;
            let amount = if taker.kind == 2 && taker.side == 2 {
                let sp = self.markets[m].sp;
                let unit = D::new(1, sp);
                let mut a = trunc(taker.left / price, sp);
                while a * price > taker.left {
                    a -= unit;
                }
                a.min(maker.left)
            } else if taker.kind == 3 {
                // What its available money pays for at this price.
                let sp = self.markets[m].sp;
                let money = self.bal(taker.user, &self.markets[m].money.clone()).0;
                let mut a = trunc(money / price, sp);
                while a * price > money {
                    a -= D::new(1, sp);
                }
                a.min(taker.left).min(maker.left)
            } else {
                taker.left.min(maker.left)
            };
            if amount <= D::ZERO {
                break;
            }
            if maker.user == taker.user && stp != "none" {
                if stp != "cancel_taker" {
                    self.remove(maker.id);
                }
                if stp == "cancel_maker" {
                    continue;
                }
                return true;
            }
            self.trade(taker, maker, price, amount, now);
        }
        false
    }

    /// Takes open order `id` off the book and unfreezes what it held; returns it.
    fn remove(&mut self, id: u64) -> Order {
        let at = self.orders.iter().position(|o| o.id == id).unwrap();
        let o = self.orders.remove(at);
        let mk = &self.markets[o.market];
        let (asset, freeze) =
            if o.side == 1 { (mk.stock.clone(), o.left) } else { (mk.money.clone(), o.price * o.left) };
        self.change(o.user, &asset, -freeze, true);
        self.change(o.user, &asset, freeze, false);
        o
    }

    fn cancel_all(&mut self, p: &[Value]) -> Outcome {
        let user = p[0].as_u64().unwrap() as u32;
        let m = p.get(1).map(|v| self.market(v).unwrap());
        let side = p.get(2).map(|v| v.as_u64().unwrap() as u8);
        let ids: Vec<u64> = self
            .orders
            .iter()
            .filter(|o| o.user == user && m.is_none_or(|m| o.market == m) && side.is_none_or(|s| o.side == s))
            .map(|o| o.id)
            .collect();
        for &id in &ids {
            self.remove(id);
        }
        Ok(json!({"count": ids.len()}))
    }

    fn amend(&mut self, now: f64, p: &[Value]) -> Outcome {
        let (user, m, id) = (p[0].as_u64().unwrap() as u32, self.market(&p[1]).unwrap(), p[2].as_u64().unwrap());
        let (sp, mp, min) = (self.markets[m].sp, self.markets[m].mp, self.markets[m].min);
        let value = |v: &Value, prec| -> Result<Option<D>, i64> {
            match (v.is_null(), parse(v, prec)) {
                (true, _) => Ok(None),
                (false, Some(d)) if d > D::ZERO => Ok(Some(d)),
                _ => Err(1),
            }
        };
        let (price, left) = (value(&p[3], mp)?, value(&p[4], sp)?);
        if price.is_none() && left.is_none() {
            return Err(1);
        }
        let old = self.orders.iter().find(|o| o.id == id && o.market == m).cloned().ok_or(10)?;
        if old.user != user {
            return Err(11);
        }
        let (price, left) = (price.unwrap_or(old.price), left.unwrap_or(old.left));
        if left != old.left && left < min {
            return Err(11);
        }
        let crosses = |o: &Order| if old.side == 1 { price <= o.price } else { price >= o.price };
        if price != old.price && self.best(m, 3 - old.side).is_some_and(|o| crosses(&o)) {
            return Err(14);
        }
        let mk = &self.markets[m];
        let (asset, frozen, need) = if old.side == 1 {
            (mk.stock.clone(), old.left, left)
        } else {
            (mk.money.clone(), old.price * old.left, price * left)
        };
        if need > self.bal(user, &asset).0 + frozen {
            return Err(10);
        }
        if price == old.price && left <= old.left {
            if left < old.left {
                let at = self.orders.iter().position(|o| o.id == id).unwrap();
                let o = &mut self.orders[at];
                o.amount -= old.left - left;
                o.left = left;
                o.mtime = now;
                self.change(user, &asset, need - frozen, true);
                self.change(user, &asset, frozen - need, false);
            }
            let o = self.orders.iter().find(|o| o.id == id).unwrap().clone();
            return Ok(self.order_json(&o));
        }
        self.remove(id);
        let o =
            self.new_order(now, m, old.side, 1, user, price, left, old.taker_fee, old.maker_fee, &old.source.clone());
        self.change(user, &asset, -need, false);
        self.change(user, &asset, need, true);
        self.orders.push(o.clone());
        Ok(self.order_json(&o))
    }

    fn trade(&mut self, taker: &mut Order, mut maker: Order, price: D, amount: D, now: f64) {
        let (stock, money) = (self.markets[taker.market].stock.clone(), self.markets[taker.market].money.clone());
        let deal = price * amount;
        self.deal_id += 1;
        for (o, is_taker) in [(&mut *taker, true), (&mut maker, false)] {
            let rate = if is_taker { o.taker_fee } else { o.maker_fee };
            let fee = if o.side == 1 { deal * rate } else { amount * rate };
            o.left -= if o.kind == 2 && o.side == 2 { deal } else { amount };
            o.deal_stock += amount;
            o.deal_money += deal;
            o.deal_fee += fee;
            o.mtime = now;
            let (out_asset, out, in_asset, inc) =
                if o.side == 1 { (&stock, amount, &money, deal) } else { (&money, deal, &stock, amount) };
            let user = o.user;
            self.change(user, out_asset, -out, !is_taker);
            self.change(user, in_asset, inc, false);
            if fee > D::ZERO {
                let taken = -self.change(user, in_asset, -fee, false);
                *self.fees.entry(in_asset.clone()).or_default() += taken;
            }
        }
        let at = self.orders.iter().position(|o| o.id == maker.id).unwrap();
        if maker.left.is_zero() {
            self.orders.remove(at);
        } else {
            self.orders[at] = maker;
        }
    }

    fn cancel(&mut self, p: &[Value]) -> Outcome {
        let (user, m, id) = (p[0].as_u64().unwrap() as u32, self.market(&p[1]).unwrap(), p[2].as_u64().unwrap());
        let at = self.orders.iter().position(|o| o.id == id && o.market == m).ok_or(10)?;
        if self.orders[at].user != user {
            return Err(11);
        }
        let o = self.remove(id);
        Ok(self.order_json(&o))
    }

    fn depth(&self, m: usize, side: u8, interval: D) -> Value {
        let mut levels: Vec<(D, D)> = Vec::new();
        for o in self.sorted(m, side) {
            let bucket = if interval.is_zero() {
                o.price
            } else if side == 1 {
                (o.price / interval).ceil() * interval
            } else {
                (o.price / interval).floor() * interval
            };
            match levels.last_mut() {
                Some(l) if l.0 == bucket => l.1 += o.left,
                _ => levels.push((bucket, o.left)),
            }
        }
        Value::Array(levels.into_iter().take(20).map(|(p, a)| json!([show(p), show(a)])).collect())
    }

    fn market_summary(&self, m: usize) -> Value {
        let side = |s: u8| {
            let v = self.sorted(m, s);
            (v.len(), v.iter().map(|o| o.left).sum::<D>())
        };
        let ((ac, aa), (bc, ba)) = (side(1), side(2));
        json!({"name": self.markets[m].name, "ask_count": ac, "ask_amount": show(aa), "bid_count": bc, "bid_amount": show(ba)})
    }

    fn asset_summary(&self, asset: &str) -> Value {
        let (mut ac, mut ab, mut fc, mut fb) = (0, D::ZERO, 0, D::ZERO);
        for ((_, a), (av, fr)) in &self.balances {
            if a == asset {
                if !av.is_zero() {
                    ac += 1;
                    ab += av;
                }
                if !fr.is_zero() {
                    fc += 1;
                    fb += fr;
                }
            }
        }
        json!({"name": asset, "total_balance": show(ab + fb), "available_count": ac, "available_balance": show(ab),
               "freeze_count": fc, "freeze_balance": show(fb)})
    }

    pub fn order_json(&self, o: &Order) -> Value {
        json!({
            "id": o.id, "market": self.markets[o.market].name, "source": o.source, "type": o.kind, "side": o.side,
            "user": o.user, "ctime": o.ctime, "mtime": o.mtime, "price": show(o.price), "amount": show(o.amount),
            "taker_fee": show(o.taker_fee), "maker_fee": show(o.maker_fee), "left": show(o.left),
            "deal_stock": show(o.deal_stock), "deal_money": show(o.deal_money), "deal_fee": show(o.deal_fee),
        })
    }

    pub fn market_names(&self) -> Vec<String> {
        self.markets.iter().map(|m| m.name.clone()).collect()
    }

    pub fn asset_names(&self) -> Vec<String> {
        self.assets.iter().map(|a| a.name.clone()).collect()
    }

    /// Total of every balance plus fees per asset: what deposits minus withdrawals must equal.
    pub fn totals(&self) -> BTreeMap<String, D> {
        let mut t: BTreeMap<String, D> = self.fees.clone();
        for ((_, a), (av, fr)) in &self.balances {
            *t.entry(a.clone()).or_default() += av + fr;
        }
        t
    }
}
