//! Each client's reply path: a preallocated ring of typed outcomes with one producer, the reply
//! stage, and one consumer, the client (an edge's event loop, the console, a test). The reply
//! stage copies a command's outcome into a slot (no allocation once the slot is warm) and
//! publishes the slots of a batch once the journal has made the batch durable; the client encodes
//! them (JSON, binary reports, maker fills) on its own thread. No lock on the way: the producer
//! writes a slot, then publishes its sequence; the consumer reads up to the published sequence.
//!
//! (A multi-producer lock-free channel was tried before and dropped: a receiver finding a slot a
//! sender had claimed but not yet filled spun until the sender, often preempted on two cores,
//! finished. A single producer publishes only filled slots, so the consumer never waits on it.)
//!
//! Answers to queries (market data, history) are made on their owners' threads and arrive on a
//! bounded channel of their own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::sync::Parker;
use disruptor::{EventPoller, Producer, SingleConsumerBarrier, SingleProducer, SingleProducerBarrier};
use viaduct_edges::{Delivered, Notify};
use viaduct_matcher::{Command, Events, Reply, RpcError, Spec};
use viaduct_ring::OutSlot;

/// Commands with deals for a client's watched users that it may have waiting beyond its
/// in-flight replies; past it they are dropped and the client is told ([`Delivered::FillsLost`]).
pub const DEALS_WAITING_MAX: u64 = 4096;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The outcome of one of the client's commands.
    Outcome,
    /// A command in which a user the client watches traded as maker.
    Deals,
}

/// One slot of a reply ring: a command's outcome, typed, with its events.
pub(crate) struct Slot {
    pub(crate) kind: Kind,
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
            tag: 0,
            request_id: 0,
            journal_seq: 0,
            cmd: Command::AssetList,
            result: Err(RpcError::Internal),
            // Empty until first used: a slot allocates on its first use, then keeps its capacity.
            events: Events::default(),
        }
    }

    /// Makes this slot a copy of `out` (its outcome or its deals), in the capacity it has.
    pub(crate) fn copy_from(&mut self, kind: Kind, out: &OutSlot) {
        self.kind = kind;
        self.tag = out.tag;
        self.request_id = out.request_id;
        self.journal_seq = out.journal_seq;
        self.cmd.clone_from(&out.cmd);
        self.result.clone_from(&out.outcome);
        self.events.copy_from(&out.events);
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
            Kind::Deals => Delivered::Deals { events: &self.events },
        }
    }
}

/// A query's JSON answer: (tag, request id, JSON).
pub(crate) type Answer = (u64, i64, String);

