//! Fetch responses encoded around the stored record bytes: the fields go into small buffers,
//! the records are passed through as they are, and the result is a list of chunks for one
//! vectored write. `kafka-protocol` would copy every record byte into its output buffer.
//!
//! ```text
//! size: i32 | correlation_id: i32 | [v12+: tagged fields]
//! [v1+]  throttle_time_ms: i32
//! [v7+]  error_code: i16 | session_id: i32
//! responses: array of
//!   topic: string (up to v12) | topic_id: uuid (v13 on)
//!   partitions: array of
//!     partition_index: i32 | error_code: i16 | high_watermark: i64
//!     [v4+] last_stable_offset: i64
//!     [v5+] log_start_offset: i64
//!     [v4+] aborted_transactions: nullable array of
//!             producer_id: i64 | first_offset: i64 | [v12+] tagged fields
//!     [v11+] preferred_read_replica: i32
//!     records: nullable bytes            <- the stored bytes, not copied
//!     [v12+] tagged fields
//!   [v12+] tagged fields
//! [v12+] tagged fields
//! ```
//! From v12 on (flexible versions) strings, arrays and bytes carry unsigned-varint lengths
//! (length + 1, 0 for null). Versions 0 to 3 carry records in the old message formats, which
//! the caller converts them to; the encoder passes them through like any other.

use bytes::{BufMut, Bytes, BytesMut};

/// A record set as the encoder sees it: only its length is encoded; its bytes are passed on
/// untouched, as a [`Chunk::Records`] the caller writes (from memory or from a file).
pub trait RecordSet: Clone {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RecordSet for Bytes {
    fn len(&self) -> usize {
        Bytes::len(self)
    }
}

/// One piece of an encoded fetch response, in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk<R> {
    /// Encoded fields.
    Encoded(Bytes),
    /// A partition's records, exactly as given.
    Records(R),
}

