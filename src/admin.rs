//! The operator's socket (ViaBTC's CLI port, made local): `<data_dir>/viaduct.sock`, a Unix
//! socket only the server's user can open (mode 0600), never on the network. `viaduct ctl` sends
//! one line and reads one JSON answer:
//!
//! - `status`: durable sequence, journal commit groups, each bounded consumer's lag and bound,
//!   uptime, profile, process id;
//! - `balances USER`: the user's balances (as `balance.query` answers them);
//! - `markets`: every market's summary (as `market.summary` answers it).
//!
//! One connection at a time on a thread of its own (`viaduct-admin`); a request line is at most
//! 1 KiB and must arrive within 2 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Client;
use crate::engine::Probes;

/// The socket's name in the data directory.
pub const SOCKET: &str = "viaduct.sock";
const LINE_BYTES_MAX: u64 = 1024;

/// The socket of the server on `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// The running socket; dropping it stops the thread and lets go of its engine client (which
/// must happen before the engine can drain and stop).
pub struct Admin {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Admin {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Ends the thread's wait in `accept`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing one a stopped server left; the data directory's lock says no other
/// server runs here) and serves it until dropped.
pub fn start(data_dir: &Path, probes: Probes, mut client: Client, profile: String) -> std::io::Result<Admin> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("viaduct-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            if stopped.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = stream else { continue };
            if let Err(e) = serve(stream, &probes, &mut client, &profile, started) {
                tracing::debug!("admin: a request failed: {e}");
            }
        }
    })?;
    Ok(Admin { path, stop, thread: Some(thread) })
}

fn serve(
    stream: UnixStream,
    probes: &Probes,
    client: &mut Client,
    profile: &str,
    started: Instant,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(LINE_BYTES_MAX)).read_line(&mut line)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let answer = match words.as_slice() {
        ["status"] => {
            let lags: serde_json::Map<String, Value> = probes
                .lags()
                .into_iter()
                .map(|(name, lag, max)| (name.trim_start_matches("the ").to_string(), json!({"lag": lag, "max": max})))
                .collect();
            json!({
                "durable_sequence": probes.durable_seq(),
                "journal_commit_groups": probes.journal_commits(),
                "consumers": lags,
                "uptime_s": started.elapsed().as_secs(),
                "profile": profile,
                "pid": std::process::id(),
            })
        }
        ["balances", user] => match user.parse::<u32>() {
            Ok(user) => ask(client, "balance.query", &[json!(user)]),
            Err(_) => json!({"error": format!("{user:?} is not a user id")}),
        },
        ["markets"] => ask(client, "market.summary", &[]),
        ["snapshot"] => snapshot_now(probes),
        _ => json!({"error": "commands: status, snapshot, balances USER, markets"}),
    };
    let mut stream = stream;
    writeln!(stream, "{answer}")
}

/// How long `snapshot` waits for the worker (a large state takes seconds to encode).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// Asks the snapshot worker for a snapshot of everything it has read and waits for its answer.
fn snapshot_now(probes: &Probes) -> Value {
    let Some(control) = probes.snapshots() else {
        return json!({"error": "this profile writes no journal (durability none): there is nothing to snapshot"});
    };
    let (answered, taken, failed) = (
        control.answered.load(Ordering::Acquire),
        control.taken.load(Ordering::Acquire),
        control.failed.load(Ordering::Acquire),
    );
    control.request();
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    while control.answered.load(Ordering::Acquire) == answered {
        if Instant::now() >= deadline {
            return json!({"error": format!("the snapshot worker did not answer in {} s", SNAPSHOT_WAIT.as_secs())});
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if control.failed.load(Ordering::Acquire) > failed {
        return json!({"error": "the snapshot failed: the alert in the log says why"});
    }
    if control.taken.load(Ordering::Acquire) == taken {
        return json!({
            "taken": false,
            "why": "nothing was journaled since the worker's last snapshot (or the state it started from)",
            "sequence": control.last_seq.load(Ordering::Acquire),
        });
    }
    json!({
        "taken": true,
        "sequence": control.last_seq.load(Ordering::Acquire),
        "ms": control.last_ms.load(Ordering::Acquire),
        "bytes": control.last_bytes.load(Ordering::Acquire),
    })
}

/// A request through the engine, as any client's: its JSON response.
fn ask(client: &mut Client, method: &str, params: &[Value]) -> Value {
    let text = match client.submit(1, method, params) {
        Ok(()) => client.recv().into_json(),
        Err(refused) => refused.0.into_json(),
    };
    serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": "the engine's answer was not JSON"}))
}

/// `viaduct ctl`: sends `command` to the server on `data_dir` and returns its answer.
pub fn ctl(data_dir: &Path, command: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!("no server answers on {} (is viaduct running on this data directory?)", path.display())
    })?;
    stream.set_read_timeout(Some(SNAPSHOT_WAIT + Duration::from_secs(10)))?;
    writeln!(stream, "{command}")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
