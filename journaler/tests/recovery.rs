//! The journal and snapshots on disk: round trip, torn tails, corruption, changed configs.

use std::fs;
use std::path::Path;

use serde_json::json;
use viaduct_journaler::record::record_bytes;
use viaduct_journaler::recovery::{journal_dir, recover, snapshot_dir};
use viaduct_journaler::segment::{list_segments, JournalWriter, SEGMENT_BYTES_MAX};
use viaduct_journaler::{snapshot, Durability, JournalError};
use viaduct_matcher::config::embedded;
use viaduct_matcher::{Command, Events, Matcher, Spec};
use viaduct_protocol::decode;

const T0: u64 = 1_700_000_000_000_000;

fn spec() -> Spec {
    Spec::new(&embedded()).unwrap()
}

/// `n` commands that all succeed: deposits, then resting and crossing orders.
fn commands(spec: &Spec, n: usize) -> Vec<Command> {
    let mut out = Vec::new();
    for i in 0..n {
        let user = (i % 7) as u64 + 1;
        let (method, params) = match (i, i % 2) {
            (0..=13, 0) => ("balance.update", json!([user, "BCH", "deposit", i, "100000", {}])),
            (0..=13, _) => ("balance.update", json!([user, "BTC", "deposit", i, "100000", {}])),
            (_, 0) => {
                ("order.put_limit", json!([user, "BTCBCH", 1, "0.5", format!("{}", 1 + i % 5), "0.001", "0.002", "t"]))
            }
            _ => (
                "order.put_limit",
                json!([user, "BTCBCH", 2, "0.5", format!("{}", 1 + (i + 2) % 5), "0.001", "0.002", "t"]),
            ),
        };
        out.push(decode(spec, method, params.as_array().unwrap()).unwrap());
    }
    out
}

/// Applies `cmds` to a fresh matcher and journals them from sequence 1; returns the matcher.
fn write_journal(dir: &Path, spec: &Spec, cmds: &[Command], group: usize) -> Matcher {
    write_journal_in(dir, spec, cmds, group, SEGMENT_BYTES_MAX)
}

/// [`write_journal`] into segments of `segment_bytes_max`.
fn write_journal_in(dir: &Path, spec: &Spec, cmds: &[Command], group: usize, segment_bytes_max: u64) -> Matcher {
    let mut m = Matcher::new(spec.clone());
    let mut w =
        JournalWriter::open(&journal_dir(dir), 1, spec.fingerprint(), Durability::Fsync, segment_bytes_max).unwrap();
    let (mut events, mut scratch) = (Events::default(), Vec::new());
    for (i, cmd) in cmds.iter().enumerate() {
        let t = T0 + i as u64;
        events.clear();
        m.apply(t, cmd, &mut events).expect("every generated command succeeds");
        w.append(i as u64 + 1, t, events.digest(&mut scratch), cmd);
        if (i + 1) % group == 0 {
            w.commit().unwrap();
        }
    }
    assert_eq!(w.commit().unwrap(), cmds.len() as u64);
    m
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segs = list_segments(&journal_dir(dir)).unwrap();
    assert_eq!(segs.len(), 1);
    segs[0].1.clone()
}

#[test]
fn replay_rebuilds_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 1_000);
    let live = write_journal(dir.path(), &spec, &cmds, 37);
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.last_seq, r.journal.records, r.snapshot_seq), (1_000, 1_000, None));
    assert_eq!(r.matcher.state_hash(), live.state_hash());
    assert!(live.last_deal_id() > 0, "the commands must trade");
}

/// Counts the cores the applying thread may run on while it applies.
struct CoresWhileApplying(Vec<usize>);

impl viaduct_journaler::recovery::Downstream for CoresWhileApplying {
    fn load(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn apply(&mut self, _: u64, _: viaduct_matcher::EventsView<'_>) {
        self.0.push(cores_of_this_thread().len());
    }
}

fn cores_of_this_thread() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let mask = sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..CpuSet::count()).filter(|&c| mask.is_set(c).unwrap()).collect()
}

