//! # viaduct-ring
//!
//! Owns the two rings of the pipeline and the one function that wires it, [`wire`]:
//!
//! ```text
//!  producers (edges, in-process clients)
//!        │ try_publish                       ┌─► journal ──► replies
//!        ▼                                   │  (group
//!   input ring ──► matcher (one thread) ──► output ring   commit)
//! ```
//!
//! The matcher's thread runs one explicit loop (`matcher_loop`): it polls the input ring, and
//! publishes each command, its reply and its events into the output ring; while the ring is empty
//! it turns the idle work handed to it (the TCP edge's event loop) or waits. The journal stage sees every output slot first; the reply stage
//! sees a slot only after the journal stage finished the whole batch holding it, so nothing is
//! answered before it is durable. (Or, with `StageThreads::RepliesWithJournal`, the reply stage
//! runs on the journal's thread right after it, and releases a batch's replies at the batch's
//! end, after the commit. Or, with `StageThreads::WithMatcher`, there is no output ring:
//! the matcher thread hands each command to the journal stage and then the reply stage itself,
//! and at the end of each batch of the input ring the journal commits before the replies are
//! released.) (Snapshots are not a stage: their worker reads the journal.)
//! Slots are built once by a factory and reused; the stages are closures, monomorphised.
//!
//! This crate holds no state of its own and does no I/O: the journal and reply stages are handed
//! in by the caller.
//!
//! Why one file of ~700 lines (and its tests): the slots, `wire`, the matcher's loop and the
//! doorbell share the slot types and the ring handles; split, each part would need the others'
//! private fields.
#![forbid(unsafe_code)]

mod background;

pub use background::Background;

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use disruptor::wait_strategies::WaitStrategy;
use disruptor::{BusySpin, BusySpinWithSpinLoopHint, MultiProducer, ProcessorSettings, Producer};
use viaduct_matcher::{Command, Events, Matcher, Reply, RpcError};

/// A request on its way to the matcher.
pub struct InSlot {
    /// Who asked: where the reply goes.
    pub client: u32,
    /// The client's own mark on the request (an edge's connection and position), returned with
    /// the reply.
    pub tag: u64,
    /// The request's JSON-RPC `id`.
    pub request_id: i64,
    /// When the edge received it (microseconds since the epoch); the matcher's only clock.
    pub time_us: u64,
    pub cmd: Command,
}

/// A command after the matcher: its reply, its events, and its journal sequence.
pub struct OutSlot {
    pub client: u32,
    pub tag: u64,
    pub request_id: i64,
    pub time_us: u64,
    pub cmd: Command,
    /// The journal sequence of a command that changed state; 0 for queries and refusals, which
    /// the journal skips.
    pub journal_seq: u64,
    /// For a journaled command, the digest of its events (`Events::digest`), which the journal
    /// keeps so that every replay can be checked; computed here, where the events are still in
    /// this core's cache.
    pub digest: u64,
    pub outcome: Result<Reply, RpcError>,
    pub events: Events,
}

/// How a stage waits for work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// Spin without pause: lowest latency, a whole core per stage.
    BusySpin,
    /// Spin with the CPU's spin-loop hint.
    SpinHint,
    /// Sleep `sleep` between empty polls, and `idle_sleep` after [`IDLE_AFTER`] without work: for
    /// machines with fewer cores than stages.
    Sleep { sleep: Duration, idle_sleep: Duration },
    /// Spin a little, then yield, then sleep `sleep` between polls: quick to react after a
    /// burst, and idle threads give their core back. After [`IDLE_AFTER`] without work, sleep
    /// `idle_sleep` instead, so that a stage with nothing to do costs little CPU (a 20 µs sleep
    /// loop costs a thread about a fifth of a core). Spinning and yielding take the core from
    /// others: on a 2-core machine with `fsync` durability they slowed the acknowledgements
    /// (the stages spin while the journal waits for the disk).
    Backoff { sleep: Duration, idle_sleep: Duration },
}

/// How long a [`Wait::Sleep`] or [`Wait::Backoff`] stage goes without work before it sleeps its
/// idle sleep.
pub const IDLE_AFTER: Duration = Duration::from_millis(10);

/// Phased waiting for one stage, starting over whenever the stage waits for a new sequence: spins,
/// then yields ([`BACKOFF_SPINS`] and [`BACKOFF_YIELDS`] for [`Wait::Backoff`], none for
/// [`Wait::Sleep`]), then sleeps, and after [`IDLE_AFTER`] of sleeps the idle sleep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    spins: u32,
    yields: u32,
    sleep: Duration,
    idle_sleep: Duration,
    /// Sleeps of `sleep` before the idle sleeps begin.
    sleeps: u32,
}

impl Backoff {
    fn new(sleep: Duration, idle_sleep: Duration) -> Backoff {
        let sleeps = (IDLE_AFTER.as_nanos() / sleep.as_nanos().max(1)).min(u128::from(u32::MAX / 2)) as u32;
        Backoff { spins: BACKOFF_SPINS, yields: BACKOFF_YIELDS, sleep, idle_sleep, sleeps }
    }

