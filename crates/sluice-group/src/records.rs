//! Records of the internal `__consumer_offsets` topic, in Apache Kafka's own format so that
//! Kafka tooling that reads the topic understands them. The fields are those of
//! [`sluice_records::kv`]: big-endian integers, i16-length strings (-1 for null), i32-length
//! bytes, i32-count arrays.
//!
//! ```text
//! offset commit key    i16 version = 1 | string group | string topic | i32 partition
//! offset commit value  i16 version = 3 | i64 offset | i32 leader epoch | string metadata
//!                      | i64 commit timestamp
//!                      (versions 1 and 2, read only: i64 offset | string metadata
//!                       | i64 commit timestamp | v1 only: i64 expire timestamp)
//! group metadata key   i16 version = 2 | string group
//! group metadata value i16 version = 3 | string protocol type | i32 generation
//!                      | string? protocol | string? leader | i64 state timestamp
//!                      | i32 member count, then per member:
//!                        string member id | string? instance id | string client id
//!                        | string client host | i32 rebalance timeout | i32 session timeout
//!                        | bytes subscription | bytes assignment
//! ```
//!
//! A record with a null value (a tombstone) deletes its key: a committed offset, or a group.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_records::kv::{put_bytes, put_count, put_opt_str, put_str, Reader};

pub use sluice_records::kv::BadRecord;

/// The decoded key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set only by old clients that asked for a retention time (OffsetCommit v2-v4).
    pub expire_timestamp_ms: Option<i64>,
}

/// A member as stored in the group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + group.len() + topic.len());
    out.put_i16(1);
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.put_i32(partition);
    out.freeze()
}

/// Version 3, or version 1 (which has no leader epoch) when the client asked for its own
/// retention, as Kafka writes them.
pub fn offset_value(value: &OffsetValue) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + value.metadata.len());
    match value.expire_timestamp_ms {
        Some(expire) => {
            out.put_i16(1);
            out.put_i64(value.offset);
            put_str(&mut out, &value.metadata);
            out.put_i64(value.commit_timestamp_ms);
            out.put_i64(expire);
        }
        None => {
            out.put_i16(3);
            out.put_i64(value.offset);
            out.put_i32(value.leader_epoch);
            put_str(&mut out, &value.metadata);
            out.put_i64(value.commit_timestamp_ms);
        }
    }
    out.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + group.len());
    out.put_i16(2);
    put_str(&mut out, group);
    out.freeze()
}

pub fn group_value(value: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    put_str(&mut out, &value.protocol_type);
    out.put_i32(value.generation_id);
    put_opt_str(&mut out, value.protocol_name.as_deref());
    put_opt_str(&mut out, value.leader.as_deref());
    out.put_i64(value.state_timestamp_ms);
    put_count(&mut out, value.members.len());
    for m in &value.members {
        put_str(&mut out, &m.member_id);
        put_opt_str(&mut out, m.group_instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.put_i32(m.rebalance_timeout_ms);
        out.put_i32(m.session_timeout_ms);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out.freeze()
}

pub fn decode_key(key: &[u8]) -> Result<RecordKey, BadRecord> {
    let mut r = Reader::new(key);
    match r.i16()? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Ok(RecordKey::Group { group: r.str()? }),
        _ => Err(BadRecord("unknown key version")),
    }
}

pub fn decode_offset_value(value: &[u8]) -> Result<OffsetValue, BadRecord> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    let expire_timestamp_ms = match version {
        1 => Some(r.i64()?),
        0 | 2 | 3 => None,
        _ => return Err(BadRecord("unknown offset value version")),
    };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

pub fn decode_group_value(value: &[u8]) -> Result<GroupValue, BadRecord> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(BadRecord("unknown group value version"));
    }
    let protocol_type = r.str()?;
    let generation_id = r.i32()?;
    let protocol_name = r.opt_str()?;
    let leader = r.opt_str()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r
        .count(member_min_bytes(version))?
        .ok_or(BadRecord("null member array"))?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.str()?;
        let group_instance_id = if version >= 3 { r.opt_str()? } else { None };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: opt_bytes(&mut r)?,
            assignment: opt_bytes(&mut r)?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        state_timestamp_ms,
        members,
    })
}

