//! The history writer and the readhistory pool, each on its own threads.
//!
//! The writer takes the rows of durable commands with the last sequence they reach, and commits
//! rows and sequence in one transaction, in groups (everything waiting, up to a row bound). A
//! failing store is retried every second with an alert-level log line; meanwhile rows wait in
//! memory, and the engine refuses state-changing requests once the writer's lag passes its bound.
//! When the engine stops, a store that still fails is given up on: the journal holds those
//! commands and the next start writes their rows before it serves. A store that cannot be reached
//! at startup does not stop the engine: the writer tries it again with a growing pause
//! ([`CONNECT_RETRY_MAX`]), keeps the rows of new commands meanwhile, and once it is reached
//! writes what the store misses from the journal before them ([`WriterStore::Later`]). Readers
//! run the readhistory queries on their own connections, opened when first needed, from a bounded
//! queue.
//!
//! The writer's thread runs at idle priority (`SCHED_IDLE`, [`Background`]) while it keeps up,
//! when [`WriterPace::idle_priority`] asks so: a commit of a batch of rows is a burst of CPU that
//! would otherwise take a core from the pipeline's threads, whose replies never wait for history.
//! From a quarter of `lag_max` behind the durable sequence it runs at normal priority until it
//! has written everything it was sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::Value;
use viaduct_matcher::{Events, RpcError, Spec};
use viaduct_protocol::error_response;
use viaduct_ring::Background;

use super::store::{self, Store, StoreError};
use super::{query, Rows};
use crate::alert::{AlertKind, Alerts};

/// Where history goes and how far it may fall behind.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// `sqlite://<path>` or `mysql://user:pass@host:port/db`.
    pub url: String,
    /// Journaled commands the writer may lag behind the durable sequence before state-changing
    /// requests are refused with error 3.
    pub lag_max: u64,
    /// Reader threads (ViaBTC's `worker_num`); 10 queries per reader may wait.
    pub readers: usize,
    /// Rows per transaction, at most: 200,000 for MySQL, 100,000 for SQLite. Into MySQL every
    /// table shard costs a statement and a round trip per transaction, whatever its rows, so
    /// large transactions are what let a lagging writer catch up (into this machine's MariaDB:
    /// 46 k rows/s in transactions of 20,000 rows, 101 k/s of 200,000). Into SQLite every
    /// transaction writes each page it touched, so a lagging writer catches up faster in larger
    /// ones too: crossing HTTP orders from 32 connections past what the writer keeps up with
    /// (2026-12-03, 10 s, two runs each, alternated, 100 shards per table then) were
    /// answered 28.9 k/s without error in transactions of 20,000 rows, 115 - 127 k more refused
    /// with error 3; 34.7 - 36.8 k/s of 100,000, none refused. A transaction is this large only while
    /// the writer is behind: otherwise it commits every [`WRITE_EVERY`].
    pub batch_rows_max: usize,
}

impl HistoryConfig {
    pub fn new(url: String) -> HistoryConfig {
        let batch_rows_max = if url.starts_with("mysql://") { 200_000 } else { 100_000 };
        HistoryConfig { url, lag_max: 100_000, readers: 4, batch_rows_max }
    }
}

/// How the writer's thread is scheduled: its lag is the journal's `durable` sequence less what
/// it has committed (the engine's admission check reads the same two).
#[derive(Debug, Clone)]
pub struct WriterPace {
    pub durable: Arc<AtomicU64>,
    /// Idle priority while the writer keeps up (the profile's `[history] idle_priority`).
    pub idle_priority: bool,
}

/// A readhistory query and where its whole JSON-RPC response goes.
pub struct HistoryQuery {
    pub id: i64,
    pub method: String,
    pub params: Vec<Value>,
    pub answer: Box<dyn FnOnce(String) + Send>,
}

/// How the writer gets its store.
pub enum WriterStore {
    /// Open, and holding every row up to the sequence the engine recovered to (recovery caught
    /// it up).
    Ready(Box<dyn Store>),
    /// Unreachable at startup. `connect` opens the store and writes into it, from the journal,
    /// every row it misses up to `caught_up` (the sequence the engine recovered to); the writer
    /// calls it until it succeeds, keeping the rows of later commands in memory meanwhile (the
    /// engine's lag bound counts from `caught_up`).
    Later { connect: Box<dyn FnMut() -> Result<Box<dyn Store>, String> + Send>, caught_up: u64 },
}