    /// Sleeps only: [`Wait::Sleep`].
    fn sleeping(sleep: Duration, idle_sleep: Duration) -> Backoff {
        Backoff { spins: 0, yields: 0, ..Backoff::new(sleep, idle_sleep) }
    }

    /// The phase of the empty poll after `polls` others for the same sequence.
    fn phase(&self, polls: u32) -> Phase {
        if polls < self.spins {
            Phase::Spin
        } else if polls < self.spins + self.yields {
            Phase::Yield
        } else if polls < self.spins + self.yields + self.sleeps {
            Phase::Sleep(self.sleep)
        } else {
            Phase::Sleep(self.idle_sleep)
        }
    }
}

const BACKOFF_SPINS: u32 = 200;
const BACKOFF_YIELDS: u32 = 50;

thread_local! {
    /// (sequence waited for, polls so far) of the ring stage running on this thread: the output
    /// ring's consumers wait through [`Backoff`], which the disruptor calls with no state of its own.
    static BACKOFF: std::cell::Cell<(i64, u32)> = const { std::cell::Cell::new((-1, 0)) };
    /// Set on the matcher's thread (by [`matcher_loop`]), so that a producer on it (its idle
    /// work) rings no doorbell and an edge on it needs no wake.
    static ON_MATCHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Work the matcher's thread does while the input ring is empty, a turn at a time: each call
/// waits at most the given time (zero: not at all) for something to do, does it, and returns;
/// false once the work is finished, when it is dropped. An edge's event loop run this way reads
/// a request, and the matcher's thread matches, journals and answers it, with no hand-off.
pub type Idle = Box<dyn FnMut(Duration) -> bool + Send>;

/// Ends a wait inside [`Idle`] work from another thread.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Lets a producer end the matcher thread's wait as soon as it publishes, instead of the request
/// waiting out the rest of a sleep (on average half of `sleep_us`).
///
/// The matcher marks itself parked and waits at most its sleep: parked, or inside its idle
/// work's wait; a producer, after publishing, unparks it (or calls the idle work's wake) if
/// marked. A publish that lands between the matcher's last look at the ring and its mark is found
/// at the end of the wait, as without a doorbell: the sleep bounds the miss.
#[derive(Default)]
struct Doorbell {
    parked: AtomicBool,
    matcher: OnceLock<Thread>,
    /// Idle work handed over by [`Input::run_while_idle`], until the matcher's thread takes it.
    mail: Mutex<Option<Idle>>,
    has_mail: AtomicBool,
    /// How to end the wait of the idle work the matcher's thread runs, while it runs one.
    wake: Mutex<Option<Wake>>,
    /// The last producer is being dropped: the matcher stops sleeping, so that it sees the
    /// pipeline's end at once rather than after its sleep.
    closing: AtomicBool,
    /// The matcher loop's passes, for a watchdog.
    progress: Arc<Progress>,
}

/// How many passes the matcher's loop has made: every pass, busy or idle (an idle loop still
/// passes at least once per sleep of its wait), so a count that stops moving is a matcher
/// thread that is stuck. On a cache line of its own: the matcher writes it on every pass.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Progress {
    passes: AtomicU64,
    /// Batches the matcher took from the input ring, the commands in them, and the largest and
    /// the last batch: what was waiting in the ring when the matcher looked (its occupancy).
    batches: AtomicU64,
    commands: AtomicU64,
    batch_max: AtomicU64,
    batch_last: AtomicU64,
}

impl Progress {
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// (batches, commands in them, the largest batch, the last batch).
    pub fn batches(&self) -> (u64, u64, u64, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&self.batches), load(&self.commands), load(&self.batch_max), load(&self.batch_last))
    }

    /// One batch of `n` commands taken (the matcher's thread alone writes these).
    fn took(&self, n: u64) {
        self.batches.store(self.batches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.commands.store(self.commands.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        self.batch_last.store(n, Ordering::Relaxed);
        if n > self.batch_max.load(Ordering::Relaxed) {
            self.batch_max.store(n, Ordering::Relaxed);
        }
    }
}

impl Doorbell {
    /// Called by a producer after it published.
    fn ring(&self) {
        // The matcher's own thread (its idle work submitting) needs no waking.
        if on_matcher_thread() {
            return;
        }
        // Orders the publish (a release store inside the ring) before the load of `parked`, as
        // the matcher's SeqCst store of `parked` comes before its next look at the ring.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.wake_matcher();
        }
    }

    fn wake_matcher(&self) {
        let wake = self.wake.lock().expect("doorbell lock").clone();
        match wake {
            Some(wake) => wake(),
            None => {
                if let Some(t) = self.matcher.get() {
                    t.unpark();
                }
            }
        }
    }

    /// On the matcher's thread: the idle work handed over since the last look, if any.
    fn take_mail(&self) -> Option<Idle> {
        // A load first: a swap on every poll would write the line producers read.
        if self.has_mail.load(Ordering::Relaxed) && self.has_mail.swap(false, Ordering::AcqRel) {
            return self.mail.lock().expect("doorbell lock").take();
        }
        None
    }
}

/// Whether the calling thread is a pipeline's matcher thread.
pub fn on_matcher_thread() -> bool {
    ON_MATCHER.with(std::cell::Cell::get)
}

