//! The readhistory methods (SPEC B2.5): validation, the one SELECT each runs against its shard,
//! newest first with `LIMIT`/`OFFSET`, and ViaBTC's reply shapes with decimals stripped.

use std::fmt::Write as _;

use serde_json::Value;
use viaduct_matcher::RpcError;

use super::store::{SqlValue, Store};

/// Largest `limit` (ViaBTC's `QUERY_LIMIT`).
pub const LIMIT_MAX: i64 = 101;

/// The methods history answers: routed here by the edges' method table
/// (`viaduct_edges::protocol`); params one of them refuses are error 1, any other method error 4.
const METHODS: [&str; 5] =
    ["balance.history", "order.finished", "order.finished_detail", "order.deals", "market.user_deals"];

fn is_history_method(method: &str) -> bool {
    METHODS.contains(&method)
}

const BAD: RpcError = RpcError::InvalidArgument;

fn int(v: &Value) -> Result<i64, RpcError> {
    v.as_i64().ok_or(BAD)
}

fn uint(v: &Value) -> Result<u64, RpcError> {
    v.as_u64().ok_or(BAD)
}

fn user(v: &Value) -> Result<u64, RpcError> {
    match uint(v)? {
        0 => Err(BAD),
        u if u <= u64::from(u32::MAX) => Ok(u),
        _ => Err(BAD),
    }
}

fn text(v: &Value) -> Result<&str, RpcError> {
    v.as_str().filter(|s| s.len() <= 30).ok_or(BAD)
}

fn paging(offset: &Value, limit: &Value) -> Result<(i64, i64), RpcError> {
    let (offset, limit) = (int(offset)?, int(limit)?);
    if offset < 0 || !(1..=LIMIT_MAX).contains(&limit) {
        return Err(BAD);
    }
    Ok((offset, limit))
}

/// Time bounds: 0 is unbounded; `start > end` with `end != 0` is invalid.
fn times(start: &Value, end: &Value) -> Result<(i64, i64), RpcError> {
    let (start, end) = (int(start)?, int(end)?);
    if start < 0 || end < 0 || (end != 0 && start > end) {
        return Err(BAD);
    }
    Ok((start, end))
}

/// A decimal column's text with trailing fractional zeros stripped.
pub fn strip(text: &str) -> String {
    if !text.contains('.') {
        return text.to_string();
    }
    let t = text.trim_end_matches('0').trim_end_matches('.');
    if t.is_empty() || t == "-" || t == "-0" {
        "0".to_string()
    } else {
        t.to_string()
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn json_f64(v: f64) -> String {
    serde_json::to_string(&v).expect("a float")
}

/// Answers one history method: the JSON result, or the error.
pub fn run(store: &mut dyn Store, method: &str, params: &[Value]) -> Result<String, RpcError> {
    let internal = |e: super::store::StoreError| {
        tracing::error!("history: {method}: {e}");
        RpcError::Internal
    };
    match (method, params) {
        ("balance.history", [u, asset, business, start, end, offset, limit]) => {
            let (u, asset, business) = (user(u)?, text(asset)?, text(business)?);
            let (start, end) = times(start, end)?;
            let (offset, limit) = paging(offset, limit)?;
            let mut sql = format!(
                "SELECT `time`, `asset`, `business`, `change`, `balance`, `detail` FROM `{}` WHERE `user_id` = ?",
                store.layout().table("balance_history", u)
            );
            let mut args = vec![SqlValue::Int(u as i64)];
            for (col, v) in [("asset", asset), ("business", business)] {
                if !v.is_empty() {
                    let _ = write!(sql, " AND `{col}` = ?");
                    args.push(SqlValue::Text(v.to_string()));
                }
            }
            time_filter(&mut sql, &mut args, "time", start, end);
            let rows = page(store, sql, args, offset, limit).map_err(internal)?;
            let records: Vec<String> = rows
                .iter()
                .map(|r| {
                    let detail = match serde_json::from_str::<Value>(&r[5].as_text()) {
                        Ok(v @ Value::Object(_)) => v.to_string(),
                        _ => "{}".to_string(),
                    };
                    format!(
                        r#"{{"time":{},"asset":{},"business":{},"change":{},"balance":{},"detail":{detail}}}"#,
                        json_f64(r[0].as_f64()),
                        json_str(&r[1].as_text()),
                        json_str(&r[2].as_text()),
                        json_str(&strip(&r[3].as_text())),
                        json_str(&strip(&r[4].as_text())),
                    )
                })
                .collect();
            Ok(paged(offset, limit, &records))
        }
        ("order.finished", [u, market, start, end, offset, limit, rest @ ..]) if rest.len() <= 1 => {
            let (u, market) = (user(u)?, text(market)?);
            let (start, end) = times(start, end)?;
            let (offset, limit) = paging(offset, limit)?;
            let side = match rest.first() {
                None => 0,
                Some(v) => match int(v)? {
                    s @ 0..=2 => s,
                    _ => return Err(BAD),
                },
            };
            let mut sql = format!(
                "{ORDER_SELECT} FROM `{}` WHERE `user_id` = ? AND `market` = ?",
                store.layout().table("order_history", u)
            );
            let mut args = vec![SqlValue::Int(u as i64), SqlValue::Text(market.to_string())];
            time_filter(&mut sql, &mut args, "create_time", start, end);
            if side != 0 {
                sql.push_str(" AND `side` = ?");
                args.push(SqlValue::Int(side));
            }
            let rows = page(store, sql, args, offset, limit).map_err(internal)?;
            Ok(paged(offset, limit, &rows.iter().map(|r| order_json(r)).collect::<Vec<_>>()))
        }
        ("order.finished_detail", [id]) => {
            let id = uint(id)?;
            let sql = format!("{ORDER_SELECT} FROM `{}` WHERE `id` = ?", store.layout().table("order_detail", id));
            let rows = store.select(&sql, &[SqlValue::Int(id as i64)]).map_err(internal)?;
            Ok(rows.first().map_or("null".to_string(), |r| order_json(r)))
        }
        ("order.deals", [id, offset, limit]) => {
            let id = uint(id)?;
            if id == 0 {
                return Err(BAD);
            }
            let (offset, limit) = paging(offset, limit)?;
            let sql = format!(
                "SELECT `time`, `user_id`, `deal_id`, `role`, `price`, `amount`, `deal`, `fee`, `deal_order_id` FROM `{}` WHERE `order_id` = ?",
                store.layout().table("deal_history", id)
            );
            let rows = page(store, sql, vec![SqlValue::Int(id as i64)], offset, limit).map_err(internal)?;
            let records: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        r#"{{"time":{},"user":{},"id":{},"role":{},"price":{},"amount":{},"deal":{},"fee":{},"deal_order_id":{}}}"#,
                        json_f64(r[0].as_f64()),
                        r[1].as_i64(),
                        r[2].as_i64(),
                        r[3].as_i64(),
                        json_str(&strip(&r[4].as_text())),
                        json_str(&strip(&r[5].as_text())),
                        json_str(&strip(&r[6].as_text())),
                        json_str(&strip(&r[7].as_text())),
                        r[8].as_i64(),
                    )
                })
                .collect();
            Ok(paged(offset, limit, &records))
        }
        ("market.user_deals", [u, market, offset, limit]) => {
            let (u, market) = (user(u)?, text(market)?);
            let (offset, limit) = paging(offset, limit)?;
            let sql = format!(
                "SELECT `time`, `user_id`, `deal_id`, `side`, `role`, `price`, `amount`, `deal`, `fee`, `deal_order_id`, `market` FROM `{}` WHERE `user_id` = ? AND `market` = ?",
                store.layout().table("user_deal_history", u)
            );
            let args = vec![SqlValue::Int(u as i64), SqlValue::Text(market.to_string())];
            let rows = page(store, sql, args, offset, limit).map_err(internal)?;
            let records: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        r#"{{"time":{},"user":{},"id":{},"side":{},"role":{},"price":{},"amount":{},"deal":{},"fee":{},"deal_order_id":{},"market":{}}}"#,
                        json_f64(r[0].as_f64()),
                        r[1].as_i64(),
                        r[2].as_i64(),
                        r[3].as_i64(),
                        r[4].as_i64(),
                        json_str(&strip(&r[5].as_text())),
                        json_str(&strip(&r[6].as_text())),
                        json_str(&strip(&r[7].as_text())),
                        json_str(&strip(&r[8].as_text())),
                        r[9].as_i64(),
                        json_str(&r[10].as_text()),
                    )
                })
                .collect();
            Ok(paged(offset, limit, &records))
        }
        _ if is_history_method(method) => Err(BAD),
        _ => Err(RpcError::MethodNotFound),
    }
}

