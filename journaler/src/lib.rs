//! # viaduct-journaler
//!
//! Owns the journal (append-only, checksummed segments made durable by group commit), snapshots
//! of the matcher state, and recovery at startup. It must never acknowledge anything that is not
//! durable.
//!
//! Nothing is here yet: it arrives with the LMAX pipeline issue (#3).
#![forbid(unsafe_code)]
