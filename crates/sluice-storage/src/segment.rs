//! One segment: a `.log` file of stored batches plus its two sparse indexes.
//!
//! ```text
//! <topic>-<partition>/
//!   00000000000000000000.log        batches, byte-for-byte as produced except the base
//!   00000000000000000000.index      offset, leader epoch and LogAppendTime fields
//!   00000000000000000000.timeindex
//!   00000000000000000000.txnindex   aborted transactions whose abort marker is in this
//!                                   segment (only if there are any)
//!   00000000000000004711.log        next segment: its name is its base offset
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_records::{BatchError, BatchHeader, BATCH_HEADER_SIZE, LOG_OVERHEAD};

use crate::files::{HandleCache, SegmentFile};
use crate::fs::remove_if_present;
use crate::index::{OffsetIndex, TimeIndex};
use crate::txn_index::AbortedTxn;
use crate::{CountedFile, Fs, FsFile, OpenMode};

/// Bytes of a batch header we read to step over and locate batches.
pub(crate) const HEADER_PEEK: usize = 27;

pub(crate) fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub(crate) struct LogSegment {
    fs: Arc<dyn Fs>,
    base_offset: i64,
    file: Arc<SegmentFile>,
    dir: PathBuf,
    /// Bytes of valid batches; writes go here.
    size: u64,
    /// The offset after the last batch in this segment.
    next_offset: i64,
    /// Largest batch max timestamp seen, -1 if none.
    max_timestamp: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    /// Wall-clock time the segment was created or opened, for `segment.ms`.
    created_ms: i64,
    /// Whether the index files on disk match the in-memory indexes.
    indexes_persisted: bool,
    /// Aborted transactions whose abort marker lies in this segment, in marker order: the
    /// `.txnindex` file's contents.
    aborted: Vec<AbortedTxn>,
    /// The `.txnindex` file, opened on the first entry; entries are appended to it and it is
    /// synced along with the segment.
    txn_file: Option<Arc<CountedFile>>,
}

/// How a segment came back at start-up.
#[derive(Debug)]
pub(crate) enum Recovered {
    /// Opened from its indexes without reading its batches.
    Trusted,
    /// Every batch validated: `bytes` of valid batches, and the first invalid one (where and
    /// why), if the scan stopped early.
    Scanned {
        bytes: u64,
        corruption: Option<(u64, BatchError)>,
    },
}

/// Where a segment sits in the log it is recovered into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryContext {
    /// The next segment's base offset (`None` for the last segment).
    pub next_base: Option<i64>,
    /// Every offset below it was durable at the last checkpoint (`i64::MIN`: nothing known).
    pub recovery_point: i64,
    /// Segments wholly below it may have been compacted, leaving offset gaps.
    pub gaps_below: i64,
    pub interval_bytes: u64,
}

/// Where the batches of a compacted segment may lie (see [`LogSegment::scan_from`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanBounds {
    /// Every batch ends before this (the next segment's base), if given.
    pub end_before: Option<i64>,
    /// Only a batch ending before this may start past the previous one's end (the
    /// cleaner's gap marker).
    pub gaps_below: i64,
}

/// What scanning a run of batches found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Position just past the last valid batch.
    pub valid_end: u64,
    /// The first invalid batch's position and reason, if the scan stopped early.
    pub corruption: Option<(u64, BatchError)>,
}