#[test]
fn replay_applies_on_a_core_of_its_own_and_gives_the_thread_its_cores_back() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 300);
    write_journal(dir.path(), &spec, &cmds, 50);
    let before = cores_of_this_thread();
    let mut seen = CoresWhileApplying(Vec::new());
    let r = viaduct_journaler::recovery::recover(dir.path(), &spec, |_| {}, &mut seen).unwrap();
    assert_eq!(r.last_seq, 300);
    assert_eq!(cores_of_this_thread(), before, "the applying thread's mask is given back");
    let alone = if before.len() >= 2 { 1 } else { before.len() };
    assert_eq!(seen.0.len(), 300);
    assert!(seen.0.iter().all(|&n| n == alone), "cores while applying: {:?} (of {before:?})", &seen.0[..3]);
}

/// The offsets of the records in a segment's bytes, up to its zeros or its end.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let (mut offsets, mut at) = (Vec::new(), 32);
    while at + 4 <= bytes.len() && bytes[at..at + 4] != [0; 4] {
        offsets.push(at);
        at += record_bytes(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize);
    }
    offsets
}

/// What a crash can leave: a group write stopped at a sector boundary, zeros after it, or a file
/// that ends inside its last record. Each is cut back to the last whole record and logged.
#[test]
fn a_torn_write_is_cut_back_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 100);
    write_journal(dir.path(), &spec, &cmds, 10);
    let seg = only_segment(dir.path());
    let full = fs::read(&seg).unwrap();
    let offsets = record_offsets(&full);
    assert_eq!(offsets.len(), 100);
    // A write of the last group stopped at the sector boundary inside a record of it.
    let (k, &at) = offsets.iter().enumerate().skip(90).find(|(k, &at)| at / 512 != (offsets[k + 1] - 1) / 512).unwrap();
    let cut = (at / 512 + 1) * 512;
    let mut torn = full.clone();
    torn[cut..].fill(0);
    fs::write(&seg, &torn).unwrap();
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.last_seq, r.journal.truncated), (k as u64, Some((seg.clone(), at as u64))));
    assert_eq!(fs::metadata(&seg).unwrap().len(), at as u64);
    assert_eq!(r.matcher.state_hash(), write_state(&spec, &cmds[..k]).state_hash());
    // A segment that ends inside its last record.
    let last = *offsets.last().unwrap();
    fs::write(&seg, &full[..last + 10]).unwrap();
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.last_seq, r.journal.truncated), (99, Some((seg.clone(), last as u64))));
    assert_eq!(fs::metadata(&seg).unwrap().len(), last as u64);
    assert_eq!(r.matcher.state_hash(), write_state(&spec, &cmds[..99]).state_hash());
    // Zeros where a record would start are the journal's end, not damage: nothing is reported,
    // and the zeros are cut off.
    let mut zeros = full[..last].to_vec();
    zeros.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &zeros).unwrap();
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.last_seq, r.journal.truncated), (99, None));
    assert_eq!(fs::metadata(&seg).unwrap().len(), last as u64);
}

/// A copy of the data directory `from` in a new temporary directory.
fn copy_data_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for sub in [journal_dir(from), snapshot_dir(from)] {
        let Ok(entries) = fs::read_dir(&sub) else { continue };
        let target = to.path().join(sub.file_name().unwrap());
        fs::create_dir_all(&target).unwrap();
        for e in entries {
            let e = e.unwrap();
            fs::copy(e.path(), target.join(e.file_name())).unwrap();
        }
    }
    to
}