/// The longest pause between two attempts to reach a store that was unreachable at startup (the
/// first is 1 s, and each doubles).
pub const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// The running writer and readers.
pub struct HistoryService {
    feed: Sender<(u64, Events)>,
    queries: Sender<HistoryQuery>,
    committed: Arc<AtomicU64>,
    stored: Arc<AtomicU64>,
    /// Set when the service stops: a store that fails from then on is given up on.
    stopping: Arc<AtomicBool>,
    writer: JoinHandle<()>,
    readers: Vec<JoinHandle<()>>,
}

impl HistoryService {
    /// Starts the writer on `store` and the readers. A store not yet reached ([`WriterStore::Later`])
    /// counts as stored up to `protect` (the journal and snapshots after it are kept for it).
    /// A store that cannot be used is raised to `alerts`. The writer's thread is scheduled as
    /// `pace` says.
    pub fn start(
        cfg: &HistoryConfig,
        spec: Arc<Spec>,
        mut store: WriterStore,
        protect: u64,
        alerts: Alerts,
        pace: WriterPace,
    ) -> Result<HistoryService, StoreError> {
        let (committed, stored) = match &mut store {
            WriterStore::Ready(s) => {
                let held = s.committed_seq()?;
                (held, held)
            }
            WriterStore::Later { caught_up, .. } => (*caught_up, protect),
        };
        Ok(Self::spawn(cfg, spec, store, (committed, stored), alerts, pace))
    }

    fn spawn(
        cfg: &HistoryConfig,
        spec: Arc<Spec>,
        store: WriterStore,
        (committed, stored): (u64, u64),
        alerts: Alerts,
        pace: WriterPace,
    ) -> HistoryService {
        let committed = Arc::new(AtomicU64::new(committed));
        let stored = Arc::new(AtomicU64::new(stored));
        let (feed, feed_rx) = unbounded::<(u64, Events)>();
        let (queries, queries_rx) = bounded::<HistoryQuery>(cfg.readers.max(1) * 10);
        let stopping = Arc::new(AtomicBool::new(false));
        let writer = {
            let marks = Marks {
                committed: Arc::clone(&committed),
                stored: Arc::clone(&stored),
                alerts: alerts.clone(),
                stopping: Arc::clone(&stopping),
            };
            let rows_max = cfg.batch_rows_max;
            let catch_up_from = (cfg.lag_max / 4).max(1);
            std::thread::Builder::new()
                .name("viaduct-history".into())
                .spawn(move || {
                    let (store, pending, seq) = match store {
                        WriterStore::Ready(store) => (store, Rows::default(), marks.committed.load(Ordering::Acquire)),
                        WriterStore::Later { connect, caught_up } => {
                            match connect_later(&spec, connect, caught_up, &feed_rx, &marks) {
                                Some(connected) => connected,
                                None => return,
                            }
                        }
                    };
                    // A writer that starts behind (a store reached late) is put at normal
                    // priority by the loop's first pass.
                    let background = Background::enter("history", pace.idle_priority);
                    let mut pacer = Pacer { background, durable: pace.durable, catch_up_from };
                    write_loop(&spec, store, (pending, seq), feed_rx, &marks, rows_max, &mut pacer)
                })
                .expect("spawning the history writer")
        };
        let mut readers = Vec::new();
        for i in 0..cfg.readers.max(1) {
            let (url, rx) = (cfg.url.clone(), queries_rx.clone());
            readers.push(
                std::thread::Builder::new()
                    .name(format!("viaduct-readhistory-{i}"))
                    .spawn(move || read_loop(&url, rx))
                    .expect("spawning a history reader"),
            );
        }
        HistoryService { feed, queries, committed, stored, stopping, writer, readers }
    }

    /// Where the pipeline sends (last sequence, events) of each batch of durable commands; the
    /// writer turns them into rows on its own thread. Sending never waits: each batch holds at
    /// least one journaled command, so the engine's admission check at `lag_max` commands behind
    /// (error 3 for state-changing requests) is what bounds the queue.
    pub fn feed(&self) -> Sender<(u64, Events)> {
        self.feed.clone()
    }

