//! The pipeline end to end, each figure beside its baseline from the same run:
//! - the disk's own `write` + `fdatasync` rate and latency (what `fsync` durability costs);
//! - the raw ring (a disruptor with one producer and one consumer doing nothing);
//! - pipeline throughput with `fsync` durability (group commit), one client pipelining;
//! - latency from submit to durable reply, open-loop at fixed offered rates (HDR histogram);
//! - replay speed at startup, and the time to write a snapshot of a large state.
//!
//! `cargo run --release -p viaduct-benches --bin pipeline -- [commands] [data-dir]`
//! The data directory (default: a new one under the system's temp directory) should be on the
//! disk under test; it is removed at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use disruptor::{BusySpinWithSpinLoopHint, Producer};
use hdrhistogram::Histogram;
use viaduct::engine::Engine;
use viaduct::profile::Profile;
use viaduct_benches::{funded_matcher, place_grid};
use viaduct_journaler::recovery::recover;
use viaduct_journaler::snapshot;
use viaduct_matcher::command::{Command, PutLimit};
use viaduct_matcher::order::{Side, Source};

/// The allocator of the `viaduct` binary, so the engine measured here allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let commands: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let root = std::env::args()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("viaduct-bench-{}", std::process::id())));
    std::fs::create_dir_all(&root).expect("bench directory");
    println!("viaduct pipeline bench: {commands} commands, data in {}", root.display());

    let (sync_rate, sync_hist) = fdatasync_baseline(&root.join("fdatasync.bin"), 2_000);
    println!("baseline  write+fdatasync (512 B): {sync_rate:>12.0} /s   latency {}", percentiles(&sync_hist));
    match uring_baseline(&root.join("uring.bin"), 2_000) {
        Ok((rate, hist)) => println!(
            "compare   io_uring write->fsync(DATASYNC), linked: {rate:>6.0} /s   latency {}  ({:.2}x write+fdatasync)",
            percentiles(&hist),
            rate / sync_rate
        ),
        Err(e) => println!("compare   io_uring unavailable here: {e}"),
    }
    println!("baseline  raw ring (1P1C, no work): {:>11.0} /s", raw_ring(20_000_000));

    let data = root.join("fsync");
    if std::env::var("VIADUCT_BENCH_ONLY").as_deref() == Ok("snapshot") {
        snapshot_cost(&root.join("snap"));
        std::fs::remove_dir_all(&root).ok();
        return;
    }
    if std::env::var("VIADUCT_BENCH_ONLY").as_deref() == Ok("throughput") {
        let (rate, batches) = throughput(&data, commands);
        println!("pipeline  fsync, 1 client pipelining: {rate:>9.0} commands/s  ({batches:.0} commands per fdatasync)");
        std::fs::remove_dir_all(&root).ok();
        return;
    }
    let (rate, batches) = throughput(&data, commands);
    println!("pipeline  fsync, 1 client pipelining: {rate:>9.0} commands/s  ({batches:.0} commands per fdatasync on average)");
    println!(
        "          = {:.1}x the disk's fdatasync rate, {:.3} of the raw ring",
        rate / sync_rate,
        rate / raw_ring(20_000_000)
    );

    let started = Instant::now();
    let r = recover(&data, &viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap(), |_| {}, &mut ())
        .expect("recover");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay    {} commands in {secs:.2} s: {:.0} commands/s",
        r.journal.records,
        r.journal.records as f64 / secs
    );

    for rate in [10_000u64, 100_000] {
        let hist = latency(&root.join(format!("lat-{rate}")), rate, Duration::from_secs(3));
        println!("latency   submit -> durable reply at {rate}/s offered: {}", percentiles(&hist));
        write_hgrm(&root, &format!("latency-{rate}.hgrm"), &hist);
    }
    snapshot_cost(&root.join("snap"));
    std::fs::remove_dir_all(&root).ok();
}

fn percentiles(h: &Histogram<u64>) -> String {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "p50 {:.0} µs, p90 {:.0}, p99 {:.0}, p99.9 {:.0}, p99.99 {:.0}, max {:.0}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        h.max() as f64 / 1000.0
    )
}

fn write_hgrm(dir: &Path, name: &str, h: &Histogram<u64>) {
    let mut text = String::from("       Value     Percentile TotalCount\n");
    for v in h.iter_quantiles(1) {
        text.push_str(&format!(
            "{:12.3} {:14.12} {:10}\n",
            v.value_iterated_to() as f64 / 1000.0,
            v.quantile_iterated_to(),
            v.count_since_last_iteration()
        ));
    }
    let keep = std::env::var("VIADUCT_BENCH_OUT").map(PathBuf::from).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::create_dir_all(&keep).ok();
    std::fs::write(keep.join(name), text).ok();
}

/// `n` appends of 512 bytes, each followed by `fdatasync`.
fn fdatasync_baseline(path: &Path, n: usize) -> (f64, Histogram<u64>) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).expect("baseline file");
    let block = [7u8; 512];
    let mut h = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    (n as f64 / started.elapsed().as_secs_f64(), h)
}

