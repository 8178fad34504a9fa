//! The market-data consumer on its own thread: it takes batches of durable deals from the
//! pipeline and answers marketprice queries from its own bounded queue, never through the matcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TrySendError};
use serde_json::Value;
use viaduct_matcher::event::Deal;
use viaduct_matcher::RpcError;
use viaduct_protocol::error_response;

use crate::market::MarketData;

/// How many commands market data may lag what it was fed before state-changing requests get
/// error 3 (`[market] lag_max`): the feed itself never refuses and never makes the pipeline
/// wait, so this bound, checked where requests come in, is what bounds it.
pub const LAG_MAX_DEFAULT: u64 = 100_000;
/// Queries waiting; past it a query is answered error 3.
pub const QUERIES_MAX: usize = 1024;
/// Longest a query waits for deals of its moment to arrive (only a stopping pipeline takes so
/// long).
const QUERY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

// Which methods come here is the edges' method table's to say (`viaduct_edges::protocol`);
// a method this consumer does not answer is error 4.

/// One query and where its answer goes: the whole JSON-RPC response.
pub struct Query {
    /// Answer only once every deal up to this journal sequence has been taken (the durable
    /// sequence when the query was made, so a client sees the deals of every reply it had).
    pub min_seq: u64,
    pub id: i64,
    pub method: String,
    pub params: Vec<Value>,
    pub answer: Box<dyn FnOnce(String) + Send>,
}

/// The running consumer. Dropping every feed sender stops it; [`MarketService::join`] then
/// returns its final state.
pub struct MarketService {
    feed: Sender<(u64, Vec<Deal>)>,
    sent_seq: Arc<AtomicU64>,
    /// The sequence of the last batch put in the feed, and of the last one applied: the lag.
    queued: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
    queries: Sender<Query>,
    thread: JoinHandle<MarketData>,
}

impl MarketService {
    /// Starts the consumer on `md`, which holds every deal up to journal sequence `seq`.
    pub fn spawn(md: MarketData, seq: u64) -> std::io::Result<MarketService> {
        let (feed, feed_rx) = unbounded::<(u64, Vec<Deal>)>();
        let (queries, queries_rx) = bounded::<Query>(QUERIES_MAX);
        let sent_seq = Arc::new(AtomicU64::new(seq));
        let (queued, applied) = (Arc::new(AtomicU64::new(seq)), Arc::new(AtomicU64::new(seq)));
        let (fed, done) = (Arc::clone(&sent_seq), Arc::clone(&applied));
        let thread = std::thread::Builder::new()
            .name("viaduct-market".into())
            .spawn(move || run(md, feed_rx, queries_rx, &fed, &done))?;
        Ok(MarketService { feed, sent_seq, queued, applied, queries, thread })
    }

    /// Where the feeder says how far it has sent deals: it stores a journal sequence after every
    /// deal up to it is in the feed (0 until then), so that queries can wait for it.
    pub fn sent_seq(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.sent_seq)
    }

    /// Where the pipeline sends batches of durable deals, each with the sequence of its last
    /// command; it stores that sequence in [`queued`](Self::queued) first. Sending never waits.
    pub fn feed(&self) -> Sender<(u64, Vec<Deal>)> {
        self.feed.clone()
    }

    /// The sequence of the last batch put in the feed (stored by the feeder).
    pub fn queued(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.queued)
    }

    /// The sequence of the last batch the consumer has applied: `queued - applied` is its lag.
    pub fn applied(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.applied)
    }

    /// Where edges send queries.
    pub fn queries(&self) -> QuerySender {
        QuerySender { tx: self.queries.clone() }
    }

    /// Waits for the consumer to take every deal sent (once every feed sender is dropped) and
    /// returns its state.
    pub fn join(self) -> MarketData {
        let MarketService { feed, queries, thread, .. } = self;
        drop((feed, queries));
        thread.join().expect("the market data thread")
    }
}

/// The sending side of the query queue.
#[derive(Clone)]
pub struct QuerySender {
    tx: Sender<Query>,
}

impl QuerySender {
    /// Queues a query; a full queue is error 3, which the caller answers itself.
    pub fn send(&self, q: Query) -> Result<(), RpcError> {
        match self.tx.try_send(q) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(RpcError::ServiceUnavailable),
        }
    }
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn run(
    mut md: MarketData,
    feed: Receiver<(u64, Vec<Deal>)>,
    mut queries: Receiver<Query>,
    sent: &AtomicU64,
    applied: &AtomicU64,
) -> MarketData {
    let apply = |md: &mut MarketData, (seq, deals): (u64, Vec<Deal>)| {
        deals.iter().for_each(|d| md.apply(d));
        applied.store(seq, Ordering::Release);
    };
    loop {
        select! {
            recv(feed) -> batch => match batch {
                Ok(batch) => apply(&mut md, batch),
                Err(_) => return md,
            },
            recv(queries) -> q => {
                let Ok(q) = q else {
                    queries = crossbeam_channel::never(); // no sender is left
                    continue;
                };
                // Every deal durable before the query was made is taken first: wait until the
                // feeder has sent them, taking what it sends meanwhile.
                let waited = std::time::Instant::now();
                loop {
                    while let Ok(batch) = feed.try_recv() {
                        apply(&mut md, batch);
                    }
                    if sent.load(Ordering::Acquire) >= q.min_seq || waited.elapsed() > QUERY_WAIT_MAX {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
                let json = match md.query(now_s(), &q.method, &q.params) {
                    Ok(result) => format!(r#"{{"error":null,"result":{result},"id":{}}}"#, q.id),
                    Err(e) => error_response(Some(q.id), e),
                };
                (q.answer)(json);
            },
        }
    }
}
