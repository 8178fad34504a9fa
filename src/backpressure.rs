//! The one back-pressure rule. Every consumer behind the matcher (the history writer, the
//! snapshot worker, market data) is a [`Gate`]: a sequence it must reach, the sequence it has
//! done, and a named bound on the difference. Nothing downstream ever makes the pipeline wait;
//! instead [`Admission`], checked where requests come in, refuses state-changing requests
//! (error 3) while any gate lags past its bound, and raises a [`AlertKind::Lag`] alert (at most
//! once a minute per gate). The feeds are therefore bounded by the gates' bounds plus what was
//! admitted before a bound was passed (the input ring and the clients' in-flight requests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use viaduct_publishers::alert::{AlertKind, Alerts, OncePer};

/// One consumer's lag: `head - done` commands, at most `max`.
pub(crate) struct Gate {
    /// Who lags, for the alert: "the history writer".
    pub(crate) name: &'static str,
    /// The sequence the consumer must reach: the durable sequence, or the last it was fed.
    pub(crate) head: Arc<AtomicU64>,
    /// The last sequence it has done.
    pub(crate) done: Arc<AtomicU64>,
    /// Its bound, in commands, and where an operator sets it.
    pub(crate) max: u64,
    pub(crate) set_by: &'static str,
    /// Its lag alert, at most once a minute.
    alerted: OncePer,
}

impl Gate {
    pub(crate) fn new(
        name: &'static str,
        (head, done): (&Arc<AtomicU64>, &Arc<AtomicU64>),
        max: u64,
        set_by: &'static str,
    ) -> Gate {
        Gate { name, head: Arc::clone(head), done: Arc::clone(done), max, set_by, alerted: OncePer::default() }
    }

    /// How far past its bound the consumer lags, if it does.
    fn lag_past_bound(&self) -> Option<u64> {
        let lag = self.head.load(Ordering::Acquire).saturating_sub(self.done.load(Ordering::Acquire));
        (lag > self.max).then_some(lag)
    }
}

/// The admission check shared by every client: one list of gates and the alert sink.
#[derive(Clone)]
pub(crate) struct Admission {
    gates: Arc<[Gate]>,
    alerts: Alerts,
}

impl Admission {
    pub(crate) fn new(gates: Vec<Gate>, alerts: Alerts) -> Admission {
        Admission { gates: gates.into(), alerts }
    }

    /// Each gate's consumer, its lag in commands and its bound.
    pub(crate) fn lags(&self) -> Vec<(&'static str, u64, u64)> {
        self.gates
            .iter()
            .map(|g| (g.name, g.head.load(Ordering::Acquire).saturating_sub(g.done.load(Ordering::Acquire)), g.max))
            .collect()
    }

    /// Whether a state-changing request may go in now: no gate lags past its bound.
    pub(crate) fn admits_write(&self) -> bool {
        let mut admitted = true;
        for gate in self.gates.iter() {
            if let Some(lag) = gate.lag_past_bound() {
                admitted = false;
                self.alert(gate, lag);
            }
        }
        admitted
    }

    fn alert(&self, gate: &Gate, lag: u64) {
        if gate.alerted.due(std::time::Duration::from_secs(60)) {
            self.alerts.raise(
                AlertKind::Lag,
                gate.name,
                format!(
                    "lags {lag} commands behind (bound {}, {}); state-changing requests get error 3 until it catches up",
                    gate.max, gate.set_by
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaduct_publishers::alert::KeptAlerts;

    /// A consumer may lag its head by its bound and no more; past it writes are refused and one
    /// alert is raised for the minute, whichever client asks.
    #[test]
    fn a_gate_refuses_writes_past_its_bound_only_and_alerts_once_a_minute() {
        let (done, head) = (Arc::new(AtomicU64::new(100)), Arc::new(AtomicU64::new(100)));
        let kept = Arc::new(KeptAlerts::default());
        let gate = Gate::new("the follower", (&head, &done), 5, "[test] lag_max");
        let quiet = Gate::new("a follower that keeps up", (&head, &head), 0, "[test] none");
        let admission = Admission::new(vec![quiet, gate], Alerts::new(kept.clone()));
        assert!(admission.admits_write());
        head.store(105, Ordering::Release);
        assert!(admission.admits_write());
        head.store(106, Ordering::Release);
        assert!(!admission.admits_write() && !admission.clone().admits_write());
        let alerts = kept.0.lock().unwrap().clone();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!((alerts[0].kind, alerts[0].stage), (AlertKind::Lag, "the follower"));
        assert!(alerts[0].message.starts_with("lags 6 commands behind (bound 5, [test] lag_max)"));
        done.store(101, Ordering::Release);
        assert!(admission.admits_write());
    }
}
