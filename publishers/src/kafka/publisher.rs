//! The Kafka publisher: a follower of the journal, like the snapshot worker. It replays each
//! durable command into a matcher of its own, encodes the messages its events make
//! ([`super::messages`]) and produces them with librdkafka's idempotent producer (`acks=all`, no
//! message timeout: a broker that is away is waited for, the messages held in librdkafka's queue).
//! The journal is its queue: the matcher never waits for it, and while the brokers are away it
//! falls behind, an alert is raised, and past `[kafka] lag_max` the engine refuses
//! state-changing requests (its `Gate`, `src/backpressure.rs`).
//!
//! **Exactly once.** Each message carries the journal sequence of its command and its index
//! among that command's messages to the topic (`viaduct-seq`, `viaduct-part`). A session of the
//! publisher (its start, or a new producer after a fatal producer error) first reads the last
//! message of each topic, reading to the end of the partition rather than trusting the reported
//! high watermark, and produces only what comes after it, topic by topic. Where it replays from
//! is the highest of: what the last session acknowledged (`<data_dir>/kafka.acked`, written after
//! acknowledgements, at most once a second, with `fsync`) and the `viaduct-through` header of
//! each topic's last message (a sequence up to which every message of every topic was
//! acknowledged when it was produced); with neither, the oldest state the data directory holds.
//! The snapshot worker keeps the snapshot and journal from `kafka.acked` on, so that state can be
//! rebuilt. A broker whose topics are empty (a new cluster, or one that lost its log) gets the
//! messages after what was acknowledged before (`kafka.acked`); remove that file (with the server stopped) to publish the whole
//! journal again.
//!
//! The one gap: a produce request a broker received but had not answered when its producer was
//! dropped (a fatal producer error) or the process killed may be appended after the next session
//! has read the topic's end, and its messages would then be published twice. librdkafka's
//! transactional producer would close it; not every Kafka-protocol broker implements
//! transactions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use viaduct_journaler::recovery::{journal_dir, snapshot_dir, state_at};
use viaduct_journaler::segment::{list_segments, JournalTail};
use viaduct_journaler::{snapshot, JournalError};
use viaduct_matcher::{Events, Spec};

use super::acks::{alert, Acks, Delivery};
use super::resume::{topic_ends, PART, SEQ, THROUGH};
use super::{messages, KafkaConfig, Topic};
use crate::alert::{Alerts, OncePer};

/// Messages produced and not yet acknowledged, at most: past it the publisher reads no more of
/// the journal until acknowledgements come (librdkafka's own queue is sized above it).
pub const IN_FLIGHT_MAX: usize = 100_000;
/// Commands read from the journal at a time.
const READ_CHUNK: u64 = 4_096;
/// Between sessions that failed (brokers unreachable, a fatal producer error).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often what is acknowledged is written to `kafka.acked`.
const ACKED_WRITE_EVERY: Duration = Duration::from_secs(1);
/// A producer that has had messages waiting this long without one acknowledgement is dropped
/// and a new session started: librdkafka's idempotent producer can loop without end against a
/// broker that lost its state (tansu, restarted, answers every retry "unknown producer id"),
/// and a new producer resumes from what the broker holds.
const STALL_AFTER: Duration = Duration::from_secs(10);
/// How long a stopping engine waits for the brokers to acknowledge the rest; what they have not
/// by then is published from the journal at the next start.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The file that says up to which sequence every message was acknowledged.
pub fn acked_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kafka.acked")
}

/// What the publisher has done, for the metrics.
#[derive(Debug, Default)]
pub struct KafkaCounts {
    /// Messages acknowledged by the brokers, per topic ([`Topic::index`]).
    pub acked: [AtomicU64; 3],
    /// Sessions that failed (brokers unreachable at their start, a fatal producer error).
    pub errors: AtomicU64,
}

