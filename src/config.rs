//! The operator's TOML config (SPEC A4). The matcher reads `[[assets]]` and `[[markets]]`; the
//! other sections are accepted with their documented shape and used by the components that own
//! them as they arrive.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use viaduct_edges::tcp::ApiKey;
use viaduct_matcher::command::IdWindow;
use viaduct_matcher::config::{self, AssetConfig, MarketConfig};
use viaduct_matcher::Spec;
use viaduct_publishers::history::writer::HistoryConfig;
use viaduct_publishers::kafka::{Compression, KafkaConfig};
use viaduct_publishers::market::MarketDataConfig;
use viaduct_publishers::service::LAG_MAX_DEFAULT as MARKET_LAG_MAX_DEFAULT;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    #[serde(default)]
    pub markets: Vec<MarketConfig>,
    #[serde(default)]
    pub edges: Edges,
    #[serde(default)]
    pub market: Option<MarketSection>,
    #[serde(default)]
    pub history: Option<HistorySection>,
    #[serde(default)]
    pub kafka: Option<KafkaSection>,
    #[serde(default)]
    pub alerts: Option<AlertsSection>,
    #[serde(default)]
    pub log: Option<LogSection>,
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    #[serde(default)]
    pub auth: Option<AuthSection>,
}

/// `[kafka]`: the brokers the `deals`, `orders` and `balances` topics are published to (SPEC B7).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `"host:port,host:port"`.
    pub brokers: String,
    /// Put before each topic's name (default none: `deals`, `orders`, `balances`).
    pub topic_prefix: Option<String>,
    /// Journaled commands the publisher may lag before state-changing requests get error 3
    /// (default 1,000,000).
    pub lag_max: Option<u64>,
    /// How long a batch waits for more messages, in ms (default 1, ViaBTC's).
    pub linger_ms: Option<u32>,
    /// The largest batch in bytes (default 1,000,000).
    pub batch_bytes: Option<u32>,
    /// `none` (default), `gzip`, `snappy` or `lz4`.
    pub compression: Option<String>,
    /// Always `all`: a message counts as published once every in-sync replica has it.
    pub acks: Option<String>,
}

impl KafkaSection {
    pub fn to_config(&self) -> Result<KafkaConfig> {
        let brokers: Vec<&str> = self.brokers.split(',').map(str::trim).collect();
        for b in &brokers {
            let port = b.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            anyhow::ensure!(
                port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)),
                "[kafka] brokers: {b:?} is not host:port"
            );
        }
        let mut cfg = KafkaConfig::new(brokers.join(","));
        if let Some(prefix) = &self.topic_prefix {
            anyhow::ensure!(
                prefix.len() <= 200 && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "[kafka] topic_prefix {prefix:?} may hold only letters, digits, '.', '_' and '-' (at most 200)"
            );
            cfg.topic_prefix = prefix.clone();
        }
        if let Some(lag) = self.lag_max {
            anyhow::ensure!(lag >= 1_000, "[kafka] lag_max = {lag} must be at least 1000");
            cfg.lag_max = lag;
        }
        if let Some(ms) = self.linger_ms {
            anyhow::ensure!(ms <= 900_000, "[kafka] linger_ms = {ms} must be at most 900000");
            cfg.linger_ms = ms;
        }
        if let Some(bytes) = self.batch_bytes {
            anyhow::ensure!(
                (1_000..=i32::MAX as u32).contains(&bytes),
                "[kafka] batch_bytes = {bytes} must be from 1000 to {}",
                i32::MAX
            );
            cfg.batch_bytes = bytes;
        }
        if let Some(c) = &self.compression {
            cfg.compression = Compression::parse(c)
                .ok_or_else(|| anyhow::anyhow!("[kafka] compression {c:?} must be none, gzip, snappy or lz4"))?;
        }
        if let Some(acks) = &self.acks {
            anyhow::ensure!(
                acks == "all",
                "[kafka] acks = {acks:?}: it is always \"all\" (a message lost by a broker would break exactly-once)"
            );
        }
        Ok(cfg)
    }
}

