//! One market's order book: orders in a pooled slab, price levels in a `BTreeMap` per side, each
//! level an intrusive FIFO list, and each user's open orders an intrusive list in id order.
//! An order for a price that already has a level finds it through a hash index of the levels, so
//! the tree is searched only when a level opens or closes. Insert, cancel and fill are
//! O(log levels) at worst and never allocate once the pool is warm.
//!
//! Why one file of ~550 lines (and its tests): the tree, the level index and the intrusive lists
//! are one structure whose links must change together.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::order::{Order, Side};
use crate::slab::{Chunked, SlotIndex};

const NIL: u32 = u32::MAX;

/// A hasher for integer ids: a multiply by the golden ratio, deterministic across runs.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The order-id index's hasher. Order ids are handed out in sequence, and a book that grows by
/// millions of orders inserts them in sequence (and moves them in sequence when its index grows):
/// a hash that sends each id to a random bucket of a table far larger than the cache makes every
/// one a cache miss. This one keeps each run of 8 ids (`id / 8`) together, in 8 adjacent buckets
/// at a place the golden-ratio multiply picks for the run, so one miss serves 8 inserts, while the
/// runs themselves spread like single ids (no long runs of full buckets, which a hash of the id
/// itself would make: a lookup of an absent id would walk them). The 8 ids of a run get different
/// top bits, which the table keeps as each bucket's tag. `id-index` measures it against
/// [`IdHasher`]: growing and churning books are faster, lookups of absent ids as cheap.
#[derive(Default, Clone, Copy)]
pub struct BlockIdHasher(u64);

impl Hasher for BlockIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = IdHasher(self.0);
        h.write(bytes);
        self.0 = h.0;
    }

    fn write_u64(&mut self, n: u64) {
        let lane = n & 7;
        let run = (self.0 ^ (n >> 3)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = ((run & !7) | lane) ^ (lane << 58);
    }
}

pub type IdMap<K, V, H = IdHasher> = HashMap<K, V, BuildHasherDefault<H>>;

/// The links of the order in the same slot: its level's FIFO, its user's list, and its level.
/// Kept apart from the orders so that relinking a neighbour touches 20 bytes, not a whole order.
#[derive(Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
    user_prev: u32,
    user_next: u32,
    level: u32,
}

/// A price level: a FIFO of slots and the sum of their `left`, and its key in the level index
/// ([`level_code`]; [`NO_CODE`] for a price the index does not hold).
#[derive(Clone, Copy)]
struct Level {
    head: u32,
    tail: u32,
    total: i128,
    code: u64,
}

const NO_CODE: u64 = u64::MAX;

/// A level's key in the level index: its price, with the side in bit 62, for prices below 2^62
/// (any real market's); the rare larger price is found through the tree alone.
fn level_code(side: Side, price: i128) -> Option<u64> {
    const LIMIT: i128 = 1 << 62;
    (0..LIMIT).contains(&price).then(|| price as u64 | if side == Side::Bid { LIMIT as u64 } else { 0 })
}

#[derive(Clone, Copy)]
struct UserList {
    /// The user whose list this is (also after the list is freed: see `SlotIndex::insert`).
    user: u32,
    head: u32,
    tail: u32,
    count: u32,
}

#[derive(Clone, Default)]
pub struct Book {
    /// Orders and their links by slot, in chunks: growing the book never moves them.
    orders: Chunked<Order>,
    links: Chunked<Links>,
    free: Chunked<u32>,
    by_id: SlotIndex<BlockIdHasher>,
    /// Price → level, keyed by price.
    asks: BTreeMap<i128, u32>,
    /// Price → level, keyed by −price, so that ascending order is priority order on both sides.
    bids: BTreeMap<i128, u32>,
    /// Levels of both sides, pooled; an order finds its own through its links, so removing an
    /// order touches the tree only when its level empties.
    levels: Vec<Level>,
    free_levels: Vec<u32>,
    /// Level code → level, for every level whose price has a code.
    level_index: SlotIndex,
    /// The first (key, level) of each side's tree, asks then bids: the top of the book without a
    /// walk down the tree.
    first: [Option<(i128, u32)>; 2],
    /// Each user's list of resting orders, by list slot, and the index from user to slot: both
    /// grow without stopping the matcher, as the orders do.
    users: Chunked<UserList>,
    free_users: Chunked<u32>,
    user_index: SlotIndex,
    ask_count: usize,
    bid_count: usize,
    ask_left: i128,
    bid_left: i128,
}

