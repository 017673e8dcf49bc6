//! Request versions Kafka 4 dropped (KIP-896) but Kafka 3.9 still accepted, which clients in
//! wide use still send. `kafka-protocol` decodes only the versions Kafka 4 kept, so each old
//! version is rewritten into the nearest one the codec knows (for most, the bytes are the
//! same, or differ by fields at fixed places), and the response, encoded at that version, is
//! rewritten back into the old layout.
//!
//! | API              | old | as  | request                                   | response                        |
//! |------------------|-----|-----|-------------------------------------------|---------------------------------|
//! | Produce          | 0-2 | 3   | null transactional_id in front            | v1: no log_append_time; v0: no throttle either |
//! | Fetch            | 0-3 | 4   | max_bytes (v0-2) and isolation_level added | encoded by `fetch_response`     |
//! | ListOffsets      | 0   | 1   | max_num_offsets dropped                   | offset as a one-element array   |
//! | OffsetCommit     | 0-1 | 2   | generation, member, retention filled in / commit_timestamp dropped | same bytes |
//! | OffsetFetch      | 0   | 1   | same bytes                                | same bytes                      |
//! | CreateTopics     | 0-1 | 2   | v0: validate_only = false added           | v1: no throttle; v0: no error message either |
//! | DeleteTopics     | 0   | 1   | same bytes                                | no throttle                     |
//! | DescribeConfigs  | 0   | 1   | include_synonyms = false added            | is_default instead of source, no synonyms |
//! | DescribeLogDirs  | 0   | 1   | same bytes                                | same bytes                      |
//! | AlterReplicaLogDirs | 0 | 1  | same bytes                                | same bytes                      |
//! | OffsetForLeaderEpoch | 0-1 | 2 | current_leader_epoch = -1 added          | v1: no throttle; v0: no leader epoch either |
//!
//! Every rewrite reads through a bounds-checked cursor and checks each array count against
//! the bytes left before looping, so it costs at most linear time and output no larger than
//! its input plus a few bytes per element.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::request::DecodeError;

/// The version `api`'s codec reads `version` as: itself unless it is one of the old ones.
pub fn codec_version(api: ApiKey, version: i16) -> i16 {
    match (api, version) {
        (ApiKey::Produce, 0..=2) => 3,
        (ApiKey::Fetch, 0..=3) => 4,
        (ApiKey::ListOffsets, 0) => 1,
        (ApiKey::OffsetCommit, 0..=1) => 2,
        (ApiKey::OffsetFetch, 0) => 1,
        (ApiKey::CreateTopics, 0..=1) => 2,
        (ApiKey::DeleteTopics, 0) => 1,
        (ApiKey::DescribeConfigs, 0) => 1,
        (ApiKey::DescribeLogDirs, 0) => 1,
        (ApiKey::AlterReplicaLogDirs, 0) => 1,
        (ApiKey::OffsetForLeaderEpoch, 0..=1) => 2,
        _ => version,
    }
}

