//! Each client's reply path: a ring of typed outcomes with one producer, the reply stage, and one
//! consumer, the client (an edge's event loop, the console, a test). The reply stage copies a
//! command's outcome into a slot as the command passes (no allocation once the slot is warm),
//! marked with the journal sequence that must be durable before it may be
//! released; the client hands on only what the durable sequence has reached, and encodes it
//! (JSON, binary reports, maker fills) on its own thread. No lock on the way: the producer writes
//! a slot, then publishes its sequence; the consumer reads up to the published sequence.
//!
//! The rings carry pointers to boxed slots, and the client gives each slot back on a second ring
//! once it has handed it on; the reply stage reuses the slots it got back last first. So the
//! memory one client's replies touch is about what it has in flight, not the ring's whole bound
//! (`inflight_max` + [`DEALS_WAITING_MAX`] slots, several MiB): a ring of slots, written one
//! after another, met every slot cold, a cache miss per reply on the matcher's thread.
//!
//! (A first version staged each batch's outcomes on the producer's side and published them after
//! the commit: a second copy of every outcome, on the matcher's thread, which cost the binary
//! order entry a fifth of its rate. A consumer that finds outcomes not yet durable, an edge on a
//! thread of its own polling in the middle of a batch, keeps them aside instead.)
//!
//! (A multi-producer lock-free channel was tried before and dropped: a receiver finding a slot a
//! sender had claimed but not yet filled spun until the sender, often preempted on two cores,
//! finished. A single producer publishes only filled slots, so the consumer never waits on it.)
//!
//! Answers to queries (market data, history) are made on their owners' threads and arrive on a
//! bounded channel of their own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::atomic::AtomicCell;
use crossbeam_utils::sync::Parker;
use disruptor::{EventPoller, Producer, SingleConsumerBarrier, SingleProducer, SingleProducerBarrier};
use viaduct_edges::{Delivered, Notify};
use viaduct_matcher::{Command, Events, Reply, RpcError, Spec};
use viaduct_ring::OutSlot;

/// Commands with deals for a client's watched users, or touching its followed users, that it may
/// have waiting beyond its in-flight replies; past it they are dropped and the client is told
/// ([`Delivered::FillsLost`]).
pub const DEALS_WAITING_MAX: u64 = 4096;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The outcome of one of the client's commands.
    Outcome,
    /// A command in which a user the client watches traded as maker.
    Deals,
    /// A command that touched a user the client follows: all its events, balance changes too.
    Activity,
}

/// An element of a reply ring, and of the ring that gives slots back: a slot on its way. The
/// producer puts it in (through `&mut`), the consumer takes it out (through the `&` a ring's
/// consumer gets): one word, moved with an atomic swap.
#[derive(Default)]
pub(crate) struct Parcel(AtomicCell<Option<Box<Slot>>>);

// A pointer-sized cell is a native atomic; were it not, crossbeam would take a global lock for
// each reply.
const _: () = assert!(AtomicCell::<Option<Box<Slot>>>::is_lock_free());

/// One slot of a reply ring: a command's outcome, typed, with its events.
pub(crate) struct Slot {
    pub(crate) kind: Kind,
    /// The client this goes to submitted the command (an activity slot of its own command).
    pub(crate) own: bool,
    /// The journal sequence that must be durable before this may be handed on: the highest
    /// sequence the reply stage had seen when it wrote the slot (a query after a write in the
    /// same batch waits for the write).
    pub(crate) release_at: u64,
    pub(crate) tag: u64,
    pub(crate) request_id: i64,
    pub(crate) journal_seq: u64,
    pub(crate) cmd: Command,
    pub(crate) result: Result<Reply, RpcError>,
    pub(crate) events: Events,
}

impl Slot {
    pub(crate) fn empty() -> Slot {
        Slot {
            kind: Kind::Outcome,
            own: false,
            release_at: 0,
            tag: 0,
            request_id: 0,
            journal_seq: 0,
            cmd: Command::AssetList,
            result: Err(RpcError::Internal),
            // Empty until first used: a slot allocates on its first use, then keeps its capacity.
            events: Events::default(),
        }
    }

