//! The order-id index (`SlotIndex`) under the shapes that cost it: a book that grows by millions
//! of orders with ids in sequence, lookups of ids it holds and of ids it does not (a cancel of an
//! unknown id must stay cheap), and a steady churn of new orders and cancels, which leaves removed
//! entries behind in the table. Prints the time per operation and the longest single one.
//!
//! Each shape runs with the index's hasher (`BlockIdHasher`, runs of 8 ids kept together) and,
//! as the baseline in the same run, with the golden-ratio hasher of the other indexes
//! (`IdHasher`, every id to its own place).
//!
//! `cargo run --release -p viaduct-benches --bin id-index -- [orders] [churn]`

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use std::hash::Hasher;

use rand::{Rng, SeedableRng};
use viaduct_matcher::book::{BlockIdHasher, IdHasher};
use viaduct_matcher::slab::SlotIndex;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The slots of a book: the id of the order in each, and the free ones.
struct Slots {
    ids: Vec<u64>,
    free: Vec<u32>,
}

impl Slots {
    fn insert<H: Hasher + Default>(&mut self, index: &mut SlotIndex<H>, id: u64) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.ids.push(0);
            (self.ids.len() - 1) as u32
        });
        self.ids[slot as usize] = id;
        let ids = &self.ids;
        assert!(index.insert(id, slot, ids.len() as u32, |s| ids[s as usize]).is_none());
    }

    fn remove<H: Hasher + Default>(&mut self, index: &mut SlotIndex<H>, id: u64) {
        let ids = &self.ids;
        let slot = index.remove(id, |s| ids[s as usize]).expect("held");
        self.free.push(slot);
    }
}

fn timed(what: &str, n: usize, mut op: impl FnMut(usize)) {
    let mut longest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i);
        longest = longest.max(t.elapsed());
    }
    let total = started.elapsed();
    println!(
        "{what:<44} {:>7.1} ns/op, longest {:>8.1} µs ({n} ops)",
        total.as_nanos() as f64 / n as f64,
        longest.as_nanos() as f64 / 1000.0
    );
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(4_000_000, |a| a.parse().unwrap());
    let churn: usize = std::env::args().nth(2).map_or(20_000_000, |a| a.parse().unwrap());
    println!("BlockIdHasher (the order-id index):");
    shapes::<BlockIdHasher>(n, churn);
    println!("IdHasher (baseline):");
    shapes::<IdHasher>(n, churn);
}

fn shapes<H: Hasher + Default>(n: usize, churn: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut index = SlotIndex::<H>::default();
    let mut slots = Slots { ids: Vec::new(), free: Vec::new() };
    timed("grow: insert ids 1..=n in sequence", n, |i| slots.insert(&mut index, i as u64 + 1));
    let probes = 1_000_000.min(n / 2);
    let beyond: Vec<u64> = (0..probes).map(|_| rng.gen_range(n as u64 + 1..u64::MAX / 2)).collect();
    let mut found = 0usize;
    timed("then look up ids never held", probes, |i| {
        found += usize::from(index.get(beyond[i], |s| slots.ids[s as usize]).is_some())
    });
    let near: Vec<u64> = (0..probes).map(|i| n as u64 + 1 + i as u64).collect();
    timed("then look up the next ids, not yet held", probes, |i| {
        found += usize::from(index.get(near[i], |s| slots.ids[s as usize]).is_some())
    });
    assert_eq!(found, 0, "absent ids are not found");
    let mut ids: Vec<u64> = (1..=n as u64).collect();
    ids.shuffle(&mut rng);
    let (gone, kept) = ids.split_at(n / 2);
    timed("remove half of them, at random", gone.len(), |i| slots.remove(&mut index, gone[i]));
    timed("look up ids held, at random", probes, |i| {
        found += usize::from(index.get(kept[i], |s| slots.ids[s as usize]).is_some())
    });
    timed("look up removed ids (absent, in the range)", probes, |i| {
        found += usize::from(index.get(gone[i], |s| slots.ids[s as usize]).is_some())
    });
    timed("look up ids never held (absent, anywhere)", probes, |i| {
        found += usize::from(index.get(beyond[i], |s| slots.ids[s as usize]).is_some())
    });
    assert_eq!(found, probes, "only the held ids are found");
    // Churn: new orders in sequence, each cancel taking the oldest of a window of live ones.
    let window = (n / 4).max(1);
    let mut live = std::collections::VecDeque::new();
    let mut next = n as u64 + 1;
    for &id in kept {
        slots.remove(&mut index, id);
    }
    timed("churn: a new order and a cancel, n/4 live", churn, |_| {
        slots.insert(&mut index, next);
        live.push_back(next);
        next += 1;
        if live.len() > window {
            let old = live.pop_front().unwrap();
            slots.remove(&mut index, old);
        }
    });
    let absent: Vec<u64> = (0..probes).map(|_| rng.gen_range(1..next - window as u64)).collect();
    timed("after churn: look up cancelled ids", probes, |i| {
        found += usize::from(index.get(absent[i], |s| slots.ids[s as usize]).is_some())
    });
    println!("{} entries at the end", index.len());
}
