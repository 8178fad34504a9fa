//! The running engine: recovery, then the pipeline wired by `viaduct_ring::wire` with the
//! journal, reply and snapshot stages, and in-process clients that submit requests and receive
//! replies once they are durable.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use serde_json::Value;
use viaduct_edges::binary::{maker_fills, reports, ServerMsg};
use viaduct_edges::{Payload, TAG_BINARY, TAG_FILLS};
use viaduct_journaler::recovery::{journal_dir, recover_from, snapshot_dir, state_at, Downstream, Progress};
use viaduct_journaler::segment::{remove_covered, JournalTail, JournalWriter};
use viaduct_journaler::{snapshot, Durability, JournalError};
use viaduct_matcher::event::Deal;
use viaduct_matcher::reply::error_response;
use viaduct_matcher::{decode, response_json, Command, Events, EventsView, Matcher, RpcError, Spec};
use viaduct_publishers::history::leaves_rows;
use viaduct_publishers::history::query::is_history_method;
use viaduct_publishers::history::store::{self as history_store, Store};
use viaduct_publishers::history::writer::{
    HistoryConfig, HistoryQuery, HistoryService, WriterStore, FEED_BATCHES_MAX as HISTORY_FEED_MAX,
};
use viaduct_publishers::history::Rows;
use viaduct_publishers::market::{MarketData, MarketDataConfig};
use viaduct_publishers::service::{is_market_method, MarketService, Query, QuerySender};
use viaduct_ring::{submit, wire, Background, Input, OutSlot, Stages};

use crate::profile::Profile;
use crate::replies::{Refusal, ReplyQueue, ReplyReceiver};

/// A reply, released once its command is durable.
#[derive(Debug, Clone)]
pub struct Response {
    /// The mark the client put on the request.
    pub tag: u64,
    pub request_id: i64,
    /// The whole JSON-RPC response.
    pub json: String,
    /// The command's journal sequence (0 when it changed nothing).
    pub journal_seq: u64,
    /// Binary execution reports, instead of `json`, for a tag with [`TAG_BINARY`]; or the fills
    /// of a watched user (tag [`TAG_FILLS`], `request_id` the user).
    pub reports: Vec<ServerMsg>,
}

/// What recovery found, for the startup log.
#[derive(Debug, Clone)]
pub struct Startup {
    pub snapshot_seq: Option<u64>,
    pub replayed: u64,
    pub last_seq: u64,
    pub truncated: Option<(PathBuf, u64)>,
    pub state_hash: u64,
    pub recovery_ms: u128,
}

/// Called after replies were handed to a client, once per batch: wakes an event loop.
pub type Notify = viaduct_edges::Notify;

/// Fills a client may have waiting beyond its in-flight replies; past it fills are dropped and the
/// client is told ([`Payload::FillsLost`]).
pub const FILLS_QUEUE_MAX: usize = 16_384;

/// Where the reply stage sends one client's replies.
#[derive(Clone)]
struct Sink {
    queue: Arc<ReplyQueue>,
    notify: Option<Notify>,
    fills_lost: Arc<AtomicBool>,
}

type Registry = Mutex<HashMap<u32, Sink>>;

/// Which clients want the fills of which users' resting orders.
#[derive(Default)]
struct Watch {
    users: Mutex<HashMap<u32, Vec<u32>>>,
    /// Bumped on every change, so the reply stage re-reads `users` only then.
    version: AtomicU64,
}

/// A running engine. Dropping it (and every client) drains the pipeline and stops its threads.
pub struct Engine {
    input: Input,
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    watch: Arc<Watch>,
    durable: Arc<AtomicU64>,
    next_client: AtomicU32,
    inflight_max: usize,
    final_state: Arc<Mutex<Option<(u64, u64)>>>,
    /// None in `none` durability, where nothing is snapshotted.
    snapshots: Option<Snapshots>,
    market: MarketService,
    /// The history writer and readers, and how far the writer may lag.
    history: Option<(HistoryService, u64)>,
    commits: Arc<AtomicU64>,
    /// The followers of the durable sequence whose lag refuses state-changing requests: the
    /// history writer and the snapshot worker.
    lag_bounds: Vec<LagBound>,
    /// Held until the engine has stopped: no other engine runs on this data directory.
    lock: DataDirLock,
}

