//! Records of the internal `__transaction_state` topic, in Apache Kafka's own format so that
//! Kafka tooling that reads the topic understands them. The fields are those of
//! [`sluice_records::kv`]: big-endian integers, i16-length strings, i32-count arrays (-1 for
//! null).
//!
//! ```text
//! key    i16 version = 0 | string transactional id
//! value  i16 version = 0 | i64 producer id | i16 producer epoch | i32 transaction timeout ms
//!        | i8 status | i32 topic count (-1 = null), then per topic:
//!            string topic | i32 partition count | i32 partition ...
//!        | i64 last update timestamp ms | i64 transaction start timestamp ms (-1 = none)
//!
//! status 0 Empty | 1 Ongoing | 2 PrepareCommit | 3 PrepareAbort | 4 CompleteCommit
//!        | 5 CompleteAbort | 6 Dead | 7 PrepareEpochFence
//! ```
//!
//! For example, producer 7 at epoch 1 with a 60 s timeout, Ongoing in partition 3 of "t":
//!
//! ```text
//! 00 00 | 00 00 00 00 00 00 00 07 | 00 01 | 00 00 ea 60 | 01
//! | 00 00 00 01 | 00 01 74 | 00 00 00 01 | 00 00 00 03
//! | <i64 last update> | <i64 start>
//! ```
//!
//! An Empty transaction is written with a null topic array, as Kafka writes it. A record with
//! a null value (a tombstone) deletes its transactional id.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_records::kv::{put_count, put_str, Reader};

pub use sluice_records::kv::BadRecord;

use crate::TxnState;

/// The only key and value version Sluice writes and reads (Kafka's non-flexible version).
const VERSION: i16 = 0;

/// The smallest encoding of one topic entry: an empty string and an empty partition array.
const TOPIC_ENTRY_MIN_BYTES: usize = 2 + 4;

/// A transaction as stored in a `__transaction_state` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transaction_timeout_ms: i32,
    pub state: TxnState,
    /// `(topic, partitions)`; `None` is the null array an Empty transaction is written with.
    pub partitions: Option<Vec<(String, Vec<i32>)>>,
    pub last_update_timestamp_ms: i64,
    /// -1 when no transaction has started.
    pub transaction_start_timestamp_ms: i64,
}

pub fn txn_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + transactional_id.len());
    out.put_i16(VERSION);
    put_str(&mut out, transactional_id);
    out.freeze()
}

pub fn txn_value(value: &TxnValue) -> Bytes {
    let partitions_bytes: usize = value
        .partitions
        .iter()
        .flatten()
        .map(|(topic, parts)| TOPIC_ENTRY_MIN_BYTES + topic.len() + 4 * parts.len())
        .sum();
    let mut out = BytesMut::with_capacity(37 + partitions_bytes);
    out.put_i16(VERSION);
    out.put_i64(value.producer_id);
    out.put_i16(value.producer_epoch);
    out.put_i32(value.transaction_timeout_ms);
    out.put_i8(value.state.code());
    match &value.partitions {
        None => out.put_i32(-1),
        Some(topics) => {
            put_count(&mut out, topics.len());
            for (topic, parts) in topics {
                put_str(&mut out, topic);
                put_count(&mut out, parts.len());
                for &p in parts {
                    out.put_i32(p);
                }
            }
        }
    }
    out.put_i64(value.last_update_timestamp_ms);
    out.put_i64(value.transaction_start_timestamp_ms);
    out.freeze()
}

pub fn decode_key(key: &[u8]) -> Result<String, BadRecord> {
    let mut r = Reader::new(key);
    if r.i16()? != VERSION {
        return Err(BadRecord("unknown key version"));
    }
    r.str()
}