fn key(side: Side, price: i128) -> i128 {
    match side {
        Side::Ask => price,
        Side::Bid => -price,
    }
}

impl Book {
    pub fn with_capacity(orders: usize) -> Book {
        Book {
            orders: Chunked::with_capacity(orders),
            links: Chunked::with_capacity(orders),
            by_id: SlotIndex::with_capacity(orders),
            ..Book::default()
        }
    }

    fn tree(&self, side: Side) -> &BTreeMap<i128, u32> {
        match side {
            Side::Ask => &self.asks,
            Side::Bid => &self.bids,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Number of orders and sum of their `left` on one side.
    pub fn side_totals(&self, side: Side) -> (usize, i128) {
        match side {
            Side::Ask => (self.ask_count, self.ask_left),
            Side::Bid => (self.bid_count, self.bid_left),
        }
    }

    pub fn get(&self, id: u64) -> Option<&Order> {
        self.by_id.get(id, |s| self.orders[s as usize].id).map(|s| &self.orders[s as usize])
    }

    /// The slot at the head of the best level on `side`.
    fn best_slot(&self, side: Side) -> Option<u32> {
        self.first[side as usize - 1].map(|(_, l)| self.levels[l as usize].head)
    }

    /// The order with the highest priority on `side`.
    pub fn best(&self, side: Side) -> Option<&Order> {
        self.best_slot(side).map(|s| &self.orders[s as usize])
    }

    /// Adds a resting order at the back of its price level; returns the level's new total.
    pub fn insert(&mut self, order: Order) -> i128 {
        let slot = self.alloc(order);
        let code = level_code(order.side, order.price);
        let levels = &self.levels;
        let li = match code.and_then(|c| self.level_index.get(c, |s| levels[s as usize].code)) {
            Some(li) => li,
            None => self.open_level(order.side, order.price, code),
        };
        let level = &mut self.levels[li as usize];
        let old_tail = level.tail;
        level.tail = slot;
        if old_tail == NIL {
            level.head = slot;
        }
        level.total += order.left;
        let total = level.total;
        let links = &mut self.links[slot as usize];
        links.prev = old_tail;
        links.level = li;
        if old_tail != NIL {
            self.links[old_tail as usize].next = slot;
        }
        self.link_user(order.user, slot);
        self.adjust_side(order.side, 1, order.left);
        total
    }

    /// The level for `price` on `side`, opened if there is none; `code` is its [`level_code`].
    fn open_level(&mut self, side: Side, price: i128, code: Option<u64>) -> u32 {
        let tree = match side {
            Side::Ask => &mut self.asks,
            Side::Bid => &mut self.bids,
        };
        match tree.entry(key(side, price)) {
            // Only a price without a code has a level the index did not find.
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let level = Level { head: NIL, tail: NIL, total: 0, code: code.unwrap_or(NO_CODE) };
                let li = match self.free_levels.pop() {
                    Some(li) => {
                        self.levels[li as usize] = level;
                        li
                    }
                    None => {
                        self.levels.push(level);
                        (self.levels.len() - 1) as u32
                    }
                };
                let k = *e.key();
                e.insert(li);
                let first = &mut self.first[side as usize - 1];
                if first.is_none_or(|(best, _)| k < best) {
                    *first = Some((k, li));
                }
                if let Some(c) = code {
                    let (levels, slots) = (&self.levels, self.levels.len() as u32);
                    self.level_index.insert(c, li, slots, |s| levels[s as usize].code);
                }
                li
            }
        }
    }

    /// Replaces the order at the head of the best level on `side` (the maker of a trade) with its
    /// filled copy, `amount` having come off its `left`; returns the level's new total.
    pub fn fill_best(&mut self, side: Side, filled: Order, amount: i128) -> i128 {
        let head = self.best_slot(side).expect("a filled maker rests in the book");
        let level = &mut self.levels[self.links[head as usize].level as usize];
        level.total -= amount;
        let total = level.total;
        let slot = &mut self.orders[head as usize];
        debug_assert_eq!(slot.id, filled.id);
        *slot = filled;
        self.adjust_side(side, 0, -amount);
        total
    }

    /// Lowers the `left` of resting order `id` to `left` (above zero, at most its own) in its place,
    /// its `amount` by as much: it keeps its priority. Returns the order and its level's new total.
    pub fn shrink(&mut self, id: u64, left: i128, now: u64) -> Option<(Order, i128)> {
        let slot = self.by_id.get(id, |s| self.orders[s as usize].id)?;
        let order = &mut self.orders[slot as usize];
        let cut = order.left - left;
        debug_assert!(left > 0 && cut >= 0, "shrink keeps something and adds nothing");
        order.left = left;
        order.amount -= cut;
        order.mtime_us = now;
        let (order, side) = (*order, order.side);
        let level = &mut self.levels[self.links[slot as usize].level as usize];
        level.total -= cut;
        let total = level.total;
        self.adjust_side(side, 0, -cut);
        Some((order, total))
    }

    /// Removes the order at the head of the best level on `side` (a maker filled in full).
    pub fn pop_best(&mut self, side: Side) {
        let head = self.best_slot(side).expect("best level exists");
        let orders = &self.orders;
        self.by_id.remove(orders[head as usize].id, |s| orders[s as usize].id);
        self.unlink(head);
    }

    /// Removes a resting order if `user` owns it (one lookup): `Err(None)` when there is no such
    /// order, `Err(Some(owner))` when another user owns it.
    pub fn remove_owned(&mut self, id: u64, user: u32) -> Result<(Order, i128), Option<u32>> {
        let orders = &self.orders;
        match self.by_id.remove_if(id, |s| orders[s as usize].id, |slot| orders[slot as usize].user == user) {
            Some(Ok(slot)) => Ok(self.unlink(slot)),
            Some(Err(slot)) => Err(Some(orders[slot as usize].user)),
            None => Err(None),
        }
    }

    /// Takes the order in `slot` (already gone from `by_id`) out of its level and user list.
    fn unlink(&mut self, slot: u32) -> (Order, i128) {
        let order = self.orders[slot as usize];
        let Links { prev, next, user_prev, user_next, level: li } = self.links[slot as usize];
        let level = &mut self.levels[li as usize];
        level.total -= order.left;
        let total = level.total;
        if prev == NIL {
            level.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        if level.head == NIL {
            debug_assert_eq!(total, 0);
            let tree = match order.side {
                Side::Ask => &mut self.asks,
                Side::Bid => &mut self.bids,
            };
            let k = key(order.side, order.price);
            tree.remove(&k);
            if level.code != NO_CODE {
                let (code, levels) = (level.code, &self.levels);
                self.level_index.remove(code, |s| levels[s as usize].code);
            }
            self.free_levels.push(li);
            let first = &mut self.first[order.side as usize - 1];
            if first.is_some_and(|(best, _)| best == k) {
                *first = tree.first_key_value().map(|(&k, &l)| (k, l));
            }
        }
        self.unlink_user(order.user, user_prev, user_next);
        self.adjust_side(order.side, -1, -order.left);
        self.free.push(slot);
        (order, total)
    }

    fn alloc(&mut self, order: Order) -> u32 {
        let unlinked = Links { prev: NIL, next: NIL, user_prev: NIL, user_next: NIL, level: NIL };
        let index = match self.free.pop() {
            Some(i) => {
                self.orders[i as usize] = order;
                self.links[i as usize] = unlinked;
                i
            }
            None => {
                self.links.push(unlinked);
                self.orders.push(order) as u32
            }
        };
        let (orders, slots) = (&self.orders, self.orders.len() as u32);
        let old = self.by_id.insert(order.id, index, slots, |s| orders[s as usize].id);
        assert!(old.is_none(), "order id {} inserted twice", order.id);
        index
    }

    fn adjust_side(&mut self, side: Side, count: isize, left: i128) {
        match side {
            Side::Ask => {
                self.ask_count = self.ask_count.wrapping_add_signed(count);
                self.ask_left += left;
            }
            Side::Bid => {
                self.bid_count = self.bid_count.wrapping_add_signed(count);
                self.bid_left += left;
            }
        }
    }

    fn link_user(&mut self, user: u32, slot: u32) {
        let lists = &self.users;
        let li = match self.user_index.get(user.into(), |s| lists[s as usize].user.into()) {
            Some(li) => li,
            None => {
                let list = UserList { user, head: NIL, tail: NIL, count: 0 };
                let li = match self.free_users.pop() {
                    Some(li) => {
                        self.users[li as usize] = list;
                        li
                    }
                    None => self.users.push(list) as u32,
                };
                let (lists, slots) = (&self.users, self.users.len() as u32);
                self.user_index.insert(user.into(), li, slots, |s| lists[s as usize].user.into());
                li
            }
        };
        let list = &mut self.users[li as usize];
        let old_tail = list.tail;
        list.tail = slot;
        if old_tail == NIL {
            list.head = slot;
        }
        list.count += 1;
        self.links[slot as usize].user_prev = old_tail;
        if old_tail != NIL {
            self.links[old_tail as usize].user_next = slot;
        }
    }

    fn unlink_user(&mut self, user: u32, prev: u32, next: u32) {
        let lists = &self.users;
        let li = self
            .user_index
            .get(user.into(), |s| lists[s as usize].user.into())
            .expect("the user list of a resting order exists");
        let list = &mut self.users[li as usize];
        if prev == NIL {
            list.head = next;
        }
        if next == NIL {
            list.tail = prev;
        }
        list.count -= 1;
        if list.count == 0 {
            let lists = &self.users;
            self.user_index.remove(user.into(), |s| lists[s as usize].user.into());
            self.free_users.push(li);
        }
        if prev != NIL {
            self.links[prev as usize].user_next = next;
        }
        if next != NIL {
            self.links[next as usize].user_prev = prev;
        }
    }

    /// Orders on `side` in matching priority: best price first, then by id.
    pub fn side_orders(&self, side: Side) -> impl Iterator<Item = &Order> + '_ {
        self.tree(side).values().flat_map(move |&l| self.chain(self.levels[l as usize].head, |s| s.next))
    }

    /// Price levels on `side` in priority order: `(price, total left)`.
    pub fn side_levels(&self, side: Side) -> impl Iterator<Item = (i128, i128)> + '_ {
        self.tree(side).iter().map(move |(&k, &l)| (key(side, k), self.levels[l as usize].total))
    }