/// The reply stage's end of one client's reply path.
pub(crate) struct Outbox {
    ring: SingleProducer<Slot, SingleConsumerBarrier>,
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
    /// Publishes `slot` by swapping it with the ring's next slot (whose old contents, with their
    /// capacity, come back in `slot` for reuse).
    pub(crate) fn publish(&mut self, slot: &mut Slot) -> Result<(), Refusal> {
        if self.gone.load(Ordering::Acquire) {
            return Err(Refusal::Gone);
        }
        let deals = slot.kind == Kind::Deals;
        if deals && self.deals_sent - self.deals_taken.load(Ordering::Acquire) >= DEALS_WAITING_MAX {
            self.fills_lost.store(true, Ordering::Release);
            return Err(Refusal::Full);
        }
        self.ring.try_publish(|s| std::mem::swap(s, slot)).map_err(|_| Refusal::Full)?;
        self.deals_sent += u64::from(deals);
        Ok(())
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

/// The client's end of its reply path.
pub(crate) struct Inbox {
    ring: EventPoller<Slot, SingleProducerBarrier>,
    answers: Receiver<Answer>,
    deals_taken: Arc<AtomicU64>,
    fills_lost: Arc<AtomicBool>,
    gone: Arc<AtomicBool>,
    /// Unparked by the client's [`Notify`] when it has no event loop of its own.
    parker: Parker,
}

/// A new reply path: a ring of `slots` (rounded up to a power of two) and an answer channel of
/// `answers_max`. A client without an event loop (`notify` None) is woken through a parker.
pub(crate) fn reply_path(slots: usize, answers_max: usize, notify: Option<Notify>) -> (Outbox, AnswerSink, Inbox) {
    let parker = Parker::new();
    let notify = notify.unwrap_or_else(|| {
        let unparker = parker.unparker().clone();
        Arc::new(move || unparker.unpark())
    });
    let (poller, builder) =
        disruptor::build_single_producer(slots.next_power_of_two(), Slot::empty, disruptor::BusySpin)
            .new_event_poller();
    let (tx, answers) = crossbeam_channel::bounded(answers_max);
    let (gone, fills_lost, deals_taken) = (Arc::default(), Arc::<AtomicBool>::default(), Arc::<AtomicU64>::default());
    let outbox = Outbox {
        ring: builder.build(),
        notify: Arc::clone(&notify),
        gone: Arc::clone(&gone),
        fills_lost: Arc::clone(&fills_lost),
        deals_sent: 0,
        deals_taken: Arc::clone(&deals_taken),
    };
    let inbox = Inbox { ring: poller, answers, deals_taken, fills_lost, gone, parker };
    (outbox, AnswerSink { tx, notify }, inbox)
}

impl Inbox {
    /// Hands `each` everything waiting: the ring's outcomes and deals in order, then the answers,
    /// then [`Delivered::FillsLost`] if deals were dropped. Returns how many requests it answered.
    pub(crate) fn receive(&mut self, spec: &Spec, each: &mut dyn FnMut(&Spec, Delivered<'_>)) -> usize {
        let mut answered = 0;
        if let Ok(mut batch) = self.ring.poll() {
            let mut deals = 0;
            for slot in &mut batch {
                match slot.kind {
                    Kind::Outcome => answered += 1,
                    Kind::Deals => deals += 1,
                }
                each(spec, slot.delivered());
            }
            drop(batch);
            if deals > 0 {
                self.deals_taken.fetch_add(deals, Ordering::AcqRel);
            }
        }
        for (tag, request_id, json) in self.answers.try_iter() {
            answered += 1;
            each(spec, Delivered::Answer { tag, request_id, json });
        }
        if self.fills_lost.load(Ordering::Relaxed) && self.fills_lost.swap(false, Ordering::AcqRel) {
            each(spec, Delivered::FillsLost);
        }
        answered
    }

    /// The next delivery if one is waiting, handed to `each`; returns whether there was one.
    pub(crate) fn receive_one(&mut self, spec: &Spec, each: &mut dyn FnMut(&Spec, Delivered<'_>)) -> bool {
        if let Ok(mut batch) = self.ring.take(1) {
            if let Some(slot) = (&mut batch).next() {
                if slot.kind == Kind::Deals {
                    self.deals_taken.fetch_add(1, Ordering::AcqRel);
                }
                each(spec, slot.delivered());
                return true;
            }
        }
        if let Ok((tag, request_id, json)) = self.answers.try_recv() {
            each(spec, Delivered::Answer { tag, request_id, json });
            return true;
        }
        false
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        !self.ring.has_available() && self.answers.is_empty()
    }

    /// Waits until woken (a publish, an answer) or a spurious wake-up; callers check again.
    pub(crate) fn park(&self) {
        self.parker.park();
    }
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

    fn publish(outbox: &mut Outbox, kind: Kind, tag: u64) -> Result<(), Refusal> {
        let mut slot = Slot::empty();
        slot.copy_from(kind, &out(tag));
        outbox.publish(&mut slot)
    }

    /// What `receive` hands over, as (what, tag) pairs.
    fn received(inbox: &mut Inbox, spec: &Spec) -> (Vec<(&'static str, u64)>, usize) {
        let mut got = Vec::new();
        let answered = inbox.receive(spec, &mut |_, d| {
            got.push(match d {
                Delivered::Outcome { tag, journal_seq, .. } => {
                    assert_eq!(tag, journal_seq);
                    ("outcome", tag)
                }
                Delivered::Answer { tag, .. } => ("answer", tag),
                Delivered::Deals { .. } => ("deals", 0),
                Delivered::FillsLost => ("lost", 0),
            })
        });
        (got, answered)
    }

    #[test]
    fn outcomes_and_answers_come_out_in_order_and_count_as_answered() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, answers, mut inbox) = reply_path(8, 8, None);
        assert!(inbox.is_empty());
        for tag in 1..=3 {
            publish(&mut outbox, Kind::Outcome, tag).unwrap();
        }
        publish(&mut outbox, Kind::Deals, 9).unwrap();
        answers.answer(7, 70, "{}".into());
        assert!(!inbox.is_empty());
        let (got, answered) = received(&mut inbox, &spec);
        assert_eq!(got, [("outcome", 1), ("outcome", 2), ("outcome", 3), ("deals", 0), ("answer", 7)]);
        assert_eq!(answered, 4, "deals answer no request");
        assert!(inbox.is_empty());
    }

    #[test]
    fn deals_past_their_bound_are_dropped_and_the_client_told_while_replies_still_fit() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, _answers, mut inbox) = reply_path(4 + DEALS_WAITING_MAX as usize, 4, None);
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

    #[test]
    fn with_the_client_gone_publishing_is_refused_as_gone() {
        let (mut outbox, _answers, inbox) = reply_path(8, 8, None);
        publish(&mut outbox, Kind::Outcome, 1).unwrap();
        assert!(!outbox.is_gone());
        drop(inbox);
        assert!(outbox.is_gone());
        assert_eq!(publish(&mut outbox, Kind::Outcome, 2), Err(Refusal::Gone));
    }

    #[test]
    fn a_full_ring_refuses_until_the_client_takes_what_it_holds() {
        let spec = Spec::new(&embedded()).unwrap();
        let (mut outbox, _answers, mut inbox) = reply_path(2, 2, None);
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
        let (mut outbox, _answers, mut inbox) = reply_path(8, 8, None);
        let waiting = Arc::new(AtomicBool::new(false));
        let (flag, spec2) = (Arc::clone(&waiting), Arc::clone(&spec));
        let receiver = std::thread::spawn(move || {
            flag.store(true, Ordering::Release);
            let mut tag = None;
            while tag.is_none() {
                inbox.receive(&spec2, &mut |_, d| {
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
