//! `viaduct kafka-tail`: prints a topic's messages, one line each, with the headers the publisher
//! sets: `<viaduct-seq>/<viaduct-part> <payload>`. A consumer an operator can run anywhere the
//! binary is, against any broker viaduct publishes to.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How long one poll waits for the broker before the reader says it is still waiting.
const POLL: Duration = Duration::from_secs(10);

/// Writes the messages of partition 0 of `topic` on `brokers` to `out`, from its start (or only
/// new ones with `from_end`), and returns at the partition's end unless `follow`.
pub fn tail(brokers: &str, topic: &str, from_end: bool, follow: bool, out: &mut impl Write) -> Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "viaduct-kafka-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set_log_level(RDKafkaLogLevel::Error)
        .create()
        .context("creating a Kafka consumer")?;
    let metadata =
        consumer.fetch_metadata(Some(topic), POLL).with_context(|| format!("asking {brokers} for {topic}"))?;
    let exists =
        metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if !exists && !follow {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, if from_end { Offset::End } else { Offset::Beginning })?;
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    loop {
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                let header = |key: &str| -> String {
                    m.headers()
                        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
                        .map_or_else(|| "-".to_string(), |v| String::from_utf8_lossy(v).into_owned())
                };
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default());
                writeln!(out, "{}/{} {payload}", header("viaduct-seq"), header("viaduct-part"))?;
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                out.flush()?;
                if !follow {
                    return Ok(n);
                }
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic} from {brokers}")),
            None if follow => {}
            None => anyhow::bail!("reading {topic} from {brokers}: no answer in {} s", POLL.as_secs()),
        }
    }
}
