//! Response schemas for the guard, for clients of untrusted brokers (the `sluice` CLI): the
//! same schema language and walker as the request schemas in `guard.rs`.
//!
//! A response, as it follows the size prefix, is a header and a body:
//!
//! ```text
//! response header v0: correlation_id i32
//! response header v1: correlation_id i32 | tagged fields  (flexible versions but ApiVersions)
//! ```

use std::mem::size_of;

use kafka_protocol::messages::{
    create_topics_response as create_topics, delete_topics_response as delete_topics,
    describe_configs_response as describe_configs, describe_groups_response as describe_groups,
    describe_quorum_response as describe_quorum, fetch_response as fetch,
    incremental_alter_configs_response as alter_configs, join_group_response as join_group,
    leave_group_response as leave_group, list_groups_response as list_groups,
    list_offsets_response as list_offsets, metadata_response as metadata,
    offset_commit_response as offset_commit, offset_fetch_response as offset_fetch,
    produce_response as produce, write_txn_markers_response as txn_markers, ApiKey,
};

use kafka_protocol::messages::add_partitions_to_txn_response as add_partitions;
use kafka_protocol::messages::alter_partition_reassignments_response as alter_reassignments;
use kafka_protocol::messages::elect_leaders_response as elect_leaders;
use kafka_protocol::messages::list_partition_reassignments_response as list_reassignments;

use super::Kind::{Bytes, I32s, Str, Struct, Structs, Uuid, I16, I32, I64, I8};
use super::{f, since, tagged, Field, GuardError, Walker};

/// `[{name: string, partitions: [{fields}]}]`, the shape most per-partition answers take,
/// given the decoded topic and partition types.
macro_rules! per_topic {
    ($topic:ty, $partition:ty, [$($field:expr),* $(,)?]) => {
        Structs(
            &[f(Str), f(Structs(&[$($field),*], size_of::<$partition>()))],
            size_of::<$topic>(),
        )
    };
}

const RESPONSE_HEADER: &[Field] = &[f(I32)];

const METADATA: &[Field] = &[
    f(I32),
    f(Structs(
        &[f(I32), f(Str), f(I32), f(Str)],
        size_of::<metadata::MetadataResponseBroker>(),
    )),
    f(Str),
    f(I32),
    f(Structs(
        &[
            f(I16),
            f(Str),
            f(Uuid),
            f(I8),
            f(Structs(
                &[f(I16), f(I32), f(I32), f(I32), f(I32s), f(I32s), f(I32s)],
                size_of::<metadata::MetadataResponsePartition>(),
            )),
            f(I32),
        ],
        size_of::<metadata::MetadataResponseTopic>(),
    )),
];

const LIST_OFFSETS: &[Field] = &[
    f(I32),
    f(per_topic!(
        list_offsets::ListOffsetsTopicResponse,
        list_offsets::ListOffsetsPartitionResponse,
        [f(I32), f(I16), f(I64), f(I64), f(I32)]
    )),
];

const DESCRIBE_CONFIGS: &[Field] = &[
    f(I32),
    f(Structs(
        &[
            f(I16),
            f(Str),
            f(I8),
            f(Str),
            f(Structs(
                &[
                    f(Str),
                    f(Str),
                    f(I8),
                    f(I8),
                    f(I8),
                    f(Structs(
                        &[f(Str), f(Str), f(I8)],
                        size_of::<describe_configs::DescribeConfigsSynonym>(),
                    )),
                    f(I8),
                    f(Str),
                ],
                size_of::<describe_configs::DescribeConfigsResourceResult>(),
            )),
        ],
        size_of::<describe_configs::DescribeConfigsResult>(),
    )),
];

const CREATE_TOPICS: &[Field] = &[
    f(I32),
    f(Structs(
        &[
            f(Str),
            f(I16),
            f(Str),
            f(I32),
            f(I16),
            f(Structs(
                &[f(Str), f(Str), f(I8), f(I8), f(I8)],
                size_of::<create_topics::CreatableTopicConfigs>(),
            )),
            // topic_config_error_code
            tagged(0, 5, I16),
        ],
        size_of::<create_topics::CreatableTopicResult>(),
    )),
];

const DELETE_TOPICS: &[Field] = &[
    f(I32),
    f(Structs(
        &[f(Str), f(I16)],
        size_of::<delete_topics::DeletableTopicResult>(),
    )),
];

