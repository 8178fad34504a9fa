//! Kafka publishing (ViaBTC's `deals`, `orders` and `balances` topics, SPEC B7): the messages a
//! durable command makes ([`messages`], pure), and the publisher that follows the journal and
//! produces them exactly once ([`publisher::KafkaPublisher`]).
//!
//! Payloads are ViaBTC's, field for field and in its order; decimals are written in full at their
//! scale (its "raw" form, `"8000.00000000"`) without exponents (SPEC A2: a zero is `"0"`), except
//! inside the `orders` message's order object, which is the order as replies print it.
//! Every message is produced to partition 0 of its topic without a key, as ViaBTC's were, with
//! three headers: `viaduct-seq` (the journal sequence of the command that made it),
//! `viaduct-part` (its index among that command's messages to the same topic, from 0) and
//! `viaduct-through` (a sequence up to which every message of every topic was acknowledged when
//! it was produced). The publisher resumes from them.

mod acks;
pub mod publisher;
mod resume;
pub mod tail;

use std::io::Write;

use viaduct_matcher::decimal::{rescale_round, Dec};
use viaduct_matcher::event::{Business, EventRef};
use viaduct_matcher::{EventsView, Spec};
use viaduct_protocol::json::OrderJson;

/// The three topics, in the order their resume points are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Deals,
    Orders,
    Balances,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Deals, Topic::Orders, Topic::Balances];

    /// The topic's name, before the operator's prefix.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Deals => "deals",
            Topic::Orders => "orders",
            Topic::Balances => "balances",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The compression of produced batches (`[kafka] compression`): the codecs the bundled
/// librdkafka is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    pub fn parse(name: &str) -> Option<Compression> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            _ => return None,
        })
    }

    /// librdkafka's `compression.codec`.
    pub fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// `[kafka]`: where messages go and how far the publisher may lag.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// librdkafka's `bootstrap.servers`: `host:port,host:port`.
    pub brokers: String,
    /// Put before each topic's name (`""`: ViaBTC's names).
    pub topic_prefix: String,
    /// Journaled commands the publisher may lag behind the durable sequence before state-changing
    /// requests are refused with error 3.
    pub lag_max: u64,
    /// How long a batch waits for more messages (librdkafka's `linger.ms`; ViaBTC's 1).
    pub linger_ms: u32,
    /// The largest batch, in bytes (librdkafka's `batch.size`).
    pub batch_bytes: u32,
    pub compression: Compression,
}

impl KafkaConfig {
    /// A config with every setting but the brokers at its default.
    pub fn new(brokers: String) -> KafkaConfig {
        KafkaConfig {
            brokers,
            topic_prefix: String::new(),
            lag_max: 1_000_000,
            linger_ms: 1,
            batch_bytes: 1_000_000,
            compression: Compression::None,
        }
    }

    /// A topic's full name.
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }
}

fn seconds(time_us: u64) -> f64 {
    time_us as f64 / 1e6
}

/// A JSON string (names come from the config and business names from clients).
fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec does not fail");
}

fn number(out: &mut Vec<u8>, x: impl serde::Serialize) {
    serde_json::to_writer(&mut *out, &x).expect("writing to a Vec does not fail");
}

