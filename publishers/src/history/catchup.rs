//! History brought up to the journal: at startup, the rows of every command after what the store
//! holds are written while recovery replays them ([`Catchup`]); a store unreachable at startup is
//! caught up from the journal once the writer reaches it ([`connect_later`]).

use std::path::Path;

use anyhow::{Context, Result};
use viaduct_journaler::recovery::{journal_dir, snapshot_dir, state_at, Downstream};
use viaduct_journaler::segment::JournalTail;
use viaduct_journaler::{snapshot, JournalError};
use viaduct_matcher::{Events, EventsView, Spec};

use super::store::{self as history_store, Store};
use super::writer::HistoryConfig;
use super::Rows;
use crate::alert::{AlertKind, Alerts};
use crate::market::MarketData;

/// What is rebuilt with the matcher at startup: market data, and the history rows of every
/// command after the history store's committed sequence.
pub struct Catchup<'a> {
    pub spec: &'a Spec,
    pub market: MarketData,
    pub history: Option<(Box<dyn Store>, u64, Rows)>,
    pub alerts: Alerts,
}

/// Rows written at a time while history catches up during recovery (large, as the writer's own
/// transactions when it is behind).
const CATCHUP_ROWS: usize = 200_000;

impl Downstream for Catchup<'_> {
    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        if !bytes.is_empty() {
            self.market = MarketData::from_snapshot(self.spec, *self.market.config(), bytes)?;
        }
        Ok(())
    }

    fn apply(&mut self, seq: u64, events: EventsView<'_>) {
        events.deals().iter().for_each(|d| self.market.apply(d));
        let Some((store, committed, rows)) = &mut self.history else { return };
        if seq <= *committed {
            return;
        }
        rows.add(self.spec, events);
        if rows.len() >= CATCHUP_ROWS {
            // A store that fails here stops startup, as nothing after it could be made whole.
            'written: while let Err(e) = store.write(rows, seq) {
                let failed = format!("catching up at sequence {seq} failed ({e}); retrying in 1 s");
                self.alerts.raise(AlertKind::History, "history", failed);
                // A lost COMMIT may have taken: the stored sequence says, and nothing is written
                // again until it has.
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match store.reconnect().and_then(|()| store.committed_seq()) {
                        Ok(stored) if stored >= seq => break 'written,
                        Ok(_) => break,
                        Err(e) => tracing::warn!("history: reconnecting failed ({e}); retrying in 1 s"),
                    }
                }
            }
            *rows = Rows::default();
            *committed = seq;
        }
    }
}

/// Opens the history store, creating missing tables; returns it with its committed sequence.
/// With `from_snapshot`, a store that holds less than the newest snapshot is moved up to it:
/// history starts afresh there, without the rows of the commands before it.
pub fn open_history(cfg: &HistoryConfig, data_dir: &Path, from_snapshot: bool) -> Result<(Box<dyn Store>, u64)> {
    let mut store = history_store::open(&cfg.url).with_context(|| format!("opening history at {}", cfg.url))?;
    store.create_tables().with_context(|| format!("creating history tables at {}", cfg.url))?;
    let mut committed = store.committed_seq().with_context(|| format!("reading history at {}", cfg.url))?;
    let newest = snapshot::list(&snapshot_dir(data_dir))?.last().map(|(seq, _)| *seq);
    if let Some(newest) = newest.filter(|&s| from_snapshot && s > committed) {
        store.write(&Rows::default(), newest).with_context(|| format!("moving history at {} to {newest}", cfg.url))?;
        tracing::warn!(
            "history at {} starts afresh at the newest snapshot, sequence {newest} (--history-from-snapshot): the rows of commands {} to {newest} are not written",
            cfg.url,
            committed + 1
        );
        committed = newest;
    }
    Ok((store, committed))
}

/// Why history cannot catch up: the journal it needs was pruned (or its store is another's), and
/// the ways out.
pub fn history_gone(data_dir: &Path, url: &str, held: u64, first: u64) -> String {
    format!(
        "history at {url} holds rows up to sequence {held}; writing the rows after it needs a snapshot at or before \
         {held} or the journal from sequence {}, but {} keeps neither (its journal starts at {first}; older parts were \
         removed once snapshots covered them). Point [history] url at the store this data was written with, or start \
         with --history-from-snapshot to start history afresh from the newest snapshot (the rows of the commands \
         before it are then not written)",
        held + 1,
        data_dir.display()
    )
}

/// Commands replayed at a time while a store reached late is caught up from the journal.
const CATCHUP_COMMANDS: u64 = 50_000;

/// What the history writer calls to reach a store that was unreachable at startup: opens it, and
/// writes into it the rows it misses up to `caught_up` (the sequence the engine recovered to),
/// rebuilt by replaying the journal from the newest snapshot at or before what it holds.
pub fn connect_later(
    cfg: HistoryConfig,
    data_dir: &Path,
    spec: &Spec,
    caught_up: u64,
    from_snapshot: bool,
) -> Box<dyn FnMut() -> Result<Box<dyn Store>, String> + Send> {
    let (data_dir, spec) = (data_dir.to_path_buf(), spec.clone());
    Box::new(move || {
        let (mut store, held) = open_history(&cfg, &data_dir, from_snapshot).map_err(|e| format!("{e:#}"))?;
        if held > caught_up {
            return Err(format!(
                "it holds rows up to sequence {held}, past this journal's {caught_up}: it belongs to other data"
            ));
        }
        catch_up_from_journal(&data_dir, &spec, &mut *store, held, caught_up).map_err(|e| match e {
            CatchUpError::Gone(first) => history_gone(&data_dir, &cfg.url, held, first),
            CatchUpError::Other(e) => format!("catching up from sequence {held}: {e:#}"),
        })?;
        Ok(store)
    })
}

enum CatchUpError {
    /// The journal starts at this sequence, after what the store holds, with no snapshot before.
    Gone(u64),
    Other(anyhow::Error),
}

/// Writes into `store`, which holds rows up to `from`, the rows of every command up to `to`.
fn catch_up_from_journal(
    data_dir: &Path,
    spec: &Spec,
    store: &mut dyn Store,
    from: u64,
    to: u64,
) -> Result<(), CatchUpError> {
    let (mut matcher, mut at) = match state_at(data_dir, spec, from) {
        Ok(state) => state,
        Err(JournalError::MissingHistory { first }) => return Err(CatchUpError::Gone(first)),
        Err(e) => return Err(CatchUpError::Other(e.into())),
    };
    let mut tail = JournalTail::new(&journal_dir(data_dir), at + 1);
    let (mut events, mut rows, mut failed) = (Events::default(), Rows::default(), None);
    while at < to {
        let upto = (at + CATCHUP_COMMANDS).min(to);
        let read = tail.read_to(upto, |entry| {
            events.clear();
            match matcher.apply(entry.time_us, &entry.cmd, &mut events) {
                Ok(_) if entry.seq > from => rows.add(spec, events.view()),
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert_with(|| anyhow::anyhow!("replaying sequence {}: {e}", entry.seq));
                }
            }
        });
        read.map_err(|e| CatchUpError::Other(e.into()))?;
        if let Some(e) = failed.take() {
            return Err(CatchUpError::Other(e));
        }
        if upto > from {
            store.write(&rows, upto).map_err(|e| CatchUpError::Other(e.into()))?;
            rows = Rows::default();
        }
        at = upto;
    }
    if from < to {
        tracing::info!("history: caught up from sequence {from} to {to} from the journal");
    }
    Ok(())
}