/// The exclusive lock (`flock`) on `<data_dir>/viaduct.lock`, which holds the PID of the process
/// that has it. Two engines on one data directory would each journal its own sequence numbers
/// into the same segments; the second is refused before it reads anything.
pub struct DataDirLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (creating the directory), or says which process holds it.
    pub fn take(data_dir: &Path) -> Result<DataDirLock> {
        use std::os::unix::fs::FileExt;
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join("viaduct.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(file) => {
                let pid = format!("{}\n", std::process::id());
                file.set_len(0)
                    .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(DataDirLock { _file: file })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "data directory {} is in use by another viaduct (PID {}, which holds the lock on {}); stop it first, or give this one a data directory of its own",
                    data_dir.display(),
                    holder.trim(),
                    path.display()
                )
            }
            Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Engine {
    /// Recovers the state in `data_dir`, then starts the pipeline.
    pub fn start(
        data_dir: &Path,
        spec: Spec,
        profile: &Profile,
        progress: impl FnMut(Progress),
    ) -> Result<(Engine, Startup)> {
        Engine::start_with(data_dir, spec, profile, EngineOptions::default(), progress)
    }

    /// [`Engine::start`] with market data kept per `market` (retention, time zone) and, given a
    /// config, history.
    pub fn start_with(
        data_dir: &Path,
        spec: Spec,
        profile: &Profile,
        options: EngineOptions,
        progress: impl FnMut(Progress),
    ) -> Result<(Engine, Startup)> {
        if profile.durability == Durability::None {
            tracing::warn!("durability NONE: the journal is not written; every command is lost when the process ends");
        }
        let lock = DataDirLock::take(data_dir)?;
        let started = Instant::now();
        let history_store = match &options.history {
            Some(cfg) => match open_history(cfg, data_dir, options.history_from_snapshot) {
                Ok(opened) => Some(opened),
                // A URL that cannot name a store is the operator's to fix; a store that is down
                // is history's to wait for.
                Err(e) if history_store::check_url(&cfg.url).is_err() => return Err(e),
                Err(e) => {
                    tracing::error!(
                        "ALERT history: {e:#}; starting without it: the writer tries the store again and, once it is reached, writes every row it misses from the journal"
                    );
                    None
                }
            },
            None => None,
        };
        let history_seq = history_store.as_ref().map(|(_, seq)| *seq);
        // Until a store unreachable now is reached, the snapshots and journal that recovery
        // would start its rows from are kept: from the oldest snapshot there is on.
        let history_protect = snapshot::list(&snapshot_dir(data_dir))?.first().map_or(0, |(seq, _)| *seq);
        let mut catchup = Catchup {
            spec: &spec,
            market: MarketData::new(&spec, options.market),
            history: history_store.map(|(store, committed)| (store, committed, Rows::default())),
        };
        let recovered = match recover_from(data_dir, &spec, progress, &mut catchup, history_seq.unwrap_or(u64::MAX)) {
            Err(JournalError::MissingHistory { first }) if history_seq.is_some() => {
                let (url, held) = (options.history.as_ref().map_or("", |c| c.url.as_str()), history_seq.unwrap_or(0));
                anyhow::bail!("{}", history_gone(data_dir, url, held, first));
            }
            recovered => recovered.with_context(|| format!("recovering {}", data_dir.display()))?,
        };
        let Catchup { market: market_data, history: history_store, .. } = catchup;
        let history = match (options.history, history_store) {
            (Some(cfg), None) => {
                let connect =
                    connect_later(cfg.clone(), data_dir, &spec, recovered.last_seq, options.history_from_snapshot);
                let later = WriterStore::Later { connect, caught_up: recovered.last_seq };
                let spec = Arc::new(spec.clone());
                Some((
                    HistoryService::start(&cfg, spec, later, history_protect).context("starting history")?,
                    cfg.lag_max,
                ))
            }
            (Some(cfg), Some((mut store, committed, rows))) => {
                if committed > recovered.last_seq {
                    anyhow::bail!(
                        "history at {} holds rows up to sequence {committed}, but the journal in {} ends at {}: they belong to different data; point [history] url at this data's history or remove that history",
                        cfg.url,
                        data_dir.display(),
                        recovered.last_seq
                    );
                }
                if recovered.last_seq > committed {
                    store.write(&rows, recovered.last_seq).context("history: catching up from the journal")?;
                    tracing::info!("history: caught up from sequence {committed} to {}", recovered.last_seq);
                }
                let spec = Arc::new(spec.clone());
                let ready = WriterStore::Ready(store);
                Some((HistoryService::start(&cfg, spec, ready, 0).context("starting history")?, cfg.lag_max))
            }
            _ => None,
        };
        let startup = Startup {
            snapshot_seq: recovered.snapshot_seq,
            replayed: recovered.journal.records,
            last_seq: recovered.last_seq,
            truncated: recovered.journal.truncated.clone(),
            state_hash: recovered.matcher.state_hash(),
            recovery_ms: started.elapsed().as_millis(),
        };
        let spec = Arc::new(spec);
        let durable = Arc::new(AtomicU64::new(recovered.last_seq));
        let writer = JournalWriter::open(
            &journal_dir(data_dir),
            recovered.last_seq + 1,
            spec.fingerprint(),
            profile.durability,
            profile.segment_bytes_max,
        )?;
        let commits = Arc::new(AtomicU64::new(0));
        let journal = journal_stage(writer, Arc::clone(&durable), Arc::clone(&commits));
        let registry: Arc<Registry> = Arc::default();
        let watch: Arc<Watch> = Arc::default();
        let market =
            MarketService::spawn(market_data.clone(), recovered.last_seq).context("starting the market data thread")?;
        let history_feed = history.as_ref().map(|(h, _)| h.feed());
        let replies = reply_stage(
            Arc::clone(&spec),
            Arc::clone(&registry),
            Arc::clone(&watch),
            (market.feed(), market.sent_seq()),
            history_feed,
        );
        // Snapshots and segments are kept back to where the history store would resume.
        let history_stored = history.as_ref().map(|(h, _)| h.stored());
        let snapshots = match profile.durability {
            Durability::None => None,
            Durability::Fsync | Durability::Os => Some(Snapshots::start(
                data_dir,
                (recovered.matcher.clone(), market_data),
                recovered.last_seq,
                profile,
                history_stored,
                Arc::clone(&durable),
            )?),
        };
        let final_state: Arc<Mutex<Option<(u64, u64)>>> = Arc::default();
        let on_stop = {
            let final_state = Arc::clone(&final_state);
            move |m: &Matcher, seq: u64| {
                let hash = m.state_hash();
                tracing::info!("matcher stopped at sequence {seq}, state hash {hash:016x}");
                *final_state.lock().expect("final state lock") = Some((seq, hash));
            }
        };
        let mut lag_bounds = Vec::new();
        if let Some((h, lag_max)) = &history {
            lag_bounds.push(LagBound::new("history: the writer", h.committed(), &durable, *lag_max));
        }
        if let Some(s) = &snapshots {
            lag_bounds.push(LagBound::new(
                "snapshots: the worker",
                Arc::clone(&s.applied),
                &durable,
                snapshot_lag_max(profile.snapshot_interval),
            ));
        }
        let stages = Stages { journal, replies, on_stop };
        let input = wire(&profile.ring, recovered.matcher, recovered.last_seq, stages);
        let engine = Engine {
            input,
            spec,
            registry,
            watch,
            durable,
            next_client: AtomicU32::new(1),
            inflight_max: profile.inflight_max,
            final_state,
            snapshots,
            market,
            history,
            commits,
            lag_bounds,
            lock,
        };
        Ok((engine, startup))
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// How many requests one client may have in flight.
    pub fn inflight_max(&self) -> usize {
        self.inflight_max
    }

    /// How many groups the journal has committed (each one write and, in `fsync` mode, one
    /// `fdatasync`).
    pub fn journal_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The sequence up to which history is committed, when history is on.
    pub fn history_committed(&self) -> Option<u64> {
        self.history.as_ref().map(|(h, _)| h.committed().load(Ordering::Acquire))
    }

    /// The highest journal sequence known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Stops the engine once every client is dropped: drains the pipeline, joins its threads,
    /// and returns the final journal sequence and state hash.
    pub fn shutdown(self) -> (u64, u64) {
        let Engine { input, final_state, snapshots, market, history, lock, .. } = self;
        drop(input);
        if let Some(s) = snapshots {
            s.join();
        }
        market.join();
        if let Some((history, _)) = history {
            history.join();
        }
        let state = *final_state.lock().expect("final state lock");
        drop(lock);
        state.expect("the matcher stage reports its final state when it stops")
    }

    /// A new client with its own reply queue.
    /// Hands `idle` to the matcher's thread, which runs it in its waits (see
    /// [`viaduct_ring::Input::run_while_idle`]); `wake` ends a wait inside it.
    pub fn run_on_matcher(&self, idle: viaduct_ring::Idle, wake: viaduct_ring::Wake) {
        self.input.run_while_idle(idle, wake);
    }

    pub fn client(&self) -> Client {
        self.client_with(None)
    }

    /// A new client whose `notify` is called after each batch of replies handed to it.
    pub fn client_with_notify(&self, notify: Notify) -> Client {
        self.client_with(Some(notify))
    }

    fn client_with(&self, notify: Option<Notify>) -> Client {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (queue, rx) = ReplyQueue::new(self.inflight_max + FILLS_QUEUE_MAX);
        let fills_lost = Arc::new(AtomicBool::new(false));
        let sink = Sink { queue, notify, fills_lost: Arc::clone(&fills_lost) };
        self.registry.lock().expect("registry lock").insert(id, sink.clone());
        Client {
            id,
            input: self.input.clone(),
            spec: Arc::clone(&self.spec),
            registry: Arc::clone(&self.registry),
            watch: Arc::clone(&self.watch),
            fills_lost,
            sink,
            queries: self.market.queries(),
            durable: Arc::clone(&self.durable),
            history: self.history.as_ref().map(|(h, _)| h.queries()),
            lag_bounds: self.lag_bounds.clone(),
            inflight: Arc::new(AtomicUsize::new(0)),
            inflight_max: self.inflight_max,
            rx,
        }
    }
}

/// Submits requests and receives their replies, in submission order.
pub struct Client {
    id: u32,
    input: Input,
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    watch: Arc<Watch>,
    fills_lost: Arc<AtomicBool>,
    /// Where answers to market-data queries go: this client's own reply queue.
    sink: Sink,
    queries: QuerySender,
    /// The durable sequence: a market-data query waits for the deals up to it.
    durable: Arc<AtomicU64>,
    /// Where history queries go, when history is on.
    history: Option<crossbeam_channel::Sender<HistoryQuery>>,
    lag_bounds: Vec<LagBound>,
    inflight: Arc<AtomicUsize>,
    inflight_max: usize,
    rx: ReplyReceiver,
}

/// Why a request was not submitted: the response to give instead.
#[derive(Debug)]
pub struct Refused(pub Response);

impl Client {
    /// Decodes and submits one request. A request that does not decode, or finds the input ring
    /// or this client's in-flight bound full, is answered at once instead.
    pub fn submit(&mut self, request_id: i64, method: &str, params: &[Value]) -> Result<(), Refused> {
        let refuse = |e: RpcError| {
            let json = error_response(Some(request_id), e);
            Refused(Response { tag: 0, request_id, json, journal_seq: 0, reports: Vec::new() })
        };
        self.submit_tagged_request(0, request_id, method, params).map_err(refuse)
    }

    /// Decodes and submits one request of any method with `tag`; a market-data method goes to the
    /// market-data thread.
    pub fn submit_tagged_request(
        &mut self,
        tag: u64,
        request_id: i64,
        method: &str,
        params: &[Value],
    ) -> Result<(), RpcError> {
        if is_market_method(method) || is_history_method(method) {
            return self.query(tag, request_id, method, params.to_vec());
        }
        let cmd = decode(&self.spec, method, params)?;
        self.submit_tagged(tag, request_id, cmd).map_err(|_| RpcError::ServiceUnavailable)
    }

    /// Queues a market-data or history query; its answer arrives with the replies, marked `tag`.
    /// Error 4 for a method neither answers, 3 when its queue or this client is full.
    pub fn query(&mut self, tag: u64, request_id: i64, method: &str, params: Vec<Value>) -> Result<(), RpcError> {
        let history = is_history_method(method);
        let served = is_market_method(method) || (history && self.history.is_some());
        if !served {
            return Err(RpcError::MethodNotFound);
        }
        if self.inflight.load(Ordering::Acquire) >= self.inflight_max {
            return Err(RpcError::ServiceUnavailable);
        }
        let sink = self.sink.clone();
        let answer = Box::new(move |json: String| {
            let response = Response { tag, request_id, json, journal_seq: 0, reports: Vec::new() };
            if sink.queue.push(response).is_ok() {
                if let Some(notify) = &sink.notify {
                    notify();
                }
            }
        });
        let method = method.to_string();
        match &self.history {
            Some(queries) if history => queries
                .try_send(HistoryQuery { id: request_id, method, params, answer })
                .map_err(|_| RpcError::ServiceUnavailable)?,
            _ => {
                let min_seq = self.durable.load(Ordering::Acquire);
                self.queries.send(Query { min_seq, id: request_id, method, params, answer })?
            }
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Submits a decoded command; hands it back when this client's in-flight bound or the input
    /// ring is full (error 3 to a remote caller).
    pub fn submit_command(&mut self, request_id: i64, cmd: Command) -> Result<(), Command> {
        self.submit_tagged(0, request_id, cmd)
    }

    /// Submits a decoded command with the client's own `tag`, returned with its reply.
    pub fn submit_tagged(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command> {
        if self.inflight.load(Ordering::Acquire) >= self.inflight_max {
            return Err(cmd);
        }
        if cmd.is_write() && self.lag_bounds.iter().any(LagBound::exceeded) {
            return Err(cmd);
        }
        submit(&mut self.input, self.id, tag, request_id, now_us(), cmd)?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A handle that receives this client's replies on another thread.
    pub fn replies(&self) -> Replies {
        Replies { rx: self.rx.clone(), inflight: Arc::clone(&self.inflight) }
    }

    /// The next reply, waiting for it.
    pub fn recv(&self) -> Response {
        let r = self.rx.recv();
        answered(&self.inflight, &r);
        r
    }

    /// The next reply if one is ready.
    pub fn try_recv(&self) -> Option<Response> {
        let r = self.rx.try_recv()?;
        answered(&self.inflight, &r);
        Some(r)
    }

    /// Starts (`on`) or stops receiving the fills of `user`'s resting orders, as responses tagged
    /// [`TAG_FILLS`].
    pub fn watch(&self, user: u32, on: bool) {
        let mut users = self.watch.users.lock().expect("watch lock");
        let clients = users.entry(user).or_default();
        clients.retain(|&c| c != self.id);
        if on {
            clients.push(self.id);
        }
        if clients.is_empty() {
            users.remove(&user);
        }
        self.watch.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether fills were dropped because this client did not take them fast enough (cleared by
    /// the call).
    pub fn take_fills_lost(&self) -> bool {
        // A load first: the edges ask at every turn, and a swap would write the line each time.
        self.fills_lost.load(Ordering::Relaxed) && self.fills_lost.swap(false, Ordering::AcqRel)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// The receiving half of a [`Client`], for another thread.
pub struct Replies {
    rx: ReplyReceiver,
    inflight: Arc<AtomicUsize>,
}

impl Replies {
    /// The next reply, waiting for it.
    pub fn recv(&self) -> Response {
        let r = self.rx.recv();
        answered(&self.inflight, &r);
        r
    }

    /// Whether no reply is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// A thread that follows the durable sequence (the history writer, the snapshot worker) and may
/// lag it by at most `max` commands: past that, state-changing requests get error 3 until it
/// catches up, and an alert-level line says so at most once a minute.
#[derive(Clone)]
struct LagBound {
    what: &'static str,
    /// The last sequence the follower has done.
    done: Arc<AtomicU64>,
    durable: Arc<AtomicU64>,
    max: u64,
    /// When the last alert was logged (seconds since the epoch), shared by every client.
    alerted: Arc<AtomicU64>,
}

impl LagBound {
    fn new(what: &'static str, done: Arc<AtomicU64>, durable: &Arc<AtomicU64>, max: u64) -> LagBound {
        LagBound { what, done, durable: Arc::clone(durable), max, alerted: Arc::default() }
    }

    fn exceeded(&self) -> bool {
        let (durable, done) = (self.durable.load(Ordering::Acquire), self.done.load(Ordering::Acquire));
        let lag = durable.saturating_sub(done);
        if lag <= self.max {
            return false;
        }
        let now = now_us() / 1_000_000;
        let last = self.alerted.load(Ordering::Relaxed);
        if now >= last + 60 && self.alerted.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            tracing::error!(
                "ALERT {} lags {lag} commands behind (bound {}); state-changing requests get error 3 until it catches up",
                self.what,
                self.max
            );
        }
        true
    }
}

/// A reply frees an in-flight place; fills answer no request.
fn answered(inflight: &AtomicUsize, r: &Response) {
    if r.tag != TAG_FILLS {
        inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(mut r) = self.registry.lock() {
            r.remove(&self.id);
        }
        if let Ok(mut users) = self.watch.users.lock() {
            users.retain(|_, clients| {
                clients.retain(|&c| c != self.id);
                !clients.is_empty()
            });
            self.watch.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Appends every journaled command; at the end of each batch, one commit (and `fdatasync`).
fn journal_stage(
    mut writer: JournalWriter,
    durable: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
) -> impl FnMut(&OutSlot, bool) + Send + 'static {
    move |slot, end_of_batch| {
        if slot.journal_seq != 0 {
            writer.append(slot.journal_seq, slot.time_us, slot.digest, &slot.cmd);
        }
        if end_of_batch {
            if writer.pending_bytes() > 0 {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            match writer.commit() {
                Ok(seq) => durable.store(seq, Ordering::Release),
                Err(e) => {
                    // Nothing after this can be acknowledged; a restart recovers what is on disk.
                    tracing::error!("journal: {e}; stopping, as nothing more can be made durable");
                    std::process::abort();
                }
            }
        }
    }
}

/// Encodes each reply, and each fill of a watched user's resting order for the clients watching;
/// at the end of a batch (after the journal's commit, whichever thread this runs on) hands them
/// to their clients and wakes the clients that asked to be woken.
fn reply_stage(
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    watch: Arc<Watch>,
    (market, market_sent): (Sender<Vec<Deal>>, Arc<AtomicU64>),
    history: Option<Sender<(u64, Events)>>,
) -> impl FnMut(&OutSlot, bool) + Send + 'static {
    let mut out = Delivery { spec, registry, clients: HashMap::new(), held: Vec::new(), woken: Vec::new() };
    let mut watched: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut watch_version = 0;
    let mut fills: Vec<(u32, ServerMsg)> = Vec::new();
    let mut deals: Vec<Deal> = Vec::new();
    // Events of journaled commands that leave history rows: copied here, turned into rows on its
    // thread.
    let (mut journaled, mut journaled_seq) = (Events::default(), 0u64);
    let feed = move |deals: &mut Vec<Deal>| {
        // Waits only when market data lags by its whole queue: its lag is bounded.
        if !deals.is_empty() && market.send(std::mem::take(deals)).is_err() {
            deals.clear(); // the market data thread is gone (shutting down)
        }
    };
    let mut batch_seq = 0u64;
    move |slot, end_of_batch| {
        deals.extend_from_slice(slot.events.deals());
        batch_seq = batch_seq.max(slot.journal_seq);
        if history.is_some() && slot.journal_seq != 0 {
            journaled.append_where(&slot.events, leaves_rows);
            journaled_seq = slot.journal_seq;
        }
        if slot.client != 0 {
            out.reply(slot);
        }
        let version = watch.version.load(Ordering::Acquire);
        if version != watch_version {
            watched = watch.users.lock().expect("watch lock").clone();
            watch_version = version;
        }
        if !watched.is_empty() && !slot.events.deals().is_empty() {
            fills.clear();
            maker_fills(&out.spec, &slot.events, |user| watched.contains_key(&user), &mut fills);
            for (user, msg) in fills.drain(..) {
                for &client in watched.get(&user).into_iter().flatten() {
                    out.fill(client, user, msg);
                }
            }
        }
        if end_of_batch {
            // Deals go to market data once per batch; a query waits until the batch of the
            // replies its client had is sent (`Query::min_seq`).
            out.release();
            feed(&mut deals);
            market_sent.fetch_max(batch_seq, Ordering::AcqRel);
            out.wake();
            if let (Some(tx), true) = (&history, journaled_seq != 0) {
                let batch = (journaled_seq, std::mem::take(&mut journaled));
                journaled_seq = 0;
                // Back-pressure at the edges keeps this queue far from its bound; if it ever
                // reaches it, the pipeline waits rather than lose a row.
                if tx.len() >= HISTORY_FEED_MAX {
                    tracing::error!("ALERT history: the writer's queue is full; the pipeline waits for it");
                    while tx.len() >= HISTORY_FEED_MAX {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                let _ = tx.send(batch);
            }
        }
    }
}

/// The reply stage's view of the clients.
struct Delivery {
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    clients: HashMap<u32, Sink>,
    /// Replies and fills of this batch, released at its end: at most a batch's worth (the
    /// output ring's slots and their fills).
    held: Vec<(u32, Response)>,
    woken: Vec<u32>,
}

impl Delivery {
    fn sink(&mut self, client: u32) -> Option<&Sink> {
        match self.clients.entry(client) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(v) => {
                let found = self.registry.lock().expect("registry lock").get(&client)?.clone();
                Some(v.insert(found))
            }
        }
    }

    fn reply(&mut self, slot: &OutSlot) {
        let mut response = Response {
            tag: slot.tag,
            request_id: slot.request_id,
            json: String::new(),
            journal_seq: slot.journal_seq,
            reports: Vec::new(),
        };
        if slot.tag & TAG_BINARY != 0 {
            reports(&self.spec, &slot.cmd, &slot.outcome, &slot.events, &mut response.reports);
        } else {
            response.json = response_json(&self.spec, slot.request_id, &slot.outcome, &slot.events);
        }
        self.send(slot.client, response);
    }

    fn fill(&mut self, client: u32, user: u32, msg: ServerMsg) {
        let response = Response {
            tag: TAG_FILLS,
            request_id: i64::from(user),
            json: String::new(),
            journal_seq: 0,
            reports: vec![msg],
        };
        self.send(client, response);
    }

    fn send(&mut self, client: u32, response: Response) {
        self.held.push((client, response));
    }

    /// Hands every held reply and fill to its client: each run of one client's responses under
    /// one lock of its queue.
    fn release(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        let mut rest = held.drain(..).peekable();
        while let Some((client, first)) = rest.next() {
            let run = std::iter::once(first)
                .chain(std::iter::from_fn(|| rest.next_if(|(c, _)| *c == client).map(|(_, r)| r)));
            self.deliver(client, run);
        }
        drop(rest);
        self.held = held;
    }

    fn deliver(&mut self, client: u32, run: impl Iterator<Item = Response>) {
        let Some(sink) = self.sink(client) else {
            run.for_each(drop); // the client is gone
            return;
        };
        let (mut gone, mut lost) = (false, false);
        let pushed = sink.queue.push_all(run, |response, why| match why {
            Refusal::Gone => gone = true,
            Refusal::Full if response.tag == TAG_FILLS => lost = true,
            Refusal::Full => {
                tracing::warn!("replies: client {client} holds more replies than it may have in flight; dropped one")
            }
        });
        if lost {
            sink.fills_lost.store(true, Ordering::Release);
        }
        if (pushed > 0 || lost) && sink.notify.is_some() && !self.woken.contains(&client) {
            self.woken.push(client);
        }
        if gone {
            self.clients.remove(&client);
        }
    }

    fn wake(&mut self) {
        for id in self.woken.drain(..) {
            if let Some(Sink { notify: Some(notify), .. }) = self.clients.get(&id) {
                notify();
            }
        }
    }
}

/// The snapshot worker: it follows the journal as it is written, replays each command into a
/// matcher of its own (the shadow), and snapshots the shadow every `interval` commands, so the
/// matcher never stops for a snapshot. The journal is its queue: it is not a stage of the output
/// ring, copies nothing out of it, and however long a snapshot of a large book takes, it holds
/// nothing back; it reads on from the journal afterwards. Segments are removed only once a
/// snapshot covers them, so the worker always finds what it has not read.
struct Snapshots {
    stop: Arc<AtomicBool>,
    /// The last sequence the worker has applied: its lag is bounded (see [`LagBound`]).
    applied: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Snapshots {
    fn start(
        data_dir: &Path,
        (shadow, shadow_market): (Matcher, MarketData),
        last_seq: u64,
        profile: &Profile,
        history_stored: Option<Arc<AtomicU64>>,
        durable: Arc<AtomicU64>,
    ) -> Result<Snapshots> {
        let (stop, applied) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(last_seq)));
        let worker = SnapshotWorker {
            shadow,
            shadow_market,
            last_snapshot: last_seq,
            last_took: Duration::ZERO,
            last_done: Instant::now(),
            interval: profile.snapshot_interval,
            keep: profile.snapshots_keep,
            history_stored,
            snapshots: snapshot_dir(data_dir),
            journal: journal_dir(data_dir),
            catch_up_from: snapshot_lag_max(profile.snapshot_interval) / SNAPSHOT_CATCH_UP_SHARE,
        };
        let (core, idle, worker_stop, worker_applied) =
            (profile.snapshot_core, profile.snapshot_idle_priority, Arc::clone(&stop), Arc::clone(&applied));
        let thread = std::thread::Builder::new().name("viaduct-snapshotter".into()).spawn(move || {
            viaduct_ring::pin_current("snapshots", core);
            let mut priority = Background::enter("snapshots", idle);
            worker.run(&durable, &worker_stop, &worker_applied, &mut priority);
        })?;
        Ok(Snapshots { stop, applied, thread: Some(thread) })
    }

    /// Lets the worker read the journal to its end (the pipeline has stopped), then joins it.
    fn join(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("snapshot worker");
        }
    }
}

impl Drop for Snapshots {
    /// An engine dropped without `shutdown` still ends its worker.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct SnapshotWorker {
    /// The sequence the history store holds: the snapshot it would restart from is kept.
    history_stored: Option<Arc<AtomicU64>>,
    shadow: Matcher,
    /// Market data fed by the shadow's deals, saved with it.
    shadow_market: MarketData,
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
const SNAPSHOT_LAG_INTERVALS: u64 = 4;
const SNAPSHOT_LAG_MIN: u64 = 1_000_000;

fn snapshot_lag_max(interval: u64) -> u64 {
    interval.saturating_mul(SNAPSHOT_LAG_INTERVALS).max(SNAPSHOT_LAG_MIN)
}

/// A worker at idle priority (`snapshots.idle_priority`) returns to normal priority once it lags
/// by this share of its bound, and to idle priority once it has read the whole journal again.
/// At idle priority it runs only on time no other thread wants; a machine with none to spare
/// would starve it, and it would reach its bound and stop writes. (A starved idle thread still
/// runs a few milliseconds a second, and sees its lag then.)
const SNAPSHOT_CATCH_UP_SHARE: u64 = 4;
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

impl SnapshotWorker {
    /// Follows the journal until `stop`, at the priority `priority` gives it: normal from a lag of
    /// `catch_up_from` commands on, and while stopping, until it has read everything.
    fn run(mut self, durable: &AtomicU64, stop: &AtomicBool, applied: &AtomicU64, priority: &mut Background) {
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
                priority.set_behind(true);
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
                        priority.set_behind(true);
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
                    events.deals().iter().for_each(|d| self.shadow_market.apply(d));
                    let last_done = self.last_done;
                    if snapshot_due(seq - self.last_snapshot, self.interval, self.last_took, || last_done.elapsed()) {
                        self.snapshot(seq);
                    }
                    applied.store(seq, Ordering::Release);
                });
                if let Some(what) = diverged {
                    // The shadow's state is no longer the matcher's: a snapshot of it would
                    // recover another state. Recovery would stop at the same command.
                    tracing::error!("ALERT snapshots: {what}: the state machine is not deterministic. No more snapshots are taken; the journal is kept from the last good one, and state-changing requests are refused once the worker lags by its bound");
                    return;
                }
                if let Err(e) = read {
                    // The pipeline goes on; the journal is kept whole until snapshots resume
                    // (a restart, once the cause is fixed).
                    tracing::error!("ALERT snapshots: reading the journal failed ({e}); no more snapshots are taken until a restart, and state-changing requests are refused once the worker lags by its bound");
                    return;
                }
                if !stopping {
                    priority.set_behind(false);
                }
            } else if stopping {
                return;
            } else {
                idle = idle.saturating_add(1);
            }
            std::thread::sleep(if idle > SNAPSHOT_IDLE_AFTER { SNAPSHOT_IDLE_SLEEP } else { SNAPSHOT_READ_EVERY });
        }
    }

    fn snapshot(&mut self, seq: u64) {
        let started = Instant::now();
        // The matcher's state goes to the file as it is encoded (it can be hundreds of MB); the
        // market data's is small.
        let market = self.shadow_market.snapshot();
        let shadow = &self.shadow;
        let written = snapshot::write_streaming(&self.snapshots, seq, |w| shadow.snapshot_to(w).map(drop), &market);
        // The worker's own work: encoding and writing to the OS; the sync is waiting, and is left
        // out (a failed write counts as none).
        let encoded = written.as_ref().map_or(Duration::ZERO, |w| w.encoded);
        let result = written.and_then(|w| {
            let protect = self.history_stored.as_ref().map_or(u64::MAX, |c| c.load(Ordering::Acquire));
            let oldest = snapshot::prune(&self.snapshots, self.keep, protect)?;
            Ok((w.bytes, remove_covered(&self.journal, oldest.unwrap_or(0))?))
        });
        match result {
            Ok((bytes, removed)) => tracing::info!(
                "snapshots: state at sequence {seq} written ({bytes} bytes, {} ms); {removed} journal segments removed",
                started.elapsed().as_millis()
            ),
            Err(e) => tracing::error!("snapshots: {e}; the journal keeps everything until a snapshot succeeds"),
        }
        self.last_snapshot = seq;
        self.last_took = encoded;
        self.last_done = Instant::now();
    }
}

/// What is rebuilt with the matcher at startup: market data, and the history rows of every
/// command after the history store's committed sequence.
struct Catchup<'a> {
    spec: &'a Spec,
    market: MarketData,
    history: Option<(Box<dyn Store>, u64, Rows)>,
}

/// Rows written at a time while history catches up during recovery (large, as the writer's own
/// transactions when it is behind).
const CATCHUP_ROWS: usize = 200_000;

impl Downstream for Catchup<'_> {
    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        if !bytes.is_empty() {
            self.market = MarketData::from_snapshot(self.spec, *self.market.config(), bytes)?;
        }
        Ok(())
    }

    fn apply(&mut self, seq: u64, events: EventsView<'_>) {
        events.deals().iter().for_each(|d| self.market.apply(d));
        let Some((store, committed, rows)) = &mut self.history else { return };
        if seq <= *committed {
            return;
        }
        rows.add(self.spec, events);
        if rows.len() >= CATCHUP_ROWS {
            // A store that fails here stops startup, as nothing after it could be made whole.
            'written: while let Err(e) = store.write(rows, seq) {
                tracing::error!("ALERT history: catching up at sequence {seq} failed ({e}); retrying in 1 s");
                // A lost COMMIT may have taken: the stored sequence says, and nothing is written
                // again until it has.
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match store.reconnect().and_then(|()| store.committed_seq()) {
                        Ok(stored) if stored >= seq => break 'written,
                        Ok(_) => break,
                        Err(e) => tracing::warn!("history: reconnecting failed ({e}); retrying in 1 s"),
                    }
                }
            }
            *rows = Rows::default();
            *committed = seq;
        }
    }
}

/// Opens the history store, creating missing tables; returns it with its committed sequence.
/// With `from_snapshot`, a store that holds less than the newest snapshot is moved up to it:
/// history starts afresh there, without the rows of the commands before it.
fn open_history(cfg: &HistoryConfig, data_dir: &Path, from_snapshot: bool) -> Result<(Box<dyn Store>, u64)> {
    let mut store = history_store::open(&cfg.url).with_context(|| format!("opening history at {}", cfg.url))?;
    store.create_tables().with_context(|| format!("creating history tables at {}", cfg.url))?;
    let mut committed = store.committed_seq().with_context(|| format!("reading history at {}", cfg.url))?;
    let newest = snapshot::list(&snapshot_dir(data_dir))?.last().map(|(seq, _)| *seq);
    if let Some(newest) = newest.filter(|&s| from_snapshot && s > committed) {
        store.write(&Rows::default(), newest).with_context(|| format!("moving history at {} to {newest}", cfg.url))?;
        tracing::warn!(
            "history at {} starts afresh at the newest snapshot, sequence {newest} (--history-from-snapshot): the rows of commands {} to {newest} are not written",
            cfg.url,
            committed + 1
        );
        committed = newest;
    }
    Ok((store, committed))
}

/// Why history cannot catch up: the journal it needs was pruned (or its store is another's), and
/// the ways out.
fn history_gone(data_dir: &Path, url: &str, held: u64, first: u64) -> String {
    format!(
        "history at {url} holds rows up to sequence {held}; writing the rows after it needs a snapshot at or before \
         {held} or the journal from sequence {}, but {} keeps neither (its journal starts at {first}; older parts were \
         removed once snapshots covered them). Point [history] url at the store this data was written with, or start \
         with --history-from-snapshot to start history afresh from the newest snapshot (the rows of the commands \
         before it are then not written)",
        held + 1,
        data_dir.display()
    )
}

/// Commands replayed at a time while a store reached late is caught up from the journal.
const CATCHUP_COMMANDS: u64 = 50_000;

/// What the history writer calls to reach a store that was unreachable at startup: opens it, and
/// writes into it the rows it misses up to `caught_up` (the sequence the engine recovered to),
/// rebuilt by replaying the journal from the newest snapshot at or before what it holds.
fn connect_later(
    cfg: HistoryConfig,
    data_dir: &Path,
    spec: &Spec,
    caught_up: u64,
    from_snapshot: bool,
) -> Box<dyn FnMut() -> Result<Box<dyn Store>, String> + Send> {
    let (data_dir, spec) = (data_dir.to_path_buf(), spec.clone());
    Box::new(move || {
        let (mut store, held) = open_history(&cfg, &data_dir, from_snapshot).map_err(|e| format!("{e:#}"))?;
        if held > caught_up {
            return Err(format!(
                "it holds rows up to sequence {held}, past this journal's {caught_up}: it belongs to other data"
            ));
        }
        catch_up_from_journal(&data_dir, &spec, &mut *store, held, caught_up).map_err(|e| match e {
            CatchUpError::Gone(first) => history_gone(&data_dir, &cfg.url, held, first),
            CatchUpError::Other(e) => format!("catching up from sequence {held}: {e:#}"),
        })?;
        Ok(store)
    })
}

enum CatchUpError {
    /// The journal starts at this sequence, after what the store holds, with no snapshot before.
    Gone(u64),
    Other(anyhow::Error),
}

/// Writes into `store`, which holds rows up to `from`, the rows of every command up to `to`.
fn catch_up_from_journal(
    data_dir: &Path,
    spec: &Spec,
    store: &mut dyn Store,
    from: u64,
    to: u64,
) -> Result<(), CatchUpError> {
    let (mut matcher, mut at) = match state_at(data_dir, spec, from) {
        Ok(state) => state,
        Err(JournalError::MissingHistory { first }) => return Err(CatchUpError::Gone(first)),
        Err(e) => return Err(CatchUpError::Other(e.into())),
    };
    let mut tail = JournalTail::new(&journal_dir(data_dir), at + 1);
    let (mut events, mut rows, mut failed) = (Events::default(), Rows::default(), None);
    while at < to {
        let upto = (at + CATCHUP_COMMANDS).min(to);
        let read = tail.read_to(upto, |entry| {
            events.clear();
            match matcher.apply(entry.time_us, &entry.cmd, &mut events) {
                Ok(_) if entry.seq > from => rows.add(spec, events.view()),
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert_with(|| anyhow::anyhow!("replaying sequence {}: {e}", entry.seq));
                }
            }
        });
        read.map_err(|e| CatchUpError::Other(e.into()))?;
        if let Some(e) = failed.take() {
            return Err(CatchUpError::Other(e));
        }
        if upto > from {
            store.write(&rows, upto).map_err(|e| CatchUpError::Other(e.into()))?;
            rows = Rows::default();
        }
        at = upto;
    }
    if from < to {
        tracing::info!("history: caught up from sequence {from} to {to} from the journal");
    }
    Ok(())
}

/// How the engine runs besides its profile: market data's settings and, if any, history's.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub market: MarketDataConfig,
    pub history: Option<HistoryConfig>,
    /// Start history afresh from the newest snapshot when its store holds less (its journal may
    /// be gone): `viaduct run --history-from-snapshot`.
    pub history_from_snapshot: bool,
}

