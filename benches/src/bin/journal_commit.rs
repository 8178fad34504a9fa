//! How long the journal's group commit takes, over enough groups that the segments fill and
//! rotate: every `commit` timed (an HDR histogram), beside the disk's own write + fdatasync of
//! the same group size measured in the same run. What a stall to write a segment's zeros would
//! show as is the tail: `p99.9` and `max`.
//!
//! `cargo run --release -p viaduct-benches --bin journal-commit -- [groups] [records per group] [segment MiB] [os]`
//! (default 3,000 groups of 1,000 records, 32 MiB segments: about 9 segments). With `os`, the
//! journal commits in `os` durability (a write, no sync), beside a plain write of the same size:
//! small groups then show what one append costs (`200000 1 32 os`: one record per commit, as at
//! a low request rate).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

use hdrhistogram::Histogram;
use viaduct_journaler::segment::JournalWriter;
use viaduct_journaler::Durability;
use viaduct_matcher::command::Command;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn percentiles(h: &Histogram<u64>) -> String {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    format!("p50 {:.2} µs, p99 {:.2}, p99.9 {:.1}, max {:.0}", q(0.5), q(0.99), q(0.999), h.max() as f64 / 1000.0)
}

fn main() {
    let (groups, per_group, segment_mib) = (arg(1, 3000), arg(2, 1000), arg(3, 32));
    let fsync = std::env::args().nth(4).as_deref() != Some("os");
    let durability = if fsync { Durability::Fsync } else { Durability::Os };
    let dir = std::env::temp_dir().join(format!("viaduct-journal-commit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = JournalWriter::open(&dir.join("journal"), 1, 7, durability, segment_mib << 20).unwrap();
    let mut commits = Histogram::<u64>::new(3).unwrap();
    let (mut seq, mut bytes) = (0u64, 0usize);
    let started = Instant::now();
    for _ in 0..groups {
        for _ in 0..per_group {
            seq += 1;
            w.append(seq, seq, seq, &Command::Cancel { user: seq as u32, market: 0, order_id: seq });
        }
        bytes = w.pending_bytes();
        let t = Instant::now();
        w.commit().unwrap();
        commits.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    drop(w);
    // The baseline: the same group size appended to a plain file, then (for fsync) fdatasync.
    let path = dir.join("baseline.bin");
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).unwrap();
    let group = vec![1u8; bytes];
    let mut syncs = Histogram::<u64>::new(3).unwrap();
    for _ in 0..if fsync { groups.min(1000) } else { groups } {
        let t = Instant::now();
        f.write_all(&group).unwrap();
        if fsync {
            f.sync_data().unwrap();
        }
        syncs.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let mode = if fsync { "fsync" } else { "os" };
    println!(
        "journal commit ({mode}), {groups} groups of {per_group} records ({bytes} B), {segment_mib} MiB segments, {:.0} MiB in {took:.1} s: {}",
        (groups as f64 * bytes as f64) / (1 << 20) as f64,
        percentiles(&commits)
    );
    let baseline = if fsync { "write + fdatasync" } else { "write" };
    println!("baseline  {baseline} of {bytes} B to a plain file:  {}", percentiles(&syncs));
    std::fs::remove_dir_all(&dir).ok();
}