const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(I32),
    f(Structs(
        &[f(I16), f(Str), f(I8), f(Str)],
        size_of::<alter_configs::AlterConfigsResourceResponse>(),
    )),
];

const LIST_GROUPS: &[Field] = &[
    f(I32),
    f(I16),
    f(Structs(
        &[f(Str), f(Str), f(Str)],
        size_of::<list_groups::ListedGroup>(),
    )),
];

const DESCRIBE_GROUPS: &[Field] = &[
    f(I32),
    f(Structs(
        &[
            f(I16),
            f(Str),
            f(Str),
            f(Str),
            f(Str),
            f(Structs(
                &[f(Str), f(Str), f(Str), f(Str), f(Bytes), f(Bytes)],
                size_of::<describe_groups::DescribedGroupMember>(),
            )),
            f(I32),
        ],
        size_of::<describe_groups::DescribedGroup>(),
    )),
];

const OFFSET_FETCH: &[Field] = &[
    f(I32),
    f(per_topic!(
        offset_fetch::OffsetFetchResponseTopic,
        offset_fetch::OffsetFetchResponsePartition,
        [f(I32), f(I64), f(I32), f(Str), f(I16)]
    )),
    f(I16),
];

const OFFSET_COMMIT: &[Field] = &[
    f(I32),
    f(per_topic!(
        offset_commit::OffsetCommitResponseTopic,
        offset_commit::OffsetCommitResponsePartition,
        [f(I32), f(I16)]
    )),
];

const PRODUCE: &[Field] = &[
    f(per_topic!(
        produce::TopicProduceResponse,
        produce::PartitionProduceResponse,
        [
            f(I32),
            f(I16),
            f(I64),
            f(I64),
            f(I64),
            f(Structs(
                &[f(I32), f(Str)],
                size_of::<produce::BatchIndexAndErrorMessage>(),
            )),
            f(Str),
        ]
    )),
    f(I32),
];

const FETCH: &[Field] = &[
    f(I32),
    f(I16),
    f(I32),
    f(per_topic!(
        fetch::FetchableTopicResponse,
        fetch::PartitionData,
        [
            f(I32),
            f(I16),
            f(I64),
            f(I64),
            f(I64),
            f(Structs(
                &[f(I64), f(I64)],
                size_of::<fetch::AbortedTransaction>(),
            )),
            f(I32),
            f(Bytes),
            // diverging_epoch, current_leader, snapshot_id
            tagged(0, 12, Struct(&[f(I32), f(I64)])),
            tagged(1, 12, Struct(&[f(I32), f(I32)])),
            tagged(2, 12, Struct(&[f(I64), f(I32)])),
        ]
    )),
];

const FIND_COORDINATOR: &[Field] = &[f(I32), f(I16), f(Str), f(I32), f(Str), f(I32)];

const JOIN_GROUP: &[Field] = &[
    f(I32),
    f(I16),
    f(I32),
    f(Str),
    f(Str),
    f(Str),
    f(Str),
    f(Structs(
        &[f(Str), f(Str), f(Bytes)],
        size_of::<join_group::JoinGroupResponseMember>(),
    )),
];

const SYNC_GROUP: &[Field] = &[f(I32), f(I16), f(Str), f(Str), f(Bytes)];

const HEARTBEAT: &[Field] = &[f(I32), f(I16)];

const LEAVE_GROUP: &[Field] = &[
    f(I32),
    f(I16),
    f(Structs(
        &[f(Str), f(Str), f(I16)],
        size_of::<leave_group::MemberResponse>(),
    )),
];

/// DescribeQuorum v1: the metadata log's leader, epoch, high watermark and replicas.
const DESCRIBE_QUORUM: &[Field] = &[
    f(I16),
    f(per_topic!(
        describe_quorum::TopicData,
        describe_quorum::PartitionData,
        [
            f(I32),
            f(I16),
            f(I32),
            f(I32),
            f(I64),
            f(Structs(
                &[f(I32), f(I64), f(I64), f(I64)],
                size_of::<describe_quorum::ReplicaState>(),
            )),
            f(Structs(
                &[f(I32), f(I64), f(I64), f(I64)],
                size_of::<describe_quorum::ReplicaState>(),
            )),
        ]
    )),
];

