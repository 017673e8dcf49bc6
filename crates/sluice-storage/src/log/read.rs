//! Reading: slices of segment files below a bound, with the aborted transactions a
//! read-committed consumer needs, and lookups by timestamp.

use super::*;

/// A batch header as a read walks past it.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalkedBatch {
    pub(super) pos: u64,
    pub(super) base: i64,
    pub(super) delta: i32,
    pub(super) size: u64,
}

/// Steps over stored batches by their headers, reading only the first bytes of each.
pub(super) struct HeaderWalk<'a> {
    file: &'a CountedFile,
    end: u64,
}

impl<'a> HeaderWalk<'a> {
    pub(super) fn new(file: &'a CountedFile, end: u64) -> Self {
        Self { file, end }
    }

    /// The first batch from `pos` on for which `stop` holds, with its position; `None` if the
    /// walk reaches `end` first.
    pub(super) fn find(
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

impl UnifiedLog {
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

    pub(super) fn lso_of(inner: &LogInner) -> i64 {
        inner
            .producers
            .first_unstable_offset()
            .unwrap_or(inner.log_end_offset)
            .clamp(inner.log_start_offset, inner.log_end_offset)
    }

    /// Whether `producer_id` has a transaction open on this partition at `epoch`.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        lock(&self.inner)
            .producers
            .in_transaction(producer_id, epoch)
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
            for e in segment.aborted() {
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
                    .filter(|s| target < s.next_offset())
                    .or_else(|| inner.segments.range(target..).map(|(_, s)| s).next());
                let Some(segment) = segment else {
                    return Ok(None);
                };
                (
                    segment.file().clone(),
                    segment.position_of(target),
                    segment.size(),
                    segment.next_offset().max(segment.base_offset() + 1),
                    segment.base_offset(),
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
                    .filter(|s| Arc::ptr_eq(s.file(), &slot))
                    .map(|s| {
                        (
                            s.position_of(upper),
                            s.indexed_position_at_or_below(limit_end),
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
            .map(|s| s.max_timestamp())
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
                .filter(|s| s.max_timestamp() >= target)
                .map(|s| (s.file().clone(), s.position_for_timestamp(target), s.size()))
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
