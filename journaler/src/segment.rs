//! Journal segments: the writer (group commit) and the reader (replay with torn-tail handling).
//!
//! Why one file of ~650 lines (and its tests): the writer, the reader and the tail share the
//! segment format (header, record framing, torn-tail rule), which must change in one place.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use viaduct_matcher::Command;

use crate::record::{self, Decoded, SEGMENT_HEADER_BYTES};
use crate::{io_err, Durability, JournalError};

/// Segments are rotated once they pass this size, at a commit boundary.
pub const SEGMENT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Segments are filled with zeros ahead of the last record, and synced, so that an append neither
/// grows the file nor allocates blocks: `fdatasync` then writes data only, with no file-system
/// metadata to commit. Recovery reads a zero tail as the end of the journal.
///
/// The first segment after a start begins with this much. Once a segment holds half of this, a
/// thread of its own ([`NEXT_SEGMENT`]) fills the next one whole, to the maximum size and this
/// much beyond (a commit closes a segment past its maximum). A group that would run past the
/// first segment's zeros goes to the prepared segment if it is ready; until it is, the writer
/// extends the first segment this much at a time (a write of zeros and a sync, about 10 ms here,
/// that the commit waits for). So commits, which run on the matcher's thread in some profiles,
/// stop to write zeros only in the first moments after a start, and for a group larger than
/// what is left of a segment.
pub const PREALLOCATE_BYTES: u64 = 16 * 1024 * 1024;

/// The next segment while it is being prepared: a file of zeros, renamed to its segment's name
/// (after its header is written) when the writer moves on to it. One left by a stopped process is
/// removed at the next start; readers never see it, as its name is not a segment's.
pub const NEXT_SEGMENT: &str = "next-segment.tmp";

/// Zeros written by the preparing thread between two syncs: in fsync mode, a commit's
/// `fdatasync` on the same disk never waits behind more than this much of them.
const PREPARE_SYNC_BYTES: u64 = 1 << 20;

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

/// Every segment in `dir` as (first sequence from its name, path), in order.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    list_numbered(dir, "seg-", ".log")
}

/// Every file in `dir` named `<prefix><number><suffix>`, as (number, path), in order of number.
pub(crate) fn list_numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.strip_suffix(suffix)).and_then(|n| n.parse().ok()) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Makes a directory entry durable (a new or renamed file in it).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// The thread filling the next segment with zeros: it ends with the file and its length.
type Preparing = std::thread::JoinHandle<Result<(File, u64), JournalError>>;

/// Appends records and commits them in groups: everything appended since the last commit goes
/// out in one `write`, then one `fdatasync` (in `fsync` mode).
pub struct JournalWriter {
    dir: PathBuf,
    mode: Durability,
    fingerprint: u64,
    segment_bytes_max: u64,
    /// The open segment, its path, the bytes written, and the bytes preallocated.
    file: Option<(File, PathBuf, u64, u64)>,
    /// The thread preparing the next segment, and the flag that stops it early.
    next: Option<(Preparing, Arc<AtomicBool>)>,
    /// Segments begun from a prepared file (the others were made by the writer).
    prepared_taken: u64,
    buf: Vec<u8>,
    next_seq: u64,
    /// Highest sequence committed (durable in `fsync` mode).
    committed: u64,
    /// How long the last commit's `fdatasync` took, if it made one.
    last_sync: Option<std::time::Duration>,
}

