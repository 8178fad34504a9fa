//! # viaduct-edges
//!
//! Owns the network edges on `mio`: HTTP JSON-RPC, WebSocket, and the TCP edge (binary order entry
//! and framed JSON-RPC). Edges decode requests with `viaduct_matcher::decode` and never touch
//! matcher state.
//!
//! Nothing is here yet: the edges arrive with issue #4.
#![forbid(unsafe_code)]
