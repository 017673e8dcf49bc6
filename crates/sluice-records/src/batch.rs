//! The fixed 61-byte batch header and whole-batch validation.

use crate::{compression, record, BatchError};

/// Bytes before `batch_length` counts: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 header up to and including `records_count`.
pub const BATCH_HEADER_SIZE: usize = 61;

pub(crate) const BATCH_LENGTH_OFFSET: usize = 8;
const LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;
pub(crate) const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Where `records_count`, the last header field, starts.
pub(crate) const RECORDS_COUNT_OFFSET: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;

/// The codec named by the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The parsed fixed header of one v2 batch. Parsing checks only that the header is present;
/// [`BatchHeader::validate`] checks the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}
fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

impl BatchHeader {
    /// Reads the header at the front of `buf`. Needs [`BATCH_HEADER_SIZE`] bytes; does not look
    /// at the records and does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_SIZE {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_SIZE,
                available: buf.len(),
            });
        }
        Ok(Self {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Reads only base offset and length: enough to step over a batch. Needs [`LOG_OVERHEAD`]
    /// bytes. Returns `(base_offset, total_size)` where total_size includes the overhead.
    pub fn peek_size(buf: &[u8]) -> Result<(i64, usize), BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: LOG_OVERHEAD,
                available: buf.len(),
            });
        }
        let length = be_i32(buf, BATCH_LENGTH_OFFSET);
        let min_length = (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32;
        if length < min_length {
            return Err(BatchError::Corrupt("batch length below the v2 header size"));
        }
        Ok((be_i64(buf, 0), LOG_OVERHEAD + length as usize))
    }

    /// Total bytes of the batch including base offset and length fields.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// The last offset in the batch. Wrapping: a client's unpatched base offset can be
    /// anything, and examining a hostile header must not panic.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset the next batch after this one starts at.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(BatchError::Corrupt("unknown compression codec")),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// The checks every batch passes, stored or not: magic, length (exactly `buf`), CRC-32C.
    fn check_frame(buf: &[u8]) -> Result<Self, BatchError> {
        let header = Self::parse(buf)?;
        if header.magic != 2 {
            return Err(BatchError::Corrupt("magic is not 2"));
        }
        let (_, total) = Self::peek_size(buf)?;
        if total != buf.len() {
            return Err(if total > buf.len() {
                BatchError::Truncated {
                    needed: total,
                    available: buf.len(),
                }
            } else {
                BatchError::Corrupt("batch length disagrees with the bytes given")
            });
        }
        if crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]) != header.crc {
            return Err(BatchError::Corrupt("CRC-32C mismatch"));
        }
        Ok(header)
    }

    /// Checks a whole batch held in `buf` (exactly its bytes): magic, length, CRC-32C, and
    /// for uncompressed batches every record (count, offset deltas, lengths, timestamps).
    /// Compressed batches are checked by header and CRC only; they are never decoded here.
    pub fn validate(buf: &[u8]) -> Result<Self, BatchError> {
        let header = Self::check_frame(buf)?;
        if header.records_count < 0 || header.last_offset_delta < 0 {
            return Err(BatchError::InvalidRecord(
                "negative record count or offset delta",
            ));
        }
        let compression = header.compression()?;
        if header.records_count == 0 && !header.is_control() {
            return Err(BatchError::InvalidRecord("batch has no records"));
        }
        if header.last_offset_delta != header.records_count - 1 {
            return Err(BatchError::InvalidRecord(
                "last offset delta disagrees with record count",
            ));
        }
        if compression == Compression::None {
            let mut expected = 0i32;
            header.walk_counted(buf, |rec| {
                if rec.offset_delta != expected {
                    return Err(BatchError::InvalidRecord(
                        "offset deltas are not consecutive",
                    ));
                }
                let ts = header.base_timestamp.saturating_add(rec.timestamp_delta);
                if header.timestamp_type() == TimestampType::CreateTime && ts < -1 {
                    return Err(BatchError::InvalidTimestamp(ts));
                }
                expected += 1;
                Ok(())
            })?;
        }
        Ok(header)
    }

    /// Walks the records of this uncompressed batch, calling `check` on each, and checks that
    /// there are exactly `records_count` of them.
    fn walk_counted(
        &self,
        buf: &[u8],
        mut check: impl FnMut(&record::RawRecord<'_>) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let mut count = 0i32;
        record::walk(&buf[BATCH_HEADER_SIZE..], |rec| {
            check(rec)?;
            count += 1;
            Ok(())
        })?;
        if count != self.records_count {
            return Err(BatchError::InvalidRecord(
                "record count disagrees with the records",
            ));
        }
        Ok(())
    }

    /// Checks a batch as stored, which may have been compacted: what [`BatchHeader::validate`]
    /// checks, except that records may be missing (offset deltas increase but may skip,
    /// within `last_offset_delta`, as in a compacted batch) and a batch may hold none at all.
    /// For recovery and the cleaner, never for client input.
    pub fn validate_stored(buf: &[u8]) -> Result<Self, BatchError> {
        let header = Self::check_frame(buf)?;
        if header.records_count < 0
            || header.last_offset_delta < 0
            || i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1
        {
            return Err(BatchError::InvalidRecord(
                "record count and offset delta disagree",
            ));
        }
        if header.compression()? == Compression::None {
            let mut previous = -1i64;
            header.walk_counted(buf, |rec| {
                let delta = i64::from(rec.offset_delta);
                if delta <= previous || delta > i64::from(header.last_offset_delta) {
                    return Err(BatchError::InvalidRecord("offset deltas out of order"));
                }
                previous = delta;
                Ok(())
            })?;
        }
        Ok(header)
    }

    /// Decodes the records of a batch (decompressing if needed), refusing to produce more than
    /// `max_decompressed_bytes` of decompressed data.
    pub fn records(
        &self,
        buf: &[u8],
        max_decompressed_bytes: usize,
    ) -> Result<Vec<crate::Record>, BatchError> {
        let body = buf
            .get(BATCH_HEADER_SIZE..self.total_size())
            .ok_or(BatchError::Truncated {
                needed: self.total_size(),
                available: buf.len(),
            })?;
        let plain;
        let records_bytes: &[u8] = match self.compression()? {
            Compression::None => body,
            codec => {
                plain = compression::decompress(codec, body, max_decompressed_bytes)?;
                &plain
            }
        };
        let mut out = Vec::new();
        record::walk(records_bytes, |rec| {
            out.push(rec.to_owned_record(self));
            Ok(())
        })?;
        if out.len() != self.records_count.max(0) as usize {
            return Err(BatchError::InvalidRecord(
                "record count disagrees with the records",
            ));
        }
        Ok(out)
    }
}

