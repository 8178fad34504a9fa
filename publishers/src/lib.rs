//! # viaduct-publishers
//!
//! Owns the consumers of the output ring: market data (klines, status, deals, depth), the history
//! writer and readers, and the alert sink ([`alert::Alerts`], to the log and to Redis through Sentinel,
//! [`alert_redis`]), and the Kafka publisher ([`kafka`]). None of
//! them may ever slow the matcher: each runs on its own thread, behind the journal, sees only
//! durable events, and has a lag bound past which the engine refuses writes instead of waiting.
//!
//! Start reading at [`market::MarketData`] (the marketprice state machine and its queries), then
//! [`depth::DepthView`] (book levels as `depth.update` snapshots and diffs), and
//! [`service::MarketService`], the thread that feeds one and answers its queries.
#![forbid(unsafe_code)]

pub mod alert;
pub mod alert_redis;
pub mod depth;
pub mod history;
pub mod kafka;
pub mod market;
pub mod service;
