//! History (ViaBTC's trade_history and readhistory, SPEC B2.5, B6.4, B9.1): the rows every durable
//! command leaves in `balance_history`, `order_history`, `order_detail`, `deal_history` and
//! `user_deal_history` (sharded `_0` … `_99`), the stores that keep them (SQLite by default,
//! MySQL), the writer that commits them with the sequence they reach in one transaction, and the
//! readhistory queries.
//!
//! Decimals are written as text at each column's scale, rounded half away from zero as MySQL
//! rounds the longer values ViaBTC hands it (`decimal::rescale_round`), and read back with
//! trailing zeros stripped, so both stores hold and answer byte for byte what ViaBTC's would.

pub mod catchup;
pub mod query;
pub mod store;
pub mod writer;

use viaduct_matcher::decimal::{rescale_round, Dec};
use viaduct_matcher::event::{Business, Deal, EventRef, OrderEventKind};
use viaduct_matcher::order::{Order, OrderKind, Side};
use viaduct_matcher::{EventsView, Spec};

/// Shards per table (`_0` … `_99`).
pub const SHARDS: u64 = 100;

/// A decimal at a column's scale, as the text both stores take and MySQL gives back (every
/// digit of the scale, zero too: `0.00000000`).
fn column(m: i128, scale: u32, column_scale: u32) -> String {
    // A value at a smaller scale is widened in the text, not the mantissa: an amount of an
    // asset kept at 0 decimals times 10^16 would leave the i128 range.
    let (m, scale) =
        if column_scale < scale { (rescale_round(m, scale, column_scale), column_scale) } else { (m, scale) };
    if m == 0 && column_scale > 0 {
        return format!("0.{:0>1$}", "", column_scale as usize);
    }
    // One string, widened in place (this runs for every decimal of every row).
    let mut text = Dec::new(m, scale).raw().to_string();
    let zeros = (column_scale - scale) as usize;
    if zeros > 0 && scale == 0 {
        text.push('.');
    }
    text.extend(std::iter::repeat_n('0', zeros));
    text
}

fn seconds(time_us: u64) -> f64 {
    time_us as f64 / 1e6
}

/// One `balance_history` row.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceRow {
    pub time: f64,
    pub user: u32,
    pub asset: String,
    pub business: String,
    /// DECIMAL(30,8).
    pub change: String,
    /// DECIMAL(30,16): available + freeze after the change.
    pub balance: String,
    pub detail: String,
}

/// One `order_history` / `order_detail` row.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: u64,
    pub create_time: f64,
    pub finish_time: f64,
    pub user: u32,
    pub market: String,
    pub source: String,
    pub kind: u8,
    pub side: u8,
    pub price: String,
    pub amount: String,
    pub taker_fee: String,
    pub maker_fee: String,
    pub deal_stock: String,
    pub deal_money: String,
    pub deal_fee: String,
}

/// One side of a trade: a `deal_history` row (sharded by `order_id`) and a `user_deal_history`
/// row (sharded by `user`) carry the same fields, the latter with `market` and `side`.
#[derive(Debug, Clone, PartialEq)]
pub struct DealRow {
    pub time: f64,
    pub user: u32,
    pub market: String,
    pub deal_id: u64,
    pub order_id: u64,
    pub deal_order_id: u64,
    pub side: u8,
    /// 1 maker, 2 taker.
    pub role: u8,
    pub price: String,
    pub amount: String,
    pub deal: String,
    /// This order's fee.
    pub fee: String,
    /// The counterparty's fee.
    pub deal_fee: String,
}

/// The rows of one or more commands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub balances: Vec<BalanceRow>,
    pub orders: Vec<OrderRow>,
    pub deals: Vec<DealRow>,
}

