//! `[metrics] bind`: Prometheus text on `GET /metrics` and readiness on `GET /health` (503 until
//! recovery is done and the edges listen, 200 after), from a thread of its own that serves one
//! short connection at a time. The values are read when scraped, from the engine's own counters:
//! nothing is added to the matcher's path.
//!
//! Exposed so far: the durable sequence, journal commit groups, the matcher loop's passes, each
//! bounded consumer's lag and bound (history writer, market data, snapshot worker, Kafka
//! publisher), the Kafka messages acknowledged per topic and failed sessions (with `[kafka]`),
//! and the alerts pushed, dropped and held back (with `[alerts]`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Probes;

/// The largest request read (a scrape's is a few hundred bytes).
const REQUEST_BYTES_MAX: usize = 8 * 1024;

type U64Gauge = Gauge<u64, AtomicU64>;
type Labels = Vec<(String, String)>;

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
}

impl Exposition {
    fn new() -> Exposition {
        let mut registry = Registry::with_prefix("viaduct");
        let (durable, commits, passes) = (U64Gauge::default(), U64Gauge::default(), U64Gauge::default());
        let (lag, lag_max, alerts) = (Family::default(), Family::default(), Family::default());
        registry.register("durable_sequence", "The highest journal sequence known durable", durable.clone());
        registry.register("journal_commit_groups", "Groups the journal has committed since start", commits.clone());
        registry.register("matcher_loop_passes", "Passes of the matcher's loop since start", passes.clone());
        registry.register("consumer_lag_commands", "Commands a bounded consumer is behind", lag.clone());
        registry.register("consumer_lag_max_commands", "A bounded consumer's lag bound", lag_max.clone());
        registry.register("alerts", "Alerts pushed to Redis, dropped, or held back as repeats", alerts.clone());
        let (kafka_acked, kafka_errors) = (Family::default(), U64Gauge::default());
        registry.register("kafka_messages", "Messages the Kafka brokers acknowledged, per topic", kafka_acked.clone());
        registry.register(
            "kafka_session_errors",
            "Kafka publisher sessions that failed (brokers unreachable, a fatal producer error)",
            kafka_errors.clone(),
        );
        Exposition { registry, durable, commits, passes, lag, lag_max, alerts, kafka_acked, kafka_errors }
    }

    fn render(&self, probes: &Probes, alerts: Option<&viaduct_publishers::alert_redis::Counts>) -> String {
        self.durable.set(probes.durable_seq());
        self.commits.set(probes.journal_commits());
        self.passes.set(probes.matcher_passes());
        for (name, lag, max) in probes.lags() {
            let labels = vec![("consumer".to_string(), name.trim_start_matches("the ").to_string())];
            self.lag.get_or_create(&labels).set(lag);
            self.lag_max.get_or_create(&labels).set(max);
        }
        if let Some(k) = probes.kafka() {
            for topic in viaduct_publishers::kafka::Topic::ALL {
                self.kafka_acked
                    .get_or_create(&vec![("topic".to_string(), topic.name().to_string())])
                    .set(k.acked[topic.index()].load(Ordering::Relaxed));
            }
            self.kafka_errors.set(k.errors.load(Ordering::Relaxed));
        }
        if let Some(c) = alerts {
            for (what, n) in [("pushed", &c.pushed), ("dropped", &c.dropped), ("held_back", &c.held_back)] {
                self.alerts
                    .get_or_create(&vec![("outcome".to_string(), what.to_string())])
                    .set(n.load(Ordering::Relaxed));
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

/// Binds `bind` and serves until the process ends; `ready` turns `/health` to 200.
pub fn start(
    bind: SocketAddr,
    probes: Probes,
    alerts: Option<Arc<viaduct_publishers::alert_redis::Counts>>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("viaduct-metrics".into()).spawn(move || {
        let exposition = Exposition::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Err(e) = serve(stream, &exposition, &probes, alerts.as_deref(), &ready) {
                tracing::debug!("metrics: a scrape failed: {e}");
            }
        }
    })?;
    Ok(addr)
}

fn serve(
    mut stream: TcpStream,
    exposition: &Exposition,
    probes: &Probes,
    alerts: Option<&viaduct_publishers::alert_redis::Counts>,
    ready: &AtomicBool,
) -> std::io::Result<()> {
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
            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", exposition.render(probes, alerts))
        }
        Some("/health") if ready.load(Ordering::Acquire) => (200, "text/plain", "ready\n".to_string()),
        Some("/health") => (503, "text/plain", "recovering\n".to_string()),
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
