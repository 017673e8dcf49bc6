//! `UnifiedLog`: one partition's ordered segments, with append, read, group commit and
//! recovery.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_records::{
    patch_base_offset, patch_partition_leader_epoch, set_log_append_time, BatchHeader, BatchIter,
    BATCH_HEADER_SIZE, LOG_OVERHEAD,
};

use crate::config::{LogConfig, TimestampPolicy};
use crate::producer_state::{ProducerStateManager, SequenceCheck, Snapshot};
use crate::segment::{parse_segment_file_name, LogSegment, HEADER_PEEK};
use crate::txn_index::AbortedTxn;
use crate::{CountedFile, Durability, Fs, RealFs, StorageError};

/// The most a single batch may decompress to when the broker must look inside it
/// (ListOffsets by timestamp). Larger batches are refused rather than inflated.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// The partition leader epoch [`UnifiedLog::append`] stamps, for tools and tests that write a
/// log directly. The broker's partition layer owns the real epoch and passes it to
/// [`UnifiedLog::append_in_epoch`].
pub const LEADER_EPOCH: i32 = 0;

/// The bytes of a batch the broker rewrites on append: base offset, batch length (unchanged)
/// and partition leader epoch.
const PATCHED_PREFIX: usize = 16;

/// The default of Kafka's `producer.id.expiration.ms`: producer state idle this long is
/// forgotten.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";

/// A transaction marker is one small record; a stored control batch larger than this is
/// damage, not a marker.
const MAX_CONTROL_BATCH_BYTES: usize = 64 << 10;

/// State shared by every log in one data directory.
#[derive(Debug)]
pub struct DirState {
    offline: AtomicBool,
    pub(crate) fs: Arc<dyn Fs>,
    /// Bounds the segment files its logs keep open.
    pub(crate) handles: Arc<crate::HandleCache>,
    /// `producer.id.expiration.ms`, applied when producer state is checkpointed.
    producer_id_expiration_ms: AtomicI64,
    /// Paces the log line for operations that failed for want of a descriptor.
    descriptor_log: crate::EveryInterval,
    /// Entries per block of a closed segment's index (see [`crate::index`]).
    index_block_entries: std::sync::atomic::AtomicUsize,
}

/// Operations refused for want of a file descriptor are logged at most this often.
pub const DESCRIPTOR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl DirState {
    /// The state of a directory on the real file system, syncing through `durability`.
    pub fn new(durability: Arc<dyn Durability>) -> Self {
        Self::with_fs(Arc::new(RealFs::new(durability)))
    }

    /// The state of a directory on `fs`.
    pub fn with_fs(fs: Arc<dyn Fs>) -> Self {
        Self {
            offline: AtomicBool::new(false),
            fs,
            handles: Arc::new(crate::HandleCache::default()),
            producer_id_expiration_ms: AtomicI64::new(PRODUCER_ID_EXPIRATION_MS),
            descriptor_log: crate::EveryInterval::new(DESCRIPTOR_LOG_INTERVAL),
            index_block_entries: std::sync::atomic::AtomicUsize::new(
                crate::DEFAULT_INDEX_BLOCK_ENTRIES,
            ),
        }
    }

    /// Sets how many index entries of a closed segment share one entry kept in memory.
    pub fn set_index_block_entries(&self, entries: usize) {
        self.index_block_entries
            .store(entries.max(1), Ordering::Relaxed);
    }

    pub(crate) fn index_block_entries(&self) -> usize {
        self.index_block_entries.load(Ordering::Relaxed)
    }

    /// Bounds the segment files the directory's logs keep open at once (others are closed
    /// and reopened on use).
    pub fn set_open_segment_files_max(&self, max: usize) {
        self.handles.set_capacity(max);
    }

    /// Segment files open now, and the bound.
    pub fn open_segment_files(&self) -> (usize, usize) {
        (self.handles.open(), self.handles.capacity())
    }

    /// Sets `producer.id.expiration.ms` for every log of the directory.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.producer_id_expiration_ms.store(ms, Ordering::Relaxed);
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    /// Takes the directory offline after a failed write or sync. Never undone in-process: the
    /// page cache may have dropped the data, so the only safe path is a restart and recovery.
    ///
    /// Running out of descriptors is the exception: only opening a file fails that way, every
    /// caller opens what it needs before it changes anything, so nothing was lost and the
    /// operation can be retried once descriptors are free. It is reported, at most once per
    /// [`DESCRIPTOR_LOG_INTERVAL`], and the directory stays online.
    pub(crate) fn fail(&self, what: &str, err: &io::Error) -> StorageError {
        if crate::is_out_of_descriptors(err) {
            if let Some(suppressed) = self.descriptor_log.due() {
                tracing::error!(error = %err, suppressed,
                    "{what} failed: out of file descriptors; the directory stays online");
            }
            return StorageError::OutOfDescriptors(format!("{what}: {err}"));
        }
        if !self.offline.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %err, "{what} failed: log directory taken offline");
        }
        StorageError::Offline
    }

    pub(crate) fn check(&self) -> Result<(), StorageError> {
        if self.is_offline() {
            Err(StorageError::Offline)
        } else {
            Ok(())
        }
    }
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker-assigned timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// An idempotent retry of batches already in the log: nothing was written.
    pub duplicate: bool,
}

/// What one retention pass over a log did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

/// Result of a read: whole stored batches, never past the read's end offset (nor, for a
/// read_committed read, past the last stable offset). Storage knows where a log ends, not
/// what is committed: the partition layer bounds reads by its high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    pub records: Vec<u8>,
    /// Where the readable log ended: the log end offset, or the bound the caller gave.
    pub end_offset: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For read_committed: the aborted transactions with records in the range returned,
    /// ordered by first offset, for the client to filter.
    pub aborted: Vec<AbortedTxn>,
}

/// Whole stored batches still in their segment file: what a read found, not yet read. The
/// file stays readable while the slice is held, even if retention or the cleaner removes or
/// replaces the segment meanwhile.
#[derive(Debug, Clone)]
pub struct FileSlice {
    file: Arc<CountedFile>,
    position: u64,
    len: usize,
}

