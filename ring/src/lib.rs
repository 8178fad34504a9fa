//! # viaduct-ring
//!
//! Owns the input ring (many producers: the edges) and the output ring (one producer: the
//! matcher; many consumers), their slot types, wait strategies and thread pinning, and the one
//! function that wires the whole pipeline. It must never hold matcher state or do network I/O.
//!
//! Nothing is here yet: the pipeline arrives with the LMAX pipeline issue (#3).
#![forbid(unsafe_code)]
