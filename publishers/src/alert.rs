//! Alerts: what an operator must be told at once, typed, all through one sink. The engine makes
//! one [`Alerts`] handle and hands a clone to every stage that can raise one; today the sink logs
//! each alert at error level with the word `ALERT`, the operations work adds a Redis list.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A consumer of the durable sequence lags past its bound: state-changing requests get
    /// error 3 until it catches up.
    Lag,
    /// The history store cannot be reached or written; rows wait and are written from the
    /// journal once it can.
    History,
    /// The snapshot worker stopped: no more snapshots until a restart.
    Snapshots,
    /// A thread could not return to normal priority and may fall behind.
    Priority,
    /// The Kafka brokers cannot be reached or refuse messages; messages wait in the journal.
    Kafka,
    /// The journal cannot be written: the process stops, as nothing more can be made durable.
    Journal,
    /// The engine did not start: recovery refused the data directory (or its config).
    Recovery,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Lag => "lag",
            AlertKind::History => "history",
            AlertKind::Snapshots => "snapshots",
            AlertKind::Priority => "priority",
            AlertKind::Kafka => "kafka",
            AlertKind::Journal => "journal",
            AlertKind::Recovery => "recovery",
        }
    }
}

/// One alert: its kind, the stage that raised it, what happened and what follows, and when
/// (microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub stage: &'static str,
    pub message: String,
    pub time_us: u64,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ALERT {} {}: {}", self.kind.name(), self.stage, self.message)
    }
}

/// Where alerts go.
pub trait AlertSink: Send + Sync {
    fn raise(&self, alert: Alert);

    /// Waits, at most `within`, until what was raised has left the process (before it exits).
    fn flush(&self, _within: std::time::Duration) {}
}

/// The sink of today: the log, at error level.
pub struct LogAlerts;

impl AlertSink for LogAlerts {
    fn raise(&self, alert: Alert) {
        tracing::error!("{alert}");
    }
}

/// A handle to the one sink, cloned into every stage.
#[derive(Clone)]
pub struct Alerts(Arc<dyn AlertSink>);

impl Alerts {
    pub fn new(sink: Arc<dyn AlertSink>) -> Alerts {
        Alerts(sink)
    }

    /// Alerts that go to the log.
    pub fn log() -> Alerts {
        Alerts(Arc::new(LogAlerts))
    }

    /// Waits, at most `within`, until the alerts raised have gone out: for a process about to
    /// exit on an alert.
    pub fn flush(&self, within: std::time::Duration) {
        self.0.flush(within);
    }

    /// Raises an alert of `kind` from `stage`, stamped now.
    pub fn raise(&self, kind: AlertKind, stage: &'static str, message: impl Into<String>) {
        self.0.raise(Alert { kind, stage, message: message.into(), time_us: now_us() });
    }
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts::log()
    }
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Alerts")
    }
}

/// At most one alert per interval from a raiser that would repeat it while its condition lasts
/// (a lagging consumer, brokers away): [`OncePer::due`] says whether this one goes out; shared
/// between threads without a lock.
#[derive(Debug, Default)]
pub struct OncePer {
    /// When the last one went out, in microseconds since the epoch (0: never).
    last_us: AtomicU64,
}

impl OncePer {
    /// Whether an alert may go out now, at most once per `every`; claims it if so.
    pub fn due(&self, every: std::time::Duration) -> bool {
        let now = now_us();
        let last = self.last_us.load(Ordering::Relaxed);
        (last == 0 || now >= last.saturating_add(every.as_micros() as u64))
            && self.last_us.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A sink that keeps what it is given, for tests.
#[derive(Default)]
pub struct KeptAlerts(pub std::sync::Mutex<Vec<Alert>>);

impl AlertSink for KeptAlerts {
    fn raise(&self, alert: Alert) {
        self.0.lock().expect("kept alerts").push(alert);
    }
}
