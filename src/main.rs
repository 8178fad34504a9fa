//! `viaduct`: the exchange server's command line.

mod config;

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use viaduct_matcher::{decode, response_json, Events, Matcher, RpcError, Spec};

/// Longest request line the console reads.
const LINE_BYTES_MAX: u64 = 1 << 20;

#[derive(Parser)]
#[command(name = "viaduct", version, about = "An exchange server that speaks the ViaBTC protocols")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a config against the precision rules and list its assets and markets.
    CheckConfig {
        /// The TOML config; the embedded default when left out.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the matcher in memory, one JSON-RPC request per line on standard input, one reply per
    /// line on standard output. Nothing is journaled: state is gone when the console exits.
    Console {
        /// The TOML config; the embedded default when left out.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() {
    tracing_subscriber::fmt().with_writer(io::stderr).with_target(false).init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::Console { config } => console(config),
    };
    if let Err(e) = outcome {
        eprintln!("viaduct: {e:#}");
        std::process::exit(1);
    }
}

fn check_config(path: Option<PathBuf>) -> Result<()> {
    let loaded = config::load(path.as_deref())?;
    let spec = &loaded.spec;
    println!("data_dir {}", loaded.data_dir);
    if !loaded.not_yet_used.is_empty() {
        println!("not used by this build yet: [{}]", loaded.not_yet_used.join("], ["));
    }
    for a in &spec.assets {
        println!("asset {:<15} prec_save {:>2}  prec_show {:>2}", a.name, a.prec_save, a.prec_show);
    }
    for m in &spec.markets {
        println!(
            "market {:<15} {}/{}  stock_prec {}  money_prec {}  fee_prec {}",
            m.name,
            spec.asset(m.stock).name,
            spec.asset(m.money).name,
            m.stock_prec,
            m.money_prec,
            m.fee_prec
        );
    }
    println!("config is valid");
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn console(path: Option<PathBuf>) -> Result<()> {
    let spec = config::load(path.as_deref())?.spec;
    tracing::warn!(
        "console: {} assets, {} markets, in memory only; nothing is journaled, state ends with the process",
        spec.assets.len(),
        spec.markets.len()
    );
    let mut matcher = Matcher::new(spec);
    let mut events = Events::with_capacity(256);
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut input).take(LINE_BYTES_MAX).read_until(b'\n', &mut line).context("reading standard input")?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && read as u64 == LINE_BYTES_MAX {
            writeln!(out, "{}", envelope_error(None, RpcError::InvalidArgument))?;
            // Skip the rest of the oversized line.
            let mut sink = Vec::new();
            input.read_until(b'\n', &mut sink)?;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = handle(&mut matcher, &mut events, &line);
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// One request line: the JSON-RPC envelope of SPEC B1.1, decoded and applied.
fn handle(matcher: &mut Matcher, events: &mut Events, line: &[u8]) -> String {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(line) else {
        return envelope_error(None, RpcError::InvalidArgument);
    };
    let (Some(id), Some(method), Some(params)) = (
        request.get("id").and_then(Value::as_i64),
        request.get("method").and_then(Value::as_str),
        request.get("params").and_then(Value::as_array),
    ) else {
        return envelope_error(request.get("id").and_then(Value::as_i64), RpcError::InvalidArgument);
    };
    events.clear();
    let spec: &Spec = matcher.spec();
    let outcome = match decode(spec, method, params) {
        Ok(cmd) => matcher.apply(now_us(), &cmd, events),
        Err(e) => Err(e),
    };
    response_json(matcher.spec(), id, &outcome, events)
}

fn envelope_error(id: Option<i64>, e: RpcError) -> String {
    viaduct_matcher::reply::error_response(id, e)
}