impl JournalWriter {
    /// A writer whose first record will be `next_seq`, in a new segment.
    pub fn open(
        dir: &Path,
        next_seq: u64,
        fingerprint: u64,
        mode: Durability,
        segment_bytes_max: u64,
    ) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut w = JournalWriter {
            dir: dir.to_path_buf(),
            mode,
            fingerprint,
            segment_bytes_max,
            file: None,
            next: None,
            prepared_taken: 0,
            buf: Vec::with_capacity(1 << 20),
            next_seq,
            committed: next_seq - 1,
            last_sync: None,
        };
        if mode != Durability::None {
            remove_if_there(&dir.join(NEXT_SEGMENT))?;
            w.start_segment()?;
        }
        Ok(w)
    }

    /// Starts the thread that fills the next segment with zeros, under a name no reader lists.
    fn prepare_next(&mut self) {
        let (path, fsync) = (self.dir.join(NEXT_SEGMENT), self.mode == Durability::Fsync);
        let len = self.segment_len();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("journal-prepare".into()).spawn(move || {
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut at = 0;
            while at < len && !stopped.load(Ordering::Relaxed) {
                at = zero_fill(&file, &path, at, len.min(at + PREPARE_SYNC_BYTES), !fsync)?;
                if fsync {
                    file.sync_data().map_err(io_err(&path))?;
                }
            }
            if fsync {
                file.sync_all().map_err(io_err(&path))?;
            }
            Ok((file, at))
        });
        // A thread that cannot be started leaves the writer to make the next segment itself.
        self.next = thread.ok().map(|t| (t, stop));
    }

    /// Moves on to a new segment: the prepared one (waiting for its thread if need be: it had
    /// half a segment's time), else, if no thread could be started, one made here.
    fn next_segment(&mut self) -> Result<(), JournalError> {
        let Some((thread, _)) = self.next.take() else { return self.start_segment() };
        let (file, allocated) = match thread.join() {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(e)) => {
                tracing::warn!("journal: preparing the next segment failed ({e}); making it in place");
                return self.start_segment();
            }
            Err(_) => {
                tracing::warn!("journal: the thread preparing the next segment panicked; making it in place");
                return self.start_segment();
            }
        };
        self.finish_segment()?;
        // Its first record is the one after the last committed (a group waiting to be written
        // goes into it).
        let first = self.committed + 1;
        let (prepared, path) = (self.dir.join(NEXT_SEGMENT), segment_path(&self.dir, first));
        file.write_all_at(&record::segment_header(self.fingerprint, first), 0).map_err(io_err(&prepared))?;
        if self.mode == Durability::Fsync {
            file.sync_data().map_err(io_err(&prepared))?;
        }
        // Named as a segment only once whole: a reader that finds it finds its header.
        fs::rename(&prepared, &path).map_err(io_err(&path))?;
        if self.mode == Durability::Fsync {
            sync_dir(&self.dir)?;
        }
        self.file = Some((file, path, SEGMENT_HEADER_BYTES as u64, allocated));
        self.prepared_taken += 1;
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), JournalError> {
        self.finish_segment()?;
        let first = self.committed + 1;
        let path = segment_path(&self.dir, first);
        // A segment that starts at the next sequence holds no record (recovery read everything
        // before it): a restart that wrote nothing left it behind.
        remove_if_there(&path)?;
        let file = OpenOptions::new().create_new(true).read(true).write(true).open(&path).map_err(io_err(&path))?;
        file.write_all_at(&record::segment_header(self.fingerprint, first), 0).map_err(io_err(&path))?;
        let header = SEGMENT_HEADER_BYTES as u64;
        let small = self.mode == Durability::Os;
        let allocated = zero_fill(&file, &path, header, header + self.preallocate(), small)?;
        if self.mode == Durability::Fsync {
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
        }
        self.file = Some((file, path, header, allocated));
        Ok(())
    }

    /// How far past its maximum a segment is zero-filled, and how far a group that overfills it
    /// extends it: never more than a whole segment.
    fn preallocate(&self) -> u64 {
        PREALLOCATE_BYTES.min(self.segment_bytes_max)
    }

    /// A new segment's length: its header, its maximum, and [`JournalWriter::preallocate`].
    fn segment_len(&self) -> u64 {
        SEGMENT_HEADER_BYTES as u64 + self.segment_bytes_max + self.preallocate()
    }

    /// Cuts the open segment's zero tail, so that only the last segment ever has one.
    fn finish_segment(&mut self) -> Result<(), JournalError> {
        if let Some((file, path, size, _)) = self.file.take() {
            file.set_len(size).map_err(io_err(&path))?;
            if self.mode == Durability::Fsync {
                file.sync_all().map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Adds the command with sequence `seq` (which must be the next one) to the pending group,
    /// with the digest of the events applying it made (`Events::digest`).
    pub fn append(&mut self, seq: u64, time_us: u64, digest: u64, cmd: &Command) {
        assert_eq!(seq, self.next_seq, "journal sequences must advance by one");
        self.next_seq += 1;
        if self.mode != Durability::None {
            record::encode(&mut self.buf, seq, time_us, digest, cmd);
        }
    }

    /// Bytes appended but not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes the pending group and, in `fsync` mode, waits until it is on disk. Returns the
    /// highest committed sequence.
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        self.last_sync = None;
        let (fsync, ahead) = (self.mode == Durability::Fsync, self.preallocate());
        // A group that would run past the zeros goes to the prepared segment if that is ready,
        // rather than wait here for more zeros (a segment is never left without records).
        let past_zeros = self.file.as_ref().is_some_and(|(_, _, size, allocated)| {
            *size > SEGMENT_HEADER_BYTES as u64 && *size + self.buf.len() as u64 > *allocated
        });
        if past_zeros && self.next.as_ref().is_some_and(|(thread, _)| thread.is_finished()) {
            self.next_segment()?;
        }
        if let Some((file, path, size, allocated)) = self.file.as_mut() {
            if !self.buf.is_empty() {
                let end = *size + self.buf.len() as u64;
                if end > *allocated {
                    // Rare (the first segment after a start, until the next one is prepared;
                    // a group larger than what is left): extend the zeros, with their metadata.
                    *allocated = zero_fill(file, path, *allocated, end + ahead, !fsync)?;
                    if fsync {
                        file.sync_all().map_err(io_err(path))?;
                    }
                }
                file.write_all_at(&self.buf, *size).map_err(io_err(path))?;
                if fsync {
                    let started = std::time::Instant::now();
                    file.sync_data().map_err(io_err(path))?;
                    self.last_sync = Some(started.elapsed());
                }
                *size = end;
                self.buf.clear();
            }
        }
        self.committed = self.next_seq - 1;
        let size = self.file.as_ref().map_or(0, |(_, _, size, _)| *size);
        if self.next.is_none() && self.file.is_some() && size >= self.preallocate() / 2 {
            self.prepare_next();
        }
        if size >= self.segment_bytes_max {
            self.next_segment()?;
        }
        Ok(self.committed)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// How long the last commit's `fdatasync` took (`fsync` mode, a group written).
    pub fn last_sync(&self) -> Option<std::time::Duration> {
        self.last_sync
    }
}

impl Drop for JournalWriter {
    /// Stops the preparing thread within a chunk of zeros, and waits for it.
    fn drop(&mut self) {
        if let Some((thread, stop)) = self.next.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

/// Removes the file at `path` if there is one.
fn remove_if_there(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Writes zeros into `file` from `from` to `to`; returns `to`.
///
/// In `os` durability, a page at a time (`small`): a larger write leaves the zeros in the page
/// cache as large folios, and each small append into one then costs the file system a walk of the
/// whole folio's blocks (`ext4_block_write_begin`). `journal-commit 200000 1 32 os`: an append
/// and commit of one record took 0.59 µs after 1 MiB writes of zeros, 0.36 µs (a plain write's
/// cost) after page-sized ones. In `fsync` durability each append is followed by an
/// `fdatasync`, which dwarfs that walk, while syncing zeros written a page at a time took far
/// longer (a 16 MiB extension stalled a commit 27 ms instead of 2): there, 1 MiB at a time.
fn zero_fill(file: &File, path: &Path, from: u64, to: u64, small: bool) -> Result<u64, JournalError> {
    // Zero-initialised static memory: no allocation per call (the preparing thread calls this
    // once per MiB).
    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let step = if small { PAGE } else { ZEROS.len() as u64 };
    let mut at = from;
    while at < to {
        // Up to the next multiple of the step, so that the writes stay aligned.
        let n = (step - at % step).min(to - at) as usize;
        file.write_all_at(&ZEROS[..n], at).map_err(io_err(path))?;
        at += n as u64;
    }
    Ok(to)
}

/// The page size the zeros of `os` durability are written in.
const PAGE: u64 = 4096;

/// What reading the journal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The last sequence read (the `after` given when nothing was newer).
    pub last_seq: u64,
    /// Records handed to the callback.
    pub records: u64,
    /// A torn tail cut off: the segment and the offset it was truncated at.
    pub truncated: Option<(PathBuf, u64)>,
}

/// One journaled command, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub time_us: u64,
    /// The digest of the events the matcher made applying it (`Events::digest`): a replay that
    /// makes other events diverged.
    pub digest: u64,
    pub cmd: Command,
}

/// Hands every record with a sequence above `after` to `each`, in order, checking checksums,
/// that sequences advance by one, and that each segment read was written under `fingerprint`.
///
/// The journal ends where only zeros follow (the space the writer preallocated); the last
/// segment's zeros are cut off. A record that is not whole and valid is a torn write only if a
/// crash could have left it ([`torn_write`]): in the last segment, cut off at a sector boundary
/// before its end, with nothing but zeros after the cut. That tail is cut back to the last whole
/// record and the cut reported. Anything else is corruption and stops the read with the file, the
/// offset and the sequence, before anything on disk is changed.
pub fn read_journal(
    dir: &Path,
    fingerprint: u64,
    after: u64,
    mut each: impl FnMut(Entry, &Path) -> Result<(), JournalError>,
) -> Result<ReadOutcome, JournalError> {
    let segments = list_segments(dir)?;
    let mut out = ReadOutcome { last_seq: after, ..ReadOutcome::default() };
    for (i, (first, path)) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|(f, _)| *f);
        if next_first.is_some_and(|n| n <= after + 1) {
            continue; // every record here is at or below `after`
        }
        let last_segment = next_first.is_none();
        let bytes = fs::read(path).map_err(io_err(path))?;
        let seg_fingerprint = check_header(path, &bytes, *first)?;
        let mut at = SEGMENT_HEADER_BYTES;
        let mut expected = *first;
        let mut fingerprint_checked = false;
        let corrupt = |offset: usize, seq: u64, reason: String| JournalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            seq,
            reason,
        };
        while at < bytes.len() {
            let reason = match record::decode(&bytes[at..]) {
                Decoded::Record { seq, time_us, digest, cmd, bytes: n } => {
                    if seq != expected {
                        return Err(corrupt(at, expected, format!("sequence {seq} where {expected} was expected")));
                    }
                    expected += 1;
                    if seq > after {
                        if !fingerprint_checked && seg_fingerprint != fingerprint {
                            return Err(JournalError::ConfigChanged { path: path.clone() });
                        }
                        fingerprint_checked = true;
                        each(Entry { seq, time_us, digest, cmd }, path)?;
                        out.last_seq = seq;
                        out.records += 1;
                    }
                    at += n;
                    continue;
                }
                Decoded::Zeros => {
                    // The end: nothing was written here. The last segment's zeros are cut, so
                    // that only the segment a writer has open ever has them.
                    if last_segment {
                        truncate(path, at)?;
                    }
                    break;
                }
                Decoded::Short => "the segment ends inside a record".to_string(),
                Decoded::Bad(reason) => reason,
            };
            if !last_segment {
                return Err(corrupt(at, expected, format!("{reason}, in a segment that is not the last")));
            }
            if let Err(why_not) = torn_write(&bytes, at, expected) {
                return Err(corrupt(at, expected, format!("{reason}; not a torn write: {why_not}")));
            }
            truncate(path, at)?;
            tracing::warn!(
                "journal: torn write in {} at byte {at} (sequence {expected}, never acknowledged: {reason}): \
                 cut back to the last whole record",
                path.display()
            );
            out.truncated = Some((path.clone(), at as u64));
            break;
        }
        if let Some(n) = next_first {
            if expected != n {
                let reason = format!("ends before sequence {n}, where the next segment starts");
                return Err(corrupt(bytes.len(), expected, reason));
            }
        }
    }
    Ok(out)
}

