//! How far a follower of the durable sequence may lag before state-changing requests are refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::client::now_us;

/// A thread that follows the durable sequence (the history writer, the snapshot worker) and may
/// lag it by at most `max` commands: past that, state-changing requests get error 3 until it
/// catches up, and an alert-level line says so at most once a minute.
#[derive(Clone)]
pub(crate) struct LagBound {
    what: &'static str,
    /// The last sequence the follower has done.
    done: Arc<AtomicU64>,
    durable: Arc<AtomicU64>,
    max: u64,
    /// When the last alert was logged (seconds since the epoch), shared by every client.
    alerted: Arc<AtomicU64>,
}

impl LagBound {
    pub(crate) fn new(what: &'static str, done: Arc<AtomicU64>, durable: &Arc<AtomicU64>, max: u64) -> LagBound {
        LagBound { what, done, durable: Arc::clone(durable), max, alerted: Arc::default() }
    }

    pub(crate) fn exceeded(&self) -> bool {
        let (durable, done) = (self.durable.load(Ordering::Acquire), self.done.load(Ordering::Acquire));
        let lag = durable.saturating_sub(done);
        if lag <= self.max {
            return false;
        }
        let now = now_us() / 1_000_000;
        let last = self.alerted.load(Ordering::Relaxed);
        if now >= last + 60 && self.alerted.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            tracing::error!(
                "ALERT {} lags {lag} commands behind (bound {}); state-changing requests get error 3 until it catches up",
                self.what,
                self.max
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower may lag the durable sequence by its bound and no more.
    #[test]
    fn a_lag_bound_refuses_past_its_bound_only() {
        let (done, durable) = (Arc::new(AtomicU64::new(100)), Arc::new(AtomicU64::new(100)));
        let bound = LagBound::new("test: the follower", Arc::clone(&done), &durable, 5);
        assert!(!bound.exceeded());
        durable.store(105, Ordering::Release);
        assert!(!bound.exceeded());
        durable.store(106, Ordering::Release);
        assert!(bound.exceeded() && bound.clone().exceeded());
        done.store(101, Ordering::Release);
        assert!(!bound.exceeded());
    }
}
