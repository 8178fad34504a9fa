//! # viaduct-edges
//!
//! Owns the network edges, each an event loop on its own thread with non-blocking sockets and a
//! bound on everything: connections, request size, buffered replies, idle time. Edges route and
//! decode requests through the one method table ([`protocol`]) and hand commands to a
//! [`Backend`], queries to their owner through it; they never touch matcher state. A client that sends garbage, sends too much or reads too slowly is answered or
//! disconnected without affecting anyone else.
//!
//! - [`http`]: HTTP JSON-RPC (ViaBTC's accesshttp).
//! - [`tcp`]: one port, two framings told apart by the first bytes: ViaBTC's internal RPC framing
//!   ([`rpc`]) and the binary order entry for market makers ([`binary`], `PROTOCOL.md`).
//!
//! The WebSocket edge comes later. Start reading at [`Backend`], then `http.rs`.
#![forbid(unsafe_code)]

pub mod binary;
pub mod http;
mod net;
pub mod protocol;
pub mod rpc;
pub mod tcp;

use std::sync::Arc;

pub use viaduct_matcher::reply::Encoding;
use viaduct_matcher::{Command, RpcError, Spec};

/// Wakes an edge's event loop: the backend calls it after handing the edge replies.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What the engine hands an edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The whole JSON-RPC response to a request.
    Json(String),
    /// The execution reports for a request submitted with [`Encoding::Binary`].
    Reports(Vec<binary::ServerMsg>),
    /// Fills of resting orders of a user the edge watches ([`Backend::watch`]).
    Fills { user: u32, reports: Vec<binary::ServerMsg> },
    /// The edge fell so far behind that fills were dropped: every watching session must be told
    /// to reconnect.
    FillsLost,
}

/// What an edge submits commands to and takes replies from.
pub trait Backend: Send + 'static {
    fn spec(&self) -> &Spec;
    /// Submits `cmd` marked with `tag` (the edge's own), its reply wanted as `encoding`; hands
    /// it back when the engine cannot take it now.
    fn submit(&mut self, tag: u64, request_id: i64, cmd: Command, encoding: Encoding) -> Result<(), Command>;
    /// What is ready: a reply ([`Payload::Json`], [`Payload::Reports`]) with the tag its request
    /// was submitted with, or fills ([`Payload::Fills`], [`Payload::FillsLost`]), which answer no
    /// request (their tag is 0).
    fn try_recv(&mut self) -> Option<(u64, Payload)>;
    /// Queues a method the matcher does not answer (market data) for its owner; its JSON reply
    /// comes back through [`Backend::try_recv`] with `tag`. Error 4 when nobody serves `method`,
    /// error 3 when its owner's queue is full.
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
    /// Starts (`on`) or stops sending this edge the fills of `user`'s resting orders.
    fn watch(&mut self, user: u32, on: bool) {
        let _ = (user, on);
    }
}
