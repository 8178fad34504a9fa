//! # viaduct-publishers
//!
//! Owns the consumers of the output ring: market data (klines, status, deals, depth), the history
//! writer and reader, Kafka publishing and alerts. None of them may ever slow the matcher.
//!
//! Nothing is here yet: market data and history arrive with issues #5 and #6.
#![forbid(unsafe_code)]
