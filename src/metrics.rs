//! `[metrics] bind`: Prometheus text on `GET /metrics` and readiness on `GET /health` (503 until
//! recovery is done and the edges listen, 200 after), from a thread of its own that serves one
//! short connection at a time. It is bound before recovery starts: while the state is rebuilt,
//! `/metrics` shows recovery's progress and `/health` answers 503. The values are read when
//! scraped, from the counters the engine keeps anyway (relaxed stores by their one writer): the
//! matcher's path gains no lock and no wait.
//!
//! Exposed: readiness and recovery's progress, the durable sequence, journal commit groups and
//! histograms of their sizes, commit times and `fdatasync` times (counted by the journal stage
//! without a lock, `viaduct_journaler::stage::CommitStats`), the matcher loop's passes and the
//! input ring's batches, matcher commands by method and error code (each client's, summed), open
//! connections per edge and the WebSocket edge's feed subscriptions, snapshots taken and the
//! last one's sequence, time and size, each bounded consumer's lag and bound (history writer,
//! market data, snapshot worker, Kafka publisher), the Kafka messages acknowledged per topic and
//! failed sessions (with `[kafka]`), and the alerts pushed, dropped and held back (with
//! `[alerts]`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::Probes;

/// The largest request read (a scrape's is a few hundred bytes).
const REQUEST_BYTES_MAX: usize = 8 * 1024;

type U64Gauge = Gauge<u64, AtomicU64>;
type Labels = Vec<(String, String)>;

/// What the metrics thread reads: recovery's progress from the start, the engine's probes once
/// it runs, and whether the edges listen.
#[derive(Default)]
pub struct MetricsState {
    /// Set once recovery is done and the pipeline runs.
    pub probes: OnceLock<Probes>,
    /// The alerts' counts, with `[alerts]`.
    pub alerts: Option<Arc<viaduct_publishers::alert_redis::Counts>>,
    /// `/health` answers 200 once this is set: the edges listen.
    pub ready: AtomicBool,
    /// The sequence of the snapshot recovery loaded (0: none).
    pub recovery_snapshot: AtomicU64,
    /// Each edge's live counts, by name (`http`, `tcp`, `ws`), once the edges start.
    pub edges: OnceLock<Vec<(&'static str, Arc<viaduct_edges::EdgeStats>)>>,
    /// Journal records replayed so far, and the sequence reached.
    pub recovery_replayed: AtomicU64,
    pub recovery_seq: AtomicU64,
}

/// The registry and the gauges it reports, set from the probes at each scrape.
struct Exposition {
    registry: Registry,
    durable: U64Gauge,
    commits: U64Gauge,
    passes: U64Gauge,
    lag: Family<Labels, U64Gauge>,
    lag_max: Family<Labels, U64Gauge>,
    alerts: Family<Labels, U64Gauge>,
    kafka_acked: Family<Labels, U64Gauge>,
    kafka_errors: U64Gauge,
    ready: U64Gauge,
    recovery: Family<Labels, U64Gauge>,
    commands: Family<Labels, U64Gauge>,
    connections: Family<Labels, U64Gauge>,
    subscriptions: U64Gauge,
    snapshots: Family<Labels, U64Gauge>,
    input: Family<Labels, U64Gauge>,
}

/// The journal's commit histograms, read from the engine's probes at each scrape.
struct JournalHistograms(Arc<MetricsState>);

impl std::fmt::Debug for JournalHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalHistograms")
    }
}