/// Whether [`Rows::add`] needs `ev`: deals, balance changes, and finished orders that traded or
/// were market orders. The pipeline copies only these for the writer: at a busy market maker's
/// rates most events are orders placed and cancelled without a trade, which leave no row.
pub fn leaves_rows(ev: EventRef<'_>) -> bool {
    match ev {
        EventRef::Deal(_) | EventRef::Balance(_) => true,
        EventRef::Order(OrderEventKind::Finish, o) => o.kind != OrderKind::Limit || o.deal_stock > 0,
        EventRef::Order(..) | EventRef::Level(_) => false,
    }
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.balances.is_empty() && self.orders.is_empty() && self.deals.is_empty()
    }

    pub fn len(&self) -> usize {
        self.balances.len() + self.orders.len() + 2 * self.deals.len()
    }

    /// Adds the rows `events` leave (SPEC B6.4): every balance change; every finished order that
    /// traded or was a market order; both sides of every deal. Events that [`leaves_rows`] does
    /// not take may be left out of `events` (the pipeline sends only the others).
    pub fn add(&mut self, spec: &Spec, events: EventsView<'_>) {
        let mut deal: Option<Deal> = None;
        for ev in events.iter() {
            match ev {
                EventRef::Deal(d) => {
                    deal = Some(*d);
                    self.deal_rows(spec, d);
                }
                EventRef::Balance(b) => {
                    let asset = spec.asset(b.asset);
                    let (business, detail) = match &b.business {
                        Business::Update(u) => (u.business.clone(), update_detail(&u.detail, u.business_id)),
                        Business::Trade { order_id, fee, .. } => {
                            ("trade".to_string(), trade_detail(spec, deal.as_ref(), *order_id, *fee))
                        }
                    };
                    self.balances.push(BalanceRow {
                        time: seconds(b.time_us),
                        user: b.user,
                        asset: asset.name.clone(),
                        business,
                        change: column(b.change, u32::from(b.change_scale), 8),
                        balance: column(b.balance, asset.prec_save, 16),
                        detail,
                    });
                }
                EventRef::Order(_, o) if leaves_rows(ev) => self.orders.push(order_row(spec, o)),
                EventRef::Order(..) | EventRef::Level(_) => {}
            }
        }
    }

    fn deal_rows(&mut self, spec: &Spec, d: &Deal) {
        let mk = spec.market(d.market);
        let money_scale = mk.stock_prec + mk.money_prec;
        let ask_fee = column(d.ask_fee, money_scale + mk.fee_prec, 16);
        let bid_fee = column(d.bid_fee, mk.stock_prec + mk.fee_prec, 16);
        let role = |side: Side| if d.taker_side == side { 2 } else { 1 };
        let row = |side: Side, user, order_id, deal_order_id, fee: &String, deal_fee: &String| DealRow {
            time: seconds(d.time_us),
            user,
            market: mk.name.clone(),
            deal_id: d.id,
            order_id,
            deal_order_id,
            side: side.code(),
            role: role(side),
            price: column(d.price, mk.money_prec, 8),
            amount: column(d.amount, mk.stock_prec, 8),
            deal: column(d.deal, money_scale, 16),
            fee: fee.clone(),
            deal_fee: deal_fee.clone(),
        };
        self.deals.push(row(Side::Ask, d.ask_user, d.ask_order_id, d.bid_order_id, &ask_fee, &bid_fee));
        self.deals.push(row(Side::Bid, d.bid_user, d.bid_order_id, d.ask_order_id, &bid_fee, &ask_fee));
    }
}

fn order_row(spec: &Spec, o: &Order) -> OrderRow {
    let mk = spec.market(o.market);
    let money_scale = mk.stock_prec + mk.money_prec;
    OrderRow {
        id: o.id,
        create_time: seconds(o.ctime_us),
        finish_time: seconds(o.mtime_us),
        user: o.user,
        market: mk.name.clone(),
        source: o.source.as_str().to_string(),
        kind: o.kind as u8,
        side: o.side.code(),
        price: column(o.price, mk.money_prec, 8),
        amount: column(o.amount, o.amount_scale(mk), 8),
        taker_fee: column(i128::from(o.taker_fee), mk.fee_prec, 4),
        maker_fee: column(i128::from(o.maker_fee), mk.fee_prec, 4),
        deal_stock: column(o.deal_stock, mk.stock_prec, 8),
        deal_money: column(o.deal_money, money_scale, 16),
        deal_fee: column(o.deal_fee, o.fee_scale(mk), 16),
    }
}

/// A trade leg's detail: sorted-key `{"a": amount, "i": order_id, "m": market, "p": price}`, and
/// `"f"`, the fee rate of the order's side, on a fee leg.
fn trade_detail(spec: &Spec, deal: Option<&Deal>, order_id: u64, fee: bool) -> String {
    let Some(d) = deal else { return "{}".into() };
    let mk = spec.market(d.market);
    let amount = Dec::new(d.amount, mk.stock_prec);
    let price = Dec::new(d.price, mk.money_prec);
    let market = serde_json::to_string(&mk.name).expect("a string");
    if fee {
        let rate = if order_id == d.ask_order_id { d.ask_fee_rate } else { d.bid_fee_rate };
        let rate = Dec::new(i128::from(rate), mk.fee_prec);
        format!(r#"{{"a":"{amount}","f":"{rate}","i":{order_id},"m":{market},"p":"{price}"}}"#)
    } else {
        format!(r#"{{"a":"{amount}","i":{order_id},"m":{market},"p":"{price}"}}"#)
    }
}

/// A `balance.update`'s detail: the caller's object with `"id": business_id` added.
fn update_detail(detail: &str, business_id: u64) -> String {
    match serde_json::from_str::<serde_json::Value>(detail) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("id".into(), business_id.into());
            serde_json::Value::Object(map).to_string()
        }
        _ => format!(r#"{{"id":{business_id}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::column;

    /// Rounded half away from zero to a smaller scale; widened in the text to a larger one, as
    /// far as any i128 goes; zero at full scale.
    #[test]
    fn column_text_has_every_digit_of_its_scale() {
        assert_eq!(column(192_256_564_256, 9, 8), "192.25656426");
        assert_eq!(column(-3_856_778_015, 9, 8), "-3.85677802");
        assert_eq!(column(15, 1, 8), "1.50000000");
        assert_eq!(column(i128::MAX, 0, 16), format!("{}.{}", i128::MAX, "0".repeat(16)));
        assert_eq!(column(-7, 0, 4), "-7.0000");
        assert_eq!(column(0, 20, 16), "0.0000000000000000");
        assert_eq!(column(4, 20, 16), "0.0000000000000000");
        assert_eq!(column(5, 0, 0), "5");
    }
}
