//! In-process clients of the engine. A [`Client`] submits requests (commands to the matcher,
//! queries to market data and history) and receives its replies in submission order, each once
//! its command is durable; the edges and the console each hold one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use viaduct_edges::protocol::{self, Owner, Routed};
use viaduct_edges::Payload;
use viaduct_matcher::reply::error_response;
use viaduct_matcher::reply::Encoding;
use viaduct_matcher::{Command, RpcError, Spec};
use viaduct_publishers::history::writer::HistoryQuery;
use viaduct_publishers::service::{Query, QuerySender};
use viaduct_ring::{submit_encoded, Input};

use crate::backpressure::Admission;
use crate::delivery::{Registry, Sink, Watch};
use crate::replies::ReplyReceiver;

/// A reply, released once its command is durable; or a watched user's fills.
#[derive(Debug, Clone)]
pub struct Response {
    /// The mark the client put on the request (0 for fills).
    pub tag: u64,
    pub request_id: i64,
    /// The command's journal sequence (0 when it changed nothing).
    pub journal_seq: u64,
    /// The JSON-RPC response, the binary execution reports the request asked for
    /// ([`Encoding::Binary`]), or a watched user's fills, which answer no request.
    pub body: Payload,
}

impl Response {
    /// A JSON reply (or refusal) to the request `request_id` marked `tag`.
    pub fn of_json(tag: u64, request_id: i64, json: String) -> Response {
        Response { tag, request_id, journal_seq: 0, body: Payload::Json(json) }
    }

    /// The JSON of a JSON reply; empty for reports and fills.
    pub fn json(&self) -> &str {
        match &self.body {
            Payload::Json(json) => json,
            _ => "",
        }
    }

    /// [`Response::json`], taken.
    pub fn into_json(self) -> String {
        match self.body {
            Payload::Json(json) => json,
            _ => String::new(),
        }
    }

    /// Whether it answers a request (fills do not).
    pub fn answers_a_request(&self) -> bool {
        !matches!(self.body, Payload::Fills { .. } | Payload::FillsLost)
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Submits requests and receives their replies, in submission order.
pub struct Client {
    pub(crate) id: u32,
    pub(crate) input: Input,
    pub(crate) spec: Arc<Spec>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) watch: Arc<Watch>,
    pub(crate) fills_lost: Arc<AtomicBool>,
    /// Where answers to market-data queries go: this client's own reply queue.
    pub(crate) sink: Sink,
    pub(crate) queries: QuerySender,
    /// The durable sequence: a market-data query waits for the deals up to it.
    pub(crate) durable: Arc<AtomicU64>,
    /// Where history queries go, when history is on.
    pub(crate) history: Option<crossbeam_channel::Sender<HistoryQuery>>,
    pub(crate) admission: Admission,
    pub(crate) inflight: Arc<AtomicUsize>,
    pub(crate) inflight_max: usize,
    pub(crate) rx: ReplyReceiver,
}

/// Why a request was not submitted: the response to give instead.
#[derive(Debug)]
pub struct Refused(pub Response);

impl Client {
    /// Decodes and submits one request. A request that does not decode, or finds the input ring
    /// or this client's in-flight bound full, is answered at once instead.
    pub fn submit(&mut self, request_id: i64, method: &str, params: &[Value]) -> Result<(), Refused> {
        let refuse = |e: RpcError| {
            let json = error_response(Some(request_id), e);
            Refused(Response::of_json(0, request_id, json))
        };
        self.submit_tagged_request(0, request_id, method, params).map_err(refuse)
    }

    /// Decodes and submits one request of any method with `tag`; a market-data method goes to the
    /// market-data thread.
    pub fn submit_tagged_request(
        &mut self,
        tag: u64,
        request_id: i64,
        method: &str,
        params: &[Value],
    ) -> Result<(), RpcError> {
        match protocol::route(&self.spec, method, params)? {
            Routed::Command(cmd) => self.submit_tagged(tag, request_id, cmd).map_err(|_| RpcError::ServiceUnavailable),
            Routed::Query(_) => self.query(tag, request_id, method, params.to_vec()),
        }
    }

