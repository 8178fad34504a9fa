//! The WebSocket edge's calls to the operator's authentication service (SPEC B3.3): an HTTP GET
//! per `server.auth` or `server.sign`, made with `ureq` on a small pool of worker threads so that
//! the edge's event loop never waits on it. Jobs and results travel on bounded channels; a full
//! job queue answers error 3 at once.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use viaduct_matcher::RpcError;

use crate::Notify;

/// Where and how long to ask (`[auth]`: ViaBTC's `auth_url`, `sign_url`, `backend_timeout`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub url: String,
    /// `None`: `server.sign` is not offered (error 4).
    pub sign_url: Option<String>,
    pub timeout: Duration,
}

/// What a connection asked.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    /// `server.auth [token, source]`.
    Token { token: String },
    /// `server.sign [access_id, authorisation, tonce]`.
    Sign { access_id: String, authorisation: String, tonce: i64 },
}

/// One call: for connection `index` of generation `gen`, request `id`.
pub(crate) struct Job {
    pub index: usize,
    pub gen: u64,
    pub id: i64,
    pub ask: Ask,
    pub source: String,
}

/// Why a call gave no user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Error 2 (the service down, or a reply that is not one), 4 (no `sign_url`) or 5 (timeout).
    Rpc(RpcError),
    /// The service said no: error 11 with its message.
    Service(String),
}

/// Its answer: the user id, or why not.
pub(crate) struct Done {
    pub index: usize,
    pub gen: u64,
    pub id: i64,
    pub source: String,
    pub user: Result<u32, Refused>,
}

/// Calls waiting for a worker, at most.
const JOBS_MAX: usize = 1024;
/// Worker threads.
const WORKERS: usize = 2;

/// The pool: queue a job with [`Auth::ask`], take results with [`Auth::done`].
pub(crate) struct Auth {
    jobs: SyncSender<Job>,
    results: Receiver<Done>,
}

impl Auth {
    /// Starts the workers; each finished call rings `notify`.
    pub(crate) fn start(cfg: AuthConfig, notify: Notify) -> std::io::Result<Auth> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(JOBS_MAX);
        let (finished, results) = mpsc::sync_channel::<Done>(JOBS_MAX);
        let queue = Arc::new(Mutex::new(queue));
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        for n in 0..WORKERS {
            let (queue, finished, notify, agent, cfg) =
                (Arc::clone(&queue), finished.clone(), Arc::clone(&notify), agent.clone(), cfg.clone());
            std::thread::Builder::new().name(format!("viaduct-ws-auth-{n}")).spawn(move || loop {
                let job = match queue.lock().expect("auth queue lock").recv() {
                    Ok(job) => job,
                    Err(_) => return, // the edge is gone
                };
                let user = call(&agent, &cfg, &job.ask);
                let done = Done { index: job.index, gen: job.gen, id: job.id, source: job.source, user };
                if finished.send(done).is_err() {
                    return;
                }
                notify();
            })?;
        }
        Ok(Auth { jobs, results })
    }

    /// Queues a call; error 3 when the queue is full.
    pub(crate) fn ask(&self, job: Job) -> Result<(), RpcError> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RpcError::ServiceUnavailable),
            Err(TrySendError::Disconnected(_)) => Err(RpcError::Internal),
        }
    }

    /// A finished call, if any.
    pub(crate) fn done(&self) -> Option<Done> {
        self.results.try_recv().ok()
    }
}

/// Makes the GET and reads its answer as SPEC B3.3 says.
fn call(agent: &ureq::Agent, cfg: &AuthConfig, ask: &Ask) -> Result<u32, Refused> {
    let request = match ask {
        Ask::Token { token } => agent.get(&cfg.url).set("Authorization", token),
        Ask::Sign { access_id, authorisation, tonce } => {
            let Some(url) = &cfg.sign_url else { return Err(Refused::Rpc(RpcError::MethodNotFound)) };
            agent
                .get(url)
                .query("access_id", access_id)
                .query("tonce", &tonce.to_string())
                .set("Authorization", authorisation)
        }
    };
    let request = request.set("Accept-Language", "en_US").set("Content-Type", "application/json");
    let started = Instant::now();
    let body = match request.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into_string(),
        // A call that failed after the whole timeout is a timeout (5); one refused at once finds
        // the service down (2).
        Err(_) if started.elapsed() >= cfg.timeout => return Err(Refused::Rpc(RpcError::ServiceTimeout)),
        Err(_) => return Err(Refused::Rpc(RpcError::Internal)),
    };
    let body = match body {
        Ok(b) => b,
        Err(_) if started.elapsed() >= cfg.timeout => return Err(Refused::Rpc(RpcError::ServiceTimeout)),
        Err(_) => return Err(Refused::Rpc(RpcError::Internal)),
    };
    answer(&body)
}

/// The service's reply: `{"code": 0, "message": ..., "data": {"user_id": N}}`.
fn answer(body: &str) -> Result<u32, Refused> {
    let bad = || Refused::Rpc(RpcError::Internal);
    let v: Value = serde_json::from_str(body).map_err(|_| bad())?;
    let code = v.get("code").and_then(Value::as_i64).ok_or_else(bad)?;
    if code != 0 {
        let message = v.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        return Err(Refused::Service(message));
    }
    let user = v.get("data").and_then(|d| d.get("user_id")).and_then(Value::as_u64).ok_or_else(bad)?;
    match u32::try_from(user) {
        Ok(u) if u != 0 => Ok(u),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_reply_is_read_as_viabtc_reads_it() {
        assert_eq!(answer(r#"{"code": 0, "message": "ok", "data": {"user_id": 42}}"#).ok(), Some(42));
        match answer(r#"{"code": 3, "message": "token expired"}"#) {
            Err(Refused::Service(m)) => assert_eq!(m, "token expired"),
            other => panic!("{other:?}"),
        }
        for bad in [
            "not json",
            r#"{"message": "no code"}"#,
            r#"{"code": 0, "data": {}}"#,
            r#"{"code": 0, "data": {"user_id": 0}}"#,
            r#"{"code": 0, "data": {"user_id": 4294967296}}"#,
            r#"{"code": 0, "data": {"user_id": "7"}}"#,
        ] {
            assert_eq!(answer(bad), Err(Refused::Rpc(RpcError::Internal)), "{bad}");
        }
    }
}