impl Collector for JournalHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(probes) = self.0.probes.get() else { return Ok(()) };
        let stats = probes.commit_stats();
        for (name, help, scale, values) in [
            ("journal_commit_batch_commands", "Commands per journal commit group", 1.0, &stats.batch),
            ("journal_commit_seconds", "A journal group's commit: its write and its sync", 1e-6, &stats.commit_us),
            ("journal_fdatasync_seconds", "A journal group's fdatasync alone (fsync durability)", 1e-6, &stats.sync_us),
        ] {
            let (buckets, sum, count) = values.buckets();
            let buckets: Vec<(f64, u64)> = buckets.into_iter().map(|(le, n)| (le * scale, n)).collect();
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(sum as f64 * scale, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// A gauge registered under `name`.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> U64Gauge {
    let g = U64Gauge::default();
    registry.register(name, help, g.clone());
    g
}

/// A family of gauges registered under `name`, one per label set.
fn family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, U64Gauge> {
    let f = Family::default();
    registry.register(name, help, f.clone());
    f
}

/// Sets the gauge of `family` labelled `key="value"`.
fn set(family: &Family<Labels, U64Gauge>, key: &str, value: &str, n: u64) {
    family.get_or_create(&vec![(key.to_string(), value.to_string())]).set(n);
}

impl Exposition {
    fn new(state: &Arc<MetricsState>) -> Exposition {
        let mut r = Registry::with_prefix("viaduct");
        r.register_collector(Box::new(JournalHistograms(Arc::clone(state))));
        Exposition {
            durable: gauge(&mut r, "durable_sequence", "The highest journal sequence known durable"),
            commits: gauge(&mut r, "journal_commit_groups", "Groups the journal has committed since start"),
            passes: gauge(&mut r, "matcher_loop_passes", "Passes of the matcher's loop since start"),
            lag: family(&mut r, "consumer_lag_commands", "Commands a bounded consumer is behind"),
            lag_max: family(&mut r, "consumer_lag_max_commands", "A bounded consumer's lag bound"),
            alerts: family(&mut r, "alerts", "Alerts pushed to Redis, dropped, or held back as repeats"),
            kafka_acked: family(&mut r, "kafka_messages", "Messages the Kafka brokers acknowledged, per topic"),
            kafka_errors: gauge(
                &mut r,
                "kafka_session_errors",
                "Kafka publisher sessions that failed (brokers unreachable, a fatal producer error)",
            ),
            ready: gauge(&mut r, "ready", "1 once recovery is done and the edges listen"),
            recovery: family(
                &mut r,
                "recovery",
                "Recovery's progress: the snapshot loaded, journal records replayed, the sequence reached",
            ),
            commands: family(&mut r, "commands", "Matcher commands answered, by method and error code (0: success)"),
            connections: family(&mut r, "edge_connections", "Open connections, per edge"),
            subscriptions: gauge(&mut r, "ws_subscriptions", "WebSocket connections' subscriptions to market feeds"),
            snapshots: family(
                &mut r,
                "snapshots",
                "Snapshots taken since start, and the last one's sequence, milliseconds and bytes",
            ),
            input: family(
                &mut r,
                "input_ring",
                "The input ring as the matcher found it: batches taken, commands in them, the largest and the last batch",
            ),
            registry: r,
        }
    }

    fn render(&self, state: &MetricsState) -> String {
        self.ready.set(u64::from(state.ready.load(Ordering::Acquire)));
        for (what, value) in [
            ("snapshot_sequence", &state.recovery_snapshot),
            ("replayed_commands", &state.recovery_replayed),
            ("sequence", &state.recovery_seq),
        ] {
            set(&self.recovery, "what", what, value.load(Ordering::Relaxed));
        }
        if let Some(probes) = state.probes.get() {
            self.render_engine(probes, state.alerts.as_deref());
        }
        for (edge, stats) in state.edges.get().into_iter().flatten() {
            set(&self.connections, "edge", edge, stats.connections.load(Ordering::Relaxed));
            if *edge == "ws" {
                self.subscriptions.set(stats.subscriptions.load(Ordering::Relaxed));
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }

    fn render_engine(&self, probes: &Probes, alerts: Option<&viaduct_publishers::alert_redis::Counts>) {
        self.durable.set(probes.durable_seq());
        let (batches, commands, largest, last) = probes.input_batches();
        for (what, value) in
            [("batches", batches), ("commands", commands), ("batch_max", largest), ("batch_last", last)]
        {
            set(&self.input, "what", what, value);
        }
        if let Some(s) = probes.snapshots() {
            for (what, value) in [
                ("taken", &s.taken),
                ("last_sequence", &s.last_seq),
                ("last_ms", &s.last_ms),
                ("last_bytes", &s.last_bytes),
            ] {
                set(&self.snapshots, "what", what, value.load(Ordering::Relaxed));
            }
        }
        for (name, codes) in viaduct_protocol::COMMAND_NAMES.iter().zip(probes.commands()) {
            for (code, n) in codes.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                let labels = vec![("method".to_string(), name.to_string()), ("code".to_string(), code.to_string())];
                self.commands.get_or_create(&labels).set(n);
            }
        }
        self.commits.set(probes.journal_commits());
        self.passes.set(probes.matcher_passes());
        for (name, lag, max) in probes.lags() {
            let consumer = name.trim_start_matches("the ");
            set(&self.lag, "consumer", consumer, lag);
            set(&self.lag_max, "consumer", consumer, max);
        }
        if let Some(k) = probes.kafka() {
            for topic in viaduct_publishers::kafka::Topic::ALL {
                set(&self.kafka_acked, "topic", topic.name(), k.acked[topic.index()].load(Ordering::Relaxed));
            }
            self.kafka_errors.set(k.errors.load(Ordering::Relaxed));
        }
        if let Some(c) = alerts {
            for (what, n) in [("pushed", &c.pushed), ("dropped", &c.dropped), ("held_back", &c.held_back)] {
                set(&self.alerts, "outcome", what, n.load(Ordering::Relaxed));
            }
        }
    }
}

/// Binds `bind` and serves `state` until the process ends; its `ready` turns `/health` to 200.
pub fn start(bind: SocketAddr, state: Arc<MetricsState>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("viaduct-metrics".into()).spawn(move || {
        let exposition = Exposition::new(&state);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Err(e) = serve(stream, &exposition, &state) {
                tracing::debug!("metrics: a scrape failed: {e}");
            }
        }
    })?;
    Ok(addr)
}

fn serve(mut stream: TcpStream, exposition: &Exposition, state: &MetricsState) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let path = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (req.method == Some("GET")).then(|| req.path.unwrap_or("").to_string())
            }
            Ok(httparse::Status::Partial) if buf.len() < REQUEST_BYTES_MAX => continue,
            _ => break None,
        }
    };
    let (status, kind, body) = match path.as_deref() {
        Some("/metrics") => {
            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", exposition.render(state))
        }
        Some("/health") if state.ready.load(Ordering::Acquire) => (200, "text/plain", "ready\n".to_string()),
        Some("/health") if state.probes.get().is_none() => (503, "text/plain", "recovering\n".to_string()),
        Some("/health") => (503, "text/plain", "starting the edges\n".to_string()),
        Some(_) => (404, "text/plain", "not found\n".to_string()),
        None => (400, "text/plain", "bad request\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