    /// Makes this slot a copy of `out` (its outcome, its deals or all it did), in the capacity it
    /// has; `own`: the client this goes to submitted it.
    pub(crate) fn copy_from(&mut self, kind: Kind, out: &OutSlot, release_at: u64, own: bool) {
        self.kind = kind;
        self.own = own;
        self.release_at = release_at;
        self.tag = out.tag;
        self.request_id = out.request_id;
        self.journal_seq = out.journal_seq;
        // Deals need the command (what kind of order it was) and the events alone.
        self.cmd.clone_from(&out.cmd);
        if kind != Kind::Deals {
            self.result.clone_from(&out.outcome);
        }
        if kind == Kind::Activity {
            self.events.copy_from(&out.events);
        } else {
            // The order events and deals: what the clients encode from (the balance and level
            // changes, which no reply shows, are not copied).
            self.events.copy_trades_from(&out.events);
        }
    }

    fn delivered(&self) -> Delivered<'_> {
        match self.kind {
            Kind::Outcome => Delivered::Outcome {
                tag: self.tag,
                request_id: self.request_id,
                journal_seq: self.journal_seq,
                cmd: &self.cmd,
                result: &self.result,
                events: &self.events,
            },
            Kind::Deals => Delivered::Deals { cmd: &self.cmd, events: &self.events },
            Kind::Activity => {
                Delivered::Activity { own: self.own, cmd: &self.cmd, result: &self.result, events: &self.events }
            }
        }
    }
}

/// A query's JSON answer: (tag, request id, JSON).
pub(crate) type Answer = (u64, i64, String);

/// The reply stage's end of one client's reply path.
pub(crate) struct Outbox {
    ring: SingleProducer<Parcel, SingleConsumerBarrier>,
    /// Slots the client gave back, and those taken from there, reused last in first out.
    back: EventPoller<Parcel, SingleProducerBarrier>,
    // Boxed: a slot moves through the rings as a pointer, in and out of this list.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Slot>>,
    notify: Notify,
    /// Set when the client is dropped: its ring has no reader any more.
    gone: Arc<AtomicBool>,
    fills_lost: Arc<AtomicBool>,
    deals_sent: u64,
    deals_taken: Arc<AtomicU64>,
}

/// Why a slot was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The ring is full: more replies than the client may have in flight, or its deals past
    /// [`DEALS_WAITING_MAX`].
    Full,
    /// The client is gone.
    Gone,
}

impl Outbox {
    /// Publishes a copy of `out`'s outcome (or deals) in the ring's next slot, to be handed on
    /// once `release_at` is durable.
    pub(crate) fn publish(&mut self, kind: Kind, out: &OutSlot, release_at: u64, own: bool) -> Result<(), Refusal> {
        if self.gone.load(Ordering::Acquire) {
            return Err(Refusal::Gone);
        }
        let deals = kind != Kind::Outcome;
        if deals && self.deals_sent - self.deals_taken.load(Ordering::Acquire) >= DEALS_WAITING_MAX {
            self.fills_lost.store(true, Ordering::Release);
            return Err(Refusal::Full);
        }
        let mut slot = self.fresh();
        slot.copy_from(kind, out, release_at, own);
        let mut parcel = Some(slot);
        let published = self.ring.try_publish(|p| p.0.store(parcel.take()));
        if let Some(slot) = parcel {
            self.spare.push(slot); // not published: the ring is full
        }
        published.map_err(|_| Refusal::Full)?;
        self.deals_sent += u64::from(deals);
        Ok(())
    }

    /// A slot to fill: the one given back last, else a new one (at most as many as the two
    /// rings and the client's early slots hold: each is bounded).
    fn fresh(&mut self) -> Box<Slot> {
        if self.spare.is_empty() {
            if let Ok(mut back) = self.back.poll() {
                self.spare.extend((&mut back).filter_map(|p| p.0.take()));
            }
        }
        self.spare.pop().unwrap_or_else(|| Box::new(Slot::empty()))
    }

