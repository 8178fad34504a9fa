//! Balances: available and frozen per (user, asset), the fees collected per asset, and each asset's
//! supply (deposits minus withdrawals). Every stored amount is at the asset's `prec_save`.

use serde::{Deserialize, Serialize};

use crate::book::IdMap;
use crate::config::{AssetId, Spec};
use crate::decimal::pow10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: i128,
    pub freeze: i128,
}

impl Balance {
    pub fn total(&self) -> i128 {
        self.available + self.freeze
    }
}

#[derive(Clone, Default)]
pub struct Ledger {
    pub(crate) accounts: IdMap<u32, Vec<Balance>>,
    /// Fees collected per asset: what trades removed from users' balances, kept outside them.
    pub(crate) fees: Vec<i128>,
    /// Deposits minus withdrawals per asset.
    pub(crate) supply: Vec<i128>,
    assets: usize,
}

impl Ledger {
    pub fn new(spec: &Spec, users: usize) -> Ledger {
        let assets = spec.assets.len();
        let mut accounts = IdMap::default();
        accounts.reserve(users);
        Ledger { accounts, fees: vec![0; assets], supply: vec![0; assets], assets }
    }

    pub fn get(&self, user: u32, asset: AssetId) -> Balance {
        self.accounts.get(&user).map_or(Balance::default(), |a| a[asset as usize])
    }

    fn entry(&mut self, user: u32, asset: AssetId) -> &mut Balance {
        let assets = self.assets;
        &mut self.accounts.entry(user).or_insert_with(|| vec![Balance::default(); assets])[asset as usize]
    }

    /// Adds `m` at `scale` (never above `prec_save`) to the available balance; returns the total.
    pub fn add(&mut self, user: u32, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> i128 {
        let b = self.entry(user, asset);
        b.available += m * pow10(prec_save - scale);
        b.total()
    }

    /// Subtracts `m` at `scale` from the available balance, truncating the result toward zero to
    /// `prec_save`; returns (amount removed at `prec_save`, total after).
    pub fn sub(&mut self, user: u32, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> (i128, i128) {
        let removed = if scale <= prec_save {
            m * pow10(prec_save - scale)
        } else {
            let unit = pow10(scale - prec_save);
            (m + unit - 1) / unit
        };
        let b = self.entry(user, asset);
        b.available -= removed;
        assert!(b.available >= 0, "user {user} asset {asset}: available balance went negative");
        (removed, b.total())
    }

    /// Subtracts `m` at `scale` (never above `prec_save`) from the frozen balance; returns the total.
    pub fn sub_frozen(&mut self, user: u32, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> i128 {
        let b = self.entry(user, asset);
        b.freeze -= m * pow10(prec_save - scale);
        assert!(b.freeze >= 0, "user {user} asset {asset}: frozen balance went negative");
        b.total()
    }

    /// Moves `m` at `scale` from available to frozen (a negative `m` releases it).
    pub fn freeze(&mut self, user: u32, asset: AssetId, prec_save: u32, m: i128, scale: u32) {
        let m = m * pow10(prec_save - scale);
        let b = self.entry(user, asset);
        b.available -= m;
        b.freeze += m;
        assert!(b.available >= 0 && b.freeze >= 0, "user {user} asset {asset}: freeze went negative");
    }

    pub fn deposit(&mut self, user: u32, asset: AssetId, change: i128) -> i128 {
        self.supply[asset as usize] += change;
        let b = self.entry(user, asset);
        b.available += change;
        assert!(b.available >= 0, "user {user} asset {asset}: balance.update left a negative balance");
        b.total()
    }

    /// Every (user, balances) pair, sorted by user, leaving out users whose balances are all zero.
    pub fn accounts_sorted(&self) -> Vec<(u32, &[Balance])> {
        let mut all: Vec<(u32, &[Balance])> = self
            .accounts
            .iter()
            .filter(|(_, b)| b.iter().any(|x| *x != Balance::default()))
            .map(|(&u, b)| (u, b.as_slice()))
            .collect();
        all.sort_unstable_by_key(|(u, _)| *u);
        all
    }

    pub fn users(&self) -> impl Iterator<Item = (u32, &[Balance])> + '_ {
        self.accounts.iter().map(|(&u, b)| (u, b.as_slice()))
    }

    pub(crate) fn set(&mut self, user: u32, balances: Vec<Balance>) {
        self.accounts.insert(user, balances);
    }
}
