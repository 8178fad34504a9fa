//! The one assembly. [`Topology::of`] says, for a profile, every stage of the pipeline: the
//! thread it runs on, its core, what it consumes, what it gates on, and its bound. [`assemble`]
//! starts exactly those stages, and nothing else in the engine starts a pipeline thread: the
//! matcher, journal and reply threads come from `viaduct_ring::wire` called here, the market
//! data, history and snapshot threads from here, and the edges (the producers) from
//! [`start_edges`]: the HTTP edge on its thread, the TCP edge on the thread this table names for
//! it. The engine logs the table at startup.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use viaduct_journaler::recovery::{journal_dir, snapshot_dir};
use viaduct_journaler::segment::JournalWriter;
use viaduct_journaler::snapshotter::{snapshot_lag_max, Companion, SnapshotControl, SnapshotWorker};
use viaduct_journaler::stage::{CommitStats, JournalStage};
use viaduct_journaler::Durability;
use viaduct_matcher::{EventsView, Matcher, Spec};
use viaduct_publishers::alert::{AlertKind, Alerts};
use viaduct_publishers::history::writer::{HistoryConfig, HistoryService, WriterPace, WriterStore};
use viaduct_publishers::kafka::publisher::KafkaPublisher;
use viaduct_publishers::kafka::KafkaConfig;
use viaduct_publishers::market::MarketData;
use viaduct_publishers::service::MarketService;
use viaduct_ring::{wire, Background, Input, OutSlot, StageThreads, Stages};

use crate::backpressure::{Admission, Gate};
use crate::delivery::{reply_stage, Registry, Watch};
use crate::profile::Profile;

/// One stage, as [`Topology::of`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    pub name: &'static str,
    /// The thread's name (`ps -L`, `top -H`).
    pub thread: &'static str,
    pub core: Option<usize>,
    pub consumes: &'static str,
    pub gates_on: &'static str,
    pub bound: String,
}

/// Every stage of a profile's pipeline, in the order work flows through them.
#[derive(Debug, Clone)]
pub struct Topology {
    pub stages: Vec<StagePlan>,
}

/// The bounds of the consumers that are the operator config's, not the profile's.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub market_lag_max: u64,
    /// `[kafka] lag_max`, when Kafka publishing is on.
    pub kafka_lag_max: Option<u64>,
}

impl Topology {
    /// The stages `assemble` starts for `profile`, with history on or off (`history_lag_max`).
    pub fn of(profile: &Profile, bounds: Bounds, history_lag_max: Option<u64>) -> Topology {
        let ring = &profile.ring;
        let matcher_thread = "viaduct-matcher";
        let (journal_thread, journal_core, replies_thread, replies_core, output) = match ring.stages {
            StageThreads::WithMatcher => (
                matcher_thread,
                ring.matcher_core,
                matcher_thread,
                ring.matcher_core,
                "the matcher's commands, as it makes them",
            ),
            StageThreads::RepliesWithJournal => {
                ("viaduct-journal", ring.journal_core, "viaduct-journal", ring.journal_core, "the output ring")
            }
            StageThreads::Own => {
                ("viaduct-journal", ring.journal_core, "viaduct-replies", ring.replies_core, "the output ring")
            }
        };
        let plan = |name, thread, core, consumes, gates_on, bound: String| StagePlan {
            name,
            thread,
            core,
            consumes,
            gates_on,
            bound,
        };
        let mut stages = vec![
            plan(
                "matcher",
                matcher_thread,
                ring.matcher_core,
                "the input ring",
                "nothing",
                format!("{} input slots (full: error 3)", ring.input_slots),
            ),
            plan(
                "journal",
                journal_thread,
                journal_core,
                output,
                "the matcher",
                match ring.stages {
                    StageThreads::WithMatcher => "one commit per batch of the input ring".to_string(),
                    _ => format!("{} output slots (full: the matcher waits)", ring.output_slots),
                },
            ),
            plan(
                "replies",
                replies_thread,
                replies_core,
                output,
                "the journal's durable sequence",
                format!(
                    "{} requests in flight per client (error 3); each client's reply ring holds them and {} commands with its watched users' deals",
                    profile.inflight_max,
                    crate::replies::DEALS_WAITING_MAX
                ),
            ),
            plan(
                "tcp edge",
                if profile.tcp_edge_with_matcher { matcher_thread } else { "viaduct-tcp" },
                if profile.tcp_edge_with_matcher { ring.matcher_core } else { None },
                "its sockets (and, on the matcher's thread, its waits)",
                "nothing",
                "[edges.tcp] connections_max; each session's write buffer".to_string(),
            ),
            plan(
                "http edge",
                "viaduct-http",
                None,
                "its sockets",
                "nothing",
                "[edges.http] connections_max; 64 requests in flight per connection".to_string(),
            ),
            plan(
                "market data",
                "viaduct-market",
                None,
                "each released batch's deals",
                "the replies (deals are sent at the end of a batch)",
                format!("{} commands behind, [market] lag_max (writes: error 3)", bounds.market_lag_max),
            ),
        ];
        if let Some(lag) = history_lag_max {
            stages.push(plan(
                "history writer",
                "viaduct-history",
                None,
                "each released batch's events that leave rows",
                "the replies",
                format!(
                    "{lag} commands behind, [history] lag_max (writes: error 3){}",
                    if profile.history_idle_priority { "; idle priority while it keeps up" } else { "" }
                ),
            ));
            stages.push(plan(
                "history readers",
                "viaduct-readhistory-N",
                None,
                "history queries",
                "the store",
                "10 queries queued per reader (error 3)".to_string(),
            ));
        }
        if let Some(lag) = bounds.kafka_lag_max {
            stages.push(plan(
                "kafka publisher",
                "viaduct-kafka",
                None,
                "the journal on disk, into a matcher of its own",
                "the journal's durable sequence",
                format!(
                    "{lag} commands behind, [kafka] lag_max (writes: error 3); {} messages unacknowledged",
                    viaduct_publishers::kafka::publisher::IN_FLIGHT_MAX
                ),
            ));
        }
        if profile.durability != Durability::None {
            stages.push(plan(
                "snapshot worker",
                "viaduct-snapshotter",
                profile.snapshot_core,
                "the journal on disk, into a shadow matcher",
                "the journal's durable sequence",
                format!(
                    "{} commands behind, 4 snapshot intervals (writes: error 3){}",
                    snapshot_lag_max(profile.snapshot_interval),
                    if profile.snapshot_idle_priority { "; idle priority while it keeps up" } else { "" }
                ),
            ));
        }
        Topology { stages }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.stages {
            let core = s.core.map_or("any core".to_string(), |c| format!("core {c}"));
            writeln!(
                f,
                "{:<16} on {} ({core}); consumes {}; after {}; bound: {}",
                s.name, s.thread, s.consumes, s.gates_on, s.bound
            )?;
        }
        Ok(())
    }
}

