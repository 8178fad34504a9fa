//! Recovery at startup: the newest snapshot that reads back whole, then every journal record
//! after it, applied in order. Nothing is skipped: a record that cannot be read or applied stops
//! recovery with a message naming the file, the offset and what to do.

use std::path::{Path, PathBuf};

use std::sync::mpsc::{Receiver, SyncSender};

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use viaduct_matcher::event::{digest_of, Mark};
use viaduct_matcher::{Events, EventsView, Matcher, SnapshotError, Spec};

use crate::segment::{self, ReadOutcome};
use crate::{snapshot, JournalError};

/// Where a data directory keeps its journal and snapshots.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Progress of a replay, for a bar or log lines.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Loaded the snapshot at this sequence.
    Snapshot { seq: u64 },
    /// Replayed this many records so far.
    Replayed { records: u64, seq: u64 },
}

/// A consumer whose state is rebuilt with the matcher's: loaded from the snapshot's downstream
/// bytes, then fed the events of every command replayed after it.
pub trait Downstream {
    /// Loads the state saved in a snapshot (empty when the snapshot has none); an error stops
    /// recovery with its message.
    fn load(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Takes the events of the replayed command `seq`.
    fn apply(&mut self, seq: u64, events: EventsView<'_>);
}

/// No downstream state.
impl Downstream for () {
    fn load(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn apply(&mut self, _: u64, _: EventsView<'_>) {}
}

/// What recovery rebuilt.
pub struct Recovered {
    pub matcher: Matcher,
    /// The sequence of the last command in the rebuilt state (0 for an empty journal).
    pub last_seq: u64,
    /// The snapshot recovery started from, if any.
    pub snapshot_seq: Option<u64>,
    pub journal: ReadOutcome,
}

/// How often replay reports progress, in records.
const PROGRESS_EVERY: u64 = 100_000;

/// Rebuilds the state in `data_dir` under `spec`.
pub fn recover(
    data_dir: &Path,
    spec: &Spec,
    progress: impl FnMut(Progress),
    downstream: &mut impl Downstream,
) -> Result<Recovered, JournalError> {
    recover_from(data_dir, spec, progress, downstream, u64::MAX)
}

/// [`recover`], starting from the newest snapshot at or before `seq_at_most`: a consumer that
/// committed up to that sequence sees the events of every command after it.
pub fn recover_from(
    data_dir: &Path,
    spec: &Spec,
    mut progress: impl FnMut(Progress),
    downstream: &mut impl Downstream,
    seq_at_most: u64,
) -> Result<Recovered, JournalError> {
    let (mut matcher, snapshot_seq) = match newest_snapshot(&snapshot_dir(data_dir), spec, downstream, seq_at_most)? {
        Some((seq, m)) => {
            progress(Progress::Snapshot { seq });
            (m, Some(seq))
        }
        None => (Matcher::new(spec.clone()), None),
    };
    let after = snapshot_seq.unwrap_or(0);
    let jdir = journal_dir(data_dir);
    if let Some((first, _)) = segment::list_segments(&jdir)?.first() {
        if *first > after + 1 {
            return Err(JournalError::MissingHistory { first: *first });
        }
    }
    let (journal, replayed) = replay(&jdir, spec.fingerprint(), after, &mut matcher, &mut progress, downstream)?;
    progress(Progress::Replayed { records: replayed, seq: journal.last_seq });
    Ok(Recovered { matcher, last_seq: journal.last_seq, snapshot_seq, journal })
}

/// The state at the newest snapshot at or before `seq_at_most`, and its sequence (a fresh state
/// at 0 when there is none and the journal starts at sequence 1): where a consumer that holds
/// everything up to `seq_at_most` replays the journal from to rebuild what follows. Refused with
/// [`JournalError::MissingHistory`] when neither is left.
pub fn state_at(data_dir: &Path, spec: &Spec, seq_at_most: u64) -> Result<(Matcher, u64), JournalError> {
    let (matcher, seq) = match newest_snapshot(&snapshot_dir(data_dir), spec, &mut (), seq_at_most)? {
        Some((seq, m)) => (m, seq),
        None => (Matcher::new(spec.clone()), 0),
    };
    if let Some((first, _)) = segment::list_segments(&journal_dir(data_dir))?.first() {
        if *first > seq + 1 {
            return Err(JournalError::MissingHistory { first: *first });
        }
    }
    Ok((matcher, seq))
}

/// Records decoded ahead of the matcher, per batch, and batches in flight: the reader thread
/// reads and checks records while the matcher applies the previous batch, and the verifier
/// thread encodes and hashes the events of the batch before.
const REPLAY_BATCH: usize = 4096;
const REPLAY_BATCHES_AHEAD: usize = 8;

struct Batch {
    path: PathBuf,
    records: Vec<segment::Entry>,
}

/// The events of a batch of replayed commands, as the matcher recorded them, for the verifier to
/// digest against the digests the journal holds. The matcher records into the batch's buffer
/// directly, so the applying thread neither copies nor encodes them.
#[derive(Default)]
struct Verify {
    path: PathBuf,
    /// (sequence, the journal's digest, where its events end in `events`).
    commands: Vec<(u64, u64, Mark)>,
    events: Events,
}

/// Digests each command's events and compares them with the journal's digests; the first
/// command that differs ends it. Emptied batches go back on `spare` for reuse.
fn verify(batches: Receiver<Verify>, spare: SyncSender<Verify>) -> Option<JournalError> {
    let mut scratch = Vec::new();
    for mut batch in batches {
        let mut from = Mark::default();
        for &(seq, digest, to) in &batch.commands {
            scratch.clear();
            batch.events.between(from, to).encode_canonical(&mut scratch);
            if digest_of(&scratch) != digest {
                return Some(JournalError::Diverged { path: batch.path, seq });
            }
            from = to;
        }
        batch.commands.clear();
        batch.events.clear();
        let _ = spare.try_send(batch);
    }
    None
}

/// Where replay's threads run, on a machine that gives this process two cores or more: the
/// applying thread alone on the last of them, the reader and the verifier on the others. Left to
/// the scheduler, a helper woken by the applying thread tends to be woken on its core and share
/// it (`replay 2000000 7`, 6 runs each, alternated: medians 4.90 – 8.37 M/s unpinned, 8.08 –
/// 9.07 M/s placed).
struct Placement {
    /// The applying thread's mask before replay, given back after it.
    before: CpuSet,
    helpers: CpuSet,
}

impl Placement {
    /// Pins the calling thread, which applies, to the last core of its mask; `None` when the mask
    /// holds one core or cannot be read or set (replay then runs where the scheduler puts it).
    fn apply_here() -> Option<Placement> {
        let before = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let cores: Vec<usize> = (0..CpuSet::count()).filter(|&c| before.is_set(c).unwrap_or(false)).collect();
        let (&applier, others) = cores.split_last()?;
        if others.is_empty() {
            return None;
        }
        let mut alone = CpuSet::new();
        alone.set(applier).ok()?;
        let mut helpers = CpuSet::new();
        for &c in others {
            helpers.set(c).ok()?;
        }
        sched_setaffinity(Pid::from_raw(0), &alone).ok()?;
        tracing::debug!("recovery: applying on core {applier}, reading and verifying on cores {others:?}");
        Some(Placement { before, helpers })
    }

    /// Pins the calling thread, a helper, to the cores the applying thread left.
    fn helper_here(&self) {
        if let Err(e) = sched_setaffinity(Pid::from_raw(0), &self.helpers) {
            tracing::debug!("recovery: a helper thread stays unpinned: {e}");
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Err(e) = sched_setaffinity(Pid::from_raw(0), &self.before) {
            tracing::warn!("recovery: giving the applying thread its cores back failed: {e}");
        }
    }
}

/// Reads the journal after `after` on one thread, applies it on this one, and checks each
/// command's events against its digest on a third.
fn replay(
    dir: &Path,
    fingerprint: u64,
    after: u64,
    matcher: &mut Matcher,
    progress: &mut impl FnMut(Progress),
    downstream: &mut impl Downstream,
) -> Result<(ReadOutcome, u64), JournalError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(REPLAY_BATCHES_AHEAD);
    let (to_verify, verifying) = std::sync::mpsc::sync_channel::<Verify>(REPLAY_BATCHES_AHEAD);
    let (spare_tx, spare) = std::sync::mpsc::sync_channel::<Verify>(REPLAY_BATCHES_AHEAD + 2);
    let placement = Placement::apply_here();
    let placement = placement.as_ref();
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("journal-reader".into())
            .spawn_scoped(s, move || {
                if let Some(p) = placement {
                    p.helper_here();
                }
                let mut batch = Batch { path: PathBuf::new(), records: Vec::with_capacity(REPLAY_BATCH) };
                let outcome = segment::read_journal(dir, fingerprint, after, |entry, path| {
                    if batch.path != path || batch.records.len() == REPLAY_BATCH {
                        let full = std::mem::replace(
                            &mut batch,
                            Batch { path: path.to_path_buf(), records: Vec::with_capacity(REPLAY_BATCH) },
                        );
                        if !full.records.is_empty() && tx.send(full).is_err() {
                            return Err(JournalError::Stopped);
                        }
                    }
                    batch.records.push(entry);
                    Ok(())
                });
                if !batch.records.is_empty() {
                    let _ = tx.send(batch);
                }
                outcome
            })
            .map_err(crate::io_err(dir))?;
        let verifier = std::thread::Builder::new()
            .name("journal-verify".into())
            .spawn_scoped(s, move || {
                if let Some(p) = placement {
                    p.helper_here();
                }
                verify(verifying, spare_tx)
            })
            .map_err(crate::io_err(dir))?;
        let mut replayed = 0u64;
        let mut failure = None;
        'batches: for batch in rx.iter() {
            let mut check = spare
                .try_recv()
                .unwrap_or_else(|_| Verify { events: Events::with_capacity(REPLAY_BATCH * 4), ..Verify::default() });
            check.path.clone_from(&batch.path);
            for &segment::Entry { seq, time_us, digest, ref cmd } in &batch.records {
                let from = check.events.mark();
                if let Err(error) = matcher.apply(time_us, cmd, &mut check.events) {
                    failure = Some(JournalError::Replay { path: batch.path.clone(), seq, error });
                    break;
                }
                let to = check.events.mark();
                check.commands.push((seq, digest, to));
                downstream.apply(seq, check.events.between(from, to));
                replayed += 1;
                if replayed.is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress::Replayed { records: replayed, seq });
                }
            }
            // A verifier that stopped found a command that diverged: nothing after it counts.
            if to_verify.send(check).is_err() || failure.is_some() {
                break 'batches;
            }
        }
        drop(rx);
        drop(to_verify);
        let diverged = verifier.join().expect("journal verifier thread");
        let outcome = reader.join().expect("journal reader thread");
        // The first command that went wrong is the one to name.
        let failure = match (failure, diverged) {
            (Some(JournalError::Replay { seq: a, .. }), Some(d @ JournalError::Diverged { seq: b, .. })) if b < a => {
                Some(d)
            }
            (None, d) => d,
            (f, _) => f,
        };
        match (failure, outcome) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(outcome)) => Ok((outcome, replayed)),
        }
    })
}

