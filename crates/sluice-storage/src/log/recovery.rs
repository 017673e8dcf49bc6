//! Opening a log: recovery of its segments past the recovery point, index loading, and
//! rebuilding producer state from its snapshot and the log.

use super::*;
use crate::segment::{Recovered, RecoveryContext};

impl UnifiedLog {
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
            let segment = LogSegment::create(&fs, &dir_state.handles, dir, 0, now_ms)?;
            segments.insert(0, segment.without_index_files());
            dir_dirty = true;
        }
        let rp = recovery_point.unwrap_or(i64::MIN);
        let interval = config.index_interval_bytes;
        // Segments wholly below this may have been compacted, leaving offset gaps.
        let (cleaner_checkpoint, gaps_below) = cleaner::read_cleaner_checkpoint(fs.as_ref(), dir);
        let mut recovered_any = false;
        let mut scanned = 0u64;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let at = RecoveryContext {
                next_base,
                recovery_point: rp,
                gaps_below,
                interval_bytes: interval,
            };
            let (mut segment, how) =
                LogSegment::recover(&fs, &dir_state.handles, dir, base, at, now_ms)?;
            if let Recovered::Scanned { bytes, corruption } = how {
                recovered_any = true;
                scanned += bytes;
                if let Some((pos, reason)) = corruption {
                    let file_len = segment.file().get()?.size()?;
                    tracing::warn!(
                        log = %dir.display(),
                        segment = base,
                        position = pos,
                        truncated_bytes = file_len - pos,
                        dropped_segments = bases.len() - i - 1,
                        %reason,
                        "recovery truncated the log"
                    );
                    segment.truncate_to(bytes)?;
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
                if !segment.indexes_persisted() {
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
        let log_end_offset = last.next_offset();
        let log_start_offset = *segments.keys().next().expect("at least one segment");
        let mut txn_index_damaged = false;
        for segment in segments.values_mut() {
            txn_index_damaged |= segment.load_txn_index()?;
        }
        let (producers, epochs) = load_producer_state(
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
                epochs,
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
            replaced: AtomicU64::new(0),
        };
        if recovered_any || (dir_dirty && !fresh) {
            // What survived recovery may still sit only in the page cache.
            log.flush_to(i64::MAX)?;
        }
        Ok(log)
    }
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

/// Rebuilds producer state and the leader epoch cache: the snapshot, if it covers a prefix of
/// the log (and every aborted-transaction index was read whole), then every batch header after
/// it. A version 1 snapshot has no epochs: they are read from the batch headers below it. Without a usable snapshot, every header in the log. Transaction markers
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
) -> Result<(ProducerStateManager, crate::LeaderEpochCache), StorageError> {
    // A damaged aborted-transaction index is rebuilt from the whole log: entries below the
    // snapshot are otherwise never rebuilt.
    let snapshot = read_producer_snapshot(fs, &dir.join(PRODUCER_SNAPSHOT_FILE))
        .filter(|s| !txn_index_damaged && (log_start..=log_end).contains(&s.offset));
    let (mut state, mut epochs, from) = match snapshot {
        Some(mut s) => {
            let from = s.offset;
            let epochs = match s.epochs.take() {
                Some(entries) => crate::LeaderEpochCache::from_entries(entries),
                None => {
                    // A version 1 snapshot: its producers still count (some may have no
                    // records left), the epochs come from every batch header below it.
                    tracing::info!(log = %dir.display(),
                        "producer snapshot without leader epochs: reading them from the log");
                    let mut epochs = crate::LeaderEpochCache::default();
                    for segment in segments.values().filter(|seg| seg.base_offset() < from) {
                        segment.replay_epochs(&mut epochs)?;
                    }
                    epochs.truncate_from_end(from);
                    epochs
                }
            };
            (ProducerStateManager::from_snapshot(s), epochs, from)
        }
        None => (
            ProducerStateManager::default(),
            Default::default(),
            log_start,
        ),
    };
    for segment in segments.values_mut() {
        segment.replay_producers(
            from,
            &mut state,
            &mut epochs,
            now_ms,
            MAX_CONTROL_BATCH_BYTES,
        )?;
    }
    epochs.truncate_from_end(log_end);
    epochs.truncate_from_start(log_start);
    Ok((state, epochs))
}
