//! Growable storage for the matcher's books and ledger that never stops the matcher to grow.
//!
//! A `Vec` doubles by copying everything it holds, and a hash map by rehashing every entry: with
//! a few million resting orders (or users) that is one command that takes from a hundred
//! milliseconds to seconds (`benches/README.md`), and every request behind it waits. [`Chunked`] grows a chunk
//! at a time and never moves what it holds; [`SlotIndex`] moves its entries to a larger table a
//! few per insert instead of all at once.

use std::ops::{Index, IndexMut};

use std::hash::Hasher;

use std::marker::PhantomData;

use hashbrown::hash_table::{Entry, HashTable};

use crate::book::IdHasher;

const CHUNK_BITS: u32 = 12;
/// Elements per chunk: 4,096 orders are 720 KB.
pub const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: usize = CHUNK - 1;

/// A vector in fixed-size chunks: pushing allocates at most one chunk and moves nothing.
#[derive(Clone, Debug)]
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    /// Room for `n` elements, allocated now.
    pub fn with_capacity(n: usize) -> Chunked<T> {
        Chunked { chunks: (0..n.div_ceil(CHUNK)).map(|_| Vec::with_capacity(CHUNK)).collect(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `v`; returns its index.
    pub fn push(&mut self, v: T) -> usize {
        let i = self.len;
        let c = i >> CHUNK_BITS;
        if c == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        // Chunks before `c` are full and those after it empty, so this one is never full here.
        self.chunks[c].push(v);
        self.len += 1;
        i
    }

    /// Removes and returns the last element. Its chunk stays allocated for the next push.
    pub fn pop(&mut self) -> Option<T> {
        let i = self.len.checked_sub(1)?;
        self.len = i;
        self.chunks[i >> CHUNK_BITS].pop()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & CHUNK_MASK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> CHUNK_BITS][i & CHUNK_MASK]
    }
}

/// Id → slot in a [`Chunked`] store (an order's id to its slot in the book, a user to an account or
/// to a list of orders), where the id held in each slot can be read back: the index keeps only
/// the 4-byte slot (and hashbrown's control byte) per entry and asks `id_of(slot)` for the id
/// when it compares. A table of `(id, slot)` pairs takes 16 bytes plus the control byte per
/// bucket; for a million resting orders (two million buckets) that was 34 MB a book, held twice
/// (the matcher's and the snapshot shadow's), against 10 MB now. A lookup still compares ids only
/// where the control byte's 7 hash bits match, so a miss rarely reads an order, and a hit reads
/// the order its caller was about to read anyway.
///
/// When its table is full it starts a table of twice the size and, on each later insert, moves
/// the entries of a few slots (walking the slots in order) from the old table to the new one;
/// lookups and removals look in both until the old one is empty. So no insert rehashes more than
/// a handful of entries.
///
/// Every method that compares takes the same `id_of`: the id of the order (account, list) in a
/// slot. A slot must be removed from the index before its id changes, and hold its id before it
/// is inserted.
#[derive(Clone)]
pub struct SlotIndex<H = IdHasher> {
    table: HashTable<u32>,
    /// Entries not yet moved into `table`; empty except while moving.
    old: HashTable<u32>,
    /// The next slot whose entry moves, and the number of slots when the move began.
    cursor: u32,
    end: u32,
    /// Slots walked per insert while moving: enough to finish before `table` fills.
    per_insert: u32,
    hasher: PhantomData<H>,
}

impl<H> Default for SlotIndex<H> {
    fn default() -> Self {
        SlotIndex {
            table: HashTable::new(),
            old: HashTable::new(),
            cursor: 0,
            end: 0,
            per_insert: 0,
            hasher: PhantomData,
        }
    }
}

fn hash<H: Hasher + Default>(id: u64) -> u64 {
    let mut h = H::default();
    h.write_u64(id);
    h.finish()
}

impl<H: Hasher + Default> SlotIndex<H> {
    pub fn with_capacity(n: usize) -> SlotIndex<H> {
        SlotIndex { table: HashTable::with_capacity(n), ..SlotIndex::default() }
    }

    pub fn len(&self) -> usize {
        self.table.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: u64, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        let h = hash::<H>(id);
        let held = |&s: &u32| id_of(s) == id;
        self.table.find(h, held).or_else(|| if self.moving() { self.old.find(h, held) } else { None }).copied()
    }

    pub fn remove(&mut self, id: u64, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        self.remove_if(id, &id_of, |_| true).map(|r| r.unwrap_or_else(|s| s))
    }

    /// Removes `id` when `take(its slot)` says so, in one lookup: `Ok(slot)` if removed,
    /// `Err(slot)` if refused, `None` if `id` is not held. Removals that empty the old table
    /// before the walk does drop it.
    pub fn remove_if(
        &mut self,
        id: u64,
        id_of: impl Fn(u32) -> u64,
        take: impl FnOnce(u32) -> bool,
    ) -> Option<Result<u32, u32>> {
        let h = hash::<H>(id);
        let held = |&s: &u32| id_of(s) == id;
        let in_old = match self.table.find_entry(h, held) {
            Ok(e) => {
                let slot = *e.get();
                if !take(slot) {
                    return Some(Err(slot));
                }
                e.remove();
                return Some(Ok(slot));
            }
            Err(_) if self.old.is_empty() => return None,
            Err(_) => self.old.find_entry(h, held).ok()?,
        };
        let slot = *in_old.get();
        if !take(slot) {
            return Some(Err(slot));
        }
        in_old.remove();
        if self.old.is_empty() {
            self.finish(&id_of);
        }
        Some(Ok(slot))
    }

    /// Every slot held, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().chain(self.old.iter()).copied()
    }

    /// Bytes the index has allocated.
    pub fn allocation_size(&self) -> usize {
        self.table.allocation_size() + self.old.allocation_size()
    }

    /// True while entries wait in the old table.
    pub fn moving(&self) -> bool {
        !self.old.is_empty()
    }

    /// Maps `id` to `slot`; returns the slot `id` had, if any (and then changes nothing).
    /// `slots` is how many slots the store has; `id_of(slot)` must already be `id`, and `id_of`
    /// of a free slot may be anything (the id of what was there).
    pub fn insert(&mut self, id: u64, slot: u32, slots: u32, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        self.advance(&id_of);
        if self.table.len() >= self.table.capacity() {
            if self.moving() {
                // Not reached while `per_insert` keeps up; correct either way.
                self.finish(&id_of);
            }
            let bigger = HashTable::with_capacity((self.table.capacity() * 2).max(16));
            self.old = std::mem::replace(&mut self.table, bigger);
            self.cursor = 0;
            self.end = slots;
            // Walk every slot within the next half of the old table's size in inserts, while the
            // new table, twice as large, takes them and the new orders.
            let half = (self.old.len() as u64 / 2).max(1);
            self.per_insert = u64::from(slots).div_ceil(half).max(2) as u32;
        }
        let h = hash::<H>(id);
        let held = |&s: &u32| id_of(s) == id;
        if self.moving() {
            if let Some(&had) = self.old.find(h, held) {
                return Some(had);
            }
        }
        match self.table.entry(h, held, |&s| hash::<H>(id_of(s))) {
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(e) => {
                e.insert(slot);
                None
            }
        }
    }

    /// Moves the entries of the next `per_insert` slots.
    fn advance(&mut self, id_of: &impl Fn(u32) -> u64) {
        if !self.moving() {
            return;
        }
        let stop = self.end.min(self.cursor.saturating_add(self.per_insert));
        while self.cursor < stop {
            let s = self.cursor;
            self.cursor += 1;
            let h = hash::<H>(id_of(s));
            if let Ok(e) = self.old.find_entry(h, |&x| x == s) {
                e.remove();
                self.table.insert_unique(h, s, |&x| hash::<H>(id_of(x)));
            }
        }
        if self.cursor >= self.end {
            // Every entry of the old table named a slot below `end`; any left would be a bug in
            // the caller's `id_of`, and moving them keeps the index right regardless.
            debug_assert!(self.old.is_empty(), "{} entries left after the walk", self.old.len());
            self.finish(id_of);
        }
    }

    fn finish(&mut self, id_of: &impl Fn(u32) -> u64) {
        for s in std::mem::take(&mut self.old) {
            self.table.insert_unique(hash::<H>(id_of(s)), s, |&x| hash::<H>(id_of(x)));
        }
        self.cursor = 0;
        self.end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn chunked_pushes_pops_and_indexes_across_chunks() {
        let mut c = Chunked::default();
        for i in 0..3 * CHUNK + 5 {
            assert_eq!(c.push(i * 7), i);
        }
        assert_eq!(c.len(), 3 * CHUNK + 5);
        // Growing never moved an element: the first one is where it was after thousands of pushes.
        let first: *const usize = &c[0];
        for i in 0..4 * CHUNK {
            c.push(i);
        }
        assert_eq!(first, &c[0] as *const usize);
        for _ in 0..4 * CHUNK {
            c.pop();
        }
        assert_eq!(c[0], 0);
        assert_eq!(c[CHUNK - 1], (CHUNK - 1) * 7);
        assert_eq!(c[CHUNK], CHUNK * 7);
        assert_eq!(c[3 * CHUNK + 4], (3 * CHUNK + 4) * 7);
        c[CHUNK] = 1;
        assert_eq!(c[CHUNK], 1);
        for i in (2 * CHUNK - 3..3 * CHUNK + 5).rev() {
            assert_eq!(c.pop(), Some(i * 7));
        }
        assert_eq!(c.len(), 2 * CHUNK - 3);
        assert_eq!(c.push(9), 2 * CHUNK - 3);
        assert_eq!(c[2 * CHUNK - 3], 9);
        let mut e: Chunked<u8> = Chunked::with_capacity(CHUNK + 1);
        assert!(e.is_empty());
        assert_eq!(e.pop(), None);
        assert_eq!(e.push(1), 0);
    }

    #[test]
    #[should_panic]
    fn chunked_refuses_an_index_past_its_length() {
        let mut c = Chunked::default();
        c.push(1u8);
        let _ = c[CHUNK];
    }

    /// A million entries (two million buckets, as a book of a million resting orders has) take
    /// the slot and the control byte per bucket: 5 bytes, not the 17 of an `(id, slot)` pair.
    #[test]
    fn an_entry_costs_its_slot_not_its_id() {
        let n = 1_000_000u32;
        let mut index = SlotIndex::<crate::book::BlockIdHasher>::default();
        let id_of = |s: u32| 7 * u64::from(s) + 1;
        for s in 0..n {
            index.insert(id_of(s), s, s + 1, id_of);
        }
        while index.moving() {
            index.remove(id_of(n - 1), id_of);
            index.insert(id_of(n - 1), n - 1, n, id_of);
        }
        assert_eq!(index.len(), n as usize);
        let per_entry = index.allocation_size() as f64 / f64::from(n);
        assert!(per_entry < 12.0, "{per_entry:.1} bytes per entry");
        assert_eq!(index.get(id_of(123_456), id_of), Some(123_456));
    }

    /// Removals that empty the old table before the walk reaches its end let it go at once.
    #[test]
    fn the_old_table_goes_once_removals_empty_it() {
        the_old_table_goes::<IdHasher>();
        the_old_table_goes::<crate::book::BlockIdHasher>();
    }

    fn the_old_table_goes<H: Hasher + Default>() {
        let mut index = SlotIndex::<H>::with_capacity(16);
        let ids: Vec<u64> = (0..1000).map(|i| 10_000 + i).collect();
        let cap = index.table.capacity();
        for s in 0..=cap as u32 {
            index.insert(ids[s as usize], s, s + 1, |x| ids[x as usize]);
        }
        assert!(index.moving(), "the insert past {cap} began a move");
        let waiting: Vec<u64> = index.old.iter().map(|&s| ids[s as usize]).collect();
        let id_of = |x: u32| ids[x as usize];
        for (n, id) in waiting.iter().enumerate() {
            let taken = if n % 2 == 0 {
                index.remove(*id, id_of)
            } else {
                index.remove_if(*id, id_of, |_| true).map(|r| r.unwrap())
            };
            assert!(taken.is_some());
        }
        assert!(!index.moving());
        assert_eq!(index.old.capacity(), 0, "the emptied old table was dropped");
        assert_eq!(index.len(), cap + 1 - waiting.len());
    }

    /// A book's slots, ids and index, churned as the matcher does (inserts into free or new
    /// slots, removals anywhere), checked against a plain map after every step; and no insert
    /// moves more than a few entries.
    #[test]
    fn the_index_grows_a_few_entries_at_a_time_and_always_answers_as_a_map_does() {
        grows_and_answers::<IdHasher>();
        grows_and_answers::<crate::book::BlockIdHasher>();
    }

    fn grows_and_answers<H: Hasher + Default>() {
        let mut index = SlotIndex::<H>::default();
        let mut ids: Vec<u64> = Vec::new(); // slot -> id of the order there (or that was there)
        let mut free: Vec<u32> = Vec::new();
        let mut reference: HashMap<u64, u32> = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next_id = 1u64;
        let (mut growths, mut most_moved) = (0, 0usize);
        for step in 0..200_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Mostly inserts early (growth), a balance later (churn through old and new).
            let insert = rng % 100 < if step < 120_000 { 70 } else { 50 };
            if insert || reference.is_empty() {
                let id = next_id;
                next_id += 1;
                let slot = match free.pop() {
                    Some(s) => {
                        ids[s as usize] = id;
                        s
                    }
                    None => {
                        ids.push(id);
                        (ids.len() - 1) as u32
                    }
                };
                let (was_moving, old_before, table_cap) = (index.moving(), index.old.len(), index.table.capacity());
                assert_eq!(index.insert(id, slot, ids.len() as u32, |s| ids[s as usize]), None);
                if !was_moving && index.moving() {
                    growths += 1;
                    assert!(index.table.capacity() >= 2 * table_cap);
                } else if was_moving {
                    most_moved = most_moved.max(old_before - index.old.len());
                }
                reference.insert(id, slot);
            } else {
                let victim = *reference.keys().nth((rng >> 20) as usize % reference.len()).unwrap();
                let slot = reference.remove(&victim).unwrap();
                assert_eq!(index.remove(victim, |s| ids[s as usize]), Some(slot));
                assert_eq!(index.remove(victim, |s| ids[s as usize]), None);
                free.push(slot);
            }
            assert_eq!(index.len(), reference.len());
            if step % 97 == 0 {
                for (&id, &slot) in &reference {
                    assert_eq!(index.get(id, |s| ids[s as usize]), Some(slot), "id {id} at step {step}");
                }
                let mut slots: Vec<u32> = index.slots().collect();
                slots.sort_unstable();
                let mut want: Vec<u32> = reference.values().copied().collect();
                want.sort_unstable();
                assert_eq!(slots, want);
            }
        }
        assert!(growths >= 8, "only {growths} growths");
        assert!(most_moved <= 8, "an insert moved {most_moved} entries");
        // A second insert of a held id changes nothing.
        let (&id, &slot) = reference.iter().next().unwrap();
        assert_eq!(index.insert(id, slot + 1, ids.len() as u32, |s| ids[s as usize]), Some(slot));
        assert_eq!(index.get(id, |s| ids[s as usize]), Some(slot));
    }
}