/// A bounds-checked reader over a request or response body.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(DecodeError::Codec("old-version body ends early".into()));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.take(1)?[0] as i8)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// A classic (i16 length, -1 = null) string, raw bytes including its length.
    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = self.i16()?;
        if len > 0 {
            self.take(len as usize)?;
        } else if len < -1 {
            return Err(DecodeError::Codec("negative string length".into()));
        }
        Ok(&self.buf[start..self.pos])
    }

    /// An array count, refused unless `count × min_element` bytes remain. Null reads as 0.
    fn count(&mut self, min_element: usize) -> Result<usize, DecodeError> {
        let n = self.i32()?;
        if n < 0 {
            return if n == -1 {
                Ok(0)
            } else {
                Err(DecodeError::Codec("negative array count".into()))
            };
        }
        let need = (n as usize).saturating_mul(min_element);
        if need > self.buf.len() - self.pos {
            return Err(DecodeError::Codec(format!(
                "array of {n} cannot fit in the bytes left"
            )));
        }
        Ok(n as usize)
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// Rewrites an old request body into the version [`codec_version`] names.
pub fn upgrade_request(api: ApiKey, version: i16, body: Bytes) -> Result<Bytes, DecodeError> {
    let mut out = BytesMut::with_capacity(body.len() + 16);
    match (api, version) {
        (ApiKey::Produce, 0..=2) => {
            out.put_i16(-1); // transactional_id: null
            out.put_slice(&body);
        }
        (ApiKey::Fetch, 0..=3) => {
            let mut c = Cursor::new(&body);
            out.put_slice(c.take(12)?); // replica_id, max_wait_ms, min_bytes
            if version == 3 {
                out.put_slice(c.take(4)?); // max_bytes
            } else {
                out.put_i32(i32::MAX); // no response limit before v3
            }
            out.put_i8(0); // isolation_level: read_uncommitted
            out.put_slice(c.rest());
        }
        (ApiKey::ListOffsets, 0) => {
            let mut c = Cursor::new(&body);
            out.put_slice(c.take(4)?); // replica_id
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(16)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(12)?); // partition_index, timestamp
                    c.i32()?; // max_num_offsets: one offset is answered (see README)
                }
            }
        }
        (ApiKey::OffsetCommit, 0) => {
            let mut c = Cursor::new(&body);
            out.put_slice(c.string()?); // group_id
            out.put_i32(-1); // generation_id
            out.put_i16(0); // member_id: ""
            out.put_i64(-1); // retention_time_ms: the broker's
            out.put_slice(c.rest());
        }
        (ApiKey::OffsetCommit, 1) => {
            let mut c = Cursor::new(&body);
            out.put_slice(c.string()?); // group_id
            out.put_slice(c.take(4)?); // generation_id
            out.put_slice(c.string()?); // member_id
            out.put_i64(-1); // retention_time_ms
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(22)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(12)?); // partition_index, committed_offset
                    c.i64()?; // commit_timestamp: dropped, as Kafka 2.1+ ignores it
                    out.put_slice(c.string()?); // metadata
                }
            }
        }
        (ApiKey::CreateTopics, 0) => {
            out.put_slice(&body);
            out.put_i8(0); // validate_only
        }
        (ApiKey::DescribeConfigs, 0) => {
            out.put_slice(&body);
            out.put_i8(0); // include_synonyms
        }
        (ApiKey::OffsetForLeaderEpoch, 0..=1) => {
            let mut c = Cursor::new(&body);
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(8)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(4)?); // partition
                    out.put_i32(-1); // current_leader_epoch: not checked
                    out.put_slice(c.take(4)?); // leader_epoch
                }
            }
        }
        _ => return Ok(body),
    }
    Ok(out.freeze())
}

