//! The Raft log of the metadata quorum, on disk through storage's [`Fs`] seam.
//!
//! ```text
//! <dir>/quorum.log    frame(JSON header {format_version, last_purged}) then one frame
//!                     (JSON entry) per log entry, in index order; frames as types.rs says
//! <dir>/quorum.vote   JSON vote, replaced atomically (temp file, sync, rename, sync dir)
//! ```
//!
//! An append is answered once its frames are written and the file is synced. At open, the
//! entries are read back up to a torn last frame (what a power cut leaves of an append that
//! was never answered), and the file is cut there; a damaged frame with an intact one after it
//! is refused instead, since entries after it may have been acknowledged. Purging (after a
//! snapshot covers a prefix) rewrites the file atomically without it. Entries are also kept in
//! memory: the log holds only what the last snapshot does not cover, a bounded amount.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};
use sluice_storage::{create_dir_all_durably, write_file_atomically, Fs, FsFile, OpenMode};
use tokio::sync::watch;

use crate::state_machine::StateMachine;
use crate::types::{
    put_frame, take_frame, Entry, Frame, LogId, QuorumTypes, StorageError, Vote, FRAME_BYTES_MAX,
};

const LOG_FILE: &str = "quorum.log";
const VOTE_FILE: &str = "quorum.vote";
const FORMAT_VERSION: u32 = 1;
/// How long a purge waits for the snapshot behind it to be on disk before failing.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct LogHeader {
    format_version: u32,
    last_purged: Option<LogId>,
}

/// The quorum's Raft log. Cloning shares it (openraft reads through clones).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    durable_snapshot: watch::Receiver<Option<LogId>>,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    file: Box<dyn FsFile>,
    /// The file's length: where the next frame goes.
    end: u64,
    /// Every entry not purged, with its frame's position in the file.
    entries: BTreeMap<u64, (Entry, u64)>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
}

