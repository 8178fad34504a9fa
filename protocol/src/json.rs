//! Typed replies encoded as ViaBTC's JSON, with its field names and order (SPEC B2.3, B2.4): the
//! edges call these on their own threads.

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use viaduct_matcher::config::Spec;
use viaduct_matcher::decimal::Dec;
use viaduct_matcher::order::Order;
use viaduct_matcher::{Events, Reply, RpcError};

/// An order as ViaBTC prints it.
pub struct OrderJson<'a> {
    pub spec: &'a Spec,
    pub order: &'a Order,
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Serialize for OrderJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.order;
        let mk = self.spec.market(o.market);
        let amount_scale = o.amount_scale(mk);
        let mut st = s.serialize_struct("order", 16)?;
        st.serialize_field("id", &o.id)?;
        st.serialize_field("market", &mk.name)?;
        st.serialize_field("source", o.source.as_str())?;
        st.serialize_field("type", &(o.kind as u8))?;
        st.serialize_field("side", &o.side.code())?;
        st.serialize_field("user", &o.user)?;
        st.serialize_field("ctime", &seconds(o.ctime_us))?;
        st.serialize_field("mtime", &seconds(o.mtime_us))?;
        st.serialize_field("price", &Dec::new(o.price, mk.money_prec))?;
        st.serialize_field("amount", &Dec::new(o.amount, amount_scale))?;
        st.serialize_field("taker_fee", &Dec::new(o.taker_fee.into(), mk.fee_prec))?;
        st.serialize_field("maker_fee", &Dec::new(o.maker_fee.into(), mk.fee_prec))?;
        st.serialize_field("left", &Dec::new(o.left, amount_scale))?;
        st.serialize_field("deal_stock", &Dec::new(o.deal_stock, mk.stock_prec))?;
        st.serialize_field("deal_money", &Dec::new(o.deal_money, mk.money_scale()))?;
        st.serialize_field("deal_fee", &Dec::new(o.deal_fee, o.fee_scale(mk)))?;
        st.end()
    }
}

struct Orders<'a>(&'a Spec, &'a [Order]);

impl Serialize for Orders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for order in self.1 {
            seq.serialize_element(&OrderJson { spec: self.0, order })?;
        }
        seq.end()
    }
}

struct Levels<'a>(&'a [(i128, i128)], u32, u32);

impl Serialize for Levels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &(price, amount) in self.0 {
            seq.serialize_element(&[Dec::new(price, self.1), Dec::new(amount, self.2)])?;
        }
        seq.end()
    }
}

/// A reply with the spec it needs for names and scales, and the command's events.
pub struct ReplyJson<'a> {
    pub spec: &'a Spec,
    pub reply: &'a Reply,
    pub events: &'a Events,
}

