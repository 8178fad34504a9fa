//! The state's memories with a time limit: the `balance.update` keys of the last 24 h
//! ([`Window`]) and each user's client order ids ([`ClientIds`]), both indexed by [`Shards`].

use std::collections::VecDeque;

use crate::book::IdMap;
use crate::command::IdWindow;
use crate::engine::{ClientKey, DEDUPE_ENTRIES_MAX, DEDUPE_WINDOW_US};

/// `balance.update` keys remembered for 24 h, kept in the state so that replay reproduces it.
/// Expired keys are dropped when a later key arrives; past `entries_max` live keys the window is
/// full (and `balance.update` answers error 3: applying a deposit twice would lose money).
#[derive(Clone)]
pub(crate) struct Window<K> {
    pub entries_max: usize,
    pub seen: Shards<K>,
    /// (time, key, value) in arrival order, for eviction and snapshots.
    pub order: VecDeque<(u64, K, u64)>,
}

impl<K> Default for Window<K> {
    fn default() -> Window<K> {
        Window { entries_max: DEDUPE_ENTRIES_MAX, seen: Shards::default(), order: VecDeque::new() }
    }
}

/// How many tables a window's keys are spread over.
const SHARDS: usize = 8192;

/// An index, key to (time, value) (the time a `balance.update` key arrived, or a client order id's
/// expiry), in `SHARDS` tables picked by a keyed hash. Each
/// table grows by itself, so a growth rehashes an 8192th of the keys (about 500 at the default
/// bound) and the window touches memory only as keys arrive. One table sized for the bound at
/// once never rehashed, but each early key then landed on a page of its own: a fresh server took
/// a page fault for most of its first few hundred thousand orders (37 k faults in 2 s on the
/// matcher's thread at 100 k orders/s, 3.9 k with shards; the `client-ids` bench in
/// benches/README.md, session 12). The hash is keyed (`RandomState`) since clients choose their
/// ids; the sharding changes no behaviour, as the state is the arrival order.
#[derive(Clone)]
pub(crate) struct Shards<K> {
    state: std::hash::RandomState,
    /// Empty until the first key.
    tables: Vec<hashbrown::HashTable<(K, u64, u64)>>,
}

impl<K> Default for Shards<K> {
    fn default() -> Shards<K> {
        Shards { state: std::hash::RandomState::new(), tables: Vec::new() }
    }
}

impl<K: Eq + std::hash::Hash> Shards<K> {
    /// The table of `hash`: bits the tables themselves do not use (they take the low bits for
    /// the bucket and the top seven for the tag).
    fn shard(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    fn get(&self, k: &K) -> Option<(u64, u64)> {
        let hash = std::hash::BuildHasher::hash_one(&self.state, k);
        let table = self.tables.get(Self::shard(hash))?;
        table.find(hash, |(key, _, _)| key == k).map(|&(_, t, v)| (t, v))
    }

    fn insert(&mut self, k: K, time: u64, value: u64) {
        if self.tables.is_empty() {
            self.tables.resize_with(SHARDS, hashbrown::HashTable::new);
        }
        let state = &self.state;
        let hash = std::hash::BuildHasher::hash_one(state, &k);
        let table = &mut self.tables[Self::shard(hash)];
        match table.entry(hash, |(key, _, _)| *key == k, |(key, _, _)| std::hash::BuildHasher::hash_one(state, key)) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = (k, time, value),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((k, time, value));
            }
        }
    }

    /// Removes `k` if it was inserted at `time` (a later insert of the same key stays).
    fn remove_if_at(&mut self, k: &K, time: u64) {
        let hash = std::hash::BuildHasher::hash_one(&self.state, k);
        let Some(table) = self.tables.get_mut(Self::shard(hash)) else { return };
        if let Ok(e) = table.find_entry(hash, |(key, t, _)| key == k && *t == time) {
            e.remove();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Slots allocated over every table.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.tables.iter().map(|t| t.capacity()).sum()
    }
}

