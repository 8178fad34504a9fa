//! In-process clients of the engine. A [`Client`] submits requests (commands to the matcher,
//! queries to market data and history) and receives its replies in submission order, each once
//! its command is durable; the edges and the console each hold one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use viaduct_edges::Delivered;
use viaduct_matcher::{Command, RpcError, Spec};
use viaduct_protocol::{self as protocol, error_response, response_json, Owner, Routed};
use viaduct_publishers::history::writer::HistoryQuery;
use viaduct_publishers::service::{Query, QuerySender};
use viaduct_ring::{submit, Input};

use crate::backpressure::Admission;
use crate::delivery::{Registry, Watch};
use crate::replies::{AnswerSink, Inbox};

/// A reply as JSON, for clients without an event loop of their own ([`Client::recv`]): the
/// outcome of a command once it is durable, or a query's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The mark the client put on the request.
    pub tag: u64,
    pub request_id: i64,
    /// The command's journal sequence (0 when it changed nothing, and for queries).
    pub journal_seq: u64,
    /// The whole JSON-RPC response.
    pub json: String,
}

impl Response {
    /// A JSON reply (or refusal) to the request `request_id` marked `tag`.
    pub fn of_json(tag: u64, request_id: i64, json: String) -> Response {
        Response { tag, request_id, journal_seq: 0, json }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn into_json(self) -> String {
        self.json
    }

    /// `delivered` as JSON; none for deals of watched users, which answer no request.
    fn of(spec: &Spec, delivered: Delivered<'_>) -> Option<Response> {
        match delivered {
            Delivered::Outcome { tag, request_id, journal_seq, result, events, .. } => {
                Some(Response { tag, request_id, journal_seq, json: response_json(spec, request_id, result, events) })
            }
            Delivered::Answer { tag, request_id, json } => Some(Response { tag, request_id, journal_seq: 0, json }),
            Delivered::Deals { .. } | Delivered::Activity { .. } | Delivered::FillsLost => None,
        }
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Submits requests and receives their replies. A client with an event loop (an edge) takes them
/// typed through [`Client::receive`] and encodes them itself; others wait in [`Client::recv`].
pub struct Client {
    pub(crate) id: u32,
    pub(crate) input: Input,
    pub(crate) spec: Arc<Spec>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) watch: Arc<Watch>,
    /// Where the owners of queries (market data, history) put their answers for this client.
    pub(crate) answers: AnswerSink,
    pub(crate) queries: QuerySender,
    /// The durable sequence: a market-data query waits for the deals up to it.
    pub(crate) durable: Arc<AtomicU64>,
    /// Where history queries go, when history is on.
    pub(crate) history: Option<crossbeam_channel::Sender<HistoryQuery>>,
    pub(crate) admission: Admission,
    pub(crate) inflight: Arc<AtomicUsize>,
    pub(crate) inflight_max: usize,
    /// This client's end of its reply path; `None` once handed to [`Replies`].
    pub(crate) inbox: Option<Inbox>,
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
        let sink = self.answers.clone();
        let answer = Box::new(move |json: String| sink.answer(tag, request_id, json));
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

    /// Submits a decoded command with the client's own `tag`, returned with its outcome.
    pub fn submit_tagged(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command> {
        if self.inflight.load(Ordering::Acquire) >= self.inflight_max {
            return Err(cmd);
        }
        if cmd.is_write() && !self.admission.admits_write() {
            return Err(cmd);
        }
        submit(&mut self.input, self.id, tag, request_id, now_us(), cmd)?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn inbox(&mut self) -> &mut Inbox {
        self.inbox.as_mut().expect("this client's replies were handed to `Client::take_replies`")
    }

    /// Hands `each` everything ready, typed, in order: outcomes of commands, query answers,
    /// deals of watched users, and whether deals were lost. For edges, which encode them.
    pub fn receive(&mut self, each: &mut dyn FnMut(&Spec, Delivered<'_>)) {
        let spec = Arc::clone(&self.spec);
        let (_, answered) = self.inbox().receive(&spec, usize::MAX, each);
        if answered > 0 {
            self.inflight.fetch_sub(answered, Ordering::AcqRel);
        }
    }

    /// The next reply as JSON, waiting for it. For clients made without a `Notify`.
    pub fn recv(&mut self) -> Response {
        let (spec, inflight) = (Arc::clone(&self.spec), Arc::clone(&self.inflight));
        recv(self.inbox(), &spec, &inflight)
    }

    /// The next reply as JSON if one is ready.
    pub fn try_recv(&mut self) -> Option<Response> {
        let (spec, inflight) = (Arc::clone(&self.spec), Arc::clone(&self.inflight));
        try_recv(self.inbox(), &spec, &inflight)
    }

    /// Hands the receiving end to another thread; this client then only submits.
    pub fn take_replies(&mut self) -> Replies {
        let inbox = self.inbox.take().expect("replies already taken");
        Replies { inbox, spec: Arc::clone(&self.spec), inflight: Arc::clone(&self.inflight) }
    }

    /// Starts (`on`) or stops receiving the deals of `user`'s resting orders
    /// ([`Delivered::Deals`], through [`Client::receive`]).
    pub fn watch(&self, user: u32, on: bool) {
        self.set_interest(&self.watch.users, user, on);
    }

    /// Starts (`on`) or stops receiving every durable command that touched `user`
    /// ([`Delivered::Activity`], through [`Client::receive`]).
    pub fn follow(&self, user: u32, on: bool) {
        self.set_interest(&self.watch.followed, user, on);
    }

    /// Adds (`on`) or removes this client among `user`'s in `map`, and tells the reply stage.
    fn set_interest(&self, map: &std::sync::Mutex<std::collections::HashMap<u32, Vec<u32>>>, user: u32, on: bool) {
        let mut users = map.lock().expect("watch lock");
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

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// The next reply as JSON if one is ready; deals of watched users are passed over.
fn try_recv(inbox: &mut Inbox, spec: &Spec, inflight: &AtomicUsize) -> Option<Response> {
    loop {
        // One delivery at most (and perhaps `FillsLost` after it, which is no reply).
        let mut got = None;
        let (handed, _) = inbox.receive(spec, 1, &mut |spec, d| {
            if got.is_none() {
                got = Response::of(spec, d);
            }
        });
        if handed == 0 {
            return None;
        }
        if let Some(r) = got {
            inflight.fetch_sub(1, Ordering::AcqRel);
            return Some(r);
        }
    }
}

fn recv(inbox: &mut Inbox, spec: &Spec, inflight: &AtomicUsize) -> Response {
    loop {
        if let Some(r) = try_recv(inbox, spec, inflight) {
            return r;
        }
        inbox.park();
    }
}

/// The receiving end of a [`Client`], on another thread.
pub struct Replies {
    inbox: Inbox,
    spec: Arc<Spec>,
    inflight: Arc<AtomicUsize>,
}

impl Replies {
    /// The next reply, waiting for it.
    pub fn recv(&mut self) -> Response {
        recv(&mut self.inbox, &self.spec, &self.inflight)
    }

    /// Whether no reply is waiting.
    pub fn is_empty(&self) -> bool {
        self.inbox.is_empty()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The inbox first, so that the reply stage, told of the departure, finds its outbox gone.
        drop(self.inbox.take());
        if let Ok(mut arrivals) = self.registry.arrivals.lock() {
            arrivals.remove(&self.id);
        }
        self.registry.departures.fetch_add(1, Ordering::AcqRel);
        for map in [&self.watch.users, &self.watch.followed] {
            if let Ok(mut users) = map.lock() {
                users.retain(|_, clients| {
                    clients.retain(|&c| c != self.id);
                    !clients.is_empty()
                });
            }
        }
        self.watch.version.fetch_add(1, Ordering::AcqRel);
    }
}