    /// Queues a market-data or history query; its answer arrives with the replies, marked `tag`.
    /// Error 4 for a method neither answers, 3 when its queue or this client is full.
    pub fn query(&mut self, tag: u64, request_id: i64, method: &str, params: Vec<Value>) -> Result<(), RpcError> {
        let history = match protocol::method(method).map(|m| m.owner) {
            Some(Owner::MarketData) => false,
            Some(Owner::History) if self.history.is_some() => true,
            _ => return Err(RpcError::MethodNotFound),
        };
        if self.inflight.load(Ordering::Acquire) >= self.inflight_max {
            return Err(RpcError::ServiceUnavailable);
        }
        let sink = self.sink.clone();
        let answer = Box::new(move |json: String| {
            let response = Response::of_json(tag, request_id, json);
            if sink.queue.push(response).is_ok() {
                if let Some(notify) = &sink.notify {
                    notify();
                }
            }
        });
        let method = method.to_string();
        match &self.history {
            Some(queries) if history => queries
                .try_send(HistoryQuery { id: request_id, method, params, answer })
                .map_err(|_| RpcError::ServiceUnavailable)?,
            _ => {
                let min_seq = self.durable.load(Ordering::Acquire);
                self.queries.send(Query { min_seq, id: request_id, method, params, answer })?
            }
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Submits a decoded command; hands it back when this client's in-flight bound or the input
    /// ring is full (error 3 to a remote caller).
    pub fn submit_command(&mut self, request_id: i64, cmd: Command) -> Result<(), Command> {
        self.submit_tagged(0, request_id, cmd)
    }

    /// Submits a decoded command with the client's own `tag`, returned with its JSON reply.
    pub fn submit_tagged(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command> {
        self.submit_encoded(tag, request_id, cmd, Encoding::Json)
    }

    /// Submits a decoded command with the client's own `tag`, its reply encoded as `encoding`.
    pub fn submit_encoded(
        &mut self,
        tag: u64,
        request_id: i64,
        cmd: Command,
        encoding: Encoding,
    ) -> Result<(), Command> {
        if self.inflight.load(Ordering::Acquire) >= self.inflight_max {
            return Err(cmd);
        }
        if cmd.is_write() && !self.admission.admits_write() {
            return Err(cmd);
        }
        submit_encoded(&mut self.input, (self.id, tag, request_id), now_us(), encoding, cmd)?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A handle that receives this client's replies on another thread.
    pub fn replies(&self) -> Replies {
        Replies { rx: self.rx.clone(), inflight: Arc::clone(&self.inflight) }
    }

    /// The next reply, waiting for it.
    pub fn recv(&self) -> Response {
        let r = self.rx.recv();
        answered(&self.inflight, &r);
        r
    }

    /// The next reply if one is ready.
    pub fn try_recv(&self) -> Option<Response> {
        let r = self.rx.try_recv()?;
        answered(&self.inflight, &r);
        Some(r)
    }

    /// Starts (`on`) or stops receiving the fills of `user`'s resting orders, as responses whose
    /// body is [`Payload::Fills`].
    pub fn watch(&self, user: u32, on: bool) {
        let mut users = self.watch.users.lock().expect("watch lock");
        let clients = users.entry(user).or_default();
        clients.retain(|&c| c != self.id);
        if on {
            clients.push(self.id);
        }
        if clients.is_empty() {
            users.remove(&user);
        }
        self.watch.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether fills were dropped because this client did not take them fast enough (cleared by
    /// the call).
    pub fn take_fills_lost(&self) -> bool {
        // A load first: the edges ask at every turn, and a swap would write the line each time.
        self.fills_lost.load(Ordering::Relaxed) && self.fills_lost.swap(false, Ordering::AcqRel)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// The receiving half of a [`Client`], for another thread.
pub struct Replies {
    rx: ReplyReceiver,
    inflight: Arc<AtomicUsize>,
}

impl Replies {
    /// The next reply, waiting for it.
    pub fn recv(&self) -> Response {
        let r = self.rx.recv();
        answered(&self.inflight, &r);
        r
    }

    /// Whether no reply is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// A reply frees an in-flight place; fills answer no request.
fn answered(inflight: &AtomicUsize, r: &Response) {
    if r.answers_a_request() {
        inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(mut r) = self.registry.lock() {
            r.remove(&self.id);
        }
        if let Ok(mut users) = self.watch.users.lock() {
            users.retain(|_, clients| {
                clients.retain(|&c| c != self.id);
                !clients.is_empty()
            });
            self.watch.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}