    /// Wakes the client.
    pub(crate) fn notify(&self) {
        (self.notify)()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

/// Where a query's owner puts its answer for one client.
#[derive(Clone)]
pub(crate) struct AnswerSink {
    tx: Sender<Answer>,
    notify: Notify,
}

impl AnswerSink {
    pub(crate) fn answer(&self, tag: u64, request_id: i64, json: String) {
        match self.tx.try_send((tag, request_id, json)) {
            Ok(()) => (self.notify)(),
            // The client's in-flight bound keeps this from filling.
            Err(TrySendError::Full(_)) => {
                tracing::warn!("replies: a client holds more answers than it may have in flight; dropped one")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Error codes a command is counted under: 0 for success, ViaBTC's codes, the last for any
/// larger one.
pub const CODES: usize = 16;

/// The commands a client was answered, by name ([`viaduct_protocol::COMMAND_NAMES`]) and error
/// code (0: success). One writer, the client's thread; the metrics sum every client's.
#[derive(Debug)]
pub struct CommandCounts {
    counts: Vec<[AtomicU64; CODES]>,
}

impl Default for CommandCounts {
    fn default() -> CommandCounts {
        let row = || std::array::from_fn(|_| AtomicU64::new(0));
        CommandCounts { counts: (0..viaduct_protocol::COMMAND_NAMES.len()).map(|_| row()).collect() }
    }
}

impl CommandCounts {
    fn count(&self, cmd: &Command, result: &Result<Reply, RpcError>) {
        let code = match result {
            Ok(_) => 0,
            Err(e) => usize::try_from(e.code()).map_or(CODES - 1, |c| c.min(CODES - 1)),
        };
        // One writer: a load and a store, not a locked add.
        let n = &self.counts[viaduct_protocol::command_index(cmd)][code];
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds this client's counts to `into` (names × codes).
    fn add_to(&self, into: &mut [[u64; CODES]]) {
        for (row, counts) in into.iter_mut().zip(&self.counts) {
            for (n, c) in row.iter_mut().zip(counts) {
                *n += c.load(Ordering::Relaxed);
            }
        }
    }
}

/// Every client's [`CommandCounts`]: the live clients', and the totals of those gone (folded in
/// when the next client registers, so the list holds only live clients).
#[derive(Debug, Default)]
pub struct AnsweredCounts {
    gone: Vec<[u64; CODES]>,
    live: Vec<Arc<CommandCounts>>,
}

impl AnsweredCounts {
    /// The counts for a new client.
    pub fn register(&mut self) -> Arc<CommandCounts> {
        let gone = &mut self.gone;
        if gone.is_empty() {
            gone.resize(viaduct_protocol::COMMAND_NAMES.len(), [0; CODES]);
        }
        self.live.retain(|c| {
            Arc::strong_count(c) > 1 || {
                c.add_to(gone);
                false
            }
        });
        let counts: Arc<CommandCounts> = Arc::default();
        self.live.push(Arc::clone(&counts));
        counts
    }

    /// Commands answered so far, by name and code, over every client there was.
    pub fn totals(&self) -> Vec<[u64; CODES]> {
        let mut totals = vec![[0u64; CODES]; viaduct_protocol::COMMAND_NAMES.len()];
        for (t, g) in totals.iter_mut().zip(&self.gone) {
            *t = *g;
        }
        for c in &self.live {
            c.add_to(&mut totals);
        }
        totals
    }
}

/// What [`Inbox::receive`] handed on.
struct Tally<'a> {
    counts: &'a CommandCounts,
    handed: usize,
    answered: usize,
    deals: u64,
}

impl Tally<'_> {
    fn hand(&mut self, spec: &Spec, slot: &Slot, each: &mut dyn FnMut(&Spec, Delivered<'_>)) {
        match slot.kind {
            Kind::Outcome => {
                self.answered += 1;
                self.counts.count(&slot.cmd, &slot.result);
            }
            Kind::Deals | Kind::Activity => self.deals += 1,
        }
        self.handed += 1;
        each(spec, slot.delivered());
    }
}

/// The client's end of its reply path.
pub(crate) struct Inbox {
    ring: EventPoller<Parcel, SingleProducerBarrier>,
    /// Where slots go back to the reply stage once handed on.
    back: SingleProducer<Parcel, SingleConsumerBarrier>,
    /// The journal's durable sequence: what releases a slot.
    durable: Arc<AtomicU64>,
    /// Slots taken from the ring before they were durable, in order.
    early: VecDeque<Box<Slot>>,
    answers: Receiver<Answer>,
    deals_taken: Arc<AtomicU64>,
    fills_lost: Arc<AtomicBool>,
    gone: Arc<AtomicBool>,
    /// Unparked by the client's [`Notify`] when it has no event loop of its own.
    parker: Parker,
    /// What this client was answered, for the metrics.
    counts: Arc<CommandCounts>,
}

/// A new reply path: a ring of `slots` (rounded up to a power of two), released by `durable`, and
/// an answer channel of `answers_max`. A client without an event loop (`notify` None) is woken
/// through a parker.
pub(crate) fn reply_path(
    slots: usize,
    answers_max: usize,
    durable: Arc<AtomicU64>,
    notify: Option<Notify>,
    counts: Arc<CommandCounts>,
) -> (Outbox, AnswerSink, Inbox) {
    let parker = Parker::new();
    let notify = notify.unwrap_or_else(|| {
        let unparker = parker.unparker().clone();
        Arc::new(move || unparker.unpark())
    });
    let n = slots.next_power_of_two();
    let (poller, builder) =
        disruptor::build_single_producer(n, Parcel::default, disruptor::BusySpin).new_event_poller();
    let (back_poller, back) =
        disruptor::build_single_producer(n, Parcel::default, disruptor::BusySpin).new_event_poller();
    let (tx, answers) = crossbeam_channel::bounded(answers_max);
    let (gone, fills_lost, deals_taken) = (Arc::default(), Arc::<AtomicBool>::default(), Arc::<AtomicU64>::default());
    let outbox = Outbox {
        ring: builder.build(),
        back: back_poller,
        spare: Vec::new(),
        notify: Arc::clone(&notify),
        gone: Arc::clone(&gone),
        fills_lost: Arc::clone(&fills_lost),
        deals_sent: 0,
        deals_taken: Arc::clone(&deals_taken),
    };
    let (back, early) = (back.build(), VecDeque::new());
    let inbox = Inbox { ring: poller, back, durable, early, answers, deals_taken, fills_lost, gone, parker, counts };
    (outbox, AnswerSink { tx, notify }, inbox)
}

impl Inbox {
    /// Hands `each` what is durable, at most `max`: the ring's outcomes and deals in order (those
    /// not yet durable are kept, in order, for a later call), then the answers, then
    /// [`Delivered::FillsLost`] if deals were dropped. Returns how many were handed on and how
    /// many of them answered requests.
    pub(crate) fn receive(
        &mut self,
        spec: &Spec,
        max: usize,
        each: &mut dyn FnMut(&Spec, Delivered<'_>),
    ) -> (usize, usize) {
        let durable = self.durable.load(Ordering::Acquire);
        let mut tally = Tally { counts: &self.counts, handed: 0, answered: 0, deals: 0 };
        while tally.handed < max && self.early.front().is_some_and(|s| s.release_at <= durable) {
            let slot = self.early.pop_front().expect("a front");
            tally.hand(spec, &slot, each);
            give_back(&mut self.back, slot);
        }
        if tally.handed < max {
            if let Ok(mut batch) = self.ring.take((max - tally.handed) as u64) {
                for slot in (&mut batch).filter_map(|p| p.0.take()) {
                    if self.early.is_empty() && slot.release_at <= durable {
                        tally.hand(spec, &slot, each);
                        give_back(&mut self.back, slot);
                    } else {
                        self.early.push_back(slot);
                    }
                }
            }
        }
        let Tally { mut handed, mut answered, deals, .. } = tally;
        if deals > 0 {
            self.deals_taken.fetch_add(deals, Ordering::AcqRel);
        }
        while handed < max {
            let Ok((tag, request_id, json)) = self.answers.try_recv() else { break };
            answered += 1;
            handed += 1;
            each(spec, Delivered::Answer { tag, request_id, json });
        }
        if self.fills_lost.load(Ordering::Relaxed) && self.fills_lost.swap(false, Ordering::AcqRel) {
            each(spec, Delivered::FillsLost);
        }
        (handed, answered)
    }

    /// Whether nothing is waiting (durable or not).
    pub(crate) fn is_empty(&self) -> bool {
        self.early.is_empty() && !self.ring.has_available() && self.answers.is_empty()
    }

    /// Waits until woken (a publish, an answer) or a spurious wake-up; callers check again.
    pub(crate) fn park(&self) {
        self.parker.park();
    }
}

/// Gives a handed-on slot back to the reply stage for reuse (dropped if the way back is full).
fn give_back(back: &mut SingleProducer<Parcel, SingleConsumerBarrier>, slot: Box<Slot>) {
    let mut parcel = Some(slot);
    let _ = back.try_publish(|p| p.0.store(parcel.take()));
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use viaduct_matcher::config::embedded;

    fn out(tag: u64) -> OutSlot {
        OutSlot {
            client: 1,
            tag,
            request_id: tag as i64,
            time_us: 0,
            cmd: Command::AssetList,
            journal_seq: tag,
            digest: 0,
            outcome: Ok(Reply::Success),
            events: Events::default(),
        }
    }

    /// A reply path whose durable sequence is already far ahead.
    fn path(slots: usize, answers: usize) -> (Outbox, AnswerSink, Inbox) {
        reply_path(slots, answers, Arc::new(AtomicU64::new(u64::MAX)), None, Arc::default())
    }

    fn publish(outbox: &mut Outbox, kind: Kind, tag: u64) -> Result<(), Refusal> {
        outbox.publish(kind, &out(tag), tag, false)
    }

    /// What `receive` hands over, as (what, tag) pairs, and how many answered requests.
    fn received(inbox: &mut Inbox, spec: &Spec) -> (Vec<(&'static str, u64)>, usize) {
        let mut got = Vec::new();
        let (_, answered) = inbox.receive(spec, usize::MAX, &mut |_, d| {
            got.push(match d {
                Delivered::Outcome { tag, journal_seq, .. } => {
                    assert_eq!(tag, journal_seq);
                    ("outcome", tag)
                }
                Delivered::Answer { tag, .. } => ("answer", tag),
                Delivered::Deals { .. } => ("deals", 0),
                Delivered::Activity { .. } => ("activity", 0),
                Delivered::FillsLost => ("lost", 0),
            })
        });
        (got, answered)
    }

    #[test]
    fn outcomes_and_answers_come_out_in_order_and_count_as_answered() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, answers, mut inbox) = path(8, 8);
        assert!(inbox.is_empty());
        for tag in 1..=3 {
            publish(&mut outbox, Kind::Outcome, tag).unwrap();
        }
        publish(&mut outbox, Kind::Deals, 0).unwrap();
        answers.answer(7, 70, "{}".into());
        assert!(!inbox.is_empty());
        let (got, answered) = received(&mut inbox, &spec);
        assert_eq!(got, [("outcome", 1), ("outcome", 2), ("outcome", 3), ("deals", 0), ("answer", 7)]);
        assert_eq!(answered, 4, "deals answer no request");
        assert!(inbox.is_empty());
    }

    #[test]
    fn nothing_is_handed_on_before_the_journal_made_it_durable_and_order_is_kept() {
        let spec = Spec::new(&embedded()).unwrap();
        let durable = Arc::new(AtomicU64::new(1));
        let (mut outbox, _answers, mut inbox) = reply_path(8, 8, Arc::clone(&durable), None, Arc::default());
        publish(&mut outbox, Kind::Outcome, 1).unwrap();
        publish(&mut outbox, Kind::Outcome, 3).unwrap();
        // A reply released by an earlier sequence, behind one that is not durable yet, waits.
        outbox.publish(Kind::Outcome, &out(2), 2, true).unwrap();
        assert_eq!(received(&mut inbox, &spec).0, [("outcome", 1)]);
        assert!(!inbox.is_empty());
        durable.store(2, Ordering::Release);
        assert_eq!(received(&mut inbox, &spec).0, [], "2 waits behind 3");
        durable.store(3, Ordering::Release);
        publish(&mut outbox, Kind::Outcome, 4).unwrap();
        assert_eq!(received(&mut inbox, &spec).0, [("outcome", 3), ("outcome", 2)]);
        durable.store(4, Ordering::Release);
        assert_eq!(received(&mut inbox, &spec).0, [("outcome", 4)]);
        assert!(inbox.is_empty());
    }

    #[test]
    fn deals_past_their_bound_are_dropped_and_the_client_told_while_replies_still_fit() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, _answers, mut inbox) = path(4 + DEALS_WAITING_MAX as usize, 4);
        for _ in 0..DEALS_WAITING_MAX {
            publish(&mut outbox, Kind::Deals, 0).unwrap();
        }
        assert_eq!(publish(&mut outbox, Kind::Deals, 0), Err(Refusal::Full));
        for tag in 1..=4 {
            publish(&mut outbox, Kind::Outcome, tag).unwrap();
        }
        let (got, answered) = received(&mut inbox, &spec);
        assert_eq!(got.len() as u64, DEALS_WAITING_MAX + 4 + 1);
        assert_eq!(got[got.len() - 5..], [("outcome", 1), ("outcome", 2), ("outcome", 3), ("outcome", 4), ("lost", 0)]);
        assert_eq!(answered, 4);
        // Taken deals free their places; the loss is told once.
        publish(&mut outbox, Kind::Deals, 0).unwrap();
        assert_eq!(received(&mut inbox, &spec).0, [("deals", 0)]);
    }

    /// A slot the client has handed on goes back to the reply stage, which fills it again
    /// before it makes a new one: the memory replies touch is what is in flight.
    #[test]
    fn a_slot_handed_on_is_the_next_one_filled() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, _answers, mut inbox) = path(8, 8);
        publish(&mut outbox, Kind::Outcome, 1).unwrap();
        let mut seen = 0usize;
        inbox.receive(&spec, usize::MAX, &mut |_, d| {
            if let Delivered::Outcome { cmd, .. } = d {
                seen = cmd as *const Command as usize;
            }
        });
        assert_ne!(seen, 0);
        let next = outbox.fresh();
        assert_eq!(&next.cmd as *const Command as usize, seen, "the slot given back is reused");
        // With none given back, a new one.
        let other = outbox.fresh();
        assert_ne!(&other.cmd as *const Command as usize, seen);
    }

    #[test]
    fn with_the_client_gone_publishing_is_refused_as_gone() {
        let (mut outbox, _answers, inbox) = path(8, 8);
        publish(&mut outbox, Kind::Outcome, 1).unwrap();
        assert!(!outbox.is_gone());
        drop(inbox);
        assert!(outbox.is_gone());
        assert_eq!(publish(&mut outbox, Kind::Outcome, 2), Err(Refusal::Gone));
    }

    #[test]
    fn a_full_ring_refuses_until_the_client_takes_what_it_holds() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, _answers, mut inbox) = path(2, 2);
        publish(&mut outbox, Kind::Outcome, 1).unwrap();
        publish(&mut outbox, Kind::Outcome, 2).unwrap();
        assert_eq!(publish(&mut outbox, Kind::Outcome, 3), Err(Refusal::Full));
        assert_eq!(received(&mut inbox, &spec).0, [("outcome", 1), ("outcome", 2)]);
        publish(&mut outbox, Kind::Outcome, 3).unwrap();
        assert_eq!(received(&mut inbox, &spec).0, [("outcome", 3)]);
    }

