//! The snapshot worker: it follows the journal as it is written, replays each command into a
//! matcher of its own (the shadow), and snapshots the shadow every `interval` commands, so the
//! matcher never stops for a snapshot. The journal is its queue: it is not a stage of the output
//! ring, copies nothing out of it, and however long a snapshot of a large book takes, it holds
//! nothing back; it reads on from the journal afterwards. Segments are removed only once a
//! snapshot covers them, so the worker always finds what it has not read.
//!
//! The thread it runs on, its core and its priority are the assembly's (`src/pipeline.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use viaduct_matcher::{Events, EventsView, Matcher};

use crate::segment::{remove_covered, JournalTail};
use crate::snapshot;

/// State kept beside the shadow matcher and saved in its snapshots (market data): it follows the
/// shadow's events, and its bytes go into each snapshot after the matcher's.
pub trait Companion: Send {
    fn apply(&mut self, events: EventsView<'_>);
    fn snapshot(&self) -> Vec<u8>;
}

/// A worker with nothing beside its matcher.
impl Companion for () {
    fn apply(&mut self, _: EventsView<'_>) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// How an operator asks the running worker for a snapshot now (`viaduct ctl snapshot`), and
/// what its snapshots took, for the metrics.
#[derive(Debug, Default)]
pub struct SnapshotControl {
    requested: AtomicBool,
    /// Requests the worker has answered (with a snapshot, or none when the newest covers all).
    pub answered: AtomicU64,
    /// Snapshots written since start, and the last one's sequence, time (encoding, write and
    /// sync, in ms) and size.
    pub taken: AtomicU64,
    pub last_seq: AtomicU64,
    pub last_ms: AtomicU64,
    pub last_bytes: AtomicU64,
    /// Snapshots that failed since start.
    pub failed: AtomicU64,
}

impl SnapshotControl {
    /// Asks for a snapshot of everything the worker has read, at its next look at the journal.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
    }
}

pub struct SnapshotWorker<C> {
    /// The sequences that consumers which resume from a snapshot (the history store, the Kafka
    /// publisher) would rebuild their state at: the snapshot each would restart from is kept.
    held: Vec<Arc<AtomicU64>>,
    shadow: Matcher,
    /// What follows the shadow's events and is saved with it.
    companion: C,
    last_snapshot: u64,
    /// How long the last snapshot took to encode, and when it was done: see [`snapshot_due`].
    last_took: Duration,
    last_done: Instant,
    interval: u64,
    keep: usize,
    snapshots: PathBuf,
    journal: PathBuf,
    /// The lag from which a worker at idle priority returns to normal priority.
    catch_up_from: u64,
    control: Arc<SnapshotControl>,
    /// Told why a snapshot failed (the engine raises an alert); the worker goes on.
    on_failure: Option<Box<dyn Fn(String) + Send>>,
}

/// How long the snapshot worker sleeps between reads of the journal: each read then takes a
/// millisecond's records at once. After `SNAPSHOT_IDLE_AFTER` reads that found nothing it sleeps
/// `SNAPSHOT_IDLE_SLEEP`, so an idle engine wakes it 100 times a second.
const SNAPSHOT_READ_EVERY: Duration = Duration::from_millis(1);
const SNAPSHOT_IDLE_AFTER: u32 = 100;
const SNAPSHOT_IDLE_SLEEP: Duration = Duration::from_millis(10);

/// How far the snapshot worker may lag the durable sequence before state-changing requests are
/// refused: this many snapshot intervals, and never less than `SNAPSHOT_LAG_MIN` commands. The
/// journal is kept from the worker's position on, so the bound is also one on the disk it takes
/// (a snapshot that takes seconds lags a few hundred thousand commands; a worker that has
/// stopped would otherwise let the journal grow until the disk is full).
pub const SNAPSHOT_LAG_INTERVALS: u64 = 4;
pub const SNAPSHOT_LAG_MIN: u64 = 1_000_000;

pub fn snapshot_lag_max(interval: u64) -> u64 {
    interval.saturating_mul(SNAPSHOT_LAG_INTERVALS).max(SNAPSHOT_LAG_MIN)
}

/// A worker at idle priority (`snapshots.idle_priority`) returns to normal priority once it lags
/// by this share of its bound, and to idle priority once it has read the whole journal again.
/// At idle priority it runs only on time no other thread wants; a machine with none to spare
/// would starve it, and it would reach its bound and stop writes. (A starved idle thread still
/// runs a few milliseconds a second, and sees its lag then.)
pub const SNAPSHOT_CATCH_UP_SHARE: u64 = 4;
const SNAPSHOT_LAG_CHECK_EVERY: u64 = 4096;

/// A snapshot whose encoding took at least `SNAPSHOT_DEFER_FROM` is followed by one only after
/// `SNAPSHOT_SHARE_MAX - 1` times as long again, so snapshots take at most a tenth of the worker
/// (the file's write and sync are waiting, not work, and do not count: a slow disk defers nothing).
const SNAPSHOT_DEFER_FROM: Duration = Duration::from_millis(100);
const SNAPSHOT_SHARE_MAX: u32 = 10;

/// Whether the worker takes a snapshot now: `since` commands after the last one, which took
/// `took` and ended `since_done()` ago (read only once the interval has passed: this runs for
/// every command the worker replays). Every `interval` commands, unless the state has grown so
/// large that snapshots would take more than a tenth of the worker's time: a snapshot of a large
/// state at a high rate (a second for a full client-id window, at a million commands a second)
/// would otherwise run back to back, the worker would fall behind the journal, and its lag bound
/// would refuse orders. Replay after a crash then has more to read, no more than the worker's
/// time allows.
fn snapshot_due(since: u64, interval: u64, took: Duration, since_done: impl FnOnce() -> Duration) -> bool {
    since >= interval && (took < SNAPSHOT_DEFER_FROM || since_done() >= took * (SNAPSHOT_SHARE_MAX - 1))
}

impl<C: Companion> SnapshotWorker<C> {
    /// A worker whose shadow `shadow` (with `companion`) is the state at `last_snapshot`, the
    /// sequence it reads on from; `snapshots` and `journal` are the data directory's, and
    /// `held` the sequences consumers that resume from a snapshot would restart at (the history
    /// store's, the Kafka publisher's): the snapshot at or before each is kept, with the journal
    /// after it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shadow: Matcher,
        companion: C,
        last_snapshot: u64,
        interval: u64,
        keep: usize,
        snapshots: PathBuf,
        journal: PathBuf,
        held: Vec<Arc<AtomicU64>>,
        control: Arc<SnapshotControl>,
    ) -> SnapshotWorker<C> {
        SnapshotWorker {
            control,
            on_failure: None,
            held,
            shadow,
            companion,
            last_snapshot,
            last_took: Duration::ZERO,
            last_done: Instant::now(),
            interval,
            keep,
            snapshots,
            journal,
            catch_up_from: snapshot_lag_max(interval) / SNAPSHOT_CATCH_UP_SHARE,
        }
    }

