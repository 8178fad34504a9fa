//! Tuning profiles (`tuning/*.toml`): ring sizes, wait strategies, core pins, durability,
//! snapshot interval. The three shipped profiles are built in; a path names any other.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use viaduct_journaler::Durability;
use viaduct_ring::{RingConfig, StageThreads, Wait};

const BUILT_IN: [(&str, &str); 3] = [
    ("default", include_str!("../tuning/default.toml")),
    ("latency", include_str!("../tuning/latency.toml")),
    ("throughput", include_str!("../tuning/throughput.toml")),
];

/// Bounds that keep a profile sane: rings of 2^6 to 2^24 slots.
const RING_SLOTS_MIN: usize = 64;
const RING_SLOTS_MAX: usize = 1 << 24;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rings: Rings,
    wait: WaitSection,
    #[serde(default)]
    cores: Cores,
    journal: JournalSection,
    snapshots: Snapshots,
    #[serde(default)]
    history: HistorySection,
    clients: Clients,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rings {
    input_slots: usize,
    output_slots: usize,
    /// The reply stage on the journal's thread (default: a thread of its own).
    #[serde(default)]
    replies_with_journal: Option<bool>,
    /// The journal and reply stages on the matcher's thread (default: not).
    #[serde(default)]
    journal_with_matcher: bool,
    /// The TCP edge's event loop on the matcher's thread, in its waits (default: a thread of its
    /// own).
    #[serde(default)]
    tcp_edge_with_matcher: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitSection {
    strategy: String,
    sleep_us: u64,
    /// sleep and backoff: how long a stage sleeps once it has had no work for 10 ms (default: sleep_us).
    #[serde(default)]
    idle_sleep_us: Option<u64>,
    #[serde(default)]
    timer_slack_ns: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Cores {
    matcher: Option<usize>,
    journal: Option<usize>,
    replies: Option<usize>,
    snapshots: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    durability: String,
    segment_bytes_max: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshots {
    interval_commands: u64,
    keep: usize,
    /// The worker at idle priority while it keeps up (default: true).
    #[serde(default = "yes")]
    idle_priority: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySection {
    /// The history writer at idle priority while it keeps up (default: true).
    #[serde(default = "yes")]
    idle_priority: bool,
}

impl Default for HistorySection {
    fn default() -> HistorySection {
        HistorySection { idle_priority: true }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Clients {
    inflight_max: usize,
}

/// A checked profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub ring: RingConfig,
    pub durability: Durability,
    pub segment_bytes_max: u64,
    pub snapshot_interval: u64,
    pub snapshots_keep: usize,
    /// The core to pin the snapshot worker to (`None`: not pinned).
    pub snapshot_core: Option<usize>,
    /// The snapshot worker runs at idle priority (`SCHED_IDLE`) while it keeps up
    /// (`viaduct_ring::Background`).
    pub snapshot_idle_priority: bool,
    /// The history writer runs at idle priority while it keeps up (`viaduct_ring::Background`).
    pub history_idle_priority: bool,
    pub inflight_max: usize,
    /// How late the kernel may wake a sleeping thread of this process (Linux `PR_SET_TIMERSLACK`;
    /// `None` leaves the kernel's default of 50 µs).
    pub timer_slack_ns: Option<u64>,
    /// The TCP edge runs on the matcher's thread while the input ring is empty
    /// (`viaduct_ring::Input::run_while_idle`) instead of on a thread of its own.
    pub tcp_edge_with_matcher: bool,
}

impl Profile {
    /// A built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Profile> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return parse(name, text);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            bail!("profile {name_or_path:?} is neither a built-in profile ({}) nor a file", names.join(", "));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading profile {}", path.display()))?;
        parse(&path.display().to_string(), &text)
    }
}

fn parse(name: &str, text: &str) -> Result<Profile> {
    let f: File = toml::from_str(text).with_context(|| format!("parsing profile {name}"))?;
    for (what, slots) in [("rings.input_slots", f.rings.input_slots), ("rings.output_slots", f.rings.output_slots)] {
        if !slots.is_power_of_two() || !(RING_SLOTS_MIN..=RING_SLOTS_MAX).contains(&slots) {
            bail!("profile {name}: {what} = {slots} must be a power of two from {RING_SLOTS_MIN} to {RING_SLOTS_MAX}");
        }
    }
    let wait = match f.wait.strategy.as_str() {
        "busy-spin" => Wait::BusySpin,
        "spin-hint" => Wait::SpinHint,
        "sleep" | "backoff" if (1..=10_000).contains(&f.wait.sleep_us) => {
            let idle = f.wait.idle_sleep_us.unwrap_or(f.wait.sleep_us);
            if !(f.wait.sleep_us..=10_000).contains(&idle) {
                bail!("profile {name}: wait.idle_sleep_us must be from sleep_us to 10000");
            }
            let (sleep, idle_sleep) = (Duration::from_micros(f.wait.sleep_us), Duration::from_micros(idle));
            if f.wait.strategy == "sleep" {
                Wait::Sleep { sleep, idle_sleep }
            } else {
                Wait::Backoff { sleep, idle_sleep }
            }
        }
        "sleep" | "backoff" => bail!("profile {name}: wait.sleep_us must be from 1 to 10000"),
        other => bail!("profile {name}: wait.strategy {other:?} is not busy-spin, spin-hint, backoff or sleep"),
    };
    if f.wait.idle_sleep_us.is_some() && !matches!(wait, Wait::Backoff { .. } | Wait::Sleep { .. }) {
        bail!("profile {name}: wait.idle_sleep_us applies to the sleep and backoff strategies only");
    }
    if f.wait.timer_slack_ns.is_some_and(|ns| !(1..=1_000_000).contains(&ns)) {
        bail!("profile {name}: wait.timer_slack_ns must be from 1 to 1000000");
    }
    let durability =
        f.journal.durability.parse::<Durability>().map_err(|e| anyhow::anyhow!("profile {name}: journal.{e}"))?;
    if f.journal.segment_bytes_max < 1 << 20 {
        bail!("profile {name}: journal.segment_bytes_max must be at least 1 MiB");
    }
    if f.snapshots.interval_commands == 0 || f.snapshots.keep == 0 {
        bail!("profile {name}: snapshots.interval_commands and keep must be above 0");
    }
    if f.rings.journal_with_matcher && f.rings.replies_with_journal == Some(false) {
        bail!(
            "profile {name}: rings.journal_with_matcher runs the replies on the matcher's thread too; remove rings.replies_with_journal = false"
        );
    }
    if f.rings.tcp_edge_with_matcher && !f.rings.journal_with_matcher {
        bail!(
            "profile {name}: rings.tcp_edge_with_matcher needs rings.journal_with_matcher = true (the replies are written on the matcher's thread only when they are released there)"
        );
    }
    if f.rings.tcp_edge_with_matcher && !matches!(wait, Wait::Backoff { .. } | Wait::Sleep { .. }) {
        bail!(
            "profile {name}: rings.tcp_edge_with_matcher needs wait.strategy backoff or sleep (the edge runs in the matcher's waits, and a busy-spinning matcher never waits)"
        );
    }
    if f.clients.inflight_max == 0 || f.clients.inflight_max > 1 << 20 {
        bail!("profile {name}: clients.inflight_max must be from 1 to {}", 1 << 20);
    }
    Ok(Profile {
        name: name.to_string(),
        ring: RingConfig {
            input_slots: f.rings.input_slots,
            output_slots: f.rings.output_slots,
            wait,
            stages: match (f.rings.journal_with_matcher, f.rings.replies_with_journal) {
                (true, _) => StageThreads::WithMatcher,
                (false, Some(true)) => StageThreads::RepliesWithJournal,
                (false, _) => StageThreads::Own,
            },
            matcher_core: f.cores.matcher,
            journal_core: f.cores.journal,
            replies_core: f.cores.replies,
        },
        snapshot_core: f.cores.snapshots,
        snapshot_idle_priority: f.snapshots.idle_priority,
        history_idle_priority: f.history.idle_priority,
        durability,
        segment_bytes_max: f.journal.segment_bytes_max,
        snapshot_interval: f.snapshots.interval_commands,
        snapshots_keep: f.snapshots.keep,
        inflight_max: f.clients.inflight_max,
        timer_slack_ns: f.wait.timer_slack_ns,
        tcp_edge_with_matcher: f.rings.tcp_edge_with_matcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse() {
        for (name, _) in BUILT_IN {
            let p = Profile::load(name).unwrap();
            assert_eq!(p.durability, Durability::Fsync, "{name}");
        }
        assert_eq!(Profile::load("latency").unwrap().ring.wait, Wait::BusySpin);
        assert_eq!(Profile::load("default").unwrap().ring.matcher_core, None);
        assert_eq!(Profile::load("default").unwrap().timer_slack_ns, Some(1000));
        assert_eq!(
            Profile::load("default").unwrap().ring.wait,
            Wait::Sleep { sleep: Duration::from_micros(20), idle_sleep: Duration::from_micros(200) }
        );
        assert_eq!(Profile::load("latency").unwrap().timer_slack_ns, None);
        // Where the journal and the replies run.
        let threads = |p: Profile| p.ring.stages;
        assert_eq!(threads(Profile::load("default").unwrap()), StageThreads::WithMatcher);
        assert_eq!(threads(Profile::load("latency").unwrap()), StageThreads::WithMatcher);
        assert_eq!(threads(Profile::load("throughput").unwrap()), StageThreads::Own);
        assert_eq!(Profile::load("latency").unwrap().ring.matcher_core, Some(1));
        // Left out, the journal and the replies each get a thread of their own (and the TCP edge
        // must then have its own too).
        let default = BUILT_IN[0].1.replace("tcp_edge_with_matcher = true", "tcp_edge_with_matcher = false");
        let text = default.replace("journal_with_matcher = true", "");
        assert_eq!(threads(parse("x", &text).unwrap()), StageThreads::Own);
        let text = default.replace("journal_with_matcher = true", "replies_with_journal = true");
        assert_eq!(threads(parse("x", &text).unwrap()), StageThreads::RepliesWithJournal);
        // The journal on the matcher's thread takes the replies with it.
        let text = BUILT_IN[0]
            .1
            .replace("journal_with_matcher = true", "journal_with_matcher = true\nreplies_with_journal = true");
        assert_eq!(threads(parse("x", &text).unwrap()), StageThreads::WithMatcher);
        let text = BUILT_IN[0]
            .1
            .replace("journal_with_matcher = true", "journal_with_matcher = true\nreplies_with_journal = false");
        assert!(parse("x", &text).unwrap_err().to_string().contains("remove rings.replies_with_journal = false"));
    }

    #[test]
    fn the_benchmarks_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
        let os = Profile::load(dir.join("profile-os.toml").to_str().unwrap()).unwrap();
        assert_eq!((os.durability, os.ring.stages), (Durability::Os, StageThreads::WithMatcher));
        assert!(os.tcp_edge_with_matcher);
        let latency = Profile::load(dir.join("profile-latency-os.toml").to_str().unwrap()).unwrap();
        assert_eq!((latency.durability, latency.ring.wait), (Durability::Os, Wait::BusySpin));
        assert_eq!(latency.ring.stages, StageThreads::WithMatcher);
    }

    #[test]
    fn the_tcp_edge_runs_on_the_matchers_thread_only_where_the_matcher_waits_and_replies() {
        let on = |text: &str| {
            text.replace("journal_with_matcher = true", "journal_with_matcher = true\ntcp_edge_with_matcher = true")
        };
        assert!(Profile::load("default").unwrap().tcp_edge_with_matcher);
        let off = BUILT_IN[0].1.replace("tcp_edge_with_matcher = true", "tcp_edge_with_matcher = false");
        assert!(!parse("x", &off).unwrap().tcp_edge_with_matcher);
        // Left out, the edge has a thread of its own.
        let left_out = BUILT_IN[0].1.replace("tcp_edge_with_matcher = true", "");
        assert!(!parse("x", &left_out).unwrap().tcp_edge_with_matcher);
        assert!(parse("x", &on(&left_out)).unwrap().tcp_edge_with_matcher);
        // The latency profile busy-spins: its matcher never waits.
        let err = parse("x", &on(BUILT_IN[1].1)).unwrap_err().to_string();
        assert!(err.contains("needs wait.strategy backoff or sleep"), "{err}");
        // Replies released on another thread would cross threads anyway.
        let text = BUILT_IN[0].1.replace("journal_with_matcher = true", "");
        let err = parse("x", &text).unwrap_err().to_string();
        assert!(err.contains("needs rings.journal_with_matcher = true"), "{err}");
    }

    #[test]
    fn the_snapshot_worker_is_at_idle_priority_unless_the_profile_says_not() {
        for (name, _) in BUILT_IN {
            assert!(Profile::load(name).unwrap().snapshot_idle_priority, "{name}");
        }
        let text = BUILT_IN[0].1.replace("idle_priority = true", "idle_priority = false");
        assert!(!parse("x", &text).unwrap().snapshot_idle_priority);
        // Left out, it is at idle priority.
        let text = BUILT_IN[0].1.replace("idle_priority = true", "");
        assert!(parse("x", &text).unwrap().snapshot_idle_priority);
        let text = BUILT_IN[0].1.replace("idle_priority = true", "idle_priority = \"yes\"");
        assert!(format!("{:#}", parse("x", &text).unwrap_err()).contains("idle_priority"));
    }

    #[test]
    fn the_history_writer_is_at_idle_priority_unless_the_profile_says_not() {
        for (name, _) in BUILT_IN {
            assert!(Profile::load(name).unwrap().history_idle_priority, "{name}");
        }
        let (before, after) = BUILT_IN[2].1.split_once("[history]\nidle_priority = true").expect("the section");
        let off = format!("{before}[history]\nidle_priority = false{after}");
        let off = parse("x", &off).unwrap();
        assert!(!off.history_idle_priority);
        assert!(off.snapshot_idle_priority, "the snapshot worker's own key is apart");
        // Left out, section or key, it is at idle priority.
        assert!(parse("x", &format!("{before}{after}")).unwrap().history_idle_priority);
        assert!(parse("x", &format!("{before}[history]{after}")).unwrap().history_idle_priority);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_key() {
        let text = BUILT_IN[0].1.replace("input_slots = 65536", "input_slots = 1000");
        assert!(parse("x", &text).unwrap_err().to_string().contains("rings.input_slots = 1000"));
        let text = BUILT_IN[0].1.replace("durability = \"fsync\"", "durability = \"maybe\"");
        assert!(format!("{:#}", parse("x", &text).unwrap_err()).contains("maybe"));
        assert!(Profile::load("no-such-profile").unwrap_err().to_string().contains("neither a built-in"));
        let text = BUILT_IN[0].1.replace("timer_slack_ns = 1000", "timer_slack_ns = 0");
        assert!(parse("x", &text).unwrap_err().to_string().contains("wait.timer_slack_ns"));
        let text = BUILT_IN[0].1.replace("idle_sleep_us = 200", "idle_sleep_us = 10");
        assert!(parse("x", &text).unwrap_err().to_string().contains("wait.idle_sleep_us must be from sleep_us"));
        let text = BUILT_IN[0].1.replace("strategy = \"sleep\"", "strategy = \"busy-spin\"");
        assert!(parse("x", &text).unwrap_err().to_string().contains("sleep and backoff strategies only"));
        // Left out, the idle sleep is the sleep.
        let text = BUILT_IN[0].1.replace("idle_sleep_us = 200", "");
        let d = Duration::from_micros(20);
        assert_eq!(parse("x", &text).unwrap().ring.wait, Wait::Sleep { sleep: d, idle_sleep: d });
    }
}
