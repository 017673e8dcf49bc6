//! LogCleaner: compaction of `cleanup.policy=compact` logs, one log at a time.
//!
//! A pass over a log whose dirty part (offsets past the cleaner checkpoint, in closed segments
//! old enough for `min.compaction.lag.ms`) is large enough (`min.cleanable.dirty.ratio`, or
//! overdue by `max.compaction.lag.ms`):
//! 1. reads the dirty segments into an offset map, key hash → latest offset, bounded by the
//!    dedupe buffer (a full map ends the pass at the last segment it covered);
//! 2. rewrites every closed segment up to there, keeping a record only if no later record has
//!    its key, dropping tombstones older than `delete.retention.ms` (by record timestamp) and
//!    keyless records; batches are rebuilt only where records go (see
//!    `sluice_records::compact`) and batches that lose everything are dropped, so offsets
//!    never change but compacted segments have gaps (as in Kafka);
//! 3. swaps each rewritten segment in: `<base>.log.cleaned` is written and fsynced, the old
//!    index files are unlinked (and the directory synced), then the rename replaces the
//!    segment atomically. A crash leaves either the old or the new segment, never both; a
//!    leftover `.cleaned` file is deleted at start-up, and missing indexes are rebuilt;
//! 4. moves the cleaner checkpoint (`cleaner-offset-checkpoint`) past what it covered.
//!
//! Durability: only segments wholly below the recovery point are cleaned, so a record is only
//! ever superseded by one that survives a crash.
//!
//! Transactions: only segments wholly below the last stable offset are cleaned, so no open
//! transaction is touched. Batches of aborted transactions (known from the aborted-transaction
//! indexes) never enter the offset map and are dropped when their segment is rewritten;
//! transaction markers are always kept (Kafka drops them once `delete.retention.ms` has passed
//! and their transaction has no records left; Sluice keeps them, which costs a few dozen
//! bytes per transaction and partition).
//!
//! The checkpoint file holds a version (1) and two numbers, one a line: the first dirty offset,
//! and the offset below which segments may have gaps (version 0 had the two numbers alone). The second is written before any segment is swapped, so recovery
//! never mistakes a compacted segment's gap for damage.
//!
//! Reads hold their segment's file open, so they see the old bytes or the new, whole.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_records::compact::{filter_batch, for_each_record, Filtered};
use sluice_records::BatchIter;

use super::{lock, UnifiedLog, MAX_DECOMPRESSED_BATCH_BYTES};
use crate::fs::remove_if_present;
use crate::segment::{segment_file_name, LogSegment};
use crate::txn_index::AbortedTxn;
use crate::{CountedFile, Fs, OpenMode, StorageError};

/// Suffix of a segment being rewritten.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
pub(super) const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// What one entry of the offset map costs: a 16-byte key hash, an 8-byte offset, and the hash
/// table's own overhead.
const MAP_ENTRY_BYTES: usize = 48;

/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 4 << 20;

/// The cleaner's broker-wide settings.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory for the offset map of one pass.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read plus write rate the cleaner keeps to.
    pub io_max_bytes_per_second: f64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            dedupe_buffer_bytes: 128 << 20,
            io_max_bytes_per_second: f64::MAX,
        }
    }
}

/// What one cleaning pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CleanStats {
    pub segments: usize,
    pub records_before: u64,
    pub records_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first offset the next pass will treat as dirty.
    pub cleaned_to: i64,
    pub elapsed: Duration,
}

/// Keeps the cleaner's I/O under a rate by sleeping when it gets ahead.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    started: Instant,
    bytes: f64,
}

impl Throttle {
    pub fn new(bytes_per_second: f64) -> Self {
        Self {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0.0,
        }
    }

