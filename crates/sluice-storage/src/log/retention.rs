//! Retention: deleting whole closed segments by time and size, and DeleteRecords.

use super::*;

impl UnifiedLog {
    /// Raises the log start offset to a checkpointed value found at start-up (DeleteRecords
    /// moves it inside a segment, where the segment files alone cannot show it).
    pub fn restore_log_start_offset(&self, offset: i64) {
        let mut inner = lock(&self.inner);
        let offset = offset.min(inner.log_end_offset);
        if offset > inner.log_start_offset {
            inner.log_start_offset = offset;
            inner.epochs.truncate_from_start(offset);
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
        self.apply_retention_below(now_ms, i64::MAX)
    }

    /// [`UnifiedLog::apply_retention`], deleting only segments that end at or below
    /// `upper` (the partition's high watermark, as Kafka bounds retention): records not yet
    /// committed stay, so a follower that starts again at this log's start never finds
    /// its start past what its leader committed.
    pub fn apply_retention_below(
        &self,
        now_ms: i64,
        upper: i64,
    ) -> Result<RetentionOutcome, StorageError> {
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
            if seg.size() == 0 && seg.base_offset() != active_base {
                return config.retention_ms >= 0;
            }
            // A segment without timestamps ages from when it was created or opened.
            let newest = if seg.max_timestamp() >= 0 {
                seg.max_timestamp()
            } else {
                seg.created_ms()
            };
            config.retention_ms >= 0 && seg.size() > 0 && now_ms - newest > config.retention_ms
        };
        let mut doomed: Vec<i64> = bases
            .iter()
            .copied()
            .take_while(|b| expired(&inner.segments[b]))
            .collect();
        // Only segments wholly at or below `upper`: each ends where the next begins, the
        // active one at the log end.
        let log_end = inner.log_end_offset;
        let end_of = |i: usize| bases.get(i + 1).copied().unwrap_or(log_end);
        let committed = doomed
            .iter()
            .enumerate()
            .take_while(|&(i, _)| end_of(i) <= upper)
            .count();
        doomed.truncate(committed);
        if doomed.last() == Some(&active_base) {
            self.roll(&mut inner, now_ms)?;
        }
        if config.retention_bytes >= 0 {
            let kept: u64 = bases[doomed.len()..]
                .iter()
                .map(|b| inner.segments[b].size())
                .sum();
            let mut excess = kept as i64 - config.retention_bytes;
            // Closed segments only: when everything expired above, there are none left.
            let closed_end = (bases.len() - 1).max(doomed.len());
            for (i, b) in bases.iter().enumerate().take(closed_end).skip(doomed.len()) {
                let size = inner.segments[b].size() as i64;
                if excess - size < 0 || end_of(i) > upper {
                    break;
                }
                excess -= size;
                doomed.push(*b);
            }
        }
        for b in doomed {
            let segment = inner.segments.remove(&b).expect("listed above");
            outcome.deleted_segments += 1;
            outcome.deleted_bytes += segment.size();
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
        let start = inner.log_start_offset;
        inner.epochs.truncate_from_start(start);
        outcome.log_start_offset = start;
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
        inner.epochs.truncate_from_start(target);
        Ok(target)
    }
}
