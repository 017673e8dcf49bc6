//! The message formats before record batches (magic 0 and 1), for clients that still speak
//! them: Produce v0-2 sends message sets, Fetch v0-3 expects them back. Sluice stores only
//! v2 batches, so a produced message set is converted once into a batch (then validated like
//! any client batch), and fetched batches are converted into a message set for such clients.
//!
//! ```text
//! message set: a sequence of
//!   offset: i64 | message_size: i32 | message (message_size bytes)
//! message, magic 0:
//!   crc: u32 | magic: i8 = 0 | attributes: i8 | key: bytes | value: bytes
//! message, magic 1:
//!   crc: u32 | magic: i8 = 1 | attributes: i8 | timestamp: i64 | key: bytes | value: bytes
//! bytes: i32 length (-1 = null) | data
//! crc: CRC-32 (IEEE) of everything after it
//! attributes: bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4), bit 3 timestamp type (magic 1)
//! A compressed message ("wrapper") holds, as its value, the compressed message set of its
//! inner messages, which are themselves uncompressed.
//! ```

use crate::compression::{codec_bits, compress, decompress};
use crate::varint::{write_varint, write_varlong};
use crate::{BatchError, BatchHeader, BatchIter, Compression};

/// No timestamp: what magic 0 messages, which have none, get in a v2 batch (Kafka's
/// `RecordBatch.NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

const OFFSET_AND_SIZE: usize = 12;
/// crc, magic, attributes, key length, value length.
const MESSAGE_V0_MIN: usize = 4 + 1 + 1 + 4 + 4;
/// The same plus the timestamp.
const MESSAGE_V1_MIN: usize = MESSAGE_V0_MIN + 8;
const CODEC_MASK: u8 = 0x07;
const LOG_APPEND_TIME_BIT: u8 = 0x08;

/// One message of a legacy message set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message<'a> {
    magic: i8,
    attributes: u8,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Reads a length-prefixed byte field; `None` for null.
fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let truncated = || BatchError::Corrupt("message field truncated");
    let len = be_i32(buf.get(..4).ok_or_else(truncated)?);
    *buf = &buf[4..];
    if len < 0 {
        return if len == -1 {
            Ok(None)
        } else {
            Err(BatchError::Corrupt("negative message field length"))
        };
    }
    let field = buf.get(..len as usize).ok_or_else(truncated)?;
    *buf = &buf[len as usize..];
    Ok(Some(field))
}

