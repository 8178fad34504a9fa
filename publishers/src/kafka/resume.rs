//! Where a Kafka session resumes: the last message of each topic, read to the end of its
//! partition (some brokers under-report the end), with the headers the publisher sets on every
//! message.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaConfig, Topic};

/// The headers of every message: its command's journal sequence, its index among that command's
/// messages to the topic, and a sequence up to which everything was acknowledged when it was
/// produced.
pub(super) const SEQ: &str = "viaduct-seq";
pub(super) const PART: &str = "viaduct-part";
pub(super) const THROUGH: &str = "viaduct-through";

/// How long one look at the brokers (metadata, the end of a topic) may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The last message of a topic: its command's sequence, its index, and its `viaduct-through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub(super) seq: u64,
    pub(super) part: u32,
    pub(super) through: u64,
}

/// The last message of each topic on the brokers `client` names, or none for a topic that is
/// empty or missing.
pub(super) fn topic_ends(client: &mut ClientConfig, cfg: &KafkaConfig) -> Result<[Option<End>; 3], String> {
    let consumer: BaseConsumer<Quiet> = client
        .set("group.id", "viaduct-resume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Quiet)
        .map_err(|e| format!("creating a Kafka consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(None, BROKER_TIMEOUT)
        .map_err(|e| format!("the Kafka brokers {} cannot be reached ({e})", cfg.brokers))?;
    let mut ends = [None; 3];
    for topic in Topic::ALL {
        let name = cfg.topic(topic);
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none() && t.partitions().iter().any(|p| p.id() == 0));
        if exists {
            ends[topic.index()] = last_message(&consumer, &name)?;
        }
    }
    Ok(ends)
}

/// Reads the last message of partition 0 of `topic`: from just before the end the broker reports
/// to the end it reaches (some brokers under-report the end), and from the start if that finds
/// nothing (an end over-reported).
fn last_message(consumer: &BaseConsumer<Quiet>, topic: &str) -> Result<Option<End>, String> {
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, BROKER_TIMEOUT)
        .map_err(|e| format!("reading the end of topic {topic}: {e}"))?;
    for start in [low.max(high - 1), low] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start)).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| format!("reading topic {topic}: {e}"))?;
        let mut last = None;
        loop {
            match consumer.poll(BROKER_TIMEOUT) {
                None => return Err(format!("reading topic {topic} timed out")),
                Some(Ok(m)) => last = Some(end_of(topic, &m)?),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(format!("reading topic {topic}: {e}")),
            }
        }
        if last.is_some() || start == low {
            return Ok(last);
        }
    }
    Ok(None)
}

fn end_of(topic: &str, m: &impl Message) -> Result<End, String> {
    let header = |key: &str| -> Option<u64> {
        let headers = m.headers()?;
        let h = headers.iter().find(|h| h.key == key)?;
        std::str::from_utf8(h.value?).ok()?.parse().ok()
    };
    match (header(SEQ), header(PART), header(THROUGH)) {
        (Some(seq), Some(part), Some(through)) if part <= u64::from(u32::MAX) => {
            Ok(End { seq, part: part as u32, through })
        }
        _ => Err(format!(
            "the last message of topic {topic} (offset {}) has no viaduct-seq, viaduct-part and viaduct-through headers: something other than viaduct writes to it; give viaduct topics of its own ([kafka] topic_prefix)",
            m.offset()
        )),
    }
}

/// The resume reader's callbacks: its errors end the session, which says why; librdkafka's own
/// reports of them go to the debug log.
pub(super) struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!("kafka: librdkafka (reading the topics' ends) {fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("kafka: reading the topics' ends: {error} ({reason})");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}
