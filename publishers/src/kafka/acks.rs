//! What the Kafka producer's callbacks track: which commands' messages are all acknowledged
//! (the publisher's progress), failures that end a session, and librdkafka's errors as alerts.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::publisher::KafkaCounts;
use super::Topic;
use crate::alert::{AlertKind, Alerts, OncePer};

/// The same alert about the brokers at most once in this long.
const ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Commands whose messages are not all acknowledged, oldest first.
#[derive(Default)]
pub(super) struct Acks {
    /// (sequence, messages not yet acknowledged, all of its messages produced).
    pub(super) open: VecDeque<(u64, u32, bool)>,
    pub(super) in_flight: usize,
    /// The last command read whose messages are all produced.
    pub(super) read_through: u64,
    pub(super) failed: Option<String>,
}

impl Acks {
    pub(super) fn open(&mut self, seq: u64) {
        self.open.push_back((seq, 0, false));
    }

    pub(super) fn sent(&mut self, seq: u64) {
        if let Some(e) = self.open.back_mut().filter(|e| e.0 == seq) {
            e.1 += 1;
            self.in_flight += 1;
        }
    }

    pub(super) fn close(&mut self, seq: u64, opened: bool) {
        if opened {
            if let Some(e) = self.open.back_mut().filter(|e| e.0 == seq) {
                e.2 = true;
            }
        }
        self.read_through = seq;
        self.pop_done();
    }

    pub(super) fn acked(&mut self, seq: u64) {
        if let Ok(i) = self.open.binary_search_by_key(&seq, |e| e.0) {
            self.open[i].1 = self.open[i].1.saturating_sub(1);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        self.pop_done();
    }

    fn pop_done(&mut self) {
        while self.open.front().is_some_and(|&(_, left, closed)| closed && left == 0) {
            self.open.pop_front();
        }
    }

    /// Up to which sequence every message is acknowledged.
    pub(super) fn published(&self) -> u64 {
        match self.open.front() {
            Some(&(seq, ..)) => seq - 1,
            None => self.read_through,
        }
    }
}

/// librdkafka's callbacks: acknowledgements, and errors raised as alerts.
pub(super) struct Delivery {
    pub(super) acks: Mutex<Acks>,
    pub(super) counts: Arc<KafkaCounts>,
    pub(super) alerts: Alerts,
    pub(super) alerted: Arc<OncePer>,
}

impl ClientContext for Delivery {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!("kafka: librdkafka {fac}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!("kafka: librdkafka {fac}: {message}"),
            _ => tracing::debug!("kafka: librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.acks
                .lock()
                .expect("acks")
                .failed
                .get_or_insert_with(|| format!("the Kafka producer failed ({reason})"));
        }
        alert(
            &self.alerts,
            &self.alerted,
            format!("{error} ({reason}); messages wait in librdkafka's queue and the journal"),
        );
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let mut acks = self.acks.lock().expect("acks");
        match result {
            Ok(m) => {
                acks.acked(seq as u64);
                if let Some(t) = Topic::ALL.iter().find(|t| m.topic().ends_with(t.name())) {
                    self.counts.acked[t.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((e, m)) => {
                acks.failed.get_or_insert_with(|| {
                    format!("a message of command {seq} to {} was not delivered ({e})", m.topic())
                });
            }
        }
    }
}

/// An alert about the brokers, at most once a minute (a warning in the log otherwise).
pub(super) fn alert(alerts: &Alerts, once: &OncePer, message: String) {
    if once.due(ALERT_EVERY) {
        alerts.raise(AlertKind::Kafka, "kafka", message);
    } else {
        tracing::warn!("kafka: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command counts as published once every message of it and of every command before it is
    /// acknowledged, in whatever order the acknowledgements come; commands without messages
    /// count once read.
    #[test]
    fn published_is_the_last_command_whose_messages_and_all_before_are_acknowledged() {
        let mut acks = Acks { read_through: 10, ..Acks::default() };
        assert_eq!(acks.published(), 10);
        acks.open(11);
        acks.sent(11);
        acks.sent(11);
        acks.close(11, true);
        acks.close(12, false);
        acks.open(13);
        acks.sent(13);
        acks.close(13, true);
        assert_eq!((acks.published(), acks.in_flight), (10, 3));
        acks.acked(13);
        assert_eq!(acks.published(), 10, "13 is acknowledged, 11 is not");
        acks.acked(11);
        assert_eq!(acks.published(), 10, "one of 11's two is");
        acks.acked(11);
        assert_eq!((acks.published(), acks.in_flight), (13, 0));
        // A command still being produced is not published, even with its sent messages acknowledged.
        acks.open(14);
        acks.sent(14);
        acks.acked(14);
        assert_eq!(acks.published(), 13);
        acks.close(14, true);
        assert_eq!(acks.published(), 14);
    }
}