/// Parses one message body (after offset and size), checking its CRC.
fn parse_message(body: &[u8]) -> Result<Message<'_>, BatchError> {
    if body.len() < MESSAGE_V0_MIN {
        return Err(BatchError::Corrupt("message shorter than its header"));
    }
    let crc = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
    if crc32fast::hash(&body[4..]) != crc {
        return Err(BatchError::Corrupt("message CRC mismatch"));
    }
    let magic = body[4] as i8;
    let attributes = body[5];
    let mut rest = &body[6..];
    let timestamp = match magic {
        0 => NO_TIMESTAMP,
        1 => {
            if body.len() < MESSAGE_V1_MIN {
                return Err(BatchError::Corrupt("message shorter than its header"));
            }
            let ts = be_i64(rest);
            rest = &rest[8..];
            ts
        }
        _ => return Err(BatchError::Corrupt("message magic is neither 0 nor 1")),
    };
    let key = read_bytes(&mut rest)?;
    let value = read_bytes(&mut rest)?;
    if !rest.is_empty() {
        return Err(BatchError::Corrupt("message has bytes after its value"));
    }
    Ok(Message {
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

fn codec_of(attributes: u8) -> Result<Compression, BatchError> {
    match attributes & CODEC_MASK {
        0 => Ok(Compression::None),
        1 => Ok(Compression::Gzip),
        2 => Ok(Compression::Snappy),
        3 => Ok(Compression::Lz4),
        _ => Err(BatchError::Corrupt("unknown codec in a legacy message")),
    }
}

/// Walks the messages of a message set. A trailing partial message is an error: a producer
/// never sends one.
fn walk<'a>(
    set: &'a [u8],
    mut visit: impl FnMut(Message<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut rest = set;
    while !rest.is_empty() {
        if rest.len() < OFFSET_AND_SIZE {
            return Err(BatchError::Truncated {
                needed: OFFSET_AND_SIZE,
                available: rest.len(),
            });
        }
        let size = be_i32(&rest[8..]);
        if size < MESSAGE_V0_MIN as i32 {
            return Err(BatchError::Corrupt(
                "message size below the smallest message",
            ));
        }
        let end = OFFSET_AND_SIZE + size as usize;
        let body = rest
            .get(OFFSET_AND_SIZE..end)
            .ok_or(BatchError::Truncated {
                needed: end,
                available: rest.len(),
            })?;
        visit(parse_message(body)?)?;
        rest = &rest[end..];
    }
    Ok(())
}

/// One record taken out of a legacy message set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRecord {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// What a produced message set held: its records, the magic and the codec it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSet {
    pub magic: i8,
    pub codec: Compression,
    pub records: Vec<LegacyRecord>,
}

/// Walks the records of a produced message set, decompressing wrapper messages (at most
/// `max_decompressed_bytes` in all) and checking every CRC; returns the set's magic and codec.
/// Messages of one set must share one magic; nested compression is refused, as Kafka
/// refuses it.
fn visit_message_set(
    set: &[u8],
    max_decompressed_bytes: usize,
    mut visit: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>),
) -> Result<(i8, Compression), BatchError> {
    let mut magic = -1i8;
    let mut codec = Compression::None;
    let mut count = 0usize;
    let mut budget = max_decompressed_bytes;
    walk(set, |m| {
        if magic == -1 {
            magic = m.magic;
        }
        if magic != m.magic {
            return Err(BatchError::InvalidRecord(
                "one message set mixes magic 0 and 1",
            ));
        }
        let wrapper_codec = codec_of(m.attributes)?;
        if wrapper_codec == Compression::None {
            visit(m.timestamp, m.key, m.value);
            count += 1;
            return Ok(());
        }
        codec = wrapper_codec;
        let packed = m
            .value
            .ok_or(BatchError::Corrupt("compressed message without a value"))?;
        let inner = decompress(wrapper_codec, packed, budget)?;
        budget -= inner.len();
        let wrapper_time =
            (m.magic == 1 && m.attributes & LOG_APPEND_TIME_BIT != 0).then_some(m.timestamp);
        walk(&inner, |im| {
            if im.magic != m.magic {
                return Err(BatchError::InvalidRecord(
                    "an inner message's magic differs from its wrapper's",
                ));
            }
            if codec_of(im.attributes)? != Compression::None {
                return Err(BatchError::InvalidRecord("nested compression"));
            }
            visit(wrapper_time.unwrap_or(im.timestamp), im.key, im.value);
            count += 1;
            Ok(())
        })
    })?;
    if count == 0 {
        return Err(BatchError::InvalidRecord("a message set without messages"));
    }
    Ok((magic, codec))
}

/// Reads a produced message set into owned records (see [`visit_message_set`]'s checks).
pub fn read_message_set(
    set: &[u8],
    max_decompressed_bytes: usize,
) -> Result<MessageSet, BatchError> {
    let mut records = Vec::new();
    let (magic, codec) =
        visit_message_set(set, max_decompressed_bytes, |timestamp, key, value| {
            records.push(LegacyRecord {
                timestamp,
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
            })
        })?;
    Ok(MessageSet {
        magic,
        codec,
        records,
    })
}

/// Accumulates v2 records, encoded as they come, into one batch body.
struct BatchWriter {
    body: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

impl BatchWriter {
    fn new(capacity: usize) -> Self {
        Self {
            body: Vec::with_capacity(capacity),
            count: 0,
            base_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
        }
    }

    fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        let delta = timestamp.wrapping_sub(self.base_timestamp);
        let field_len = |f: Option<&[u8]>| match f {
            None => varint_len(-1),
            Some(b) => varint_len(b.len() as i64) + b.len(),
        };
        let len = 1
            + varint_len(delta)
            + varint_len(i64::from(self.count))
            + field_len(key)
            + field_len(value)
            + 1;
        write_varint(&mut self.body, len as i32);
        self.body.push(0); // attributes
        write_varlong(&mut self.body, delta);
        write_varint(&mut self.body, self.count);
        for field in [key, value] {
            match field {
                None => write_varint(&mut self.body, -1),
                Some(b) => {
                    write_varint(&mut self.body, b.len() as i32);
                    self.body.extend_from_slice(b);
                }
            }
        }
        write_varint(&mut self.body, 0); // no headers
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The batch: base offset 0, no producer id, CreateTime, records in `codec`.
    fn finish(self, codec: Compression) -> Vec<u8> {
        let packed;
        let body = if codec == Compression::None {
            &self.body
        } else {
            packed = compress(codec, &self.body);
            &packed
        };
        let mut out = Vec::with_capacity(crate::BATCH_HEADER_SIZE + body.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let length = (crate::BATCH_HEADER_SIZE - crate::LOG_OVERHEAD + body.len()) as i32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        out.extend_from_slice(&codec_bits(codec).to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(body);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Builds one v2 batch (base offset 0, no producer id, CreateTime) holding `records`, its body
/// compressed with `codec`.
pub fn to_batch(records: &[LegacyRecord], codec: Compression) -> Vec<u8> {
    let mut w = BatchWriter::new(0);
    for r in records {
        w.push(r.timestamp, r.key.as_deref(), r.value.as_deref());
    }
    w.finish(codec)
}

/// A produced message set converted into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub batch: Vec<u8>,
    pub records: usize,
    pub magic: i8,
}

/// Converts a produced message set (checked as [`read_message_set`] checks it) into one v2
/// batch in the codec it came with, in one pass: each record is encoded as it is read.
pub fn upgrade(set: &[u8], max_decompressed_bytes: usize) -> Result<Upgraded, BatchError> {
    let mut w = BatchWriter::new(set.len() + set.len() / 8);
    let (magic, codec) =
        visit_message_set(set, max_decompressed_bytes, |timestamp, key, value| {
            w.push(timestamp, key, value)
        })?;
    let records = w.count as usize;
    Ok(Upgraded {
        batch: w.finish(codec),
        records,
        magic,
    })
}

/// Appends one uncompressed legacy message to `out`.
fn put_message(
    out: &mut Vec<u8>,
    magic: i8,
    offset: i64,
    log_append_time: bool,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let start = out.len();
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // size, below
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.push(magic as u8);
    out.push(if magic == 1 && log_append_time {
        LOG_APPEND_TIME_BIT
    } else {
        0
    });
    if magic == 1 {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for field in [key, value] {
        match field {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    let size = (out.len() - start - OFFSET_AND_SIZE) as i32;
    out[start + 8..start + 12].copy_from_slice(&size.to_be_bytes());
    let crc = crc32fast::hash(&out[start + 16..]);
    out[start + 12..start + 16].copy_from_slice(&crc.to_be_bytes());
}

/// What converting stored batches for an old fetch produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Converted {
    /// The message set, uncompressed.
    pub bytes: Vec<u8>,
    pub messages: usize,
    /// The offset after the last message converted (what the consumer fetches next).
    pub next_offset: i64,
}

/// Converts stored v2 batches (whole, as a read returns them) into an uncompressed message
/// set of `magic` (0 or 1) for a client that reads no record batches. Control batches (and
/// record headers, which the old formats cannot carry) are left out; records before
/// `from_offset` (in the first batch) are skipped. Whole messages only, at most `max_bytes`
/// of them unless the first alone is larger. Each batch decompresses to at most
/// `max_decompressed_bytes`.
pub fn to_message_set(
    batches: &[u8],
    magic: i8,
    from_offset: i64,
    max_bytes: usize,
    max_decompressed_bytes: usize,
) -> Result<Converted, BatchError> {
    let mut out = Converted {
        next_offset: from_offset,
        ..Converted::default()
    };
    for batch in BatchIter::new(batches) {
        let batch = batch?;
        let header = BatchHeader::parse(batch)?;
        if header.is_control() {
            out.next_offset = out.next_offset.max(header.next_offset());
            continue;
        }
        let log_append = header.timestamp_type() == crate::TimestampType::LogAppendTime;
        let mut full = false;
        crate::compact::for_each_record(batch, max_decompressed_bytes, |record| {
            if full || record.offset < from_offset {
                return;
            }
            let before = out.bytes.len();
            put_message(
                &mut out.bytes,
                magic,
                record.offset,
                log_append,
                record.timestamp,
                record.key,
                record.value,
            );
            if out.bytes.len() > max_bytes && out.messages > 0 {
                out.bytes.truncate(before);
                full = true;
                return;
            }
            out.messages += 1;
            out.next_offset = record.offset + 1;
        })?;
        if full {
            return Ok(out);
        }
        out.next_offset = out.next_offset.max(header.next_offset());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, NewRecord};
    use proptest::prelude::*;

    fn records() -> impl Strategy<Value = Vec<LegacyRecord>> {
        proptest::collection::vec(
            (
                0i64..2_000_000_000_000,
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            )
                .prop_map(|(timestamp, key, value)| LegacyRecord {
                    timestamp,
                    key,
                    value,
                }),
            1..30,
        )
    }

    fn codec() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
        ]
    }

    /// A message set as an old producer sends it: plain messages, or one compressed wrapper
    /// holding them (inner offsets relative, as clients write them).
    fn message_set(records: &[LegacyRecord], magic: i8, codec: Compression) -> Vec<u8> {
        let mut inner = Vec::new();
        for (i, r) in records.iter().enumerate() {
            put_message(
                &mut inner,
                magic,
                i as i64,
                false,
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
            );
        }
        if codec == Compression::None {
            return inner;
        }
        let packed = compress(codec, &inner);
        let mut out = Vec::new();
        let ts = records.last().map_or(0, |r| r.timestamp);
        put_message(
            &mut out,
            magic,
            records.len() as i64 - 1,
            false,
            ts,
            None,
            Some(&packed),
        );
        // Set the wrapper's codec bits and redo its CRC.
        out[17] |= match codec {
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            _ => 3,
        };
        let crc = crc32fast::hash(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_be_bytes());
        out
    }

    proptest! {
        /// A produced message set, in either magic and any legacy codec, becomes one valid v2
        /// batch holding the same keys, values and (magic 1) timestamps; magic 0 messages get
        /// no timestamp.
        #[test]
        fn produced_message_sets_become_equivalent_batches(
            recs in records(), magic in 0i8..=1, codec in codec(),
        ) {
            let set = message_set(&recs, magic, codec);
            let read = read_message_set(&set, 1 << 24).unwrap();
            prop_assert_eq!(read.magic, magic);
            prop_assert_eq!(read.codec, codec);
            let batch = to_batch(&read.records, read.codec);
            // The one-pass conversion the broker uses builds the same batch.
            let upgraded = upgrade(&set, 1 << 24).unwrap();
            prop_assert_eq!((&upgraded.batch, upgraded.records, upgraded.magic),
                (&batch, recs.len(), magic));
            let header = BatchHeader::validate(&batch).unwrap();
            let stored = header.records(&batch, 1 << 24).unwrap();
            prop_assert_eq!(stored.len(), recs.len());
            for (got, want) in stored.iter().zip(&recs) {
                prop_assert_eq!(&got.key, &want.key);
                prop_assert_eq!(&got.value, &want.value);
                let ts = if magic == 0 { NO_TIMESTAMP } else { want.timestamp };
                prop_assert_eq!(got.timestamp, ts);
            }
        }

        /// Stored batches converted for an old consumer and read back as a message set give
        /// the same records at the same offsets, whole messages only, within max_bytes unless
        /// the first alone is larger.
        #[test]
        fn fetched_batches_become_equivalent_message_sets(
            recs in records(), magic in 0i8..=1, base in 0i64..1000, max_bytes in 0usize..4000,
        ) {
            let mut b = BatchBuilder::new(recs[0].timestamp);
            for r in &recs {
                b.push(NewRecord {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: vec![("dropped".into(), Some(b"h".to_vec()))],
                    timestamp_delta: r.timestamp - recs[0].timestamp,
                });
            }
            let mut batch = b.build();
            crate::patch_base_offset(&mut batch, base);
            let out = to_message_set(&batch, magic, base, max_bytes, 1 << 24).unwrap();
            prop_assert!(out.messages >= 1);
            prop_assert!(out.messages == 1 || out.bytes.len() <= max_bytes);
            let mut seen = 0;
            let mut offset = base;
            let mut rest = &out.bytes[..];
            while !rest.is_empty() {
                prop_assert_eq!(be_i64(rest), offset);
                let size = be_i32(&rest[8..]) as usize;
                let m = parse_message(&rest[12..12 + size]).unwrap();
                let want = &recs[seen];
                prop_assert_eq!(m.magic, magic);
                prop_assert_eq!(m.key.map(<[u8]>::to_vec), want.key.clone());
                prop_assert_eq!(m.value.map(<[u8]>::to_vec), want.value.clone());
                if magic == 1 {
                    prop_assert_eq!(m.timestamp, want.timestamp);
                }
                rest = &rest[12 + size..];
                seen += 1;
                offset += 1;
            }
            prop_assert_eq!(seen, out.messages);
            prop_assert_eq!(out.next_offset, base + seen as i64);
        }
    }

    /// Bad input is refused with an error: a flipped bit (CRC), a truncated set, a set
    /// larger than the decompression limit.
    #[test]
    fn damaged_message_sets_are_refused() {
        let recs = vec![LegacyRecord {
            timestamp: 5,
            key: Some(b"k".to_vec()),
            value: Some(vec![7; 1000]),
        }];
        let set = message_set(&recs, 1, Compression::None);
        let mut flipped = set.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(read_message_set(&flipped, 1 << 20).is_err());
        assert!(read_message_set(&set[..set.len() - 1], 1 << 20).is_err());
        let packed = message_set(&recs, 1, Compression::Gzip);
        assert!(matches!(
            read_message_set(&packed, 100),
            Err(BatchError::DecompressedTooLarge(_))
        ));
        assert!(read_message_set(&[], 1 << 20).is_err());
    }
}
