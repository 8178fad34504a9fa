//! Replay speed alone: journals the matcher mix (plus the deposits and seed orders it starts
//! from), then times recovery of that journal a few times and prints the best and median,
//! beside its baseline from the same run: the matcher alone applying the same commands in
//! memory (the commands the journal holds; no journal, no digest), as many rounds.
//!
//! `cargo run --release -p viaduct-benches --bin replay -- [commands] [rounds]`

use std::time::Instant;

use viaduct_benches::{MatcherMix, T0};
use viaduct_journaler::recovery::{journal_dir, recover};
use viaduct_journaler::segment::{JournalWriter, SEGMENT_BYTES_MAX};
use viaduct_journaler::Durability;
use viaduct_matcher::command::Command;
use viaduct_matcher::{Events, Matcher};

/// The allocator of the `viaduct` binary, so the engine measured here allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("viaduct-replay-{}", std::process::id()));
    let mix = MatcherMix::new(11, n);
    let spec = mix.start.spec().clone();
    let mut w =
        JournalWriter::open(&journal_dir(&dir), 1, spec.fingerprint(), Durability::Os, SEGMENT_BYTES_MAX).unwrap();
    let mut m = Matcher::new(spec.clone());
    let mut events = Events::default();
    let mut scratch = Vec::new();
    let mut seq = 0;
    let mut journaled = Vec::new();
    let mut journal = |cmd: &Command, w: &mut JournalWriter| {
        events.clear();
        if m.apply(T0, cmd, &mut events).is_ok() && cmd.is_write() {
            seq += 1;
            w.append(seq, T0, events.digest(&mut scratch), cmd);
            journaled.push(cmd.clone());
        }
    };
    for cmd in mix.seed_commands() {
        journal(&cmd, &mut w);
    }
    for cmd in &mix.commands {
        journal(cmd, &mut w);
    }
    w.commit().unwrap();
    let mut alone = Vec::new();
    for _ in 0..rounds {
        let mut m = Matcher::new(spec.clone());
        let started = Instant::now();
        for cmd in &journaled {
            events.clear();
            let _ = std::hint::black_box(m.apply(T0, cmd, &mut events));
        }
        alone.push(started.elapsed().as_secs_f64());
    }
    alone.sort_by(f64::total_cmp);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let r = recover(&dir, &spec, |_| {}, &mut ()).unwrap();
        times.push((started.elapsed().as_secs_f64(), r.journal.records));
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (best, records) = times[0];
    let median = times[times.len() / 2].0;
    println!(
        "replay: {records} commands; best {:.2} M/s, median {:.2} M/s over {rounds} rounds",
        records as f64 / best / 1e6,
        records as f64 / median / 1e6
    );
    let commands = journaled.len() as f64;
    let alone_median = alone[alone.len() / 2];
    println!(
        "baseline: the matcher alone on the same {commands} commands; best {:.2} M/s, median {:.2} M/s; replay's median {:.2}x of it",
        commands / alone[0] / 1e6,
        commands / alone_median / 1e6,
        (records as f64 / median) / (commands / alone_median)
    );
    std::fs::remove_dir_all(&dir).ok();
}
