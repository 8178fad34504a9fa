//! `viaduct`: the exchange server's command line.

use viaduct::config;

use std::io::{self, BufRead, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use viaduct::engine::{Engine, EngineOptions};
use viaduct::profile::Profile;
use viaduct_edges::http::HttpConfig;
use viaduct_edges::tcp::TcpConfig;
use viaduct_journaler::recovery::Progress;
use viaduct_matcher::RpcError;
use viaduct_protocol::{self as protocol, error_response, Routed};
use viaduct_publishers::alert::AlertKind;
use viaduct_publishers::kafka::Topic;

/// The engine's threads hand replies and batches to one another, so memory freed on one thread
/// was allocated on another: mimalloc frees those without glibc's arena locks, which the
/// pipeline bench measured at 1.18x (median of 6 alternated runs; the bench binaries use it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory a spike needed (one order's 10,000 deals pass through events, the history feed and the
/// reply, some 100 MB) goes back to the system once it is freed: mimalloc schedules freed memory
/// to be returned a purge delay later (1 s), but returns it only when some thread next calls into
/// it, and after a spike every thread may be idle (`loadgen --mode sweep`: 175 MB for as long as
/// was watched). The main thread, which only waits for a signal, calls this every second, and the
/// threads that idle after work (`viaduct_journaler::RETURN_FREED_MEMORY`). A purge
/// delay of 0 returned it at once but cost the binary edge's maximum a third (`tcp-max`, rest flow:
/// 0.5 - 0.63 M requests/s against 0.83 - 0.99 M): every free of a whole page became a system call.
fn return_freed_memory() {
    // SAFETY: asks mimalloc to collect this thread's heap and purge what is due program-wide; it
    // takes no pointer and hands nothing over.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

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
    /// Ask the server running on a data directory: status, balances USER, or markets (through
    /// its socket <data_dir>/viaduct.sock).
    Ctl {
        /// The TOML config whose data_dir to use; the embedded default when left out.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides the config's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// status | balances USER | markets
        #[arg(required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Print the messages of a Kafka topic viaduct publishes to, a line each:
    /// `<viaduct-seq>/<viaduct-part> <payload>`.
    KafkaTail {
        /// The brokers, host:port,host:port.
        #[arg(long)]
        brokers: String,
        /// deals, orders or balances (with the config's topic_prefix, if any).
        topic: String,
        /// Only messages produced from now on.
        #[arg(long)]
        from_end: bool,
        /// Keep reading at the end of the topic instead of exiting.
        #[arg(long)]
        follow: bool,
    },
    /// Recover the state in the data directory and run the engine with its HTTP edge
    /// ([edges.http] bind, 127.0.0.1:8080 by default) and TCP edge ([edges.tcp] bind,
    /// 127.0.0.1:7316) until the process is stopped; a stop at any moment loses nothing
    /// acknowledged.
    Run {
        /// The TOML config; the embedded default when left out.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A tuning profile: default, latency, throughput, or a path to a profile file.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Where the journal and snapshots live (overrides the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve JSON-RPC lines on standard input and output instead of the network edges: a
        /// reply is written once its command is durable; end of input drains and exits.
        #[arg(long)]
        stdio: bool,
        /// When the history store holds less than the newest snapshot (its store was replaced,
        /// or the journal it needs was removed), start history afresh from that snapshot: the
        /// rows of the commands before it are not written.
        #[arg(long)]
        history_from_snapshot: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::Ctl { config, data_dir, command } => ctl(config, data_dir, &command.join(" ")),
        Cmd::KafkaTail { brokers, topic, from_end, follow } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            viaduct_publishers::kafka::tail::tail(&brokers, &topic, from_end, follow, &mut out).map(drop)
        }
        Cmd::Run { config, profile, data_dir, stdio, history_from_snapshot } => {
            run(config, &profile, data_dir, stdio, history_from_snapshot)
        }
    };
    if let Err(e) = outcome {
        eprintln!("viaduct: {e:#}");
        std::process::exit(1);
    }
}

fn ctl(config_path: Option<PathBuf>, data_dir: Option<PathBuf>, command: &str) -> Result<()> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => PathBuf::from(config::load(config_path.as_deref())?.data_dir),
    };
    print!("{}", viaduct::admin::ctl(&data_dir, command)?);
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> Result<()> {
    viaduct::logging::init(&config::LogSection::default())?;
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

fn run(
    config_path: Option<PathBuf>,
    profile: &str,
    data_dir: Option<PathBuf>,
    stdio: bool,
    history_from_snapshot: bool,
) -> Result<()> {
    let loaded = config::load(config_path.as_deref())?;
    viaduct::logging::init(&loaded.log)?;
    let _ = viaduct_journaler::RETURN_FREED_MEMORY.set(return_freed_memory);
    let profile_name = profile.to_string();
    let profile = Profile::load(profile)?;
    if let Some(ns) = profile.timer_slack_ns {
        // Before any thread starts: threads inherit it.
        match nix::sys::prctl::set_timerslack(ns) {
            Ok(()) => tracing::info!("timer slack {ns} ns: sleeping stages wake on time"),
            Err(e) => tracing::warn!("timer slack {ns} ns could not be set ({e}); sleeps may wake up to 50 µs late"),
        }
    }
    for section in &loaded.not_yet_used {
        tracing::warn!("{}", config::not_yet_used_warning(section));
    }
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(&loaded.data_dir));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let cores = viaduct_ring::available_cores();
    tracing::info!(
        "profile {}: durability {:?}, {} cores available {:?}",
        profile.name,
        profile.durability,
        cores.len(),
        cores
    );
    let mut alert_counts = None;
    let alerts = match loaded.alerts {
        Some(cfg) => {
            let where_ = match &cfg.redis {
                Some(url) => url.clone(),
                None => format!("master {:?} of sentinels {}", cfg.master, cfg.sentinels.join(", ")),
            };
            let sink = viaduct_publishers::alert_redis::RedisAlerts::start(cfg)?;
            alert_counts = Some(sink.counts());
            tracing::info!("alerts: logged, and pushed to {} on {where_}", viaduct_publishers::alert_redis::ALERT_LIST);
            viaduct_publishers::alert::Alerts::new(std::sync::Arc::new(sink))
        }
        None => viaduct_publishers::alert::Alerts::log(),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("recovering");
        bar
    });
    // Bound before recovery: /health answers 503 and /metrics shows recovery's progress.
    let metrics = Arc::new(viaduct::metrics::MetricsState { alerts: alert_counts.clone(), ..Default::default() });
    if let (false, Some(bind)) = (stdio, loaded.metrics) {
        let addr =
            viaduct::metrics::start(bind, Arc::clone(&metrics)).with_context(|| format!("[metrics] bind {bind}"))?;
        tracing::info!("metrics: GET /metrics and /health on {addr}");
    }
    let progress_metrics = Arc::clone(&metrics);
    let progress = |p: Progress| match (&bar, p) {
        (Some(bar), Progress::Snapshot { seq }) => bar.set_message(format!("loaded snapshot at sequence {seq}")),
        (Some(bar), Progress::Replayed { records, seq }) => {
            bar.set_message(format!("replayed {records} commands (sequence {seq})"))
        }
        (None, Progress::Snapshot { seq }) => tracing::info!("recovery: loaded snapshot at sequence {seq}"),
        (None, Progress::Replayed { records, seq }) => {
            tracing::info!("recovery: replayed {records} commands (sequence {seq})")
        }
    };
    let progress = |p: Progress| {
        match p {
            Progress::Snapshot { seq } => {
                progress_metrics.recovery_snapshot.store(seq, Ordering::Relaxed);
                progress_metrics.recovery_seq.store(seq, Ordering::Relaxed);
            }
            Progress::Replayed { records, seq } => {
                progress_metrics.recovery_replayed.store(records, Ordering::Relaxed);
                progress_metrics.recovery_seq.store(seq, Ordering::Relaxed);
            }
        }
        progress(p)
    };
    let (loaded_http, loaded_tcp, tcp_keys, loaded_ws) =
        (loaded.http_bind, loaded.tcp_bind, loaded.tcp_keys, loaded.ws);
    let (http_connections_max, http_header_timeout, tcp_connections_max, tcp_replay) =
        (loaded.http_connections_max, loaded.http_header_timeout, loaded.tcp_connections_max, loaded.tcp_replay);
    let history = loaded.history.to_config(&data_dir)?;
    tracing::info!("history: {}", history.url);
    if let Some(k) = &loaded.kafka {
        tracing::info!(
            "kafka: publishing to {} (topics {}, {}, {})",
            k.brokers,
            k.topic(Topic::Deals),
            k.topic(Topic::Orders),
            k.topic(Topic::Balances)
        );
    }
    let options = EngineOptions {
        market: loaded.market,
        market_lag_max: loaded.market_lag_max,
        history: Some(history),
        history_from_snapshot,
        alerts: alerts.clone(),
        kafka: loaded.kafka,
    };
    let started = Engine::start_with(&data_dir, loaded.spec, &profile, options, progress);
    let (engine, startup) = match started {
        Ok(started) => started,
        Err(e) => {
            alerts.raise(AlertKind::Recovery, "recovery", format!("the engine did not start: {e:#}"));
            alerts.flush(std::time::Duration::from_secs(2));
            return Err(e);
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    tracing::info!(
        "recovered {} in {} ms: snapshot {:?}, {} commands replayed, at sequence {}, state hash {:016x}",
        data_dir.display(),
        startup.recovery_ms,
        startup.snapshot_seq,
        startup.replayed,
        startup.last_seq,
        startup.state_hash
    );
    if !stdio {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing the signal handlers")?;
        }
        let mut cfg = HttpConfig::new(loaded_http);
        cfg.connections_max = http_connections_max.unwrap_or(cfg.connections_max);
        cfg.header_timeout = http_header_timeout.unwrap_or(cfg.header_timeout);
        let mut tcp_cfg = TcpConfig::new(loaded_tcp, tcp_keys);
        tcp_cfg.connections_max = tcp_connections_max.unwrap_or(tcp_cfg.connections_max);
        tcp_cfg.replay_max = tcp_replay.0.unwrap_or(tcp_cfg.replay_max);
        tcp_cfg.replay_keep = tcp_replay.1.unwrap_or(tcp_cfg.replay_keep);
        let mut loaded_ws = loaded_ws;
        let mut ws_max = loaded_ws.as_ref().map(|w| w.connections_max);
        let mut bounds = vec![("HTTP", &mut cfg.connections_max), ("TCP", &mut tcp_cfg.connections_max)];
        if let Some(max) = ws_max.as_mut() {
            bounds.push(("WebSocket", max));
        }
        fit_connections_to_open_files(&mut bounds);
        if let (Some(ws), Some(max)) = (loaded_ws.as_mut(), ws_max) {
            ws.connections_max = max;
        }
        let _ = metrics.probes.set(engine.probes());
        let mut edge_stats = vec![("http", Arc::clone(&cfg.stats)), ("tcp", Arc::clone(&tcp_cfg.stats))];
        edge_stats.extend(loaded_ws.as_ref().map(|w| ("ws", Arc::clone(&w.stats))));
        let _ = metrics.edges.set(edge_stats);
        // Bound before the edges listen, so that a client that finds the edges finds this socket too.
        // Without it the server still serves (a data directory whose path is too long for a Unix
        // socket, say): said in the log, not fatal.
        let admin = match viaduct::admin::start(&data_dir, engine.probes(), engine.client(), profile_name.clone()) {
            Ok(admin) => {
                tracing::info!("admin: `viaduct ctl` answers on {}", admin.path().display());
                Some(admin)
            }
            Err(e) => {
                tracing::warn!(
                    "admin: no operator socket in {} ({e}); `viaduct ctl` will not answer",
                    data_dir.display()
                );
                None
            }
        };
        let edges = viaduct::pipeline::start_edges(&engine, &profile, cfg, tcp_cfg, loaded_ws)?;
        metrics.ready.store(true, Ordering::Release);
        // Under systemd (Type=notify): ready now, and the watchdog fed while the matcher moves.
        let notifier = viaduct::service::Notifier::from_env().map(Arc::new);
        if let Some(n) = &notifier {
            n.send(&format!("READY=1\nSTATUS=serving at sequence {}", startup.last_seq));
            if let Some(interval) = viaduct::service::watchdog_interval() {
                viaduct::service::start_watchdog(Arc::clone(n), engine.matcher_progress(), interval)?;
                tracing::info!(
                    "service: the watchdog is fed every {:?} while the matcher makes progress",
                    interval / 2
                );
            }
        }
        // Until SIGTERM or SIGINT; any other stop is a crash, which loses nothing acknowledged.
        let mut waits = 0u32;
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            waits = waits.wrapping_add(1);
            if waits.is_multiple_of(20) {
                return_freed_memory();
            }
        }
        tracing::info!("stopping: no new requests; draining the pipeline");
        if let Some(n) = &notifier {
            n.send("STOPPING=1");
        }
        drop(admin);
        drop(edges);
        let (seq, hash) = engine.shutdown();
        tracing::info!("stopped at sequence {seq}, state hash {hash:016x}");
        return Ok(());
    }
    serve_stdio(&engine)?;
    let (seq, hash) = engine.shutdown();
    tracing::info!("stopped at sequence {seq}, state hash {hash:016x}");
    Ok(())
}

