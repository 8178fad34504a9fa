//! The reply stage: copies each reply, and each command with deals of a watched user's resting
//! orders, onto its client's reply ring (`replies.rs`), marked with the journal sequence that
//! releases it; at the end of each batch, once the journal has made it durable, wakes the
//! clients, and feeds market data and the history writer with the batch's deals and rows. It
//! encodes nothing: each client encodes on its own thread.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use viaduct_matcher::book::IdMap;

use crossbeam_channel::Sender;
use viaduct_matcher::event::{Deal, EventRef};
use viaduct_matcher::order::Side;
use viaduct_matcher::{Command, Events};
use viaduct_publishers::history::leaves_rows;
use viaduct_publishers::service::MarketService;
use viaduct_ring::OutSlot;

use crate::replies::{Kind, Outbox, Refusal};

/// The clients the reply stage sends to: a client's outbox waits here until the stage first
/// meets the client (a lock taken once per client, not per reply).
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) arrivals: Mutex<HashMap<u32, Outbox>>,
    /// Bumped when a client goes: the reply stage then drops the outboxes of gone clients.
    pub(crate) departures: AtomicU64,
}

/// Which clients want the deals of which users' resting orders (`users`), and which want every
/// command that touched which users (`followed`).
#[derive(Default)]
pub(crate) struct Watch {
    pub(crate) users: Mutex<HashMap<u32, Vec<u32>>>,
    pub(crate) followed: Mutex<HashMap<u32, Vec<u32>>>,
    /// Bumped on every change, so the reply stage re-reads `users` only then.
    pub(crate) version: AtomicU64,
}

/// Stages each reply, and each command with deals of a watched user's resting order for the
/// clients watching; at the end of a batch (after the journal's commit, whichever thread this
/// runs on) publishes them to their clients and wakes them.
pub(crate) fn reply_stage(
    registry: Arc<Registry>,
    watch: Arc<Watch>,
    market: &MarketService,
    history: Option<Sender<(u64, Events)>>,
) -> impl FnMut(&OutSlot, bool) + Send + 'static {
    let mut out = Delivery { registry, clients: IdMap::default(), departures: 0, release_at: 0, woken: Vec::new() };
    // Looked up per deal and per reply: a multiplicative hash of the id, not SipHash (which took
    // a tenth of the matcher's thread at the binary edge's maximum).
    let mut watched: IdMap<u32, Vec<u32>> = IdMap::default();
    let mut followed: IdMap<u32, Vec<u32>> = IdMap::default();
    let mut watch_version = 0;
    let (mut watchers, mut followers): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let mut deals: Vec<Deal> = Vec::new();
    // Events of journaled commands that leave history rows: copied here, turned into rows on its
    // thread.
    let (mut journaled, mut journaled_seq) = (Events::default(), 0u64);
    let (market, market_queued, market_sent) = (market.feed(), market.queued(), market.sent_seq());
    // Neither feed ever waits: each consumer's lag is bounded where requests come in
    // (`backpressure::Admission`), not here.
    let feed = move |seq: u64, deals: &mut Vec<Deal>| {
        if deals.is_empty() {
            return;
        }
        market_queued.store(seq, Ordering::Release);
        if market.send((seq, std::mem::take(deals))).is_err() {
            deals.clear(); // the market data thread is gone (shutting down)
        }
    };
    let mut batch_seq = 0u64;
    move |slot, end_of_batch| {
        deals.extend_from_slice(slot.events.deals());
        batch_seq = batch_seq.max(slot.journal_seq);
        if history.is_some() && slot.journal_seq != 0 {
            journaled.append_where(&slot.events, leaves_rows);
            journaled_seq = slot.journal_seq;
        }
        out.release_at = out.release_at.max(slot.journal_seq);
        if slot.client != 0 {
            out.publish(slot.client, Kind::Outcome, slot);
        }
        let version = watch.version.load(Ordering::Acquire);
        if version != watch_version {
            watched = watch.users.lock().expect("watch lock").iter().map(|(u, c)| (*u, c.clone())).collect();
            followed = watch.followed.lock().expect("watch lock").iter().map(|(u, c)| (*u, c.clone())).collect();
            watch_version = version;
        }
        followers.clear();
        if !followed.is_empty() {
            for e in slot.events.iter() {
                let user = match e {
                    EventRef::Order(_, o) => o.user,
                    EventRef::Balance(b) => b.user,
                    EventRef::Deal(_) | EventRef::Level(_) => continue,
                };
                followers.extend(followed.get(&user).into_iter().flatten());
            }
            followers.sort_unstable();
            followers.dedup();
            for &client in &followers {
                out.publish(client, Kind::Activity, slot);
            }
        }
        let new_order = matches!(slot.cmd, Command::PutLimit(_) | Command::PutMarket(_));
        if !watched.is_empty() && new_order {
            watchers.clear();
            for d in slot.events.deals() {
                let maker = if d.taker_side == Side::Ask { d.bid_user } else { d.ask_user };
                watchers.extend(watched.get(&maker).into_iter().flatten());
            }
            for o in slot.events.self_trade_cancels() {
                watchers.extend(watched.get(&o.user).into_iter().flatten());
            }
            watchers.sort_unstable();
            watchers.dedup();
            // A follower has the deals in its copy already.
            watchers.retain(|c| followers.binary_search(c).is_err());
            for &client in &watchers {
                out.publish(client, Kind::Deals, slot);
            }
        }
        if end_of_batch {
            // Deals go to market data once per batch; a query waits until the batch of the
            // replies its client had is sent (`Query::min_seq`).
            out.forget_departed();
            feed(batch_seq, &mut deals);
            market_sent.fetch_max(batch_seq, Ordering::AcqRel);
            out.wake();
            if let (Some(tx), true) = (&history, journaled_seq != 0) {
                let batch = (journaled_seq, std::mem::take(&mut journaled));
                journaled_seq = 0;
                let _ = tx.send(batch); // an error: the writer is gone (shutting down)
            }
        }
    }
}