fn expired(t: u64, now: u64) -> bool {
    t.saturating_add(DEDUPE_WINDOW_US) <= now
}

impl<K: Clone + Eq + std::hash::Hash> Window<K> {
    /// The value of `k` if it is younger than the window.
    pub(crate) fn live(&self, k: &K, now: u64) -> Option<u64> {
        self.seen.get(k).filter(|(t, _)| !expired(*t, now)).map(|(_, v)| v)
    }

    pub(crate) fn full(&self, now: u64) -> bool {
        self.order.len() >= self.entries_max && self.order.front().is_some_and(|(t, _, _)| !expired(*t, now))
    }

    /// Remembers `k` with `value` at `now`, first dropping the expired entries. The arrival
    /// queue is sized for `entries_max` at the first entry, so that it never grows by copying
    /// (its memory is touched in order, as entries arrive); the index grows a shard at a time
    /// ([`Shards`]).
    pub(crate) fn insert(&mut self, k: K, value: u64, now: u64) {
        if self.order.capacity() == 0 {
            self.order.reserve(self.entries_max);
        }
        while self.order.front().is_some_and(|(t, _, _)| expired(*t, now)) {
            self.forget_oldest();
        }
        self.seen.insert(k.clone(), now, value);
        self.order.push_back((now, k, value));
    }

    /// Drops the oldest entry, and its key unless a later entry took the key again.
    fn forget_oldest(&mut self) {
        if let Some((t, old, _)) = self.order.pop_front() {
            self.seen.remove_if_at(&old, t);
        }
    }
}

/// Each user's client order ids and the orders they name. An id is remembered until it expires
/// (each order carries its window: [`IdWindow`], its binary key's) or until the user has taken
/// `max` newer ids, whichever comes first; one user's ids never push out another's. Expired ids
/// are dropped as their user takes new ones; until then they take memory but name nothing.
#[derive(Clone, Default)]
pub(crate) struct ClientIds {
    /// (user, client order id) to (expiry, order id).
    index: Shards<ClientKey>,
    /// Each user's ids as (expiry, client order id), in arrival order: what is forgotten next.
    /// (User ids come from the operator's keys, not from clients: the plain id hash serves.)
    users: IdMap<u32, VecDeque<(u64, u64)>>,
}

impl ClientIds {
    /// The order `client_id` of `user` names, if the id has not expired or been forgotten.
    pub(crate) fn live(&self, user: u32, client_id: u64, now: u64) -> Option<u64> {
        self.index.get(&(user, client_id)).filter(|&(expires, _)| expires > now).map(|(_, order_id)| order_id)
    }

    /// Remembers that `client_id` of `user` names `order_id` from `now` for `window`: first the
    /// user's expired ids are dropped, then the oldest while the user has `window.max` or more.
    /// A user's queue is sized for its bound when it falls short (at its first id, and once
    /// after a snapshot was loaded), so that it does not grow by copying at every doubling.
    pub(crate) fn insert(&mut self, user: u32, client_id: u64, order_id: u64, now: u64, window: IdWindow) {
        let (max, seconds) = window.bounded();
        let queue = self.users.entry(user).or_default();
        if queue.capacity() < max {
            queue.reserve_exact(max - queue.len());
        }
        while let Some(&(expires, id)) = queue.front() {
            if expires > now && queue.len() < max {
                break;
            }
            queue.pop_front();
            self.index.remove_if_at(&(user, id), expires);
        }
        let expires = now.saturating_add(u64::from(seconds) * 1_000_000);
        queue.push_back((expires, client_id));
        self.index.insert((user, client_id), expires, order_id);
    }

    /// `client_id` of `user`, while it names `from`, names `to` instead (an amended order that got
    /// a new id), for the rest of its time.
    pub(crate) fn rename(&mut self, user: u32, client_id: u64, from: u64, to: u64, now: u64) {
        if let Some((expires, order_id)) = self.index.get(&(user, client_id)) {
            if order_id == from && expires > now {
                self.index.insert((user, client_id), expires, to);
            }
        }
    }

