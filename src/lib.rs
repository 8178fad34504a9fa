//! # viaduct
//!
//! The exchange server's binary package: the operator config, tuning profiles, and the running
//! engine that assembles the matcher, the rings and the journal. The `viaduct` binary in
//! `src/main.rs` is its command line. Start reading at [`engine::Engine::start`].
#![forbid(unsafe_code)]

pub mod admin;
mod backpressure;
pub mod client;
pub mod config;
mod delivery;
pub mod engine;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod profile;
mod replies;
pub mod service;
pub mod tcp_edge;
