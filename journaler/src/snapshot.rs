//! Snapshot files: the matcher's canonical state at a journal sequence, checksummed, written to a
//! temporary name, synced and renamed so that a crash never leaves a half-written snapshot under
//! a real name.
//!
//! Layout (little-endian): magic `VDSNAP02`, sequence (u64), state length (u64), CRC-32 of the
//! state (u32), zero (u32), then the state bytes: the matcher's length (u64), the matcher's state
//! (`Matcher::snapshot`), and the downstream consumers' state (market data) in what remains
//! ([`write_streaming`] writes it, [`decode_state`] splits it).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::segment::{list_numbered, sync_dir};
use crate::{io_err, JournalError};

const MAGIC: &[u8; 8] = b"VDSNAP02";
const HEADER_BYTES: usize = 32;

fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snap-{seq:020}.bin"))
}

/// Every snapshot in `dir` as (sequence, path), oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    list_numbered(dir, "snap-", ".bin")
}

fn header(seq: u64, state_len: u64, crc: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&state_len.to_le_bytes());
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Writes the state at `seq` durably, from the matcher's bytes and the downstream consumers';
/// returns its path. The same file as [`write_streaming`], which it is.
pub fn write(dir: &Path, seq: u64, matcher: &[u8], downstream: &[u8]) -> Result<PathBuf, JournalError> {
    write_streaming(dir, seq, |w| w.write_all(matcher), downstream).map(|w| w.path)
}

/// What [`write_streaming`] wrote.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    /// The state's bytes (the file holds the header too).
    pub bytes: u64,
    /// How long encoding and writing took, up to the sync (which is waiting, not work).
    pub encoded: Duration,
}

/// Bytes on their way to the file, counted and checksummed as they pass.
struct Counted<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the state at `seq` durably under a temporary name, synced and renamed. The matcher's
/// part comes from `matcher` as it is encoded, so the state is never held whole in memory: the
/// file begins with room for the header and the matcher's length, which are written last, with
/// the checksum, before the file is synced and renamed. A failed write leaves no file behind.
pub fn write_streaming(
    dir: &Path,
    seq: u64,
    matcher: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    downstream: &[u8],
) -> Result<Written, JournalError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = snapshot_path(dir, seq);
    let tmp = path.with_extension("tmp");
    let started = Instant::now();
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let written = (|| {
        // The matcher's encoder hands its bytes over in large chunks; each goes to the file as is.
        (&file).write_all(&[0u8; HEADER_BYTES + 8])?;
        let mut out = Counted { inner: &file, crc: crc32fast::Hasher::new(), len: 0 };
        matcher(&mut out)?;
        let matcher_len = out.len;
        out.write_all(downstream)?;
        let Counted { crc: rest, len: rest_len, .. } = out;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&matcher_len.to_le_bytes());
        crc.combine(&rest);
        let state_len = 8 + rest_len;
        let mut head = [0u8; HEADER_BYTES + 8];
        head[..HEADER_BYTES].copy_from_slice(&header(seq, state_len, crc.finalize()));
        head[HEADER_BYTES..].copy_from_slice(&matcher_len.to_le_bytes());
        file.write_all_at(&head, 0)?;
        let encoded = started.elapsed();
        file.sync_all()?;
        Ok::<_, io::Error>((state_len, encoded))
    })();
    let (bytes, encoded) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
    };
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(Written { path, bytes, encoded })
}

/// Reads and checks one snapshot: (sequence, state bytes).
pub fn read(path: &Path) -> Result<(u64, Vec<u8>), JournalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let bad = |reason: &str| JournalError::Snapshot { path: path.to_path_buf(), reason: reason.to_string() };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(bad("not a viaduct snapshot (bad magic or too short)"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (seq, len) = (u64_at(8), u64_at(16));
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    let state = &bytes[HEADER_BYTES..];
    if state.len() as u64 != len {
        return Err(bad(&format!("holds {} bytes of state, its header says {len}", state.len())));
    }
    if crc32fast::hash(state) != crc {
        return Err(bad("fails its checksum"));
    }
    Ok((seq, state.to_vec()))
}

/// Splits a snapshot's state bytes into (matcher, downstream); `None` if they do not hold that shape.
pub fn decode_state(state: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(u64::from_le_bytes(state.get(..8)?.try_into().ok()?)).ok()?;
    let rest = &state[8..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Keeps the newest `keep` snapshots, and the newest at or before `protect_at_most` (a consumer
/// that has committed only that far restarts from it); removes the rest. Returns the sequence the
/// journal is needed after (`None`: from its beginning).
pub fn prune(dir: &Path, keep: usize, protect_at_most: u64) -> Result<Option<u64>, JournalError> {
    let all = list(dir)?;
    let cut = all.len().saturating_sub(keep.max(1));
    let protected = all.iter().rev().find(|(seq, _)| *seq <= protect_at_most).map(|(seq, _)| *seq);
    for (seq, path) in &all[..cut] {
        if Some(*seq) != protected {
            fs::remove_file(path).map_err(io_err(path))?;
        }
    }
    let oldest_kept = all[cut..].first().map(|(seq, _)| *seq);
    // What the journal may drop: up to the oldest snapshot a restart could start from. With none
    // at or before `protect_at_most`, that consumer needs the journal from its beginning.
    Ok(match (protected, oldest_kept) {
        (Some(p), Some(k)) => Some(p.min(k)),
        (Some(p), None) => Some(p),
        (None, _) => None,
    })
}
