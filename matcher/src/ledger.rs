//! Balances: available and frozen per (user, asset), the fees collected per asset, and each asset's
//! supply (deposits minus withdrawals). Every stored amount is at the asset's `prec_save`.
//!
//! Accounts live in one table, a row of balances per user, found through an id index once per
//! user per command; callers then address balances by account number. The table grows in chunks
//! of accounts and the index a few entries at a time (`crate::slab`), so a new user never stops
//! the matcher to copy the others.
//!
//! The arithmetic here is unchecked by design, on bounds proven before a call: an asset's supply
//! stays at most `SUPPLY_MAX` (10^32, checked by `balance.update` before it changes anything), a
//! balance is part of the supply, and every amount moved was first checked against the balance it
//! leaves (`engine::check_available`, or a maker's frozen funds). So each sum and each rescaled
//! amount (`m × 10^(prec_save − scale)`, an amount a balance covers) stays below 10^32 < 2^127;
//! the release build's overflow checks and the assertions below catch a bound that did not hold.

use serde::{Deserialize, Serialize};

use crate::config::{AssetId, Spec};
use crate::decimal::pow10;
use crate::slab::{Chunked, SlotIndex};

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

/// Accounts per chunk of [`Rows`].
const ROWS_CHUNK_BITS: u32 = 10;

/// Each account's row of `assets` balances, in chunks of 1,024 accounts that never move.
#[derive(Clone, Default)]
struct Rows {
    chunks: Vec<Vec<Balance>>,
    assets: usize,
}

impl Rows {
    fn new(assets: usize, accounts: usize) -> Rows {
        let per_chunk = assets << ROWS_CHUNK_BITS;
        let chunks = (0..accounts.div_ceil(1 << ROWS_CHUNK_BITS)).map(|_| Vec::with_capacity(per_chunk)).collect();
        Rows { chunks, assets }
    }

    /// Appends account `a`'s row, all zero (`a` is the number of accounts so far).
    fn push(&mut self, a: Account) {
        let (c, _) = self.place(a);
        if c == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(self.assets << ROWS_CHUNK_BITS));
        }
        let chunk = &mut self.chunks[c];
        chunk.resize(chunk.len() + self.assets, Balance::default());
    }

    /// Account `a`'s chunk, and where its row starts in it.
    #[inline]
    fn place(&self, a: Account) -> (usize, usize) {
        (a as usize >> ROWS_CHUNK_BITS, (a as usize & ((1 << ROWS_CHUNK_BITS) - 1)) * self.assets)
    }

    #[inline]
    fn get(&self, a: Account, asset: AssetId) -> &Balance {
        let (c, at) = self.place(a);
        &self.chunks[c][at + asset as usize]
    }

    #[inline]
    fn get_mut(&mut self, a: Account, asset: AssetId) -> &mut Balance {
        let (c, at) = self.place(a);
        &mut self.chunks[c][at + asset as usize]
    }

    fn row(&self, a: Account) -> &[Balance] {
        let (c, at) = self.place(a);
        &self.chunks[c][at..at + self.assets]
    }

    fn row_mut(&mut self, a: Account) -> &mut [Balance] {
        let (c, at) = self.place(a);
        &mut self.chunks[c][at..at + self.assets]
    }
}

#[derive(Clone, Default)]
pub struct Ledger {
    index: SlotIndex,
    users: Chunked<u32>,
    rows: Rows,
    /// Fees collected per asset: what trades removed from users' balances, kept outside them.
    pub(crate) fees: Vec<i128>,
    /// Deposits minus withdrawals per asset.
    pub(crate) supply: Vec<i128>,
}

impl Ledger {
    pub fn new(spec: &Spec, users: usize) -> Ledger {
        let assets = spec.assets.len();
        Ledger {
            index: SlotIndex::with_capacity(users),
            users: Chunked::with_capacity(users),
            rows: Rows::new(assets, users),
            fees: vec![0; assets],
            supply: vec![0; assets],
        }
    }

    pub fn get(&self, user: u32, asset: AssetId) -> Balance {
        self.find(user).map_or(Balance::default(), |a| *self.at(a, asset))
    }

    /// The user's account, if the user has one.
    pub fn find(&self, user: u32) -> Option<Account> {
        let users = &self.users;
        self.index.get(user.into(), |s| users[s as usize].into())
    }

    pub fn balance(&self, a: Account, asset: AssetId) -> Balance {
        *self.at(a, asset)
    }

    /// The user's account, opened (all zero) if the user has none.
    pub fn account(&mut self, user: u32) -> Account {
        if let Some(a) = self.find(user) {
            return a;
        }
        let a = self.users.push(user) as Account;
        self.rows.push(a);
        let users = &self.users;
        self.index.insert(user.into(), a, users.len() as u32, |s| users[s as usize].into());
        a
    }

    #[inline]
    fn at(&self, a: Account, asset: AssetId) -> &Balance {
        self.rows.get(a, asset)
    }

    #[inline]
    fn at_mut(&mut self, a: Account, asset: AssetId) -> &mut Balance {
        self.rows.get_mut(a, asset)
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
        (0..self.users.len()).map(|a| (self.users[a], self.rows.row(a as Account)))
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
        self.rows.row_mut(a).copy_from_slice(balances);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of accounts across several chunks and index growths: each keeps its own row,
    /// `find` and `users` agree, and a row written whole reads back.
    #[test]
    fn many_accounts_keep_their_own_rows() {
        let spec = Spec::new(&crate::config::embedded()).unwrap();
        let assets = spec.assets.len();
        let mut ledger = Ledger::new(&spec, 0);
        let n = 5 * (1 << ROWS_CHUNK_BITS) + 17;
        // Users in a scattered order, so that account numbers and user ids differ.
        let user = |i: usize| (i as u32).wrapping_mul(2_654_435_761);
        for i in 0..n {
            for asset in 0..assets {
                ledger.deposit(user(i), asset as AssetId, (i * 10 + asset) as i128);
            }
        }
        for i in 0..n {
            let a = ledger.find(user(i)).unwrap();
            assert_eq!(a as usize, i);
            for asset in 0..assets {
                assert_eq!(ledger.get(user(i), asset as AssetId).available, (i * 10 + asset) as i128);
            }
        }
        assert_eq!(ledger.find(user(n)), None);
        let listed: Vec<(u32, Vec<Balance>)> = ledger.users().map(|(u, b)| (u, b.to_vec())).collect();
        assert_eq!(listed.len(), n);
        for (i, (u, b)) in listed.iter().enumerate() {
            assert_eq!(*u, user(i));
            assert_eq!(b.len(), assets);
            assert_eq!(b[assets - 1].available, (i * 10 + assets - 1) as i128);
        }
        let row = vec![Balance { available: 7, freeze: 3 }; assets];
        ledger.set(user(n - 1), &row);
        ledger.set(user(n), &row);
        assert_eq!(ledger.balance(ledger.find(user(n - 1)).unwrap(), 0), row[0]);
        assert_eq!(ledger.get(user(n), (assets - 1) as AssetId), row[0]);
        assert_eq!(ledger.find(user(n)), Some(n as Account));
        assert_eq!(ledger.get(user(n - 2), 0).available, ((n - 2) * 10) as i128);
    }
}
