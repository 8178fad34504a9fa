//! The running engine: recovery (the matcher, market data and history brought up to the
//! journal), then the pipeline (`pipeline::assemble`: every stage, its thread and its bound);
//! in-process clients (`client`) submit requests and receive replies once they are durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use viaduct_journaler::recovery::{recover_from, snapshot_dir, Progress};
use viaduct_journaler::snapshotter::SnapshotControl;
use viaduct_journaler::stage::CommitStats;
use viaduct_journaler::{snapshot, Durability, JournalError};
use viaduct_matcher::Spec;
use viaduct_publishers::alert::{AlertKind, Alerts};
use viaduct_publishers::history::catchup::{connect_later, history_gone, open_history, Catchup};
use viaduct_publishers::history::store as history_store;
use viaduct_publishers::history::writer::{HistoryConfig, HistoryService, WriterStore};
use viaduct_publishers::history::Rows;
use viaduct_publishers::kafka::publisher::{KafkaCounts, KafkaPublisher};
use viaduct_publishers::kafka::KafkaConfig;
use viaduct_publishers::market::{MarketData, MarketDataConfig};
use viaduct_publishers::service::{MarketService, LAG_MAX_DEFAULT as MARKET_LAG_MAX_DEFAULT};
use viaduct_ring::Input;

use crate::backpressure::Admission;
pub use crate::client::{Client, Refused, Replies, Response};
use crate::delivery::{Registry, Watch};
use crate::pipeline::{self, Bounds, Pipeline, Snapshots};
use crate::profile::Profile;
use crate::replies::{reply_path, AnsweredCounts, CODES, DEALS_WAITING_MAX};
pub use crate::tcp_edge::{start_tcp_edge, EdgeBackend, OnMatcher, TcpEdgeRunning};

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

/// Read-only handles on the engine's counters, for the metrics (`metrics.rs`).
#[derive(Clone)]
pub struct Probes {
    durable: Arc<AtomicU64>,
    commits: Arc<CommitStats>,
    progress: Arc<viaduct_ring::Progress>,
    admission: Admission,
    kafka: Option<Arc<KafkaCounts>>,
    command_counts: Arc<Mutex<AnsweredCounts>>,
    snapshots: Option<Arc<SnapshotControl>>,
}

impl Probes {
    /// The highest journal sequence known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Groups the journal has committed.
    pub fn journal_commits(&self) -> u64 {
        self.commits.groups.load(Ordering::Relaxed)
    }

