//! A MariaDB server of a test's or bench's own: its own data directory and port (never the
//! shared server), installed with Debian's `mariadb-install-db` and run with `mariadbd`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A MariaDB server of this test's own, on its own data directory and port.
pub struct PrivateMariaDb {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateMariaDb {
    pub fn install(dir: &Path) -> PrivateMariaDb {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // It failed once in CI, with nothing to say why (two tests install at once): it is tried
        // up to three times, on a fresh data directory, and what it printed goes in the failure.
        let mut said = String::new();
        for _ in 0..3 {
            let _ = std::fs::remove_dir_all(dir.join("data"));
            let out = Command::new("mariadb-install-db")
                .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"])
                .arg(format!("--datadir={}", dir.join("data").display()))
                .stdin(Stdio::null())
                .output()
                .expect("mariadb-install-db (Debian's mariadb-server) is needed by this test");
            if out.status.success() {
                return PrivateMariaDb { dir: dir.to_path_buf(), port, child: None };
            }
            said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        panic!("mariadb-install-db failed three times; the last time it said:\n{said}")
    }

    pub fn start(&mut self) {
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-grant-tables"])
            .args(["--innodb-buffer-pool-size=64M", "--skip-log-bin"])
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while mysql::Conn::new(mysql::Opts::from_url(&self.url("mysql")).unwrap()).is_err() {
            assert!(Instant::now() < deadline, "the private MariaDB did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server outright: an outage, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

impl PrivateMariaDb {
    /// Freezes (`true`) or thaws the server: a stall, connections kept.
    pub fn pause(&mut self, stop: bool) {
        if let Some(c) = &self.child {
            let signal = if stop { "-STOP" } else { "-CONT" };
            let ok = Command::new("kill").args([signal, &c.id().to_string()]).status().is_ok_and(|s| s.success());
            assert!(ok, "kill {signal} the private MariaDB");
        }
    }
}
