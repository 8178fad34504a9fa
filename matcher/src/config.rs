//! Assets and markets: the operator's config, checked against ViaBTC's precision rules (SPEC B5.1,
//! B5.2) and compiled into a [`Spec`] the matcher indexes by number.

use std::collections::HashMap;

use serde::Deserialize;

use crate::decimal::{self, pow10};

/// Index of an asset in [`Spec::assets`] (config order).
pub type AssetId = u16;
/// Index of a market in [`Spec::markets`] (config order).
pub type MarketId = u16;

/// Names longer than this are refused (ViaBTC: asset and market names < 16 characters).
pub const NAME_LEN_MAX: usize = 15;
/// Largest `prec_save`, `prec_show`, `stock.prec` or `money.prec` accepted.
pub const PREC_MAX: u32 = 24;
/// Largest `fee_prec` accepted; it keeps every fee computation inside an `i128`.
pub const FEE_PREC_MAX: u32 = 6;
/// Deposits minus withdrawals of one asset may not exceed 10^32 at `prec_save` (with
/// `prec_save = 20`, 10^12 units). Every balance, freeze and deal is bounded by it, which is what
/// keeps every product in the matcher inside an `i128`.
pub const SUPPLY_MAX: i128 = 10i128.pow(32);
const ASSETS_MAX: usize = 1024;
const MARKETS_MAX: usize = 4096;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    pub name: String,
    pub prec_save: u32,
    #[serde(default)]
    pub prec_show: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MarketSide {
    pub name: String,
    pub prec: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    pub name: String,
    pub stock: MarketSide,
    pub money: MarketSide,
    #[serde(default)]
    pub fee_prec: Option<u32>,
    #[serde(default)]
    pub min_amount: Option<String>,
}

/// The matcher's part of the operator config: `[[assets]]` and `[[markets]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct Config {
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    #[serde(default)]
    pub markets: Vec<MarketConfig>,
}

/// A config that breaks a rule, naming the asset or market and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("asset {asset:?}: {rule}")]
    Asset { asset: String, rule: String },
    #[error("market {market:?}: {rule}")]
    Market { market: String, rule: String },
    #[error("config: {0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub name: String,
    pub prec_save: u32,
    pub prec_show: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    pub name: String,
    pub stock: AssetId,
    pub money: AssetId,
    pub stock_prec: u32,
    pub money_prec: u32,
    pub fee_prec: u32,
    /// At scale `stock_prec`.
    pub min_amount: i128,
}

impl Market {
    /// Scale of a deal's money (`price × amount`), of `deal_money`, and of a market bid's amount.
    #[inline]
    pub fn money_scale(&self) -> u32 {
        self.stock_prec + self.money_prec
    }
}

/// The checked config, indexed by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub assets: Vec<Asset>,
    pub markets: Vec<Market>,
    asset_index: HashMap<String, AssetId>,
    market_index: HashMap<String, MarketId>,
}

impl Spec {
    pub fn asset_id(&self, name: &str) -> Option<AssetId> {
        self.asset_index.get(name).copied()
    }

    pub fn market_id(&self, name: &str) -> Option<MarketId> {
        self.market_index.get(name).copied()
    }

    pub fn asset(&self, id: AssetId) -> &Asset {
        &self.assets[id as usize]
    }

    pub fn market(&self, id: MarketId) -> &Market {
        &self.markets[id as usize]
    }

