//! The real binary under a supervisor that speaks systemd's notify protocol on a socket the test
//! owns: `READY=1` once it serves, `WATCHDOG=1` at half the interval while its matcher makes
//! progress, none while the process is stalled (stopped with SIGSTOP), again once it goes on, and
//! `STOPPING=1` when told to stop. (That the feed follows the matcher's thread, not a timer, is
//! `viaduct_ring`'s `progress_moves_while_idle_and_stops_while_the_matchers_thread_is_held`.)

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::Running;

/// The next message on `sock`, or `None` when none came within its read timeout.
fn next(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
        Err(e) => panic!("{e}"),
    }
}

/// Reads until a message that starts with `what`, within the socket's read timeout each.
fn wait_for(sock: &UnixDatagram, what: &str) -> String {
    loop {
        let msg = next(sock).unwrap_or_else(|| panic!("no {what} came"));
        if msg.starts_with(what) {
            return msg;
        }
    }
}

#[test]
fn the_supervisor_is_told_ready_fed_while_the_matcher_moves_and_not_while_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A 200 ms watchdog: fed every 100 ms.
    let envs = [("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")];
    let server = Running::start_full("", "", None, &|example| example.to_string(), &envs);
    let ready = wait_for(&sock, "READY=1");
    assert!(ready.contains("STATUS=serving"), "{ready}");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        assert_eq!(wait_for(&sock, "WATCHDOG=1"), "WATCHDOG=1");
    }
    // Stalled: what was sent before the stop may still be queued; then nothing for three
    // intervals, so a supervisor would restart it.
    let pid = Pid::from_raw(server.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    for _ in 0..3 {
        if next(&sock).is_none() {
            break;
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(600))).unwrap();
    assert_eq!(next(&sock), None, "the watchdog was fed while the process was stopped");
    kill(pid, Signal::SIGCONT).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(wait_for(&sock, "WATCHDOG=1"), "WATCHDOG=1");
    kill(pid, Signal::SIGTERM).unwrap();
    wait_for(&sock, "STOPPING=1");
}