impl WaitStrategy for Backoff {
    fn wait_for(&self, sequence: i64) {
        let polls = BACKOFF.with(|b| {
            let (seq, polls) = b.get();
            let polls = if seq == sequence { polls.saturating_add(1) } else { 0 };
            b.set((sequence, polls));
            polls
        });
        match self.phase(polls) {
            Phase::Spin => std::hint::spin_loop(),
            Phase::Yield => std::thread::yield_now(),
            Phase::Sleep(d) => std::thread::sleep(d),
        }
    }
}

/// What a [`Backoff`] stage does on one empty poll.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Phase {
    Spin,
    Yield,
    Sleep(Duration),
}

/// Ring sizes, waits and core pins: the part of a tuning profile the rings read.
#[derive(Debug, Clone, PartialEq)]
pub struct RingConfig {
    /// Slots in the input ring (a power of two); a full ring refuses new requests.
    pub input_slots: usize,
    /// Slots in the output ring (a power of two); a full ring holds the matcher back.
    pub output_slots: usize,
    pub wait: Wait,
    /// Which threads the journal and reply stages run on.
    pub stages: StageThreads,
    /// Cores to pin the matcher, journal and reply threads to (`None`: not pinned).
    pub matcher_core: Option<usize>,
    pub journal_core: Option<usize>,
    pub replies_core: Option<usize>,
}

/// Which threads the journal and reply stages run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageThreads {
    /// Each on a thread of its own, the output ring between them and the matcher.
    Own,
    /// The reply stage on the journal's thread, right after the journal stage: one hand-off
    /// fewer per command (a thread switch, which costs tens of microseconds on a small virtual
    /// machine), but encoding replies no longer overlaps the journal's next write.
    RepliesWithJournal,
    /// Both on the matcher's thread, after each command: no output ring and no hand-off between
    /// matching and the journal, so a request crosses one thread (the matcher's) between its
    /// edge's and its reply; but matching stops while the journal writes (and, with `fsync`,
    /// while the disk syncs), and the batch a commit covers is what the input ring held.
    /// `output_slots` is unused.
    WithMatcher,
}

/// The producer side of the input ring; clone one per producing thread.
#[derive(Clone)]
pub struct Input {
    // Dropped in this order: the last producer ends the ring, then the last handle of the matcher's
    // thread waits for it to finish.
    producer: MultiProducer<InSlot, disruptor::SingleConsumerBarrier>,
    doorbell: Arc<Doorbell>,
    _matcher: Arc<MatcherThread>,
}

/// The matcher's thread, joined when the last [`Input`] is dropped (after the ring has ended).
struct MatcherThread(Option<std::thread::JoinHandle<()>>);

impl Drop for MatcherThread {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            // Dropped on the matcher's thread itself (its idle work held the last producer): it
            // is ending, and cannot wait for itself.
            if t.thread().id() == std::thread::current().id() {
                return;
            }
            if t.join().is_err() {
                tracing::error!("pipeline: the matcher's thread panicked");
            }
        }
    }
}

impl Drop for Input {
    /// The last producer wakes the matcher, which then stops sleeping: the ring's end (when the
    /// producer itself drops, after this) is seen at once.
    fn drop(&mut self) {
        // Held by every producer and by the matcher's thread.
        if Arc::strong_count(&self.doorbell) <= 2 {
            self.doorbell.closing.store(true, Ordering::Release);
            self.doorbell.wake_matcher();
        }
    }
}

impl Input {
    /// Hands `idle` to the matcher's thread, which runs it in its waits from its next wait on
    /// (replacing idle work it runs, if any); `wake` ends a wait inside it, for producers on
    /// other threads. With [`Wait::BusySpin`] and [`Wait::SpinHint`] its turns never wait.
    /// The matcher loop's progress, for a watchdog.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.doorbell.progress)
    }

    pub fn run_while_idle(&self, idle: Idle, wake: Wake) {
        let bell = &self.doorbell;
        *bell.mail.lock().expect("doorbell lock") = Some(idle);
        *bell.wake.lock().expect("doorbell lock") = Some(wake);
        bell.has_mail.store(true, Ordering::Release);
        if let Some(t) = bell.matcher.get() {
            t.unpark();
        }
    }
}

/// Publishes a request from `client`, marked `tag` (the client's own), with its JSON-RPC id, or
/// hands the command back at once when the input ring is full.
pub fn submit(
    input: &mut Input,
    client: u32,
    tag: u64,
    request_id: i64,
    time_us: u64,
    cmd: Command,
) -> Result<u64, Command> {
    let mut cmd = Some(cmd);
    let published = input.producer.try_publish(|slot| {
        slot.client = client;
        slot.tag = tag;
        slot.request_id = request_id;
        slot.time_us = time_us;
        slot.cmd = cmd.take().expect("published once");
    });
    match (published, cmd) {
        (Ok(seq), _) => {
            input.doorbell.ring();
            Ok(seq as u64)
        }
        (Err(_), Some(cmd)) => Err(cmd),
        (Err(_), None) => unreachable!("a refused publish does not take the command"),
    }
}

/// The cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