/// The same appends through io_uring: a write linked to an `fsync` with `DATASYNC`, one submit
/// and one wait per append.
fn uring_baseline(path: &Path, n: usize) -> std::io::Result<(f64, Histogram<u64>)> {
    use io_uring::{opcode, squeue, types, IoUring};
    use std::os::unix::io::AsRawFd;
    let file = OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new(8)?;
    let block = [7u8; 512];
    let mut h = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let write = opcode::Write::new(fd, block.as_ptr(), block.len() as u32)
            .offset((i * block.len()) as u64)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(1);
        let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(2);
        // SAFETY: the entries point at `block` and `file`, which outlive the wait below: both
        // complete (or fail) before `submit_and_wait(2)` returns and the loop moves on.
        unsafe {
            ring.submission().push(&write).map_err(std::io::Error::other)?;
            ring.submission().push(&sync).map_err(std::io::Error::other)?;
        }
        ring.submit_and_wait(2)?;
        for cqe in ring.completion() {
            if cqe.result() < 0 {
                return Err(std::io::Error::from_raw_os_error(-cqe.result()));
            }
        }
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), h))
}

/// Events per second through a disruptor with one producer and a consumer that only counts.
fn raw_ring(n: u64) -> f64 {
    let factory = || 0u64;
    let mut producer = disruptor::build_single_producer(65536, factory, BusySpinWithSpinLoopHint)
        .handle_events_with(|e: &u64, _, _| {
            std::hint::black_box(e);
        })
        .build();
    let started = Instant::now();
    for i in 0..n {
        producer.publish(|e| *e = i);
    }
    drop(producer);
    n as f64 / started.elapsed().as_secs_f64()
}

/// The `default` profile, or the one `VIADUCT_BENCH_PROFILE` names (a name or a path).
fn profile() -> Profile {
    let name = std::env::var("VIADUCT_BENCH_PROFILE").unwrap_or_else(|_| "default".into());
    let mut p = Profile::load(&name).unwrap();
    p.snapshot_interval = u64::MAX / 2;
    p
}

/// Commands per second through the whole pipeline, `fsync` durability, and the average group size.
fn throughput(data: &Path, n: usize) -> (f64, f64) {
    let t = viaduct_benches::pipeline_throughput(data, n, &profile(), viaduct::engine::EngineOptions::default());
    (t.rate, t.per_commit)
}

/// Open-loop latency: requests are due at a fixed rate whatever the engine does; each is timed
/// from when it was due to when its durable reply arrived, so a stall shows in every request
/// that waited behind it.
fn latency(data: &Path, rate: u64, run: Duration) -> Histogram<u64> {
    let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
    let (engine, _) = Engine::start(data, spec, &profile(), |_| {}).expect("engine");
    let mut client = engine.client();
    let cmd_for = |i: u64| {
        Command::PutLimit(PutLimit {
            user: 1 + (i % 1000) as u32,
            market: 0,
            side: if i.is_multiple_of(2) { Side::Ask } else { Side::Bid },
            amount: 100_000_000,
            price: 100_000_000,
            taker_fee: 10,
            maker_fee: 5,
            source: Source::EMPTY,
            client_id: 0,
            id_window: Default::default(),
            options: Default::default(),
            session: 0,
        })
    };
    let total = rate * run.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let due = |i: u64| started + interval * i as u32;
    let mut sent = 0u64;
    let mut received = 0u64;
    while received < total {
        let now = Instant::now();
        while sent < total && due(sent) <= now {
            let mut cmd = cmd_for(sent);
            while let Err(back) = client.submit_command(sent as i64, cmd) {
                cmd = back;
                std::hint::spin_loop();
            }
            sent += 1;
        }
        while let Some(r) = client.try_recv() {
            let at = due(r.request_id as u64);
            hist.record(at.elapsed().as_nanos().max(1) as u64).ok();
            received += 1;
        }
        std::hint::spin_loop();
    }
    drop(client);
    engine.shutdown();
    hist
}

/// Writing a snapshot of 1,000,000 resting orders over 100,000 users (the snapshot worker's
/// cost; the matcher itself never stops for it): streamed to the file as the snapshot worker
/// does, beside encoding it whole into memory and then writing it, three rounds each, alternated.
fn snapshot_cost(dir: &Path) {
    let mut m = funded_matcher(100_000, 1_000_000);
    place_grid(&mut m, 100_000, 1_000_000);
    for round in 1..=3 {
        let started = Instant::now();
        let state = m.snapshot();
        let serialize = started.elapsed();
        let started = Instant::now();
        snapshot::write(dir, round, &state, &[]).expect("snapshot");
        let write = started.elapsed();
        let started = Instant::now();
        let streamed =
            snapshot::write_streaming(dir, 100 + round, |w| m.snapshot_to(w).map(drop), &[]).expect("snapshot");
        let total = started.elapsed();
        println!(
            "snapshot  1,000,000 orders / 100,000 users, {} MiB: streamed: encode+write {} ms, +fsync {} ms; whole: serialize {} ms, write+fsync {} ms (on the snapshot worker; matcher pause: none)",
            streamed.bytes >> 20,
            streamed.encoded.as_millis(),
            total.as_millis(),
            serialize.as_millis(),
            write.as_millis()
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