impl FileSlice {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `len` bytes of the slice from `offset` within it.
    pub fn read_at(&self, offset: usize, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read past the end of a file slice",
            ));
        }
        self.file.read_vec_at(len, self.position + offset as u64)
    }

    /// The whole slice.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        self.read_at(0, self.len)
    }

    /// The segment file's descriptor and the slice's position in it, for sending the slice
    /// without reading it (`sendfile`); `None` off a real file system. The descriptor stays
    /// open as long as the slice.
    pub fn fd_and_position(&self) -> Option<(std::os::fd::RawFd, u64)> {
        self.file.raw_fd().map(|fd| (fd, self.position))
    }
}

/// Result of [`UnifiedLog::read_slice`]: like [`ReadOutcome`], with the records left in the
/// file (`None` when there are none).
#[derive(Debug, Clone)]
pub struct SliceOutcome {
    pub records: Option<FileSlice>,
    /// Where the readable log ended: the log end offset, or the bound the caller gave.
    pub end_offset: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub aborted: Vec<AbortedTxn>,
}

/// A batch header as a read walks past it.
#[derive(Debug, Clone, Copy)]
struct WalkedBatch {
    pos: u64,
    base: i64,
    delta: i32,
    size: u64,
}

/// Steps over stored batches by their headers, reading only the first bytes of each.
struct HeaderWalk<'a> {
    file: &'a CountedFile,
    end: u64,
}

impl<'a> HeaderWalk<'a> {
    fn new(file: &'a CountedFile, end: u64) -> Self {
        Self { file, end }
    }

    /// The first batch from `pos` on for which `stop` holds, with its position; `None` if the
    /// walk reaches `end` first.
    fn find(
        &mut self,
        mut pos: u64,
        stop: impl Fn(&WalkedBatch) -> bool,
    ) -> Result<Option<(u64, WalkedBatch)>, StorageError> {
        let mut header = [0u8; HEADER_PEEK];
        while pos + HEADER_PEEK as u64 <= self.end {
            self.file.read_exact_at(&mut header, pos)?;
            let length = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            if length < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32 {
                return Err(StorageError::Corrupt(format!("bad batch length at {pos}")));
            }
            let batch = WalkedBatch {
                pos,
                base: i64::from_be_bytes(header[..8].try_into().expect("8 bytes")),
                delta: i32::from_be_bytes(header[23..27].try_into().expect("4 bytes")),
                size: LOG_OVERHEAD as u64 + length as u64,
            };
            if stop(&batch) {
                return Ok(Some((pos, batch)));
            }
            pos += batch.size;
        }
        Ok(None)
    }
}

/// Which records a read may return (Kafka's `isolation_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything up to the read's end offset, aborted records included.
    ReadUncommitted,
    /// Up to the last stable offset, with the list of aborted transactions in range.
    ReadCommitted,
}

#[derive(Debug)]
struct LogInner {
    segments: BTreeMap<i64, LogSegment>,
    config: LogConfig,
    log_start_offset: i64,
    log_end_offset: i64,
    /// A segment file was created since the directory was last synced.
    dir_dirty: bool,
    producers: ProducerStateManager,
    /// The log end offset the last producer snapshot covered; -1 before the first.
    checkpointed_offset: i64,
    /// Offsets below this have been compacted: the cleaner's next dirty offset.
    cleaner_checkpoint: i64,
}

impl LogInner {
    fn active(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
}

/// One partition's log.
#[derive(Debug)]
pub struct UnifiedLog {
    dir: PathBuf,
    inner: Mutex<LogInner>,
    /// Serialises syncs; waiters that queue behind one sync are covered by the next.
    flush_lock: Mutex<()>,
    /// Every offset below this is durable: the recovery point.
    flushed_offset: AtomicI64,
    dir_state: Arc<DirState>,
    /// Bytes validated batch by batch when the log was opened (0 after a clean shutdown).
    recovery_scanned_bytes: u64,
    /// Set when the topic is deleted: the directory is going away, and nothing may write to
    /// it (or to a new topic's directory of the same name) again.
    closed: AtomicBool,
}

mod cleaner;
pub use cleaner::{CleanStats, CleanerConfig, Throttle};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock is a broken invariant; refuse to continue with
    // possibly half-updated state.
    m.lock().expect("log lock poisoned")
}