/// `[metrics]`: where Prometheus scrapes `/metrics` and a supervisor asks `/health`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub bind: String,
}

/// `[log]`: what is logged and where.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// A level (`info`) or a filter (`info,viaduct_edges=debug`); `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
    /// Log to files here (`<dir>/viaduct.<date>.log`, a new one each day) instead of stderr.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Log files kept (default 7); older ones are removed.
    #[serde(default)]
    pub files_max: Option<usize>,
    /// One JSON object per line instead of text.
    #[serde(default)]
    pub json: bool,
}

/// `[alerts]`: Redis Sentinel (or a plain Redis) that alerts are pushed to (ViaBTC's alertcenter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Sentinel addresses, `"host:port"`.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// The master's name in Sentinel.
    #[serde(default)]
    pub master: Option<String>,
    /// The database selected on the master (default 0).
    #[serde(default)]
    pub db: Option<i64>,
    /// The label every message starts with (default: the machine's host name).
    #[serde(default)]
    pub host: Option<String>,
    /// A plain Redis (`redis://host:port`) instead of Sentinel, for development.
    #[serde(default)]
    pub redis: Option<String>,
    /// Alerts that may wait for Redis (default 1,024); past it they are dropped and counted.
    #[serde(default)]
    pub queue_max: Option<usize>,
}

/// `[auth]`: the service the WebSocket edge asks who a token or a signature belongs to (ViaBTC's
/// `auth_url`, `sign_url`, `backend_timeout`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `server.auth`: GET with `Authorization: <token>`.
    pub url: String,
    /// `server.sign`: GET `?access_id=…&tonce=…` with `Authorization: <authorisation>`; left out,
    /// `server.sign` answers error 4.
    #[serde(default)]
    pub sign_url: Option<String>,
    /// How long a call may take before the client gets error 5 (default 1,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `[edges.*]`: where each edge listens.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Edges {
    #[serde(default)]
    pub http: Option<EdgeBind>,
    #[serde(default)]
    pub tcp: Option<TcpSection>,
    #[serde(default)]
    pub ws: Option<WsSection>,
}

/// `[edges.ws]`: the WebSocket edge (ViaBTC's accessws), started only when the section is there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSection {
    #[serde(default)]
    pub bind: Option<String>,
    /// Connections held at once (default 10,000); more are accepted and closed at once.
    #[serde(default)]
    pub connections_max: Option<usize>,
    /// Seconds a connection may send nothing before it is closed (ViaBTC `keep_alive`, 3600).
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// The subprotocol a client that names any must name (ViaBTC `protocol`, "chat").
    #[serde(default)]
    pub protocol: Option<String>,
    /// When set, the `Origin` header must end with it (ViaBTC `origin`).
    #[serde(default)]
    pub origin: Option<String>,
    /// Milliseconds between polls of the market feeds subscribed to (default 100; ViaBTC 500).
    #[serde(default)]
    pub push_interval_ms: Option<u64>,
    /// The `limit`s `depth.subscribe` accepts (ViaBTC `depth_limit`; default 1, 5, 10, 20, 30, 50,
    /// 100).
    #[serde(default)]
    pub depth_limit: Option<Vec<u64>>,
    /// The merge intervals `depth.subscribe` accepts (ViaBTC `depth_merge`; default "0" and
    /// 0.00000001 to 0.1 by powers of ten).
    #[serde(default)]
    pub depth_merge: Option<Vec<String>>,
    /// A PEM certificate chain and its PEM private key: with both, the edge serves `wss://`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// `[edges.http]`: where the edge listens; a left-out `bind` takes the edge's
/// default (SPEC A4).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeBind {
    #[serde(default)]
    pub bind: Option<String>,
    /// Connections held at once (default 10,000; lowered to fit the open-files limit). At the
    /// bound, an idle connection is closed for a newcomer.
    #[serde(default)]
    pub connections_max: Option<usize>,
    /// Seconds a request may take to arrive whole, counted from its first byte (or from the
    /// connection's opening): default 10.
    #[serde(default)]
    pub header_timeout_s: Option<u64>,
}

