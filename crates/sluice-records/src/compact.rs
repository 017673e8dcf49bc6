//! Rewriting stored batches for log compaction: the one place the broker changes a batch's
//! records. Kept records are copied byte for byte (their offset and timestamp deltas stay
//! relative to the unchanged base offset and base timestamp), so keys, values, headers,
//! timestamps and offsets are preserved exactly; the header keeps its base offset,
//! `last_offset_delta`, producer id, epoch and base sequence, so offsets and producer
//! sequence information do not move.
//!
//! A rebuilt batch is written uncompressed; a batch that loses every record is dropped by the
//! caller, leaving a gap in the segment's offsets (see `BatchHeader::validate_stored`).

use crate::batch::{
    ATTRIBUTES_OFFSET, BATCH_HEADER_SIZE, BATCH_LENGTH_OFFSET, COMPRESSION_MASK, CRC_OFFSET,
    LOG_OVERHEAD, MAX_TIMESTAMP_OFFSET, RECORDS_COUNT_OFFSET,
};
use crate::{compression, record, BatchError, BatchHeader, Compression, TimestampType};

/// What the cleaner sees of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// A null value: a tombstone.
    pub is_tombstone: bool,
}

/// The outcome of filtering one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept: write the stored bytes as they are.
    Unchanged,
    /// Some records kept: the rebuilt batch.
    Rebuilt(Vec<u8>),
    /// No record kept.
    Empty,
}

/// Calls `visit` with every record of a stored batch, decompressing (bounded by
/// `max_decompressed_bytes`) if needed.
pub fn for_each_record(
    buf: &[u8],
    max_decompressed_bytes: usize,
    mut visit: impl FnMut(RecordView<'_>),
) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    with_records(&header, buf, max_decompressed_bytes, |rec| {
        visit(view(&header, rec));
        Ok(())
    })?;
    Ok(header)
}

fn view<'a>(header: &BatchHeader, rec: &record::RawRecord<'a>) -> RecordView<'a> {
    let timestamp = match header.timestamp_type() {
        TimestampType::LogAppendTime => header.max_timestamp,
        TimestampType::CreateTime => header.base_timestamp.saturating_add(rec.timestamp_delta),
    };
    RecordView {
        offset: header.base_offset.wrapping_add(i64::from(rec.offset_delta)),
        timestamp,
        key: rec.key,
        value: rec.value,
        is_tombstone: rec.value.is_none(),
    }
}

fn with_records(
    header: &BatchHeader,
    buf: &[u8],
    max_decompressed_bytes: usize,
    mut visit: impl FnMut(&record::RawRecord<'_>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let body = buf
        .get(BATCH_HEADER_SIZE..header.total_size())
        .ok_or(BatchError::Truncated {
            needed: header.total_size(),
            available: buf.len(),
        })?;
    match header.compression()? {
        Compression::None => record::walk(body, |r| visit(r)),
        codec => {
            let plain = compression::decompress(codec, body, max_decompressed_bytes)?;
            record::walk(&plain, |r| visit(r))
        }
    }
}

/// Keeps the records of a stored batch for which `keep` is true.
pub fn filter_batch(
    buf: &[u8],
    max_decompressed_bytes: usize,
    mut keep: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<Filtered, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.is_control() {
        return Ok(Filtered::Unchanged);
    }
    let mut body = Vec::new();
    let (mut kept, mut total) = (0i32, 0i32);
    let mut max_timestamp = -1i64;
    with_records(&header, buf, max_decompressed_bytes, |rec| {
        total += 1;
        let v = view(&header, rec);
        if keep(&v) {
            kept += 1;
            body.extend_from_slice(rec.raw);
            max_timestamp = max_timestamp.max(v.timestamp);
        }
        Ok(())
    })?;
    if kept == total {
        return Ok(Filtered::Unchanged);
    }
    if kept == 0 {
        return Ok(Filtered::Empty);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + body.len());
    out.extend_from_slice(&buf[..BATCH_HEADER_SIZE]);
    out.extend_from_slice(&body);
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = header.attributes & !COMPRESSION_MASK;
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    if header.timestamp_type() == TimestampType::CreateTime {
        out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_timestamp.to_be_bytes());
    }
    out[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&kept.to_be_bytes());
    seal(&mut out);
    Ok(Filtered::Rebuilt(out))
}

fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{patch_base_offset, BatchBuilder, NewRecord};

    fn batch(base: i64, keys: &[Option<&str>], compress: bool) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        b.producer(7, 1, 40);
        for (i, k) in keys.iter().enumerate() {
            b.push(NewRecord {
                key: k.map(|k| k.as_bytes().to_vec()),
                value: (i != 1).then(|| format!("v{i}").into_bytes()),
                headers: vec![("h".into(), Some(vec![i as u8]))],
                timestamp_delta: i as i64 * 10,
            });
        }
        let mut out = b.build();
        patch_base_offset(&mut out, base);
        if compress {
            out = gzip(&out);
        }
        out
    }

    /// The same batch with its records gzip-compressed.
    fn gzip(plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&plain[BATCH_HEADER_SIZE..]).unwrap();
        let body = enc.finish().unwrap();
        let mut out = plain[..BATCH_HEADER_SIZE].to_vec();
        out.extend_from_slice(&body);
        let length = (out.len() - LOG_OVERHEAD) as i32;
        out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&1i16.to_be_bytes());
        seal(&mut out);
        out
    }

    #[test]
    fn filtering_keeps_offsets_headers_and_producer_fields_and_validates_as_stored() {
        for compress in [false, true] {
            let original = batch(100, &[Some("a"), Some("b"), Some("c"), Some("d")], compress);
            let before = BatchHeader::validate_stored(&original).unwrap();
            let Filtered::Rebuilt(out) =
                filter_batch(&original, 1 << 20, |r| r.offset != 101 && r.offset != 103).unwrap()
            else {
                panic!("expected a rebuilt batch")
            };
            let after = BatchHeader::validate_stored(&out).unwrap();
            assert_eq!(after.base_offset, 100);
            assert_eq!(after.next_offset(), before.next_offset());
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence),
                (7, 1, 40)
            );
            assert_eq!(after.records_count, 2);
            assert_eq!(after.compression().unwrap(), Compression::None);
            assert_eq!(after.max_timestamp, 1_020);
            let recs = after.records(&out, 1 << 20).unwrap();
            let all = before.records(&original, 1 << 20).unwrap();
            assert_eq!(recs, vec![all[0].clone(), all[2].clone()]);
            // What validate (client input) would refuse, validate_stored accepts.
            assert!(BatchHeader::validate(&out).is_err());
        }
    }

    #[test]
    fn all_or_nothing() {
        let original = batch(5, &[Some("a"), Some("b")], false);
        assert_eq!(
            filter_batch(&original, 1 << 20, |_| true).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&original, 1 << 20, |_| false).unwrap(),
            Filtered::Empty
        );
        let mut tombstones = 0;
        for_each_record(&original, 1 << 20, |r| {
            tombstones += usize::from(r.is_tombstone)
        })
        .unwrap();
        assert_eq!(tombstones, 1);
    }
}