    /// The sequence of the last command whose rows are committed: every row up to it is in the
    /// store. (Commands that leave no rows move it without a transaction.)
    pub fn committed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    /// The sequence the store itself holds, where the next start resumes: at most
    /// [`committed`](Self::committed), and at most [`STORE_EMPTY_EVERY`] behind it. The journal
    /// must keep what follows it.
    pub fn stored(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.stored)
    }

    /// A sender of queries for another thread.
    pub fn queries(&self) -> Sender<HistoryQuery> {
        self.queries.clone()
    }

    /// Waits until every row sent has been committed (once every feed sender is dropped), then
    /// stops the readers. A store that fails meanwhile is given up on: the journal holds those
    /// commands, and the next start writes their rows before it serves.
    pub fn join(self) {
        let HistoryService { feed, queries, writer, readers, stopping, .. } = self;
        stopping.store(true, Ordering::Release);
        drop(feed);
        let _ = writer.join();
        drop(queries);
        for r in readers {
            let _ = r.join();
        }
    }
}

/// How often, at most, commands that leave no rows are stored as a transaction of their sequence
/// alone. Until then only [`HistoryService::committed`] moves: a restart resumes from the stored
/// sequence and finds no rows to write for them. (Committing an empty transaction per batch cost
/// the writer 8 % of a core under a flow of resting and cancelled orders.)
pub const STORE_EMPTY_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, the writer commits rows while they keep coming (sooner once it holds
/// `batch_rows_max`, and at once after a quiet spell): rows then wait up to this long, plus
/// [`FEED_POLL`], before readhistory sees them, as ViaBTC flushes its history every 0.1 s. A
/// transaction writes every page it touched, at least the last of each table (and index) it
/// wrote to, so few rows per transaction cost nearly as much as many (the figures that follow
/// are of ViaBTC's 100 shards per table, which a SQLite file had then: up to 500 tables). At 10 k crossing binary
/// orders/s into SQLite (2026-11-27) the writer's thread took 80 % of a core committing each
/// poll's rows, 43 % with 10 ms between commits and 30 % with 50 ms, and the order -> ack p90 fell
/// from 1.9 - 2.1 ms to 1.2 - 1.6 ms. At 10 k crossing HTTP orders/s (2026-12-03, two runs each)
/// its CPU per order was 36.7 - 37.3 µs at 50 ms, 31.9 - 32.2 at 100 ms and 27.2 - 27.5 at 200 ms,
/// the order's p90 3.5 - 3.7, 2.5 - 2.8 and 1.8 - 2.1 ms: 100 ms, ViaBTC's delay, is kept.
pub const WRITE_EVERY: Duration = Duration::from_millis(100);

/// How long the writer blocks on the queue at a time once batches stopped coming.
const FEED_IDLE_WAIT: Duration = Duration::from_millis(100);

/// How often the writer looks for batches while they keep coming: at most this much later into
/// the store. (Blocking on the queue instead, the writer was woken for every batch: 16 % of a
/// core at 10 k binary orders/s, each its own batch, with no row to write.)
pub const FEED_POLL: Duration = Duration::from_millis(1);

/// How long after its last batch the writer goes on polling; then it blocks on the queue until
/// the next batch wakes it.
pub const FEED_BUSY_FOR: Duration = Duration::from_millis(100);

/// The writer's two sequences (see [`HistoryService::committed`] and [`HistoryService::stored`]).
struct Marks {
    committed: Arc<AtomicU64>,
    stored: Arc<AtomicU64>,
    alerts: Alerts,
    /// Set when the service stops: a store that fails from then on is given up on.
    stopping: Arc<AtomicBool>,
}

/// The writer's priority as its lag changes: normal from `catch_up_from` commands behind the
/// durable sequence, and while stopping; idle again (if it is used at all) once everything sent
/// is written.
struct Pacer {
    background: Background,
    durable: Arc<AtomicU64>,
    catch_up_from: u64,
}

impl Pacer {
    fn pace(&mut self, committed: u64, stopping: bool, all_written: bool, alerts: &Alerts) {
        let lag = self.durable.load(Ordering::Acquire).saturating_sub(committed);
        let behind = if stopping || lag >= self.catch_up_from {
            true
        } else if all_written {
            false
        } else {
            return; // between the two: as it is
        };
        if let Some(why) = self.background.set_behind(behind) {
            alerts.raise(AlertKind::Priority, "history", why);
        }
    }
}

const NOT_REACHED_WHEN_STOPPING: &str =
    "stopping before the store was reached; the next start catches up from the journal";

/// Reaches a store that was unreachable at startup: calls `connect` until it succeeds, pausing
/// 1 s, then twice as long each time up to [`CONNECT_RETRY_MAX`], with an alert each time, while
/// it turns the batches that arrive into rows kept in memory (the engine's lag bound keeps them
/// few). Returns the store, holding every row up to `caught_up`, with those rows and the last
/// sequence they reach; `None` if the engine stops first (the next start catches up from the
/// journal).
fn connect_later(
    spec: &Spec,
    mut connect: Box<dyn FnMut() -> Result<Box<dyn Store>, String> + Send>,
    caught_up: u64,
    feed: &Receiver<(u64, Events)>,
    marks: &Marks,
) -> Option<(Box<dyn Store>, Rows, u64)> {
    let stopping = &marks.stopping;
    let (mut pending, mut seq, mut pause) = (Rows::default(), caught_up, Duration::from_secs(1));
    loop {
        match connect() {
            Ok(store) => {
                tracing::info!("history: the store is reached and holds every row up to sequence {caught_up}");
                marks.stored.store(caught_up, Ordering::Release);
                return Some((store, pending, seq));
            }
            Err(e) => marks.alerts.raise(
                AlertKind::History,
                "history",
                format!("the store cannot be used ({e}); trying again in {} s; matching goes on, rows wait in memory and are written from the journal once it can", pause.as_secs()),
            ),
        }
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if stopping.load(Ordering::Acquire) {
                marks.alerts.raise(AlertKind::History, "history", NOT_REACHED_WHEN_STOPPING);
                return None;
            }
            match feed.recv_timeout(FEED_IDLE_WAIT.min(until.saturating_duration_since(Instant::now()))) {
                Ok((s, events)) => {
                    pending.add(spec, events.view());
                    seq = seq.max(s);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    marks.alerts.raise(AlertKind::History, "history", NOT_REACHED_WHEN_STOPPING);
                    return None;
                }
            }
        }
        pause = (pause * 2).min(CONNECT_RETRY_MAX);
    }
}

