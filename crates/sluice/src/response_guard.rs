//! The CLI's allocation guard for responses, and the one version of each API it speaks.
//!
//! `kafka-protocol` 0.18 reserves `Vec::with_capacity(n)` for every array count it reads, so a
//! twenty-byte response claiming four billion brokers would abort the CLI before decoding
//! failed. The broker guards requests the same way (`sluice_protocol::guard`); this module
//! guards the responses the CLI reads. Before a response is decoded, [`check`] walks it
//! against the schema of the one version the CLI asks for, reading every length and count the
//! decoder will read, in the same order, and refuses it unless
//! - every array count fits in the bytes that remain (each element takes at least a byte),
//! - every string and byte field fits in the bytes that remain, and
//! - the decoded arrays and tagged fields together stay within [`DECODE_BUDGET_BYTES`].
//!
//! Every version here is flexible, so the walk knows only the compact encodings:
//!
//! ```text
//! response header v1: correlation_id i32 | tagged fields
//! compact string / bytes: uvarint (length + 1, 0 = null) | bytes
//! compact array:          uvarint (count + 1, 0 = null)  | elements
//! struct:                 fields | tagged fields
//! tagged fields:          uvarint count | count × (uvarint tag | uvarint size | size bytes)
//! uvarint:                at most 5 bytes, 7 bits each, low first (as kafka-protocol reads it)
//! ```
//! A tagged field the decoder knows at that version is decoded from the stream itself, not
//! from its `size` bytes, so the walk follows its schema too and insists the two agree.

use std::mem::size_of;

use kafka_protocol::messages::{
    create_topics_response as create_topics, delete_topics_response as delete_topics,
    describe_configs_response as describe_configs, describe_groups_response as describe_groups,
    fetch_response as fetch, incremental_alter_configs_response as alter_configs,
    join_group_response as join_group, leave_group_response as leave_group,
    list_groups_response as list_groups, list_offsets_response as list_offsets,
    metadata_response as metadata, offset_commit_response as offset_commit,
    offset_fetch_response as offset_fetch, produce_response as produce, ApiKey,
};

/// The most that decoding one response may reserve for arrays and tagged fields. A legitimate
/// response needs a few times its own size; a metadata response for a million partitions
/// fits.
const DECODE_BUDGET_BYTES: usize = 256 << 20;

/// What keeping one unknown tagged field costs (a `BTreeMap` entry holding a `Bytes`).
const TAGGED_FIELD_COST_BYTES: usize = 64;