/// One partition's part of a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionOut<R = Bytes> {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// (producer id, first offset) of each aborted transaction in range, for read_committed;
    /// null (`None`) for read_uncommitted and for a partition with an error, as Kafka sends.
    pub aborted: Option<Vec<(i64, i64)>>,
    pub records: Option<R>,
    /// For a follower whose log diverges (v12+, KIP-320): the leader epoch and the offset
    /// where it ends in the leader's log. A tagged field; absent when `None`.
    pub diverging_epoch: Option<(i32, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicOut<R = Bytes> {
    /// The topic's name (up to v12) ...
    pub name: Bytes,
    /// ... or its id (v13 on, KIP-516).
    pub topic_id: [u8; 16],
    pub partitions: Vec<FetchPartitionOut<R>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponseOut<R = Bytes> {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<FetchTopicOut<R>>,
}

impl<R> Default for FetchResponseOut<R> {
    fn default() -> Self {
        Self {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics: Vec::new(),
        }
    }
}

/// The Fetch versions this encoder handles.
pub const FETCH_RESPONSE_VERSIONS: std::ops::RangeInclusive<i16> = 0..=18;

fn put_uvarint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

fn put_len(out: &mut BytesMut, flexible: bool, len: Option<usize>, classic_i16: bool) {
    match (flexible, len) {
        (true, None) => put_uvarint(out, 0),
        (true, Some(n)) => put_uvarint(out, n as u64 + 1),
        (false, None) if classic_i16 => out.put_i16(-1),
        (false, None) => out.put_i32(-1),
        (false, Some(n)) if classic_i16 => out.put_i16(n as i16),
        (false, Some(n)) => out.put_i32(n as i32),
    }
}

impl<R: RecordSet> FetchResponseOut<R> {
    /// Total bytes of all record sets: what the response carries beyond its fields.
    pub fn record_bytes(&self) -> usize {
        self.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.records.as_ref().map(RecordSet::len))
            .sum()
    }

    /// Encodes the whole response, size prefix and header included, as chunks to write in
    /// order. Panics on a version outside [`FETCH_RESPONSE_VERSIONS`] (a bug of the caller,
    /// which only dispatches advertised versions here).
    pub fn encode(&self, version: i16, correlation_id: i32) -> Vec<Chunk<R>> {
        assert!(
            FETCH_RESPONSE_VERSIONS.contains(&version),
            "Fetch v{version} not encodable here"
        );
        let flexible = version >= 12;
        let mut chunks = Vec::new();
        let mut cur = BytesMut::with_capacity(256);
        cur.put_i32(correlation_id);
        if flexible {
            put_uvarint(&mut cur, 0);
        }
        if version >= 1 {
            cur.put_i32(self.throttle_time_ms);
        }
        if version >= 7 {
            cur.put_i16(self.error_code);
            cur.put_i32(self.session_id);
        }
        put_len(&mut cur, flexible, Some(self.topics.len()), false);
        for topic in &self.topics {
            if version >= 13 {
                cur.put_slice(&topic.topic_id);
            } else {
                put_len(&mut cur, flexible, Some(topic.name.len()), true);
                cur.put_slice(&topic.name);
            }
            put_len(&mut cur, flexible, Some(topic.partitions.len()), false);
            for p in &topic.partitions {
                cur.put_i32(p.partition);
                cur.put_i16(p.error_code);
                cur.put_i64(p.high_watermark);
                if version >= 4 {
                    cur.put_i64(p.last_stable_offset);
                    if version >= 5 {
                        cur.put_i64(p.log_start_offset);
                    }
                    put_len(&mut cur, flexible, p.aborted.as_ref().map(Vec::len), false);
                    for &(producer_id, first_offset) in p.aborted.iter().flatten() {
                        cur.put_i64(producer_id);
                        cur.put_i64(first_offset);
                        if flexible {
                            put_uvarint(&mut cur, 0);
                        }
                    }
                }
                if version >= 11 {
                    cur.put_i32(-1); // preferred read replica: none
                }
                put_len(
                    &mut cur,
                    flexible,
                    p.records.as_ref().map(RecordSet::len),
                    false,
                );
                if let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) {
                    chunks.push(Chunk::Encoded(cur.split().freeze()));
                    chunks.push(Chunk::Records(records.clone()));
                }
                match (flexible, p.diverging_epoch) {
                    (true, Some((epoch, end_offset))) => {
                        // One tagged field, tag 0: DivergingEpoch {epoch, end_offset}, with
                        // its own (empty) tagged fields.
                        put_uvarint(&mut cur, 1);
                        put_uvarint(&mut cur, 0);
                        put_uvarint(&mut cur, 4 + 8 + 1);
                        cur.put_i32(epoch);
                        cur.put_i64(end_offset);
                        put_uvarint(&mut cur, 0);
                    }
                    (true, None) => put_uvarint(&mut cur, 0),
                    (false, _) => {}
                }
            }
            if flexible {
                put_uvarint(&mut cur, 0);
            }
        }
        if flexible {
            put_uvarint(&mut cur, 0);
        }
        chunks.push(Chunk::Encoded(cur.freeze()));
        let total: usize = chunks
            .iter()
            .map(|c| match c {
                Chunk::Encoded(b) => b.len(),
                Chunk::Records(r) => r.len(),
            })
            .sum();
        let mut size = BytesMut::with_capacity(4);
        size.put_i32(total as i32);
        chunks.insert(0, Chunk::Encoded(size.freeze()));
        chunks
    }
}

