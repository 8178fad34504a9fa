//! Alerts pushed to Redis, as ViaBTC's alertcenter did (SPEC B9.2): each alert is logged, then
//! `RPUSH alert:message "<host>: <alert>"` on the master that Redis Sentinel names (or on a plain
//! Redis, for development), from a thread of its own, `viaduct-alerts`.
//!
//! Redis never holds the engine up: [`RedisAlerts::raise`] only queues (a bounded queue; an alert
//! that finds it full is dropped, counted and logged). For each alert the thread asks Sentinel
//! which server is the master and pushes there; when a push fails (Redis down, a failover under
//! way) it retries the same alert every second, so a failover is followed and nothing queued is
//! lost while Redis comes back. Repeats of one kind of alert from
//! one stage within [`REPEAT_WINDOW`] are pushed once; the next push after the window says how
//! many were held back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::alert::{Alert, AlertKind, AlertSink};

/// Where alerts go in Redis (`[alerts]`).
#[derive(Debug, Clone)]
pub struct RedisAlertsConfig {
    /// Sentinel addresses, `host:port`.
    pub sentinels: Vec<String>,
    /// The name Sentinel knows the master by.
    pub master: String,
    /// The database `SELECT`ed on the master.
    pub db: i64,
    /// The label each message starts with (ViaBTC's `alert.host`).
    pub host: String,
    /// A plain Redis URL instead of Sentinel.
    pub redis: Option<String>,
    /// Alerts that may wait for Redis; past it they are dropped and counted.
    pub queue_max: usize,
}

/// The Redis list alerts are pushed to (ViaBTC's).
pub const ALERT_LIST: &str = "alert:message";
/// Alerts of one kind from one stage within this window are pushed once.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// How long a failed push waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The alert sink with Redis behind it.
pub struct RedisAlerts {
    tx: Sender<(AlertKind, &'static str, String)>,
    counts: Arc<Counts>,
}

/// What became of the alerts.
#[derive(Debug, Default)]
pub struct Counts {
    pub pushed: AtomicU64,
    /// Dropped because the queue was full (Redis away for long).
    pub dropped: AtomicU64,
    /// Held back as repeats within the window.
    pub held_back: AtomicU64,
    /// Alerts queued, and those since pushed or held back as repeats: [`RedisAlerts::flush`]
    /// waits for the second to reach the first.
    queued: AtomicU64,
    settled: AtomicU64,
    /// The sink is gone: the thread stops instead of retrying.
    stopped: std::sync::atomic::AtomicBool,
}

impl RedisAlerts {
    /// Starts the thread that pushes; it ends when the sink is dropped.
    pub fn start(cfg: RedisAlertsConfig) -> std::io::Result<RedisAlerts> {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_max.max(1));
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        std::thread::Builder::new().name("viaduct-alerts".into()).spawn(move || push_loop(&cfg, &rx, &c))?;
        Ok(RedisAlerts { tx, counts })
    }

    pub fn counts(&self) -> Arc<Counts> {
        Arc::clone(&self.counts)
    }
}

impl Drop for RedisAlerts {
    fn drop(&mut self) {
        self.counts.stopped.store(true, Ordering::Release);
    }
}

impl AlertSink for RedisAlerts {
    fn raise(&self, alert: Alert) {
        tracing::error!("{alert}");
        match self.tx.try_send((alert.kind, alert.stage, alert.to_string())) {
            Ok(()) => {
                self.counts.queued.fetch_add(1, Ordering::AcqRel);
            }
            Err(TrySendError::Full(_)) => {
                let n = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!("alerts: Redis is behind; {n} alerts dropped so far (they are in this log)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let queued = self.counts.queued.load(Ordering::Acquire);
        while self.counts.settled.load(Ordering::Acquire) < queued && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A connection to the master: the one a Sentinel names (`SENTINEL GET-MASTER-ADDR-BY-NAME`,
/// which during a failover already names the replica being promoted), once it says it is the
/// master (`ROLE`); or the plain Redis of `cfg.redis`.
fn connect(cfg: &RedisAlertsConfig) -> redis::RedisResult<redis::Connection> {
    let open = |url: &str| redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2));
    let mut conn = match &cfg.redis {
        Some(url) => open(url)?,
        None => {
            let mut last = None;
            let mut found = None;
            for sentinel in &cfg.sentinels {
                let asked = open(&format!("redis://{sentinel}/")).and_then(|mut s| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&cfg.master)
                        .query::<Option<(String, u16)>>(&mut s)
                });
                match asked {
                    Ok(Some((ip, port))) => {
                        found = Some(open(&format!("redis://{ip}:{port}/"))?);
                        break;
                    }
                    Ok(None) => last = Some(format!("sentinel {sentinel} knows no master {:?}", cfg.master)),
                    Err(e) => last = Some(format!("sentinel {sentinel}: {e}")),
                }
            }
            let Some(mut conn) = found else {
                let why = last.unwrap_or_else(|| "no sentinel configured".into());
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "no master", why)));
            };
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
            if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r.as_slice() == b"master") {
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "not yet the master", String::new())));
            }
            conn
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    if cfg.db != 0 {
        redis::cmd("SELECT").arg(cfg.db).query::<()>(&mut conn)?;
    }
    Ok(conn)
}

fn push_loop(cfg: &RedisAlertsConfig, rx: &Receiver<(AlertKind, &'static str, String)>, counts: &Counts) {
    let mut conn: Option<redis::Connection> = None;
    // Per (kind, stage): when last pushed, and how many were held back since.
    let mut last: HashMap<(AlertKind, &'static str), (Instant, u64)> = HashMap::new();
    let mut pending: Option<String> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let text = match pending.take() {
            Some(t) => t,
            None => {
                let Ok((kind, stage, text)) = rx.recv() else { return };
                let now = Instant::now();
                let held = match last.get_mut(&(kind, stage)) {
                    Some((at, held)) if now.duration_since(*at) < REPEAT_WINDOW => {
                        *held += 1;
                        counts.held_back.fetch_add(1, Ordering::Relaxed);
                        counts.settled.fetch_add(1, Ordering::AcqRel);
                        continue;
                    }
                    Some((_, held)) => std::mem::take(held),
                    None => 0,
                };
                last.insert((kind, stage), (now, 0));
                match held {
                    0 => format!("{}: {text}", cfg.host),
                    n => format!("{}: {text} ({n} more like it held back since the last)", cfg.host),
                }
            }
        };
        let pushed = conn
            .take()
            .map_or_else(|| connect(cfg), Ok)
            .and_then(|mut c| redis::cmd("RPUSH").arg(ALERT_LIST).arg(&text).query::<i64>(&mut c).map(|_| c));
        match pushed {
            Ok(c) => {
                // Through Sentinel, each alert asks again which server is the master (as ViaBTC's
                // alertcenter did): a connection kept to a master that a failover is demoting
                // would take a push that the demoted server's resync then wipes.
                conn = cfg.redis.is_some().then_some(c);
                counts.pushed.fetch_add(1, Ordering::Relaxed);
                counts.settled.fetch_add(1, Ordering::AcqRel);
                if let Some(since) = failing_since.take() {
                    tracing::info!("alerts: Redis reached again after {:.1} s", since.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    tracing::warn!("alerts: cannot push to Redis ({e}); retrying every second, alerts queue meanwhile");
                    failing_since = Some(Instant::now());
                }
                if counts.stopped.load(Ordering::Acquire) {
                    return;
                }
                pending = Some(text);
                // Alerts raised meanwhile wait in the queue, behind this one.
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }
}