fn io_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn write_error(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(e).into()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, reading back what it holds. `durable_snapshot`
    /// follows the last log id the state machine's snapshot on disk covers: a purge waits for
    /// it (see [`open_storage`]).
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        durable_snapshot: watch::Receiver<Option<LogId>>,
    ) -> io::Result<Self> {
        create_dir_all_durably(&*fs, dir)?;
        let path = dir.join(LOG_FILE);
        if !fs.exists(&path) {
            write_file_atomically(&*fs, dir, LOG_FILE, &header_frame(None)?)?;
        }
        let bytes = fs.read(&path)?;
        let Frame::Whole(header, mut rest) = take_frame(&bytes, FRAME_BYTES_MAX) else {
            return Err(io_error(format!("{}: damaged header", path.display())));
        };
        let header: LogHeader = serde_json::from_slice(header)
            .map_err(|e| io_error(format!("{}: header: {e}", path.display())))?;
        if header.format_version != FORMAT_VERSION {
            return Err(io_error(format!(
                "{}: format version {} is not {FORMAT_VERSION}",
                path.display(),
                header.format_version
            )));
        }
        let mut entries = BTreeMap::new();
        let mut expected = header.last_purged.map(|l| l.index + 1);
        let mut position = (bytes.len() - rest.len()) as u64;
        while !rest.is_empty() {
            let (payload, after) = match take_frame(rest, FRAME_BYTES_MAX) {
                Frame::Whole(payload, after) => (payload, after),
                // What a power cut leaves of an append that was never answered, unless an
                // intact entry follows somewhere (a length damaged to point past the end).
                Frame::Torn if !intact_frame_after(rest) => break,
                Frame::Torn => {
                    return Err(io_error(format!(
                        "{}: a damaged entry at byte {position} with intact entries after it",
                        path.display()
                    )));
                }
                Frame::Damaged => {
                    // Entries after it may have been acknowledged: refuse rather than forget.
                    return Err(io_error(format!(
                        "{}: damaged entry at byte {position} with data after it",
                        path.display()
                    )));
                }
            };
            let entry: Entry = serde_json::from_slice(payload)
                .map_err(|e| io_error(format!("{}: entry: {e}", path.display())))?;
            let index = entry.log_id.index;
            if expected.is_some_and(|e| e != index) {
                return Err(io_error(format!(
                    "{}: entry {index} where {expected:?} was expected",
                    path.display()
                )));
            }
            expected = Some(index + 1);
            entries.insert(index, (entry, position));
            position = (bytes.len() - after.len()) as u64;
            rest = after;
        }
        let file = fs.open(&path, OpenMode::Existing)?;
        if position < bytes.len() as u64 {
            tracing::warn!(
                file = %path.display(),
                kept = position,
                dropped = bytes.len() as u64 - position,
                "metadata log ends in a torn frame; cutting it there"
            );
            file.set_len(position)?;
            file.sync_data()?;
        }
        let vote_path = dir.join(VOTE_FILE);
        let vote = if fs.exists(&vote_path) {
            let bytes = fs.read(&vote_path)?;
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| io_error(format!("{}: {e}", vote_path.display())))?,
            )
        } else {
            None
        };
        Ok(Self {
            durable_snapshot,
            inner: Arc::new(Mutex::new(Inner {
                fs,
                dir: dir.to_owned(),
                file,
                end: position,
                entries,
                last_purged: header.last_purged,
                vote,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("quorum log lock")
    }
}

/// Whether a whole, non-empty frame starts anywhere after the first byte of `rest`.
fn intact_frame_after(rest: &[u8]) -> bool {
    (1..rest.len()).any(|i| {
        matches!(take_frame(&rest[i..], FRAME_BYTES_MAX), Frame::Whole(payload, _) if !payload.is_empty())
    })
}

fn header_frame(last_purged: Option<LogId>) -> io::Result<Vec<u8>> {
    let header = LogHeader {
        format_version: FORMAT_VERSION,
        last_purged,
    };
    let mut out = Vec::new();
    let payload = serde_json::to_vec(&header).map_err(io::Error::other)?;
    put_frame(&mut out, &payload, FRAME_BYTES_MAX)?;
    Ok(out)
}

fn entry_frame(out: &mut Vec<u8>, entry: &Entry) -> io::Result<()> {
    let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
    put_frame(out, &payload, FRAME_BYTES_MAX)
}

/// Opens the quorum's log and state machine in `dir` together: they share the bound that keeps
/// the log from being purged past the snapshot on disk, and a log purged past its snapshot (a
/// directory put together from different moments) is refused.
pub fn open_storage(fs: Arc<dyn Fs>, dir: &Path) -> io::Result<(LogStore, StateMachine)> {
    let sm = StateMachine::open(fs.clone(), dir)?;
    let durable = sm.durable_snapshot();
    let snapshot = *durable.borrow();
    let log = LogStore::open(fs, dir, durable)?;
    let purged = log.lock().last_purged;
    if purged.map(|p| p.index) > snapshot.map(|s| s.index) {
        return Err(io_error(format!(
            "{}: the metadata log is purged up to {purged:?} but the snapshot ends at \
             {snapshot:?}",
            dir.display()
        )));
    }
    Ok((log, sm))
}

impl Inner {
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for entry in &entries {
            positions.push(self.end + bytes.len() as u64);
            entry_frame(&mut bytes, entry)?;
        }
        self.file.write_all_at(&bytes, self.end)?;
        self.file.sync_data()?;
        self.end += bytes.len() as u64;
        for (entry, position) in entries.into_iter().zip(positions) {
            let index = entry.log_id.index;
            let previous = self.entries.keys().next_back().copied();
            assert!(
                previous.is_none_or(|p| p + 1 == index),
                "openraft appended entry {index} after {previous:?}"
            );
            self.entries.insert(index, (entry, position));
        }
        Ok(())
    }

    /// Removes the entries from `index` on (all of them when `index` is below the first).
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some((_, &(_, position))) = self.entries.range(index..).next() else {
            return Ok(());
        };
        self.file.set_len(position)?;
        self.file.sync_data()?;
        self.end = position;
        self.entries.split_off(&index);
        Ok(())
    }

    /// Drops entries up to `upto` and rewrites the file without them.
    fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let kept = self.entries.split_off(&(upto.index + 1));
        let mut bytes = header_frame(Some(upto))?;
        let mut entries = BTreeMap::new();
        for (index, (entry, _)) in kept {
            let position = bytes.len() as u64;
            entry_frame(&mut bytes, &entry)?;
            entries.insert(index, (entry, position));
        }
        write_file_atomically(&*self.fs, &self.dir, LOG_FILE, &bytes)?;
        self.file = self.fs.open(&self.dir.join(LOG_FILE), OpenMode::Existing)?;
        self.end = bytes.len() as u64;
        self.entries = entries;
        self.last_purged = Some(upto);
        Ok(())
    }
}

