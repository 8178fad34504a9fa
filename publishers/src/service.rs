//! The market-data consumer on its own thread: it takes batches of durable deals from the
//! pipeline and answers marketprice queries from its own bounded queue, never through the matcher.

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

/// The methods this consumer answers.
pub const METHODS: [&str; 5] = ["market.last", "market.deals", "market.kline", "market.status", "market.status_today"];

/// Whether `method` is one market data answers.
pub fn is_market_method(method: &str) -> bool {
    METHODS.contains(&method)
}

/// One query and where its answer goes: the whole JSON-RPC response.
pub struct Query {
    pub id: i64,
    pub method: String,
    pub params: Vec<Value>,
    pub answer: Box<dyn FnOnce(String) + Send>,
}

/// The running consumer. Dropping every feed sender stops it; [`MarketService::join`] then
/// returns its final state.
pub struct MarketService {
    feed: Sender<Vec<Deal>>,
    queries: Sender<Query>,
    thread: JoinHandle<MarketData>,
}

impl MarketService {
    pub fn spawn(md: MarketData) -> std::io::Result<MarketService> {
        let (feed, feed_rx) = bounded::<Vec<Deal>>(FEED_BATCHES_MAX);
        let (queries, queries_rx) = bounded::<Query>(QUERIES_MAX);
        let thread =
            std::thread::Builder::new().name("viaduct-market".into()).spawn(move || run(md, feed_rx, queries_rx))?;
        Ok(MarketService { feed, queries, thread })
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
        let MarketService { feed, queries, thread } = self;
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

fn run(mut md: MarketData, feed: Receiver<Vec<Deal>>, mut queries: Receiver<Query>) -> MarketData {
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
                // Deals already waiting are taken first, so an answer never misses a deal that
                // was durable before the query arrived.
                while let Ok(deals) = feed.try_recv() {
                    deals.iter().for_each(|d| md.apply(d));
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
