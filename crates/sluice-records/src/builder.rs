//! Builds uncompressed v2 batches: for tests and for records the broker writes itself.

use crate::varint::{write_varint, write_varlong};

/// One record to put into a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_delta: i64,
}

/// Accumulates records and produces one batch with base offset 0 and a valid CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    pub(crate) attributes: i16,
    records: Vec<NewRecord>,
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(b) => {
            write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> Self {
        Self {
            base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            records: Vec::new(),
        }
    }

    /// Marks the batch as coming from idempotent producer `producer_id` at `epoch`, its
    /// first record carrying sequence number `base_sequence`.
    pub fn producer(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of its producer's transaction (attribute bit 4).
    pub fn transactional(&mut self) -> &mut Self {
        self.attributes |= crate::batch::TRANSACTIONAL_BIT;
        self
    }

    pub fn push(&mut self, record: NewRecord) -> &mut Self {
        self.records.push(record);
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn build(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut max_timestamp = self.base_timestamp;
        for (i, r) in self.records.iter().enumerate() {
            let mut rec = vec![0u8];
            write_varlong(&mut rec, r.timestamp_delta);
            write_varint(&mut rec, i as i32);
            put_nullable(&mut rec, r.key.as_deref());
            put_nullable(&mut rec, r.value.as_deref());
            write_varint(&mut rec, r.headers.len() as i32);
            for (k, v) in &r.headers {
                put_nullable(&mut rec, Some(k.as_bytes()));
                put_nullable(&mut rec, v.as_deref());
            }
            write_varint(&mut body, rec.len() as i32);
            body.extend_from_slice(&rec);
            max_timestamp = max_timestamp.max(self.base_timestamp + r.timestamp_delta);
        }
        let count = self.records.len() as i32;
        let mut out = Vec::with_capacity(crate::BATCH_HEADER_SIZE + body.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (crate::BATCH_HEADER_SIZE - crate::LOG_OVERHEAD + body.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&(count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}
