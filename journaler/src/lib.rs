//! # viaduct-journaler
//!
//! Owns what makes the engine durable: the journal (append-only segment files of checksummed
//! records in matcher order, made durable by group commit), snapshots of the whole matcher state,
//! and recovery at startup (newest valid snapshot, then the journal after it); and the two stages
//! that run them: the journal stage ([`stage::JournalStage`]) and the snapshot worker
//! ([`snapshotter::SnapshotWorker`]).
//!
//! It must never report a sequence as durable before its bytes are (in `fsync` mode) on disk,
//! never skip a record it cannot read, and never replay a journal under a config other than the
//! one it was written with. Start reading at [`segment::JournalWriter`], then [`recovery::recover`].
#![forbid(unsafe_code)]

pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod snapshotter;
pub mod stage;

use std::path::PathBuf;

/// When the journal's writes count as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` after every group of records: acknowledged means on disk.
    Fsync,
    /// Written to the OS, never synced: survives a crash of the process, not of the machine.
    Os,
    /// Not written at all: for benchmarks of everything else.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            "none" => Ok(Durability::None),
            other => Err(format!("durability {other:?} is not one of fsync, os, none")),
        }
    }
}

/// Why the journal or a snapshot could not be used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "journal segment {path} is corrupt at byte {offset}, where sequence {seq} should be: {reason}. Nothing on \
         disk was changed; every record before that offset is intact; nothing after it was replayed. Restore the segment from a copy, or move it and every later segment aside \
         to start from the records before it (what they held is then lost)"
    )]
    Corrupt { path: PathBuf, offset: u64, seq: u64, reason: String },
    #[error(
        "journal segment {path} was written under another config (its assets or markets differ). \
         Start with the config it was written with; change the config only after a snapshot covers the journal"
    )]
    ConfigChanged { path: PathBuf },
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    #[error(
        "no usable snapshot, and the journal starts at sequence {first} instead of 1, so the state before it is \
         unknown. Restore a snapshot into the snapshots directory"
    )]
    MissingHistory { first: u64 },
    /// Internal: the consumer of a read stopped it (after an error of its own).
    #[error("the journal read was stopped")]
    Stopped,
    #[error("replaying sequence {seq} from {path} failed with \"{error}\": the journal and the config disagree")]
    Replay { path: PathBuf, seq: u64, error: viaduct_matcher::RpcError },
    #[error(
        "replaying sequence {seq} from {path} made other events than the engine made when it journaled it, so the \
         state would diverge from what clients were told; nothing from it on was applied. This build (or its config) \
         computes a different outcome from the one that wrote the journal: run the build that wrote it until a \
         snapshot covers the journal, then upgrade"
    )]
    Diverged { path: PathBuf, seq: u64 },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

/// The global allocator's "return to the system what this thread freed" (the binary sets it once
/// at startup: it needs `unsafe`; unset, as in tests, nothing is called). Memory a thread freed
/// in pages of its own goes back only when that thread calls into the allocator again, and after
/// a spike (one order's 10,000 deals: tens of MB of events) a follower of the journal may idle
/// for good: the threads that idle after work call [`return_freed_memory`] while they do.
pub static RETURN_FREED_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Calls [`RETURN_FREED_MEMORY`] if it is set.
pub fn return_freed_memory() {
    if let Some(collect) = RETURN_FREED_MEMORY.get() {
        collect();
    }
}
