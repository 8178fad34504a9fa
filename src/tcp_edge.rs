//! The TCP edge attached to the engine: on a thread of its own, or run in the matcher thread's
//! waits; and [`EdgeBackend`], the engine as any edge's backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use viaduct_edges::Delivered;
use viaduct_matcher::{Command, RpcError, Spec};

use crate::client::Client;
use crate::engine::{Engine, Notify};

pub enum TcpEdgeRunning {
    Own(viaduct_edges::tcp::TcpEdge),
    OnMatcher(OnMatcher),
}

/// The TCP edge's loop handed to the matcher's thread. Dropping this stops the loop and waits
/// until the matcher's thread has dropped it (with its client, so that the pipeline can stop).
pub struct OnMatcher {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    wake: viaduct_ring::Wake,
}

impl Drop for OnMatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        (self.wake)();
        let started = Instant::now();
        while !self.done.load(Ordering::Acquire) {
            if started.elapsed() > Duration::from_secs(10) {
                tracing::error!("tcp: the matcher's thread did not stop the edge's loop within 10 s");
                return;
            }
            (self.wake)();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Starts the TCP edge for `engine`: on a thread of its own, or, with `on_matcher`, as the
/// matcher thread's idle work ([`Engine::run_on_matcher`]), where a binary order is read,
/// matched, journaled and answered on one thread. Returns the bound address. Either way the edge
/// holds a client of the engine: drop it before [`Engine::shutdown`], which waits for every client.
pub fn start_tcp_edge(
    engine: &Engine,
    cfg: viaduct_edges::tcp::TcpConfig,
    on_matcher: bool,
) -> std::io::Result<(std::net::SocketAddr, TcpEdgeRunning)> {
    if !on_matcher {
        let edge = viaduct_edges::tcp::TcpEdge::start(cfg, |notify| EdgeBackend::new(engine, notify))?;
        return Ok((edge.local_addr(), TcpEdgeRunning::Own(edge)));
    }
    // Replies released on the matcher's thread are written in its next turn: no wake needed.
    let backend = |notify: Notify| {
        let notify: Notify = Arc::new(move || {
            if !viaduct_ring::on_matcher_thread() {
                notify();
            }
        });
        EdgeBackend::new(engine, notify)
    };
    let (mut edge, wake) = viaduct_edges::tcp::TcpLoop::bind(cfg, backend)?;
    let addr = edge.local_addr();
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let guard = SetOnDrop(Arc::clone(&done));
    let stopped = Arc::clone(&stop);
    let mut collected = std::time::Instant::now();
    let idle: viaduct_ring::Idle = Box::new(move |timeout| {
        let _dropped_with_the_loop = &guard;
        if collected.elapsed() >= std::time::Duration::from_secs(1) {
            viaduct_journaler::return_freed_memory();
            collected = std::time::Instant::now();
        }
        !stopped.load(Ordering::Acquire) && edge.turn(timeout)
    });
    engine.run_on_matcher(idle, Arc::clone(&wake));
    Ok((addr, TcpEdgeRunning::OnMatcher(OnMatcher { stop, done, wake })))
}

/// The engine as an edge's backend: one client for the whole edge, woken per batch of replies.
pub struct EdgeBackend {
    client: Client,
}

impl EdgeBackend {
    pub fn new(engine: &Engine, notify: viaduct_edges::Notify) -> EdgeBackend {
        EdgeBackend { client: engine.client_with_notify(notify) }
    }
}

impl viaduct_edges::Backend for EdgeBackend {
    fn spec(&self) -> &Spec {
        self.client.spec()
    }

    fn submit(&mut self, tag: u64, request_id: i64, cmd: Command) -> Result<(), Command> {
        self.client.submit_tagged(tag, request_id, cmd)
    }

    fn receive(&mut self, each: &mut dyn FnMut(&Spec, Delivered<'_>)) {
        self.client.receive(each)
    }

    fn watch(&mut self, user: u32, on: bool) {
        self.client.watch(user, on);
    }

    fn follow(&mut self, user: u32, on: bool) {
        self.client.follow(user, on);
    }

    fn query(&mut self, tag: u64, request_id: i64, method: &str, params: Vec<Value>) -> Result<(), RpcError> {
        self.client.query(tag, request_id, method, params)
    }
}
