//! `UnifiedLog`: one partition's ordered segments, with append, read, group commit and
//! recovery. This file holds the log's state and the directory it lives in; each concern
//! has its own file: `recovery` (opening a log), `append` (and rolling), `flush` (group
//! commit and checkpoints), `read`, `retention` (and DeleteRecords), `cleaner` (compaction).

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
    /// The directory whose file system [`sync_together`] syncs, opened by its first call and
    /// kept open (a write-back error is reported to descriptors open when it happened);
    /// `None` inside once the file system turned out not to sync as a whole.
    sync_root: Mutex<Option<Option<Arc<dyn crate::FsDir>>>>,
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
            sync_root: Mutex::new(None),
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

    /// Takes the directory offline whatever the error, running out of descriptors included:
    /// for a failure after a change that cannot be taken back in place (a log directory
    /// renamed away), where [`DirState::fail`]'s promise that nothing changed yet does not
    /// hold.
    pub(crate) fn fail_after_change(&self, what: &str, err: &io::Error) -> StorageError {
        if !self.offline.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %err, "{what} failed: log directory taken offline");
        }
        StorageError::Offline
    }

    /// The open directory [`sync_together`] syncs the file system through, opened on first
    /// use as the parent of `log_dir` (the data directory); `None` once this file system
    /// turned out not to sync as a whole.
    fn sync_root(&self, log_dir: &Path) -> io::Result<Option<Arc<dyn crate::FsDir>>> {
        let mut root = self.sync_root.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = &*root {
            return Ok(known.clone());
        }
        let handle: Arc<dyn crate::FsDir> =
            Arc::from(self.fs.open_dir(log_dir.parent().unwrap_or(log_dir))?);
        *root = Some(Some(handle.clone()));
        Ok(Some(handle))
    }

    /// Remembers that this file system cannot be synced as a whole.
    fn no_sync_root(&self) {
        *self.sync_root.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
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
    /// Which leader epoch wrote which offsets, as the batch headers say.
    epochs: crate::LeaderEpochCache,
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
    /// Counts truncations and replacements of the log's contents, so that a cleaner pass
    /// that began before one writes nothing about segments that are gone.
    replaced: AtomicU64,
}

mod append;
mod cleaner;
mod flush;
mod read;
mod recovery;
mod retention;
mod truncate;
pub use cleaner::{CleanStats, CleanerConfig, Throttle};
pub use flush::sync_together;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock is a broken invariant; refuse to continue with
    // possibly half-updated state.
    m.lock().expect("log lock poisoned")
}

impl UnifiedLog {
    /// Opens (or creates) the log in `dir`, recovering everything past `recovery_point`:
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

    /// Kafka's `endOffsetFor` on this log's leader epoch cache: the largest epoch at or below
    /// `epoch` that wrote records here, and where its records end (the next epoch's first
    /// offset, or the log end). `None` if every epoch here is newer.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let inner = lock(&self.inner);
        inner.epochs.end_offset_for(epoch, inner.log_end_offset)
    }

    /// Records that `epoch` leads from the log end on, as Kafka's leader does when it takes
    /// over: so that the epoch is known before it writes anything. Kept in memory until its
    /// first record (a restart assigns it again).
    pub fn assign_leader_epoch(&self, epoch: i32) {
        let mut inner = lock(&self.inner);
        let end = inner.log_end_offset;
        inner.epochs.assign(epoch, end);
    }

    /// The newest leader epoch that wrote here (or took over here), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        lock(&self.inner).epochs.latest_epoch()
    }

    /// The leader epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> Vec<crate::EpochEntry> {
        lock(&self.inner).epochs.entries().to_vec()
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

    /// Reads the config without copying it.
    pub fn with_config<R>(&self, f: impl FnOnce(&LogConfig) -> R) -> R {
        f(&lock(&self.inner).config)
    }

    pub fn segment_count(&self) -> usize {
        lock(&self.inner).segments.len()
    }

    /// Index entries held in memory and in the indexes altogether (offset and time index
    /// entries together): closed segments keep a summary only.
    pub fn index_entries(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        inner.segments.values().fold((0, 0), |(resident, all), s| {
            let (r, a) = s.index_entries();
            (resident + r, all + a)
        })
    }

    /// Replaces the log's configuration (a dynamic topic config change); it applies from the
    /// next append, roll or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        lock(&self.inner).config = config;
    }

    /// Total bytes of the log's segment files.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.inner).segments.values().map(|s| s.size()).sum()
    }

    /// The producers this partition remembers, as DescribeProducers reports them.
    pub fn active_producers(&self) -> Vec<crate::ActiveProducer> {
        lock(&self.inner).producers.active()
    }

    /// Idempotent producers this partition currently remembers.
    pub fn producer_count(&self) -> usize {
        lock(&self.inner).producers.len()
    }
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
