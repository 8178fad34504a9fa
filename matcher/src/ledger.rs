//! Balances: available and frozen per (user, asset), the fees collected per asset, and each asset's
//! supply (deposits minus withdrawals). Every stored amount is at the asset's `prec_save`.
//!
//! Accounts live in one flat table, a row of balances per user, found through an id map once per
//! user per command; callers then address balances by account number.

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

/// An account number: a user's row in the ledger.
pub type Account = u32;

#[derive(Clone, Default)]
pub struct Ledger {
    index: IdMap<u32, Account>,
    users: Vec<u32>,
    rows: Vec<Balance>,
    /// Fees collected per asset: what trades removed from users' balances, kept outside them.
    pub(crate) fees: Vec<i128>,
    /// Deposits minus withdrawals per asset.
    pub(crate) supply: Vec<i128>,
    assets: usize,
}

impl Ledger {
    pub fn new(spec: &Spec, users: usize) -> Ledger {
        let assets = spec.assets.len();
        let mut index = IdMap::default();
        index.reserve(users);
        Ledger {
            index,
            users: Vec::with_capacity(users),
            rows: Vec::with_capacity(users * assets),
            fees: vec![0; assets],
            supply: vec![0; assets],
            assets,
        }
    }

    pub fn get(&self, user: u32, asset: AssetId) -> Balance {
        self.index.get(&user).map_or(Balance::default(), |&a| *self.at(a, asset))
    }

    /// The user's account, if the user has one.
    pub fn find(&self, user: u32) -> Option<Account> {
        self.index.get(&user).copied()
    }

    pub fn balance(&self, a: Account, asset: AssetId) -> Balance {
        *self.at(a, asset)
    }

    /// The user's account, opened (all zero) if the user has none.
    pub fn account(&mut self, user: u32) -> Account {
        if let Some(&a) = self.index.get(&user) {
            return a;
        }
        let a = self.users.len() as Account;
        self.users.push(user);
        self.rows.resize(self.rows.len() + self.assets, Balance::default());
        self.index.insert(user, a);
        a
    }

    #[inline]
    fn at(&self, a: Account, asset: AssetId) -> &Balance {
        &self.rows[a as usize * self.assets + asset as usize]
    }

    #[inline]
    fn at_mut(&mut self, a: Account, asset: AssetId) -> &mut Balance {
        &mut self.rows[a as usize * self.assets + asset as usize]
    }

    /// Adds `m` at `scale` (never above `prec_save`) to the available balance; returns the total.
    pub fn add(&mut self, a: Account, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> i128 {
        let b = self.at_mut(a, asset);
        b.available += m * pow10(prec_save - scale);
        b.total()
    }

    /// Subtracts `m` at `scale` from the available balance, truncating the result toward zero to
    /// `prec_save`; returns (amount removed at `prec_save`, total after).
    pub fn sub(&mut self, a: Account, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> (i128, i128) {
        let removed = if scale <= prec_save {
            m * pow10(prec_save - scale)
        } else {
            let unit = pow10(scale - prec_save);
            (m + unit - 1) / unit
        };
        let b = self.at_mut(a, asset);
        b.available -= removed;
        assert!(b.available >= 0, "account {a} asset {asset}: available balance went negative");
        (removed, b.total())
    }

    /// Subtracts `m` at `scale` (never above `prec_save`) from the frozen balance; returns the total.
    pub fn sub_frozen(&mut self, a: Account, asset: AssetId, prec_save: u32, m: i128, scale: u32) -> i128 {
        let b = self.at_mut(a, asset);
        b.freeze -= m * pow10(prec_save - scale);
        assert!(b.freeze >= 0, "account {a} asset {asset}: frozen balance went negative");
        b.total()
    }

    /// Moves `m` at `scale` from available to frozen (a negative `m` releases it).
    pub fn freeze(&mut self, a: Account, asset: AssetId, prec_save: u32, m: i128, scale: u32) {
        let m = m * pow10(prec_save - scale);
        let b = self.at_mut(a, asset);
        b.available -= m;
        b.freeze += m;
        assert!(b.available >= 0 && b.freeze >= 0, "account {a} asset {asset}: freeze went negative");
    }

    /// `balance.update`: changes the available balance and the asset's supply; returns the total.
    pub fn deposit(&mut self, user: u32, asset: AssetId, change: i128) -> i128 {
        self.supply[asset as usize] += change;
        let a = self.account(user);
        let b = self.at_mut(a, asset);
        b.available += change;
        assert!(b.available >= 0, "user {user} asset {asset}: balance.update left a negative balance");
        b.total()
    }

    /// Every (user, balances) pair in account order.
    pub fn users(&self) -> impl Iterator<Item = (u32, &[Balance])> + '_ {
        self.users.iter().copied().zip(self.rows.chunks_exact(self.assets.max(1)))
    }

    /// Every (user, balances) pair, sorted by user, leaving out users whose balances are all zero.
    pub fn accounts_sorted(&self) -> Vec<(u32, &[Balance])> {
        let mut all: Vec<(u32, &[Balance])> =
            self.users().filter(|(_, b)| b.iter().any(|x| *x != Balance::default())).collect();
        all.sort_unstable_by_key(|(u, _)| *u);
        all
    }

    pub(crate) fn set(&mut self, user: u32, balances: &[Balance]) {
        let a = self.account(user);
        let start = a as usize * self.assets;
        self.rows[start..start + self.assets].copy_from_slice(balances);
    }
}