    fn pace(&mut self, bytes: usize) {
        if !self.bytes_per_second.is_finite() || self.bytes_per_second >= f64::MAX {
            return;
        }
        self.bytes += bytes as f64;
        let due = Duration::from_secs_f64(self.bytes / self.bytes_per_second);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// The cleaner checkpoint format this code writes.
const CHECKPOINT_VERSION: &str = "1";

/// The cleaner checkpoint of the log in `dir`: (first dirty offset, offset below which
/// segments may have gaps). A missing file means nothing was ever cleaned. A file that cannot
/// be read or parsed is reported and read as "nothing is known to be clean, and every
/// segment may have gaps": the next pass maps the whole log again, and recovery checks
/// every segment's batches as compacted (checksums and order, gaps allowed), where reading
/// it as zeros would make it cut the log at the first gap.
pub(crate) fn read_cleaner_checkpoint(fs: &dyn Fs, dir: &Path) -> (i64, i64) {
    let path = dir.join(CHECKPOINT_FILE);
    let parsed = match fs.read(&path) {
        Ok(bytes) => parse_checkpoint(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, 0),
        Err(e) => Err(e.to_string()),
    };
    parsed.unwrap_or_else(|reason| {
        tracing::error!(path = %path.display(), %reason,
            "cleaner checkpoint unusable: recleaning the log, allowing gaps everywhere");
        (0, i64::MAX)
    })
}

/// Parses `1\n<first dirty>\n<gaps below>\n`, or version 0, the same without the first line.
fn parse_checkpoint(bytes: &[u8]) -> Result<(i64, i64), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    let numbers = match lines[..] {
        [CHECKPOINT_VERSION, a, b] => [a, b],
        [a, b] => [a, b],
        [version, _, _] => return Err(format!("unknown version {version:?}")),
        _ => return Err(format!("{} lines", lines.len())),
    };
    let [a, b] = numbers.map(|n| n.trim().parse::<i64>().map_err(|e| format!("{n:?}: {e}")));
    Ok((a?, b?))
}

/// A 128-bit hash of a key: two independent 64-bit SipHashes. A collision would merge two
/// keys; at 2^-128 per pair it is not a practical concern.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    0xa5u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0x5au8.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// A closed segment as the cleaner sees it.
struct Closed {
    base: i64,
    next_offset: i64,
    size: u64,
    max_timestamp: i64,
    file: Arc<crate::SegmentFile>,
}

/// Calls `visit` with every stored batch of `file`, reading it in chunks.
fn for_each_batch(
    file: &CountedFile,
    size: u64,
    mut visit: impl FnMut(&[u8]) -> Result<bool, StorageError>,
) -> Result<(), StorageError> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos < size {
        let want = (size - pos).min(READ_CHUNK_BYTES as u64) as usize;
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)?;
        let mut used = 0usize;
        for batch in BatchIter::new(&buf) {
            let Ok(batch) = batch else { break };
            used += batch.len();
            if !visit(batch)? {
                return Ok(());
            }
        }
        if used == 0 {
            // A batch larger than the chunk: read exactly that batch.
            let (_, total) = sluice_records::BatchHeader::peek_size(&buf)?;
            buf.resize(total, 0);
            file.read_exact_at(&mut buf, pos)?;
            if !visit(&buf)? {
                return Ok(());
            }
            used = total;
        }
        pos += used as u64;
    }
    Ok(())
}

fn is_control(batch: &[u8]) -> bool {
    sluice_records::BatchHeader::parse(batch).is_ok_and(|h| h.is_control())
}

fn batch_records(batch: &[u8]) -> u64 {
    sluice_records::BatchHeader::parse(batch).map_or(0, |h| h.records_count.max(0) as u64)
}

/// What a rewrite keeps: a record that is its key's latest, not an expired tombstone, and
/// not in an aborted transaction.
struct KeepRules<'a> {
    latest: &'a HashMap<u128, i64>,
    aborted: &'a AbortedRanges,
    tombstone_horizon: i64,
}

/// The aborted transactions of a log, per producer, to recognise their batches.
struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    fn of<'a>(entries: impl Iterator<Item = &'a AbortedTxn>) -> Self {
        let mut map: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for e in entries {
            map.entry(e.producer_id)
                .or_default()
                .push((e.first_offset, e.last_offset));
        }
        Self(map)
    }

    /// Whether `batch` is transactional and belongs to an aborted transaction (control
    /// batches included: the caller decides what to do with markers).
    fn unmapped(&self, batch: &[u8]) -> bool {
        let Ok(h) = sluice_records::BatchHeader::parse(batch) else {
            return false;
        };
        if h.is_control() {
            return true;
        }
        h.is_transactional()
            && self.0.get(&h.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&h.base_offset))
            })
    }
}