    /// Every user's ids, users in ascending order, each's in arrival order as (expiry, client
    /// order id, order id), with order id 0 for an entry whose id was taken again since (it names
    /// nothing, but counts until it is forgotten): exactly what [`ClientIds::restore`] needs.
    pub(crate) fn by_user(&self) -> Vec<(u32, UserIds<'_>)> {
        let mut users: Vec<u32> = self.users.keys().copied().collect();
        users.sort_unstable();
        users.into_iter().map(|u| (u, UserIds { user: u, ids: self })).collect()
    }

    /// Appends one entry of [`ClientIds::by_user`]'s (a snapshot being loaded).
    pub(crate) fn restore(&mut self, user: u32, expires: u64, client_id: u64, order_id: u64) {
        self.users.entry(user).or_default().push_back((expires, client_id));
        if order_id != 0 {
            self.index.insert((user, client_id), expires, order_id);
        }
    }

    #[cfg(test)]
    fn len(&self, user: u32) -> usize {
        self.users.get(&user).map_or(0, VecDeque::len)
    }
}

/// A client order id in a snapshot: (expiry, client order id, order id or 0).
pub(crate) type IdEntry = (u64, u64, u64);

/// One user's ids in a snapshot, written straight from the queue and the index.
pub(crate) struct UserIds<'a> {
    user: u32,
    ids: &'a ClientIds,
}