    /// The journal's commits: groups, their sizes, their times.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.commits
    }

    /// The input ring's batches as the matcher took them: (batches, commands, largest, last).
    pub fn input_batches(&self) -> (u64, u64, u64, u64) {
        self.progress.batches()
    }

    /// Passes of the matcher's loop.
    pub fn matcher_passes(&self) -> u64 {
        self.progress.passes()
    }

    /// Each consumer with a lag bound: its name, its lag in commands, and its bound.
    pub fn lags(&self) -> Vec<(&'static str, u64, u64)> {
        self.admission.lags()
    }

    /// Commands answered by every client so far, by name ([`viaduct_protocol::COMMAND_NAMES`])
    /// and error code (0: success).
    pub fn commands(&self) -> Vec<[u64; CODES]> {
        self.command_counts.lock().expect("command counts").totals()
    }

    /// The snapshot worker's control and figures (none in `none` durability).
    pub fn snapshots(&self) -> Option<&SnapshotControl> {
        self.snapshots.as_deref()
    }

    /// The Kafka publisher's counts, with `[kafka]`.
    pub fn kafka(&self) -> Option<&KafkaCounts> {
        self.kafka.as_deref()
    }
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
    /// The Kafka publisher, with `[kafka]`.
    kafka: Option<KafkaPublisher>,
    commits: Arc<CommitStats>,
    /// The one admission check: every consumer's lag bound (`backpressure`).
    admission: Admission,
    /// Held until the engine has stopped: no other engine runs on this data directory.
    lock: DataDirLock,
    /// Every client's answered commands (a gone client's kept in the totals, which only grow).
    command_counts: Arc<Mutex<AnsweredCounts>>,
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
        if profile.durability == Durability::None && options.kafka.is_some() {
            anyhow::bail!("[kafka] publishes from the journal, which durability NONE does not write; choose a profile with a journal or leave [kafka] out");
        }
        if profile.durability == Durability::None {
            tracing::warn!("durability NONE: the journal is not written; every command is lost when the process ends");
        }
        let lock = DataDirLock::take(data_dir)?;
        let alerts = options.alerts.clone();
        let started = Instant::now();
        let history_store = match &options.history {
            Some(cfg) => match open_history(cfg, data_dir, options.history_from_snapshot) {
                Ok(opened) => Some(opened),
                // A URL that cannot name a store is the operator's to fix; a store that is down
                // is history's to wait for.
                Err(e) if history_store::check_url(&cfg.url).is_err() => return Err(e),
                Err(e) => {
                    alerts.raise(AlertKind::History, "history", format!("{e:#}; starting without it: the writer tries the store again and, once it is reached, writes every row it misses from the journal"));
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
            alerts: alerts.clone(),
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
                Some((cfg, WriterStore::Later { connect, caught_up: recovered.last_seq }, history_protect))
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
                Some((cfg, WriterStore::Ready(store), 0))
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
        let recovered_state = (recovered.matcher, market_data, recovered.last_seq);
        let bounds = Bounds { market_lag_max: options.market_lag_max, kafka_lag_max: None };
        let Pipeline {
            input,
            durable,
            commits,
            registry,
            watch,
            market,
            history,
            kafka,
            snapshots,
            final_state,
            admission,
        } = pipeline::assemble(data_dir, profile, &spec, recovered_state, history, (bounds, options.kafka), &alerts)?;
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
            kafka,
            commits,
            admission,
            lock,
            command_counts: Arc::default(),
        };
        Ok((engine, startup))
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The matcher loop's progress, for a watchdog (`service.rs`).
    pub fn matcher_progress(&self) -> std::sync::Arc<viaduct_ring::Progress> {
        self.input.progress()
    }

    /// What the metrics read, from any thread: sequences, commits, progress, consumers' lags.
    pub fn probes(&self) -> Probes {
        Probes {
            durable: Arc::clone(&self.durable),
            commits: Arc::clone(&self.commits),
            progress: self.input.progress(),
            admission: self.admission.clone(),
            kafka: self.kafka.as_ref().map(KafkaPublisher::counts),
            command_counts: Arc::clone(&self.command_counts),
            snapshots: self.snapshots.as_ref().map(|s| Arc::clone(&s.control)),
        }
    }

    /// How many requests one client may have in flight.
    pub fn inflight_max(&self) -> usize {
        self.inflight_max
    }

    /// How many groups the journal has committed (each one write and, in `fsync` mode, one
    /// `fdatasync`).
    pub fn journal_commits(&self) -> u64 {
        self.commits.groups.load(Ordering::Relaxed)
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
        let Engine { input, final_state, snapshots, market, history, kafka, lock, .. } = self;
        drop(input);
        if let Some(s) = snapshots {
            s.join();
        }
        if let Some(k) = kafka {
            k.join();
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
        // Room for every reply the client may have in flight and every command with deals it
        // may have waiting: the ring never refuses a reply.
        let slots = self.inflight_max + DEALS_WAITING_MAX as usize;
        let counts = self.command_counts.lock().expect("command counts").register();
        let (outbox, answers, inbox) = reply_path(slots, self.inflight_max, Arc::clone(&self.durable), notify, counts);
        self.registry.arrivals.lock().expect("registry lock").insert(id, outbox);
        Client {
            id,
            input: self.input.clone(),
            spec: Arc::clone(&self.spec),
            registry: Arc::clone(&self.registry),
            watch: Arc::clone(&self.watch),
            answers,
            queries: self.market.queries(),
            durable: Arc::clone(&self.durable),
            history: self.history.as_ref().map(|(h, _)| h.queries()),
            admission: self.admission.clone(),
            inflight: Arc::new(AtomicUsize::new(0)),
            inflight_max: self.inflight_max,
            inbox: Some(inbox),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub market: MarketDataConfig,
    pub history: Option<HistoryConfig>,
    /// Start history afresh from the newest snapshot when its store holds less (its journal may
    /// be gone): `viaduct run --history-from-snapshot`.
    pub history_from_snapshot: bool,
    /// How many commands market data may lag (`[market] lag_max`).
    pub market_lag_max: u64,
    /// Where every alert goes.
    pub alerts: Alerts,
    /// `[kafka]`: publish to these brokers.
    pub kafka: Option<KafkaConfig>,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            market: MarketDataConfig::default(),
            history: None,
            history_from_snapshot: false,
            market_lag_max: MARKET_LAG_MAX_DEFAULT,
            alerts: Alerts::log(),
            kafka: None,
        }
    }
}