/// Pins the calling thread, which runs `stage` outside the rings, as [`wire`] pins its own
/// threads: to `core` if this machine has it (logged either way).
pub fn pin_current(stage: &str, core: Option<usize>) {
    if let Some(c) = checked_core(stage, core, &available_cores()) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            tracing::warn!("pipeline: pinning the {stage} thread to core {c} failed");
        }
    }
}

/// The core to pin `stage` to: the requested one if it exists, else none (with a warning).
fn checked_core(stage: &str, core: Option<usize>, available: &[usize]) -> Option<usize> {
    match core {
        Some(c) if available.contains(&c) => {
            tracing::info!("pipeline: {stage} thread pinned to core {c}");
            Some(c)
        }
        Some(c) => {
            tracing::warn!("pipeline: {stage} asks for core {c}, but this machine has cores {available:?}: not pinned");
            None
        }
        None => {
            tracing::info!("pipeline: {stage} thread not pinned");
            None
        }
    }
}

fn out_slot() -> OutSlot {
    OutSlot {
        client: 0,
        tag: 0,
        request_id: 0,
        time_us: 0,
        cmd: Command::AssetList,
        journal_seq: 0,
        digest: 0,
        outcome: Err(RpcError::Internal),
        // Empty until first used: a slot allocates on the ring's first lap, never after.
        events: Events::default(),
    }
}

/// The stages handed to [`wire`].
pub struct Stages<J, R, F> {
    /// Sees every output slot; `end_of_batch` marks where it must commit.
    pub journal: J,
    /// Sees each slot after the journal stage saw it, and must release nothing (no reply, no
    /// publication) before the `end_of_batch` call: on its own thread it sees a slot only once
    /// the journal stage finished the batch holding it; with
    /// [`StageThreads::RepliesWithJournal`] it runs right after the journal stage on each slot,
    /// and only the batch's last call comes after the journal's commit.
    pub replies: R,
    /// Called on the matcher thread when the pipeline stops, with the final state and its journal
    /// sequence, before the output ring drains.
    pub on_stop: F,
}

/// Wires the whole pipeline and starts its threads; returns the input ring's producer.
///
/// `last_seq` is the journal sequence the recovered `matcher` state ends at. Dropping every clone
/// of the returned producer drains the pipeline and joins its threads.
pub fn wire<J, R, F>(cfg: &RingConfig, matcher: Matcher, last_seq: u64, stages: Stages<J, R, F>) -> Input
where
    J: FnMut(&OutSlot, bool) + Send + 'static,
    R: FnMut(&OutSlot, bool) + Send + 'static,
    F: FnOnce(&Matcher, u64) + Send + 'static,
{
    match cfg.wait {
        Wait::BusySpin => wire_with(cfg, BusySpin, matcher, last_seq, stages),
        Wait::SpinHint => wire_with(cfg, BusySpinWithSpinLoopHint, matcher, last_seq, stages),
        Wait::Sleep { sleep, idle_sleep } => {
            wire_with(cfg, Backoff::sleeping(sleep, idle_sleep), matcher, last_seq, stages)
        }
        Wait::Backoff { sleep, idle_sleep } => {
            wire_with(cfg, Backoff::new(sleep, idle_sleep), matcher, last_seq, stages)
        }
    }
}

fn wire_with<W, J, R, F>(cfg: &RingConfig, wait: W, matcher: Matcher, last_seq: u64, stages: Stages<J, R, F>) -> Input
where
    W: WaitStrategy + 'static,
    J: FnMut(&OutSlot, bool) + Send + 'static,
    R: FnMut(&OutSlot, bool) + Send + 'static,
    F: FnOnce(&Matcher, u64) + Send + 'static,
{
    let Stages { mut journal, mut replies, on_stop } = stages;
    let cores = available_cores();
    let output = if cfg.stages == StageThreads::WithMatcher {
        if cfg.journal_core.is_some() || cfg.replies_core.is_some() {
            tracing::info!(
                "pipeline: the journal and replies run on the matcher's thread; their core settings are unused"
            );
        }
        Output::Inline { slot: out_slot(), journal, replies }
    } else {
        // The output ring: journal first, replies after it.
        let out = disruptor::build_single_producer(cfg.output_slots, out_slot, wait);
        let out = match checked_core("journal", cfg.journal_core, &cores) {
            Some(c) => out.pin_at_core(c),
            None => out,
        };
        Output::Ring(if cfg.stages == StageThreads::RepliesWithJournal {
            if cfg.replies_core.is_some() {
                tracing::info!("pipeline: replies run on the journal's thread; their core setting is unused");
            }
            out.thread_name("viaduct-journal")
                .handle_events_with(move |s: &OutSlot, _, end| {
                    journal(s, end);
                    replies(s, end);
                })
                .build()
        } else {
            let out = out
                .thread_name("viaduct-journal")
                .handle_events_with(move |s: &OutSlot, _, end| journal(s, end))
                .and_then();
            let out = match checked_core("replies", cfg.replies_core, &cores) {
                Some(c) => out.pin_at_core(c),
                None => out,
            };
            out.thread_name("viaduct-replies").handle_events_with(move |s: &OutSlot, _, end| replies(s, end)).build()
        })
    };

    // The input ring, polled by the matcher's own loop.
    let (poller, input) = disruptor::build_multi_producer(cfg.input_slots, in_slot, wait).new_event_poller();
    let producer = input.build();
    let doorbell = Arc::new(Doorbell::default());
    let bell = Arc::clone(&doorbell);
    let stage = MatcherStage {
        matcher,
        scratch: Vec::with_capacity(4096),
        output,
        journal_seq: last_seq,
        on_stop: Some(Box::new(on_stop)),
    };
    let (core, pace) = (cfg.matcher_core, Pace::of(cfg.wait));
    let thread = std::thread::Builder::new()
        .name("viaduct-matcher".into())
        .spawn(move || {
            pin_current("matcher", core);
            matcher_loop(stage, poller, &bell, pace);
        })
        .expect("spawning the matcher thread");
    Input { producer, doorbell, _matcher: Arc::new(MatcherThread(Some(thread))) }
}