/// Descriptors kept for everything but client connections: the journal, snapshots, history's
/// connections or database, the edges' listeners and pollers, logs.
const FILES_RESERVED: u64 = 1024;

/// Raises the open-files limit to its hard limit, and lowers the edges' connection bounds so
/// that together they stay below it: a client past a bound is accepted and closed at once, where
/// one past the process's limit would wait unanswered in the listen backlog.
fn fit_connections_to_open_files(edges: &mut [(&str, &mut usize)]) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!("open files: limit raised from {soft} to its hard limit {hard}");
                hard
            }
            Err(e) => {
                tracing::warn!("open files: raising the limit from {soft} to {hard} failed ({e}); keeping {soft}");
                soft
            }
        },
        Ok((soft, _)) => {
            tracing::info!("open files: limit {soft}");
            soft
        }
        Err(e) => {
            tracing::warn!("open files: the limit cannot be read ({e}); connection bounds left as they are");
            return;
        }
    };
    let room = usize::try_from(limit.saturating_sub(FILES_RESERVED)).unwrap_or(usize::MAX);
    let wanted = edges.iter().fold(0usize, |sum, (_, max)| sum.saturating_add(**max));
    if wanted > room {
        // Shared in proportion, the last edge taking what is left; each keeps at least one.
        let (mut left, last) = (room, edges.len().saturating_sub(1));
        let mut shares = Vec::new();
        for (i, (name, max)) in edges.iter_mut().enumerate() {
            let share = match i == last {
                true => left,
                false => (**max as u128 * room as u128 / wanted.max(1) as u128) as usize,
            };
            let share = share.min(left).max(1);
            left = left.saturating_sub(share);
            **max = share;
            shares.push(format!("{name} takes {share}"));
        }
        tracing::warn!(
            "open files: the limit {limit} leaves room for {room} connections, not {wanted}: {}; raise the hard limit (LimitNOFILE=) for more",
            shares.join(", ")
        );
    }
}