impl UnifiedLog {
    /// Runs one cleaning pass if the log is compacted and due; `None` when there was nothing
    /// to do.
    pub fn clean(
        &self,
        now_ms: i64,
        cleaner: &CleanerConfig,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanStats>, StorageError> {
        self.check_open()?;
        let started = Instant::now();
        let (config, closed, first_dirty, aborted, generation) = {
            let inner = lock(&self.inner);
            let generation = self.replaced.load(std::sync::atomic::Ordering::SeqCst);
            let config = inner.config.clone();
            if !config.is_compacted() {
                return Ok(None);
            }
            let active = *inner.segments.keys().next_back().expect("a segment");
            let lso = UnifiedLog::lso_of(&inner);
            // Only durable records may supersede others: a record dropped for a later one
            // that a power cut then loses would take its key's acknowledged value with it.
            let durable = self.recovery_point();
            let lag_horizon = now_ms.saturating_sub(config.min_compaction_lag_ms);
            let closed: Vec<Closed> = inner
                .segments
                .range(..active)
                .map(|(_, s)| Closed {
                    base: s.base_offset(),
                    next_offset: s.next_offset(),
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                    file: s.file().clone(),
                })
                .take_while(|s| {
                    s.max_timestamp <= lag_horizon
                        && s.next_offset <= lso
                        && s.next_offset <= durable
                })
                .collect();
            let first_dirty = inner.cleaner_checkpoint.max(inner.log_start_offset);
            let aborted = AbortedRanges::of(inner.segments.values().flat_map(|s| s.aborted()));
            (config, closed, first_dirty, aborted, generation)
        };
        let total: u64 = closed.iter().map(|s| s.size).sum();
        let dirty: Vec<&Closed> = closed
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        let overdue = dirty.iter().any(|s| {
            s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) > config.max_compaction_lag_ms
        });
        if dirty_bytes == 0
            || ((dirty_bytes as f64) < config.min_cleanable_dirty_ratio * total as f64 && !overdue)
        {
            return Ok(None);
        }

        // 1. The offset map of the dirty segments, as far as the dedupe buffer reaches.
        let capacity = (cleaner.dedupe_buffer_bytes / MAP_ENTRY_BYTES).max(1);
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut mapped_to = first_dirty;
        for seg in &dirty {
            let mut full = false;
            for_each_batch(&*seg.file.get()?, seg.size, |batch| {
                throttle.pace(batch.len());
                if aborted.unmapped(batch) {
                    return Ok(true);
                }
                for_each_record(batch, MAX_DECOMPRESSED_BATCH_BYTES, |r| {
                    if let Some(key) = r.key {
                        let h = key_hash(key);
                        if map.len() >= capacity && !map.contains_key(&h) {
                            full = true;
                        } else {
                            map.insert(h, r.offset);
                        }
                    }
                })?;
                Ok(!full)
            })?;
            if full {
                break;
            }
            mapped_to = seg.next_offset;
        }
        if mapped_to <= first_dirty {
            tracing::warn!(log = %self.dir.display(), capacity,
                "log.cleaner.dedupe.buffer.size cannot hold one segment's keys; not cleaning");
            return Ok(None);
        }

        // Recovery must accept gaps below `mapped_to` before any segment there has one.
        if self
            .while_open(generation, || self.write_checkpoint(first_dirty, mapped_to))?
            .is_none()
        {
            return Ok(None);
        }

        // 2 and 3. Rewrite and swap every closed segment below `mapped_to`.
        let tombstone_horizon = now_ms.saturating_sub(config.delete_retention_ms);
        let mut stats = CleanStats::default();
        for seg in closed.iter().filter(|s| s.next_offset <= mapped_to) {
            let keep = KeepRules {
                latest: &map,
                aborted: &aborted,
                tombstone_horizon,
            };
            self.rewrite_segment(seg, &keep, throttle, &mut stats, now_ms)?;
        }
        // 4. The checkpoint: what the next pass need not map again.
        let written = self.while_open(generation, || {
            let dir = self
                .dir_state
                .fs
                .open_dir(&self.dir)
                .map_err(|e| self.dir_state.fail("directory open", &e))?;
            dir.sync()
                .map_err(|e| self.dir_state.fail("directory sync", &e))?;
            self.write_checkpoint(mapped_to, mapped_to)
        })?;
        if written.is_none() {
            return Ok(None);
        }
        {
            let mut inner = lock(&self.inner);
            if self.replaced.load(std::sync::atomic::Ordering::SeqCst) != generation {
                return Ok(None);
            }
            inner.cleaner_checkpoint = mapped_to;
        }
        stats.cleaned_to = mapped_to;
        stats.elapsed = started.elapsed();
        Ok(Some(stats))
    }

