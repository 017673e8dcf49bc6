//! Appending: validation, offset assignment, the one `pwritev` per append, and rolling
//! segments.

use super::*;

impl UnifiedLog {
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

    /// Appends batches a follower fetched from its leader, as they are: offsets, leader
    /// epochs and timestamps were assigned there, so nothing is patched. Each batch must
    /// be whole and intact (CRC), the first must start at this log's end and the rest
    /// follow without gaps (a compacted leader log may skip offsets between batches, never
    /// back). The leader epoch cache and producer state follow the batches' headers, as
    /// recovery rebuilds them. Either every batch is appended or none is.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.check_open()?;
        // Everything is checked before anything is written: whole, intact batches, offsets
        // that cannot overflow, control batches whose type can be read.
        let mut headers = Vec::new();
        let mut commits = Vec::new();
        for batch in BatchIter::new(records) {
            let batch = batch?;
            let h = BatchHeader::validate_stored(batch)?;
            if h.base_offset < 0
                || h.base_offset
                    .checked_add(i64::from(h.last_offset_delta) + 1)
                    .is_none()
            {
                return Err(StorageError::InvalidRecord(format!(
                    "replicated batch at offset {} out of range",
                    h.base_offset
                )));
            }
            commits.push(if h.is_control() {
                sluice_records::marker_of(&h, batch)?
            } else {
                None
            });
            headers.push(h);
        }
        let Some(first) = headers.first() else {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        };
        let mut inner = lock(&self.inner);
        self.check_open()?;
        let base_offset = inner.log_end_offset;
        if first.base_offset < base_offset {
            return Err(StorageError::InvalidRecord(format!(
                "replicated batch at offset {} is below the log end {base_offset}",
                first.base_offset
            )));
        }
        let mut expect = first.base_offset;
        for h in &headers {
            if h.base_offset < expect {
                return Err(StorageError::InvalidRecord(format!(
                    "replicated batches overlap at offset {}",
                    h.base_offset
                )));
            }
            expect = h.next_offset();
        }
        let count = expect - first.base_offset;
        if count > i64::from(i32::MAX) {
            return Err(StorageError::InvalidRecord(format!(
                "one append may not span {count} offsets"
            )));
        }
        // A gap (the leader compacted it away) starts a new segment at the first batch, so
        // a segment's first batch is at its base offset.
        if first.base_offset > base_offset {
            inner.log_end_offset = first.base_offset;
            if let Err(e) = self.roll(&mut inner, now_ms) {
                inner.log_end_offset = base_offset;
                return Err(e);
            }
        }
        self.maybe_roll(&mut inner, records.len() as u64, count, now_ms)?;
        let mut slices = vec![IoSlice::new(records)];
        let interval = inner.config.index_interval_bytes;
        if let Err(e) = inner.active().append(&mut slices, &headers, interval) {
            return Err(self.dir_state.fail("segment write", &e));
        }
        inner.log_end_offset = expect;
        for (h, commit) in headers.iter().zip(commits) {
            inner.epochs.assign(h.partition_leader_epoch, h.base_offset);
            if h.is_control() {
                if let Some(aborted) =
                    commit.and_then(|(c, ce)| inner.producers.record_marker(h, c, ce, now_ms))
                {
                    if let Err(e) = inner.active().append_aborted(aborted) {
                        return Err(self.dir_state.fail("transaction index write", &e));
                    }
                }
            } else {
                inner.producers.record(h, now_ms);
            }
        }
        Ok(AppendOutcome {
            base_offset: first.base_offset,
            last_offset: expect - 1,
            log_append_time: -1,
            log_start_offset: inner.log_start_offset,
            duplicate: false,
        })
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
        let marker = Some((commit, coordinator_epoch));
        self.append_checked(&batch, vec![header], marker, leader_epoch, now_ms)
    }

    /// Appends validated batches; `marker` is `Some((commit, coordinator epoch))` for a
    /// transaction marker.
    fn append_checked(
        &self,
        records: &[u8],
        mut headers: Vec<BatchHeader>,
        marker: Option<(bool, i32)>,
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
        let check = match (&headers[..], marker) {
            ([h], Some((_, coordinator_epoch))) => inner
                .producers
                .check_marker(h.producer_id, h.producer_epoch, coordinator_epoch)
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
        if matches!(marker, Some((false, _))) {
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
        if let Err(e) = inner.active().append(&mut slices, &headers, interval) {
            // A short write may have left a partial batch; recovery will cut it.
            return Err(self.dir_state.fail("segment write", &e));
        }
        inner.log_end_offset = offset;
        inner.epochs.assign(leader_epoch, base_offset);
        if let Some((commit, coordinator_epoch)) = marker {
            let recorded =
                inner
                    .producers
                    .record_marker(&headers[0], commit, coordinator_epoch, now_ms);
            if let Some(aborted) = recorded {
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
        let LogInner {
            segments,
            config,
            log_end_offset,
            ..
        } = inner;
        let active = segments.values().next_back().expect("a log has a segment");
        if !active.should_roll(bytes, records, *log_end_offset, now_ms, config) {
            return Ok(());
        }
        self.roll(inner, now_ms)
    }

    /// Closes the active segment (persisting its indexes) and starts a new, empty one at the
    /// log end offset.
    pub(super) fn roll(&self, inner: &mut LogInner, now_ms: i64) -> Result<(), StorageError> {
        let leo = inner.log_end_offset;
        if inner.active().base_offset() == leo {
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
