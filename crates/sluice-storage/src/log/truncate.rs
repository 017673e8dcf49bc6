//! Truncation from the end: what a follower does when its log diverged from its leader's (a
//! tail written under an older leader that the new one does not have).
//!
//! The files are cut first, each step durable before the next, so that a power cut at any
//! point leaves a log that recovery reads as a prefix of the one before: the producer-state
//! snapshot if it covers the cut tail, the later segments newest first, the indexes of the
//! segment cut, then that segment's data. Then the log is rebuilt from its files by the same
//! recovery that runs at start-up (the indexes, producer state, aborted transactions and
//! leader epochs of the cut segment are all derived, and recovery derives them). Truncation is
//! rare (a leader change), so it may cost a recovery of the segment cut.

use super::read::HeaderWalk;
use super::*;

impl UnifiedLog {
    /// Removes every batch that holds an offset at or after `offset` (a batch holding
    /// `offset` goes whole, as Kafka truncates at batch boundaries), durably. Returns the new
    /// log end offset, at most `offset`. An offset at or past the end changes nothing; one
    /// below the log start offset, or below the cleaner's checkpoint of a compacted log, is
    /// refused.
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, StorageError> {
        self.check_open()?;
        // No sync may run meanwhile: it could mark the cut tail durable.
        let _flush = lock(&self.flush_lock);
        let mut inner = lock(&self.inner);
        self.check_open()?;
        if offset >= inner.log_end_offset {
            return Ok(inner.log_end_offset);
        }
        if offset < inner.log_start_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: inner.log_start_offset,
                log_end: inner.log_end_offset,
            });
        }
        if inner.config.is_compacted() && offset < inner.cleaner_checkpoint {
            // The cleaner dropped older records of keys whose latest record lies below its
            // checkpoint: cutting there could lose those keys altogether. (A cluster cleans
            // only below the high watermark, and never truncates below it.)
            return Err(StorageError::PolicyViolation(format!(
                "cannot truncate a compacted log to {offset}, below what the cleaner has \
                 compacted ({})",
                inner.cleaner_checkpoint
            )));
        }
        self.replaced.fetch_add(1, Ordering::SeqCst);
        let result = self.cut_files(&mut inner, offset);
        let new_end = match result {
            Ok(end) => end,
            // Some files may be cut and others not: the directory goes offline, and a restart
            // recovers whatever prefix is left.
            Err(e) => return Err(self.dir_state.fail("truncation", &e)),
        };
        let start = inner.log_start_offset;
        let recovery_point = self.flushed_offset.load(Ordering::SeqCst).min(new_end);
        let reopened = Self::open(
            &self.dir,
            inner.config.clone(),
            Some(recovery_point),
            self.dir_state.clone(),
            now_ms,
        )?;
        let durable = reopened.flushed_offset.load(Ordering::SeqCst);
        let mut rebuilt = reopened
            .inner
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        // The rebuilt log ends where the last batch left ends: at the cut, or before it where
        // compaction left a gap there.
        assert!(
            rebuilt.log_end_offset <= new_end,
            "the log rebuilt after truncation ends at {}, past the cut at {new_end}",
            rebuilt.log_end_offset
        );
        let new_end = rebuilt.log_end_offset;
        // DeleteRecords may have moved the start inside the first segment; if the cut went
        // below it (the batch holding `offset` began before it), the log starts at its end,
        // as Kafka lowers the start to a truncation below it.
        let start = start.min(rebuilt.log_end_offset);
        if start > rebuilt.log_start_offset {
            rebuilt.log_start_offset = start;
            rebuilt.epochs.truncate_from_start(start);
        }
        *inner = rebuilt;
        self.flushed_offset
            .store(durable.min(new_end), Ordering::SeqCst);
        Ok(new_end)
    }

    /// Empties the log and starts it again at `offset`, past its end (Kafka's
    /// `truncateFullyAndStartAt`): what a follower does when its leader no longer holds the
    /// offsets between this log's end and the leader's log start. An empty segment at
    /// `offset` is created and made durable first, so that the directory never lies empty
    /// (recovery would start an empty log at 0 there, under segment files whose unlinks a
    /// crash may yet undo); then the old segments go, newest first, each unlink durable
    /// before the next. A power cut leaves a prefix of the old log, a gap, and the new
    /// segment: the offsets the leader no longer has are absent, everything else is what was
    /// written there. Producer state and leader epochs go with the records. An offset at or
    /// below the end of a log that holds any bytes is refused: that is
    /// [`UnifiedLog::truncate_to`]'s job. A log that holds none may start again anywhere (a
    /// follower that started at its leader's log start, and is sent the whole batch holding
    /// it, starts at that batch). The cleaner's checkpoint goes too: offsets it names may
    /// lie in the new log, whose segments have no gaps.
    pub fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.check_open()?;
        let _flush = lock(&self.flush_lock);
        let mut inner = lock(&self.inner);
        self.check_open()?;
        // Starting again at or below the end only for a log that holds no bytes at all (one
        // emptied so a moment ago): its segments hold nothing to overlap the new one.
        let holds_nothing = inner.segments.values().all(|s| s.size() == 0);
        if offset < 0 || (offset <= inner.log_end_offset && !holds_nothing) {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: inner.log_start_offset,
                log_end: inner.log_end_offset,
            });
        }
        self.replaced.fetch_add(1, Ordering::SeqCst);
        self.replace_all_segments(&mut inner, offset, now_ms)
            .map_err(|e| self.dir_state.fail("full truncation", &e))?;
        self.start_empty_at(&mut inner, offset);
        Ok(())
    }

    /// Empties the log and starts it again at offset 0, as a newly created log: what a
    /// broker does with the log of a partition the cluster metadata no longer places on it
    /// (Kafka deletes such a replica's log), so that a drained broker keeps no copy of the
    /// records it no longer serves. Should the partition come back to this broker, it
    /// copies everything from its leader again, as a new replica does.
    ///
    /// All at once, as Kafka deletes a log: the directory is renamed to a `-delete` name
    /// (which start-up removes) and the rename made durable, then a new directory gets an
    /// empty segment at 0, then the old one is removed. A power cut leaves either the old
    /// log whole or an empty one at 0 (a missing or empty directory opens as one), never a
    /// part of the old log that later appends would extend.
    pub fn remove_all_records(&self, now_ms: i64) -> Result<(), StorageError> {
        self.check_open()?;
        let flush = lock(&self.flush_lock);
        let mut inner = lock(&self.inner);
        self.check_open()?;
        let doomed = crate::manager::doomed_dir(&self.dir)
            .ok_or_else(|| StorageError::Io(format!("{} is no partition", self.dir.display())))?;
        let fs = self.dir_state.fs.clone();
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        // Everything that can fail without changing anything, first.
        let what = "removing a replica's records";
        let parent_handle = fs
            .open_dir(parent)
            .map_err(|e| self.dir_state.fail(what, &e))?;
        fs.rename(&self.dir, &doomed)
            .map_err(|e| self.dir_state.fail(what, &e))?;
        // From here on the live name holds no log, or a new one: any failure takes the
        // directory offline (a restart opens a missing or empty directory as an empty log).
        self.replaced.fetch_add(1, Ordering::SeqCst);
        let segment = self
            .fill_new_dir(parent_handle.as_ref(), now_ms)
            .map_err(|e| self.dir_state.fail_after_change(what, &e))?;
        // The old segments' files are in the doomed directory now; their handles close
        // as they drop.
        inner.segments.clear();
        inner.segments.insert(0, segment.without_index_files());
        inner.dir_dirty = false;
        self.start_empty_at(&mut inner, 0);
        drop(inner);
        drop(flush);
        if let Err(e) = fs.remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), error = %e,
                "could not remove a replica's old log; start-up will");
        }
        Ok(())
    }

    /// Makes the rename of this log's directory durable, then a new directory holding an
    /// empty segment at 0, durably.
    fn fill_new_dir(
        &self,
        parent_handle: &dyn crate::fs::FsDir,
        now_ms: i64,
    ) -> io::Result<LogSegment> {
        let fs = self.dir_state.fs.clone();
        parent_handle.sync()?;
        fs.create_dir_all(&self.dir)?;
        let segment = LogSegment::create(&fs, &self.dir_state.handles, &self.dir, 0, now_ms)?;
        segment.file().get()?.sync_data()?;
        fs.open_dir(&self.dir)?.sync()?;
        parent_handle.sync()?;
        Ok(segment)
    }

    /// The in-memory state of a log whose segments were just replaced by one empty
    /// segment at `offset`.
    fn start_empty_at(&self, inner: &mut LogInner, offset: i64) {
        inner.log_start_offset = offset;
        inner.log_end_offset = offset;
        inner.producers = crate::ProducerStateManager::default();
        inner.epochs = crate::LeaderEpochCache::default();
        inner.checkpointed_offset = -1;
        inner.cleaner_checkpoint = 0;
        self.flushed_offset.store(offset, Ordering::SeqCst);
    }

    /// Removes the cleaner's checkpoint, durably: only once no segment it describes is
    /// left. While one is, recovery needs it, as it tells which segments compaction left
    /// with gaps between offsets; without it recovery would cut such a segment at its first
    /// gap, and with it whatever a log that kept the segment (after a full truncation that
    /// failed midway) appended since.
    fn remove_cleaner_checkpoint(&self, dir_handle: &dyn crate::fs::FsDir) -> io::Result<()> {
        let fs = self.dir_state.fs.as_ref();
        crate::fs::remove_if_present(fs, &self.dir.join(cleaner::CHECKPOINT_FILE))?;
        dir_handle.sync()
    }

    /// Creates the empty segment at `offset`, durably, then deletes the producer snapshot
    /// and every older segment, newest first, and last the cleaner checkpoint, which
    /// describes them, each step durable.
    fn replace_all_segments(
        &self,
        inner: &mut LogInner,
        offset: i64,
        now_ms: i64,
    ) -> io::Result<()> {
        let fs = self.dir_state.fs.clone();
        let dir_handle = fs.open_dir(&self.dir)?;
        let segment = LogSegment::create(&fs, &self.dir_state.handles, &self.dir, offset, now_ms)?;
        segment.file().get()?.sync_data()?;
        dir_handle.sync()?;
        let old: Vec<i64> = inner.segments.keys().copied().collect();
        inner.segments.insert(offset, segment.without_index_files());
        inner.dir_dirty = false;
        crate::fs::remove_if_present(fs.as_ref(), &self.dir.join(PRODUCER_SNAPSHOT_FILE))?;
        dir_handle.sync()?;
        for b in old.into_iter().rev() {
            let gone = inner.segments.remove(&b).expect("listed above");
            gone.delete_files()?;
            dir_handle.sync()?;
        }
        self.remove_cleaner_checkpoint(dir_handle.as_ref())
    }

    /// Cuts the files at the batch holding `offset`; returns where the log now ends.
    fn cut_files(&self, inner: &mut LogInner, offset: i64) -> io::Result<i64> {
        let fs = self.dir_state.fs.clone();
        let dir_handle = fs.open_dir(&self.dir)?;
        let (base, segment) = inner
            .segments
            .range(..=offset)
            .next_back()
            .expect("the log start is at or after the first segment");
        let base = *base;
        let file = segment.file().get()?;
        let size = segment.size();
        let from = segment.position_of(offset);
        let found = HeaderWalk::new(&file, size)
            .find(from, |h| h.base + i64::from(h.delta) >= offset)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        // Where the cut segment now ends, and the log with it (if no batch of this segment
        // holds `offset`, it lies in a gap before the next segment: this one stays whole).
        let (cut_at, new_end) = match found {
            Some((pos, h)) => (pos, h.base),
            None => (size, segment.next_offset()),
        };
        drop(file);
        // 1. A producer-state snapshot covering the tail would be loaded after a crash.
        let snapshot = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        if inner.checkpointed_offset > new_end || inner.checkpointed_offset < 0 {
            crate::fs::remove_if_present(fs.as_ref(), &snapshot)?;
            dir_handle.sync()?;
        }
        // 2. Later segments, newest first: a cut at any point leaves a prefix.
        let later: Vec<i64> = inner.segments.range(base + 1..).map(|(b, _)| *b).collect();
        for b in later.into_iter().rev() {
            let gone = inner.segments.remove(&b).expect("listed above");
            gone.delete_files()?;
            dir_handle.sync()?;
        }
        // 3. The cut segment's derived files, then its data.
        let segment = inner.segments.get_mut(&base).expect("found above");
        for path in [segment.index_path(), segment.time_index_path()] {
            crate::fs::remove_if_present(fs.as_ref(), &path)?;
        }
        dir_handle.sync()?;
        let file = segment.file().get()?;
        file.set_len(cut_at)?;
        file.sync_data()?;
        Ok(new_end)
    }
}