/// How the matcher's loop waits on an empty ring: the profile's [`Wait`] as phases.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Spin { hint: bool },
    Phased(Backoff),
}

impl Pace {
    fn of(wait: Wait) -> Pace {
        match wait {
            Wait::BusySpin => Pace::Spin { hint: false },
            Wait::SpinHint => Pace::Spin { hint: true },
            Wait::Sleep { sleep, idle_sleep } => Pace::Phased(Backoff::sleeping(sleep, idle_sleep)),
            Wait::Backoff { sleep, idle_sleep } => Pace::Phased(Backoff::new(sleep, idle_sleep)),
        }
    }

    /// The phase of the empty poll after `polls` others since the last batch.
    fn phase(self, polls: u32) -> Phase {
        match self {
            Pace::Spin { .. } => Phase::Spin,
            Pace::Phased(b) => b.phase(polls),
        }
    }
}

/// The matcher's thread: one loop, here in the open. Each pass polls the input ring. A batch
/// (every request the ring holds) is matched and handed on, command by command, to the output
/// ring or, in profiles that put them on this thread, to the journal and reply stages; the
/// batch's last command ends it (the journal commits, then the replies are released). The idle
/// work (the TCP edge's event loop, in profiles that put it here) turns while the ring is empty,
/// waiting at most the wait's sleep, and once after any batch that had no turn since the batch
/// before: a producer on another thread that keeps the ring from emptying cannot starve it.
fn matcher_loop<J, R>(
    mut stage: MatcherStage<J, R>,
    mut ring: disruptor::EventPoller<InSlot, disruptor::MultiProducerBarrier>,
    bell: &Doorbell,
    pace: Pace,
) where
    J: FnMut(&OutSlot, bool),
    R: FnMut(&OutSlot, bool),
{
    ON_MATCHER.with(|m| m.set(true));
    let _ = bell.matcher.set(std::thread::current());
    let mut idle: Option<Idle> = None;
    // Empty polls since the last batch, and whether the idle work turned since then.
    let (mut polls, mut turned) = (0u32, false);
    let mut passes = 0u64;
    let turn = |idle: &mut Option<Idle>, timeout: Duration| -> bool {
        let Some(work) = idle.as_mut() else { return false };
        if !work(timeout) {
            *bell.wake.lock().expect("doorbell lock") = None;
            *idle = None;
        }
        true
    };
    loop {
        passes += 1;
        bell.progress.passes.store(passes, Ordering::Relaxed);
        if let Some(work) = bell.take_mail() {
            idle = Some(work);
        }
        match ring.poll() {
            Ok(mut batch) => {
                // The guard's length is its iterator's (`ExactSizeIterator` on `&mut EventGuard`).
                #[allow(clippy::unnecessary_mut_passed)]
                let n = (&mut batch).len();
                bell.progress.took(n as u64);
                for (i, slot) in (&mut batch).enumerate() {
                    stage.apply(slot, i + 1 == n);
                }
                drop(batch); // the slots go back to the producers
                if !turned {
                    turn(&mut idle, Duration::ZERO);
                }
                (polls, turned) = (0, false);
            }
            Err(disruptor::Polling::NoEvents) => {
                if bell.closing.load(Ordering::Acquire) {
                    std::thread::yield_now();
                    continue;
                }
                let phase = pace.phase(polls);
                polls = polls.saturating_add(1);
                // Marked parked before waiting, in the idle work or in a park, so that a
                // producer's publish ends the wait.
                let sleep = match phase {
                    Phase::Sleep(d) => Some(d),
                    Phase::Spin | Phase::Yield => None,
                };
                if sleep.is_some() {
                    bell.parked.store(true, Ordering::SeqCst);
                }
                if turn(&mut idle, sleep.unwrap_or(Duration::ZERO)) {
                    turned = true;
                } else {
                    match phase {
                        Phase::Spin if matches!(pace, Pace::Spin { hint: false }) => {}
                        Phase::Spin => std::hint::spin_loop(),
                        Phase::Yield => std::thread::yield_now(),
                        Phase::Sleep(d) => std::thread::park_timeout(d),
                    }
                }
                if sleep.is_some() {
                    bell.parked.store(false, Ordering::Relaxed);
                }
            }
            Err(disruptor::Polling::Shutdown) => break,
        }
    }
    // The idle work (with its client of the engine) goes before the stage, whose drop reports the
    // final state and drains the output ring.
    drop(idle);
    drop(stage);
}

