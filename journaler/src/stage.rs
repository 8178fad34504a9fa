//! The journal stage: appends every journaled command the matcher produced and, at the end of
//! each batch, commits the group with one write (and, in `fsync` mode, one `fdatasync`); then
//! publishes the durable sequence that releases the batch's replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use viaduct_matcher::Command;

use crate::segment::JournalWriter;

/// Values in power-of-two buckets, counted without a lock by one writer and read by anyone:
/// bucket `i` counts values of `i` significant bits (0 alone in bucket 0; 1; 2–3; 4–7; ...).
#[derive(Debug)]
pub struct Log2Buckets {
    counts: [AtomicU64; 40],
    sum: AtomicU64,
}

impl Default for Log2Buckets {
    fn default() -> Log2Buckets {
        Log2Buckets { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }
}

impl Log2Buckets {
    pub fn record(&self, v: u64) {
        let i = ((u64::BITS - v.leading_zeros()) as usize).min(39);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// (each bucket's upper bound, its count), the sum and the count of all: what a Prometheus
    /// histogram exposes. The last bucket is unbounded.
    pub fn buckets(&self) -> (Vec<(f64, u64)>, u64, u64) {
        let last = self.counts.len() - 1;
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (if i == last { f64::INFINITY } else { ((1u64 << i) - 1) as f64 }, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (buckets, self.sum.load(Ordering::Relaxed), count)
    }
}

/// What the journal stage's commits look like, for the metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Groups committed (each one write, and one `fdatasync` in `fsync` mode).
    pub groups: AtomicU64,
    /// Commands per group.
    pub batch: Log2Buckets,
    /// A group's commit, write and sync, in microseconds.
    pub commit_us: Log2Buckets,
    /// Its `fdatasync` alone, in microseconds (`fsync` mode).
    pub sync_us: Log2Buckets,
}

/// What the journal stage calls with why, before it stops the process: the engine raises an
/// alert and lets it leave.
pub type OnFailure = Box<dyn Fn(String) + Send>;

pub struct JournalStage {
    writer: JournalWriter,
    /// The highest sequence on disk: replies up to it may be released.
    durable: Arc<AtomicU64>,
    stats: Arc<CommitStats>,
    failed: OnFailure,
}

impl JournalStage {
    pub fn new(
        writer: JournalWriter,
        durable: Arc<AtomicU64>,
        stats: Arc<CommitStats>,
        failed: OnFailure,
    ) -> JournalStage {
        JournalStage { writer, durable, stats, failed }
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
        let started = (self.writer.pending_bytes() > 0).then(Instant::now);
        match self.writer.commit() {
            Ok(seq) => {
                if let Some(started) = started {
                    let before = self.durable.load(Ordering::Relaxed);
                    self.stats.groups.fetch_add(1, Ordering::Relaxed);
                    self.stats.batch.record(seq - before);
                    self.stats.commit_us.record(micros(started.elapsed()));
                    if let Some(sync) = self.writer.last_sync() {
                        self.stats.sync_us.record(micros(sync));
                    }
                }
                self.durable.store(seq, Ordering::Release)
            }
            Err(e) => {
                (self.failed)(format!("{e}; stopping, as nothing more can be made durable"));
                std::process::abort();
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::Log2Buckets;

    /// A value lands in the bucket of its significant bits: 0; 1; 2–3; 4–7; ...; the last takes
    /// everything above.
    #[test]
    fn values_land_in_the_bucket_of_their_bits() {
        let b = Log2Buckets::default();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000, u64::MAX] {
            b.record(v);
        }
        let (buckets, _, count) = b.buckets();
        assert_eq!(count, 9);
        let at = |bound: f64| buckets.iter().find(|(le, _)| *le == bound).unwrap().1;
        assert_eq!((at(0.0), at(1.0), at(3.0), at(7.0), at(15.0), at(1023.0)), (1, 1, 2, 2, 1, 1));
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 1));
    }
}