    #[test]
    fn a_receiver_waiting_without_an_event_loop_wakes_for_a_publish_from_another_thread() {
        let spec = Arc::new(Spec::new(&embedded()).unwrap());
        let (mut outbox, _answers, mut inbox) = path(8, 8);
        let waiting = Arc::new(AtomicBool::new(false));
        let (flag, spec2) = (Arc::clone(&waiting), Arc::clone(&spec));
        let receiver = std::thread::spawn(move || {
            flag.store(true, Ordering::Release);
            let mut tag = None;
            while tag.is_none() {
                inbox.receive(&spec2, usize::MAX, &mut |_, d| {
                    if let Delivered::Outcome { tag: t, .. } = d {
                        tag = Some(t);
                    }
                });
                if tag.is_none() {
                    inbox.park();
                }
            }
            tag
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiting.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the receiver never started");
            std::thread::yield_now();
        }
        publish(&mut outbox, Kind::Outcome, 5).unwrap();
        outbox.notify();
        assert_eq!(receiver.join().unwrap(), Some(5));
    }
}

#[cfg(test)]
mod answered_tests {
    use super::*;

    /// A gone client's counts stay in the totals, and only live clients are kept in the list.
    #[test]
    fn counts_of_gone_clients_stay_in_the_totals_without_keeping_them() {
        let mut all = AnsweredCounts::default();
        let first = all.register();
        first.count(&Command::AssetList, &Ok(Reply::Success));
        drop(first);
        let second = all.register();
        second.count(&Command::AssetList, &Err(RpcError::InvalidArgument));
        assert_eq!(all.live.len(), 1, "the gone client was folded in");
        let asset_list = viaduct_protocol::COMMAND_NAMES.iter().position(|n| *n == "asset.list").unwrap();
        assert_eq!(all.totals()[asset_list][..2], [1, 1]);
    }
}
