//! The journal stage: appends every journaled command the matcher produced and, at the end of
//! each batch, commits the group with one write (and, in `fsync` mode, one `fdatasync`); then
//! publishes the durable sequence that releases the batch's replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use viaduct_matcher::Command;

use crate::segment::JournalWriter;

pub struct JournalStage {
    writer: JournalWriter,
    /// The highest sequence on disk: replies up to it may be released.
    durable: Arc<AtomicU64>,
    /// Groups committed (each one write, and one `fdatasync` in `fsync` mode).
    commits: Arc<AtomicU64>,
}

impl JournalStage {
    pub fn new(writer: JournalWriter, durable: Arc<AtomicU64>, commits: Arc<AtomicU64>) -> JournalStage {
        JournalStage { writer, durable, commits }
    }

    /// One command of the batch; `seq` 0 is a command that changed nothing (not journaled).
    pub fn append(&mut self, seq: u64, time_us: u64, digest: u64, cmd: &Command) {
        if seq != 0 {
            self.writer.append(seq, time_us, digest, cmd);
        }
    }

    /// The end of a batch: its commands are made durable together. A journal that cannot be
    /// written stops the process: nothing after it could be acknowledged, and a restart recovers
    /// what is on disk.
    pub fn end_batch(&mut self) {
        if self.writer.pending_bytes() > 0 {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        match self.writer.commit() {
            Ok(seq) => self.durable.store(seq, Ordering::Release),
            Err(e) => {
                tracing::error!("journal: {e}; stopping, as nothing more can be made durable");
                std::process::abort();
            }
        }
    }
}