impl serde::Serialize for UserIds<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let queue = &self.ids.users[&self.user];
        s.collect_seq(queue.iter().map(|&(expires, client_id)| {
            let order_id = match self.ids.index.get(&(self.user, client_id)) {
                Some((t, order_id)) if t == expires => order_id,
                _ => 0,
            };
            (expires, client_id, order_id)
        }))
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use crate::engine::DedupeKey;

    /// The `balance.update` window's arrival queue is sized for its bound at its first key and
    /// never grows after; its index grows with its keys; at the bound it is full.
    #[test]
    fn the_balance_update_window_is_full_at_its_bound() {
        let mut w: Window<DedupeKey> = Window { entries_max: 10_000, ..Window::default() };
        let key = |id: u64| DedupeKey { user: 1, asset: 0, business: "deposit".into(), business_id: id };
        assert_eq!((w.seen.capacity(), w.order.capacity()), (0, 0), "nothing is allocated before the first key");
        w.insert(key(1), 0, 0);
        let queue = w.order.capacity();
        assert!(queue >= 10_000, "{queue}");
        for id in 2..=10_000u64 {
            w.insert(key(id), 0, id);
        }
        assert_eq!(w.order.capacity(), queue);
        assert!(w.full(10_000));
        assert_eq!(w.live(&key(10_000), 10_000), Some(0));
        assert_eq!(w.live(&key(1), 10_000), Some(0));
        assert_eq!(w.live(&key(10_001), 10_000), None);
    }

    /// A user's queue is sized for its bound at its first id and never grows after; past the
    /// bound the user's oldest ids are forgotten, from the index too, and other users' stay.
    #[test]
    fn a_users_ids_past_its_bound_push_out_its_own_oldest_only() {
        let window = IdWindow { max: 10_000, seconds: 86_400 };
        let mut w = ClientIds::default();
        w.insert(2, 1, 1, 0, window);
        w.insert(1, 1, 2, 0, window);
        let queue = w.users[&1].capacity();
        assert!(queue >= 10_000, "{queue}");
        for id in 2..=25_000u64 {
            w.insert(1, id, id + 1, id, window);
        }
        assert_eq!(w.users[&1].capacity(), queue);
        assert_eq!((w.len(1), w.index.len()), (10_000, 10_001));
        assert_eq!(w.live(1, 15_000, 25_000), None);
        assert_eq!(w.live(1, 15_001, 25_000), Some(15_002));
        assert_eq!(w.live(2, 1, 25_000), Some(1), "another user's id stays");
        // An id taken again after it was forgotten is remembered from its second time.
        w.insert(1, 3, 7, 25_001, window);
        assert_eq!(w.live(1, 3, 25_001), Some(7));
        assert_eq!(w.live(1, 15_001, 25_001), None, "the oldest went for it");
    }

    /// An id expires its window after it was taken; expired ids are dropped as their user takes
    /// new ones; renaming keeps its expiry; a snapshot's entries restore the same state.
    #[test]
    fn ids_expire_with_their_window_and_restore_exactly() {
        let second = 1_000_000;
        let mut w = ClientIds::default();
        w.insert(1, 10, 100, 0, IdWindow { max: 100, seconds: 60 });
        w.insert(1, 11, 101, 30 * second, IdWindow { max: 100, seconds: 60 });
        assert_eq!(w.live(1, 10, 60 * second - 1), Some(100));
        assert_eq!(w.live(1, 10, 60 * second), None);
        w.rename(1, 11, 101, 102, 60 * second);
        assert_eq!(w.live(1, 11, 90 * second - 1), Some(102));
        w.rename(1, 11, 101, 103, 60 * second);
        assert_eq!(w.live(1, 11, 60 * second), Some(102), "renamed only from the order it names");
        // A shorter window (another config) leaves an older, longer-lived entry behind it.
        w.insert(1, 10, 104, 61 * second, IdWindow { max: 100, seconds: 1 });
        assert_eq!(w.len(1), 2);
        w.insert(1, 12, 105, 61 * second, IdWindow { max: 100, seconds: 1 });
        w.insert(1, 12, 106, 63 * second, IdWindow { max: 100, seconds: 100 });
        let entries: Vec<(u32, Vec<IdEntry>)> = w
            .by_user()
            .into_iter()
            .map(|(u, ids)| (u, postcard::from_bytes(&postcard::to_allocvec(&ids).unwrap()).unwrap()))
            .collect();
        assert_eq!(
            entries,
            vec![(
                1,
                vec![(90 * second, 11, 102), (62 * second, 10, 104), (62 * second, 12, 0), (163 * second, 12, 106)]
            )],
            "the id taken again at 63 s leaves its first entry naming nothing"
        );
        let mut back = ClientIds::default();
        for (user, ids) in entries {
            for (expires, id, order_id) in ids {
                back.restore(user, expires, id, order_id);
            }
        }
        for now in [61 * second, 62 * second, 89 * second, 90 * second, 200 * second] {
            for id in 10..=12 {
                assert_eq!(back.live(1, id, now), w.live(1, id, now), "id {id} at {now}");
            }
        }
        assert_eq!(back.index.len(), w.index.len());
    }

    /// The index takes memory as keys arrive, not for its bound, and spreads them evenly over its
    /// shards, so that no growth rehashes more than a small share of them (the matcher would
    /// stall for it: one table of 4 M ids took 180 – 200 ms to grow).
    #[test]
    fn the_index_grows_with_its_keys_a_shard_at_a_time() {
        let mut w = ClientIds::default();
        for id in 0..1_000_000u64 {
            w.insert(7, id, id + 1, id, IdWindow { max: 4_000_000, seconds: 86_400 });
        }
        let (len, capacity) = (w.index.len(), w.index.capacity());
        assert_eq!(len, 1_000_000);
        assert!(capacity < 4 * len, "{capacity} slots for {len} keys, where the bound is 4,000,000");
        // Sequential ids of one user, which a market maker sends, spread as well as any: about
        // 122 a shard, give or take 11; a shard of twice that is a chance far below 1e-12.
        let fullest = w.index.tables.iter().map(|t| t.len()).max().unwrap();
        assert!(fullest < 2 * len / SHARDS, "{fullest} keys in one shard");
    }
}
