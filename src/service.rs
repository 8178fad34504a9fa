//! Running under systemd, or any supervisor that speaks its notify protocol: `READY=1` once
//! recovery is done and the edges listen, `WATCHDOG=1` while the matcher's thread makes progress
//! (so a wedged matcher is restarted within `WatchdogSec`), `STOPPING=1` when it stops. Without
//! `NOTIFY_SOCKET` in the environment nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use viaduct_ring::Progress;

/// Where the supervisor listens (`NOTIFY_SOCKET`).
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The supervisor's socket, when one is named: a path, or `@name` in the abstract namespace.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_str()?;
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(name).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, to })
    }

    /// Sends one message (`READY=1`, ...); a supervisor that is gone is logged, never waited for.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.to) {
            tracing::warn!("service: {msg:?} could not be sent to the supervisor: {e}");
        }
    }
}

/// The watchdog interval the supervisor asks for (`WATCHDOG_USEC`), when it is meant for this
/// process (`WATCHDOG_PID`, if set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog at half its interval, each time the matcher's loop has passed since the
/// last feed; a matcher that stopped passing is not fed for, and the supervisor restarts it.
pub fn start_watchdog(notifier: Arc<Notifier>, progress: Arc<Progress>, interval: Duration) -> std::io::Result<()> {
    let every = (interval / 2).max(Duration::from_millis(1));
    std::thread::Builder::new().name("viaduct-watchdog".into()).spawn(move || {
        let mut last = progress.passes();
        let mut stuck_since: Option<std::time::Instant> = None;
        loop {
            std::thread::sleep(every);
            let now = progress.passes();
            if now != last {
                notifier.send("WATCHDOG=1");
                last = now;
                stuck_since = None;
            } else if stuck_since.is_none() {
                stuck_since = Some(std::time::Instant::now());
                tracing::error!(
                    "service: the matcher's thread made no progress for {every:?}; the watchdog is not fed"
                );
            }
        }
    })?;
    Ok(())
}
