//! What the end-to-end tests share.

use std::process::{Child, Command, Stdio};

/// `viaduct run --stdio` with `args`, its standard input and output piped, its log discarded.
pub fn spawn_stdio(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(["run", "--stdio"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("viaduct starts")
}
