//! A client's reply queue: the reply stage adds a batch's replies under one lock, and a receiver
//! takes everything waiting under one lock.
//!
//! It replaces a lock-free channel whose receiver, finding a slot the sender had claimed but not
//! yet filled, spun until the sender finished. The sender is the matcher's thread; when it was
//! preempted inside that window (on two cores, often), the edge spun for the rest of its time
//! slice: `perf` put 12 % of the server's samples at 100 k orders/s in that spin. Here a receiver
//! that finds the lock held waits on it (a futex), and the sender runs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::engine::Response;

/// Why a response was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue holds `capacity` responses.
    Full,
    /// Every receiver is gone.
    Gone,
}

/// Responses waiting for one client, at most `capacity` of them.
pub(crate) struct ReplyQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    receivers: AtomicUsize,
}

struct State {
    items: VecDeque<Response>,
    /// Receivers blocked in [`ReplyReceiver::recv`]: only then does a push signal the condvar
    /// (a system call).
    sleepers: usize,
}

impl ReplyQueue {
    /// A queue and its first receiver.
    pub(crate) fn new(capacity: usize) -> (Arc<ReplyQueue>, ReplyReceiver) {
        let queue = Arc::new(ReplyQueue {
            state: Mutex::new(State { items: VecDeque::new(), sleepers: 0 }),
            ready: Condvar::new(),
            capacity,
            receivers: AtomicUsize::new(1),
        });
        let rx = ReplyReceiver { queue: Arc::clone(&queue), taken: RefCell::default() };
        (queue, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("reply queue lock")
    }

    /// Queues `batch` in order under one lock; each response that does not fit, or finds no
    /// receiver, goes to `refused` instead. Returns how many were queued.
    pub(crate) fn push_all(
        &self,
        batch: impl Iterator<Item = Response>,
        mut refused: impl FnMut(Response, Refusal),
    ) -> usize {
        if self.receivers.load(Ordering::Acquire) == 0 {
            batch.for_each(|r| refused(r, Refusal::Gone));
            return 0;
        }
        let mut pushed = 0;
        let wake = {
            let mut state = self.lock();
            for r in batch {
                if state.items.len() < self.capacity {
                    state.items.push_back(r);
                    pushed += 1;
                } else {
                    refused(r, Refusal::Full);
                }
            }
            pushed > 0 && state.sleepers > 0
        };
        if wake {
            self.ready.notify_all();
        }
        pushed
    }

    /// Queues one response.
    pub(crate) fn push(&self, response: Response) -> Result<(), Refusal> {
        let mut why = None;
        self.push_all(std::iter::once(response), |_, w| why = Some(w));
        why.map_or(Ok(()), Err)
    }
}

/// Takes a queue's responses. Each receiver moves everything waiting into a buffer of its own
/// at once and hands it out from there; clones share the queue (each response goes to one).
pub(crate) struct ReplyReceiver {
    queue: Arc<ReplyQueue>,
    taken: RefCell<VecDeque<Response>>,
}

impl ReplyReceiver {
    /// The next response if one is waiting.
    pub(crate) fn try_recv(&self) -> Option<Response> {
        let mut taken = self.taken.borrow_mut();
        if taken.is_empty() {
            std::mem::swap(&mut *taken, &mut self.queue.lock().items);
        }
        taken.pop_front()
    }

    /// The next response, waiting for one.
    pub(crate) fn recv(&self) -> Response {
        let mut taken = self.taken.borrow_mut();
        if taken.is_empty() {
            let mut state = self.queue.lock();
            while state.items.is_empty() {
                state.sleepers += 1;
                state = self.queue.ready.wait(state).expect("reply queue lock");
                state.sleepers -= 1;
            }
            std::mem::swap(&mut *taken, &mut state.items);
        }
        taken.pop_front().expect("a response was taken")
    }

    /// Whether no response is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.taken.borrow().is_empty() && self.queue.lock().items.is_empty()
    }
}

impl Clone for ReplyReceiver {
    fn clone(&self) -> ReplyReceiver {
        self.queue.receivers.fetch_add(1, Ordering::AcqRel);
        ReplyReceiver { queue: Arc::clone(&self.queue), taken: RefCell::default() }
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        self.queue.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(tag: u64) -> Response {
        Response::of_json(tag, tag as i64, String::new())
    }

    fn tags(rx: &ReplyReceiver) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv()).map(|r| r.tag).collect()
    }

    #[test]
    fn responses_come_out_in_order_up_to_the_capacity_and_the_rest_are_refused_as_full() {
        let (q, rx) = ReplyQueue::new(3);
        let mut refused = Vec::new();
        assert_eq!(q.push_all((1..=5).map(response), |r, why| refused.push((r.tag, why))), 3);
        assert_eq!(refused, [(4, Refusal::Full), (5, Refusal::Full)]);
        assert!(!rx.is_empty());
        assert_eq!(tags(&rx), [1, 2, 3]);
        assert!(rx.is_empty());
        // Taken responses free their places.
        assert_eq!(q.push(response(6)), Ok(()));
        assert_eq!(tags(&rx), [6]);
    }

    #[test]
    fn a_receiver_hands_out_what_it_took_even_after_more_was_queued() {
        let (q, rx) = ReplyQueue::new(10);
        q.push_all((1..=2).map(response), |_, _| panic!("refused"));
        assert_eq!(rx.try_recv().map(|r| r.tag), Some(1));
        q.push(response(3)).unwrap();
        assert_eq!(tags(&rx), [2, 3]);
    }

    #[test]
    fn with_every_receiver_gone_pushes_are_refused_as_gone() {
        let (q, rx) = ReplyQueue::new(10);
        let other = rx.clone();
        drop(rx);
        assert_eq!(q.push(response(1)), Ok(()));
        assert_eq!(other.recv().tag, 1);
        drop(other);
        assert_eq!(q.push(response(2)), Err(Refusal::Gone));
    }

    #[test]
    fn a_blocked_receiver_wakes_for_a_push_from_another_thread() {
        let (q, rx) = ReplyQueue::new(10);
        let (tx, got) = std::sync::mpsc::channel();
        let receiver = std::thread::spawn(move || {
            for _ in 0..2 {
                tx.send(rx.recv().tag).unwrap();
            }
        });
        // Pushed only once the receiver is blocked in `recv`: only the push's signal wakes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.lock().sleepers == 0 {
            assert!(std::time::Instant::now() < deadline, "the receiver never blocked");
            std::thread::sleep(Duration::from_millis(1));
        }
        q.push_all((1..=2).map(response), |_, _| panic!("refused"));
        let woken = Duration::from_secs(10);
        assert_eq!((got.recv_timeout(woken), got.recv_timeout(woken)), (Ok(1), Ok(2)), "the receiver was not woken");
        receiver.join().unwrap();
    }
}