    /// Calls `failed` with why whenever a snapshot fails (the worker goes on, and the journal is
    /// kept until one succeeds).
    pub fn on_failure(mut self, failed: Box<dyn Fn(String) + Send>) -> SnapshotWorker<C> {
        self.on_failure = Some(failed);
        self
    }

    /// Follows the journal until `stop`, at the priority `priority` gives it: normal from a lag of
    /// `catch_up_from` commands on, and while stopping, until it has read everything.
    /// `behind(true)` asks for normal priority, `behind(false)` allows idle priority again.
    /// Returns why it stopped before `stop`, if it did: the caller alerts, as no more snapshots
    /// are taken until a restart.
    pub fn run(
        mut self,
        durable: &AtomicU64,
        stop: &AtomicBool,
        applied: &AtomicU64,
        behind: &mut dyn FnMut(bool),
    ) -> Result<(), String> {
        let mut tail = JournalTail::new(&self.journal, self.last_snapshot + 1);
        let mut events = Events::with_capacity(64);
        let mut scratch = Vec::with_capacity(4096);
        let mut idle = 0u32;
        let catch_up_from = self.catch_up_from;
        let lags = |at: u64| durable.load(Ordering::Acquire).saturating_sub(at) >= catch_up_from;
        loop {
            // `stop` is read first: once it is set, the durable sequence read after it is final.
            let stopping = stop.load(Ordering::Acquire);
            let upto = durable.load(Ordering::Acquire);
            if stopping || lags(tail.next_seq()) {
                behind(true);
            }
            if upto >= tail.next_seq() {
                idle = 0;
                let mut diverged = None;
                let read = tail.read_to(upto, |entry| {
                    if diverged.is_some() {
                        return;
                    }
                    let seq = entry.seq;
                    // A long read at idle priority may be starved: the lag is looked at again
                    // every few thousand commands.
                    if seq % SNAPSHOT_LAG_CHECK_EVERY == 0 && lags(seq) {
                        behind(true);
                    }
                    events.clear();
                    if let Err(e) = self.shadow.apply(entry.time_us, &entry.cmd, &mut events) {
                        diverged =
                            Some(format!("command {seq} succeeded in the matcher but fails in its shadow ({e})"));
                        return;
                    }
                    if events.digest(&mut scratch) != entry.digest {
                        diverged = Some(format!("command {seq} made other events in the shadow than in the matcher"));
                        return;
                    }
                    self.companion.apply(events.view());
                    let last_done = self.last_done;
                    if snapshot_due(seq - self.last_snapshot, self.interval, self.last_took, || last_done.elapsed()) {
                        self.snapshot(seq);
                    }
                    applied.store(seq, Ordering::Release);
                });
                if let Some(what) = diverged {
                    // The shadow's state is no longer the matcher's: a snapshot of it would
                    // recover another state. Recovery would stop at the same command.
                    return Err(format!("{what}: the state machine is not deterministic. No more snapshots are taken; the journal is kept from the last good one, and state-changing requests are refused once the worker lags by its bound"));
                }
                if let Err(e) = read {
                    // The pipeline goes on; the journal is kept whole until snapshots resume
                    // (a restart, once the cause is fixed).
                    return Err(format!("reading the journal failed ({e}); no more snapshots are taken until a restart, and state-changing requests are refused once the worker lags by its bound"));
                }
                if !stopping {
                    behind(false);
                }
            } else if stopping {
                return Ok(());
            } else {
                idle = idle.saturating_add(1);
                // Idle about a second (100 reads, then 10 ms sleeps), and every 10 s after: what
                // a spike made it allocate goes back to the system.
                if idle % 1_000 == SNAPSHOT_IDLE_AFTER + 90 {
                    crate::return_freed_memory();
                }
            }
            if self.control.requested.swap(false, Ordering::AcqRel) {
                let at = tail.next_seq() - 1;
                if at > self.last_snapshot {
                    self.snapshot(at);
                }
                self.control.answered.fetch_add(1, Ordering::AcqRel);
            }
            std::thread::sleep(if idle > SNAPSHOT_IDLE_AFTER { SNAPSHOT_IDLE_SLEEP } else { SNAPSHOT_READ_EVERY });
        }
    }