/// The shape of a field on the wire.
#[derive(Clone, Copy)]
enum Wire {
    /// Integers, booleans, UUIDs: this many bytes.
    Fixed(usize),
    /// A compact (nullable) string or byte string.
    Bytes,
    /// A compact (nullable) array of this element, whose decoded form takes `usize` bytes.
    Array(&'static Wire, usize),
    /// Fields in order, then tagged fields, some of which the decoder knows: (tag, shape).
    Struct(&'static [Wire], &'static [(u32, Wire)]),
}

use Wire::{Array, Bytes, Fixed, Struct};

const I8: Wire = Fixed(1);
const I16: Wire = Fixed(2);
const I32: Wire = Fixed(4);
const I64: Wire = Fixed(8);
const UUID: Wire = Fixed(16);
const BOOL: Wire = I8;
const I32S: Wire = Array(&I32, size_of::<i32>());

/// A struct without tagged fields the decoder knows.
const fn fields(wires: &'static [Wire]) -> Wire {
    Struct(wires, &[])
}

/// An array of structs of the given decoded type.
macro_rules! array_of {
    ($ty:ty, [$($wire:expr),* $(,)?]) => {
        Array(&fields(&[$($wire),*]), size_of::<$ty>())
    };
    ($ty:ty, $wire:expr) => {
        Array(&$wire, size_of::<$ty>())
    };
}

const RESPONSE_HEADER: Wire = fields(&[I32]);

const METADATA: Wire = fields(&[
    I32,
    array_of!(metadata::MetadataResponseBroker, [I32, Bytes, I32, Bytes]),
    Bytes,
    I32,
    array_of!(
        metadata::MetadataResponseTopic,
        [
            I16,
            Bytes,
            UUID,
            BOOL,
            array_of!(
                metadata::MetadataResponsePartition,
                [I16, I32, I32, I32, I32S, I32S, I32S]
            ),
            I32,
        ]
    ),
]);

const LIST_OFFSETS: Wire = fields(&[
    I32,
    array_of!(
        list_offsets::ListOffsetsTopicResponse,
        [
            Bytes,
            array_of!(
                list_offsets::ListOffsetsPartitionResponse,
                [I32, I16, I64, I64, I32]
            ),
        ]
    ),
]);

const DESCRIBE_CONFIGS: Wire = fields(&[
    I32,
    array_of!(
        describe_configs::DescribeConfigsResult,
        [
            I16,
            Bytes,
            I8,
            Bytes,
            array_of!(
                describe_configs::DescribeConfigsResourceResult,
                [
                    Bytes,
                    Bytes,
                    BOOL,
                    I8,
                    BOOL,
                    array_of!(describe_configs::DescribeConfigsSynonym, [Bytes, Bytes, I8]),
                    I8,
                    Bytes,
                ]
            ),
        ]
    ),
]);

const CREATE_TOPICS: Wire = fields(&[
    I32,
    array_of!(
        create_topics::CreatableTopicResult,
        Struct(
            &[
                Bytes,
                I16,
                Bytes,
                I32,
                I16,
                array_of!(
                    create_topics::CreatableTopicConfigs,
                    [Bytes, Bytes, BOOL, I8, BOOL]
                ),
            ],
            // topic_config_error_code
            &[(0, I16)],
        )
    ),
]);

const DELETE_TOPICS: Wire = fields(&[
    I32,
    array_of!(delete_topics::DeletableTopicResult, [Bytes, I16]),
]);

const INCREMENTAL_ALTER_CONFIGS: Wire = fields(&[
    I32,
    array_of!(
        alter_configs::AlterConfigsResourceResponse,
        [I16, Bytes, I8, Bytes]
    ),
]);

const LIST_GROUPS: Wire = fields(&[
    I32,
    I16,
    array_of!(list_groups::ListedGroup, [Bytes, Bytes, Bytes]),
]);

const DESCRIBE_GROUPS: Wire = fields(&[
    I32,
    array_of!(
        describe_groups::DescribedGroup,
        [
            I16,
            Bytes,
            Bytes,
            Bytes,
            Bytes,
            array_of!(
                describe_groups::DescribedGroupMember,
                [Bytes, Bytes, Bytes, Bytes, Bytes, Bytes]
            ),
            I32,
        ]
    ),
]);

const OFFSET_FETCH: Wire = fields(&[
    I32,
    array_of!(
        offset_fetch::OffsetFetchResponseTopic,
        [
            Bytes,
            array_of!(
                offset_fetch::OffsetFetchResponsePartition,
                [I32, I64, I32, Bytes, I16]
            ),
        ]
    ),
    I16,
]);

const OFFSET_COMMIT: Wire = fields(&[
    I32,
    array_of!(
        offset_commit::OffsetCommitResponseTopic,
        [
            Bytes,
            array_of!(offset_commit::OffsetCommitResponsePartition, [I32, I16]),
        ]
    ),
]);

const PRODUCE: Wire = fields(&[
    array_of!(
        produce::TopicProduceResponse,
        [
            Bytes,
            array_of!(
                produce::PartitionProduceResponse,
                [
                    I32,
                    I16,
                    I64,
                    I64,
                    I64,
                    array_of!(produce::BatchIndexAndErrorMessage, [I32, Bytes]),
                    Bytes,
                ]
            ),
        ]
    ),
    I32,
]);

const FETCH: Wire = fields(&[
    I32,
    I16,
    I32,
    array_of!(
        fetch::FetchableTopicResponse,
        [
            Bytes,
            array_of!(
                fetch::PartitionData,
                Struct(
                    &[
                        I32,
                        I16,
                        I64,
                        I64,
                        I64,
                        array_of!(fetch::AbortedTransaction, [I64, I64]),
                        I32,
                        Bytes,
                    ],
                    // diverging_epoch, current_leader, snapshot_id
                    &[
                        (0, fields(&[I32, I64])),
                        (1, fields(&[I32, I32])),
                        (2, fields(&[I64, I32])),
                    ],
                )
            ),
        ]
    ),
]);

const FIND_COORDINATOR: Wire = fields(&[I32, I16, Bytes, I32, Bytes, I32]);

const JOIN_GROUP: Wire = fields(&[
    I32,
    I16,
    I32,
    Bytes,
    Bytes,
    Bytes,
    Bytes,
    array_of!(join_group::JoinGroupResponseMember, [Bytes, Bytes, Bytes]),
]);

const SYNC_GROUP: Wire = fields(&[I32, I16, Bytes, Bytes, Bytes]);

const HEARTBEAT: Wire = fields(&[I32, I16]);

const LEAVE_GROUP: Wire = fields(&[
    I32,
    I16,
    array_of!(leave_group::MemberResponse, [Bytes, Bytes, I16]),
]);

/// Every API the CLI calls, the version it calls it at, and that version's response schema.
/// Only flexible versions: the walk knows no other encoding.
const APIS: &[(ApiKey, i16, Wire)] = &[
    (ApiKey::Metadata, 12, METADATA),
    (ApiKey::ListOffsets, 6, LIST_OFFSETS),
    (ApiKey::DescribeConfigs, 4, DESCRIBE_CONFIGS),
    (ApiKey::CreateTopics, 5, CREATE_TOPICS),
    (ApiKey::DeleteTopics, 4, DELETE_TOPICS),
    (
        ApiKey::IncrementalAlterConfigs,
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    (ApiKey::ListGroups, 4, LIST_GROUPS),
    (ApiKey::DescribeGroups, 5, DESCRIBE_GROUPS),
    (ApiKey::OffsetFetch, 7, OFFSET_FETCH),
    (ApiKey::OffsetCommit, 8, OFFSET_COMMIT),
    (ApiKey::Produce, 9, PRODUCE),
    (ApiKey::Fetch, 12, FETCH),
    (ApiKey::FindCoordinator, 3, FIND_COORDINATOR),
    (ApiKey::JoinGroup, 7, JOIN_GROUP),
    (ApiKey::SyncGroup, 5, SYNC_GROUP),
    (ApiKey::Heartbeat, 4, HEARTBEAT),
    (ApiKey::LeaveGroup, 4, LEAVE_GROUP),
];

fn schema(api: ApiKey) -> Option<(i16, &'static Wire)> {
    APIS.iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, version, wire)| (*version, wire))
}