/// The chunks of an in-memory response as bytes, in order.
pub fn chunk_bytes(chunks: Vec<Chunk<Bytes>>) -> Vec<Bytes> {
    chunks
        .into_iter()
        .map(|c| match c {
            Chunk::Encoded(b) | Chunk::Records(b) => b,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn reference(r: &FetchResponseOut, version: i16, corr: i32) -> Bytes {
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let (name, id) = if version >= 13 {
                    (Bytes::new(), t.topic_id)
                } else {
                    (t.name.clone(), [0; 16])
                };
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_utf8(name).unwrap()))
                    .with_topic_id(uuid::Uuid::from_bytes(id))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.last_stable_offset)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(p.aborted.as_ref().map(|aborted| {
                                        aborted
                                            .iter()
                                            .map(|&(pid, first)| {
                                                AbortedTransaction::default()
                                                    .with_producer_id(ProducerId(pid))
                                                    .with_first_offset(first)
                                            })
                                            .collect()
                                    }))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(p.records.clone())
                                    .with_diverging_epoch(match p.diverging_epoch {
                                        Some((epoch, end_offset)) if version >= 12 => {
                                            EpochEndOffset::default()
                                                .with_epoch(epoch)
                                                .with_end_offset(end_offset)
                                        }
                                        _ => EpochEndOffset::default(),
                                    })
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut body = FetchResponse::default()
            .with_throttle_time_ms(r.throttle_time_ms)
            .with_responses(topics);
        if version >= 7 {
            body = body
                .with_error_code(r.error_code)
                .with_session_id(r.session_id);
        }
        crate::encode_response(ApiKey::Fetch, version, corr, &body).unwrap()
    }

    fn partition() -> impl Strategy<Value = FetchPartitionOut> {
        (
            any::<i32>(),
            any::<i16>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::option::of(proptest::collection::vec(
                (any::<i64>(), any::<i64>()),
                0..3,
            )),
            // Kafka leaves the field out at its default (-1, -1); ours is absent as None.
            proptest::option::of((0..i32::MAX, 0..i64::MAX)),
        )
            .prop_map(
                |(partition, error_code, hw, lso, lst, records, aborted, diverging)| {
                    FetchPartitionOut {
                        partition,
                        error_code,
                        high_watermark: hw,
                        last_stable_offset: lso,
                        log_start_offset: lst,
                        aborted,
                        records: records.map(Bytes::from),
                        diverging_epoch: diverging,
                    }
                },
            )
    }

    fn response() -> impl Strategy<Value = FetchResponseOut> {
        let topic = (
            "[a-z._-]{1,20}",
            any::<[u8; 16]>(),
            proptest::collection::vec(partition(), 0..4),
        )
            .prop_map(|(name, topic_id, partitions)| FetchTopicOut {
                topic_id,
                name: Bytes::from(name),
                partitions,
            });
        (
            any::<i32>(),
            any::<i16>(),
            any::<i32>(),
            proptest::collection::vec(topic, 0..4),
        )
            .prop_map(|(throttle_time_ms, error_code, session_id, topics)| {
                FetchResponseOut {
                    throttle_time_ms,
                    error_code,
                    session_id,
                    topics,
                }
            })
    }

    proptest! {
        /// For every version served, the chunks concatenate to exactly what kafka-protocol
        /// encodes for the same response.
        #[test]
        fn chunks_equal_the_codec_encoding(r in response(), version in 4i16..=18, corr: i32) {
            let ours: Vec<u8> = chunk_bytes(r.encode(version, corr)).concat();
            prop_assert_eq!(ours, reference(&r, version, corr).to_vec());
        }
    }

    /// Versions 0 to 3 have no last stable offset, log start offset or aborted transactions,
    /// and version 0 no throttle time.
    #[test]
    fn old_versions_have_the_old_layout() {
        let r = FetchResponseOut {
            throttle_time_ms: 3,
            topics: vec![FetchTopicOut {
                name: Bytes::from_static(b"t"),
                topic_id: [0; 16],
                partitions: vec![FetchPartitionOut {
                    partition: 1,
                    error_code: 0,
                    high_watermark: 9,
                    last_stable_offset: 9,
                    log_start_offset: 0,
                    aborted: Some(vec![(5, 6)]),
                    records: Some(Bytes::from_static(b"msgs")),
                    diverging_epoch: None,
                }],
            }],
            ..FetchResponseOut::default()
        };
        for version in 0..=3 {
            let mut want = Vec::new();
            want.extend_from_slice(&7i32.to_be_bytes());
            if version >= 1 {
                want.extend_from_slice(&3i32.to_be_bytes());
            }
            want.extend_from_slice(&1i32.to_be_bytes());
            want.extend_from_slice(&1i16.to_be_bytes());
            want.extend_from_slice(b"t");
            want.extend_from_slice(&1i32.to_be_bytes());
            want.extend_from_slice(&1i32.to_be_bytes());
            want.extend_from_slice(&0i16.to_be_bytes());
            want.extend_from_slice(&9i64.to_be_bytes());
            want.extend_from_slice(&4i32.to_be_bytes());
            want.extend_from_slice(b"msgs");
            let mut framed = (want.len() as i32).to_be_bytes().to_vec();
            framed.extend(want);
            assert_eq!(
                chunk_bytes(r.encode(version, 7)).concat(),
                framed,
                "v{version}"
            );
        }
    }

    #[test]
    fn records_are_passed_through_not_copied() {
        let records = Bytes::from(vec![7u8; 4096]);
        let r = FetchResponseOut {
            topics: vec![FetchTopicOut {
                name: Bytes::from_static(b"t"),
                topic_id: [0; 16],
                partitions: vec![FetchPartitionOut {
                    partition: 0,
                    error_code: 0,
                    high_watermark: 1,
                    last_stable_offset: 1,
                    log_start_offset: 0,
                    aborted: None,
                    records: Some(records.clone()),
                    diverging_epoch: None,
                }],
            }],
            ..FetchResponseOut::default()
        };
        let chunks = chunk_bytes(r.encode(12, 1));
        assert!(chunks.iter().any(|c| c.as_ptr() == records.as_ptr()));
    }
}
