//! # viaduct-publishers
//!
//! Owns the consumers of the output ring: market data (klines, status, deals, depth), and later
//! the history writer and reader, Kafka publishing and alerts. None of them may ever slow the
//! matcher: each runs on its own thread, behind the journal, and sees only durable events.
//!
//! Start reading at [`market::MarketData`] (the marketprice state machine and its queries), then
//! [`depth::DepthView`] (book levels as `depth.update` snapshots and diffs), and
//! [`service::MarketService`], the thread that feeds one and answers its queries.
#![forbid(unsafe_code)]

pub mod depth;
pub mod history;
pub mod market;
pub mod service;