/// The newest snapshot that reads back whole. One that fails its checksum is skipped with a
/// warning (the journal still holds what it covered, unless segments were already removed); one
/// that the config no longer fits stops recovery.
fn newest_snapshot(
    dir: &Path,
    spec: &Spec,
    downstream: &mut impl Downstream,
    seq_at_most: u64,
) -> Result<Option<(u64, Matcher)>, JournalError> {
    for (seq, path) in snapshot::list(dir)?.into_iter().rev().filter(|(seq, _)| *seq <= seq_at_most) {
        let state = match snapshot::read(&path) {
            Ok((_, state)) => state,
            Err(e) => {
                tracing::warn!("recovery: {e}; trying the previous snapshot");
                continue;
            }
        };
        let Some((matcher, rest)) = snapshot::decode_state(&state) else {
            tracing::warn!(
                "recovery: snapshot {} is not laid out as a snapshot; trying the previous one",
                path.display()
            );
            continue;
        };
        match Matcher::from_snapshot(spec.clone(), matcher) {
            Ok(m) => {
                downstream.load(rest).map_err(|reason| JournalError::Snapshot { path: path.clone(), reason })?;
                return Ok(Some((seq, m)));
            }
            Err(e @ (SnapshotError::Asset(_) | SnapshotError::Market(_))) => {
                return Err(JournalError::Snapshot { path, reason: e.to_string() });
            }
            Err(e) => tracing::warn!("recovery: snapshot {}: {e}; trying the previous snapshot", path.display()),
        }
    }
    Ok(None)
}