    /// A hash of everything that gives a journaled command its meaning: the assets and markets, in
    /// order, with their precisions. A journal written under one fingerprint replays only under it.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::new();
        for a in &self.assets {
            text.push_str(&format!("asset {} {} {};", a.name, a.prec_save, a.prec_show));
        }
        for m in &self.markets {
            text.push_str(&format!(
                "market {} {} {} {} {} {} {};",
                m.name, m.stock, m.money, m.stock_prec, m.money_prec, m.fee_prec, m.min_amount
            ));
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// Checks `config` against every rule and compiles it.
    pub fn new(config: &Config) -> Result<Spec, ConfigError> {
        if config.assets.len() > ASSETS_MAX || config.markets.len() > MARKETS_MAX {
            return Err(ConfigError::Other(format!(
                "at most {ASSETS_MAX} assets and {MARKETS_MAX} markets are supported"
            )));
        }
        let mut assets = Vec::with_capacity(config.assets.len());
        let mut asset_index = HashMap::new();
        for a in &config.assets {
            let asset = check_asset(a)?;
            if asset_index.insert(a.name.clone(), assets.len() as AssetId).is_some() {
                return Err(asset_err(&a.name, "is configured twice"));
            }
            assets.push(asset);
        }
        let mut markets = Vec::with_capacity(config.markets.len());
        let mut market_index = HashMap::new();
        for m in &config.markets {
            let market = check_market(m, &assets, &asset_index)?;
            if market_index.insert(m.name.clone(), markets.len() as MarketId).is_some() {
                return Err(market_err(&m.name, "is configured twice".into()));
            }
            markets.push(market);
        }
        Ok(Spec { assets, markets, asset_index, market_index })
    }
}

fn asset_err(name: &str, rule: &str) -> ConfigError {
    ConfigError::Asset { asset: name.to_string(), rule: rule.to_string() }
}

fn market_err(name: &str, rule: String) -> ConfigError {
    ConfigError::Market { market: name.to_string(), rule }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err("name must be 1 to 15 bytes long");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("name must be printable ASCII without spaces");
    }
    Ok(())
}

fn check_asset(a: &AssetConfig) -> Result<Asset, ConfigError> {
    check_name(&a.name).map_err(|rule| asset_err(&a.name, rule))?;
    let prec_show = a.prec_show.unwrap_or(a.prec_save);
    if a.prec_save > PREC_MAX {
        return Err(asset_err(&a.name, &format!("prec_save {} exceeds {PREC_MAX}", a.prec_save)));
    }
    if prec_show > a.prec_save {
        return Err(asset_err(&a.name, &format!("prec_show {prec_show} exceeds prec_save {}", a.prec_save)));
    }
    Ok(Asset { name: a.name.clone(), prec_save: a.prec_save, prec_show })
}

fn check_market(m: &MarketConfig, assets: &[Asset], index: &HashMap<String, AssetId>) -> Result<Market, ConfigError> {
    let err = |rule: String| market_err(&m.name, rule);
    check_name(&m.name).map_err(|rule| err(rule.into()))?;
    let stock =
        *index.get(&m.stock.name).ok_or_else(|| err(format!("stock asset {:?} is not configured", m.stock.name)))?;
    let money =
        *index.get(&m.money.name).ok_or_else(|| err(format!("money asset {:?} is not configured", m.money.name)))?;
    if stock == money {
        return Err(err("stock and money must be different assets".into()));
    }
    let (sp, mp, fp) = (m.stock.prec, m.money.prec, m.fee_prec.unwrap_or(4));
    if sp > PREC_MAX || mp > PREC_MAX {
        return Err(err(format!("stock.prec and money.prec must be at most {PREC_MAX}")));
    }
    if fp > FEE_PREC_MAX {
        return Err(err(format!("fee_prec {fp} exceeds {FEE_PREC_MAX}")));
    }
    let (ss, ms) = (assets[stock as usize].prec_save, assets[money as usize].prec_save);
    let (sn, mn) = (&m.stock.name, &m.money.name);
    if sp + mp > ms {
        return Err(err(format!("stock.prec + money.prec ({sp} + {mp}) exceeds prec_save of {mn} ({ms})")));
    }
    if sp + fp > ss {
        return Err(err(format!("stock.prec + fee_prec ({sp} + {fp}) exceeds prec_save of {sn} ({ss})")));
    }
    if mp + fp > ms {
        return Err(err(format!("money.prec + fee_prec ({mp} + {fp}) exceeds prec_save of {mn} ({ms})")));
    }
    let min_text = m.min_amount.as_deref().unwrap_or("0.01");
    let min_amount = decimal::parse(min_text, sp).map_err(|e| err(format!("min_amount {min_text:?}: {e}")))?;
    if min_amount < 0 || min_amount >= SUPPLY_MAX / pow10(ss - sp) {
        return Err(err(format!("min_amount {min_text:?} is out of range")));
    }
    Ok(Market { name: m.name.clone(), stock, money, stock_prec: sp, money_prec: mp, fee_prec: fp, min_amount })
}