/// The unit a crash can leave a write cut at: storage persists whole sectors, and a write cut
/// short by a signal ends at a page boundary, a multiple of it.
const SECTOR_BYTES: usize = 512;

/// Whether the record at `at` of the last segment, which is not whole and valid, is what a crash
/// can leave: a group write that stopped at a sector boundary inside this record, after which the
/// segment holds only the zeros preallocated ahead of it (or ends). Since a record ends in a
/// nonzero byte, a record whose bytes are all on disk reaches at least to its last sector; so a
/// record that is whole on disk, one with a length no record can have, one whose checksum matches
/// its bytes up to another end (a damaged length), and one followed by a whole record of sequence
/// `seq` or later, is damage, not a torn write.
fn torn_write(bytes: &[u8], at: usize, seq: u64) -> Result<(), String> {
    let rest = &bytes[at..];
    // Where the written bytes end, and the sector boundary after them: zeros from there on.
    let written = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let cut = (at + written).div_ceil(SECTOR_BYTES) * SECTOR_BYTES - at;
    if let Some(later) = (1..written).find(|&p| is_record_from(&rest[p..written], seq)) {
        return Err(format!("a whole record follows at byte {}", at + later));
    }
    if let Some(end) = checksum_matches_up_to(&rest[..written]) {
        return Err(format!("its bytes up to byte {} match its checksum: its length is damaged", at + end));
    }
    if rest.len() < 4 {
        return Ok(()); // the segment ends inside the length itself
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if len > record::RECORD_PAYLOAD_MAX {
        // A cut inside the length leaves its low bytes: a smaller number, never a larger one.
        return Err(format!("its length {len} exceeds what any record has"));
    }
    let end = record::record_bytes(len);
    if rest.len() < end || cut < end {
        return Ok(()); // the segment ends inside the record, or zeros fill it from a sector on
    }
    if written > end {
        return Err(format!("{} bytes that are not zeros follow the record's end", written - end));
    }
    Err("the record reaches its last sector, so it was written whole and damaged after".into())
}

/// The end of the first prefix of `record` that closes with [`record::RECORD_END`] and whose
/// checksum is the one the record's header holds: where a record whose length field alone is
/// damaged ends.
fn checksum_matches_up_to(record: &[u8]) -> Option<usize> {
    let header = record::RECORD_HEADER_BYTES;
    let crc = u32::from_le_bytes(record.get(4..8)?.try_into().expect("4 bytes"));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(record.get(8..header)?);
    for end in header + 1..=record.len() {
        hasher.update(&record[end - 1..end]);
        if record[end - 1] == record::RECORD_END && hasher.clone().finalize() == crc {
            return Some(end);
        }
    }
    None
}

/// Follows the journal while it is written: hands on every record from a starting sequence,
/// up to a sequence the writer has committed, across segment rotations. The snapshot worker
/// reads the commands it replays this way, so the journal itself is its queue.
///
/// Records up to a committed sequence are whole in the file (the writer returns from `write`
/// before it publishes the sequence). Past them the reader finds the zeros the writer
/// preallocated, or the end of a rotated segment, and it reads that offset again next time.
pub struct JournalTail {
    dir: PathBuf,
    next: u64,
    /// The segment being read, its path, and the offset of its next record.
    file: Option<(File, PathBuf, u64)>,
    chunk: Vec<u8>,
}

/// Bytes read at a time: more than the largest record, and not much more than a millisecond of
/// records at a million commands a second, since each read copies the whole chunk (past the last
/// record, the preallocated zeros).
const TAIL_CHUNK: usize = 128 * 1024;

impl JournalTail {
    /// A reader whose first record will be `next`.
    pub fn new(dir: &Path, next: u64) -> JournalTail {
        JournalTail { dir: dir.to_path_buf(), next, file: None, chunk: vec![0; TAIL_CHUNK] }
    }

    /// The sequence of the next record to be handed on.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Hands every record from the next one through `upto` (which the writer has committed) to
    /// `each`, in order. An error (a record missing, out of order or corrupt) leaves the reader
    /// where it was stopped.
    pub fn read_to(&mut self, upto: u64, mut each: impl FnMut(Entry)) -> Result<(), JournalError> {
        while self.next <= upto {
            let (file, path, offset) = match self.file.as_mut() {
                Some(f) => f,
                None => self.file.insert(self.open_segment()?),
            };
            let n = file.read_at(&mut self.chunk, *offset).map_err(io_err(path))?;
            let next = self.next;
            let corrupt =
                |at: u64, reason: String| JournalError::Corrupt { path: path.clone(), offset: at, seq: next, reason };
            let mut at = 0;
            while self.next <= upto {
                match record::decode(&self.chunk[at..n]) {
                    Decoded::Record { seq, time_us, digest, cmd, bytes } => {
                        if seq > self.next {
                            return Err(corrupt(*offset, format!("sequence {seq} where {} was expected", self.next)));
                        }
                        if seq == self.next {
                            each(Entry { seq, time_us, digest, cmd });
                            self.next += 1;
                        }
                        at += bytes;
                        *offset += bytes as u64;
                    }
                    Decoded::Bad(reason) => return Err(corrupt(*offset, reason)),
                    Decoded::Short | Decoded::Zeros => break,
                }
            }
            if self.next > upto || (at > 0 && n == self.chunk.len()) {
                continue; // done, or the chunk ended inside a record: read on from it
            }
            // Nothing more in this segment: the writer went on in the next one.
            let rotated = segment_path(&self.dir, self.next);
            if !rotated.exists() {
                return Err(corrupt(
                    *offset,
                    format!("the journal ends before sequence {}, which was committed (through {upto})", self.next),
                ));
            }
            self.file = None;
        }
        Ok(())
    }

    /// The segment holding the next record: the last one starting at or before it.
    fn open_segment(&self) -> Result<(File, PathBuf, u64), JournalError> {
        let segments = list_segments(&self.dir)?;
        let Some((first, path)) = segments.iter().rev().find(|(first, _)| *first <= self.next) else {
            return Err(JournalError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                seq: self.next,
                reason: format!("no segment holds sequence {}", self.next),
            });
        };
        let file = File::open(path).map_err(io_err(path))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        file.read_exact_at(&mut header, 0).map_err(io_err(path))?;
        check_header(path, &header, *first)?;
        Ok((file, path.clone(), SEGMENT_HEADER_BYTES as u64))
    }
}

