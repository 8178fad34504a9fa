//! # viaduct-edges
//!
//! Owns the network edges, each an event loop on its own thread with non-blocking sockets and a
//! bound on everything: connections, request size, buffered replies, idle time. Edges decode
//! requests with [`viaduct_matcher::decode`] and hand commands to a [`Backend`]; they never touch
//! matcher state. A client that sends garbage, sends too much or reads too slowly is answered or
//! disconnected without affecting anyone else.
//!
//! Today: the HTTP JSON-RPC edge ([`http`], ViaBTC's accesshttp). The WebSocket and TCP edges
//! come later.
#![forbid(unsafe_code)]

pub mod http;

use std::sync::Arc;

use viaduct_matcher::{Command, Spec};

/// Wakes an edge's event loop: the backend calls it after handing the edge replies.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What an edge submits commands to and takes replies from.
pub trait Backend: Send + 'static {
    fn spec(&self) -> &Spec;
    /// Submits `cmd` marked with `tag`; hands it back when the engine cannot take it now.
    fn submit(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command>;
    /// A reply that is ready: the tag it was submitted with, and the whole JSON-RPC response.
    fn try_recv(&mut self) -> Option<(u64, String)>;
}
