//! The reply stage: at the end of each batch, once the journal has made it durable, hands every
//! reply (encoded as JSON or as binary reports) and every fill of a watched user to its client,
//! and feeds market data and the history writer with the batch's deals and rows.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use viaduct_edges::binary::{maker_fills, reports, ServerMsg};
use viaduct_edges::{Notify, Payload};
use viaduct_matcher::event::Deal;
use viaduct_matcher::reply::Encoding;
use viaduct_matcher::{response_json, Events, Spec};
use viaduct_publishers::history::leaves_rows;
use viaduct_publishers::service::MarketService;
use viaduct_ring::OutSlot;

use crate::client::Response;
use crate::replies::{Refusal, ReplyQueue};

/// Fills a client may have waiting beyond its in-flight replies; past it fills are dropped and the
/// client is told ([`viaduct_edges::Payload::FillsLost`]).
pub const FILLS_QUEUE_MAX: usize = 16_384;

/// Where the reply stage sends one client's replies.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) queue: Arc<ReplyQueue>,
    pub(crate) notify: Option<Notify>,
    pub(crate) fills_lost: Arc<AtomicBool>,
}

pub(crate) type Registry = Mutex<HashMap<u32, Sink>>;

/// Which clients want the fills of which users' resting orders.
#[derive(Default)]
pub(crate) struct Watch {
    pub(crate) users: Mutex<HashMap<u32, Vec<u32>>>,
    /// Bumped on every change, so the reply stage re-reads `users` only then.
    pub(crate) version: AtomicU64,
}

/// Encodes each reply, and each fill of a watched user's resting order for the clients watching;
/// at the end of a batch (after the journal's commit, whichever thread this runs on) hands them
/// to their clients and wakes the clients that asked to be woken.
pub(crate) fn reply_stage(
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    watch: Arc<Watch>,
    market: &MarketService,
    history: Option<Sender<(u64, Events)>>,
) -> impl FnMut(&OutSlot, bool) + Send + 'static {
    let mut out = Delivery { spec, registry, clients: HashMap::new(), held: Vec::new(), woken: Vec::new() };
    let mut watched: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut watch_version = 0;
    let mut fills: Vec<(u32, ServerMsg)> = Vec::new();
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
        if slot.client != 0 {
            out.reply(slot);
        }
        let version = watch.version.load(Ordering::Acquire);
        if version != watch_version {
            watched = watch.users.lock().expect("watch lock").clone();
            watch_version = version;
        }
        if !watched.is_empty() && !slot.events.deals().is_empty() {
            fills.clear();
            maker_fills(&out.spec, &slot.events, |user| watched.contains_key(&user), &mut fills);
            for (user, msg) in fills.drain(..) {
                for &client in watched.get(&user).into_iter().flatten() {
                    out.fill(client, user, msg);
                }
            }
        }
        if end_of_batch {
            // Deals go to market data once per batch; a query waits until the batch of the
            // replies its client had is sent (`Query::min_seq`).
            out.release();
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
    spec: Arc<Spec>,
    registry: Arc<Registry>,
    clients: HashMap<u32, Sink>,
    /// Replies and fills of this batch, released at its end: at most a batch's worth (the
    /// output ring's slots and their fills).
    held: Vec<(u32, Response)>,
    woken: Vec<u32>,
}

impl Delivery {
    fn sink(&mut self, client: u32) -> Option<&Sink> {
        match self.clients.entry(client) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(v) => {
                let found = self.registry.lock().expect("registry lock").get(&client)?.clone();
                Some(v.insert(found))
            }
        }
    }

    fn reply(&mut self, slot: &OutSlot) {
        let body = match slot.encoding {
            Encoding::Binary => {
                let mut out = Vec::new();
                reports(&self.spec, &slot.cmd, &slot.outcome, &slot.events, &mut out);
                Payload::Reports(out)
            }
            Encoding::Json => Payload::Json(response_json(&self.spec, slot.request_id, &slot.outcome, &slot.events)),
        };
        let response = Response { tag: slot.tag, request_id: slot.request_id, journal_seq: slot.journal_seq, body };
        self.send(slot.client, response);
    }

    fn fill(&mut self, client: u32, user: u32, msg: ServerMsg) {
        let body = Payload::Fills { user, reports: vec![msg] };
        self.send(client, Response { tag: 0, request_id: 0, journal_seq: 0, body });
    }

    fn send(&mut self, client: u32, response: Response) {
        self.held.push((client, response));
    }

    /// Hands every held reply and fill to its client: each run of one client's responses under
    /// one lock of its queue.
    fn release(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        let mut rest = held.drain(..).peekable();
        while let Some((client, first)) = rest.next() {
            let run = std::iter::once(first)
                .chain(std::iter::from_fn(|| rest.next_if(|(c, _)| *c == client).map(|(_, r)| r)));
            self.deliver(client, run);
        }
        drop(rest);
        self.held = held;
    }

    fn deliver(&mut self, client: u32, run: impl Iterator<Item = Response>) {
        let Some(sink) = self.sink(client) else {
            run.for_each(drop); // the client is gone
            return;
        };
        let (mut gone, mut lost) = (false, false);
        let pushed = sink.queue.push_all(run, |response, why| match why {
            Refusal::Gone => gone = true,
            Refusal::Full if !response.answers_a_request() => lost = true,
            Refusal::Full => {
                tracing::warn!("replies: client {client} holds more replies than it may have in flight; dropped one")
            }
        });
        if lost {
            sink.fills_lost.store(true, Ordering::Release);
        }
        if (pushed > 0 || lost) && sink.notify.is_some() && !self.woken.contains(&client) {
            self.woken.push(client);
        }
        if gone {
            self.clients.remove(&client);
        }
    }

    fn wake(&mut self) {
        for id in self.woken.drain(..) {
            if let Some(Sink { notify: Some(notify), .. }) = self.clients.get(&id) {
                notify();
            }
        }
    }
}