/// Calls `each(topic, payload)` for every message one command's `events` make, in the order
/// ViaBTC produced them: per trade its `deals` message then the maker's `orders` event, then the
/// taker's; a `balances` message for a `balance.update` only (trades make none). `buf` is
/// reused between messages.
pub fn messages(spec: &Spec, events: EventsView<'_>, buf: &mut Vec<u8>, mut each: impl FnMut(Topic, &[u8])) {
    for ev in events.iter() {
        buf.clear();
        let topic = match ev {
            EventRef::Deal(d) => {
                let mk = spec.market(d.market);
                let raw = |m: i128, scale: u32| Dec::new(m, scale).raw().to_string();
                buf.push(b'[');
                number(buf, seconds(d.time_us));
                buf.push(b',');
                string(buf, &mk.name);
                write!(buf, ",{},{},{},{},", d.ask_order_id, d.bid_order_id, d.ask_user, d.bid_user).expect("Vec");
                let money_scale = mk.money_scale();
                for (m, scale) in [
                    (d.price, mk.money_prec),
                    (d.amount, mk.stock_prec),
                    (d.ask_fee, money_scale + mk.fee_prec),
                    (d.bid_fee, mk.stock_prec + mk.fee_prec),
                ] {
                    string(buf, &raw(m, scale));
                    buf.push(b',');
                }
                write!(buf, "{},{},", d.taker_side.code(), d.id).expect("Vec");
                string(buf, &spec.asset(mk.stock).name);
                buf.push(b',');
                string(buf, &spec.asset(mk.money).name);
                buf.push(b']');
                Topic::Deals
            }
            EventRef::Order(kind, order) => {
                let mk = spec.market(order.market);
                write!(buf, r#"{{"event":{},"order":"#, kind as u8).expect("Vec");
                serde_json::to_writer(&mut *buf, &OrderJson { spec, order }).expect("an order encodes");
                buf.extend_from_slice(br#","stock":"#);
                string(buf, &spec.asset(mk.stock).name);
                buf.extend_from_slice(br#","money":"#);
                string(buf, &spec.asset(mk.money).name);
                buf.push(b'}');
                Topic::Orders
            }
            EventRef::Balance(b) => {
                let Business::Update(u) = &b.business else { continue };
                buf.push(b'[');
                number(buf, seconds(b.time_us));
                write!(buf, ",{},", b.user).expect("Vec");
                string(buf, &spec.asset(b.asset).name);
                buf.push(b',');
                string(buf, &u.business);
                buf.push(b',');
                // The change as the caller's text was parsed: at the asset's `prec_show` (the
                // event keeps it at `prec_save`, with zeros past `prec_show`).
                let (scale, show) = (u32::from(b.change_scale), spec.asset(b.asset).prec_show);
                let change = if scale > show {
                    Dec::new(rescale_round(b.change, scale, show), show)
                } else {
                    Dec::new(b.change, scale)
                };
                string(buf, &change.raw().to_string());
                buf.push(b']');
                Topic::Balances
            }
            EventRef::Level(_) => continue,
        };
        each(topic, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaduct_matcher::config::embedded;
    use viaduct_matcher::{Events, Matcher};
    use viaduct_protocol::decode;

    fn apply(m: &mut Matcher, time_us: u64, method: &str, params: serde_json::Value) -> Vec<(Topic, String)> {
        let cmd = decode(m.spec(), method, params.as_array().unwrap()).unwrap();
        let mut events = Events::default();
        m.apply(time_us, &cmd, &mut events).unwrap();
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        messages(m.spec(), events.view(), &mut buf, |t, p| out.push((t, String::from_utf8(p.to_vec()).unwrap())));
        out
    }

    /// SPEC B5.4's worked example: a resting ask of 2 BTC at 0.1 (maker fee 0.001), a bid for 1
    /// at 0.2 (taker fee 0.002). Each topic's payload is ViaBTC's, field for field, decimals at
    /// their full scale, a zero as "0"; deposits make `balances` messages, the trade none.
    #[test]
    fn the_worked_example_makes_vibtcs_messages() {
        let spec = Spec::new(&embedded()).unwrap();
        let mut m = Matcher::new(spec);
        let t = 1_700_000_000_250_000u64;
        let deposit =
            apply(&mut m, t, "balance.update", serde_json::json!([1, "BTC", "deposit", 7, "2", {"via": "bank"}]));
        assert_eq!(deposit, vec![(Topic::Balances, r#"[1700000000.25,1,"BTC","deposit","2.00000000"]"#.to_string())]);
        apply(&mut m, t, "balance.update", serde_json::json!([2, "BCH", "deposit", 8, "1", {}]));
        let put = apply(
            &mut m,
            t + 1,
            "order.put_limit",
            serde_json::json!([1, "BTCBCH", 1, "2", "0.1", "0.002", "0.001", "web"]),
        );
        assert_eq!(put.len(), 1);
        assert_eq!(put[0].0, Topic::Orders);
        assert!(
            put[0].1.starts_with(
                r#"{"event":1,"order":{"id":1,"market":"BTCBCH","source":"web","type":1,"side":1,"user":1,"#
            ),
            "{}",
            put[0].1
        );
        assert!(
            put[0].1.ends_with(
                r#""left":"2","deal_stock":"0","deal_money":"0","deal_fee":"0"},"stock":"BTC","money":"BCH"}"#
            ),
            "{}",
            put[0].1
        );
        let take = apply(
            &mut m,
            t + 2,
            "order.put_limit",
            serde_json::json!([2, "BTCBCH", 2, "1", "0.2", "0.002", "0.001", ""]),
        );
        let topics: Vec<Topic> = take.iter().map(|(t, _)| *t).collect();
        assert_eq!(topics, [Topic::Deals, Topic::Orders, Topic::Orders]);
        assert_eq!(
            take[0].1,
            r#"[1700000000.250002,"BTCBCH",1,2,1,2,"0.10000000","1.00000000","0.00010000000000000000","0.002000000000",2,1,"BTC","BCH"]"#
        );
        assert!(take[1].1.starts_with(r#"{"event":2,"order":{"id":1,"#), "maker updated: {}", take[1].1);
        assert!(
            take[1].1.contains(r#""left":"1","deal_stock":"1","deal_money":"0.1","deal_fee":"0.0001"}"#),
            "{}",
            take[1].1
        );
        assert!(take[2].1.starts_with(r#"{"event":3,"order":{"id":2,"#), "taker finished: {}", take[2].1);
        let cancel = apply(&mut m, t + 3, "order.cancel", serde_json::json!([1, "BTCBCH", 1]));
        assert_eq!(cancel.len(), 1);
        assert!(cancel[0].1.starts_with(r#"{"event":3,"order":{"id":1,"#), "{}", cancel[0].1);
        let fee =
            apply(&mut m, t + 4, "balance.update", serde_json::json!([2, "BCH", "fee \"x\"", 9, "-0.00000001", {}]));
        assert_eq!(
            fee,
            vec![(Topic::Balances, r#"[1700000000.250004,2,"BCH","fee \"x\"","-0.00000001"]"#.to_string())]
        );
    }
}