pub fn decode_value(value: &[u8]) -> Result<TxnValue, BadRecord> {
    let mut r = Reader::new(value);
    if r.i16()? != VERSION {
        return Err(BadRecord("unknown value version"));
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let transaction_timeout_ms = r.i32()?;
    let state = TxnState::from_code(r.i8()?).ok_or(BadRecord("unknown transaction status"))?;
    let partitions = match r.count(TOPIC_ENTRY_MIN_BYTES)? {
        None => None,
        Some(topics) => {
            let mut out = Vec::with_capacity(topics);
            for _ in 0..topics {
                let topic = r.str()?;
                let count = r.count(4)?.ok_or(BadRecord("null partition array"))?;
                let mut parts = Vec::with_capacity(count);
                for _ in 0..count {
                    parts.push(r.i32()?);
                }
                out.push((topic, parts));
            }
            Some(out)
        }
    };
    Ok(TxnValue {
        producer_id,
        producer_epoch,
        transaction_timeout_ms,
        state,
        partitions,
        last_update_timestamp_ms: r.i64()?,
        transaction_start_timestamp_ms: r.i64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ongoing() -> TxnValue {
        TxnValue {
            producer_id: 7,
            producer_epoch: 1,
            transaction_timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: Some(vec![("t".into(), vec![3])]),
            last_update_timestamp_ms: 0x0102,
            transaction_start_timestamp_ms: 0x0101,
        }
    }

    #[test]
    fn value_bytes_match_kafkas_layout() {
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 1, 0, 0, 0xea, 0x60, 1];
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(txn_value(&ongoing()).as_ref(), expected.as_slice());
        assert_eq!(txn_key("ab").as_ref(), &[0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn an_empty_transaction_is_written_with_a_null_partition_array() {
        let value = TxnValue {
            state: TxnState::Empty,
            partitions: None,
            transaction_start_timestamp_ms: -1,
            ..ongoing()
        };
        let bytes = txn_value(&value);
        assert_eq!(&bytes[17..21], &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_value(&bytes).unwrap(), value);
    }

    #[test]
    fn records_round_trip() {
        assert_eq!(decode_key(&txn_key("txn-✓")).unwrap(), "txn-✓");
        let value = TxnValue {
            state: TxnState::PrepareCommit,
            partitions: Some(vec![
                ("orders".into(), vec![0, 5, 9]),
                ("__consumer_offsets".into(), vec![17]),
            ]),
            ..ongoing()
        };
        assert_eq!(decode_value(&txn_value(&value)).unwrap(), value);
    }

    #[test]
    fn hostile_counts_and_codes_are_errors() {
        let mut value = txn_value(&ongoing()).to_vec();
        value[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            decode_value(&value),
            Err(BadRecord("array count exceeds the record"))
        );
        let mut value = txn_value(&ongoing()).to_vec();
        value[24..28].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_value(&value), Err(BadRecord("null partition array")));
        let mut value = txn_value(&ongoing()).to_vec();
        value[16] = 8;
        assert_eq!(
            decode_value(&value),
            Err(BadRecord("unknown transaction status"))
        );
        let mut value = txn_value(&ongoing()).to_vec();
        value[1] = 1;
        assert_eq!(
            decode_value(&value),
            Err(BadRecord("unknown value version"))
        );
        assert_eq!(
            decode_key(&[0, 1, 0, 0]),
            Err(BadRecord("unknown key version"))
        );
        assert_eq!(
            decode_key(&[0, 0, 0xff, 0xff]),
            Err(BadRecord("null string"))
        );
        assert_eq!(decode_key(&[0, 0, 0, 2, 0xc3]), Err(BadRecord("truncated")));
    }

    fn any_state() -> impl Strategy<Value = TxnState> {
        (0i8..8).prop_map(|c| TxnState::from_code(c).expect("0..8 are statuses"))
    }

    fn any_value() -> impl Strategy<Value = TxnValue> {
        let topics = proptest::collection::vec(
            (
                "[a-z._-]{0,12}",
                proptest::collection::vec(any::<i32>(), 0..5),
            ),
            0..4,
        );
        (
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
            any_state(),
            proptest::option::of(topics),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(
                |(pid, epoch, timeout, state, partitions, updated, started)| TxnValue {
                    producer_id: pid,
                    producer_epoch: epoch,
                    transaction_timeout_ms: timeout,
                    state,
                    partitions,
                    last_update_timestamp_ms: updated,
                    transaction_start_timestamp_ms: started,
                },
            )
    }

    proptest! {
        /// Arbitrary bytes never panic the decoders (nor make them reserve more than the record
        /// could hold, which would abort the process instead).
        #[test]
        fn arbitrary_records_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64),
                                         value in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = decode_key(&key);
            let _ = decode_value(&value);
        }

        /// Corrupting one byte of a valid value is either still a value or an error.
        #[test]
        fn corrupted_values_never_panic(value in any_value(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = txn_value(&value).to_vec();
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode_value(&bytes);
        }

        /// Whatever is encoded decodes to the same value, and a key to the same id.
        #[test]
        fn encode_then_decode_is_the_identity(value in any_value(), id in "\\PC{0,40}") {
            prop_assert_eq!(decode_value(&txn_value(&value)).unwrap(), value);
            prop_assert_eq!(decode_key(&txn_key(&id)).unwrap(), id);
        }
    }
}