/// The reply stage's view of the clients.
struct Delivery {
    registry: Arc<Registry>,
    clients: IdMap<u32, Outbox>,
    /// `registry.departures` when gone clients were last dropped.
    departures: u64,
    /// The highest journal sequence seen: what must be durable before the next slot is released.
    release_at: u64,
    /// Clients sent something in this batch, woken at its end.
    woken: Vec<u32>,
}

impl Delivery {
    /// Puts `out`'s outcome (or deals) on `client`'s ring.
    fn publish(&mut self, client: u32, kind: Kind, out: &OutSlot) {
        let outbox = match self.clients.entry(client) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let Some(found) = self.registry.arrivals.lock().expect("registry lock").remove(&client) else {
                    return; // the client is gone
                };
                v.insert(found)
            }
        };
        match outbox.publish(kind, out, self.release_at, out.client == client) {
            Ok(()) => {}
            Err(Refusal::Gone) => {
                self.clients.remove(&client);
                return;
            }
            // Its deals were dropped: woken, it learns so.
            Err(Refusal::Full) if kind != Kind::Outcome => {}
            Err(Refusal::Full) => {
                tracing::warn!("replies: client {client} holds more replies than it may have in flight; dropped one");
                return;
            }
        }
        if !self.woken.contains(&client) {
            self.woken.push(client);
        }
    }

    /// Drops the outboxes of clients that went since the last time.
    fn forget_departed(&mut self) {
        let departures = self.registry.departures.load(Ordering::Acquire);
        if departures != self.departures {
            self.departures = departures;
            self.clients.retain(|_, outbox| !outbox.is_gone());
        }
    }

    fn wake(&mut self) {
        for id in self.woken.drain(..) {
            if let Some(outbox) = self.clients.get(&id) {
                outbox.notify();
            }
        }
    }
}