impl RaftLogReader<QuorumTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<QuorumTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<QuorumTypes>, StorageError> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|(e, _)| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| StorageIOError::write_vote(&io::Error::other(e)))?;
        write_file_atomically(&*inner.fs, &inner.dir, VOTE_FILE, &bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<QuorumTypes>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.lock().append(entries).map_err(|e| write_error(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .truncate(log_id.index)
            .map_err(|e| write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // openraft purges behind a snapshot it may still be installing; the file drops the
        // entries only once that snapshot is on disk, so that a restart always finds every
        // entry after the snapshot it loads, with no hole between them.
        let covered = self
            .durable_snapshot
            .wait_for(|d| d.is_some_and(|d| d.index >= log_id.index));
        match tokio::time::timeout(PURGE_WAIT, covered).await {
            Ok(Ok(_)) => {}
            _ => {
                let e = io_error(format!("no snapshot on disk covers {log_id} to purge it"));
                return Err(write_error(&e));
            }
        }
        self.lock().purge(log_id).map_err(|e| write_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use sluice_storage::SimFs;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn log_with_entries(fs: &SimFs, dir: &Path, n: u64) -> Vec<u8> {
        let (_, rx) = watch::channel(None);
        let store = LogStore::open(Arc::new(fs.clone()), dir, rx).unwrap();
        store.lock().append((1..=n).map(entry).collect()).unwrap();
        Fs::read(fs, &dir.join(LOG_FILE)).unwrap()
    }

    fn reopen(fs: &SimFs, dir: &Path, bytes: &[u8]) -> io::Result<Vec<u64>> {
        let f = Fs::open(fs, &dir.join(LOG_FILE), OpenMode::Truncate)?;
        f.write_all_at(bytes, 0)?;
        let (_, rx) = watch::channel(None);
        let store = LogStore::open(Arc::new(fs.clone()), dir, rx)?;
        let entries = store.lock().entries.keys().copied().collect();
        Ok(entries)
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_intact_entries_is_refused() {
        let fs = SimFs::new(1);
        let dir = Path::new("/q");
        let bytes = log_with_entries(&fs, dir, 3);
        // Cut inside the last entry: the first two remain.
        assert_eq!(
            reopen(&fs, dir, &bytes[..bytes.len() - 3]).unwrap(),
            vec![1, 2]
        );
        // The middle entry's checksum damaged, or its length pointing past the end: refused,
        // as entry 3 may have been acknowledged.
        // Blank entries 1-3 encode to the same length.
        let header = header_frame(None).unwrap().len();
        let second = header + (bytes.len() - header) / 3;
        let mut damaged = bytes.clone();
        damaged[second + 9] ^= 1;
        assert!(reopen(&fs, dir, &damaged).is_err());
        let mut long = bytes.clone();
        long[second..second + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(reopen(&fs, dir, &long).is_err());
    }
}