/// The embedded default: ViaBTC's sample assets and markets (BCH money at 20/8, the rest 12/8,
/// markets XXXBCH at 8/8 with `min_amount` 0.001).
pub fn embedded() -> Config {
    let mut assets = vec![AssetConfig { name: "BCH".into(), prec_save: 20, prec_show: Some(8) }];
    let stocks = ["BTC", "LTC", "ETH", "ETC", "ZEC", "XMR", "DSH"];
    for s in stocks {
        assets.push(AssetConfig { name: s.into(), prec_save: 12, prec_show: Some(8) });
    }
    let markets = stocks
        .iter()
        .map(|s| MarketConfig {
            name: format!("{s}BCH"),
            stock: MarketSide { name: (*s).into(), prec: 8 },
            money: MarketSide { name: "BCH".into(), prec: 8 },
            fee_prec: Some(4),
            min_amount: Some("0.001".into()),
        })
        .collect();
    Config { assets, markets }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(stock_prec: u32, money_prec: u32, fee_prec: u32) -> MarketConfig {
        MarketConfig {
            name: "BTCBCH".into(),
            stock: MarketSide { name: "BTC".into(), prec: stock_prec },
            money: MarketSide { name: "BCH".into(), prec: money_prec },
            fee_prec: Some(fee_prec),
            min_amount: None,
        }
    }

    fn with_market(m: MarketConfig) -> Config {
        let assets = vec![
            AssetConfig { name: "BTC".into(), prec_save: 12, prec_show: Some(8) },
            AssetConfig { name: "BCH".into(), prec_save: 20, prec_show: Some(8) },
        ];
        Config { assets, markets: vec![m] }
    }

    fn market_rule(config: &Config) -> String {
        match Spec::new(config) {
            Err(ConfigError::Market { market, rule }) => {
                assert_eq!(market, "BTCBCH");
                rule
            }
            other => panic!("expected a market error, got {other:?}"),
        }
    }

    #[test]
    fn embedded_config_is_valid() {
        let spec = Spec::new(&embedded()).unwrap();
        assert_eq!(spec.assets.len(), 8);
        assert_eq!(spec.market(spec.market_id("BTCBCH").unwrap()).min_amount, 100_000);
        assert_eq!(spec.market_id("NOPE"), None);
    }

    #[test]
    fn precision_rules_name_market_and_rule() {
        assert!(market_rule(&with_market(market(8, 13, 4)))
            .contains("stock.prec + money.prec (8 + 13) exceeds prec_save of BCH (20)"));
        assert!(market_rule(&with_market(market(9, 8, 4)))
            .contains("stock.prec + fee_prec (9 + 4) exceeds prec_save of BTC (12)"));
        let mut cfg = with_market(market(2, 8, 4));
        cfg.assets[1].prec_save = 11;
        assert!(market_rule(&cfg).contains("money.prec + fee_prec (8 + 4) exceeds prec_save of BCH (11)"));
        assert!(market_rule(&with_market(market(8, 8, 7))).contains("fee_prec 7 exceeds 6"));
    }

    #[test]
    fn unknown_or_repeated_names_are_refused() {
        let mut m = market(8, 8, 4);
        m.money.name = "XYZ".into();
        assert!(market_rule(&with_market(m)).contains("money asset \"XYZ\" is not configured"));
        let mut cfg = with_market(market(8, 8, 4));
        cfg.markets.push(market(8, 8, 4));
        assert!(market_rule(&cfg).contains("configured twice"));
        let mut cfg = with_market(market(8, 8, 4));
        cfg.assets[0].prec_show = Some(13);
        assert!(matches!(Spec::new(&cfg), Err(ConfigError::Asset { .. })));
        let mut m = market(8, 8, 4);
        m.min_amount = Some("abc".into());
        assert!(market_rule(&with_market(m)).contains("min_amount"));
    }

    #[test]
    fn reads_toml_shape() {
        let cfg: Config = toml_like();
        assert_eq!(Spec::new(&cfg).unwrap().markets[0].fee_prec, 4);
    }

    fn toml_like() -> Config {
        serde_json::from_str(
            r#"{"assets":[{"name":"BTC","prec_save":12},{"name":"BCH","prec_save":20,"prec_show":8}],
                "markets":[{"name":"BTCBCH","stock":{"name":"BTC","prec":8},"money":{"name":"BCH","prec":8},"min_amount":"0.001"}]}"#,
        )
        .unwrap()
    }
}