/// The running publisher.
pub struct KafkaPublisher {
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    counts: Arc<KafkaCounts>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaPublisher {
    /// Starts the publisher on `viaduct-kafka`, following the journal in `data_dir` up to
    /// `durable`. It does not wait for the brokers.
    pub fn start(
        cfg: KafkaConfig,
        spec: Arc<Spec>,
        data_dir: &Path,
        durable: Arc<AtomicU64>,
        alerts: Alerts,
    ) -> Result<KafkaPublisher> {
        let acked = match read_acked(data_dir)? {
            Some(seq) => seq,
            None => oldest_state(data_dir)?,
        };
        let (stop, published, held) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(acked)), Arc::new(AtomicU64::new(acked)));
        let counts = Arc::new(KafkaCounts::default());
        let mut worker = Worker {
            cfg,
            spec,
            data_dir: data_dir.to_path_buf(),
            durable,
            stop: Arc::clone(&stop),
            published: Arc::clone(&published),
            held: Arc::clone(&held),
            counts: Arc::clone(&counts),
            alerts,
            alerted: Arc::default(),
            stop_by: None,
        };
        let thread = std::thread::Builder::new()
            .name("viaduct-kafka".into())
            .spawn(move || worker.run())
            .context("starting the Kafka publisher")?;
        Ok(KafkaPublisher { stop, published, held, counts, thread: Some(thread) })
    }

    /// The sequence up to which every message is acknowledged: the publisher's progress, which
    /// the engine's admission check bounds.
    pub fn published(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.published)
    }

    /// The sequence the next session may replay from (what `kafka.acked` says): the snapshot
    /// worker keeps the snapshot and journal it needs.
    pub fn held(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.held)
    }

    pub fn counts(&self) -> Arc<KafkaCounts> {
        Arc::clone(&self.counts)
    }

    /// Publishes up to the final durable sequence (the pipeline has stopped), waiting at most
    /// [`STOP_WAIT`] for the brokers, then joins the thread.
    pub fn join(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("Kafka publisher");
        }
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Worker {
    cfg: KafkaConfig,
    spec: Arc<Spec>,
    data_dir: PathBuf,
    durable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    counts: Arc<KafkaCounts>,
    alerts: Alerts,
    alerted: Arc<OncePer>,
    /// Set once `stop` is seen: when the publisher gives up waiting for the brokers.
    stop_by: Option<Instant>,
}