/// AddPartitionsToTxn v4+ (KIP-890), as partition leaders read the coordinator's verdict:
/// per transaction, per topic, per partition an error code.
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    f(I32),
    since(4, I16),
    since(
        4,
        Structs(
            &[
                f(Str),
                f(per_topic!(
                    add_partitions::AddPartitionsToTxnTopicResult,
                    add_partitions::AddPartitionsToTxnPartitionResult,
                    [f(I32), f(I16)]
                )),
            ],
            size_of::<add_partitions::AddPartitionsToTxnResult>(),
        ),
    ),
];

/// WriteTxnMarkers v1, as a transaction coordinator reads a partition leader's answer.
const WRITE_TXN_MARKERS: &[Field] = &[f(Structs(
    &[
        f(I64),
        f(per_topic!(
            txn_markers::WritableTxnMarkerTopicResult,
            txn_markers::WritableTxnMarkerPartitionResult,
            [f(I32), f(I16)]
        )),
    ],
    size_of::<txn_markers::WritableTxnMarkerResult>(),
))];

/// AlterPartitionReassignments v0-1: a top-level error, then per topic, per partition an
/// error and its message.
const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    f(I32),
    since(1, I8),
    f(I16),
    f(Str),
    f(per_topic!(
        alter_reassignments::ReassignableTopicResponse,
        alter_reassignments::ReassignablePartitionResponse,
        [f(I32), f(I16), f(Str)]
    )),
];

/// ListPartitionReassignments v0: per topic, per partition its replicas, adding and removing.
const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    f(I32),
    f(I16),
    f(Str),
    f(per_topic!(
        list_reassignments::OngoingTopicReassignment,
        list_reassignments::OngoingPartitionReassignment,
        [f(I32), f(I32s), f(I32s), f(I32s)]
    )),
];

/// ElectLeaders v1-2: a top-level error, then per topic, per partition an error and message.
const ELECT_LEADERS: &[Field] = &[
    f(I32),
    since(1, I16),
    f(per_topic!(
        elect_leaders::ReplicaElectionResult,
        elect_leaders::PartitionResult,
        [f(I32), f(I16), f(Str)]
    )),
];

/// Every response with a schema: `(api, min_version, max_version, body)`. The range is what
/// the tests check against the codec, so far the versions the CLI speaks; widen it only
/// together with the fields' version bounds and the tests' samples.
const RESPONSE_SCHEMAS: &[(ApiKey, i16, i16, &[Field])] = &[
    (ApiKey::Metadata, 12, 12, METADATA),
    (ApiKey::ListOffsets, 6, 6, LIST_OFFSETS),
    (ApiKey::DescribeConfigs, 4, 4, DESCRIBE_CONFIGS),
    (ApiKey::CreateTopics, 5, 5, CREATE_TOPICS),
    (ApiKey::DeleteTopics, 4, 4, DELETE_TOPICS),
    (
        ApiKey::IncrementalAlterConfigs,
        1,
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    (ApiKey::ListGroups, 4, 4, LIST_GROUPS),
    (ApiKey::DescribeGroups, 5, 5, DESCRIBE_GROUPS),
    (ApiKey::OffsetFetch, 7, 7, OFFSET_FETCH),
    (ApiKey::OffsetCommit, 8, 8, OFFSET_COMMIT),
    (ApiKey::Produce, 9, 9, PRODUCE),
    (ApiKey::Fetch, 12, 12, FETCH),
    (ApiKey::FindCoordinator, 3, 3, FIND_COORDINATOR),
    (ApiKey::JoinGroup, 7, 7, JOIN_GROUP),
    (ApiKey::SyncGroup, 5, 5, SYNC_GROUP),
    (ApiKey::Heartbeat, 4, 4, HEARTBEAT),
    (ApiKey::LeaveGroup, 4, 4, LEAVE_GROUP),
    (ApiKey::DescribeQuorum, 1, 1, DESCRIBE_QUORUM),
    (ApiKey::AddPartitionsToTxn, 4, 5, ADD_PARTITIONS_TO_TXN),
    (ApiKey::WriteTxnMarkers, 1, 1, WRITE_TXN_MARKERS),
    (
        ApiKey::AlterPartitionReassignments,
        0,
        1,
        ALTER_PARTITION_REASSIGNMENTS,
    ),
    (
        ApiKey::ListPartitionReassignments,
        0,
        0,
        LIST_PARTITION_REASSIGNMENTS,
    ),
    (ApiKey::ElectLeaders, 1, 2, ELECT_LEADERS),
];

/// The versions of `api` whose responses [`check_response`] can walk.
pub fn response_versions(api: ApiKey) -> Option<(i16, i16)> {
    RESPONSE_SCHEMAS
        .iter()
        .find(|(a, ..)| *a == api)
        .map(|&(_, lo, hi, _)| (lo, hi))
}

fn response_schema(api: ApiKey, version: i16) -> Option<&'static [Field]> {
    RESPONSE_SCHEMAS
        .iter()
        .find(|&&(a, lo, hi, _)| a == api && (lo..=hi).contains(&version))
        .map(|&(.., body)| body)
}