/// The version the CLI speaks `api` at; `None` for an API it has no response schema for.
pub fn version(api: ApiKey) -> Option<i16> {
    schema(api).map(|(version, _)| version)
}

/// Checks a whole response frame (header and body, without the size prefix) of `api` at
/// [`version`] against its schema. `Ok` means decoding it allocates at most the frame's
/// size plus [`DECODE_BUDGET_BYTES`].
pub fn check(api: ApiKey, frame: &[u8]) -> Result<(), String> {
    let (_, body) = schema(api).ok_or_else(|| format!("no response schema for {api:?}"))?;
    let mut walk = Walk {
        rest: frame,
        budget_left: DECODE_BUDGET_BYTES,
    };
    walk.wire(&RESPONSE_HEADER)
        .and_then(|()| walk.wire(body))
        .map_err(|e| format!("{api:?} response refused: {e}"))
}

struct Walk<'a> {
    rest: &'a [u8],
    budget_left: usize,
}

impl Walk<'_> {
    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.rest.len() {
            return Err(format!(
                "a field of {n} bytes with {} left",
                self.rest.len()
            ));
        }
        self.rest = &self.rest[n..];
        Ok(())
    }

    /// Exactly as `kafka-protocol` reads it: at most five bytes, bits past 32 dropped.
    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let (&b, rest) = self.rest.split_first().ok_or("ends inside a varint")?;
            self.rest = rest;
            value |= (u32::from(b) & 0x7F) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    fn charge(&mut self, bytes: u64) -> Result<(), String> {
        match usize::try_from(bytes) {
            Ok(b) if b <= self.budget_left => {
                self.budget_left -= b;
                Ok(())
            }
            _ => Err(format!(
                "decoding would take more than {DECODE_BUDGET_BYTES} bytes"
            )),
        }
    }

    fn wire(&mut self, wire: &Wire) -> Result<(), String> {
        match *wire {
            Fixed(n) => self.skip(n),
            Bytes => match self.uvarint()? {
                0 => Ok(()),
                n => self.skip(n as usize - 1),
            },
            Array(element, element_size) => {
                let count = match self.uvarint()? {
                    0 => return Ok(()),
                    n => u64::from(n - 1),
                };
                if count > self.rest.len() as u64 {
                    return Err(format!(
                        "{count} elements cannot fit in {} bytes",
                        self.rest.len()
                    ));
                }
                self.charge(count * element_size as u64)?;
                for _ in 0..count {
                    self.wire(element)?;
                }
                Ok(())
            }
            Struct(wires, known_tags) => {
                for w in wires {
                    self.wire(w)?;
                }
                self.tagged_fields(known_tags)
            }
        }
    }

    fn tagged_fields(&mut self, known: &[(u32, Wire)]) -> Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.charge(TAGGED_FIELD_COST_BYTES as u64)?;
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            match known.iter().find(|(t, _)| *t == tag) {
                None => self.skip(size)?,
                Some((_, wire)) => {
                    let before = self.rest.len();
                    self.wire(wire)?;
                    if before - self.rest.len() != size {
                        return Err(format!("tagged field {tag} disagrees with its size"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes as Buf, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// A response header v1 for `correlation_id` 7, then `body` encoded at the CLI's version.
    fn frame(api: ApiKey, body: &impl Encodable) -> Vec<u8> {
        let version = version(api).expect("an API the CLI speaks");
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut out, api.response_header_version(version))
            .expect("header encodes");
        body.encode(&mut out, version).expect("body encodes");
        out.to_vec()
    }

    /// One populated response per API: every array holds an element, so every nested schema
    /// is walked.
    fn samples() -> Vec<(ApiKey, Vec<u8>)> {
        use kafka_protocol::messages::{
            create_topics_response::*,
            delete_topics_response::*,
            describe_configs_response::*,
            describe_groups_response::*,
            fetch_response::*,
            incremental_alter_configs_response::*,
            join_group_response::*,
            leave_group_response::*,
            list_groups_response::*,
            list_offsets_response::*,
            metadata_response::*,
            offset_commit_response::*,
            offset_fetch_response::*,
            produce_response::{
                BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
            },
        };
        vec![
            (
                ApiKey::Metadata,
                frame(
                    ApiKey::Metadata,
                    &MetadataResponse::default()
                        .with_brokers(vec![MetadataResponseBroker::default()
                            .with_host(s("h"))
                            .with_rack(Some(s("r")))])
                        .with_cluster_id(Some(s("c")))
                        .with_topics(vec![MetadataResponseTopic::default()
                            .with_name(Some(TopicName(s("t"))))
                            .with_partitions(vec![MetadataResponsePartition::default()
                                .with_replica_nodes(vec![BrokerId(1)])
                                .with_isr_nodes(vec![BrokerId(1)])
                                .with_offline_replicas(vec![BrokerId(2)])])]),
                ),
            ),
            (
                ApiKey::ListOffsets,
                frame(
                    ApiKey::ListOffsets,
                    &ListOffsetsResponse::default().with_topics(vec![
                        ListOffsetsTopicResponse::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![ListOffsetsPartitionResponse::default()]),
                    ]),
                ),
            ),
            (
                ApiKey::DescribeConfigs,
                frame(
                    ApiKey::DescribeConfigs,
                    &DescribeConfigsResponse::default().with_results(vec![
                        DescribeConfigsResult::default()
                            .with_error_message(Some(s("m")))
                            .with_resource_name(s("t"))
                            .with_configs(vec![DescribeConfigsResourceResult::default()
                                .with_name(s("k"))
                                .with_value(Some(s("v")))
                                .with_synonyms(vec![DescribeConfigsSynonym::default()
                                    .with_name(s("k2"))
                                    .with_value(Some(s("v2")))])
                                .with_documentation(Some(s("d")))]),
                    ]),
                ),
            ),
            (
                ApiKey::CreateTopics,
                frame(
                    ApiKey::CreateTopics,
                    &CreateTopicsResponse::default().with_topics(vec![
                        CreatableTopicResult::default()
                            .with_name(TopicName(s("t")))
                            .with_error_message(Some(s("m")))
                            .with_topic_config_error_code(3)
                            .with_configs(Some(vec![CreatableTopicConfigs::default()
                                .with_name(s("k"))
                                .with_value(Some(s("v")))])),
                    ]),
                ),
            ),
            (
                ApiKey::DeleteTopics,
                frame(
                    ApiKey::DeleteTopics,
                    &DeleteTopicsResponse::default().with_responses(vec![
                        DeletableTopicResult::default().with_name(Some(TopicName(s("t")))),
                    ]),
                ),
            ),
            (
                ApiKey::IncrementalAlterConfigs,
                frame(
                    ApiKey::IncrementalAlterConfigs,
                    &IncrementalAlterConfigsResponse::default().with_responses(vec![
                        AlterConfigsResourceResponse::default()
                            .with_error_message(Some(s("m")))
                            .with_resource_name(s("t")),
                    ]),
                ),
            ),
            (
                ApiKey::ListGroups,
                frame(
                    ApiKey::ListGroups,
                    &ListGroupsResponse::default().with_groups(vec![ListedGroup::default()
                        .with_group_id(GroupId(s("g")))
                        .with_protocol_type(s("consumer"))
                        .with_group_state(s("Stable"))]),
                ),
            ),
            (
                ApiKey::DescribeGroups,
                frame(
                    ApiKey::DescribeGroups,
                    &DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
                        .with_group_id(GroupId(s("g")))
                        .with_members(vec![DescribedGroupMember::default()
                            .with_member_id(s("m"))
                            .with_group_instance_id(Some(s("i")))
                            .with_member_metadata(Buf::from_static(b"meta"))
                            .with_member_assignment(Buf::from_static(b"assignment"))])]),
                ),
            ),
            (
                ApiKey::OffsetFetch,
                frame(
                    ApiKey::OffsetFetch,
                    &OffsetFetchResponse::default().with_topics(vec![
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![
                                OffsetFetchResponsePartition::default().with_metadata(Some(s("m")))
                            ]),
                    ]),
                ),
            ),
            (
                ApiKey::OffsetCommit,
                frame(
                    ApiKey::OffsetCommit,
                    &OffsetCommitResponse::default().with_topics(vec![
                        OffsetCommitResponseTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![OffsetCommitResponsePartition::default()]),
                    ]),
                ),
            ),
            (
                ApiKey::Produce,
                frame(
                    ApiKey::Produce,
                    &ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default()
                            .with_name(TopicName(s("t")))
                            .with_partition_responses(vec![PartitionProduceResponse::default()
                                .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                                    .with_batch_index_error_message(Some(s("e")))])
                                .with_error_message(Some(s("m")))]),
                    ]),
                ),
            ),
            (
                ApiKey::Fetch,
                frame(
                    ApiKey::Fetch,
                    &FetchResponse::default().with_responses(vec![
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(s("t")))
                            .with_partitions(vec![PartitionData::default()
                                .with_aborted_transactions(Some(
                                    vec![AbortedTransaction::default()],
                                ))
                                .with_records(Some(Buf::from_static(b"records")))
                                .with_diverging_epoch(EpochEndOffset::default().with_epoch(3))
                                .with_current_leader(
                                    LeaderIdAndEpoch::default().with_leader_id(BrokerId(4)),
                                )
                                .with_snapshot_id(SnapshotId::default().with_epoch(5))
                                .with_unknown_tagged_field(9, Buf::from_static(b"x"))]),
                    ]),
                ),
            ),
            (
                ApiKey::FindCoordinator,
                frame(
                    ApiKey::FindCoordinator,
                    &FindCoordinatorResponse::default()
                        .with_error_message(Some(s("m")))
                        .with_host(s("h")),
                ),
            ),
            (
                ApiKey::JoinGroup,
                frame(
                    ApiKey::JoinGroup,
                    &JoinGroupResponse::default()
                        .with_protocol_type(Some(s("consumer")))
                        .with_protocol_name(Some(s("range")))
                        .with_leader(s("l"))
                        .with_member_id(s("m"))
                        .with_members(vec![JoinGroupResponseMember::default()
                            .with_member_id(s("m"))
                            .with_group_instance_id(Some(s("i")))
                            .with_metadata(Buf::from_static(b"meta"))]),
                ),
            ),
            (
                ApiKey::SyncGroup,
                frame(
                    ApiKey::SyncGroup,
                    &SyncGroupResponse::default()
                        .with_protocol_type(Some(s("consumer")))
                        .with_protocol_name(Some(s("range")))
                        .with_assignment(Buf::from_static(b"assignment")),
                ),
            ),
            (
                ApiKey::Heartbeat,
                frame(ApiKey::Heartbeat, &HeartbeatResponse::default()),
            ),
            (
                ApiKey::LeaveGroup,
                frame(
                    ApiKey::LeaveGroup,
                    &LeaveGroupResponse::default().with_members(vec![MemberResponse::default()
                        .with_member_id(s("m"))
                        .with_group_instance_id(Some(s("i")))]),
                ),
            ),
        ]
    }

    #[test]
    fn every_api_has_a_sample_and_every_sample_walks_to_its_last_byte() {
        let samples = samples();
        assert_eq!(samples.len(), APIS.len());
        for (api, bytes) in samples {
            let (_, body) = schema(api).unwrap();
            let mut walk = Walk {
                rest: &bytes,
                budget_left: DECODE_BUDGET_BYTES,
            };
            walk.wire(&RESPONSE_HEADER).unwrap();
            walk.wire(body).unwrap_or_else(|e| panic!("{api:?}: {e}"));
            assert!(
                walk.rest.is_empty(),
                "{api:?}: {} bytes left",
                walk.rest.len()
            );
        }
    }

    #[test]
    fn every_strict_prefix_of_a_sample_is_refused() {
        for (api, bytes) in samples() {
            assert!(check(api, &bytes).is_ok(), "{api:?}");
            for cut in 0..bytes.len() {
                assert!(check(api, &bytes[..cut]).is_err(), "{api:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_huge_array_count_is_refused_before_decoding() {
        // Header, throttle time, then a brokers array claiming 2^32 - 2 entries.
        let mut bytes = BytesMut::new();
        bytes.put_i32(7);
        bytes.put_u8(0);
        bytes.put_i32(0);
        bytes.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let refused = check(ApiKey::Metadata, &bytes).unwrap_err();
        assert!(refused.contains("cannot fit"), "{refused}");
    }

    #[test]
    fn arrays_that_fit_their_bytes_are_still_charged_to_the_budget() {
        // The sample's arrays pass the count check; with no budget left the first one fails.
        let (_, bytes) = samples().remove(0);
        let mut walk = Walk {
            rest: &bytes,
            budget_left: 0,
        };
        walk.wire(&RESPONSE_HEADER).unwrap();
        assert!(walk.wire(&METADATA).unwrap_err().contains("more than"));
    }

    #[test]
    fn a_known_tagged_field_whose_size_lies_is_refused() {
        let (_, mut bytes) = samples()
            .into_iter()
            .find(|(api, _)| *api == ApiKey::Fetch)
            .unwrap();
        // The diverging epoch (tag 0, 12 bytes of fields plus one of tagged fields, epoch 3)
        // is written as `00 0d 00 00 00 03`; claim 12 bytes instead.
        let at = bytes
            .windows(6)
            .position(|w| w == [0x00, 0x0d, 0x00, 0x00, 0x00, 0x03])
            .expect("diverging epoch tag");
        bytes[at + 1] = 0x0c;
        assert!(check(ApiKey::Fetch, &bytes)
            .unwrap_err()
            .contains("disagrees with its size"));
    }
}
