//! # viaduct-matcher
//!
//! The matching engine: balances, limit and market orders, price-time matching, fees, cancels,
//! `balance.update` with its 24 h dedupe window, and every query ViaBTC's matchengine answers.
//!
//! It is a pure, deterministic state machine, `(state, command) -> (state, reply, events)`: no I/O,
//! no clocks, no threads, no randomness. Time arrives with each command; order and deal ids come
//! from counters in the state. Replaying the same commands gives the same bytes, which is what the
//! journal, snapshots and tests rely on. This crate must never do I/O or depend on another viaduct
//! crate.
//!
//! It takes typed commands ([`Command`]) and returns typed results ([`Reply`]) and events; JSON is
//! the edges' business (`viaduct-protocol`). Start reading at [`Matcher::apply`] (in `engine.rs`),
//! and `decimal.rs` for the number representation: `i128` mantissas whose
//! scale the market or asset fixes, so every ViaBTC truncation rule is exact integer arithmetic.
#![forbid(unsafe_code)]

pub mod book;
pub mod command;
pub mod config;
pub mod decimal;
mod engine;
pub mod error;
pub mod event;
mod invariants;
pub mod ledger;
pub mod order;
pub mod reply;
pub mod slab;
mod snapshot;
mod window;

pub use command::Command;
pub use config::{Config, ConfigError, Spec};
pub use engine::{Matcher, CANCELS_PER_COMMAND_MAX, DEALS_PER_ORDER_MAX, DEDUPE_ENTRIES_MAX, DEDUPE_WINDOW_US};
pub use error::RpcError;
pub use event::{Event, EventRef, Events, EventsView};
pub use reply::Reply;
pub use snapshot::SnapshotError;
