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
}