/// Writes `base_offset` into the batch at the front of `buf`. The CRC does not cover this field.
pub fn patch_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch. The CRC does not cover this field.
pub fn patch_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp_ms` as its max timestamp and recomputes the
/// CRC, as Kafka does for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(buf: &mut [u8], timestamp_ms: i64) {
    let attributes = be_i16(buf, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    buf[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a byte string holding consecutive batches into `(header, bytes)` pairs, checking
/// lengths only. Stops with an error at the first batch that does not fit.
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<&'a [u8], BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = BatchHeader::peek_size(self.rest).and_then(|(_, total)| {
            if total > self.rest.len() {
                Err(BatchError::Truncated {
                    needed: total,
                    available: self.rest.len(),
                })
            } else {
                Ok(total)
            }
        });
        match result {
            Ok(total) => {
                let (batch, rest) = self.rest.split_at(total);
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, NewRecord};
    use proptest::prelude::*;

    fn sample_batch(n: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_700_000_000_000);
        for i in 0..n {
            builder.push(NewRecord {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(vec![i as u8; i % 7]),
                headers: vec![("h".into(), Some(b"v".to_vec()))],
                timestamp_delta: i as i64,
            });
        }
        builder.build()
    }

    #[test]
    fn built_batch_validates_and_round_trips_records() {
        let bytes = sample_batch(5);
        let header = BatchHeader::validate(&bytes).unwrap();
        assert_eq!(header.records_count, 5);
        assert_eq!(header.last_offset_delta, 4);
        let records = header.records(&bytes, 1 << 20).unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[3].key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(records[3].offset_delta, 3);
        assert_eq!(records[3].timestamp, 1_700_000_000_003);
        assert_eq!(records[3].headers[0].key, "h");
    }

    #[test]
    fn patching_base_offset_keeps_the_crc_valid() {
        let mut bytes = sample_batch(3);
        patch_base_offset(&mut bytes, 42);
        patch_partition_leader_epoch(&mut bytes, 7);
        let header = BatchHeader::validate(&bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 44);
    }

    #[test]
    fn log_append_time_rewrites_max_timestamp_and_crc() {
        let mut bytes = sample_batch(2);
        set_log_append_time(&mut bytes, 99);
        let header = BatchHeader::validate(&bytes).unwrap();
        assert_eq!(header.max_timestamp, 99);
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    }

    #[test]
    fn wrong_record_count_is_invalid_record() {
        let mut bytes = sample_batch(3);
        // Claim 4 records (and a matching offset delta) while only 3 are present.
        bytes[23..27].copy_from_slice(&3i32.to_be_bytes());
        bytes[57..61].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            BatchHeader::validate(&bytes),
            Err(BatchError::InvalidRecord(_))
        ));
    }

    proptest! {
        /// Any single flipped bit outside the CRC-exempt fields is caught.
        #[test]
        fn any_bit_flip_in_the_crc_range_is_detected(n in 1usize..6, pos in 21usize..200, bit in 0u8..8) {
            let mut bytes = sample_batch(n);
            let pos = pos % bytes.len();
            prop_assume!(pos >= 21);
            bytes[pos] ^= 1 << bit;
            prop_assert!(BatchHeader::validate(&bytes).is_err());
        }

        /// Every strict prefix of a batch is refused, never accepted and never a panic.
        #[test]
        fn every_prefix_is_refused(n in 1usize..6, cut in 0usize..400) {
            let bytes = sample_batch(n);
            let cut = cut % bytes.len();
            prop_assert!(BatchHeader::validate(&bytes[..cut]).is_err());
        }

        /// Arbitrary bytes never panic the validator.
        #[test]
        fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = BatchHeader::validate(&bytes);
            for batch in BatchIter::new(&bytes) {
                let _ = batch;
            }
        }
    }
}