/// The running stages, for the engine.
pub(crate) struct Pipeline {
    pub(crate) input: Input,
    pub(crate) durable: Arc<AtomicU64>,
    pub(crate) commits: Arc<CommitStats>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) watch: Arc<Watch>,
    pub(crate) market: MarketService,
    pub(crate) history: Option<(HistoryService, u64)>,
    pub(crate) kafka: Option<KafkaPublisher>,
    pub(crate) snapshots: Option<Snapshots>,
    pub(crate) final_state: Arc<Mutex<Option<(u64, u64)>>>,
    pub(crate) admission: Admission,
}

/// History as recovery left it: its config, the store (reached, or to be reached later), and the
/// sequence up to which the journal must be kept for it.
pub(crate) type HistoryPlan = (HistoryConfig, WriterStore, u64);

/// Starts every stage of `profile`'s pipeline on the state recovery left (`matcher` and
/// `market_data` at `last_seq`), as [`Topology::of`] lists them, and logs the table.
pub(crate) fn assemble(
    data_dir: &Path,
    profile: &Profile,
    spec: &Arc<Spec>,
    (matcher, market_data, last_seq): (Matcher, MarketData, u64),
    history: Option<HistoryPlan>,
    (bounds, kafka): (Bounds, Option<KafkaConfig>),
    alerts: &Alerts,
) -> Result<Pipeline> {
    let bounds = Bounds { kafka_lag_max: kafka.as_ref().map(|k| k.lag_max), ..bounds };
    let topology = Topology::of(profile, bounds, history.as_ref().map(|(cfg, ..)| cfg.lag_max));
    for line in topology.to_string().lines() {
        tracing::info!("pipeline: {line}");
    }
    let durable = Arc::new(AtomicU64::new(last_seq));
    let history = match history {
        Some((cfg, store, protect)) => {
            let pace = WriterPace { durable: Arc::clone(&durable), idle_priority: profile.history_idle_priority };
            Some((
                HistoryService::start(&cfg, Arc::clone(spec), store, protect, alerts.clone(), pace)
                    .context("starting history")?,
                cfg.lag_max,
            ))
        }
        None => None,
    };
    let writer = JournalWriter::open(
        &journal_dir(data_dir),
        last_seq + 1,
        spec.fingerprint(),
        profile.durability,
        profile.segment_bytes_max,
    )?;
    let commits: Arc<CommitStats> = Arc::default();
    let journal_alerts = alerts.clone();
    let failed = Box::new(move |why: String| {
        journal_alerts.raise(AlertKind::Journal, "journal", why);
        journal_alerts.flush(std::time::Duration::from_secs(2));
    });
    let mut journal_stage = JournalStage::new(writer, Arc::clone(&durable), Arc::clone(&commits), failed);
    let journal = move |slot: &OutSlot, end_of_batch: bool| {
        journal_stage.append(slot.journal_seq, slot.time_us, slot.digest, &slot.cmd);
        if end_of_batch {
            journal_stage.end_batch();
        }
    };
    let registry: Arc<Registry> = Arc::default();
    let watch: Arc<Watch> = Arc::default();
    let market = MarketService::spawn(market_data.clone(), last_seq).context("starting the market data thread")?;
    let history_feed = history.as_ref().map(|(h, _)| h.feed());
    let replies = reply_stage(Arc::clone(&registry), Arc::clone(&watch), &market, history_feed);
    // The Kafka publisher follows the journal from where its brokers left off.
    let kafka = match kafka {
        Some(cfg) => Some(
            KafkaPublisher::start(cfg, Arc::clone(spec), data_dir, Arc::clone(&durable), alerts.clone())
                .context("starting the Kafka publisher")?,
        ),
        None => None,
    };
    // Snapshots and segments are kept back to where the history store and the Kafka publisher
    // would resume.
    let held: Vec<Arc<AtomicU64>> =
        history.iter().map(|(h, _)| h.stored()).chain(kafka.iter().map(KafkaPublisher::held)).collect();
    let snapshots = match profile.durability {
        Durability::None => None,
        Durability::Fsync | Durability::Os => Some(Snapshots::start(
            data_dir,
            (matcher.clone(), market_data),
            last_seq,
            profile,
            held,
            Arc::clone(&durable),
            alerts.clone(),
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
    // The one back-pressure rule: every consumer's lag, checked where requests come in.
    let mut gates = vec![Gate::new(
        "market data",
        (&market.queued(), &market.applied()),
        bounds.market_lag_max,
        "[market] lag_max",
    )];
    if let Some((h, lag_max)) = &history {
        gates.push(Gate::new("the history writer", (&durable, &h.committed()), *lag_max, "[history] lag_max"));
    }
    if let (Some(k), Some(lag_max)) = (&kafka, bounds.kafka_lag_max) {
        gates.push(Gate::new("the Kafka publisher", (&durable, &k.published()), lag_max, "[kafka] lag_max"));
    }
    if let Some(s) = &snapshots {
        let max = snapshot_lag_max(profile.snapshot_interval);
        gates.push(Gate::new("the snapshot worker", (&durable, &s.applied), max, "4 snapshot intervals"));
    }
    let admission = Admission::new(gates, alerts.clone());
    let stages = Stages { journal, replies, on_stop };
    let input = wire(&profile.ring, matcher, last_seq, stages);
    Ok(Pipeline { input, durable, commits, registry, watch, market, history, kafka, snapshots, final_state, admission })
}

/// The snapshot worker's thread ([`SnapshotWorker`]), with market data as its companion.
pub(crate) struct Snapshots {
    stop: Arc<AtomicBool>,
    /// The last sequence the worker has applied: its lag is bounded (see `backpressure::Gate`).
    applied: Arc<AtomicU64>,
    /// Snapshots on request, and what they took.
    pub(crate) control: Arc<SnapshotControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Snapshots {
    fn start(
        data_dir: &Path,
        (shadow, shadow_market): (Matcher, MarketData),
        last_seq: u64,
        profile: &Profile,
        held: Vec<Arc<AtomicU64>>,
        durable: Arc<AtomicU64>,
        alerts: Alerts,
    ) -> Result<Snapshots> {
        let (stop, applied) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(last_seq)));
        let control: Arc<SnapshotControl> = Arc::default();
        let worker = SnapshotWorker::new(
            shadow,
            ShadowMarket(shadow_market),
            last_seq,
            profile.snapshot_interval,
            profile.snapshots_keep,
            snapshot_dir(data_dir),
            journal_dir(data_dir),
            held,
            Arc::clone(&control),
        );
        let failed_alerts = alerts.clone();
        let worker =
            worker.on_failure(Box::new(move |why| failed_alerts.raise(AlertKind::Snapshots, "snapshots", why)));
        let (core, idle, worker_stop, worker_applied) =
            (profile.snapshot_core, profile.snapshot_idle_priority, Arc::clone(&stop), Arc::clone(&applied));
        let thread = std::thread::Builder::new().name("viaduct-snapshotter".into()).spawn(move || {
            viaduct_ring::pin_current("snapshots", core);
            let mut priority = Background::enter("snapshots", idle);
            let mut behind = |behind: bool| {
                if let Some(why) = priority.set_behind(behind) {
                    alerts.raise(AlertKind::Priority, "snapshots", why);
                }
            };
            if let Err(why) = worker.run(&durable, &worker_stop, &worker_applied, &mut behind) {
                alerts.raise(AlertKind::Snapshots, "snapshots", why);
            }
        })?;
        Ok(Snapshots { stop, applied, control, thread: Some(thread) })
    }

    /// Lets the worker read the journal to its end (the pipeline has stopped), then joins it.
    pub(crate) fn join(mut self) {
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

/// Market data beside the shadow matcher: fed by its deals, saved in its snapshots.
struct ShadowMarket(MarketData);

impl Companion for ShadowMarket {
    fn apply(&mut self, events: EventsView<'_>) {
        events.deals().iter().for_each(|d| self.0.apply(d));
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }
}

/// The running edges; dropping them stops them (before [`crate::engine::Engine::shutdown`]).
pub struct Edges {
    pub http: viaduct_edges::http::HttpEdge,
    pub tcp: crate::tcp_edge::TcpEdgeRunning,
    /// When the config has `[edges.ws]`.
    pub ws: Option<viaduct_edges::ws::WsEdge>,
}

/// Starts the edges for `engine`: the HTTP edge on `viaduct-http`, the TCP edge on `viaduct-tcp` or,
/// where the profile says so, in the matcher thread's waits, and the WebSocket edge, if configured,
/// on `viaduct-ws`.
pub fn start_edges(
    engine: &crate::engine::Engine,
    profile: &Profile,
    http: viaduct_edges::http::HttpConfig,
    tcp: viaduct_edges::tcp::TcpConfig,
    ws: Option<viaduct_edges::ws::WsConfig>,
) -> Result<Edges> {
    let (http_bind, tcp_bind) = (http.bind, tcp.bind);
    let http = viaduct_edges::http::HttpEdge::start(http, |notify| crate::tcp_edge::EdgeBackend::new(engine, notify))
        .with_context(|| format!("starting the HTTP edge on {http_bind}"))?;
    let (_, tcp) = crate::tcp_edge::start_tcp_edge(engine, tcp, profile.tcp_edge_with_matcher)
        .with_context(|| format!("starting the TCP edge on {tcp_bind}"))?;
    let ws = match ws {
        None => None,
        Some(cfg) => {
            let bind = cfg.bind;
            let edge =
                viaduct_edges::ws::WsEdge::start(cfg, |notify| crate::tcp_edge::EdgeBackend::new(engine, notify))
                    .with_context(|| format!("starting the WebSocket edge on {bind}"))?;
            Some(edge)
        }
    };
    Ok(Edges { http, tcp, ws })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_of<'a>(t: &'a Topology, stage: &str) -> (&'a str, Option<usize>) {
        let s = t.stages.iter().find(|s| s.name == stage).unwrap_or_else(|| panic!("no stage {stage}"));
        (s.thread, s.core)
    }

    /// The table says, for each shipped profile, where every stage runs, as `wire` and
    /// `start_tcp_edge` place them.
    #[test]
    fn the_topology_of_each_shipped_profile() {
        let bounds = Bounds { market_lag_max: 100_000, kafka_lag_max: None };
        let default = Topology::of(&Profile::load("default").unwrap(), bounds, Some(100_000));
        for stage in ["matcher", "journal", "replies", "tcp edge"] {
            assert_eq!(thread_of(&default, stage), ("viaduct-matcher", None), "{stage}");
        }
        assert_eq!(thread_of(&default, "snapshot worker").0, "viaduct-snapshotter");
        assert!(default.to_string().contains("history writer   on viaduct-history (any core)"), "{default}");

        let latency = Topology::of(&Profile::load("latency").unwrap(), bounds, None);
        assert_eq!(thread_of(&latency, "journal"), ("viaduct-matcher", Some(1)));
        assert_eq!(thread_of(&latency, "snapshot worker"), ("viaduct-snapshotter", Some(0)));
        assert!(latency.stages.iter().all(|s| s.name != "history writer"), "history off");

        let throughput = Topology::of(&Profile::load("throughput").unwrap(), bounds, Some(100_000));
        assert_eq!(thread_of(&throughput, "matcher"), ("viaduct-matcher", Some(1)));
        assert_eq!(thread_of(&throughput, "journal"), ("viaduct-journal", Some(0)));
        assert_eq!(thread_of(&throughput, "replies"), ("viaduct-replies", None));
        assert_eq!(thread_of(&throughput, "tcp edge"), ("viaduct-tcp", None));
        let market = throughput.stages.iter().find(|s| s.name == "market data").unwrap();
        assert!(market.bound.starts_with("100000 commands behind, [market] lag_max"), "{}", market.bound);
    }
}
