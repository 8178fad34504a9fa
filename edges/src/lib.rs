//! # viaduct-edges
//!
//! Owns the network edges, each an event loop on its own thread with non-blocking sockets and a
//! bound on everything: connections, request size, buffered replies, idle time. Edges route and
//! decode requests through the one method table (`viaduct_protocol`), hand commands to a
//! [`Backend`] and queries to their owner through it, and encode what comes back (typed, as
//! [`Delivered`]) on their own threads; they never touch matcher state. A client that sends
//! garbage, sends too much or reads too slowly is answered or disconnected without affecting
//! anyone else.
//!
//! - [`http`]: HTTP JSON-RPC (ViaBTC's accesshttp).
//! - [`tcp`]: one port, two framings told apart by the first bytes: ViaBTC's internal RPC framing
//!   ([`rpc`]) and the binary order entry for market makers ([`binary`], `PROTOCOL.md`).
//!
//! - [`ws`]: WebSocket (ViaBTC's accessws): queries, authentication, subscriptions and pushes.
//!
//! Start reading at [`Backend`], then `http.rs`.
#![forbid(unsafe_code)]

mod auth;
pub mod binary;
pub mod http;
mod net;
pub mod rpc;
pub mod tcp;
pub mod ws;

use std::sync::Arc;

pub use auth::AuthConfig;

use viaduct_matcher::{Command, Events, Reply, RpcError, Spec};

/// Wakes an edge's event loop: the backend calls it after handing the edge replies.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What the engine hands an edge, typed: the edge encodes it (JSON or binary) on its own thread.
/// A borrowed delivery lives in the edge's reply ring and is valid for the call that hands it.
#[derive(Debug)]
pub enum Delivered<'a> {
    /// The outcome of a command the edge submitted with `tag`, once it is durable: the result,
    /// and the events it caused (the taker's deals, the order placed or cancelled).
    Outcome {
        tag: u64,
        request_id: i64,
        /// The command's journal sequence; 0 when it changed nothing.
        journal_seq: u64,
        cmd: &'a Command,
        result: &'a Result<Reply, RpcError>,
        events: &'a Events,
    },
    /// The JSON response of a query (market data, history), made by the query's owner.
    Answer { tag: u64, request_id: i64, json: String },
    /// The events of a durable command in which a user the edge watches ([`Backend::watch`])
    /// traded as maker, or had a resting order cancelled by self-trade prevention: the edge
    /// derives that user's reports from them.
    Deals { cmd: &'a Command, events: &'a Events },
    /// All the events of a durable command that touched a user the edge follows
    /// ([`Backend::follow`]): placed, changed or finished one of their orders, or changed one of
    /// their balances. The edge pushes them to that user's subscribers.
    Activity {
        /// This edge submitted the command (its outcome came as [`Delivered::Outcome`] too).
        own: bool,
        cmd: &'a Command,
        result: &'a Result<Reply, RpcError>,
        events: &'a Events,
    },
    /// The edge fell so far behind that deals of its watched users, or events of its followed
    /// users, were dropped: every session that relies on them must be told to reconnect.
    FillsLost,
}

/// What an edge shows the metrics: its open connections and, for the WebSocket edge, its
/// connections' subscriptions to market feeds. Updated by the edge's loop as they change.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub connections: std::sync::atomic::AtomicU64,
    pub subscriptions: std::sync::atomic::AtomicU64,
}

/// What an edge submits commands to and takes replies from.
pub trait Backend: Send + 'static {
    fn spec(&self) -> &Spec;
    /// Submits `cmd` marked with `tag` (the edge's own); hands it back when the engine cannot
    /// take it now.
    fn submit(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command>;
    /// Hands `each` everything ready, in order, with the market configuration to encode it by.
    fn receive(&mut self, each: &mut dyn FnMut(&Spec, Delivered<'_>));
    /// Queues a method the matcher does not answer (market data, history) for its owner; its
    /// JSON reply comes back through [`Backend::receive`] as [`Delivered::Answer`] with `tag`.
    /// Error 4 when nobody serves `method`, error 3 when its owner's queue is full.
    fn query(
        &mut self,
        tag: u64,
        request_id: i64,
        method: &str,
        params: Vec<serde_json::Value>,
    ) -> Result<(), RpcError> {
        let _ = (tag, request_id, method, params);
        Err(RpcError::MethodNotFound)
    }
    /// Starts (`on`) or stops sending this edge [`Delivered::Deals`] for `user`'s resting orders.
    fn watch(&mut self, user: u32, on: bool) {
        let _ = (user, on);
    }
    /// Starts (`on`) or stops sending this edge [`Delivered::Activity`] for commands touching
    /// `user`.
    fn follow(&mut self, user: u32, on: bool) {
        let _ = (user, on);
    }
}