/// The fingerprint in the header at the start of `bytes`, which must be a viaduct segment that
/// starts at `first`, the sequence its name says.
fn check_header(path: &Path, bytes: &[u8], first: u64) -> Result<u64, JournalError> {
    let corrupt =
        |offset: u64, reason: String| JournalError::Corrupt { path: path.to_path_buf(), offset, seq: first, reason };
    let (fingerprint, seg_first) = record::parse_segment_header(bytes).map_err(|r| corrupt(0, r))?;
    if seg_first != first {
        return Err(corrupt(24, format!("header says it starts at {seg_first}, its name says {first}")));
    }
    Ok(fingerprint)
}

/// Whether `bytes` start with a whole, valid record of sequence `seq` or later (at most one per
/// byte after it): the sequence is looked at first, so most offsets cost no checksum.
fn is_record_from(bytes: &[u8], seq: u64) -> bool {
    let Some(field) = bytes.get(8..16) else { return false };
    let found = u64::from_le_bytes(field.try_into().expect("8 bytes"));
    found.wrapping_sub(seq) <= bytes.len() as u64 && matches!(record::decode(bytes), Decoded::Record { .. })
}

fn truncate(path: &Path, at: usize) -> Result<(), JournalError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    file.set_len(at as u64).and_then(|()| file.sync_all()).map_err(io_err(path))
}