    /// The user's open orders in this market, newest first, and how many there are.
    pub fn user_orders(&self, user: u32) -> (usize, impl Iterator<Item = &Order> + '_) {
        let lists = &self.users;
        let (count, tail) =
            match self.user_index.get(user.into(), |s| lists[s as usize].user.into()).map(|li| &lists[li as usize]) {
                Some(l) => (l.count as usize, l.tail),
                None => (0, NIL),
            };
        (count, self.chain(tail, |s| s.user_prev))
    }

    /// Every resting order in id order.
    pub fn orders_by_id(&self) -> Vec<&Order> {
        let mut all: Vec<(u64, &Order)> = self.orders_with_ids().collect();
        all.sort_unstable_by_key(|&(id, _)| id);
        all.into_iter().map(|(_, o)| o).collect()
    }

    /// Every resting order with its id, in slot order. The index holds slots, not ids: its slots,
    /// sorted, are read in the order they lie in memory, each order once, and the pair carries the
    /// id so that sorting the pairs reads no order (a snapshot of millions of orders spent most
    /// of its sort there when comparisons went through the order).
    pub fn orders_with_ids(&self) -> impl Iterator<Item = (u64, &Order)> + '_ {
        let mut slots: Vec<u32> = self.by_id.slots().collect();
        slots.sort_unstable();
        slots.into_iter().map(move |s| {
            let o = &self.orders[s as usize];
            (o.id, o)
        })
    }

    fn chain(&self, start: u32, step: fn(&Links) -> u32) -> impl Iterator<Item = &Order> + '_ {
        let mut at = start;
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let here = at as usize;
            at = step(&self.links[here]);
            Some(&self.orders[here])
        })
    }

    /// Checks the book's own structure: levels sorted and FIFO by id, totals equal to the sum of
    /// `left`, no empty level, every order reachable from its user's list.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = 0usize;
        for side in [Side::Ask, Side::Bid] {
            let (mut count, mut left_sum) = (0usize, 0i128);
            let mut last_price: Option<i128> = None;
            for (price, total) in self.side_levels(side) {
                if let Some(p) = last_price {
                    let ordered = match side {
                        Side::Ask => price > p,
                        Side::Bid => price < p,
                    };
                    if !ordered {
                        return Err(format!("{side:?} levels out of order at {price}"));
                    }
                }
                last_price = Some(price);
                let level = &self.levels[self.tree(side)[&key(side, price)] as usize];
                let (mut sum, mut last_id) = (0i128, 0u64);
                for o in self.chain(level.head, |s| s.next) {
                    if o.price != price || o.side != side || o.id <= last_id || o.left <= 0 {
                        return Err(format!("order {} misplaced in {side:?} level {price}", o.id));
                    }
                    last_id = o.id;
                    sum += o.left;
                    count += 1;
                }
                if sum != total || sum == 0 {
                    return Err(format!("{side:?} level {price}: total {total}, orders sum to {sum}"));
                }
                left_sum += sum;
            }
            if (count, left_sum) != self.side_totals(side) {
                return Err(format!("{side:?} side totals disagree with its levels"));
            }
            seen += count;
        }
        let mut coded = 0;
        for side in [Side::Ask, Side::Bid] {
            for (&k, &li) in self.tree(side) {
                let code = level_code(side, key(side, k));
                if self.levels[li as usize].code != code.unwrap_or(NO_CODE) {
                    return Err(format!("{side:?} level {} has the wrong index code", key(side, k)));
                }
                if let Some(c) = code {
                    coded += 1;
                    if self.level_index.get(c, |s| self.levels[s as usize].code) != Some(li) {
                        return Err(format!("{side:?} level {} is not in the level index", key(side, k)));
                    }
                }
            }
        }
        if coded != self.level_index.len() {
            return Err(format!("{} levels in the index, {coded} in the trees", self.level_index.len()));
        }
        for side in [Side::Ask, Side::Bid] {
            if self.first[side as usize - 1] != self.tree(side).first_key_value().map(|(&k, &l)| (k, l)) {
                return Err(format!("{side:?} cached top of book disagrees with the tree"));
            }
        }
        if seen != self.by_id.len() {
            return Err(format!("{} orders in levels, {} by id", seen, self.by_id.len()));
        }
        let in_user_lists: usize =
            self.user_index.slots().map(|li| self.user_orders(self.users[li as usize].user).1.count()).sum();
        if in_user_lists != seen {
            return Err(format!("{in_user_lists} orders in user lists, {seen} in levels"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{OrderKind, Source};

    fn order(id: u64, side: Side, price: i128) -> Order {
        Order {
            id,
            market: 0,
            side,
            kind: OrderKind::Limit,
            user: (id % 3) as u32 + 1,
            ctime_us: 0,
            mtime_us: 0,
            price,
            amount: 10,
            left: 10,
            taker_fee: 0,
            maker_fee: 0,
            deal_stock: 0,
            deal_money: 0,
            deal_fee: 0,
            source: Source::EMPTY,
            client_id: 0,
            session: 0,
        }
    }

    /// Prices the level index holds and prices only the tree holds (2^62 and above) share one
    /// book: levels open, fill up, empty and reopen on both sides, in price order, with the
    /// index in step with the trees after every change.
    #[test]
    fn levels_open_and_close_with_and_without_an_index_code() {
        let big = 1i128 << 62;
        let prices = [1, 7, big - 1, big, big + 5, i128::MAX / 4];
        let mut book = Book::default();
        let mut id = 0;
        for round in 0..3 {
            for side in [Side::Ask, Side::Bid] {
                for &p in prices.iter().rev() {
                    for _ in 0..2 {
                        id += 1;
                        book.insert(order(id, side, p));
                        book.check().unwrap();
                    }
                }
            }
            assert_eq!(book.side_levels(Side::Ask).map(|(p, _)| p).collect::<Vec<_>>(), prices);
            let bids: Vec<i128> = book
                .side_levels(Side::Bid)
                .map(|(p, t)| {
                    assert_eq!(t, 20);
                    p
                })
                .collect();
            assert_eq!(bids, prices.iter().rev().copied().collect::<Vec<_>>());
            assert_eq!(book.best(Side::Ask).unwrap().price, 1);
            assert_eq!(book.best(Side::Bid).unwrap().price, i128::MAX / 4);
            // Empty every level but, in the last round, one order in each: levels close and reopen.
            let ids: Vec<(u64, u32)> = book.orders_by_id().iter().map(|o| (o.id, o.user)).collect();
            for (n, (oid, user)) in ids.into_iter().enumerate() {
                if round < 2 || n % 2 == 0 {
                    book.remove_owned(oid, user).unwrap();
                    book.check().unwrap();
                }
            }
        }
        assert_eq!(book.len(), 2 * prices.len());
        assert_eq!(book.level_index.len(), 2 * 3, "the three prices below 2^62 on each side");
    }
}