/// Each byte of a few records' headers and bodies, flipped in turn (one bit, and every bit), in
/// the last segment and an earlier one, with and without a snapshot after them: recovery gives
/// back every acknowledged command or refuses, naming the damaged record, and changes nothing on
/// disk. A corrupt length with records after it (read as a torn tail before) is among them.
#[test]
fn a_damaged_record_anywhere_recovers_every_command_or_refuses() {
    let spec = spec();
    let cmds = commands(&spec, 120);
    let live = write_state(&spec, &cmds).state_hash();
    let mut refused = 0;
    for snapshot_at in [None, Some(110)] {
        // A group size that leaves records in the last segment (a commit past the bound opens
        // the next segment, which may stay empty).
        let src = (5..20)
            .map(|group| {
                let src = tempfile::tempdir().unwrap();
                write_journal_in(src.path(), &spec, &cmds, group, 2048);
                src
            })
            .find(|src| {
                let segs = list_segments(&journal_dir(src.path())).unwrap();
                record_offsets(&fs::read(&segs.last().unwrap().1).unwrap()).len() >= 3
            })
            .unwrap();
        if let Some(at) = snapshot_at {
            let state = write_state(&spec, &cmds[..at]).snapshot();
            snapshot::write(&snapshot_dir(src.path()), at as u64, &state, &[]).unwrap();
        }
        let segs = list_segments(&journal_dir(src.path())).unwrap();
        assert!(segs.len() >= 3, "{} segments", segs.len());
        let last = fs::read(&segs.last().unwrap().1).unwrap();
        let earlier = fs::read(&segs[1].1).unwrap();
        let (in_last, in_earlier) = (record_offsets(&last), record_offsets(&earlier));
        assert!(in_last.len() >= 3, "{} records in the last segment", in_last.len());
        let targets = [
            (segs.len() - 1, in_last[0]),
            (segs.len() - 1, in_last[in_last.len() / 2]),
            (segs.len() - 1, *in_last.last().unwrap()),
            (1, in_earlier[in_earlier.len() / 2]),
        ];
        for (seg, at) in targets {
            let bytes = if seg == 1 { &earlier } else { &last };
            let len = record_bytes(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize);
            for (i, flip) in (at..at + len).flat_map(|i| [(i, 0x01u8), (i, 0x04), (i, 0xff)]) {
                let dir = copy_data_dir(src.path());
                let path = journal_dir(dir.path()).join(segs[seg].1.file_name().unwrap());
                let mut damaged = bytes.clone();
                damaged[i] ^= flip;
                fs::write(&path, &damaged).unwrap();
                let what = format!("byte {i} ^ {flip:#x} of segment {seg} (record at {at}), snapshot {snapshot_at:?}");
                match recover(dir.path(), &spec, |_| {}, &mut ()) {
                    Ok(r) => assert_eq!((r.last_seq, r.matcher.state_hash()), (120, live), "{what}"),
                    Err(JournalError::Corrupt { path: p, offset, .. }) => {
                        assert_eq!((p, offset), (path.clone(), at as u64), "{what}");
                        assert_eq!(fs::read(&path).unwrap(), damaged, "{what}: the file was changed");
                        refused += 1;
                    }
                    Err(e) => panic!("{what}: {e}"),
                }
            }
        }
    }
    assert!(refused > 0);
}

/// A damaged segment header says it is damaged, not that another config wrote it.
#[test]
fn a_damaged_segment_header_is_reported_as_damaged() {
    let spec = spec();
    let src = tempfile::tempdir().unwrap();
    write_journal_in(src.path(), &spec, &commands(&spec, 60), 7, 2048);
    let segs = list_segments(&journal_dir(src.path())).unwrap();
    let whole = fs::read(&segs[1].1).unwrap();
    for i in 0..32 {
        let dir = copy_data_dir(src.path());
        let path = journal_dir(dir.path()).join(segs[1].1.file_name().unwrap());
        let mut damaged = whole.clone();
        damaged[i] ^= 0x10;
        fs::write(&path, &damaged).unwrap();
        let err = recover(dir.path(), &spec, |_| {}, &mut ()).err().expect("refused");
        assert!(matches!(err, JournalError::Corrupt { offset: 0, .. }), "byte {i}: {err}");
        assert!(err.to_string().contains("header is damaged"), "byte {i}: {err}");
    }
}

fn write_state(spec: &Spec, cmds: &[Command]) -> Matcher {
    let mut m = Matcher::new(spec.clone());
    let mut events = Events::default();
    for (i, cmd) in cmds.iter().enumerate() {
        m.apply(T0 + i as u64, cmd, &mut events).unwrap();
        events.clear();
    }
    m
}