impl Serialize for ReplyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let spec = self.spec;
        match self.reply {
            Reply::Balances(rows) => {
                let mut map = s.serialize_map(Some(rows.len()))?;
                for &(asset, available, freeze) in rows {
                    let a = spec.asset(asset);
                    let b = BalanceJson {
                        available: Dec::new(available, a.prec_show),
                        freeze: Dec::new(freeze, a.prec_show),
                    };
                    map.serialize_entry(&a.name, &b)?;
                }
                map.end()
            }
            Reply::Success => Status { status: "success" }.serialize(s),
            Reply::AssetList => {
                let list: Vec<_> = spec.assets.iter().map(|a| AssetJson { name: &a.name, prec: a.prec_show }).collect();
                list.serialize(s)
            }
            Reply::AssetSummary(rows) => rows
                .iter()
                .map(|r| {
                    let a = spec.asset(r.asset);
                    AssetSummaryJson {
                        name: &a.name,
                        total_balance: Dec::new(r.available + r.freeze, a.prec_save),
                        available_count: r.available_count,
                        available_balance: Dec::new(r.available, a.prec_save),
                        freeze_count: r.freeze_count,
                        freeze_balance: Dec::new(r.freeze, a.prec_save),
                    }
                })
                .collect::<Vec<_>>()
                .serialize(s),
            Reply::Cancelled { count } => {
                let mut st = s.serialize_struct("cancelled", 1)?;
                st.serialize_field("count", count)?;
                st.end()
            }
            Reply::Order(_) => match self.events.last_order() {
                Some(order) => OrderJson { spec, order }.serialize(s),
                None => Err(serde::ser::Error::custom("an order reply without an order event")),
            },
            Reply::MaybeOrder(order) => order.as_ref().map(|order| OrderJson { spec, order }).serialize(s),
            // No JSON method asks for it (the binary ORDER_STATUS does); as JSON, the id and the
            // open order or `null`.
            Reply::Status { order_id, open } => {
                let mut st = s.serialize_struct("status", 2)?;
                st.serialize_field("order_id", order_id)?;
                st.serialize_field("order", &open.as_ref().map(|order| OrderJson { spec, order }))?;
                st.end()
            }
            Reply::Book { offset, limit, total, orders } => {
                let mut st = s.serialize_struct("book", 4)?;
                st.serialize_field("offset", offset)?;
                st.serialize_field("limit", limit)?;
                st.serialize_field("total", total)?;
                st.serialize_field("orders", &Orders(spec, orders))?;
                st.end()
            }
            Reply::Depth { market, asks, bids } => {
                let mk = spec.market(*market);
                let mut st = s.serialize_struct("depth", 2)?;
                st.serialize_field("asks", &Levels(asks, mk.money_prec, mk.stock_prec))?;
                st.serialize_field("bids", &Levels(bids, mk.money_prec, mk.stock_prec))?;
                st.end()
            }
            Reply::Pending { offset, limit, total, records } => {
                let mut st = s.serialize_struct("pending", 4)?;
                st.serialize_field("limit", limit)?;
                st.serialize_field("offset", offset)?;
                st.serialize_field("total", total)?;
                st.serialize_field("records", &Orders(spec, records))?;
                st.end()
            }
            Reply::MarketList => spec
                .markets
                .iter()
                .map(|m| MarketJson {
                    name: &m.name,
                    stock: &spec.asset(m.stock).name,
                    money: &spec.asset(m.money).name,
                    fee_prec: m.fee_prec,
                    stock_prec: m.stock_prec,
                    money_prec: m.money_prec,
                    min_amount: Dec::new(m.min_amount, m.stock_prec),
                })
                .collect::<Vec<_>>()
                .serialize(s),
            Reply::MarketSummary(rows) => rows
                .iter()
                .map(|r| {
                    let m = spec.market(r.market);
                    MarketSummaryJson {
                        name: &m.name,
                        ask_count: r.ask_count,
                        ask_amount: Dec::new(r.ask_amount, m.stock_prec),
                        bid_count: r.bid_count,
                        bid_amount: Dec::new(r.bid_amount, m.stock_prec),
                    }
                })
                .collect::<Vec<_>>()
                .serialize(s),
        }
    }
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[derive(Serialize)]
struct BalanceJson {
    available: Dec,
    freeze: Dec,
}

#[derive(Serialize)]
struct AssetJson<'a> {
    name: &'a str,
    prec: u32,
}

#[derive(Serialize)]
struct AssetSummaryJson<'a> {
    name: &'a str,
    total_balance: Dec,
    available_count: u64,
    available_balance: Dec,
    freeze_count: u64,
    freeze_balance: Dec,
}

#[derive(Serialize)]
struct MarketJson<'a> {
    name: &'a str,
    stock: &'a str,
    money: &'a str,
    fee_prec: u32,
    stock_prec: u32,
    money_prec: u32,
    min_amount: Dec,
}

#[derive(Serialize)]
struct MarketSummaryJson<'a> {
    name: &'a str,
    ask_count: usize,
    ask_amount: Dec,
    bid_count: usize,
    bid_amount: Dec,
}

#[derive(Serialize)]
struct ErrorJson {
    code: i32,
    message: String,
}

/// The `result` member alone, as JSON text. `events` are those of the command that replied.
pub fn result_json(spec: &Spec, reply: &Reply, events: &Events) -> String {
    serde_json::to_string(&ReplyJson { spec, reply, events }).expect("replies always serialize")
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Option<ErrorJson>,
    result: Option<ReplyJson<'a>>,
    id: Option<i64>,
}

