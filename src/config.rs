//! The operator's TOML config (SPEC A4). The matcher reads `[[assets]]` and `[[markets]]`; the
//! other sections are accepted with their documented shape and used by the components that own
//! them as they arrive.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use viaduct_matcher::config::{self, AssetConfig, MarketConfig};
use viaduct_matcher::Spec;

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
    pub history: Option<toml::Value>,
    #[serde(default)]
    pub kafka: Option<toml::Value>,
    #[serde(default)]
    pub alerts: Option<toml::Value>,
    #[serde(default)]
    pub auth: Option<toml::Value>,
}

/// `[edges.*]`: where each edge listens.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Edges {
    #[serde(default)]
    pub http: Option<EdgeBind>,
    #[serde(default)]
    pub tcp: Option<EdgeBind>,
    #[serde(default)]
    pub ws: Option<EdgeBind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeBind {
    pub bind: String,
}

/// The HTTP edge's default address (SPEC A4).
pub const HTTP_BIND: &str = "127.0.0.1:8080";

fn default_data_dir() -> String {
    "./data".into()
}

/// A loaded config: the checked spec, and what else the file said.
pub struct Loaded {
    pub spec: Spec,
    pub data_dir: String,
    /// Where the HTTP edge listens.
    pub http_bind: std::net::SocketAddr,
    /// Sections the file has that no component of this build reads yet.
    pub not_yet_used: Vec<&'static str>,
}

/// Loads and checks `path`, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded> {
    let Some(path) = path else {
        let spec = Spec::new(&config::embedded()).map_err(|e| anyhow::anyhow!("embedded config: {e}"))?;
        let http_bind = HTTP_BIND.parse().expect("a valid default address");
        return Ok(Loaded { spec, data_dir: default_data_dir(), http_bind, not_yet_used: Vec::new() });
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    if file.assets.is_empty() || file.markets.is_empty() {
        anyhow::bail!("config {}: needs at least one [[assets]] and one [[markets]] entry", path.display());
    }
    let spec = Spec::new(&config::Config { assets: file.assets, markets: file.markets })
        .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    let sections = [("history", &file.history), ("kafka", &file.kafka), ("alerts", &file.alerts), ("auth", &file.auth)];
    let mut not_yet_used: Vec<&'static str> =
        sections.iter().filter(|(_, v)| v.is_some()).map(|(name, _)| *name).collect();
    if file.edges.tcp.is_some() {
        not_yet_used.push("edges.tcp");
    }
    if file.edges.ws.is_some() {
        not_yet_used.push("edges.ws");
    }
    let bind = file.edges.http.as_ref().map_or(HTTP_BIND, |h| h.bind.as_str());
    let http_bind = bind
        .parse()
        .with_context(|| format!("config {}: [edges.http] bind {bind:?} is not an address", path.display()))?;
    Ok(Loaded { spec, data_dir: file.data_dir, http_bind, not_yet_used })
}