/// `[market]`: market data's time zone and retention (ViaBTC's marketprice `sec_max`, `min_max`,
/// `hour_max`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// An IANA zone name (`"Asia/Shanghai"`); day, week and month klines follow it. Default UTC.
    pub timezone: Option<String>,
    /// Seconds of one-second buckets kept (default 604800, 7 days).
    pub sec_max: Option<i64>,
    /// Minutes of one-minute buckets kept (default 525600, one year).
    pub min_max: Option<i64>,
    /// Hours of one-hour buckets kept (default 87600, ten years).
    pub hour_max: Option<i64>,
    /// Journaled commands market data may lag what it was fed before state-changing requests get
    /// error 3 (default 100,000).
    pub lag_max: Option<u64>,
}

impl MarketSection {
    /// Market data's settings, and its lag bound.
    fn to_config(&self) -> Result<(MarketDataConfig, u64)> {
        let mut cfg = MarketDataConfig::default();
        let lag_max = self.lag_max.unwrap_or(MARKET_LAG_MAX_DEFAULT);
        anyhow::ensure!(lag_max >= 1_000, "[market] lag_max = {lag_max} must be at least 1000");
        if let Some(name) = &self.timezone {
            cfg.tz = name
                .parse()
                .map_err(|_| anyhow::anyhow!("[market] timezone {name:?} is not an IANA time zone name"))?;
        }
        for (key, value, target) in [
            ("sec_max", self.sec_max, &mut cfg.sec_max),
            ("min_max", self.min_max, &mut cfg.min_max),
            ("hour_max", self.hour_max, &mut cfg.hour_max),
        ] {
            if let Some(v) = value {
                if !(1..=1_000_000_000).contains(&v) {
                    anyhow::bail!("[market] {key} = {v} must be from 1 to 1000000000");
                }
                *target = v;
            }
        }
        Ok((cfg, lag_max))
    }
}

/// `[history]`: where history goes (SPEC A4) and how far its writer may lag.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// `mysql://user:pass@host:port/db` or `sqlite://<path>`; default `sqlite://<data_dir>/history.db`.
    pub url: Option<String>,
    /// Journaled commands the writer may lag before state-changing requests get error 3
    /// (default 100,000).
    pub lag_max: Option<u64>,
    /// readhistory threads (default 4).
    pub readers: Option<usize>,
}

impl HistorySection {
    /// The writer's settings, with history under `data_dir` unless the section names a url.
    pub fn to_config(&self, data_dir: &Path) -> Result<HistoryConfig> {
        let url = match &self.url {
            // The store's own rule for what can name a store, checked before anything is reached.
            Some(url) => {
                viaduct_publishers::history::store::check_url(url).map_err(|e| anyhow::anyhow!("[history] {e}"))?;
                url.clone()
            }
            None => format!("sqlite://{}", data_dir.join("history.db").display()),
        };
        let mut cfg = HistoryConfig::new(url);
        if let Some(lag) = self.lag_max {
            anyhow::ensure!(lag >= 1_000, "[history] lag_max = {lag} must be at least 1000");
            cfg.lag_max = lag;
        }
        if let Some(n) = self.readers {
            anyhow::ensure!((1..=64).contains(&n), "[history] readers = {n} must be from 1 to 64");
            cfg.readers = n;
        }
        Ok(cfg)
    }
}