fn in_slot() -> InSlot {
    InSlot { client: 0, tag: 0, request_id: 0, time_us: 0, cmd: Command::AssetList }
}

/// What the matcher thread calls when it stops.
type OnStop = Box<dyn FnOnce(&Matcher, u64) + Send>;

/// Where the matcher puts each command after applying it.
// One per pipeline, on the matcher's thread: the slot inline saves an indirection per command.
#[allow(clippy::large_enum_variant)]
enum Output<J, R> {
    /// Into the output ring, whose stages run on threads of their own.
    Ring(disruptor::SingleProducer<OutSlot, disruptor::SingleConsumerBarrier>),
    /// Into one slot of its own, handed to the journal and reply stages on this thread
    /// ([`StageThreads::WithMatcher`]).
    Inline { slot: OutSlot, journal: J, replies: R },
}

/// The matcher thread's state: the matcher and where its output goes.
struct MatcherStage<J, R> {
    matcher: Matcher,
    scratch: Vec<u8>,
    output: Output<J, R>,
    journal_seq: u64,
    on_stop: Option<OnStop>,
}

impl<J, R> Drop for MatcherStage<J, R> {
    fn drop(&mut self) {
        if let Some(f) = self.on_stop.take() {
            f(&self.matcher, self.journal_seq);
        }
        // Then `output` drops, which drains the output ring and joins its stages (inline, the
        // last batch already ended, and with it its commit).
    }
}