    fn snapshot(&mut self, seq: u64) {
        let started = Instant::now();
        // The matcher's state goes to the file as it is encoded (it can be hundreds of MB); the
        // market data's is small.
        let market = self.companion.snapshot();
        let shadow = &self.shadow;
        let written = snapshot::write_streaming(&self.snapshots, seq, |w| shadow.snapshot_to(w).map(drop), &market);
        // The worker's own work: encoding and writing to the OS; the sync is waiting, and is left
        // out (a failed write counts as none).
        let encoded = written.as_ref().map_or(Duration::ZERO, |w| w.encoded);
        let result = written.and_then(|w| {
            let protect = self.held.iter().map(|c| c.load(Ordering::Acquire)).min().unwrap_or(u64::MAX);
            let oldest = snapshot::prune(&self.snapshots, self.keep, protect)?;
            Ok((w.bytes, remove_covered(&self.journal, oldest.unwrap_or(0))?))
        });
        match result {
            Ok((bytes, removed)) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    "snapshots: state at sequence {seq} written ({bytes} bytes, {ms} ms); {removed} journal segments removed"
                );
                self.control.last_seq.store(seq, Ordering::Relaxed);
                self.control.last_ms.store(ms, Ordering::Relaxed);
                self.control.last_bytes.store(bytes, Ordering::Relaxed);
                self.control.taken.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                self.control.failed.fetch_add(1, Ordering::AcqRel);
                let why = format!(
                    "the snapshot at sequence {seq} failed ({e}); the journal keeps everything until one succeeds"
                );
                match &self.on_failure {
                    Some(failed) => failed(why),
                    None => tracing::error!("snapshots: {why}"),
                }
            }
        }
        self.last_snapshot = seq;
        self.last_took = encoded;
        self.last_done = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::{journal_dir, snapshot_dir};
    use crate::segment::JournalWriter;
    use crate::Durability;
    use std::path::Path;
    use viaduct_matcher::Spec;
    use viaduct_protocol::decode;
    use viaduct_ring::Background;

    /// Snapshots come every interval while they are quick; one that took long defers the next
    /// until nine times as long again has passed, however many commands came.
    #[test]
    fn a_slow_snapshot_defers_the_next_to_keep_snapshots_to_a_tenth_of_the_worker() {
        let ms = Duration::from_millis;
        let ago = |n| move || ms(n);
        // Quick snapshots: the interval alone decides.
        assert!(!snapshot_due(999, 1000, ms(5), ago(0)));
        assert!(snapshot_due(1000, 1000, ms(5), ago(0)));
        assert!(snapshot_due(1000, 1000, ms(99), ago(0)));
        // A one-second snapshot: nothing for 9 s, then at the interval again.
        assert!(!snapshot_due(5_000_000, 1000, ms(1000), ago(8999)));
        assert!(snapshot_due(5_000_000, 1000, ms(1000), ago(9000)));
        assert!(!snapshot_due(999, 1000, ms(1000), ago(60_000)));
        // Before the interval the clock is not read.
        assert!(!snapshot_due(999, 1000, ms(1000), || unreachable!("read before the interval")));
    }