impl LogSegment {
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Bytes of valid batches: where the next append goes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The offset after the segment's last batch (or after its last gap, if compacted).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The largest batch max timestamp, -1 if none.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// When the segment was created or opened (wall clock), for `segment.ms`.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn file(&self) -> &Arc<SegmentFile> {
        &self.file
    }

    /// The files a sync of this segment covers: the log and, if any, its transaction index.
    pub fn files_to_sync(&self) -> (Arc<SegmentFile>, Option<Arc<CountedFile>>) {
        (self.file.clone(), self.txn_file.clone())
    }

    /// Aborted transactions whose abort marker lies in this segment, in marker order.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    pub fn indexes_persisted(&self) -> bool {
        self.indexes_persisted
    }

    /// Index entries held in memory, and in the indexes altogether.
    pub fn index_entries(&self) -> (usize, usize) {
        (
            self.offset_index.resident_entries() + self.time_index.resident_entries(),
            self.offset_index.len() + self.time_index.len(),
        )
    }

    /// For a new, empty segment: its (empty) indexes need no files, since a restart rebuilds
    /// them from an empty log.
    pub fn without_index_files(mut self) -> Self {
        debug_assert_eq!(self.size, 0);
        self.indexes_persisted = true;
        self
    }

    /// Takes over what a rewritten (compacted) segment keeps from the one it replaces: its
    /// age and its aborted-transaction index (offsets do not move). The rewrite may end in a
    /// gap: it still reaches the old segment's end.
    pub fn replace(&mut self, old: &LogSegment) {
        assert!(
            self.next_offset <= old.next_offset,
            "a rewrite cannot reach past the segment it replaces"
        );
        self.next_offset = old.next_offset;
        self.created_ms = old.created_ms;
        self.aborted = old.aborted.clone();
        self.txn_file = old.txn_file.clone();
    }

    /// Whether the next append of `bytes` holding `records` offsets from `log_end` must go to
    /// a new segment: this one is full (bytes or either index), too old, or the append would
    /// overflow its 32-bit relative offsets or positions. An empty segment never rolls.
    pub fn should_roll(
        &self,
        bytes: u64,
        records: i64,
        log_end: i64,
        now_ms: i64,
        config: &crate::LogConfig,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        let index_bytes = config.segment_index_bytes;
        let full = self.size + bytes > config.segment_bytes
            || self.offset_index.len() * crate::index::OFFSET_ENTRY_SIZE >= index_bytes
            || self.time_index.len() * crate::index::TIME_ENTRY_SIZE >= index_bytes;
        let old = now_ms - self.created_ms > config.segment_ms;
        let offsets_overflow = log_end + records - self.base_offset > i64::from(i32::MAX);
        let position_overflow = self.size + bytes > u64::from(u32::MAX);
        full || old || offsets_overflow || position_overflow
    }

    /// Writes `slices` (the batches described by `headers`, in order) at the end of the
    /// segment with one vectored write and indexes them. On an error the segment is
    /// unchanged in memory; the file may hold a partial batch, which recovery cuts.
    pub fn append(
        &mut self,
        slices: &mut [io::IoSlice<'_>],
        headers: &[BatchHeader],
        interval_bytes: u64,
    ) -> io::Result<()> {
        let start = self.size;
        self.file.get()?.write_vectored_at(slices, start)?;
        let mut at = start;
        for h in headers {
            self.track_batch(at, h, interval_bytes);
            at += h.total_size() as u64;
        }
        self.size = at;
        Ok(())
    }

    /// The offset relative to the base, clamped to what an index entry holds.
    fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// A batch start at or before the batch holding `offset`: where a read of it begins.
    pub fn position_of(&self, offset: i64) -> u64 {
        u64::from(self.offset_index.lookup(self.relative(offset)).1)
    }

    /// The largest indexed batch start at or below `position`, or 0.
    pub fn indexed_position_at_or_below(&self, position: u64) -> u64 {
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        u64::from(self.offset_index.floor_position(position))
    }

    /// A batch start before every batch holding a record at or after `timestamp` (by the time
    /// index), or 0.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        self.time_index
            .last_below(timestamp)
            .map_or(0, |rel| u64::from(self.offset_index.lookup(rel).1))
    }

    /// Rebuilds producer state from this segment's batches at or after `from` (offset), and
    /// the aborted-transaction entries of the markers among them: entries at or past `from`
    /// are dropped first (they may describe a truncated tail), then the index file is
    /// rewritten if anything changed.
    pub fn replay_producers(
        &mut self,
        from: i64,
        state: &mut crate::producer_state::ProducerStateManager,
        epochs: &mut crate::LeaderEpochCache,
        now_ms: i64,
        max_control_batch_bytes: usize,
    ) -> Result<(), crate::StorageError> {
        let before = self.aborted.len();
        self.aborted.retain(|e| e.last_offset < from);
        let mut changed = self.aborted.len() != before;
        if self.next_offset > from {
            let mut header = [0u8; BATCH_HEADER_SIZE];
            let mut pos = self.position_of(from);
            while pos + BATCH_HEADER_SIZE as u64 <= self.size {
                self.file.get()?.read_exact_at(&mut header, pos)?;
                let h = BatchHeader::parse(&header)?;
                if h.base_offset >= from {
                    epochs.assign(h.partition_leader_epoch, h.base_offset);
                    if h.is_control() {
                        if h.total_size() > max_control_batch_bytes {
                            return Err(crate::StorageError::Corrupt(format!(
                                "control batch of {} bytes at offset {}",
                                h.total_size(),
                                h.base_offset
                            )));
                        }
                        let mut batch = vec![0u8; h.total_size()];
                        self.file.get()?.read_exact_at(&mut batch, pos)?;
                        let marker = sluice_records::marker_of(&h, &batch)?;
                        if let Some(aborted) =
                            marker.and_then(|(c, ce)| state.record_marker(&h, c, ce, now_ms))
                        {
                            self.aborted.push(aborted);
                            changed = true;
                        }
                    } else {
                        state.record(&h, now_ms);
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        if changed {
            self.rewrite_txn_index()?;
        }
        Ok(())
    }

    /// Feeds the leader epoch of every batch header to `epochs` (for a producer snapshot
    /// written before it carried the epochs).
    pub fn replay_epochs(
        &self,
        epochs: &mut crate::LeaderEpochCache,
    ) -> Result<(), crate::StorageError> {
        let mut header = [0u8; BATCH_HEADER_SIZE];
        let mut pos = 0;
        while pos + BATCH_HEADER_SIZE as u64 <= self.size {
            self.file.get()?.read_exact_at(&mut header, pos)?;
            let h = BatchHeader::parse(&header)?;
            epochs.assign(h.partition_leader_epoch, h.base_offset);
            pos += h.total_size() as u64;
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(segment_file_name(self.base_offset, "log"))
    }
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(segment_file_name(self.base_offset, "index"))
    }
    pub fn time_index_path(&self) -> PathBuf {
        self.dir
            .join(segment_file_name(self.base_offset, "timeindex"))
    }
    fn txn_index_path(&self) -> PathBuf {
        self.dir
            .join(segment_file_name(self.base_offset, "txnindex"))
    }

    /// Reads the `.txnindex` file, if there is one. Returns whether it held bytes that are
    /// not entries of a known version (damage, a torn entry, a newer format): those are
    /// reported, and the caller rebuilds every entry from the log's markers.
    pub fn load_txn_index(&mut self) -> io::Result<bool> {
        let path = self.txn_index_path();
        match self.fs.read(&path) {
            Ok(bytes) => {
                self.aborted = crate::txn_index::parse(&bytes);
                let unused = bytes.len() - self.aborted.len() * crate::txn_index::ENTRY_BYTES;
                if unused > 0 {
                    tracing::warn!(path = %path.display(), unused_bytes = unused,
                        "aborted-transaction index damaged: rebuilding it from the log");
                }
                Ok(unused > 0)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens (creating if needed) the `.txnindex` file, so that appending an entry needs no
    /// new descriptor: called before an abort marker is written, since once the marker is in
    /// the log its entry must be too.
    pub fn open_txn_index(&mut self) -> io::Result<Arc<CountedFile>> {
        if let Some(f) = &self.txn_file {
            return Ok(f.clone());
        }
        let f = Arc::new(CountedFile::new(
            self.fs.open(&self.txn_index_path(), OpenMode::Create)?,
        ));
        self.txn_file = Some(f.clone());
        Ok(f)
    }

    /// Appends an aborted transaction to the index (the caller syncs with the segment).
    pub fn append_aborted(&mut self, entry: AbortedTxn) -> io::Result<()> {
        let file = self.open_txn_index()?;
        let at = (self.aborted.len() * crate::txn_index::ENTRY_BYTES) as u64;
        file.write_all_at(&entry.to_bytes(), at)?;
        file.set_len(at + crate::txn_index::ENTRY_BYTES as u64)?;
        self.aborted.push(entry);
        Ok(())
    }

    /// Replaces the `.txnindex` file with the in-memory entries (after recovery dropped or
    /// rebuilt some), atomically: a crash leaves the old file or the new one, never a
    /// truncated one whose lost entries nothing would rebuild.
    fn rewrite_txn_index(&mut self) -> io::Result<()> {
        let path = self.txn_index_path();
        self.txn_file = None;
        if self.aborted.is_empty() {
            let dir = self.fs.open_dir(&self.dir)?;
            remove_if_present(self.fs.as_ref(), &path)?;
            return dir.sync();
        }
        let bytes: Vec<u8> = self.aborted.iter().flat_map(|e| e.to_bytes()).collect();
        let name = segment_file_name(self.base_offset, "txnindex");
        crate::fs::write_file_atomically(self.fs.as_ref(), &self.dir, &name, &bytes)?;
        let file = self.fs.open(&path, OpenMode::Existing)?;
        self.txn_file = Some(Arc::new(CountedFile::new(file)));
        Ok(())
    }

    /// Creates an empty segment file (truncating any leftover with the same name).
    pub fn create(
        fs: &Arc<dyn Fs>,
        handles: &Arc<HandleCache>,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = fs.open(&path, OpenMode::Truncate)?;
        Ok(Self::with_file(
            fs,
            handles,
            dir,
            base_offset,
            path,
            file,
            now_ms,
        ))
    }

    fn with_file(
        fs: &Arc<dyn Fs>,
        handles: &Arc<HandleCache>,
        dir: &Path,
        base_offset: i64,
        path: PathBuf,
        file: Box<dyn FsFile>,
        now_ms: i64,
    ) -> Self {
        Self {
            fs: fs.clone(),
            base_offset,
            file: SegmentFile::opened(fs.clone(), handles.clone(), path, file),
            dir: dir.to_path_buf(),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            indexes_persisted: false,
            aborted: Vec::new(),
            txn_file: None,
        }
    }

    /// Opens an existing segment without reading its batches. `size` is the file length;
    /// offsets and timestamps are filled in by [`LogSegment::load_indexes`] or a scan.
    pub fn open(
        fs: &Arc<dyn Fs>,
        handles: &Arc<HandleCache>,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> io::Result<Self> {
        Self::open_file(
            fs,
            handles,
            dir,
            base_offset,
            &dir.join(segment_file_name(base_offset, "log")),
            now_ms,
        )
    }

    /// Opens the segment starting at `base_offset` from a file that is not (yet) at its
    /// usual name: the cleaner's rewritten segment before it is swapped in.
    pub fn open_file(
        fs: &Arc<dyn Fs>,
        handles: &Arc<HandleCache>,
        dir: &Path,
        base_offset: i64,
        path: &Path,
        now_ms: i64,
    ) -> io::Result<Self> {
        let file = fs.open(path, OpenMode::Existing)?;
        let size = file.size()?;
        let mut segment = Self::with_file(
            fs,
            handles,
            dir,
            base_offset,
            path.to_path_buf(),
            file,
            now_ms,
        );
        segment.size = size;
        Ok(segment)
    }

    /// Opens the segment at `base_offset` after a restart. A closed segment below the
    /// recovery point is trusted from its indexes, and so is the last segment after a clean
    /// shutdown if walking its headers from the last index entry lands exactly on the
    /// recovery point; any other segment is scanned batch by batch (its indexes rebuilt). A
    /// scan that stops early leaves the segment as it found it: the caller truncates.
    pub fn recover(
        fs: &Arc<dyn Fs>,
        handles: &Arc<HandleCache>,
        dir: &Path,
        base_offset: i64,
        at: RecoveryContext,
        now_ms: i64,
    ) -> io::Result<(Self, Recovered)> {
        let mut segment = Self::open(fs, handles, dir, base_offset, now_ms)?;
        let rp = at.recovery_point;
        let trusted = match at.next_base {
            Some(next) if next <= rp => {
                segment.load_indexes(next) && {
                    segment.next_offset = next;
                    true
                }
            }
            None if rp > i64::MIN => {
                segment.load_indexes(rp + 1)
                    && segment.walk_headers_from_index(at.interval_bytes).ok() == Some(segment.size)
                    && segment.next_offset == rp
            }
            _ => false,
        };
        if trusted {
            return Ok((segment, Recovered::Trusted));
        }
        let mut segment = Self::open(fs, handles, dir, base_offset, now_ms)?;
        // Compacted segments lie wholly below the marker; their batches must still end before
        // the next segment (or the marker, for the last one).
        let compacted = base_offset < at.gaps_below;
        let bound = compacted.then_some(ScanBounds {
            end_before: at.next_base,
            gaps_below: at.gaps_below,
        });
        let outcome = segment.scan_from(0, at.interval_bytes, bound)?;
        if compacted && outcome.corruption.is_none() {
            // A compacted segment may end in a gap: it still reaches the next one.
            segment.next_offset = at.next_base.unwrap_or(segment.next_offset);
        }
        let recovered = Recovered::Scanned {
            bytes: outcome.valid_end,
            corruption: outcome.corruption,
        };
        Ok((segment, recovered))
    }

    /// Loads both index files if they exist and are plausible. Returns false (and leaves the
    /// indexes empty) if either is missing or damaged, so the caller rebuilds them by scanning.
    fn load_indexes(&mut self, next_offset_bound: i64) -> bool {
        let relative_end = (next_offset_bound - self.base_offset).max(0) as u64;
        let size = self.size;
        let offset = self.load_index(&self.index_path(), |b| OffsetIndex::from_bytes(b, size));
        let time = self.load_index(&self.time_index_path(), |b| {
            TimeIndex::from_bytes(b, relative_end)
        });
        match (offset, time) {
            (Some(o), Some(t)) => {
                self.max_timestamp = t.max_timestamp().unwrap_or(-1);
                self.offset_index = o;
                self.time_index = t;
                self.indexes_persisted = true;
                true
            }
            _ => false,
        }
    }

    /// Reads one index file. A missing one (a crash before it was written) is rebuilt
    /// quietly; one that cannot be read or parsed is reported, then rebuilt.
    fn load_index<T>(
        &self,
        path: &Path,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Option<T> {
        let parsed = match self.fs.read(path) {
            Ok(bytes) => parse(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => Err(e.to_string()),
        };
        parsed
            .map_err(|reason| {
                tracing::warn!(path = %path.display(), %reason,
                    "index unusable: rebuilding it from the log");
            })
            .ok()
    }

    /// Writes both index files and syncs them. They are derived, so a failure here costs only
    /// a rebuild at the next start-up, but it is still reported.
    pub fn persist_indexes(&mut self) -> io::Result<()> {
        for file in self.write_indexes()? {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Writes both index files without syncing them, returning the files to sync (none if
    /// they were already current). Writing is quick and happens under the log's lock, so it
    /// never interleaves with a roll writing the same files; the sync can then wait outside
    /// the lock. Both descriptors are opened before either file is truncated.
    pub fn write_indexes(&mut self) -> io::Result<Vec<Box<dyn FsFile>>> {
        if self.indexes_persisted {
            return Ok(Vec::new());
        }
        let open = |path: PathBuf| self.fs.open(&path, OpenMode::Create);
        let files = [open(self.index_path())?, open(self.time_index_path())?];
        for (file, bytes) in files
            .iter()
            .zip([self.offset_index.to_bytes(), self.time_index.to_bytes()])
        {
            file.set_len(0)?;
            file.write_all_at(&bytes, 0)?;
        }
        self.indexes_persisted = true;
        Ok(files.into())
    }

    /// Drops all but a summary of the indexes from memory once their files hold them (see
    /// [`crate::index`]): for a closed segment, whose indexes no longer change.
    pub fn seal_indexes(&mut self, block: usize) {
        if self.indexes_persisted {
            let (fs, index, time) = (&self.fs, self.index_path(), self.time_index_path());
            self.offset_index.seal(fs, index, block);
            self.time_index.seal(fs, time, block);
        }
    }

    /// Records the index entries for a batch appended at `position`.
    fn track_batch(&mut self, position: u64, header: &BatchHeader, interval_bytes: u64) {
        self.offset_index.unseal();
        self.time_index.unseal();
        let relative = (header.base_offset - self.base_offset) as u32;
        if self.bytes_since_index_entry >= interval_bytes || self.offset_index.last().is_none() {
            self.offset_index.append(relative, position as u32);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_size() as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            let last_relative = (header.last_offset() - self.base_offset) as u32;
            self.time_index.append(header.max_timestamp, last_relative);
        }
        self.next_offset = header.next_offset();
        self.indexes_persisted = false;
    }

    /// Validates batches from `start` to the end of the file, tracking each valid one in the
    /// indexes. Stops at the first batch that is torn, corrupt or out of order. Without
    /// `bounds` every batch must start exactly where the previous one ended. With them (a
    /// compacted segment) a batch may also start after the previous one ended if it ends
    /// below `gaps_below` (and below `end_before`); one that starts where the previous one
    /// ended must end below `end_before`, wherever the gaps end.
    pub fn scan_from(
        &mut self,
        start: u64,
        interval_bytes: u64,
        bounds: Option<ScanBounds>,
    ) -> io::Result<ScanOutcome> {
        let file_len = self.file.get()?.size()?;
        let mut pos = start;
        let mut buf = Vec::new();
        let mut header_buf = [0u8; LOG_OVERHEAD];
        while pos < file_len {
            let left = file_len - pos;
            if left < LOG_OVERHEAD as u64 {
                let needed = LOG_OVERHEAD;
                let err = BatchError::Truncated {
                    needed,
                    available: left as usize,
                };
                return Ok(ScanOutcome {
                    valid_end: pos,
                    corruption: Some((pos, err)),
                });
            }
            self.file.get()?.read_exact_at(&mut header_buf, pos)?;
            let total = match BatchHeader::peek_size(&header_buf) {
                Ok((_, total)) if total as u64 <= left => total,
                Ok((_, total)) => {
                    let err = BatchError::Truncated {
                        needed: total,
                        available: left as usize,
                    };
                    return Ok(ScanOutcome {
                        valid_end: pos,
                        corruption: Some((pos, err)),
                    });
                }
                Err(err) => {
                    return Ok(ScanOutcome {
                        valid_end: pos,
                        corruption: Some((pos, err)),
                    })
                }
            };
            buf.resize(total, 0);
            self.file.get()?.read_exact_at(&mut buf, pos)?;
            let header = match BatchHeader::validate_stored(&buf) {
                Ok(h) => h,
                Err(err) => {
                    return Ok(ScanOutcome {
                        valid_end: pos,
                        corruption: Some((pos, err)),
                    })
                }
            };
            // Only the cleaner leaves gaps, and the CRC does not cover the base offset: a batch
            // that does not start where the previous one ended is damaged, unless it lies in
            // a compacted segment, below where the cleaner's gaps end, and does not go back.
            // (A batch that does start there is in place wherever it lies: a log truncated,
            // or emptied only in part before a crash, may append below or across the end of
            // gaps that a cleaner pass of the records it no longer holds wrote down.)
            let last = header
                .base_offset
                .checked_add(i64::from(header.last_offset_delta));
            let below = |end: Option<i64>| end.is_none_or(|end| last.is_some_and(|l| l < end));
            let in_place = match bounds {
                None => header.base_offset == self.next_offset,
                Some(b) if header.base_offset == self.next_offset => below(b.end_before),
                Some(b) => {
                    header.base_offset > self.next_offset
                        && below(b.end_before)
                        && below(Some(b.gaps_below))
                }
            };
            if !in_place {
                let err = BatchError::Corrupt("base offset does not follow the previous batch");
                return Ok(ScanOutcome {
                    valid_end: pos,
                    corruption: Some((pos, err)),
                });
            }
            self.track_batch(pos, &header, interval_bytes);
            pos += total as u64;
        }
        Ok(ScanOutcome {
            valid_end: pos,
            corruption: None,
        })
    }

    /// Walks batch headers from the last index entry to the end of the file, tracking each
    /// batch in the indexes, without reading record bodies or checking CRCs: for a segment
    /// the recovery point says is durable. Returns the position the walk ended at, which
    /// equals the file size for an intact segment.
    fn walk_headers_from_index(&mut self, interval_bytes: u64) -> io::Result<u64> {
        let (relative, mut pos) = self
            .offset_index
            .last()
            .map(|(r, p)| (r, u64::from(p)))
            .unwrap_or((0, 0));
        // Batches are contiguous: the first one walked starts at the indexed offset.
        let mut expected = self.base_offset + i64::from(relative);
        let mut header = [0u8; BATCH_HEADER_SIZE];
        while pos + BATCH_HEADER_SIZE as u64 <= self.size {
            self.file.get()?.read_exact_at(&mut header, pos)?;
            let parsed = BatchHeader::parse(&header)
                .and_then(|h| BatchHeader::peek_size(&header).map(|_| h))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if parsed.base_offset != expected || pos + parsed.total_size() as u64 > self.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "batch out of place",
                ));
            }
            self.track_batch(pos, &parsed, interval_bytes);
            expected = parsed.next_offset();
            pos += parsed.total_size() as u64;
        }
        Ok(pos)
    }

    /// Cuts the segment at `position` (a batch boundary) and drops index entries past it.
    pub fn truncate_to(&mut self, position: u64) -> io::Result<()> {
        self.file.get()?.set_len(position)?;
        self.size = position;
        self.offset_index.truncate_to_position(position as u32);
        let relative_end = self.relative(self.next_offset);
        self.time_index.truncate_to_relative_offset(relative_end);
        self.indexes_persisted = false;
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn delete_files(&self) -> io::Result<()> {
        for path in [
            self.log_path(),
            self.index_path(),
            self.time_index_path(),
            self.txn_index_path(),
        ] {
            remove_if_present(self.fs.as_ref(), &path)?;
        }
        Ok(())
    }
}