impl<J, R> MatcherStage<J, R>
where
    J: FnMut(&OutSlot, bool),
    R: FnMut(&OutSlot, bool),
{
    fn apply(&mut self, slot: &InSlot, end_of_batch: bool) {
        let (matcher, seq, scratch) = (&mut self.matcher, &mut self.journal_seq, &mut self.scratch);
        let mut fill = |out: &mut OutSlot| {
            out.events.clear();
            out.outcome = matcher.apply(slot.time_us, &slot.cmd, &mut out.events);
            (out.journal_seq, out.digest) = if out.outcome.is_ok() && slot.cmd.is_write() {
                *seq += 1;
                (*seq, out.events.digest(scratch))
            } else {
                (0, 0)
            };
            out.client = slot.client;
            out.tag = slot.tag;
            out.request_id = slot.request_id;
            out.time_us = slot.time_us;
            out.cmd.clone_from(&slot.cmd);
        };
        match &mut self.output {
            Output::Ring(producer) => producer.publish(fill),
            Output::Inline { slot: out, journal, replies } => {
                fill(out);
                journal(out, end_of_batch);
                replies(out, end_of_batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// On a thread of its own, on the journal's, or with the journal on the matcher's, the reply
    /// stage sees every slot once, in order, after the journal stage, and each of its batch ends
    /// comes after a journal commit that covers every slot it has seen.
    #[test]
    fn replies_end_a_batch_only_after_the_journal_committed_it_on_any_thread() {
        for (stages, journal_thread) in [
            (StageThreads::Own, "viaduct-journal"),
            (StageThreads::RepliesWithJournal, "viaduct-journal"),
            (StageThreads::WithMatcher, "viaduct-matcher"),
        ] {
            let arrangement = format!("{stages:?}");
            let cfg = RingConfig {
                input_slots: 1024,
                output_slots: 64,
                wait: Wait::Sleep { sleep: Duration::from_micros(50), idle_sleep: Duration::from_micros(50) },
                stages,
                matcher_core: None,
                journal_core: None,
                replies_core: None,
            };
            let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
            let (journaled, committed, violations) =
                (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let elsewhere = Arc::new(AtomicU64::new(0));
            let stages = Stages {
                journal: {
                    let (journaled, committed, elsewhere) =
                        (Arc::clone(&journaled), Arc::clone(&committed), Arc::clone(&elsewhere));
                    move |_: &OutSlot, end: bool| {
                        if std::thread::current().name() != Some(journal_thread) {
                            elsewhere.fetch_add(1, Ordering::SeqCst);
                        }
                        let n = journaled.fetch_add(1, Ordering::SeqCst) + 1;
                        if end {
                            committed.store(n, Ordering::SeqCst);
                        }
                    }
                },
                replies: {
                    let (journaled, committed, violations, seen) =
                        (Arc::clone(&journaled), Arc::clone(&committed), Arc::clone(&violations), Arc::clone(&seen));
                    move |s: &OutSlot, end: bool| {
                        let mut seen = seen.lock().unwrap();
                        seen.push(s.request_id);
                        let n = seen.len() as u64;
                        // The journal saw this slot before the reply stage did...
                        if journaled.load(Ordering::SeqCst) < n {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                        // ...and committed everything seen so far before the batch ends here.
                        if end && committed.load(Ordering::SeqCst) < n {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                },
                on_stop: |_: &Matcher, _| {},
            };
            let mut input = wire(&cfg, Matcher::new(spec), 0, stages);
            let total = 20_000;
            let mut id = 0;
            while id < total {
                match submit(&mut input, 1, 0, id, 0, Command::AssetList) {
                    Ok(_) => id += 1,
                    Err(_) => std::thread::yield_now(),
                }
            }
            drop(input); // drains the pipeline and joins its threads
            let seen = seen.lock().unwrap();
            assert_eq!(*seen, (0..total).collect::<Vec<i64>>(), "{arrangement}");
            assert_eq!(violations.load(Ordering::SeqCst), 0, "{arrangement}");
            assert_eq!(committed.load(Ordering::SeqCst), total as u64, "{arrangement}");
            assert_eq!(elsewhere.load(Ordering::SeqCst), 0, "{arrangement}: the journal ran off {journal_thread}");
        }
    }

    #[test]
    fn backoff_spins_yields_sleeps_then_sleeps_its_idle_sleep_after_10_ms() {
        let (sleep, idle) = (Duration::from_micros(20), Duration::from_micros(200));
        let b = Backoff::new(sleep, idle);
        let first_sleep = BACKOFF_SPINS + BACKOFF_YIELDS;
        // 10 ms of 20 µs sleeps.
        let first_idle = first_sleep + 500;
        assert_eq!(b.phase(0), Phase::Spin);
        assert_eq!(b.phase(BACKOFF_SPINS - 1), Phase::Spin);
        assert_eq!(b.phase(BACKOFF_SPINS), Phase::Yield);
        assert_eq!(b.phase(first_sleep - 1), Phase::Yield);
        assert_eq!(b.phase(first_sleep), Phase::Sleep(sleep));
        assert_eq!(b.phase(first_idle - 1), Phase::Sleep(sleep));
        assert_eq!(b.phase(first_idle), Phase::Sleep(idle));
        assert_eq!(b.phase(u32::MAX), Phase::Sleep(idle));
        let s = Backoff::sleeping(sleep, idle);
        assert_eq!(s.phase(0), Phase::Sleep(sleep));
        assert_eq!(s.phase(499), Phase::Sleep(sleep));
        assert_eq!(s.phase(500), Phase::Sleep(idle));
    }

    /// Rings whose matcher sleeps 60 s between empty polls, with the journal and the replies
    /// on its thread.
    fn sleepy_config(input_slots: usize) -> RingConfig {
        let long = Duration::from_secs(60);
        RingConfig {
            input_slots,
            output_slots: 64,
            wait: Wait::Sleep { sleep: long, idle_sleep: long },
            stages: StageThreads::WithMatcher,
            matcher_core: None,
            journal_core: None,
            replies_core: None,
        }
    }

    /// A pipeline on [`sleepy_config`] whose replies go to a channel as (request id, thread
    /// name).
    fn sleepy_pipeline() -> (Input, std::sync::mpsc::Receiver<(i64, String)>) {
        let (cfg, spec) =
            (sleepy_config(64), viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let stages = Stages {
            journal: |_: &OutSlot, _: bool| {},
            replies: move |s: &OutSlot, _: bool| {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send((s.request_id, name)).unwrap();
            },
            on_stop: |_: &Matcher, _| {},
        };
        (wire(&cfg, Matcher::new(spec), 0, stages), rx)
    }

    /// Well under the matcher's 60 s sleep: a reply within it means a wake ended the sleep.
    const WOKEN_WITHIN: Duration = Duration::from_secs(20);

    /// Waits, with a deadline, until the matcher has marked itself parked: asleep, or in its idle
    /// work's wait, which only a producer's wake ends before its 60 s.
    fn wait_parked(input: &Input) {
        let deadline = std::time::Instant::now() + WOKEN_WITHIN;
        while !input.doorbell.parked.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the matcher never went back to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_publish_ends_the_matchers_sleep() {
        let (mut input, replies) = sleepy_pipeline();
        for id in 0..3 {
            // The matcher back asleep first.
            wait_parked(&input);
            submit(&mut input, 1, 0, id, 0, Command::AssetList).unwrap();
            assert_eq!(replies.recv_timeout(WOKEN_WITHIN).unwrap().0, id);
        }
    }

    /// A producer on another thread that keeps the input ring from emptying does not keep the
    /// idle work from turning: on the matcher's thread, each batch has a turn after the end of
    /// the one before, so no more than two batch ends pass between turns.
    #[test]
    fn idle_work_turns_every_batch_while_another_producer_keeps_the_ring_full() {
        let cfg = sleepy_config(256);
        let spec = viaduct_matcher::Spec::new(&viaduct_matcher::config::embedded()).unwrap();
        // Batch ends, and the turns of the idle work, each as the batch ends seen when it began.
        let ends = Arc::new(AtomicU64::new(0));
        let turns = Arc::new(Mutex::new(Vec::new()));
        let stages = Stages {
            // A commit that takes a while, as a sync does: the producer fills the ring meanwhile.
            journal: |_: &OutSlot, end: bool| {
                if end {
                    std::thread::sleep(Duration::from_micros(300));
                }
            },
            replies: {
                let ends = Arc::clone(&ends);
                move |_: &OutSlot, end: bool| {
                    if end {
                        ends.fetch_add(1, Ordering::SeqCst);
                    }
                }
            },
            on_stop: |_: &Matcher, _| {},
        };
        let mut input = wire(&cfg, Matcher::new(spec), 0, stages);
        let (poke, poked) = std::sync::mpsc::channel::<()>();
        let idle: Idle = {
            let (ends, turns) = (Arc::clone(&ends), Arc::clone(&turns));
            Box::new(move |timeout| {
                assert_eq!(std::thread::current().name(), Some("viaduct-matcher"));
                turns.lock().unwrap().push(ends.load(Ordering::SeqCst));
                let _ = poked.recv_timeout(timeout);
                true
            })
        };
        input.run_while_idle(
            idle,
            Arc::new(move || {
                let _ = poke.send(());
            }),
        );
        let total = 40_000;
        let mut id = 0;
        while id < total {
            match submit(&mut input, 1, 0, id, 0, Command::AssetList) {
                Ok(_) => id += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        drop(input); // drains the pipeline and joins its threads
        let (ends, at) = (ends.load(Ordering::SeqCst), turns.lock().unwrap());
        assert!(ends >= total as u64 / 256, "{ends} batches for {total} requests in a ring of 256");
        // A turn comes at each batch's end unless one came after the batch before ended: no more
        // than two batch ends between one turn and the next, from the first to the last.
        assert!(at.first().is_some_and(|&e| e <= 2), "first turn after batch end {:?}", at.first());
        assert!(at.last().is_some_and(|&e| e + 2 >= ends), "last turn after batch end {:?} of {ends}", at.last());
        for w in at.windows(2) {
            assert!(w[1] - w[0] <= 2, "turns after batch ends {} and {}: the batches between had none", w[0], w[1]);
        }
    }

    /// The matcher's progress moves while it waits for work and stops while its thread is held
    /// (here by idle work that does not return): what a watchdog reads.
    #[test]
    fn progress_moves_while_idle_and_stops_while_the_matchers_thread_is_held() {
        let (input, _replies) = sleepy_pipeline();
        let progress = input.progress();
        let moved = |from: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while progress.passes() == from {
                assert!(std::time::Instant::now() < deadline, "no progress from {from}");
                std::thread::yield_now();
            }
        };
        moved(progress.passes());
        let (release_it, release) = std::sync::mpsc::channel::<()>();
        let (entered, inside) = std::sync::mpsc::channel::<()>();
        let idle: Idle = Box::new(move |_| {
            let _ = entered.send(());
            let _ = release.recv();
            false
        });
        input.run_while_idle(idle, Arc::new(|| {}));
        inside.recv_timeout(Duration::from_secs(10)).expect("the idle work ran");
        let stuck = progress.passes();
        // Watched for 100 ms, hundreds of its 200 µs sleeps: not one pass while held.
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            assert_eq!(progress.passes(), stuck, "a pass while the matcher's thread was held");
            std::thread::yield_now();
        }
        release_it.send(()).unwrap();
        moved(stuck);
    }

    /// Idle work runs on the matcher's thread in its waits; a publish from another thread ends
    /// its wait through its wake; what it submits itself is matched; once it returns false it
    /// is dropped, and publishes wake the matcher as before.
    #[test]
    fn idle_work_runs_in_the_matchers_waits_until_it_is_done() {
        let (mut input, replies) = sleepy_pipeline();
        let (poke, poked) = std::sync::mpsc::channel::<()>();
        let (stop, dropped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let threads = Arc::new(Mutex::new(Vec::new()));
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let idle: Idle = {
            let (stop, threads, guard) = (Arc::clone(&stop), Arc::clone(&threads), OnDrop(Arc::clone(&dropped)));
            let mut own = input.clone();
            let mut submitted = false;
            Box::new(move |timeout| {
                let _guard = &guard;
                threads.lock().unwrap().push(std::thread::current().name().unwrap_or("").to_string());
                // As an event loop does: wait, then handle what came (here, once, a request of
                // its own).
                let _ = poked.recv_timeout(timeout);
                if !submitted {
                    submit(&mut own, 1, 0, 100, 0, Command::AssetList).unwrap();
                    submitted = true;
                }
                !stop.load(Ordering::SeqCst)
            })
        };
        let wake: Wake = Arc::new(move || {
            let _ = poke.send(());
        });
        input.run_while_idle(idle, wake.clone());
        wake();
        // What the idle work submitted on the matcher's thread.
        assert_eq!(replies.recv_timeout(WOKEN_WITHIN).unwrap(), (100, "viaduct-matcher".to_string()));
        for id in 0..3 {
            wait_parked(&input);
            submit(&mut input, 1, 0, id, 0, Command::AssetList).unwrap();
            assert_eq!(replies.recv_timeout(WOKEN_WITHIN).unwrap().0, id);
        }
        assert!(threads.lock().unwrap().iter().all(|t| t == "viaduct-matcher"));
        stop.store(true, Ordering::SeqCst);
        wake();
        let started = std::time::Instant::now();
        while !dropped.load(Ordering::SeqCst) {
            assert!(started.elapsed() < WOKEN_WITHIN, "the finished idle work was not dropped");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Without idle work, a publish unparks the matcher again.
        wait_parked(&input);
        submit(&mut input, 1, 0, 7, 0, Command::AssetList).unwrap();
        assert_eq!(replies.recv_timeout(WOKEN_WITHIN).unwrap().0, 7);
    }
}