/// What the writer prints next: a ready answer, or the engine's next reply.
enum Ticket {
    Ready(String),
    /// The reply the engine will give to the request submitted with this tag.
    Engine(u64),
}

/// One request per line in, one reply per line out, in order. A reply is printed once its
/// command is durable; a line that cannot be submitted is answered in its place in the order.
fn serve_stdio(engine: &Engine) -> Result<()> {
    let mut client = engine.client();
    let mut replies = client.take_replies();
    let (tx, rx) = crossbeam_channel::bounded::<Ticket>(engine.inflight_max() * 2);
    std::thread::scope(|s| -> Result<()> {
        let writer = s.spawn(move || -> io::Result<()> {
            let mut out = BufWriter::new(io::stdout().lock());
            let mut early: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
            for ticket in rx {
                match ticket {
                    Ticket::Ready(json) => writeln!(out, "{json}")?,
                    Ticket::Engine(tag) => {
                        // Market data answers on its own thread, so replies may come out of order.
                        let json = match early.remove(&tag) {
                            Some(json) => json,
                            None => loop {
                                let r = replies.recv();
                                if r.tag == tag {
                                    break r.into_json();
                                }
                                early.insert(r.tag, r.into_json());
                            },
                        };
                        writeln!(out, "{json}")?
                    }
                }
                if replies.is_empty() {
                    out.flush()?;
                }
            }
            out.flush()
        });
        let mut input = io::stdin().lock();
        let mut line = Vec::new();
        let mut next_tag = 0u64;
        loop {
            line.clear();
            let read =
                (&mut input).take(LINE_BYTES_MAX).read_until(b'\n', &mut line).context("reading standard input")?;
            if read == 0 {
                break;
            }
            if line.last() != Some(&b'\n') && read as u64 == LINE_BYTES_MAX {
                let _ = tx.send(Ticket::Ready(error_response(None, RpcError::InvalidArgument)));
                let mut sink = Vec::new();
                input.read_until(b'\n', &mut sink)?;
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            next_tag += 1;
            let ticket = submit_line(&mut client, next_tag, &line);
            if tx.send(ticket).is_err() {
                break;
            }
        }
        drop(tx);
        writer.join().expect("writer thread")?;
        Ok(())
    })
}

/// Submits one request line, waiting while the engine is full.
fn submit_line(client: &mut viaduct::engine::Client, tag: u64, line: &[u8]) -> Ticket {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(line) else {
        return Ticket::Ready(error_response(None, RpcError::InvalidArgument));
    };
    let id = request.get("id").and_then(Value::as_i64);
    let (Some(id), Some(method), Some(params)) =
        (id, request.get("method").and_then(Value::as_str), request.get("params").and_then(Value::as_array))
    else {
        return Ticket::Ready(error_response(id, RpcError::InvalidArgument));
    };
    let cmd = match protocol::route(client.spec(), method, params) {
        Ok(Routed::Command(cmd)) => cmd,
        Ok(Routed::Query(_)) => loop {
            match client.query(tag, id, method, params.clone()) {
                Ok(()) => return Ticket::Engine(tag),
                // Full: wait rather than refuse a line of a script.
                Err(RpcError::ServiceUnavailable) => std::thread::sleep(std::time::Duration::from_micros(50)),
                Err(e) => return Ticket::Ready(error_response(Some(id), e)),
            }
        },
        Err(e) => return Ticket::Ready(error_response(Some(id), e)),
    };
    let mut cmd = cmd;
    loop {
        match client.submit_tagged(tag, id, cmd) {
            Ok(()) => return Ticket::Engine(tag),
            // Full: wait for the engine rather than refuse a line of a script.
            Err(back) => {
                cmd = back;
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }
}