const ORDER_SELECT: &str = "SELECT `id`, `create_time`, `finish_time`, `user_id`, `market`, `source`, `t`, `side`, `price`, `amount`, `taker_fee`, `maker_fee`, `deal_stock`, `deal_money`, `deal_fee`";

fn order_json(r: &[SqlValue]) -> String {
    format!(
        r#"{{"id":{},"ctime":{},"ftime":{},"user":{},"market":{},"source":{},"type":{},"side":{},"price":{},"amount":{},"taker_fee":{},"maker_fee":{},"deal_stock":{},"deal_money":{},"deal_fee":{}}}"#,
        r[0].as_i64(),
        json_f64(r[1].as_f64()),
        json_f64(r[2].as_f64()),
        r[3].as_i64(),
        json_str(&r[4].as_text()),
        json_str(&r[5].as_text()),
        r[6].as_i64(),
        r[7].as_i64(),
        json_str(&strip(&r[8].as_text())),
        json_str(&strip(&r[9].as_text())),
        json_str(&strip(&r[10].as_text())),
        json_str(&strip(&r[11].as_text())),
        json_str(&strip(&r[12].as_text())),
        json_str(&strip(&r[13].as_text())),
        json_str(&strip(&r[14].as_text())),
    )
}

fn time_filter(sql: &mut String, args: &mut Vec<SqlValue>, col: &str, start: i64, end: i64) {
    if start != 0 {
        let _ = write!(sql, " AND `{col}` >= ?");
        args.push(SqlValue::Int(start));
    }
    if end != 0 {
        let _ = write!(sql, " AND `{col}` < ?");
        args.push(SqlValue::Int(end));
    }
}

fn page(
    store: &mut dyn Store,
    mut sql: String,
    mut args: Vec<SqlValue>,
    offset: i64,
    limit: i64,
) -> Result<Vec<Vec<SqlValue>>, super::store::StoreError> {
    sql.push_str(" ORDER BY `id` DESC LIMIT ? OFFSET ?");
    args.push(SqlValue::Int(limit));
    args.push(SqlValue::Int(offset));
    store.select(&sql, &args)
}

fn paged(offset: i64, limit: i64, records: &[String]) -> String {
    format!(r#"{{"offset":{offset},"limit":{limit},"records":[{}]}}"#, records.join(","))
}