#[test]
fn a_corrupt_record_in_the_middle_stops_recovery_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    write_journal(dir.path(), &spec, &commands(&spec, 100), 10);
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let second = 32 + record_bytes(u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize);
    bytes[second + 30] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match recover(dir.path(), &spec, |_| {}, &mut ()) {
        Err(e @ JournalError::Corrupt { .. }) => {
            let JournalError::Corrupt { path, offset, .. } = &e else { unreachable!() };
            assert_eq!((path, *offset), (&seg, second as u64));
            let text = e.to_string();
            assert!(text.contains(&format!("at byte {second}")) && text.contains("checksum"), "{text}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("recovery went past a corrupt record"),
    }
    // Nothing was cut: the file is as it was.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn a_corrupt_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 300);
    let live = write_journal(dir.path(), &spec, &cmds, 25);
    let sdir = snapshot_dir(dir.path());
    snapshot::write(&sdir, 100, &write_state(&spec, &cmds[..100]).snapshot(), &[]).unwrap();
    let newest = snapshot::write(&sdir, 200, &write_state(&spec, &cmds[..200]).snapshot(), &[]).unwrap();
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.snapshot_seq, r.journal.records), (Some(200), 100));
    assert_eq!(r.matcher.state_hash(), live.state_hash());
    let mut bytes = fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
    assert_eq!((r.snapshot_seq, r.journal.records), (Some(100), 200));
    assert_eq!(r.matcher.state_hash(), live.state_hash());
    // Without usable snapshots and with the journal's start gone, recovery refuses.
    fs::write(sdir.join("snap-00000000000000000100.bin"), b"garbage").unwrap();
    let seg = only_segment(dir.path());
    let moved = seg.with_file_name("seg-00000000000000000101.log");
    let whole = fs::read(&seg).unwrap();
    fs::remove_file(&seg).unwrap();
    let mut header = whole[..32].to_vec();
    header[24..32].copy_from_slice(&101u64.to_le_bytes());
    fs::write(&moved, header).unwrap();
    assert!(matches!(recover(dir.path(), &spec, |_| {}, &mut ()), Err(JournalError::MissingHistory { first: 101 })));
}

#[test]
fn a_streamed_snapshot_is_the_same_file_and_a_failed_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 300);
    let m = write_state(&spec, &cmds);
    assert!((0..spec.markets.len()).any(|i| !m.book(i as u16).is_empty()), "the state holds resting orders");
    let market = b"market data's own bytes".to_vec();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let whole = snapshot::write(&a, 300, &m.snapshot(), &market).unwrap();
    let streamed = snapshot::write_streaming(&b, 300, |w| m.snapshot_to(w).map(drop), &market).unwrap();
    // The file as its layout says, built here: magic, sequence, state length, CRC-32 of the
    // state, zero; then the state: the matcher's length, its bytes, the downstream bytes.
    let mut state = (m.snapshot().len() as u64).to_le_bytes().to_vec();
    state.extend_from_slice(&m.snapshot());
    state.extend_from_slice(&market);
    let mut expected = b"VDSNAP02".to_vec();
    expected.extend_from_slice(&300u64.to_le_bytes());
    expected.extend_from_slice(&(state.len() as u64).to_le_bytes());
    expected.extend_from_slice(&crc32fast::hash(&state).to_le_bytes());
    expected.extend_from_slice(&[0; 4]);
    expected.extend_from_slice(&state);
    assert_eq!(fs::read(&streamed.path).unwrap(), expected);
    assert_eq!(fs::read(&whole).unwrap(), expected);
    assert_eq!(streamed.bytes as usize, 8 + m.snapshot().len() + market.len());
    let (seq, state) = snapshot::read(&streamed.path).unwrap();
    assert_eq!((seq, snapshot::decode_state(&state).unwrap()), (300, (&m.snapshot()[..], &market[..])));
    // A write that fails partway is an error, and leaves neither a snapshot nor its temporary file.
    let failing = |w: &mut dyn std::io::Write| {
        w.write_all(&[1; 100])?;
        Err(std::io::Error::other("disk full"))
    };
    let err = snapshot::write_streaming(&b, 400, failing, &market).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    let names: Vec<_> = fs::read_dir(&b).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![streamed.path.file_name().unwrap().to_owned()]);
}

#[test]
fn a_changed_config_is_refused_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 50);
    write_journal(dir.path(), &spec, &cmds, 5);
    let mut cfg = embedded();
    cfg.markets.retain(|m| m.name != "LTCBCH");
    let changed = Spec::new(&cfg).unwrap();
    let err = recover(dir.path(), &changed, |_| {}, &mut ()).err().expect("refused");
    assert!(matches!(err, JournalError::ConfigChanged { .. }), "{err}");
    assert!(err.to_string().contains("another config"), "{err}");
    // A snapshot that holds a market the config dropped is refused by name.
    let sdir = snapshot_dir(dir.path());
    snapshot::write(&sdir, 50, &write_state(&spec, &cmds).snapshot(), &[]).unwrap();
    let mut cfg = embedded();
    cfg.markets.retain(|m| m.name != "BTCBCH");
    let err = recover(dir.path(), &Spec::new(&cfg).unwrap(), |_| {}, &mut ()).err().expect("refused");
    assert!(err.to_string().contains("BTCBCH"), "{err}");
}

