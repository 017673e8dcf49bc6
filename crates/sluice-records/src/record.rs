//! Records inside a batch.
//!
//! ```text
//! length: varint            bytes after this field
//! attributes: int8          unused, 0
//! timestamp_delta: varlong
//! offset_delta: varint
//! key_length: varint        -1 = null key
//! key: bytes
//! value_length: varint      -1 = null value
//! value: bytes
//! header_count: varint
//! headers: [key_length varint, key, value_length varint, value] * header_count
//! ```

use crate::varint::{read_varint, read_varlong};
use crate::{BatchError, BatchHeader, TimestampType};

/// A record decoded into owned buffers: for tooling (ListOffsets by timestamp, tests), never
/// for the produce or fetch path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

pub(crate) struct RawRecord<'a> {
    /// The whole encoded record, length prefix included: what the cleaner copies.
    pub raw: &'a [u8],
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

impl RawRecord<'_> {
    pub(crate) fn to_owned_record(&self, batch: &BatchHeader) -> Record {
        let timestamp = match batch.timestamp_type() {
            TimestampType::LogAppendTime => batch.max_timestamp,
            TimestampType::CreateTime => batch.base_timestamp.saturating_add(self.timestamp_delta),
        };
        Record {
            offset_delta: self.offset_delta,
            offset: batch.base_offset + i64::from(self.offset_delta),
            timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: String::from_utf8_lossy(k).into_owned(),
                    value: v.map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], BatchError> {
    if buf.len() < len {
        return Err(BatchError::InvalidRecord(
            "record field runs past the record",
        ));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn nullable_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    match read_varint(buf)? {
        -1 => Ok(None),
        len if len >= 0 => take(buf, len as usize).map(Some),
        _ => Err(BatchError::InvalidRecord("negative length")),
    }
}

/// Parses every record in `body` in order, calling `visit` for each. Each record must use
/// exactly its declared length. The header count is checked against the bytes left before
/// anything is allocated for it.
pub(crate) fn walk<'a>(
    mut body: &'a [u8],
    mut visit: impl FnMut(&RawRecord<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    while !body.is_empty() {
        let start = body;
        let len = read_varint(&mut body)?;
        if len < 0 {
            return Err(BatchError::InvalidRecord("negative record length"));
        }
        let mut rec = take(&mut body, len as usize)?;
        let _attributes = take(&mut rec, 1)?;
        let timestamp_delta = read_varlong(&mut rec)?;
        let offset_delta = read_varint(&mut rec)?;
        let key = nullable_bytes(&mut rec)?;
        let value = nullable_bytes(&mut rec)?;
        let header_count = read_varint(&mut rec)?;
        // Each header needs at least two bytes (two one-byte varints).
        if header_count < 0 || header_count as usize > rec.len() / 2 {
            return Err(BatchError::InvalidRecord(
                "header count does not fit the record",
            ));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key_len = read_varint(&mut rec)?;
            if key_len < 0 {
                return Err(BatchError::InvalidRecord("null header key"));
            }
            let key = take(&mut rec, key_len as usize)?;
            let value = nullable_bytes(&mut rec)?;
            headers.push((key, value));
        }
        if !rec.is_empty() {
            return Err(BatchError::InvalidRecord(
                "record length disagrees with its fields",
            ));
        }
        let raw = &start[..start.len() - body.len()];
        visit(&RawRecord {
            raw,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })?;
    }
    Ok(())
}