    /// The shadow checks each command's digest: at the first that differs from what the matcher
    /// journaled, it stops, taking no snapshot of the diverged state and applying nothing more.
    #[test]
    fn the_snapshot_worker_stops_at_a_command_the_shadow_replays_differently() {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker_on_journal(dir.path(), 40, Some(25));
        let (durable, stop, applied) = (AtomicU64::new(40), AtomicBool::new(false), AtomicU64::new(0));
        // It returns by itself, saying why: `stop` is never set.
        let stopped = worker.run(&durable, &stop, &applied, &mut |_| {});
        assert!(stopped.unwrap_err().contains("command 25 made other events in the shadow"));
        assert_eq!(applied.load(Ordering::Acquire), 24);
        let mut taken: Vec<String> = std::fs::read_dir(snapshot_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        taken.sort();
        assert_eq!(taken.len(), 2, "snapshots at 10 and 20 only: {taken:?}");
    }

    /// A journal of `n` deposits (the matcher's digest of `bad` altered) and a worker to follow it
    /// from the start, taking a snapshot every 10.
    fn worker_on_journal(dir: &Path, n: u64, bad: Option<u64>) -> SnapshotWorker<()> {
        use viaduct_matcher::config::embedded;
        let spec = Spec::new(&embedded()).unwrap();
        let mut w = JournalWriter::open(&journal_dir(dir), 1, spec.fingerprint(), Durability::Os, 1 << 20).unwrap();
        let (mut m, mut events, mut scratch) = (Matcher::new(spec.clone()), Events::default(), Vec::new());
        for seq in 1..=n {
            let params = serde_json::json!([seq, "BTC", "deposit", seq, "1.5", {}]);
            let cmd = decode(&spec, "balance.update", params.as_array().unwrap()).unwrap();
            events.clear();
            m.apply(1_700_000_000_000_000 + seq, &cmd, &mut events).unwrap();
            let digest = events.digest(&mut scratch);
            w.append(seq, 1_700_000_000_000_000 + seq, if Some(seq) == bad { !digest } else { digest }, &cmd);
        }
        assert_eq!(w.commit().unwrap(), n);
        std::fs::create_dir_all(snapshot_dir(dir)).unwrap();
        SnapshotWorker {
            held: Vec::new(),
            control: Arc::default(),
            on_failure: None,
            shadow: Matcher::new(spec.clone()),
            companion: (),
            last_snapshot: 0,
            last_took: Duration::ZERO,
            last_done: Instant::now(),
            interval: 10,
            keep: 10,
            snapshots: snapshot_dir(dir),
            journal: journal_dir(dir),
            catch_up_from: u64::MAX,
        }
    }

    /// At idle priority, the worker returns to normal priority once it lags by its catch-up bound,
    /// and when it is stopped (so that a busy machine does not starve its last reads).
    #[test]
    fn the_snapshot_worker_leaves_idle_priority_when_it_lags_or_stops() {
        std::thread::spawn(|| {
            let run = |n: u64, bad: Option<u64>, stop: bool, catch_up_from: u64| {
                let dir = tempfile::tempdir().unwrap();
                let worker = SnapshotWorker { catch_up_from, ..worker_on_journal(dir.path(), n, bad) };
                let (durable, stop, applied) = (AtomicU64::new(n), AtomicBool::new(stop), AtomicU64::new(0));
                let mut priority = Background::enter("test", true);
                let was_idle = priority.is_idle();
                let _ = worker.run(&durable, &stop, &applied, &mut |behind| drop(priority.set_behind(behind)));
                (was_idle, priority.is_idle(), applied.load(Ordering::Acquire))
            };
            let (was_idle, ..) = run(1, None, true, u64::MAX);
            if !was_idle {
                // This process may not return a thread from idle priority: it never leaves normal.
                return;
            }
            // Diverged at 25 (so it returns without being stopped) after reading at idle priority.
            assert_eq!(run(40, Some(25), false, u64::MAX), (true, true, 24));
            // 40 behind with a bound of 10: normal priority.
            assert_eq!(run(40, Some(25), false, 10), (true, false, 24));
            // Stopped: normal priority, and everything read.
            assert_eq!(run(40, None, true, u64::MAX), (true, false, 40));
        })
        .join()
        .unwrap();
    }
}