/// A running TCP edge: on a thread of its own, or in the matcher's waits.
pub enum TcpEdgeRunning {
    Own(viaduct_edges::tcp::TcpEdge),
    OnMatcher(OnMatcher),
}

/// The TCP edge's loop handed to the matcher's thread. Dropping this stops the loop and waits
/// until the matcher's thread has dropped it (with its client, so that the pipeline can stop).
pub struct OnMatcher {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    wake: viaduct_ring::Wake,
}

impl Drop for OnMatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        (self.wake)();
        let started = Instant::now();
        while !self.done.load(Ordering::Acquire) {
            if started.elapsed() > Duration::from_secs(10) {
                tracing::error!("tcp: the matcher's thread did not stop the edge's loop within 10 s");
                return;
            }
            (self.wake)();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Starts the TCP edge for `engine`: on a thread of its own, or, with `on_matcher`, as the
/// matcher thread's idle work ([`Engine::run_on_matcher`]), where a binary order is read,
/// matched, journaled and answered on one thread. Returns the bound address. Either way the edge
/// holds a client of the engine: drop it before [`Engine::shutdown`], which waits for every client.
pub fn start_tcp_edge(
    engine: &Engine,
    cfg: viaduct_edges::tcp::TcpConfig,
    on_matcher: bool,
) -> std::io::Result<(std::net::SocketAddr, TcpEdgeRunning)> {
    if !on_matcher {
        let edge = viaduct_edges::tcp::TcpEdge::start(cfg, |notify| EdgeBackend::new(engine, notify))?;
        return Ok((edge.local_addr(), TcpEdgeRunning::Own(edge)));
    }
    // Replies released on the matcher's thread are written in its next turn: no wake needed.
    let backend = |notify: Notify| {
        let notify: Notify = Arc::new(move || {
            if !viaduct_ring::on_matcher_thread() {
                notify();
            }
        });
        EdgeBackend::new(engine, notify)
    };
    let (mut edge, wake) = viaduct_edges::tcp::TcpLoop::bind(cfg, backend)?;
    let addr = edge.local_addr();
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let guard = SetOnDrop(Arc::clone(&done));
    let stopped = Arc::clone(&stop);
    let idle: viaduct_ring::Idle = Box::new(move |timeout| {
        let _dropped_with_the_loop = &guard;
        !stopped.load(Ordering::Acquire) && edge.turn(timeout)
    });
    engine.run_on_matcher(idle, Arc::clone(&wake));
    Ok((addr, TcpEdgeRunning::OnMatcher(OnMatcher { stop, done, wake })))
}

/// The engine as an edge's backend: one client for the whole edge, woken per batch of replies.
pub struct EdgeBackend {
    client: Client,
}

impl EdgeBackend {
    pub fn new(engine: &Engine, notify: viaduct_edges::Notify) -> EdgeBackend {
        EdgeBackend { client: engine.client_with_notify(notify) }
    }
}

impl viaduct_edges::Backend for EdgeBackend {
    fn spec(&self) -> &Spec {
        self.client.spec()
    }

    fn submit(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command> {
        self.client.submit_tagged(tag, request_id, cmd)
    }

    fn try_recv(&mut self) -> Option<(u64, Payload)> {
        if self.client.take_fills_lost() {
            return Some((TAG_FILLS, Payload::FillsLost));
        }
        let r = self.client.try_recv()?;
        let payload = if r.tag == TAG_FILLS {
            Payload::Fills { user: r.request_id as u32, reports: r.reports }
        } else if r.tag & TAG_BINARY != 0 {
            Payload::Reports(r.reports)
        } else {
            Payload::Json(r.json)
        };
        Some((r.tag, payload))
    }

    fn watch(&mut self, user: u32, on: bool) {
        self.client.watch(user, on);
    }

    fn query(&mut self, tag: u64, request_id: i64, method: &str, params: Vec<Value>) -> Result<(), RpcError> {
        self.client.query(tag, request_id, method, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A follower may lag the durable sequence by its bound and no more.
    #[test]
    fn a_lag_bound_refuses_past_its_bound_only() {
        let (done, durable) = (Arc::new(AtomicU64::new(100)), Arc::new(AtomicU64::new(100)));
        let bound = LagBound::new("test: the follower", Arc::clone(&done), &durable, 5);
        assert!(!bound.exceeded());
        durable.store(105, Ordering::Release);
        assert!(!bound.exceeded());
        durable.store(106, Ordering::Release);
        assert!(bound.exceeded() && bound.clone().exceeded());
        done.store(101, Ordering::Release);
        assert!(!bound.exceeded());
    }

    /// The shadow checks each command's digest: at the first that differs from what the matcher
    /// journaled, it stops, taking no snapshot of the diverged state and applying nothing more.
    #[test]
    fn the_snapshot_worker_stops_at_a_command_the_shadow_replays_differently() {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker_on_journal(dir.path(), 40, Some(25));
        let (durable, stop, applied) = (AtomicU64::new(40), AtomicBool::new(false), AtomicU64::new(0));
        // It returns by itself: `stop` is never set.
        worker.run(&durable, &stop, &applied, &mut Background::enter("test", false));
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
    fn worker_on_journal(dir: &Path, n: u64, bad: Option<u64>) -> SnapshotWorker {
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
            history_stored: None,
            shadow: Matcher::new(spec.clone()),
            shadow_market: MarketData::new(&spec, MarketDataConfig::default()),
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
                worker.run(&durable, &stop, &applied, &mut priority);
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