/// Removes every segment whose records all lie at or below `seq` (covered by a snapshot).
pub fn remove_covered(dir: &Path, seq: u64) -> Result<usize, JournalError> {
    let segments = list_segments(dir)?;
    let mut removed = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        match segments.get(i + 1) {
            Some((next_first, _)) if *next_first <= seq + 1 => {
                fs::remove_file(path).map_err(io_err(path))?;
                removed += 1;
            }
            _ => break,
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel(order_id: u64) -> Command {
        Command::Cancel { user: 1, market: 0, order_id }
    }

    /// With segments larger than the first one's zeros, a group that would run past them goes
    /// to the prepared segment once it is ready, instead of waiting for more zeros.
    #[test]
    fn the_first_segment_ends_at_its_zeros_once_the_next_is_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4 * PREALLOCATE_BYTES;
        let mut w = JournalWriter::open(dir.path(), 1, 7, Durability::Os, max).unwrap();
        let mut seq = 0;
        while list_segments(dir.path()).unwrap().len() < 2 {
            if let Some((thread, _)) = &w.next {
                while !thread.is_finished() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            for _ in 0..5000 {
                seq += 1;
                w.append(seq, 0, seq, &cancel(seq));
            }
            w.commit().unwrap();
        }
        let segments = list_segments(dir.path()).unwrap();
        let first_len = fs::metadata(&segments[0].1).unwrap().len();
        assert!(first_len <= SEGMENT_HEADER_BYTES as u64 + PREALLOCATE_BYTES, "extended to {first_len}");
        assert_eq!(w.prepared_taken, 1);
        drop(w);
        let mut read = 0;
        read_journal(dir.path(), 7, 0, |e, _| {
            read += 1;
            assert_eq!(e.seq, read);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, seq);
    }

    /// Every segment after the first is the one prepared ahead, and begins whole (zeros to its
    /// maximum and beyond, where the writer's own begins with less); the preparing starts at half
    /// a segment; a prepared file left by a stopped process is replaced at the next start; every
    /// record reads back in order.
    #[test]
    fn segments_after_the_first_are_the_ones_prepared_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096u64;
        let header = SEGMENT_HEADER_BYTES as u64;
        fs::write(dir.path().join(NEXT_SEGMENT), b"left by a stopped process").unwrap();
        let mut w = JournalWriter::open(dir.path(), 1, 7, Durability::Fsync, max).unwrap();
        assert!(!dir.path().join(NEXT_SEGMENT).exists(), "removed at the start");
        assert_eq!(fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), header + max);
        let mut seq = 0;
        while list_segments(dir.path()).unwrap().len() < 5 {
            for _ in 0..10 {
                seq += 1;
                w.append(seq, 0, seq * 3, &cancel(seq));
            }
            assert_eq!(w.commit().unwrap(), seq);
            let segments = list_segments(dir.path()).unwrap();
            assert_eq!(w.prepared_taken, segments.len() as u64 - 1);
            let (first, last) = segments.last().unwrap();
            let written = w.file.as_ref().unwrap().2;
            assert_eq!(w.next.is_some(), written >= max / 2, "preparing from half a segment on");
            if *first > 1 {
                assert_eq!(fs::metadata(last).unwrap().len(), header + 2 * max);
            }
        }
        // Stopped while the next segment is being prepared.
        for _ in 0..60 {
            seq += 1;
            w.append(seq, 0, seq * 3, &cancel(seq));
        }
        w.commit().unwrap();
        assert!(w.next.is_some());
        drop(w);
        let mut read = Vec::new();
        read_journal(dir.path(), 7, 0, |e, _| {
            read.push((e.seq, e.digest));
            Ok(())
        })
        .unwrap();
        assert_eq!(read, (1..=seq).map(|s| (s, s * 3)).collect::<Vec<_>>());
        // A restart finds the prepared file the stopped writer left, and prepares afresh.
        assert!(dir.path().join(NEXT_SEGMENT).exists());
        let mut w = JournalWriter::open(dir.path(), seq + 1, 7, Durability::Fsync, max).unwrap();
        for _ in 0..200 {
            seq += 1;
            w.append(seq, 0, seq * 3, &cancel(seq));
        }
        w.commit().unwrap();
        assert_eq!(w.prepared_taken, 1, "the overfilled first segment was closed for a prepared one");
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(fs::metadata(&segments.last().unwrap().1).unwrap().len(), header + 2 * max);
    }
}
