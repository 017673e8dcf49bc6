//! Durability: syncing what was appended (group commit) and checkpoints.

use super::*;

impl UnifiedLog {
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

    /// What a sync of the whole file system started now covers: everything appended so far.
    /// The directory's pending entry changes are covered too, but its `dir_dirty` flag is
    /// left set: a checkpoint syncing this log meanwhile must still sync the directory itself
    /// before it advances the recovery point (the next one-log sync does it once more).
    /// Also returns how many times the log had been truncated or replaced: a sync that
    /// one overtakes covers files that are no longer the log's.
    fn mark_for_sync(&self) -> Result<(i64, u64), StorageError> {
        self.check_open()?;
        let inner = lock(&self.inner);
        Ok((inner.log_end_offset, self.replaced.load(Ordering::SeqCst)))
    }

    /// Records a file-system sync that started after [`Self::mark_for_sync`] and succeeded,
    /// unless the log was truncated or replaced meanwhile (those take the log's lock, as
    /// this does): its recovery point is then the truncation's, and what the sync covered
    /// may be another log's files.
    fn synced(&self, (end, generation): (i64, u64)) {
        let inner = lock(&self.inner);
        if self.replaced.load(Ordering::SeqCst) != generation {
            return;
        }
        debug_assert!(end <= inner.log_end_offset, "durable beyond the log end");
        self.flushed_offset
            .fetch_max(end.min(inner.log_end_offset), Ordering::SeqCst);
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
                .map(|(_, s)| s.files_to_sync())
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
            let unchanged = inner.checkpointed_offset == leo && inner.active().indexes_persisted();
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
            let mut snapshot = inner.producers.to_snapshot(leo);
            snapshot.epochs = Some(inner.epochs.entries().to_vec());
            let bytes = serde_json::to_vec(&snapshot).expect("snapshot serialises");
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
}

/// Makes everything appended to `logs` so far durable with one sync of the file system per
/// directory (`syncfs(2)`): one call, one device cache flush and one write of each metadata
/// block, instead of a data write, an inode write and a cache flush per log. Returns each
/// log's outcome, in order; `None` if a log's file system cannot be synced as a whole (then
/// sync each log with [`UnifiedLog::flush_to`]; logs of other directories may have been
/// synced already, which makes their `flush_to` return at once). A failed sync takes the
/// directory offline and fails every log it covered.
pub fn sync_together(logs: &[Arc<UnifiedLog>]) -> Option<Vec<Result<(), StorageError>>> {
    let mut outcomes: Vec<Option<Result<(), StorageError>>> = vec![None; logs.len()];
    while let Some(first) = outcomes.iter().position(Option::is_none) {
        // The logs sharing the first unsynced log's directory state.
        let state = logs[first].dir_state.clone();
        let group: Vec<usize> = (first..logs.len())
            .filter(|&i| outcomes[i].is_none() && Arc::ptr_eq(&logs[i].dir_state, &state))
            .collect();
        let results = match state.sync_root(&logs[first].dir) {
            Ok(root) => sync_group(&root?, &state, logs, &group)?,
            // Nothing synced: as when a log cannot open its directory to sync it.
            Err(e) => {
                let e = state.fail("directory open", &e);
                vec![Err(e); group.len()]
            }
        };
        for (i, result) in group.iter().zip(results) {
            outcomes[*i] = Some(result);
        }
    }
    outcomes.into_iter().collect()
}

/// One file-system sync for the logs of `group`; `None` (nothing changed) if the file
/// system cannot be synced as a whole.
fn sync_group(
    root: &Arc<dyn crate::FsDir>,
    state: &DirState,
    logs: &[Arc<UnifiedLog>],
    group: &[usize],
) -> Option<Vec<Result<(), StorageError>>> {
    let marks: Vec<Result<(i64, u64), StorageError>> =
        group.iter().map(|&i| logs[i].mark_for_sync()).collect();
    let outcome = root.sync_filesystem();
    if matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::Unsupported) {
        state.no_sync_root();
        return None;
    }
    let failed = outcome.err().map(|e| state.fail("file system sync", &e));
    Some(
        group
            .iter()
            .zip(marks)
            .map(|(&i, mark)| match &failed {
                None => mark.map(|m| logs[i].synced(m)),
                Some(e) => Err(e.clone()),
            })
            .collect(),
    )
}