/// `[edges.tcp]`: its address and the binary order entry's API keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    #[serde(default = "default_tcp_bind")]
    pub bind: String,
    /// Connections held at once (default 10,000; lowered to fit the open-files limit).
    #[serde(default)]
    pub connections_max: Option<usize>,
    /// The reports a resumable session keeps for a replay (default 10,000), and the seconds one
    /// that ended may be resumed (default 60).
    #[serde(default)]
    pub replay_max: Option<usize>,
    #[serde(default)]
    pub replay_keep_s: Option<u64>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// `[[edges.tcp.keys]]`: one market maker's key, the user it trades as, and its fee rates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub key: String,
    pub secret: String,
    pub user_id: u32,
    pub taker_fee: String,
    pub maker_fee: String,
    #[serde(default)]
    pub source: String,
    /// Its sessions also get every report of its user from other sessions and edges (a drop
    /// copy): default off.
    #[serde(default)]
    pub drop_copy: bool,
    /// The self-trade prevention of its orders that do not choose one (NEW_LIMIT and NEW_MARKET
    /// `self_trade` 0): `"none"` (the default), `"cancel_taker"`, `"cancel_maker"` or
    /// `"cancel_both"`.
    #[serde(default)]
    pub self_trade: Option<String>,
    /// A session's resting orders are cancelled when it ends (default true).
    #[serde(default)]
    pub cancel_on_disconnect: Option<bool>,
    /// The dead-man timer: a session that sends nothing for this long is closed (and its orders
    /// cancelled); 100 to 60,000 ms, default `[edges.tcp]`'s 5,000.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Order-entry messages per second the key's sessions may send together (default: no
    /// bound); past it each is rejected (reason 34).
    #[serde(default)]
    pub rate_max: u32,
    /// Past this many per second (default: no bound) the session that sends one more is closed;
    /// at least `rate_max`.
    #[serde(default)]
    pub rate_logout: u32,
    /// The most client order ids of its user the engine remembers (default 1,000,000, at most
    /// 16,777,216): past it the oldest is forgotten. Keys of one user must agree.
    #[serde(default)]
    pub client_ids_max: Option<u32>,
    /// How long the engine remembers each client order id of its user (default 86,400 s, at most
    /// 604,800). Keys of one user must agree.
    #[serde(default)]
    pub client_ids_window_s: Option<u32>,
}

/// The HTTP edge's default address (SPEC A4).
pub const HTTP_BIND: &str = "127.0.0.1:8080";
/// The TCP edge's default address (SPEC A4).
pub const TCP_BIND: &str = "127.0.0.1:7316";
/// The WebSocket edge's default address (SPEC A4).
pub const WS_BIND: &str = "127.0.0.1:8090";

/// What `viaduct run` says of a section no component of this build reads yet.
pub fn not_yet_used_warning(section: &str) -> String {
    let what = match section {
        "auth" => "there is no WebSocket edge to authenticate for",
        _ => "it has no effect",
    };
    format!("config: [{section}] is set, but this build has no component that reads it yet: it is ignored, and {what}")
}

fn default_tcp_bind() -> String {
    TCP_BIND.into()
}

fn default_data_dir() -> String {
    "./data".into()
}

/// A loaded config: the checked spec, and what else the file said.
pub struct Loaded {
    pub spec: Spec,
    pub data_dir: String,
    /// Where the HTTP edge listens.
    pub http_bind: std::net::SocketAddr,
    /// `[edges.http] connections_max` and `header_timeout_s`, when set.
    pub http_connections_max: Option<usize>,
    pub http_header_timeout: Option<std::time::Duration>,
    /// `[edges.tcp] connections_max`, when set.
    pub tcp_connections_max: Option<usize>,
    /// `[edges.tcp] replay_max` and `replay_keep_s`, when set.
    pub tcp_replay: (Option<usize>, Option<std::time::Duration>),
    /// Where the TCP edge listens, and its API keys.
    pub tcp_bind: std::net::SocketAddr,
    pub tcp_keys: Vec<ApiKey>,
    /// Market data's time zone and retention.
    pub market: MarketDataConfig,
    /// `[market] lag_max`.
    pub market_lag_max: u64,
    /// History's section (defaults when the file has none).
    pub history: HistorySection,
    /// The WebSocket edge, when the file has `[edges.ws]`.
    pub ws: Option<viaduct_edges::ws::WsConfig>,
    /// Sections the file has that no component of this build reads yet.
    pub not_yet_used: Vec<&'static str>,
    /// `[log]`, as written.
    pub log: LogSection,
    /// `[metrics] bind`, when set.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where alerts go besides the log, when `[alerts]` is set.
    pub alerts: Option<viaduct_publishers::alert_redis::RedisAlertsConfig>,
    /// `[kafka]`, when set.
    pub kafka: Option<KafkaConfig>,
}