    /// Runs `f` unless the log has been closed (its topic deleted), or truncated or
    /// replaced since `generation` (then `None`: the pass stops, having swapped no segment
    /// that is not still the log's), keeping both from happening meanwhile: they take
    /// `flush_lock` too, so the directory `f` writes to is still this log's, and the
    /// segments the pass read are still the log's.
    fn while_open<T>(
        &self,
        generation: u64,
        f: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let _flush = lock(&self.flush_lock);
        self.check_open()?;
        if self.replaced.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return Ok(None);
        }
        f().map(Some)
    }

    fn write_checkpoint(&self, first_dirty: i64, gaps_below: i64) -> Result<(), StorageError> {
        let fs = self.dir_state.fs.as_ref();
        let gaps_below = gaps_below.max(read_cleaner_checkpoint(fs, &self.dir).1);
        let text = format!("{CHECKPOINT_VERSION}\n{first_dirty}\n{gaps_below}\n");
        crate::fs::write_file_atomically(fs, &self.dir, CHECKPOINT_FILE, text.as_bytes())
            .map_err(|e| self.dir_state.fail("cleaner checkpoint write", &e))
    }

    fn rewrite_segment(
        &self,
        seg: &Closed,
        keep: &KeepRules<'_>,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let log_name = segment_file_name(seg.base, "log");
        let cleaned_path = self.dir.join(format!("{log_name}{CLEANED_SUFFIX}"));
        let fs = &self.dir_state.fs;
        let out = fs.open(&cleaned_path, OpenMode::Truncate)?;
        let mut written = 0u64;
        let mut write = |bytes: &[u8]| -> Result<(), StorageError> {
            out.write_all_at(bytes, written)?;
            written += bytes.len() as u64;
            Ok(())
        };
        let mut changed = false;
        for_each_batch(&*seg.file.get()?, seg.size, |batch| {
            throttle.pace(batch.len());
            let mut before = 0u64;
            let mut after = 0u64;
            if keep.aborted.unmapped(batch) && !is_control(batch) {
                // An aborted transaction's records: no reader may ever see them.
                stats.records_before += batch_records(batch);
                changed = true;
                return Ok(true);
            }
            let filtered = filter_batch(batch, MAX_DECOMPRESSED_BATCH_BYTES, |r| {
                before += 1;
                let latest = r.key.is_some_and(|k| {
                    keep.latest
                        .get(&key_hash(k))
                        .is_none_or(|&latest| r.offset >= latest)
                });
                let kept = latest && !(r.is_tombstone && r.timestamp < keep.tombstone_horizon);
                after += u64::from(kept);
                kept
            });
            // A batch the cleaner cannot read, or cannot rebuild into a valid stored batch (a
            // compressed batch whose records disagree with its header), is kept as it is, so
            // that one bad batch never stops compaction of the log.
            let filtered = match filtered {
                Ok(Filtered::Rebuilt(b))
                    if sluice_records::BatchHeader::validate_stored(&b).is_err() =>
                {
                    tracing::warn!(log = %self.dir.display(), segment = seg.base,
                        "kept a batch the cleaner could not rebuild");
                    Filtered::Unchanged
                }
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(log = %self.dir.display(), segment = seg.base, error = %e,
                        "kept a batch the cleaner could not read");
                    Filtered::Unchanged
                }
            };
            stats.records_before += before;
            stats.records_after += after;
            match filtered {
                Filtered::Unchanged => write(batch)?,
                Filtered::Rebuilt(b) => {
                    changed = true;
                    write(&b)?;
                    throttle.pace(b.len());
                }
                Filtered::Empty => changed = true,
            }
            Ok(true)
        })?;
        stats.bytes_before += seg.size;
        if !changed {
            drop(out);
            fs.remove_file(&cleaned_path)?;
            stats.bytes_after += seg.size;
            return Ok(());
        }
        out.sync_data()
            .map_err(|e| self.dir_state.fail("cleaned segment sync", &e))?;
        drop(out);
        // Validate what was written and build its indexes before anything is swapped.
        let mut cleaned = LogSegment::open_file(
            fs,
            &self.dir_state.handles,
            &self.dir,
            seg.base,
            &cleaned_path,
            now_ms,
        )?;
        let interval = lock(&self.inner).config.index_interval_bytes;
        let bounds = crate::segment::ScanBounds {
            end_before: Some(seg.next_offset),
            gaps_below: seg.next_offset,
        };
        let scan = cleaned.scan_from(0, interval, Some(bounds))?;
        if let Some((pos, reason)) = scan.corruption {
            fs.remove_file(&cleaned_path)?;
            return Err(StorageError::Corrupt(format!(
                "cleaned segment {} is invalid at {pos}: {reason}",
                seg.base
            )));
        }
        if cleaned.next_offset() > seg.next_offset {
            fs.remove_file(&cleaned_path)?;
            return Err(StorageError::Corrupt(format!(
                "cleaned segment {} ends at {}, past {}",
                seg.base,
                cleaned.next_offset(),
                seg.next_offset
            )));
        }
        let mut inner = lock(&self.inner);
        let still_there = inner.segments.get(&seg.base).is_some_and(|s| {
            s.next_offset() == seg.next_offset && Arc::ptr_eq(s.file(), &seg.file)
        });
        if !still_there || self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            // Retention or a deletion got there first.
            drop(inner);
            fs.remove_file(&cleaned_path)?;
            return Ok(());
        }
        let old = inner.segments.get(&seg.base).expect("checked");
        // Every descriptor the swap needs, before anything changes on disk.
        let dir = fs
            .open_dir(&self.dir)
            .map_err(|e| self.dir_state.fail("directory open", &e))?;
        for path in [old.index_path(), old.time_index_path()] {
            remove_if_present(fs.as_ref(), &path)?;
        }
        // The unlinked indexes must not outlive the rename on disk: a stale index over the
        // new file could point into the middle of a batch.
        dir.sync()
            .map_err(|e| self.dir_state.fail("directory sync", &e))?;
        fs.rename(&cleaned_path, &self.dir.join(&log_name))
            .map_err(|e| self.dir_state.fail("cleaned segment swap", &e))?;
        cleaned.file().moved_to(self.dir.join(&log_name));
        // Its own indexes, so that a clean restart trusts the segment instead of rescanning
        // it. Written after the rename: a crash before this leaves no index, and a rebuild.
        // The swap is done by now, so a failure (even for want of a descriptor) must not
        // leave the old segment in memory: the indexes are derived, and rebuilt at start-up.
        match cleaned.persist_indexes() {
            Ok(()) => cleaned.seal_indexes(self.dir_state.index_block_entries()),
            Err(e) => {
                let _ = self.dir_state.fail("index write", &e);
            }
        }
        // The segment still reaches the next one, whatever its last records were; offsets do
        // not move, so the aborted-transaction index stays as it is.
        cleaned.replace(old);
        stats.bytes_after += cleaned.size();
        stats.segments += 1;
        inner.segments.insert(seg.base, cleaned);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both versions parse; anything else is an error, never zeros.
    #[test]
    fn the_cleaner_checkpoint_parses_both_versions_and_refuses_the_rest() {
        assert_eq!(parse_checkpoint(b"1\n40\n50\n"), Ok((40, 50)));
        assert_eq!(parse_checkpoint(b"40\n50\n"), Ok((40, 50)));
        for bad in [
            &b""[..],
            b"40\n",
            b"2\n40\n50\n",
            b"1\nx\n50\n",
            b"\xff\n1\n",
        ] {
            assert!(parse_checkpoint(bad).is_err(), "{bad:?}");
        }
    }

    /// The throttle holds the cleaner to its rate: 300 KB at 1 MB/s cannot take less than
    /// about 0.3 s. (A lower bound only; how much longer it takes is not the throttle's.)
    #[test]
    fn the_throttle_keeps_io_at_or_below_its_rate() {
        let mut throttle = Throttle::new(1e6);
        let started = Instant::now();
        for _ in 0..3 {
            throttle.pace(100_000);
        }
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
        let mut unlimited = Throttle::new(f64::MAX);
        let started = Instant::now();
        unlimited.pace(1 << 40);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