/// `env` as JSON, in one allocation: an order's reply is about 400 bytes, and growing a string
/// from serde_json's default 128 bytes reallocated it several times.
fn to_json(env: &Envelope<'_>) -> String {
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, env).expect("replies always serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// An error response to a request whose `id` may be unknown (a malformed envelope).
pub fn error_response(id: Option<i64>, e: RpcError) -> String {
    let env = Envelope { error: Some(ErrorJson { code: e.code(), message: e.to_string() }), result: None, id };
    to_json(&env)
}

/// The whole JSON-RPC response: `{"error": …, "result": …, "id": …}`, in that order. `events` are
/// those of the command that replied.
pub fn response_json(spec: &Spec, id: i64, outcome: &Result<Reply, RpcError>, events: &Events) -> String {
    if let (Ok(Reply::Order(_)), Some(order)) = (outcome, events.last_order()) {
        return order_response(spec, id, order);
    }
    let id = Some(id);
    let env = match outcome {
        Ok(reply) => Envelope { error: None, result: Some(ReplyJson { spec, reply, events }), id },
        Err(e) => Envelope { error: Some(ErrorJson { code: e.code(), message: e.to_string() }), result: None, id },
    };
    to_json(&env)
}

/// The response to an order command (most replies), the same text as [`to_json`] gives: the
/// keys and punctuation are written as constants, integers by `itoa` and the two times by `zmij`
/// (the writers serde_json itself uses), strings escaped as serde_json escapes them. The generic
/// path spent most of its time on the 16 keys, escaping each one.
fn order_response(spec: &Spec, id: i64, o: &Order) -> String {
    let mk = spec.market(o.market);
    let amount_scale = o.amount_scale(mk);
    let mut out = String::with_capacity(512);
    let mut int = itoa::Buffer::new();
    let mut float = zmij::Buffer::new();
    out.push_str(r#"{"error":null,"result":{"id":"#);
    out.push_str(int.format(o.id));
    out.push_str(r#","market":"#);
    json_str(&mut out, mk.name.as_str());
    out.push_str(r#","source":"#);
    json_str(&mut out, o.source.as_str());
    out.push_str(r#","type":"#);
    out.push_str(int.format(o.kind as u8));
    out.push_str(r#","side":"#);
    out.push_str(int.format(o.side.code()));
    out.push_str(r#","user":"#);
    out.push_str(int.format(o.user));
    // Microseconds over 10^6 are always finite.
    out.push_str(r#","ctime":"#);
    out.push_str(float.format_finite(seconds(o.ctime_us)));
    out.push_str(r#","mtime":"#);
    out.push_str(float.format_finite(seconds(o.mtime_us)));
    let decimals = [
        (r#","price":""#, Dec::new(o.price, mk.money_prec)),
        (r#"","amount":""#, Dec::new(o.amount, amount_scale)),
        (r#"","taker_fee":""#, Dec::new(o.taker_fee.into(), mk.fee_prec)),
        (r#"","maker_fee":""#, Dec::new(o.maker_fee.into(), mk.fee_prec)),
        (r#"","left":""#, Dec::new(o.left, amount_scale)),
        (r#"","deal_stock":""#, Dec::new(o.deal_stock, mk.stock_prec)),
        (r#"","deal_money":""#, Dec::new(o.deal_money, mk.money_scale())),
        (r#"","deal_fee":""#, Dec::new(o.deal_fee, o.fee_scale(mk))),
    ];
    let mut buf = [0; viaduct_matcher::decimal::TEXT_MAX];
    for (key, dec) in decimals {
        out.push_str(key);
        out.push_str(dec.text(&mut buf)); // digits, a sign and a point: nothing to escape
    }
    out.push_str(r#""},"id":"#);
    out.push_str(int.format(id));
    out.push('}');
    out
}

/// `s` as a JSON string: quoted as is when nothing in it needs escaping (names and most
/// sources), otherwise escaped by serde_json.
fn json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaduct_matcher::config::MarketId;
    use viaduct_matcher::order::{OrderKind, Side, Source};

    /// The order reply's own writer gives exactly the generic serializer's text, for every kind
    /// and side, extreme values, and sources that need escaping.
    #[test]
    fn order_response_is_the_generic_text() {
        let spec = Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        let sources = ["", "web", "a\"b\\c", "tab\there\nnl\r\u{1}\u{1f}", "ünïcödé ✓", "</script>"];
        let values = [0i128, 1, 10, 123_456_789, 100_000_000, i64::MAX as i128, u64::MAX as i128 + 7, -5];
        let times = [0u64, 1, 1_700_000_000_123_456, 999_999, u64::MAX];
        let mut n = 0;
        for market in 0..spec.markets.len() {
            for kind in [OrderKind::Limit, OrderKind::Market, OrderKind::MarketStock] {
                for side in [Side::Ask, Side::Bid] {
                    for (i, src) in sources.iter().enumerate() {
                        for (j, &v) in values.iter().enumerate() {
                            let order = Order {
                                id: v.unsigned_abs() as u64 ^ i as u64,
                                market: market as MarketId,
                                side,
                                kind,
                                user: (j as u32).wrapping_mul(0x9e37_79b9),
                                ctime_us: times[j % times.len()],
                                mtime_us: times[(i + j) % times.len()],
                                price: v,
                                amount: values[(j + 1) % values.len()],
                                left: values[(j + 2) % values.len()],
                                taker_fee: (v as u32).wrapping_add(3),
                                maker_fee: j as u32,
                                deal_stock: values[(j + 3) % values.len()],
                                deal_money: values[(j + 4) % values.len()],
                                deal_fee: values[(j + 5) % values.len()],
                                source: Source::new(src).unwrap(),
                                client_id: 9,
                                session: 0,
                            };
                            let id = [0i64, -1, 42, i64::MIN, i64::MAX][(i + j) % 5];
                            let generic = to_json(&Envelope {
                                error: None,
                                result: Some(ReplyJson {
                                    spec: &spec,
                                    reply: &Reply::MaybeOrder(Some(Box::new(order))),
                                    events: &Events::default(),
                                }),
                                id: Some(id),
                            });
                            assert_eq!(order_response(&spec, id, &order), generic);
                            n += 1;
                        }
                    }
                }
            }
        }
        assert!(n >= 4 * 6 * 8);
    }
}