/// Checks that decoding `response` (what follows the size prefix: the response header, then
/// the body) as `api` at `version` allocates at most `budget_bytes` for arrays and tagged
/// fields on top of the response itself. Returns the number of bytes the schemas account for.
pub fn check_response(
    api: ApiKey,
    version: i16,
    response: &[u8],
    budget_bytes: usize,
) -> Result<usize, GuardError> {
    let body = response_schema(api, version).ok_or(GuardError::NoSchema { api, version })?;
    let header_flexible = api.response_header_version(version) >= 1;
    let mut walker = Walker::new(response, version, header_flexible, budget_bytes);
    walker.structure(RESPONSE_HEADER)?;
    // A body is flexible exactly when its request's header is v2; the response header can
    // say otherwise (ApiVersions keeps v0 so that any client can read it).
    walker.flexible = api.request_header_version(version) >= 2;
    walker.structure(body)?;
    Ok(walker.pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes as Buf, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    const BUDGET: usize = 1 << 20;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// A response header for `correlation_id` 7, then `body`, both encoded at `version`.
    fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut out, api.response_header_version(version))
            .expect("header encodes");
        body.encode(&mut out, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
        out.to_vec()
    }

    /// A populated response of `api` at `v`: every array holds an element and every known
    /// tagged field is set, so every nested schema is walked.
    fn sample(api: ApiKey, v: i16) -> Vec<u8> {
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
        match api {
            ApiKey::Metadata => frame(
                api,
                v,
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
            ApiKey::ListOffsets => frame(
                api,
                v,
                &ListOffsetsResponse::default().with_topics(vec![
                    ListOffsetsTopicResponse::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![ListOffsetsPartitionResponse::default()]),
                ]),
            ),
            ApiKey::DescribeConfigs => frame(
                api,
                v,
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
            ApiKey::CreateTopics => frame(
                api,
                v,
                &CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
                    .with_name(TopicName(s("t")))
                    .with_error_message(Some(s("m")))
                    .with_topic_config_error_code(3)
                    .with_configs(Some(vec![CreatableTopicConfigs::default()
                        .with_name(s("k"))
                        .with_value(Some(s("v")))]))]),
            ),
            ApiKey::DeleteTopics => frame(
                api,
                v,
                &DeleteTopicsResponse::default().with_responses(vec![
                    DeletableTopicResult::default().with_name(Some(TopicName(s("t")))),
                ]),
            ),
            ApiKey::IncrementalAlterConfigs => frame(
                api,
                v,
                &IncrementalAlterConfigsResponse::default().with_responses(vec![
                    AlterConfigsResourceResponse::default()
                        .with_error_message(Some(s("m")))
                        .with_resource_name(s("t")),
                ]),
            ),
            ApiKey::ListGroups => frame(
                api,
                v,
                &ListGroupsResponse::default().with_groups(vec![ListedGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_protocol_type(s("consumer"))
                    .with_group_state(s("Stable"))]),
            ),
            ApiKey::DescribeGroups => frame(
                api,
                v,
                &DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_members(vec![DescribedGroupMember::default()
                        .with_member_id(s("m"))
                        .with_group_instance_id(Some(s("i")))
                        .with_member_metadata(Buf::from_static(b"meta"))
                        .with_member_assignment(Buf::from_static(b"assignment"))])]),
            ),
            ApiKey::OffsetFetch => frame(
                api,
                v,
                &OffsetFetchResponse::default().with_topics(vec![
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![
                            OffsetFetchResponsePartition::default().with_metadata(Some(s("m")))
                        ]),
                ]),
            ),
            ApiKey::OffsetCommit => frame(
                api,
                v,
                &OffsetCommitResponse::default().with_topics(vec![
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![OffsetCommitResponsePartition::default()]),
                ]),
            ),
            ApiKey::Produce => frame(
                api,
                v,
                &ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                            .with_batch_index_error_message(Some(s("e")))])
                        .with_error_message(Some(s("m")))])]),
            ),
            ApiKey::Fetch => frame(
                api,
                v,
                &FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![PartitionData::default()
                        .with_aborted_transactions(Some(vec![AbortedTransaction::default()]))
                        .with_records(Some(Buf::from_static(b"records")))
                        .with_diverging_epoch(EpochEndOffset::default().with_epoch(3))
                        .with_current_leader(
                            LeaderIdAndEpoch::default().with_leader_id(BrokerId(4)),
                        )
                        .with_snapshot_id(SnapshotId::default().with_epoch(5))
                        .with_unknown_tagged_field(9, Buf::from_static(b"x"))])]),
            ),
            ApiKey::FindCoordinator => frame(
                api,
                v,
                &FindCoordinatorResponse::default()
                    .with_error_message(Some(s("m")))
                    .with_host(s("h")),
            ),
            ApiKey::JoinGroup => frame(
                api,
                v,
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
            ApiKey::SyncGroup => frame(
                api,
                v,
                &SyncGroupResponse::default()
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")))
                    .with_assignment(Buf::from_static(b"assignment")),
            ),
            ApiKey::Heartbeat => frame(api, v, &HeartbeatResponse::default()),
            ApiKey::LeaveGroup => frame(
                api,
                v,
                &LeaveGroupResponse::default().with_members(vec![MemberResponse::default()
                    .with_member_id(s("m"))
                    .with_group_instance_id(Some(s("i")))]),
            ),
            ApiKey::DescribeQuorum => {
                use kafka_protocol::messages::describe_quorum_response::{
                    PartitionData, ReplicaState, TopicData,
                };
                let replica = ReplicaState::default()
                    .with_replica_id(BrokerId(1))
                    .with_log_end_offset(9)
                    .with_last_fetch_timestamp(5)
                    .with_last_caught_up_timestamp(6);
                frame(
                    api,
                    v,
                    &DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
                        .with_topic_name(TopicName(s("__cluster_metadata")))
                        .with_partitions(vec![PartitionData::default()
                            .with_leader_id(BrokerId(1))
                            .with_leader_epoch(3)
                            .with_high_watermark(9)
                            .with_current_voters(vec![replica.clone()])
                            .with_observers(vec![replica])])]),
                )
            }
            ApiKey::AddPartitionsToTxn => {
                use kafka_protocol::messages::add_partitions_to_txn_response::{
                    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult,
                    AddPartitionsToTxnTopicResult,
                };
                frame(
                    api,
                    v,
                    &AddPartitionsToTxnResponse::default()
                        .with_error_code(1)
                        .with_results_by_transaction(vec![AddPartitionsToTxnResult::default()
                            .with_transactional_id(TransactionalId(s("x")))
                            .with_topic_results(vec![AddPartitionsToTxnTopicResult::default()
                                .with_name(TopicName(s("t")))
                                .with_results_by_partition(vec![
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_error_code(48),
                                ])])]),
                )
            }
            ApiKey::WriteTxnMarkers => {
                use kafka_protocol::messages::write_txn_markers_response::{
                    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult,
                    WritableTxnMarkerTopicResult,
                };
                frame(
                    api,
                    v,
                    &WriteTxnMarkersResponse::default().with_markers(vec![
                        WritableTxnMarkerResult::default()
                            .with_producer_id(ProducerId(9))
                            .with_topics(vec![WritableTxnMarkerTopicResult::default()
                                .with_name(TopicName(s("t")))
                                .with_partitions(vec![
                                    WritableTxnMarkerPartitionResult::default().with_error_code(6),
                                ])]),
                    ]),
                )
            }
            ApiKey::AlterPartitionReassignments => {
                use kafka_protocol::messages::alter_partition_reassignments_response::{
                    ReassignablePartitionResponse, ReassignableTopicResponse,
                };
                frame(
                    api,
                    v,
                    &AlterPartitionReassignmentsResponse::default()
                        .with_error_message(Some(s("m")))
                        .with_responses(vec![ReassignableTopicResponse::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![ReassignablePartitionResponse::default()
                                .with_error_code(39)
                                .with_error_message(Some(s("bad")))])]),
                )
            }
            ApiKey::ListPartitionReassignments => {
                use kafka_protocol::messages::list_partition_reassignments_response::{
                    OngoingPartitionReassignment, OngoingTopicReassignment,
                };
                frame(
                    api,
                    v,
                    &ListPartitionReassignmentsResponse::default().with_topics(vec![
                        OngoingTopicReassignment::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![OngoingPartitionReassignment::default()
                                .with_replicas(vec![BrokerId(4), BrokerId(1)])
                                .with_adding_replicas(vec![BrokerId(4)])
                                .with_removing_replicas(vec![BrokerId(1)])]),
                    ]),
                )
            }
            ApiKey::ElectLeaders => {
                use kafka_protocol::messages::elect_leaders_response::{
                    PartitionResult, ReplicaElectionResult,
                };
                frame(
                    api,
                    v,
                    &ElectLeadersResponse::default()
                        .with_error_code(1)
                        .with_replica_election_results(vec![ReplicaElectionResult::default()
                            .with_topic(TopicName(s("t")))
                            .with_partition_result(vec![PartitionResult::default()
                                .with_error_code(84)
                                .with_error_message(Some(s("no")))])]),
                )
            }
            other => panic!("no sample for {other:?}"),
        }
    }

    /// Every (api, version, response) the schemas claim.
    fn samples() -> Vec<(ApiKey, i16, Vec<u8>)> {
        RESPONSE_SCHEMAS
            .iter()
            .flat_map(|&(api, lo, hi, _)| (lo..=hi).map(move |v| (api, v, sample(api, v))))
            .collect()
    }

    fn fetch_sample() -> Vec<u8> {
        let (lo, _) = response_versions(ApiKey::Fetch).unwrap();
        sample(ApiKey::Fetch, lo)
    }

    /// The walker's schemas match the codec's for every version they claim: each consumes
    /// exactly the bytes the codec wrote.
    #[test]
    fn every_response_schema_walks_to_the_last_byte_the_codec_wrote() {
        for (api, v, bytes) in samples() {
            let used =
                check_response(api, v, &bytes, BUDGET).unwrap_or_else(|e| panic!("{api:?}: {e}"));
            assert_eq!(used, bytes.len(), "{api:?} v{v}: walker and codec disagree");
        }
    }

    #[test]
    fn every_strict_prefix_of_a_response_is_refused() {
        for (api, v, bytes) in samples() {
            for cut in 0..bytes.len() {
                assert!(
                    check_response(api, v, &bytes[..cut], BUDGET).is_err(),
                    "{api:?} v{v} cut at {cut}"
                );
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
        let refused = check_response(ApiKey::Metadata, 12, &bytes, BUDGET).unwrap_err();
        assert!(
            matches!(refused, GuardError::CountTooLarge { .. }),
            "{refused}"
        );
    }

    #[test]
    fn arrays_that_fit_their_bytes_are_still_charged_to_the_budget() {
        let bytes = sample(ApiKey::Metadata, 12);
        assert_eq!(
            check_response(ApiKey::Metadata, 12, &bytes, 0),
            Err(GuardError::OverBudget(0))
        );
    }

    #[test]
    fn a_known_tagged_field_whose_size_lies_is_refused() {
        let mut bytes = fetch_sample();
        // The diverging epoch (tag 0, 12 bytes of fields plus one of tagged fields, epoch 3)
        // is written as `00 0d 00 00 00 03`; claim 12 bytes instead.
        let at = bytes
            .windows(6)
            .position(|w| w == [0x00, 0x0d, 0x00, 0x00, 0x00, 0x03])
            .expect("diverging epoch tag");
        bytes[at + 1] = 0x0c;
        assert_eq!(
            check_response(ApiKey::Fetch, 12, &bytes, BUDGET),
            Err(GuardError::TaggedFieldSize { tag: 0 })
        );
    }

    #[test]
    fn versions_without_a_schema_are_refused() {
        let bytes = fetch_sample();
        assert_eq!(
            check_response(ApiKey::Fetch, 11, &bytes, BUDGET),
            Err(GuardError::NoSchema {
                api: ApiKey::Fetch,
                version: 11
            })
        );
        assert!(response_versions(ApiKey::ApiVersions).is_none());
    }
}
