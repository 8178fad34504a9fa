//! The market-data consumer on its own thread: it takes batches of durable deals from the
//! pipeline and answers marketprice queries from its own bounded queue, never through the matcher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use serde_json::Value;
use viaduct_matcher::event::Deal;
use viaduct_matcher::reply::error_response;
use viaduct_matcher::RpcError;

use crate::market::MarketData;

/// Batches of deals the consumer may have waiting; past it the pipeline's reply stage waits (the
/// consumer's lag is bounded, and matching slows only if it falls that far behind).
pub const FEED_BATCHES_MAX: usize = 4096;
/// Queries waiting; past it a query is answered error 3.
pub const QUERIES_MAX: usize = 1024;
/// Longest a query waits for deals of its moment to arrive (only a stopping pipeline takes so
/// long).
const QUERY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The methods this consumer answers.
pub const METHODS: [&str; 5] = ["market.last", "market.deals", "market.kline", "market.status", "market.status_today"];

/// Whether `method` is one market data answers.
pub fn is_market_method(method: &str) -> bool {
    METHODS.contains(&method)
}

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
    feed: Sender<Vec<Deal>>,
    sent_seq: Arc<AtomicU64>,
    queries: Sender<Query>,
    thread: JoinHandle<MarketData>,
}

impl MarketService {
    /// Starts the consumer on `md`, which holds every deal up to journal sequence `seq`.
    pub fn spawn(md: MarketData, seq: u64) -> std::io::Result<MarketService> {
        let (feed, feed_rx) = bounded::<Vec<Deal>>(FEED_BATCHES_MAX);
        let (queries, queries_rx) = bounded::<Query>(QUERIES_MAX);
        let sent_seq = Arc::new(AtomicU64::new(seq));
        let fed = Arc::clone(&sent_seq);
        let thread = std::thread::Builder::new()
            .name("viaduct-market".into())
            .spawn(move || run(md, feed_rx, queries_rx, &fed))?;
        Ok(MarketService { feed, sent_seq, queries, thread })
    }

    /// Where the feeder says how far it has sent deals: it stores a journal sequence after every
    /// deal up to it is in the feed (0 until then), so that queries can wait for it.
    pub fn sent_seq(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.sent_seq)
    }

    /// Where the pipeline sends batches of durable deals.
    pub fn feed(&self) -> Sender<Vec<Deal>> {
        self.feed.clone()
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

fn run(mut md: MarketData, feed: Receiver<Vec<Deal>>, mut queries: Receiver<Query>, sent: &AtomicU64) -> MarketData {
    loop {
        select! {
            recv(feed) -> batch => match batch {
                Ok(deals) => deals.iter().for_each(|d| md.apply(d)),
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
                    while let Ok(deals) = feed.try_recv() {
                        deals.iter().for_each(|d| md.apply(d));
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