impl Worker {
    fn run(&mut self) {
        loop {
            match self.session() {
                Ok(()) => return,
                Err(why) => {
                    self.counts.errors.fetch_add(1, Ordering::Relaxed);
                    alert(
                        &self.alerts,
                        &self.alerted,
                        format!("{why}; messages wait in the journal, and the publisher tries again every second"),
                    );
                }
            }
            let retry_at = Instant::now() + RETRY_EVERY;
            while Instant::now() < retry_at {
                let nothing_left = self.published.load(Ordering::Acquire) >= self.durable.load(Ordering::Acquire);
                if self.stopping_expired() || (self.stop.load(Ordering::Acquire) && nothing_left) {
                    self.give_up();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether the engine stopped and the time it gives the publisher is over.
    fn stopping_expired(&mut self) -> bool {
        if !self.stop.load(Ordering::Acquire) {
            return false;
        }
        let by = *self.stop_by.get_or_insert_with(|| Instant::now() + STOP_WAIT);
        Instant::now() >= by
    }

    fn give_up(&self) {
        let (published, durable) = (self.published.load(Ordering::Acquire), self.durable.load(Ordering::Acquire));
        if published < durable {
            tracing::warn!(
                "kafka: stopping with commands {} to {durable} not acknowledged; they are published from the journal at the next start",
                published + 1
            );
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set("client.id", "viaduct")
            .set_log_level(RDKafkaLogLevel::Warning);
        c
    }

    /// One producer, from reading the topics' ends to a fatal error or the engine's stop.
    fn session(&mut self) -> Result<(), String> {
        let ends = topic_ends(&mut self.client_config(), &self.cfg)?;
        // What this process saw acknowledged (at its start, what `kafka.acked` said).
        let acked = self.published.load(Ordering::Acquire);
        let through = ends.iter().flatten().map(|e| e.through).max().unwrap_or(0);
        let floor = acked.max(through);
        let durable = self.durable.load(Ordering::Acquire);
        if floor > durable {
            return Err(format!(
                "the brokers hold messages up to sequence {floor}, past this journal's {durable}: the topics belong to other data; give this server topics of its own ([kafka] topic_prefix)"
            ));
        }
        let (mut shadow, at) = state_at(&self.data_dir, &self.spec, floor).map_err(|e| match e {
            JournalError::MissingHistory { first } => format!(
                "publishing from sequence {} needs the journal from there, but {} keeps it only from {first}",
                floor + 1,
                self.data_dir.display()
            ),
            e => format!("rebuilding the state at sequence {floor}: {e}"),
        })?;
        // Per topic, the last message already there: nothing up to it is produced again.
        let skip: [(u64, u32); 3] = std::array::from_fn(|i| match ends[i] {
            Some(e) if e.seq > floor => (e.seq, e.part),
            _ => (floor, u32::MAX),
        });
        tracing::info!(
            "kafka: publishing to {} after sequence {floor} (last messages: {})",
            self.cfg.brokers,
            Topic::ALL
                .iter()
                .map(|t| match ends[t.index()] {
                    Some(e) => format!("{} {}/{}", t.name(), e.seq, e.part),
                    None => format!("{} none", t.name()),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.published.fetch_max(floor, Ordering::AcqRel);

        let context = Delivery {
            acks: Mutex::new(Acks { read_through: floor, ..Acks::default() }),
            counts: Arc::clone(&self.counts),
            alerts: self.alerts.clone(),
            alerted: Arc::clone(&self.alerted),
        };
        let producer: BaseProducer<Delivery> = self
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("linger.ms", self.cfg.linger_ms.to_string())
            .set("batch.size", self.cfg.batch_bytes.to_string())
            .set("compression.codec", self.cfg.compression.codec())
            .set("queue.buffering.max.messages", (2 * IN_FLIGHT_MAX).to_string())
            .create_with_context(context)
            .map_err(|e| format!("creating the Kafka producer: {e}"))?;
        let topics: Vec<String> = Topic::ALL.iter().map(|&t| self.cfg.topic(t)).collect();

        let mut tail = JournalTail::new(&journal_dir(&self.data_dir), at + 1);
        let (mut events, mut buf) = (Events::with_capacity(64), Vec::with_capacity(1024));
        let mut failed: Option<String> = None;
        let (mut idle, mut acked_written, mut acked_at) = (0u32, self.held.load(Ordering::Acquire), Instant::now());
        // When acknowledgements last moved on (or nothing was waiting for one).
        let counts = Arc::clone(&self.counts);
        let acked_total = move || counts.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
        let (mut progress_at, mut last_acked) = (Instant::now(), acked_total());
        loop {
            if let Some(why) = producer.context().acks.lock().expect("acks").failed.take() {
                return Err(why);
            }
            let stopping = self.stop.load(Ordering::Acquire);
            let durable = self.durable.load(Ordering::Acquire);
            let next = tail.next_seq();
            let in_flight = producer.context().acks.lock().expect("acks").in_flight;
            if next <= durable && in_flight < IN_FLIGHT_MAX {
                idle = 0;
                let upto = durable.min(next + READ_CHUNK - 1);
                let through = self.published.load(Ordering::Acquire);
                let read = tail.read_to(upto, |entry| {
                    if failed.is_some() {
                        return;
                    }
                    events.clear();
                    if let Err(e) = shadow.apply(entry.time_us, &entry.cmd, &mut events) {
                        failed = Some(format!(
                            "command {} succeeded in the matcher but fails in the publisher's replay ({e}): the state machine is not deterministic",
                            entry.seq
                        ));
                        return;
                    }
                    if entry.seq <= floor {
                        return;
                    }
                    let mut parts = [0u32; 3];
                    let mut opened = false;
                    messages(&self.spec, events.view(), &mut buf, |topic, payload| {
                        let i = topic.index();
                        let part = parts[i];
                        parts[i] += 1;
                        if failed.is_some() || (entry.seq, part) <= skip[i] {
                            return;
                        }
                        if !opened {
                            producer.context().acks.lock().expect("acks").open(entry.seq);
                            opened = true;
                        }
                        if let Err(why) = produce(&producer, &topics[i], entry.seq, part, through, payload) {
                            failed = Some(why);
                        }
                    });
                    producer.context().acks.lock().expect("acks").close(entry.seq, opened);
                });
                if let Some(why) = failed.take() {
                    return Err(why);
                }
                read.map_err(|e| format!("reading the journal: {e}"))?;
                producer.poll(Duration::ZERO);
            } else {
                idle = idle.saturating_add(1);
                // Acknowledgements wake the poll; an idle engine is looked at 100 times a second.
                producer.poll(if idle > 100 { Duration::from_millis(10) } else { Duration::from_millis(1) });
            }
            let (published, in_flight) = {
                let acks = producer.context().acks.lock().expect("acks");
                (acks.published(), acks.in_flight)
            };
            let acked_now = acked_total();
            if in_flight == 0 || acked_now != last_acked {
                (progress_at, last_acked) = (Instant::now(), acked_now);
            }
            if progress_at.elapsed() >= STALL_AFTER {
                return Err(format!(
                    "no acknowledgement for {} s with {in_flight} messages waiting; starting a new producer",
                    STALL_AFTER.as_secs()
                ));
            }
            self.published.fetch_max(published, Ordering::AcqRel);
            let done = next > durable && published >= durable;
            if published > acked_written && (stopping || acked_at.elapsed() >= ACKED_WRITE_EVERY) {
                self.write_acked(published);
                (acked_written, acked_at) = (published, Instant::now());
            }
            if stopping && done {
                return Ok(());
            }
            if self.stopping_expired() {
                self.give_up();
                return Ok(());
            }
        }
    }

    /// Records that every message up to `seq` is acknowledged; only then may the journal before
    /// it go (`held`).
    fn write_acked(&self, seq: u64) {
        let path = acked_path(&self.data_dir);
        let tmp = path.with_extension("acked.tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{seq}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        match written {
            Ok(()) => {
                self.held.fetch_max(seq, Ordering::AcqRel);
            }
            Err(e) => tracing::warn!(
                "kafka: writing {} failed ({e}); the journal is kept from the last value written",
                path.display()
            ),
        }
    }
}

/// Produces one message, waiting while librdkafka's queue is full.
fn produce(
    producer: &BaseProducer<Delivery>,
    topic: &str,
    seq: u64,
    part: u32,
    through: u64,
    payload: &[u8],
) -> Result<(), String> {
    let (seq_text, part_text, through_text) = (seq.to_string(), part.to_string(), through.to_string());
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: SEQ, value: Some(&seq_text) })
        .insert(Header { key: PART, value: Some(&part_text) })
        .insert(Header { key: THROUGH, value: Some(&through_text) });
    let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, seq as usize)
        .payload(payload)
        .partition(0)
        .headers(headers);
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.context().acks.lock().expect("acks").sent(seq);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(format!("producing to {topic}: {e}")),
        }
    }
}

/// What `kafka.acked` says, if it is there.
fn read_acked(data_dir: &Path) -> Result<Option<u64>> {
    let path = acked_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(seq) => Ok(Some(seq)),
            // A write cut short by a crash (the rename is not made durable): start from what
            // the topics say, with the oldest state as the floor.
            Err(_) => {
                tracing::warn!("kafka: {} is unreadable; resuming from the topics' last messages", path.display());
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The oldest sequence whose state the data directory can rebuild: 0 while the journal starts at
/// the first command, else the oldest snapshot.
fn oldest_state(data_dir: &Path) -> Result<u64> {
    let journal_from = list_segments(&journal_dir(data_dir))?.first().map_or(1, |(first, _)| *first);
    if journal_from <= 1 {
        return Ok(0);
    }
    Ok(snapshot::list(&snapshot_dir(data_dir))?.first().map_or(0, |(seq, _)| *seq))
}