/// The fewest bytes one member of a group value of `version` takes: every string empty (the
/// instance id, from version 3, null), the timeouts (rebalance from version 1, session), and
/// two empty byte strings.
fn member_min_bytes(version: i16) -> usize {
    let strings = if version >= 3 { 4 } else { 3 };
    let timeouts = if version >= 1 { 2 } else { 1 };
    2 * strings + 4 * timeouts + 2 * 4
}

/// Subscriptions and assignments are copied out of the record; a null one reads as empty.
fn opt_bytes(r: &mut Reader<'_>) -> Result<Bytes, BadRecord> {
    Ok(r.opt_bytes()?
        .map_or_else(Bytes::new, Bytes::copy_from_slice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact bytes Kafka writes (and its tools read) for each record this module writes.
    #[test]
    fn records_match_kafkas_layout() {
        assert_eq!(
            offset_key("g", "t", 7).as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]
        );
        assert_eq!(group_key("ab").as_ref(), &[0, 2, 0, 2, b'a', b'b']);

        let v3 = OffsetValue {
            offset: 0x0102,
            leader_epoch: 5,
            metadata: "m".into(),
            commit_timestamp_ms: 0x0304,
            expire_timestamp_ms: None,
        };
        let mut expected = vec![0, 3, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 5, 0, 1, b'm'];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 3, 4]);
        assert_eq!(offset_value(&v3).as_ref(), expected.as_slice());

        let v1 = OffsetValue {
            metadata: String::new(),
            expire_timestamp_ms: Some(0x0506),
            ..v3
        };
        let mut expected = vec![0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 5, 6]);
        assert_eq!(offset_value(&v1).as_ref(), expected.as_slice());

        let group = GroupValue {
            protocol_type: "c".into(),
            generation_id: 9,
            protocol_name: Some("r".into()),
            leader: None,
            state_timestamp_ms: 0x0708,
            members: vec![MemberValue {
                member_id: "m".into(),
                group_instance_id: None,
                client_id: "i".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 0x0a0b,
                session_timeout_ms: 0x0c0d,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::new(),
            }],
        };
        let mut expected = vec![0, 3, 0, 1, b'c', 0, 0, 0, 9, 0, 1, b'r', 0xff, 0xff];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 7, 8, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 1, b'm', 0xff, 0xff, 0, 1, b'i', 0, 1, b'h']);
        expected.extend_from_slice(&[0, 0, 0x0a, 0x0b, 0, 0, 0x0c, 0x0d]);
        expected.extend_from_slice(&[0, 0, 0, 1, b's', 0, 0, 0, 0]);
        assert_eq!(group_value(&group).as_ref(), expected.as_slice());
    }

    #[test]
    fn offset_records_round_trip() {
        let key = offset_key("g", "orders", 7);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7
            }
        );
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "client metadata ✓".into(),
            commit_timestamp_ms: 1_700_000_000_000,
            expire_timestamp_ms: None,
        };
        assert_eq!(decode_offset_value(&offset_value(&value)).unwrap(), value);
        let with_retention = OffsetValue {
            leader_epoch: -1,
            expire_timestamp_ms: Some(1_700_000_600_000),
            ..value
        };
        assert_eq!(
            decode_offset_value(&offset_value(&with_retention)).unwrap(),
            with_retention
        );
    }

    #[test]
    fn group_records_round_trip() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 9,
            protocol_name: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 5,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group_value(&group_value(&value)).unwrap(), value);
        assert_eq!(
            decode_key(&group_key("g")).unwrap(),
            RecordKey::Group { group: "g".into() }
        );
    }

    /// The member count is checked against the smallest member the value's version allows:
    /// a version 0 value whose one member has only empty fields (18 bytes) decodes, and the
    /// same bytes claiming two members are refused before anything is reserved.
    #[test]
    fn member_counts_are_bounded_by_the_smallest_member_of_the_version() {
        let mut value = vec![0, 0, 0, 0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        value.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x75, 0x30, 0, 0, 0, 0, 0, 0, 0, 0]);
        let member = MemberValue {
            member_id: String::new(),
            group_instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 30_000,
            subscription: Bytes::new(),
            assignment: Bytes::new(),
        };
        assert_eq!(
            decode_group_value(&value).unwrap(),
            GroupValue {
                protocol_type: String::new(),
                generation_id: 4,
                protocol_name: None,
                leader: None,
                state_timestamp_ms: -1,
                members: vec![member],
            }
        );
        value[15] = 2;
        assert_eq!(
            decode_group_value(&value),
            Err(BadRecord("array count exceeds the record"))
        );
        value[15] = 0xff;
        value[12..15].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(
            decode_group_value(&value),
            Err(BadRecord("null member array"))
        );
    }

    fn any_offset_value() -> impl Strategy<Value = OffsetValue> {
        (
            any::<i64>(),
            any::<i32>(),
            "\\PC{0,20}",
            any::<i64>(),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(offset, epoch, metadata, committed, expire)| OffsetValue {
                offset,
                // Version 1, written when there is an expiry, has no leader epoch.
                leader_epoch: if expire.is_some() { -1 } else { epoch },
                metadata,
                commit_timestamp_ms: committed,
                expire_timestamp_ms: expire,
            })
    }

    fn any_member() -> impl Strategy<Value = MemberValue> {
        (
            ("\\PC{0,12}", proptest::option::of("\\PC{0,12}")),
            ("\\PC{0,12}", "\\PC{0,12}"),
            (any::<i32>(), any::<i32>()),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(
                |((member_id, group_instance_id), (client_id, client_host), timeouts, sub, asg)| {
                    MemberValue {
                        member_id,
                        group_instance_id,
                        client_id,
                        client_host,
                        // A negative rebalance timeout reads back as the session timeout.
                        rebalance_timeout_ms: timeouts.0.max(0),
                        session_timeout_ms: timeouts.1,
                        subscription: Bytes::from(sub),
                        assignment: Bytes::from(asg),
                    }
                },
            )
    }

    fn any_group_value() -> impl Strategy<Value = GroupValue> {
        (
            "\\PC{0,12}",
            any::<i32>(),
            proptest::option::of("\\PC{0,12}"),
            proptest::option::of("\\PC{0,12}"),
            any::<i64>(),
            proptest::collection::vec(any_member(), 0..4),
        )
            .prop_map(
                |(protocol_type, generation_id, protocol_name, leader, state_ts, members)| {
                    GroupValue {
                        protocol_type,
                        generation_id,
                        protocol_name,
                        leader,
                        state_timestamp_ms: state_ts,
                        members,
                    }
                },
            )
    }

    proptest! {
        /// Arbitrary bytes never panic the decoders and never make them reserve more members
        /// than the record could hold.
        #[test]
        fn arbitrary_records_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64),
                                         value in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_key(&key);
            let _ = decode_offset_value(&value);
            let _ = decode_group_value(&value);
        }

        /// Corrupting one byte of a valid group value is either still a value or an error.
        #[test]
        fn corrupted_values_never_panic(value in any_group_value(), at in any::<usize>(),
                                        byte in any::<u8>()) {
            let mut bytes = group_value(&value).to_vec();
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode_group_value(&bytes);
        }

        /// Whatever is encoded decodes to the same key or value.
        #[test]
        fn encode_then_decode_is_the_identity(group in "\\PC{0,20}", topic in "\\PC{0,20}",
                                              partition in any::<i32>(),
                                              offset in any_offset_value(),
                                              value in any_group_value()) {
            prop_assert_eq!(
                decode_key(&offset_key(&group, &topic, partition)).unwrap(),
                RecordKey::Offset { group: group.clone(), topic, partition }
            );
            prop_assert_eq!(decode_key(&group_key(&group)).unwrap(), RecordKey::Group { group });
            prop_assert_eq!(decode_offset_value(&offset_value(&offset)).unwrap(), offset);
            prop_assert_eq!(decode_group_value(&group_value(&value)).unwrap(), value);
        }
    }
}