fn write_loop(
    spec: &Spec,
    mut store: Box<dyn Store>,
    (mut pending, mut seq): (Rows, u64),
    feed: Receiver<(u64, Events)>,
    marks: &Marks,
    rows_max: usize,
    pacer: &mut Pacer,
) {
    let Marks { committed, stored, alerts, stopping } = marks;
    let mut last_write = Instant::now();
    // A write since the allocator was last asked to return what this thread freed.
    let mut wrote = false;
    let mut last_fed = Instant::now();
    let mut open = true;
    // A write failed, and whether its transaction took is unknown (a connection lost during
    // COMMIT): until the stored sequence says, `pending` must not grow, or rows that did commit
    // would be written again with the ones added.
    let mut unresolved = false;
    while open || seq > stored.load(Ordering::Acquire) {
        // Every row received is committed (a batch without rows leaves none).
        let all_written = pending.is_empty() && feed.is_empty();
        pacer.pace(committed.load(Ordering::Acquire), !open || stopping.load(Ordering::Acquire), all_written, alerts);
        if unresolved {
            std::thread::sleep(Duration::from_secs(1));
            match store.reconnect().and_then(|()| store.committed_seq()) {
                Ok(held) => {
                    if held >= seq {
                        tracing::info!("history: the transaction up to sequence {seq} had committed after all");
                        stored.store(seq, Ordering::Release);
                        committed.store(seq, Ordering::Release);
                        pending = Rows::default();
                    }
                    unresolved = false;
                }
                Err(e) if !open || stopping.load(Ordering::Acquire) => {
                    alerts.raise(
                        AlertKind::History,
                        "history",
                        format!("the store is still unreachable while stopping ({e}); the next start catches up from what it holds"),
                    );
                    return;
                }
                Err(e) => tracing::warn!("history: reconnecting failed ({e}); retrying in 1 s"),
            }
            continue;
        }
        if open && pending.len() < rows_max {
            // While batches keep coming, look for them every FEED_POLL rather than block: a
            // blocked receiver is woken by every batch the pipeline sends (one per batch of
            // commands, up to tens of thousands a second), a sleeping one by none.
            let next = if last_fed.elapsed() >= FEED_BUSY_FOR {
                // Rows that wait for their transaction bound the wait.
                let wait =
                    if pending.is_empty() { FEED_IDLE_WAIT } else { WRITE_EVERY.saturating_sub(last_write.elapsed()) };
                feed.recv_timeout(wait)
            } else {
                match feed.try_recv() {
                    Ok(batch) => Ok(batch),
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(FEED_POLL);
                        Err(RecvTimeoutError::Timeout)
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            };
            match next {
                Ok((s, events)) => {
                    last_fed = Instant::now();
                    pending.add(spec, events.view());
                    seq = seq.max(s);
                    // Everything else already waiting joins this transaction.
                    while pending.len() < rows_max {
                        let Ok((s, events)) = feed.try_recv() else { break };
                        pending.add(spec, events.view());
                        seq = seq.max(s);
                    }
                }
                // Idle a second since the last write: what writing it took goes back to the system.
                Err(RecvTimeoutError::Timeout) => {
                    if wrote && pending.is_empty() && last_write.elapsed() >= Duration::from_secs(1) {
                        wrote = false;
                        viaduct_journaler::return_freed_memory();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        if seq == stored.load(Ordering::Acquire) {
            continue;
        }
        if !pending.is_empty() && pending.len() < rows_max && open && last_write.elapsed() < WRITE_EVERY {
            continue;
        }
        if pending.is_empty() && open && last_write.elapsed() < STORE_EMPTY_EVERY {
            committed.store(seq, Ordering::Release);
            continue;
        }
        match store.write(&pending, seq) {
            Ok(()) => {
                // In this order: whoever sees `committed` at `seq` sees `stored` there too.
                stored.store(seq, Ordering::Release);
                committed.store(seq, Ordering::Release);
                pending = Rows::default();
                last_write = Instant::now();
                wrote = true;
            }
            Err(e) if !open || stopping.load(Ordering::Acquire) => {
                // Stopping: the journal holds these commands, and the next start writes their
                // rows before it serves; waiting here would keep the process from stopping.
                alerts.raise(
                    AlertKind::History,
                    "history",
                    format!("writing up to sequence {seq} failed while stopping ({e}); the next start catches up from what the store holds"),
                );
                return;
            }
            Err(e) => {
                alerts.raise(
                    AlertKind::History,
                    "history",
                    format!(
                        "writing {} rows up to sequence {seq} failed ({e}); retrying in 1 s; rows wait in memory",
                        pending.len()
                    ),
                );
                unresolved = true;
            }
        }
    }
}

/// Answers queries on a connection of its own, opened when the first query comes (and again
/// after a failure): a store that is down answers error 2 `internal error` meanwhile.
fn read_loop(url: &str, rx: Receiver<HistoryQuery>) {
    let mut store: Option<Box<dyn Store>> = None;
    for q in rx {
        if store.is_none() {
            store = store::open(url).map_err(|e| tracing::warn!("readhistory: opening {url}: {e}")).ok();
        }
        let mut outcome = match &mut store {
            Some(s) => query::run(&mut **s, &q.method, &q.params),
            None => Err(RpcError::Internal),
        };
        if outcome == Err(RpcError::Internal) {
            if let Some(s) = &mut store {
                outcome = match s.reconnect() {
                    Ok(()) => query::run(&mut **s, &q.method, &q.params),
                    Err(_) => Err(RpcError::Internal),
                };
            }
        }
        let json = match outcome {
            Ok(result) => format!(r#"{{"error":null,"result":{result},"id":{}}}"#, q.id),
            Err(e) => error_response(Some(q.id), e),
        };
        (q.answer)(json);
    }
}