/// Rewrites a response encoded at [`codec_version`] (size prefix and correlation id
/// included; every API here has the classic response header) into `version`'s layout.
pub fn downgrade_response(api: ApiKey, version: i16, encoded: Bytes) -> Result<Bytes, String> {
    if codec_version(api, version) == version {
        return Ok(encoded);
    }
    let body = encoded
        .get(8..)
        .ok_or_else(|| "response shorter than its header".to_string())?;
    let mut out = BytesMut::with_capacity(encoded.len());
    out.put_i32(0); // size, below
    out.put_slice(&encoded[4..8]); // correlation id
    rewrite_response(api, version, body, &mut out)
        .map_err(|e| format!("{api:?} v{version}: {e}"))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

fn rewrite_response(
    api: ApiKey,
    version: i16,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body);
    match api {
        ApiKey::Produce => {
            // v3 (= v2): responses [name, partitions [index, error, base_offset,
            // log_append_time]], throttle_time_ms.
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(22)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(14)?); // index, error, base_offset
                    let log_append_time = c.take(8)?;
                    if version >= 2 {
                        out.put_slice(log_append_time);
                    }
                }
            }
            let throttle = c.take(4)?;
            if version >= 1 {
                out.put_slice(throttle);
            }
        }
        ApiKey::ListOffsets => {
            // v1: topics [name, partitions [index, error, timestamp, offset]]
            // v0: topics [name, partitions [index, error, old_style_offsets [offset]]]
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(22)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(6)?); // index, error
                    c.i64()?; // timestamp
                    let offset = c.i64()?;
                    if offset >= 0 {
                        out.put_i32(1);
                        out.put_i64(offset);
                    } else {
                        out.put_i32(0);
                    }
                }
            }
        }
        ApiKey::CreateTopics => {
            // v2: throttle, topics [name, error, error_message]
            c.i32()?;
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                out.put_slice(c.take(2)?);
                let message = c.string()?;
                if version >= 1 {
                    out.put_slice(message);
                }
            }
        }
        ApiKey::DeleteTopics => {
            c.i32()?; // throttle: v0 has none
            out.put_slice(c.rest());
        }
        ApiKey::DescribeConfigs => {
            // v1: throttle, results [error, message, type, name, configs [name, value,
            // read_only, config_source, is_sensitive, synonyms [name, value, source]]]
            out.put_slice(c.take(4)?);
            let results = c.count(7)?;
            out.put_i32(results as i32);
            for _ in 0..results {
                out.put_slice(c.take(2)?);
                out.put_slice(c.string()?);
                out.put_slice(c.take(1)?);
                out.put_slice(c.string()?);
                let configs = c.count(11)?;
                out.put_i32(configs as i32);
                for _ in 0..configs {
                    out.put_slice(c.string()?); // name
                    out.put_slice(c.string()?); // value
                    out.put_slice(c.take(1)?); // read_only
                    let source = c.i8()?;
                    out.put_i8(i8::from(source == 5)); // is_default: DEFAULT_CONFIG
                    out.put_slice(c.take(1)?); // is_sensitive
                    let synonyms = c.count(5)?;
                    for _ in 0..synonyms {
                        c.string()?;
                        c.string()?;
                        c.i8()?;
                    }
                }
            }
        }
        ApiKey::OffsetForLeaderEpoch => {
            // v2: throttle, topics [topic, partitions [error, partition, leader_epoch,
            // end_offset]]
            c.i32()?;
            let topics = c.count(6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(c.string()?);
                let partitions = c.count(18)?;
                out.put_i32(partitions as i32);
                for _ in 0..partitions {
                    out.put_slice(c.take(6)?); // error, partition
                    let epoch = c.take(4)?;
                    if version >= 1 {
                        out.put_slice(epoch);
                    }
                    out.put_slice(c.take(8)?);
                }
            }
        }
        // Same bytes at both versions.
        _ => out.put_slice(c.rest()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_response, Request, RequestHeader};
    use kafka_protocol::messages::{
        create_topics_response::CreatableTopicResult, list_offsets_response as lo,
        produce_response as pr, CreateTopicsResponse, ListOffsetsResponse, ProduceResponse,
        TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn i32s(out: &mut Vec<u8>, v: i32) {
        out.extend_from_slice(&v.to_be_bytes());
    }

    /// Request bodies as old clients send them, written from the protocol guide.
    fn old_bodies() -> Vec<(ApiKey, i16, Vec<u8>)> {
        let mut v = Vec::new();
        for version in 0..=2 {
            let mut b = Vec::new();
            b.extend_from_slice(&1i16.to_be_bytes()); // acks
            i32s(&mut b, 1500); // timeout
            i32s(&mut b, 1);
            string(&mut b, "t");
            i32s(&mut b, 1);
            i32s(&mut b, 0); // partition
            i32s(&mut b, 3);
            b.extend_from_slice(b"abc"); // a (bogus) message set: not looked into here
            v.push((ApiKey::Produce, version, b));
        }
        for version in 0..=3 {
            let mut b = Vec::new();
            i32s(&mut b, -1);
            i32s(&mut b, 500);
            i32s(&mut b, 1);
            if version == 3 {
                i32s(&mut b, 1 << 20);
            }
            i32s(&mut b, 1);
            string(&mut b, "t");
            i32s(&mut b, 1);
            i32s(&mut b, 0);
            b.extend_from_slice(&7i64.to_be_bytes());
            i32s(&mut b, 4096);
            v.push((ApiKey::Fetch, version, b));
        }
        let mut b = Vec::new();
        i32s(&mut b, -1);
        i32s(&mut b, 1);
        string(&mut b, "t");
        i32s(&mut b, 2);
        for p in 0..2 {
            i32s(&mut b, p);
            b.extend_from_slice(&(-1i64).to_be_bytes());
            i32s(&mut b, 1);
        }
        v.push((ApiKey::ListOffsets, 0, b));
        for version in 0..=1 {
            let mut b = Vec::new();
            string(&mut b, "g");
            if version == 1 {
                i32s(&mut b, 3);
                string(&mut b, "m");
            }
            i32s(&mut b, 1);
            string(&mut b, "t");
            i32s(&mut b, 1);
            i32s(&mut b, 0);
            b.extend_from_slice(&42i64.to_be_bytes());
            if version == 1 {
                b.extend_from_slice(&123i64.to_be_bytes());
            }
            string(&mut b, "meta");
            v.push((ApiKey::OffsetCommit, version, b));
        }
        let mut b = Vec::new();
        string(&mut b, "g");
        i32s(&mut b, 1);
        string(&mut b, "t");
        i32s(&mut b, 1);
        i32s(&mut b, 0);
        v.push((ApiKey::OffsetFetch, 0, b));
        let mut b = Vec::new();
        i32s(&mut b, 1);
        string(&mut b, "t");
        i32s(&mut b, 3);
        b.extend_from_slice(&1i16.to_be_bytes());
        i32s(&mut b, 0); // assignments
        i32s(&mut b, 0); // configs
        i32s(&mut b, 1000); // timeout
        v.push((ApiKey::CreateTopics, 0, b.clone()));
        b.push(1); // validate_only
        v.push((ApiKey::CreateTopics, 1, b));
        let mut b = Vec::new();
        i32s(&mut b, 1);
        string(&mut b, "t");
        i32s(&mut b, 1000);
        v.push((ApiKey::DeleteTopics, 0, b));
        let mut b = Vec::new();
        i32s(&mut b, 1);
        b.push(2); // topic
        string(&mut b, "t");
        i32s(&mut b, -1); // all configs
        v.push((ApiKey::DescribeConfigs, 0, b));
        v
    }

    fn header(api: ApiKey, version: i16) -> RequestHeader {
        RequestHeader {
            api_key: api as i16,
            api_version: version,
            correlation_id: 9,
            client_id: None,
        }
    }

    /// Every old body decodes, with its fields where the old version put them.
    #[test]
    fn old_request_versions_decode_with_their_fields() {
        for (api, version, body) in old_bodies() {
            let decoded = Request::decode(&header(api, version), Bytes::from(body), 1 << 20)
                .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            match decoded {
                Request::Produce(r) => {
                    assert_eq!((r.acks, r.timeout_ms), (1, 1500));
                    assert_eq!(r.transactional_id, None);
                    let p = &r.topic_data[0].partition_data[0];
                    assert_eq!(p.records.as_deref(), Some(&b"abc"[..]));
                }
                Request::Fetch(r) => {
                    assert_eq!((r.max_wait_ms, r.min_bytes, r.isolation_level), (500, 1, 0));
                    let want = if version == 3 { 1 << 20 } else { i32::MAX };
                    assert_eq!(r.max_bytes, want);
                    let p = &r.topics[0].partitions[0];
                    assert_eq!((p.fetch_offset, p.partition_max_bytes), (7, 4096));
                }
                Request::ListOffsets(r) => {
                    let ps = &r.topics[0].partitions;
                    assert_eq!(ps.len(), 2);
                    assert_eq!((ps[1].partition_index, ps[1].timestamp), (1, -1));
                }
                Request::OffsetCommit(r) => {
                    assert_eq!(r.group_id.as_str(), "g");
                    let want = if version == 1 { (3, "m") } else { (-1, "") };
                    assert_eq!(
                        (r.generation_id_or_member_epoch, r.member_id.as_str()),
                        want
                    );
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.committed_offset, 42);
                    assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
                }
                Request::OffsetFetch(r) => assert_eq!(r.group_id.as_str(), "g"),
                Request::CreateTopics(r) => {
                    assert_eq!(r.topics[0].num_partitions, 3);
                    assert_eq!(r.validate_only, version == 1);
                }
                Request::DeleteTopics(r) => assert_eq!(r.topic_names[0].as_str(), "t"),
                Request::DescribeConfigs(r) => {
                    assert_eq!(r.resources[0].resource_name.as_str(), "t");
                    assert!(!r.include_synonyms);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    proptest! {
        /// Old bodies with bytes flipped or cut never panic: they decode or are refused.
        #[test]
        fn mutated_old_bodies_never_panic(
            which in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let bodies = old_bodies();
            let (api, version, mut body) = bodies[which.index(bodies.len())].clone();
            let n = body.len();
            for (pos, byte) in flips {
                body[pos % n] = byte;
            }
            body.truncate((cut % (n + 1)).max(1));
            let _ = Request::decode(&header(api, version), Bytes::from(body), 1 << 16);
        }
    }

    /// Responses come out in the old layouts: Produce v0 without throttle or append time,
    /// v1 with throttle only; ListOffsets v0 with an array of offsets; CreateTopics v0 with
    /// name and error only.
    #[test]
    fn old_response_versions_have_the_old_layouts() {
        let produce = ProduceResponse::default()
            .with_throttle_time_ms(77)
            .with_responses(vec![pr::TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_responses(vec![pr::PartitionProduceResponse::default(
                )
                .with_index(2)
                .with_base_offset(40)
                .with_log_append_time_ms(-1)])]);
        let body = |b: Bytes| b[8..].to_vec();
        let mut topic = Vec::new();
        i32s(&mut topic, 1);
        string(&mut topic, "t");
        i32s(&mut topic, 1);
        i32s(&mut topic, 2);
        topic.extend_from_slice(&0i16.to_be_bytes());
        topic.extend_from_slice(&40i64.to_be_bytes());
        let v0 = encode_response(ApiKey::Produce, 0, 9, &produce).unwrap();
        assert_eq!(body(v0.clone()), topic);
        assert_eq!(
            i32::from_be_bytes(v0[..4].try_into().unwrap()) as usize,
            v0.len() - 4
        );
        let mut v1 = topic.clone();
        i32s(&mut v1, 77);
        assert_eq!(
            body(encode_response(ApiKey::Produce, 1, 9, &produce).unwrap()),
            v1
        );

        let offsets = ListOffsetsResponse::default().with_topics(vec![
            lo::ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![lo::ListOffsetsPartitionResponse::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)
                    .with_offset(12)]),
        ]);
        let mut want = Vec::new();
        i32s(&mut want, 1);
        string(&mut want, "t");
        i32s(&mut want, 1);
        i32s(&mut want, 0);
        want.extend_from_slice(&0i16.to_be_bytes());
        i32s(&mut want, 1);
        want.extend_from_slice(&12i64.to_be_bytes());
        assert_eq!(
            body(encode_response(ApiKey::ListOffsets, 0, 9, &offsets).unwrap()),
            want
        );

        let created = CreateTopicsResponse::default()
            .with_throttle_time_ms(5)
            .with_topics(vec![CreatableTopicResult::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_error_code(36)
                .with_error_message(Some(StrBytes::from_static_str("exists")))]);
        let mut want = Vec::new();
        i32s(&mut want, 1);
        string(&mut want, "t");
        want.extend_from_slice(&36i16.to_be_bytes());
        assert_eq!(
            body(encode_response(ApiKey::CreateTopics, 0, 9, &created).unwrap()),
            want
        );
        string(&mut want, "exists");
        assert_eq!(
            body(encode_response(ApiKey::CreateTopics, 1, 9, &created).unwrap()),
            want
        );
    }
}