#[test]
fn restarting_without_writing_reuses_the_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    for _ in 0..2 {
        let r = recover(dir.path(), &spec, |_| {}, &mut ()).unwrap();
        let mut w = JournalWriter::open(
            &journal_dir(dir.path()),
            r.last_seq + 1,
            spec.fingerprint(),
            Durability::Fsync,
            SEGMENT_BYTES_MAX,
        )
        .unwrap();
        assert_eq!(w.commit().unwrap(), 0);
    }
    let cmds = commands(&spec, 3);
    let mut w = JournalWriter::open(&journal_dir(dir.path()), 1, spec.fingerprint(), Durability::Fsync, 64).unwrap();
    let (mut m, mut events, mut scratch) = (Matcher::new(spec.clone()), Events::default(), Vec::new());
    for (i, c) in cmds.iter().enumerate() {
        events.clear();
        m.apply(T0 + i as u64, c, &mut events).unwrap();
        w.append(i as u64 + 1, T0 + i as u64, events.digest(&mut scratch), c);
        w.commit().unwrap();
    }
    // A tiny segment bound rotated after every commit; replay crosses the segments.
    assert!(list_segments(&journal_dir(dir.path())).unwrap().len() >= 3);
    assert_eq!(recover(dir.path(), &spec, |_| {}, &mut ()).unwrap().last_seq, 3);
}

/// The tail follows a journal while another thread writes it, across segment rotations and the
/// preallocated zeros, handing on each committed record once, in order, whole.
#[test]
fn the_tail_follows_the_writer_across_rotations() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use viaduct_journaler::segment::JournalTail;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let cmds = commands(&spec, 3000);
    let jdir = journal_dir(dir.path());
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (jdir, cmds, committed, fp) = (jdir.clone(), cmds.clone(), Arc::clone(&committed), spec.fingerprint());
        std::thread::spawn(move || {
            // 4 KiB segments: a rotation every few dozen records.
            let mut w = JournalWriter::open(&jdir, 1, fp, Durability::Os, 4096).unwrap();
            for (i, c) in cmds.iter().enumerate() {
                w.append(i as u64 + 1, T0 + i as u64, 31 * i as u64, c);
                if i % 7 == 0 || i + 1 == cmds.len() {
                    committed.store(w.commit().unwrap(), Ordering::Release);
                }
            }
        })
    };
    let mut tail = JournalTail::new(&jdir, 1);
    let mut got = Vec::new();
    while got.len() < cmds.len() {
        let upto = committed.load(Ordering::Acquire);
        tail.read_to(upto, |e| got.push((e.seq, e.time_us, e.digest, e.cmd))).unwrap();
        assert_eq!(tail.next_seq(), upto + 1);
    }
    writer.join().unwrap();
    assert!(list_segments(&jdir).unwrap().len() > 20);
    for (i, (seq, time_us, digest, cmd)) in got.iter().enumerate() {
        assert_eq!((*seq, *time_us, *digest, cmd), (i as u64 + 1, T0 + i as u64, 31 * i as u64, &cmds[i]));
    }
    // Started in the middle: the records before the start are skipped.
    let mut tail = JournalTail::new(&jdir, 1234);
    let mut first = None;
    tail.read_to(1300, |e| {
        first.get_or_insert(e.seq);
    })
    .unwrap();
    assert_eq!((first, tail.next_seq()), (Some(1234), 1301));
}