/// Loads and checks `path`, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let Some(path) = path else {
        let spec = Spec::new(&config::embedded()).map_err(|e| anyhow::anyhow!("embedded config: {e}"))?;
        let http_bind = HTTP_BIND.parse().expect("a valid default address");
        let tcp_bind = TCP_BIND.parse().expect("a valid default address");
        let data_dir = default_data_dir();
        let market = MarketDataConfig::default();
        return Ok(Loaded {
            spec,
            data_dir,
            http_bind,
            http_connections_max: None,
            http_header_timeout: None,
            tcp_connections_max: None,
            tcp_replay: (None, None),
            tcp_bind,
            tcp_keys: Vec::new(),
            market,
            market_lag_max: MARKET_LAG_MAX_DEFAULT,
            history: HistorySection::default(),
            ws: None,
            not_yet_used: Vec::new(),
            log: LogSection::default(),
            metrics: None,
            alerts: None,
            kafka: None,
        });
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    if file.assets.is_empty() || file.markets.is_empty() {
        anyhow::bail!("config {}: needs at least one [[assets]] and one [[markets]] entry", path.display());
    }
    let spec = Spec::new(&config::Config { assets: file.assets, markets: file.markets })
        .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    let mut not_yet_used: Vec<&'static str> = Vec::new();
    let kafka = match &file.kafka {
        Some(k) => Some(k.to_config().with_context(|| format!("config {}", path.display()))?),
        None => None,
    };
    let metrics =
        match &file.metrics {
            None => None,
            Some(m) => Some(m.bind.parse::<std::net::SocketAddr>().with_context(|| {
                format!("config {}: [metrics] bind {:?} is not an address", path.display(), m.bind)
            })?),
        };
    let alerts = match &file.alerts {
        None => None,
        Some(a) => {
            let bad = |why: &str| anyhow::anyhow!("config {}: [alerts] {why}", path.display());
            match (&a.redis, a.sentinels.is_empty(), &a.master) {
                (Some(url), true, None) if url.starts_with("redis://") => {}
                (Some(_), true, None) => return Err(bad("redis must be a redis:// URL")),
                (Some(_), _, _) => return Err(bad("takes either redis or sentinels and master, not both")),
                (None, false, Some(m)) if !m.is_empty() => {}
                (None, _, _) => return Err(bad("needs sentinels = [\"host:port\", ...] and master")),
            }
            if let Some(s) = a.sentinels.iter().find(|s| s.parse::<std::net::SocketAddr>().is_err() && !s.contains(':'))
            {
                return Err(bad(&format!("sentinel {s:?} is not host:port")));
            }
            if a.queue_max == Some(0) {
                return Err(bad("queue_max must be at least 1"));
            }
            let host = a.host.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "viaduct".into())
            });
            Some(viaduct_publishers::alert_redis::RedisAlertsConfig {
                sentinels: a.sentinels.clone(),
                master: a.master.clone().unwrap_or_default(),
                db: a.db.unwrap_or(0),
                host,
                redis: a.redis.clone(),
                queue_max: a.queue_max.unwrap_or(1024),
            })
        }
    };
    let auth = match &file.auth {
        None => None,
        Some(a) => {
            for url in std::iter::once(&a.url).chain(a.sign_url.as_ref()) {
                if !url.starts_with("http://") {
                    anyhow::bail!("config {}: [auth] {url:?} is not an http:// URL", path.display());
                }
            }
            let timeout = match a.timeout_ms {
                Some(0) => anyhow::bail!("config {}: [auth] timeout_ms must be at least 1", path.display()),
                Some(ms) => std::time::Duration::from_millis(ms),
                None => std::time::Duration::from_secs(1),
            };
            Some(viaduct_edges::AuthConfig { url: a.url.clone(), sign_url: a.sign_url.clone(), timeout })
        }
    };
    if auth.is_some() && file.edges.ws.is_none() {
        not_yet_used.push("auth");
    }
    let ws = match &file.edges.ws {
        None => None,
        Some(w) => {
            let bind = w.bind.as_deref().unwrap_or(WS_BIND);
            let bind = bind
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("config {}: [edges.ws] bind {bind:?} is not an address", path.display()))?;
            let mut cfg = viaduct_edges::ws::WsConfig::new(bind);
            match w.connections_max {
                Some(0) => anyhow::bail!("config {}: [edges.ws] connections_max must be at least 1", path.display()),
                Some(n) => cfg.connections_max = n,
                None => {}
            }
            match w.keep_alive_s {
                Some(0) => anyhow::bail!("config {}: [edges.ws] keep_alive_s must be at least 1", path.display()),
                Some(s) => cfg.keep_alive = std::time::Duration::from_secs(s),
                None => {}
            }
            if let Some(p) = &w.protocol {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    anyhow::bail!("config {}: [edges.ws] protocol {p:?} is not a subprotocol name", path.display());
                }
                cfg.protocol = p.clone();
            }
            cfg.origin = w.origin.clone().unwrap_or_default();
            match w.push_interval_ms {
                Some(ms) if !(1..=60_000).contains(&ms) => {
                    anyhow::bail!("config {}: [edges.ws] push_interval_ms must be from 1 to 60000", path.display())
                }
                Some(ms) => cfg.push_interval = std::time::Duration::from_millis(ms),
                None => {}
            }
            if let Some(limits) = &w.depth_limit {
                if limits.is_empty() || limits.iter().any(|&l| l == 0 || l > 10_000) {
                    anyhow::bail!("config {}: [edges.ws] depth_limit must list limits from 1 to 10000", path.display());
                }
                cfg.depth_limits = limits.clone();
            }
            if let Some(merges) = &w.depth_merge {
                let number = |m: &String| m.len() < 16 && viaduct_matcher::decimal::parse(m, 18).is_ok_and(|v| v >= 0);
                if merges.is_empty() || !merges.iter().all(number) {
                    anyhow::bail!(
                        "config {}: [edges.ws] depth_merge must list non-negative decimals of under 16 characters",
                        path.display()
                    );
                }
                cfg.depth_merges = merges.clone();
            }
            cfg.tls = match (&w.tls_cert, &w.tls_key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(
                    viaduct_edges::ws::tls_server_config(cert, key)
                        .map_err(|e| anyhow::anyhow!("config {}: [edges.ws] TLS: {e}", path.display()))?,
                ),
                _ => anyhow::bail!("config {}: [edges.ws] tls_cert and tls_key go together", path.display()),
            };
            cfg.auth = auth;
            Some(cfg)
        }
    };
    let bind = file.edges.http.as_ref().and_then(|h| h.bind.as_deref()).unwrap_or(HTTP_BIND);
    let http_bind = bind
        .parse()
        .with_context(|| format!("config {}: [edges.http] bind {bind:?} is not an address", path.display()))?;
    let http = file.edges.http.as_ref();
    let http_connections_max = http.and_then(|h| h.connections_max);
    let http_header_timeout = http.and_then(|h| h.header_timeout_s);
    for (key, value) in [
        ("[edges.http] connections_max", http_connections_max.map(|v| v as u64)),
        ("[edges.http] header_timeout_s", http_header_timeout),
    ] {
        if value == Some(0) {
            anyhow::bail!("config {}: {key} must be at least 1", path.display());
        }
    }
    let http_header_timeout = http_header_timeout.map(std::time::Duration::from_secs);
    let tcp = file.edges.tcp.unwrap_or(TcpSection {
        bind: default_tcp_bind(),
        connections_max: None,
        replay_max: None,
        replay_keep_s: None,
        keys: Vec::new(),
    });
    if tcp.replay_max == Some(0) || tcp.replay_max.is_some_and(|n| n > 1_000_000) {
        anyhow::bail!("config {}: [edges.tcp] replay_max must be within 1..=1000000", path.display());
    }
    let tcp_replay = (tcp.replay_max, tcp.replay_keep_s.map(std::time::Duration::from_secs));
    let tcp_connections_max = tcp.connections_max;
    if tcp_connections_max == Some(0) {
        anyhow::bail!("config {}: [edges.tcp] connections_max must be at least 1", path.display());
    }
    let tcp_bind = tcp
        .bind
        .parse()
        .with_context(|| format!("config {}: [edges.tcp] bind {:?} is not an address", path.display(), tcp.bind))?;
    let mut tcp_keys = Vec::new();
    for k in &tcp.keys {
        let mut key = ApiKey::new(&spec, &k.key, &k.secret, k.user_id, &k.taker_fee, &k.maker_fee, &k.source)
            .map_err(|e| anyhow::anyhow!("config {}: [[edges.tcp.keys]] {e}", path.display()))?;
        key.drop_copy = k.drop_copy;
        key.cancel_on_disconnect = k.cancel_on_disconnect.unwrap_or(true);
        if k.rate_max != 0 && k.rate_logout != 0 && k.rate_logout < k.rate_max {
            anyhow::bail!(
                "config {}: [[edges.tcp.keys]] key {:?}: rate_logout {} is below rate_max {}",
                path.display(),
                k.key,
                k.rate_logout,
                k.rate_max
            );
        }
        (key.rate_max, key.rate_logout) = (k.rate_max, k.rate_logout);
        if let Some(ms) = k.heartbeat_timeout_ms {
            if !(100..=60_000).contains(&ms) {
                anyhow::bail!(
                    "config {}: [[edges.tcp.keys]] key {:?}: heartbeat_timeout_ms {ms} is not within 100..=60000",
                    path.display(),
                    k.key
                );
            }
            key.heartbeat_timeout = Some(std::time::Duration::from_millis(ms));
        }
        if let Some(mode) = &k.self_trade {
            key.trader.self_trade = viaduct_protocol::params::self_trade(&serde_json::Value::String(mode.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "config {}: [[edges.tcp.keys]] key {:?}: self_trade {mode:?} is not one of none, cancel_taker, cancel_maker, cancel_both",
                        path.display(),
                        k.key
                    )
                })?;
        }
        let defaults = IdWindow::default();
        let (max, seconds) =
            (k.client_ids_max.unwrap_or(defaults.max), k.client_ids_window_s.unwrap_or(defaults.seconds));
        if !(1..=IdWindow::MAX_MAX).contains(&max) || !(1..=IdWindow::SECONDS_MAX).contains(&seconds) {
            anyhow::bail!(
                "config {}: [[edges.tcp.keys]] key {:?}: client_ids_max must be within 1..={} and client_ids_window_s within 1..={}",
                path.display(),
                k.key,
                IdWindow::MAX_MAX,
                IdWindow::SECONDS_MAX
            );
        }
        key.trader.id_window = IdWindow { max, seconds };
        if tcp_keys.iter().any(|other: &ApiKey| other.key == key.key) {
            anyhow::bail!("config {}: [[edges.tcp.keys]] key {:?} appears twice", path.display(), k.key);
        }
        if let Some(other) = tcp_keys.iter().find(|other: &&ApiKey| {
            other.trader.user == key.trader.user && other.trader.id_window != key.trader.id_window
        }) {
            anyhow::bail!(
                "config {}: [[edges.tcp.keys]] keys {:?} and {:?} have the same user_id {} but different client_ids_max or client_ids_window_s: a user's client order ids are one window",
                path.display(),
                String::from_utf8_lossy(&other.key).trim_end_matches('\0'),
                k.key,
                k.user_id
            );
        }
        tcp_keys.push(key);
    }
    let (market, market_lag_max) = match &file.market {
        Some(m) => m.to_config().with_context(|| format!("config {}", path.display()))?,
        None => (MarketDataConfig::default(), MARKET_LAG_MAX_DEFAULT),
    };
    let history = file.history.unwrap_or_default();
    history.to_config(Path::new(&file.data_dir)).with_context(|| format!("config {}", path.display()))?;
    Ok(Loaded {
        spec,
        data_dir: file.data_dir,
        http_bind,
        http_connections_max,
        http_header_timeout,
        tcp_connections_max,
        tcp_replay,
        tcp_bind,
        tcp_keys,
        market,
        market_lag_max,
        history,
        ws,
        not_yet_used,
        log: file.log.clone().unwrap_or_default(),
        metrics,
        alerts,
        kafka,
    })
}