impl UnifiedLog {
    /// Opens (or creates) the log in `dir`, recovering everything past `recovery_point`:
    /// every batch from there on is validated, a torn or corrupt tail is truncated, later
    /// segments are deleted, and indexes are rebuilt.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: Option<i64>,
        dir_state: Arc<DirState>,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        let fs = dir_state.fs.clone();
        fs.create_dir_all(dir)?;
        let mut bases = Vec::new();
        for name in fs.read_dir(dir)? {
            if let Some(base) = parse_segment_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(cleaner::CLEANED_SUFFIX) {
                // A rewrite the cleaner did not finish: the original segment is intact.
                fs.remove_file(&dir.join(&name))?;
            } else if name.ends_with(".index")
                || name.ends_with(".timeindex")
                || name.ends_with(".txnindex")
            {
                let stem = name.split('.').next().unwrap_or_default();
                if !fs.exists(&dir.join(format!("{stem}.log"))) {
                    fs.remove_file(&dir.join(&name))?;
                }
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut dir_dirty = false;
        // A new log holds nothing to make durable yet: its empty segment and directory are
        // synced by the first flush (`dir_dirty`), so creating thousands of partitions does
        // not cost two syncs each. (The data directory's entry for it is the creator's.)
        let fresh = bases.is_empty();
        if fresh {
            let mut segment = LogSegment::create(&fs, &dir_state.handles, dir, 0, now_ms)?;
            // Empty indexes need no files: a restart rebuilds them from an empty segment.
            segment.indexes_persisted = true;
            segments.insert(0, segment);
            dir_dirty = true;
        }
        let rp = recovery_point.unwrap_or(i64::MIN);
        let interval = config.index_interval_bytes;
        // Segments wholly below this may have been compacted, leaving offset gaps.
        let (cleaner_checkpoint, gaps_below) = cleaner::read_cleaner_checkpoint(fs.as_ref(), dir);
        let mut recovered_any = false;
        let mut scanned = 0u64;
        for (i, &base) in bases.iter().enumerate() {
            let mut segment = LogSegment::open(&fs, &dir_state.handles, dir, base, now_ms)?;
            let next_base = bases.get(i + 1).copied();
            let below_rp = next_base.is_some_and(|nb| nb <= rp);
            let trusted = if below_rp {
                segment.load_indexes(next_base.unwrap_or(i64::MAX)) && {
                    segment.next_offset = next_base.unwrap_or(base);
                    true
                }
            } else if next_base.is_none() && rp > i64::MIN {
                // The active segment after a clean shutdown: its indexes were persisted and
                // the walk from the last index entry must land exactly on the recovery point.
                segment.load_indexes(rp + 1)
                    && segment.walk_headers_from_index(interval).ok() == Some(segment.size)
                    && segment.next_offset == rp
            } else {
                false
            };
            if !trusted {
                segment = LogSegment::open(&fs, &dir_state.handles, dir, base, now_ms)?;
                // Compacted segments lie wholly below the marker; their batches must still end
                // before the next segment (or the marker, for the last one).
                let compacted = base < gaps_below;
                let bound =
                    compacted.then(|| next_base.map_or(gaps_below, |nb| nb.min(gaps_below)));
                let outcome = segment.scan_from(0, interval, bound)?;
                if compacted && outcome.corruption.is_none() {
                    // A compacted segment may end in a gap: it still reaches the next one.
                    segment.next_offset = next_base.unwrap_or(segment.next_offset);
                }
                recovered_any = true;
                scanned += outcome.valid_end;
                if let Some((pos, reason)) = outcome.corruption {
                    let file_len = segment.file.get()?.size()?;
                    tracing::warn!(
                        log = %dir.display(),
                        segment = base,
                        position = pos,
                        truncated_bytes = file_len - pos,
                        dropped_segments = bases.len() - i - 1,
                        %reason,
                        "recovery truncated the log"
                    );
                    segment.truncate_to(outcome.valid_end)?;
                    let relative_end = (segment.next_offset - base) as u32;
                    segment.time_index.truncate_to_relative_offset(relative_end);
                    for &later in &bases[i + 1..] {
                        LogSegment::open(&fs, &dir_state.handles, dir, later, now_ms)?
                            .delete_files()?;
                        // The unlinks must be durable before new data reuses those offsets.
                        dir_dirty = true;
                    }
                    segments.insert(base, segment);
                    break;
                }
            }
            if next_base.is_some() {
                // A closed segment keeps only a summary of its indexes in memory, so that
                // recovery holds one segment's indexes at a time, not the log's.
                if !segment.indexes_persisted {
                    if let Err(e) = segment.persist_indexes() {
                        tracing::warn!(log = %dir.display(), segment = base, error = %e,
                            "rebuilt indexes not written: they stay in memory");
                    }
                }
                segment.seal_indexes(dir_state.index_block_entries());
            }
            segments.insert(base, segment);
        }
        let last = segments.values().next_back().expect("at least one segment");
        let log_end_offset = last.next_offset;
        let log_start_offset = *segments.keys().next().expect("at least one segment");
        let mut txn_index_damaged = false;
        for segment in segments.values_mut() {
            txn_index_damaged |= segment.load_txn_index()?;
        }
        let producers = load_producer_state(
            txn_index_damaged,
            fs.as_ref(),
            dir,
            &mut segments,
            log_start_offset,
            log_end_offset,
            now_ms,
        )?;
        let log = Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(LogInner {
                segments,
                config,
                log_start_offset,
                log_end_offset,
                // Whether this directory's entries are durable is unknown: a process before
                // this one may have created a segment and stopped before syncing it (a fresh
                // log leaves that to its first flush). The first flush syncs it.
                dir_dirty: true,
                producers,
                // A new, empty log has nothing for a checkpoint to write until its first
                // append, so ten thousand new topics cost a shutdown nothing.
                checkpointed_offset: if fresh { 0 } else { -1 },
                cleaner_checkpoint,
            }),
            flush_lock: Mutex::new(()),
            flushed_offset: AtomicI64::new(if recovered_any {
                i64::MIN
            } else {
                log_end_offset
            }),
            dir_state,
            recovery_scanned_bytes: scanned,
            closed: AtomicBool::new(false),
        };
        if recovered_any || (dir_dirty && !fresh) {
            // What survived recovery may still sit only in the page cache.
            log.flush_to(i64::MAX)?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StorageError::UnknownTopic(
                "the partition was deleted".into(),
            ));
        }
        self.dir_state.check()
    }

    /// Stops all further appends, reads and flushes, waiting for any in progress: called when
    /// the topic is deleted, before its directory is removed.
    pub fn close(&self) {
        let _flush = lock(&self.flush_lock);
        let _inner = lock(&self.inner);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// How many bytes opening this log had to validate batch by batch.
    pub fn recovery_scanned_bytes(&self) -> u64 {
        self.recovery_scanned_bytes
    }

    pub fn log_end_offset(&self) -> i64 {
        lock(&self.inner).log_end_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        lock(&self.inner).log_start_offset
    }

    /// Everything below this offset is durable.
    pub fn recovery_point(&self) -> i64 {
        self.flushed_offset.load(Ordering::SeqCst)
    }

    pub fn config(&self) -> LogConfig {
        lock(&self.inner).config.clone()
    }

    pub fn segment_count(&self) -> usize {
        lock(&self.inner).segments.len()
    }

    /// Index entries held in memory and in the indexes altogether (offset and time index
    /// entries together): closed segments keep a summary only.
    pub fn index_entries(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        inner.segments.values().fold((0, 0), |(resident, all), s| {
            (
                resident + s.offset_index.resident_entries() + s.time_index.resident_entries(),
                all + s.offset_index.len() + s.time_index.len(),
            )
        })
    }

    /// Validates and appends the batches in `records` (as a client sent them), assigning
    /// offsets from the log end. Either every batch is appended or none is.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendOutcome, StorageError> {
        self.append_in_epoch(records, LEADER_EPOCH, now_ms)
    }

    /// [`UnifiedLog::append`], stamping `leader_epoch` on every batch.
    pub fn append_in_epoch(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.check_open()?;
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        // A topic whose compression.type names a codec stores its batches in that codec: the
        // one case where produce rewrites a client batch (Kafka does the same).
        let target = lock(&self.inner).config.compression_type;
        let rewritten;
        let records = match target {
            Some(codec) => {
                rewritten = recompress_all(records, codec)?;
                rewritten.as_deref().unwrap_or(records)
            }
            None => records,
        };
        let mut headers = Vec::new();
        for batch in BatchIter::new(records) {
            let header = BatchHeader::validate(batch?)?;
            if header.is_control() {
                // Transaction markers are the coordinator's to write.
                return Err(StorageError::InvalidRecord(
                    "control batches are not accepted from clients".into(),
                ));
            }
            if header.is_transactional() && header.producer_id < 0 {
                return Err(StorageError::InvalidRecord(
                    "a transactional batch needs a producer id".into(),
                ));
            }
            headers.push(header);
        }
        self.append_checked(records, headers, None, leader_epoch, now_ms)
    }

    /// Appends a transaction marker for producer `producer_id`: its open transaction on this
    /// partition commits or aborts. Markers come from the transaction coordinator only.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.append_marker_in_epoch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            LEADER_EPOCH,
            now_ms,
        )
    }

    /// [`UnifiedLog::append_marker`], stamping `leader_epoch`.
    pub fn append_marker_in_epoch(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.check_open()?;
        let batch = sluice_records::marker_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
        );
        let header = BatchHeader::validate_stored(&batch)?;
        self.append_checked(&batch, vec![header], Some(commit), leader_epoch, now_ms)
    }

    /// Appends validated batches; `marker` is `Some(commit)` for a transaction marker.
    fn append_checked(
        &self,
        records: &[u8],
        mut headers: Vec<BatchHeader>,
        marker: Option<bool>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        // One copy, so base offsets can be patched in place; never a re-encode.
        let count: i64 = headers
            .iter()
            .map(|h| i64::from(h.last_offset_delta) + 1)
            .sum();
        if count > i64::from(i32::MAX) {
            // Relative offsets inside a segment are 32-bit; one append must fit a segment.
            return Err(StorageError::InvalidRecord(format!(
                "one append may not span {count} offsets"
            )));
        }
        let mut inner = lock(&self.inner);
        // Re-check under the lock: a write that failed while we waited took the directory
        // offline, and nothing may be appended (or acknowledged) after that.
        self.check_open()?;
        let config = &inner.config;
        for h in &headers {
            if h.total_size() > config.max_message_bytes {
                return Err(StorageError::MessageTooLarge {
                    size: h.total_size(),
                    max: config.max_message_bytes,
                });
            }
        }
        if config.is_compacted() && marker.is_none() {
            // A compacted topic is a table: every record needs a key (Kafka refuses too, and
            // names each keyless record, KIP-467). The one case where produce looks inside
            // (compressed) batches.
            for batch in BatchIter::new(records) {
                let mut keyless = Vec::new();
                let mut index = 0i32;
                sluice_records::compact::for_each_record(
                    batch?,
                    MAX_DECOMPRESSED_BATCH_BYTES,
                    |r| {
                        if r.key.is_none() {
                            keyless.push(index);
                        }
                        index += 1;
                    },
                )?;
                if !keyless.is_empty() {
                    return Err(StorageError::RecordErrors {
                        message: "Compacted topic cannot accept message without key".into(),
                        records: keyless,
                    });
                }
            }
        }
        let log_append =
            config.timestamp_type == TimestampPolicy::LogAppendTime && marker.is_none();
        let check = match &headers[..] {
            [h] if marker.is_some() => inner
                .producers
                .check_marker(h.producer_id, h.producer_epoch)
                .map(|()| SequenceCheck::Append)?,
            _ => inner.producers.check_append(&headers)?,
        };
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = check
        {
            // A retry of a batch we already have: answer with where it went, write nothing.
            return Ok(AppendOutcome {
                base_offset,
                last_offset,
                log_append_time: -1,
                log_start_offset: inner.log_start_offset,
                duplicate: true,
            });
        }
        let base_offset = inner.log_end_offset;
        let count: i64 = headers
            .iter()
            .map(|h| i64::from(h.last_offset_delta) + 1)
            .sum();
        self.maybe_roll(&mut inner, records.len() as u64, count, now_ms)?;
        if marker == Some(false) {
            // An abort marker's index entry must not fail for want of a descriptor once the
            // marker is written: open the index first.
            inner
                .active()
                .open_txn_index()
                .map_err(|e| self.dir_state.fail("transaction index open", &e))?;
        }

        // The batches go to disk as the client sent them, except the first 16 bytes of each
        // (base offset, length, leader epoch), which are written from a patched copy. Only a
        // LogAppendTime batch, whose CRC changes, is copied whole. No other copy is made.
        let mut prefixes: Vec<[u8; PATCHED_PREFIX]> = Vec::with_capacity(headers.len());
        let mut stamped: Vec<Vec<u8>> = Vec::new();
        let mut offset = base_offset;
        let mut pos = 0usize;
        for h in headers.iter_mut() {
            let original = &records[pos..pos + h.total_size()];
            if log_append {
                let mut bytes = original.to_vec();
                patch_base_offset(&mut bytes, offset);
                patch_partition_leader_epoch(&mut bytes, leader_epoch);
                set_log_append_time(&mut bytes, now_ms);
                h.max_timestamp = now_ms;
                stamped.push(bytes);
            } else {
                let mut prefix = [0u8; PATCHED_PREFIX];
                prefix.copy_from_slice(&original[..PATCHED_PREFIX]);
                patch_base_offset(&mut prefix, offset);
                patch_partition_leader_epoch(&mut prefix, leader_epoch);
                prefixes.push(prefix);
            }
            h.base_offset = offset;
            h.partition_leader_epoch = leader_epoch;
            offset = h.next_offset();
            pos += h.total_size();
        }
        let mut slices = Vec::with_capacity(headers.len() * 2);
        if log_append {
            slices.extend(stamped.iter().map(|b| IoSlice::new(b)));
        } else {
            let mut pos = 0usize;
            for (h, prefix) in headers.iter().zip(&prefixes) {
                slices.push(IoSlice::new(prefix));
                slices.push(IoSlice::new(
                    &records[pos + PATCHED_PREFIX..pos + h.total_size()],
                ));
                pos += h.total_size();
            }
        }
        let interval = inner.config.index_interval_bytes;
        let active = inner.active();
        let start = active.size;
        let written = active
            .file
            .get()
            .and_then(|file| file.write_vectored_at(&mut slices, start));
        if let Err(e) = written {
            // A short write may have left a partial batch; recovery will cut it.
            return Err(self.dir_state.fail("segment write", &e));
        }
        let mut at = start;
        for h in &headers {
            active.track_batch(at, h, interval);
            at += h.total_size() as u64;
        }
        active.size = at;
        inner.log_end_offset = offset;
        if let Some(commit) = marker {
            if let Some(aborted) = inner.producers.record_marker(&headers[0], commit, now_ms) {
                // Synced with the segment by the flush that makes the marker durable.
                if let Err(e) = inner.active().append_aborted(aborted) {
                    return Err(self.dir_state.fail("transaction index write", &e));
                }
            }
        } else {
            for h in &headers {
                inner.producers.record(h, now_ms);
            }
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset: offset - 1,
            log_append_time: if log_append { now_ms } else { -1 },
            log_start_offset: inner.log_start_offset,
            duplicate: false,
        })
    }

    fn maybe_roll(
        &self,
        inner: &mut LogInner,
        bytes: u64,
        records: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let (segment_bytes, segment_ms) = (inner.config.segment_bytes, inner.config.segment_ms);
        let index_bytes = inner.config.segment_index_bytes;
        let leo = inner.log_end_offset;
        let active = inner.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + bytes > segment_bytes
            || active.offset_index.len() * crate::index::OFFSET_ENTRY_SIZE >= index_bytes
            || active.time_index.len() * crate::index::TIME_ENTRY_SIZE >= index_bytes;
        let old = now_ms - active.created_ms > segment_ms;
        let offsets_overflow = leo + records - active.base_offset > i64::from(i32::MAX);
        let position_overflow = active.size + bytes > u64::from(u32::MAX);
        if !(full || old || offsets_overflow || position_overflow) {
            return Ok(());
        }
        self.roll(inner, now_ms)
    }

    /// Makes every offset below `target` durable, sharing one sync among all callers that
    /// arrive while a sync is in progress (group commit). A failed sync takes the directory
    /// offline.
    pub fn flush_to(&self, target: i64) -> Result<(), StorageError> {
        if self.flushed_offset.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _flush = lock(&self.flush_lock);
        if self.flushed_offset.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        self.sync_appended()
    }

    /// Syncs everything appended so far. The caller holds `flush_lock`.
    fn sync_appended(&self) -> Result<(), StorageError> {
        self.check_open()?;
        let flushed = self.flushed_offset.load(Ordering::SeqCst);
        let (end, files, dir_dirty) = {
            let mut inner = lock(&self.inner);
            let first = inner
                .segments
                .range(..=flushed)
                .next_back()
                .map(|(b, _)| *b);
            // Aborted-transaction indexes are synced with their segments, so an entry is
            // durable exactly when its marker is.
            let files: Vec<(Arc<crate::SegmentFile>, Option<Arc<CountedFile>>)> = inner
                .segments
                .range(first.unwrap_or(i64::MIN)..)
                .map(|(_, s)| (s.file.clone(), s.txn_file.clone()))
                .collect();
            let dirty = std::mem::take(&mut inner.dir_dirty);
            (inner.log_end_offset, files, dirty)
        };
        let dir_handle = if dir_dirty {
            match self.dir_state.fs.open_dir(&self.dir) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    // Nothing synced yet: the next flush tries again.
                    lock(&self.inner).dir_dirty = true;
                    return Err(self.dir_state.fail("directory open", &e));
                }
            }
        } else {
            None
        };
        for (segment, txn_index) in files {
            // A segment file the handle cache closed is reopened to be synced: on Linux an
            // fsync through any descriptor covers the file's dirty pages.
            segment
                .get()
                .and_then(|file| file.sync_data())
                .map_err(|e| self.dir_state.fail("fsync", &e))?;
            if let Some(file) = txn_index {
                file.sync_data()
                    .map_err(|e| self.dir_state.fail("fsync", &e))?;
            }
        }
        if let Some(handle) = dir_handle {
            handle
                .sync()
                .map_err(|e| self.dir_state.fail("directory fsync", &e))?;
        }
        self.flushed_offset.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the log's configuration (a dynamic topic config change); it applies from the
    /// next append, roll or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        lock(&self.inner).config = config;
    }

    /// Raises the log start offset to a checkpointed value found at start-up (DeleteRecords
    /// moves it inside a segment, where the segment files alone cannot show it).
    pub fn restore_log_start_offset(&self, offset: i64) {
        let mut inner = lock(&self.inner);
        let offset = offset.min(inner.log_end_offset);
        if offset > inner.log_start_offset {
            inner.log_start_offset = offset;
        }
    }

    /// Deletes whole segments that retention no longer keeps, oldest first, when
    /// `cleanup.policy` includes `delete`:
    /// - segments whose largest timestamp is more than `retention.ms` old (an expired active
    ///   segment is rolled first so that it can go, as Kafka does);
    /// - then, while the log is larger than `retention.bytes`, the oldest closed segments
    ///   whose removal keeps it at or above that size.
    ///
    /// The log start offset moves to the first remaining offset.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome, StorageError> {
        self.check_open()?;
        let mut inner = lock(&self.inner);
        // Deleted while we waited for the lock: its directory may already be gone.
        self.check_open()?;
        let config = inner.config.clone();
        let mut outcome = RetentionOutcome::default();
        if !config
            .cleanup_policy
            .split(',')
            .any(|p| p.trim() == "delete")
        {
            outcome.log_start_offset = inner.log_start_offset;
            return Ok(outcome);
        }
        let bases: Vec<i64> = inner.segments.keys().copied().collect();
        let active_base = *bases.last().expect("a log always has a segment");
        let expired = |seg: &LogSegment| {
            // A closed segment the cleaner emptied holds nothing to keep.
            if seg.size == 0 && seg.base_offset != active_base {
                return config.retention_ms >= 0;
            }
            // A segment without timestamps ages from when it was created or opened.
            let newest = if seg.max_timestamp >= 0 {
                seg.max_timestamp
            } else {
                seg.created_ms
            };
            config.retention_ms >= 0 && seg.size > 0 && now_ms - newest > config.retention_ms
        };
        let mut doomed: Vec<i64> = bases
            .iter()
            .copied()
            .take_while(|b| expired(&inner.segments[b]))
            .collect();
        if doomed.last() == Some(&active_base) {
            self.roll(&mut inner, now_ms)?;
        }
        if config.retention_bytes >= 0 {
            let kept: u64 = bases[doomed.len()..]
                .iter()
                .map(|b| inner.segments[b].size)
                .sum();
            let mut excess = kept as i64 - config.retention_bytes;
            // Closed segments only: when everything expired above, there are none left.
            let closed_end = (bases.len() - 1).max(doomed.len());
            for b in &bases[doomed.len()..closed_end] {
                let size = inner.segments[b].size as i64;
                if excess - size < 0 {
                    break;
                }
                excess -= size;
                doomed.push(*b);
            }
        }
        for b in doomed {
            let segment = inner.segments.remove(&b).expect("listed above");
            outcome.deleted_segments += 1;
            outcome.deleted_bytes += segment.size;
            segment
                .delete_files()
                .map_err(|e| self.dir_state.fail("segment delete", &e))?;
        }
        let first = *inner
            .segments
            .keys()
            .next()
            .expect("the active segment remains");
        inner.log_start_offset = inner.log_start_offset.max(first);
        outcome.log_start_offset = inner.log_start_offset;
        Ok(outcome)
    }

    /// DeleteRecords: makes `offset` the log start offset (the log end offset for -1), deleting
    /// the segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        self.check_open()?;
        let mut inner = lock(&self.inner);
        self.check_open()?;
        if !inner.config.is_deleted_by_retention() {
            // As Kafka: a log that only compaction may shorten keeps its start.
            return Err(StorageError::PolicyViolation(
                "DeleteRecords needs cleanup.policy to include delete".into(),
            ));
        }
        let end = inner.log_end_offset;
        let target = if offset == -1 { end } else { offset };
        if target < 0 || target > end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: inner.log_start_offset,
                log_end: end,
            });
        }
        if target <= inner.log_start_offset {
            return Ok(inner.log_start_offset);
        }
        let bases: Vec<i64> = inner.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            if pair[1] > target {
                break;
            }
            let segment = inner.segments.remove(&pair[0]).expect("listed above");
            segment
                .delete_files()
                .map_err(|e| self.dir_state.fail("segment delete", &e))?;
        }
        inner.log_start_offset = target;
        Ok(target)
    }

    /// Closes the active segment (persisting its indexes) and starts a new, empty one at the
    /// log end offset.
    fn roll(&self, inner: &mut LogInner, now_ms: i64) -> Result<(), StorageError> {
        let leo = inner.log_end_offset;
        if inner.active().base_offset == leo {
            return Ok(());
        }
        inner
            .active()
            .persist_indexes()
            .map_err(|e| self.dir_state.fail("index write", &e))?;
        let block = self.dir_state.index_block_entries();
        inner.active().seal_indexes(block);
        let segment = LogSegment::create(
            &self.dir_state.fs,
            &self.dir_state.handles,
            &self.dir,
            leo,
            now_ms,
        )
        .map_err(|e| {
            if crate::is_out_of_descriptors(&e) {
                // Reported (once per interval), and the directory stays online.
                self.dir_state.fail("segment create", &e)
            } else {
                e.into()
            }
        })?;
        inner.segments.insert(leo, segment);
        inner.dir_dirty = true;
        Ok(())
    }

    /// Total bytes of the log's segment files.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.inner).segments.values().map(|s| s.size).sum()
    }

    /// Flushes everything, persists the active segment's indexes and snapshots producer
    /// state: for clean shutdown and periodic checkpoints. Holds `flush_lock` throughout, so
    /// [`UnifiedLog::close`] cannot remove the directory underneath it.
    pub fn flush_all(&self, now_ms: i64) -> Result<(), StorageError> {
        let _flush = lock(&self.flush_lock);
        if self.closed.load(Ordering::SeqCst) {
            return Ok(()); // deleted: nothing left to make durable
        }
        {
            let mut inner = lock(&self.inner);
            let leo = inner.log_end_offset;
            let unchanged = inner.checkpointed_offset == leo && inner.active().indexes_persisted;
            if unchanged && self.recovery_point() >= leo {
                // Nothing appended since the last checkpoint: no sync, no file writes.
                return Ok(());
            }
        }
        self.sync_appended()?;
        let (snapshot, covered, index_files) = {
            let mut inner = lock(&self.inner);
            let index_files = inner
                .active()
                .write_indexes()
                .map_err(|e| self.dir_state.fail("index write", &e))?;
            let expiration = self
                .dir_state
                .producer_id_expiration_ms
                .load(Ordering::Relaxed);
            inner.producers.expire(now_ms, expiration);
            let leo = inner.log_end_offset;
            let bytes =
                serde_json::to_vec(&inner.producers.to_snapshot(leo)).expect("snapshot serialises");
            (bytes, leo, index_files)
        };
        // Synced outside the lock: appends to this partition do not wait for a checkpoint.
        for file in index_files {
            file.sync_data()
                .map_err(|e| self.dir_state.fail("index sync", &e))?;
        }
        // Appends (markers, aborted-index entries) may have landed between the sync above
        // and the capture: the snapshot must not cover anything not yet durable.
        self.sync_appended()?;
        crate::fs::write_file_atomically(
            self.dir_state.fs.as_ref(),
            &self.dir,
            PRODUCER_SNAPSHOT_FILE,
            &snapshot,
        )
        .map_err(|e| self.dir_state.fail("producer snapshot write", &e))?;
        lock(&self.inner).checkpointed_offset = covered;
        Ok(())
    }

    /// The producers this partition remembers, as DescribeProducers reports them.
    pub fn active_producers(&self) -> Vec<crate::ActiveProducer> {
        lock(&self.inner).producers.active()
    }

    /// Idempotent producers this partition currently remembers.
    pub fn producer_count(&self) -> usize {
        lock(&self.inner).producers.len()
    }

    /// Reads whole batches starting with the one containing `offset`, at most `max_bytes`
    /// of them unless `min_one_batch` and the first batch alone is larger.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadOutcome, StorageError> {
        self.read_isolated(offset, max_bytes, min_one_batch, Isolation::ReadUncommitted)
    }

    /// The last stable offset: below it every transaction has ended. Equal to the high
    /// watermark when no transaction is open.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = lock(&self.inner);
        Self::lso_of(&inner)
    }

    fn lso_of(inner: &LogInner) -> i64 {
        inner
            .producers
            .first_unstable_offset()
            .unwrap_or(inner.log_end_offset)
            .clamp(inner.log_start_offset, inner.log_end_offset)
    }

    /// Open transactions on this partition: (producer id, first offset), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        lock(&self.inner).producers.open_transactions()
    }

    /// Like [`UnifiedLog::read`], at the given isolation level.
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<ReadOutcome, StorageError> {
        let out = self.read_slice(offset, max_bytes, min_one_batch, isolation)?;
        Ok(ReadOutcome {
            records: match &out.records {
                Some(slice) => slice.to_vec()?,
                None => Vec::new(),
            },
            end_offset: out.end_offset,
            last_stable_offset: out.last_stable_offset,
            log_start_offset: out.log_start_offset,
            aborted: out.aborted,
        })
    }

    /// Aborted transactions with records in `[from, upper)`, ordered by first offset.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let inner = lock(&self.inner);
        // Entries live in the segment of their marker, which is at or after `from`.
        let first = inner
            .segments
            .range(..=from)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        let mut out = Vec::new();
        'segments: for segment in inner.segments.range(first..).map(|(_, s)| s) {
            for e in &segment.aborted {
                if e.last_offset < from {
                    continue;
                }
                if e.first_offset < upper {
                    out.push(*e);
                }
                // Every transaction aborted later started at or past this LSO.
                if e.last_stable_offset >= upper {
                    break 'segments;
                }
            }
        }
        out.sort_by_key(|e| e.first_offset);
        out
    }

    /// Where the whole batches from the one holding `offset` lie, none starting at or past
    /// `upper`, at most `max_bytes` of them unless `min_one_batch` and the first alone is
    /// larger: a slice of one segment file and the offset after its last batch, found from the
    /// indexes and a few batch headers without reading the records.
    fn slice_below(
        &self,
        offset: i64,
        upper: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<(FileSlice, i64)>, StorageError> {
        // A compacted segment can end in a gap: when nothing at or after `target` is left in
        // its segment, the read moves on to the next one.
        let mut target = offset;
        loop {
            if target >= upper {
                return Ok(None);
            }
            let (slot, start, size, segment_end, base) = {
                let inner = lock(&self.inner);
                // The segment holding `target`, or the first one after it.
                let segment = inner
                    .segments
                    .range(..=target)
                    .next_back()
                    .map(|(_, s)| s)
                    .filter(|s| target < s.next_offset)
                    .or_else(|| inner.segments.range(target..).map(|(_, s)| s).next());
                let Some(segment) = segment else {
                    return Ok(None);
                };
                let relative = (target - segment.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
                let (_, pos) = segment.offset_index.lookup(relative);
                (
                    segment.file.clone(),
                    u64::from(pos),
                    segment.size,
                    segment.next_offset.max(segment.base_offset + 1),
                    segment.base_offset,
                )
            };
            let file = slot.get()?;
            // Step over batches that end before `target`.
            let mut walk = HeaderWalk::new(&file, size);
            let first = walk.find(start, |h| h.base + i64::from(h.delta) >= target)?;
            let Some((first_pos, first)) = first else {
                target = segment_end.max(target + 1);
                continue;
            };
            let want = if min_one_batch {
                (max_bytes as u64).max(first.size)
            } else {
                max_bytes as u64
            };
            let limit_end = first_pos.saturating_add(want).min(size);
            // Index positions at or below `upper` and `limit_end`, from the same segment (the
            // cleaner may have swapped in a rewritten file meanwhile: then start again).
            let hints = {
                let inner = lock(&self.inner);
                inner
                    .segments
                    .get(&base)
                    .filter(|s| Arc::ptr_eq(&s.file, &slot))
                    .map(|s| {
                        let upper_rel = (upper - base).clamp(0, i64::from(u32::MAX)) as u32;
                        let limit = u32::try_from(limit_end).unwrap_or(u32::MAX);
                        (
                            u64::from(s.offset_index.lookup(upper_rel).1),
                            u64::from(s.offset_index.floor_position(limit)),
                        )
                    })
            };
            let Some((upper_hint, limit_hint)) = hints else {
                continue;
            };
            // The end: the segment's, or the first batch at or past `upper`.
            let (mut end, mut end_offset) = (size, segment_end);
            if upper < segment_end {
                match walk.find(upper_hint.max(first_pos), |h| h.base >= upper)? {
                    Some((pos, h)) => (end, end_offset) = (pos, h.base),
                    None => end_offset = upper.min(segment_end),
                }
            }
            // Then no further than `limit_end`, at a batch boundary.
            if limit_end < end {
                let from = limit_hint.max(first_pos);
                let stop = walk.find(from, |h| h.pos + h.size > limit_end || h.base >= upper)?;
                if let Some((pos, h)) = stop {
                    (end, end_offset) = (pos, h.base);
                }
            }
            if end <= first_pos {
                return Ok(None);
            }
            let slice = FileSlice {
                file,
                position: first_pos,
                len: (end - first_pos) as usize,
            };
            return Ok(Some((slice, end_offset)));
        }
    }

    /// Like [`UnifiedLog::read_isolated`], but the records stay in their segment file: the
    /// result says where they are, for the caller to send from the file in pieces.
    pub fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<SliceOutcome, StorageError> {
        self.read_slice_below(offset, i64::MAX, max_bytes, min_one_batch, isolation)
    }

    /// [`UnifiedLog::read_slice`], returning no batch that starts at or past `max_offset`
    /// (the partition layer's high watermark). The offsets reported are capped by it too. An offset past the log end is
    /// out of range; one between `max_offset` and the log end reads nothing.
    pub fn read_slice_below(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<SliceOutcome, StorageError> {
        self.check_open()?;
        let (log_end, end, lso, log_start) = {
            let inner = lock(&self.inner);
            let end = inner.log_end_offset.min(max_offset);
            (
                inner.log_end_offset,
                end,
                Self::lso_of(&inner).min(end),
                inner.log_start_offset,
            )
        };
        if offset < log_start || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let upper = match isolation {
            Isolation::ReadUncommitted => end,
            Isolation::ReadCommitted => lso,
        };
        let found = self.slice_below(offset, upper, max_bytes, min_one_batch)?;
        let aborted = match (&found, isolation) {
            (Some((_, end)), Isolation::ReadCommitted) => self.aborted_transactions(offset, *end),
            _ => Vec::new(),
        };
        Ok(SliceOutcome {
            records: found.map(|(slice, _)| slice),
            end_offset: end,
            last_stable_offset: lso,
            log_start_offset: log_start,
            aborted,
        })
    }

    /// The offset and timestamp of the first record with the largest timestamp in the log
    /// (ListOffsets' MAX_TIMESTAMP, KIP-734); `None` for a log without timestamps.
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, StorageError> {
        self.check_open()?;
        let max = lock(&self.inner)
            .segments
            .values()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1);
        if max < 0 {
            return Ok(None);
        }
        // The first record at or after the largest timestamp is the first one that has it.
        self.offset_for_timestamp(max)
    }

    /// The first offset whose record timestamp is ≥ `target`, with that timestamp, as
    /// ListOffsets asks. Uses the time index to skip segments and batches.
    pub fn offset_for_timestamp(&self, target: i64) -> Result<Option<(i64, i64)>, StorageError> {
        self.check_open()?;
        let candidates: Vec<(Arc<crate::SegmentFile>, u64, u64)> = {
            let inner = lock(&self.inner);
            inner
                .segments
                .values()
                .filter(|s| s.max_timestamp >= target)
                .map(|s| {
                    let pos = s
                        .time_index
                        .last_below(target)
                        .map(|rel| s.offset_index.lookup(rel).1)
                        .unwrap_or(0);
                    (s.file.clone(), u64::from(pos), s.size)
                })
                .collect()
        };
        let log_start = self.log_start_offset();
        for (slot, mut pos, end) in candidates {
            let file = slot.get()?;
            let mut header = [0u8; BATCH_HEADER_SIZE];
            while pos + BATCH_HEADER_SIZE as u64 <= end {
                file.read_exact_at(&mut header, pos)?;
                let h = BatchHeader::parse(&header)?;
                let size = h.total_size() as u64;
                if h.max_timestamp >= target && h.last_offset() >= log_start {
                    let mut batch = vec![0u8; size as usize];
                    file.read_exact_at(&mut batch, pos)?;
                    for record in h.records(&batch, MAX_DECOMPRESSED_BATCH_BYTES)? {
                        if record.timestamp >= target && record.offset >= log_start {
                            return Ok(Some((record.offset, record.timestamp)));
                        }
                    }
                }
                pos += size;
            }
        }
        Ok(None)
    }
}

/// `records` with every batch not already in `codec` recompressed into it (after checking
/// it, since the CRC is about to be replaced); `None` if none needed it. Control batches are
/// left alone.
fn recompress_all(
    records: &[u8],
    codec: sluice_records::Compression,
) -> Result<Option<Vec<u8>>, StorageError> {
    let mut needed = false;
    for batch in BatchIter::new(records) {
        let header = BatchHeader::validate(batch?)?;
        needed |= !header.is_control() && header.compression()? != codec;
    }
    if !needed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    for batch in BatchIter::new(records) {
        let batch = batch?;
        let header = BatchHeader::parse(batch)?;
        if header.is_control() || header.compression()? == codec {
            out.extend_from_slice(batch);
        } else {
            out.extend(sluice_records::recompress(
                batch,
                codec,
                MAX_DECOMPRESSED_BATCH_BYTES,
            )?);
        }
    }
    Ok(Some(out))
}

/// Reads the producer-state snapshot. Without one (a new log, or a crash before the first
/// checkpoint) the state is rebuilt from the log quietly; one that cannot be read, does not
/// parse or has an unknown version is reported, then rebuilt from the log the same way.
fn read_producer_snapshot(fs: &dyn Fs, path: &Path) -> Option<Snapshot> {
    let parsed = match fs.read(path) {
        Ok(bytes) => serde_json::from_slice::<Snapshot>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.version <= crate::producer_state::SNAPSHOT_VERSION {
                    Ok(s)
                } else {
                    Err(format!("unknown version {}", s.version))
                }
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => Err(e.to_string()),
    };
    parsed
        .map_err(|reason| {
            tracing::warn!(path = %path.display(), %reason,
                "producer state snapshot unusable: rebuilding it from the whole log");
        })
        .ok()
}

/// Rebuilds producer state: the snapshot, if it covers a prefix of the log (and every
/// aborted-transaction index was read whole), then every batch header after it. Without a usable snapshot, every header in the log. Transaction markers
/// met on the way rebuild the aborted-transaction index entries from there on (entries at or
/// past that point are dropped first: they may describe a truncated tail).
fn load_producer_state(
    txn_index_damaged: bool,
    fs: &dyn Fs,
    dir: &Path,
    segments: &mut BTreeMap<i64, LogSegment>,
    log_start: i64,
    log_end: i64,
    now_ms: i64,
) -> Result<ProducerStateManager, StorageError> {
    // A damaged aborted-transaction index is rebuilt from the whole log: entries below the
    // snapshot are otherwise never rebuilt.
    let snapshot = read_producer_snapshot(fs, &dir.join(PRODUCER_SNAPSHOT_FILE))
        .filter(|s| !txn_index_damaged && (log_start..=log_end).contains(&s.offset));
    let (mut state, from) = match snapshot {
        Some(s) => {
            let from = s.offset;
            (ProducerStateManager::from_snapshot(s), from)
        }
        None => (ProducerStateManager::default(), log_start),
    };
    let mut header = [0u8; BATCH_HEADER_SIZE];
    for segment in segments.values_mut() {
        let before = segment.aborted.len();
        segment.aborted.retain(|e| e.last_offset < from);
        let mut changed = segment.aborted.len() != before;
        if segment.next_offset > from {
            let relative = (from - segment.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
            let mut pos = u64::from(segment.offset_index.lookup(relative).1);
            while pos + BATCH_HEADER_SIZE as u64 <= segment.size {
                segment.file.get()?.read_exact_at(&mut header, pos)?;
                let h = BatchHeader::parse(&header)?;
                if h.base_offset >= from {
                    if h.is_control() {
                        if h.total_size() > MAX_CONTROL_BATCH_BYTES {
                            return Err(StorageError::Corrupt(format!(
                                "control batch of {} bytes at offset {}",
                                h.total_size(),
                                h.base_offset
                            )));
                        }
                        let mut batch = vec![0u8; h.total_size()];
                        segment.file.get()?.read_exact_at(&mut batch, pos)?;
                        let commit = match sluice_records::control_type(&h, &batch)? {
                            sluice_records::ControlType::Commit => Some(true),
                            sluice_records::ControlType::Abort => Some(false),
                            sluice_records::ControlType::Other(_) => None,
                        };
                        if let Some(aborted) =
                            commit.and_then(|c| state.record_marker(&h, c, now_ms))
                        {
                            segment.aborted.push(aborted);
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
            segment.rewrite_txn_index()?;
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running out of descriptors is reported but keeps the directory online; any other
    /// failed write or sync takes it offline.
    #[test]
    fn only_real_io_failures_take_the_directory_offline() {
        let dir = DirState::new(Arc::new(crate::Fsync));
        for errno in [libc::EMFILE, libc::ENFILE] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(
                dir.fail("open", &e),
                StorageError::OutOfDescriptors(_)
            ));
            assert!(!dir.is_offline());
        }
        let e = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(dir.fail("fsync", &e), StorageError::Offline);
        assert!(dir.is_offline());
    }
}