/// The tail asks for a few KiB at a time while records are few and more when they come in bulk:
/// a journal committed in one group, with a record larger than the smallest read among small
/// ones, is handed on whole and in order, and a later trickle of single records too.
#[test]
fn the_tail_reads_bulk_and_large_records_whole() {
    use viaduct_journaler::segment::JournalTail;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut cmds = commands(&spec, 3000);
    let detail = serde_json::json!({ "note": "x".repeat(4000) });
    let big = decode(
        &spec,
        "balance.update",
        serde_json::json!([1, "BCH", "deposit", 9999, "1", detail]).as_array().unwrap(),
    )
    .unwrap();
    cmds.insert(1500, big);
    let jdir = journal_dir(dir.path());
    let mut w = JournalWriter::open(&jdir, 1, spec.fingerprint(), Durability::Os, 64 << 20).unwrap();
    for (i, c) in cmds.iter().enumerate() {
        w.append(i as u64 + 1, T0 + i as u64, i as u64, c);
    }
    let upto = w.commit().unwrap();
    let mut tail = JournalTail::new(&jdir, 1);
    let mut got = Vec::new();
    tail.read_to(upto, |e| got.push((e.seq, e.cmd))).unwrap();
    assert_eq!(got.len(), cmds.len());
    for (i, (seq, cmd)) in got.iter().enumerate() {
        assert_eq!((*seq, cmd), (i as u64 + 1, &cmds[i]));
    }
    // Then one record at a time.
    for i in 0..50u64 {
        let seq = upto + 1 + i;
        w.append(seq, T0, 0, &cmds[0]);
        assert_eq!(w.commit().unwrap(), seq);
        let mut n = 0;
        tail.read_to(seq, |e| {
            assert_eq!(e.seq, seq);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}

/// A committed sequence the journal does not hold, or a corrupt record, is an error naming the
/// segment, never a silent skip.
#[test]
fn the_tail_refuses_a_missing_or_corrupt_record() {
    use viaduct_journaler::segment::JournalTail;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    write_journal(dir.path(), &spec, &commands(&spec, 50), 10);
    let jdir = journal_dir(dir.path());
    let mut n = 0;
    let err = JournalTail::new(&jdir, 1).read_to(60, |_| n += 1).unwrap_err();
    assert_eq!(n, 50);
    assert!(err.to_string().contains("ends before sequence 51"), "{err}");
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[200] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let err = JournalTail::new(&jdir, 1).read_to(50, |_| {}).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { .. }) && err.to_string().contains("seg-"), "{err}");
}

/// A record whose digest is not what replaying its command makes stops recovery there, naming the
/// segment and the sequence: a build or config that computes other outcomes never silently
/// recovers another state. Digests are checked a batch of records at a time on their own thread:
/// the first, last and a middle command of a batch, and one in a later batch, are each caught.
#[test]
fn a_replay_that_makes_other_events_stops_recovery() {
    let spec = spec();
    let cmds = commands(&spec, 9_000);
    for wrong in [17u64, 4_096, 4_097, 8_999] {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            JournalWriter::open(&journal_dir(dir.path()), 1, spec.fingerprint(), Durability::Os, SEGMENT_BYTES_MAX)
                .unwrap();
        let (mut m, mut events, mut scratch) = (Matcher::new(spec.clone()), Events::default(), Vec::new());
        let mut seq = 0;
        for (i, c) in cmds.iter().enumerate() {
            events.clear();
            if m.apply(T0 + i as u64, c, &mut events).is_err() {
                continue; // refused: not journaled
            }
            seq += 1;
            let digest = events.digest(&mut scratch);
            // What the engine did at `wrong` is not what this build does.
            w.append(seq, T0 + i as u64, if seq == wrong { digest ^ 1 } else { digest }, c);
        }
        w.commit().unwrap();
        assert!(seq > 8_999, "{seq} commands journaled");
        let err = recover(dir.path(), &spec, |_| {}, &mut ()).err().expect("refused");
        assert!(matches!(err, JournalError::Diverged { seq, .. } if seq == wrong), "{wrong}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("sequence {wrong}")) && text.contains("seg-"), "{text}");
    }
}

/// The digest covers every event and its order: any change to what a command did changes it.
#[test]
fn the_digest_tells_apart_events_that_differ_in_any_way() {
    let spec = spec();
    let mut m = Matcher::new(spec.clone());
    let mut scratch = Vec::new();
    let mut digests = std::collections::HashSet::new();
    for (i, c) in commands(&spec, 200).iter().enumerate() {
        let mut events = Events::default();
        m.apply(T0 + i as u64, c, &mut events).unwrap();
        let d = events.digest(&mut scratch);
        assert_eq!(d, events.clone().digest(&mut Vec::new()), "the same events, the same digest");
        assert!(digests.insert(d), "command {i} has the digest of an earlier one");
    }
    assert_eq!(Events::default().digest(&mut scratch), Events::default().digest(&mut scratch));
}
