//! The answer to a request that failed as a whole, as Kafka's `AbstractRequest.getErrorResponse`
//! builds it: the error in every place the response has for one (top level, each topic,
//! partition, group, resource or key the request named), echoing the names and ids the request
//! used, so that a client can match each item to its answer.
//!
//! Every API in the table (`apis.rs`) must have one; `request.rs` checks that at compile time.
//! Fields a response version lacks are left at their defaults, so each answer encodes at every
//! version the codec knows (a unit test checks it).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::SUPPORTED_APIS;

/// Builds the response to this request that reports `error_code` everywhere it can.
pub trait ErrorResponse {
    type Response: Encodable;

    /// The response, at `version` of the API, for a request that failed with `error_code`.
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response;
}

/// ApiVersions with `error_code` and every API and version range in the table: with
/// UNSUPPORTED_VERSION, the ranges let a client retry at a version we support (KIP-511).
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

impl ErrorResponse for ApiVersionsRequest {
    type Response = ApiVersionsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        api_versions_response(error_code)
    }
}

impl ErrorResponse for ProduceRequest {
    type Response = ProduceResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use produce_response::{PartitionProduceResponse, TopicProduceResponse};
        let responses = self
            .topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(error_code)
                                    .with_base_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
}

impl ErrorResponse for FetchRequest {
    type Response = FetchResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use fetch_response::{FetchableTopicResponse, PartitionData};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(error_code)
                                    .with_high_watermark(-1)
                                    .with_preferred_read_replica(BrokerId(-1))
                            })
                            .collect(),
                    )
            })
            .collect();
        FetchResponse::default()
            .with_error_code(error_code)
            .with_responses(topics)
    }
}

impl ErrorResponse for ListOffsetsRequest {
    type Response = ListOffsetsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                                    .with_offset(-1)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for MetadataRequest {
    type Response = MetadataResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use metadata_response::MetadataResponseTopic;
        let topics = self
            .topics
            .iter()
            .flatten()
            .map(|t| {
                MetadataResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_error_code(error_code)
            })
            .collect();
        let body = MetadataResponse::default()
            .with_controller_id(BrokerId(-1))
            .with_topics(topics);
        // The top-level error code exists from v13.
        if version >= 13 {
            body.with_error_code(error_code)
        } else {
            body
        }
    }
}

impl ErrorResponse for CreateTopicsRequest {
    type Response = CreateTopicsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use create_topics_response::CreatableTopicResult;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error_code)
            })
            .collect();
        CreateTopicsResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for DeleteTopicsRequest {
    type Response = DeleteTopicsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use delete_topics_response::DeletableTopicResult;
        // Up to v5 topics are named in `topic_names`, from v6 in `topics` (by name or id).
        let by_name = self.topic_names.iter().map(|n| {
            DeletableTopicResult::default()
                .with_name(Some(n.clone()))
                .with_error_code(error_code)
        });
        let by_state = self.topics.iter().map(|t| {
            DeletableTopicResult::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_error_code(error_code)
        });
        DeleteTopicsResponse::default().with_responses(by_name.chain(by_state).collect())
    }
}

impl ErrorResponse for DescribeConfigsRequest {
    type Response = DescribeConfigsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use describe_configs_response::DescribeConfigsResult;
        let results = self
            .resources
            .iter()
            .map(|res| {
                DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(error_code)
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }
}

impl ErrorResponse for CreatePartitionsRequest {
    type Response = CreatePartitionsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use create_partitions_response::CreatePartitionsTopicResult;
        let results = self
            .topics
            .iter()
            .map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error_code)
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}

impl ErrorResponse for InitProducerIdRequest {
    type Response = InitProducerIdResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        InitProducerIdResponse::default()
            .with_error_code(error_code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    }
}

impl ErrorResponse for FindCoordinatorRequest {
    type Response = FindCoordinatorResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use find_coordinator_response::Coordinator;
        // v4+ answer per key in `coordinators` and reject the v0-3 top-level fields.
        if version >= 4 {
            let coordinators = self
                .coordinator_keys
                .iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(error_code)
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else {
            FindCoordinatorResponse::default()
                .with_error_code(error_code)
                .with_node_id(BrokerId(-1))
                .with_port(-1)
        }
    }
}

impl ErrorResponse for JoinGroupRequest {
    type Response = JoinGroupResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        // The protocol name is nullable only from v7; Kafka sends "" before.
        JoinGroupResponse::default()
            .with_error_code(error_code)
            .with_generation_id(-1)
            .with_protocol_name((version < 7).then(StrBytes::default))
            .with_member_id(self.member_id.clone())
    }
}

impl ErrorResponse for SyncGroupRequest {
    type Response = SyncGroupResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        SyncGroupResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for HeartbeatRequest {
    type Response = HeartbeatResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        HeartbeatResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for LeaveGroupRequest {
    type Response = LeaveGroupResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use leave_group_response::MemberResponse;
        let body = LeaveGroupResponse::default().with_error_code(error_code);
        // Members (batch leave, KIP-345) exist from v3.
        if version < 3 {
            return body;
        }
        body.with_members(
            self.members
                .iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.group_instance_id.clone())
                        .with_error_code(error_code)
                })
                .collect(),
        )
    }
}

impl ErrorResponse for OffsetCommitRequest {
    type Response = OffsetCommitResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }
}

/// `(topic, partitions)` runs of an OffsetFetch request, consecutive entries of one topic merged
/// (as the broker's answer groups them).
fn merged_topics<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>,
) -> Vec<(&'a TopicName, Vec<i32>)> {
    let mut out: Vec<(&TopicName, Vec<i32>)> = Vec::new();
    for (name, partitions) in topics {
        match out.last_mut() {
            Some((last, merged)) if **last == *name => merged.extend_from_slice(partitions),
            _ if partitions.is_empty() => {}
            _ => out.push((name, partitions.to_vec())),
        }
    }
    out
}

/// The per-topic answers of OffsetFetch in the types of either form (`topics` up to v7,
/// `groups[].topics` from v8), which differ only in their names.
macro_rules! offset_fetch_topics {
    ($topic:ty, $partition:ty, $topics:expr, $error:expr) => {
        merged_topics($topics)
            .into_iter()
            .map(|(name, partitions)| {
                <$topic>::default().with_name(name.clone()).with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            <$partition>::default()
                                .with_partition_index(p)
                                .with_committed_offset(-1)
                                .with_committed_leader_epoch(-1)
                                .with_metadata(Some(StrBytes::default()))
                                .with_error_code($error)
                        })
                        .collect(),
                )
            })
            .collect()
    };
}

impl ErrorResponse for OffsetFetchRequest {
    type Response = OffsetFetchResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use offset_fetch_response::*;
        // From v8 a request names several groups, each answered on its own.
        if version >= 8 {
            let groups = self
                .groups
                .iter()
                .map(|g| {
                    let topics = g.topics.iter().flatten();
                    let topics = topics.map(|t| (&t.name, &t.partition_indexes[..]));
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(error_code)
                        .with_topics(offset_fetch_topics!(
                            OffsetFetchResponseTopics,
                            OffsetFetchResponsePartitions,
                            topics,
                            error_code
                        ))
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let topics = self.topics.iter().flatten();
        let topics = topics.map(|t| (&t.name, &t.partition_indexes[..]));
        let response = OffsetFetchResponse::default().with_topics(offset_fetch_topics!(
            OffsetFetchResponseTopic,
            OffsetFetchResponsePartition,
            topics,
            error_code
        ));
        // v1 has no top-level error: the partitions carry it.
        if version >= 2 {
            response.with_error_code(error_code)
        } else {
            response
        }
    }
}

impl ErrorResponse for ListGroupsRequest {
    type Response = ListGroupsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        ListGroupsResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for DescribeGroupsRequest {
    type Response = DescribeGroupsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use describe_groups_response::DescribedGroup;
        let groups = self
            .groups
            .iter()
            .map(|g| {
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(error_code)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }
}

impl ErrorResponse for DeleteGroupsRequest {
    type Response = DeleteGroupsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use delete_groups_response::DeletableGroupResult;
        let results = self
            .groups_names
            .iter()
            .map(|g| {
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(error_code)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }
}

impl ErrorResponse for OffsetDeleteRequest {
    type Response = OffsetDeleteResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetDeleteResponse::default()
            .with_topics(topics)
            .with_error_code(error_code)
    }
}

impl ErrorResponse for DeleteRecordsRequest {
    type Response = DeleteRecordsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                DeleteRecordsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p.partition_index)
                                    .with_low_watermark(-1)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for AlterConfigsRequest {
    type Response = AlterConfigsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use alter_configs_response::AlterConfigsResourceResponse;
        let responses = self
            .resources
            .iter()
            .map(|res| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(error_code)
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    }
}

impl ErrorResponse for IncrementalAlterConfigsRequest {
    type Response = IncrementalAlterConfigsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use incremental_alter_configs_response::AlterConfigsResourceResponse;
        let responses = self
            .resources
            .iter()
            .map(|res| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone())
                    .with_error_code(error_code)
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}

impl ErrorResponse for AddPartitionsToTxnRequest {
    type Response = AddPartitionsToTxnResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use add_partitions_to_txn_response::{
            AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
        };
        // v4+ carry a top-level error instead of per-topic results.
        if version >= 4 {
            return AddPartitionsToTxnResponse::default().with_error_code(error_code);
        }
        let results = self
            .v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_partition_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
    }
}

impl ErrorResponse for AddOffsetsToTxnRequest {
    type Response = AddOffsetsToTxnResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        AddOffsetsToTxnResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for WriteTxnMarkersRequest {
    type Response = WriteTxnMarkersResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use write_txn_markers_response::{
            WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
        };
        let markers = self
            .markers
            .iter()
            .map(|m| {
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(
                        m.topics
                            .iter()
                            .map(|t| {
                                WritableTxnMarkerTopicResult::default()
                                    .with_name(t.name.clone())
                                    .with_partitions(
                                        t.partition_indexes
                                            .iter()
                                            .map(|&p| {
                                                WritableTxnMarkerPartitionResult::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(error_code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        WriteTxnMarkersResponse::default().with_markers(markers)
    }
}

impl ErrorResponse for EndTxnRequest {
    type Response = EndTxnResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        EndTxnResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for TxnOffsetCommitRequest {
    type Response = TxnOffsetCommitResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use txn_offset_commit_response::{
            TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
        };
        let topics = self
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for DescribeTransactionsRequest {
    type Response = DescribeTransactionsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use describe_transactions_response::TransactionState;
        let states = self
            .transactional_ids
            .iter()
            .map(|id| {
                TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_error_code(error_code)
            })
            .collect();
        DescribeTransactionsResponse::default().with_transaction_states(states)
    }
}

impl ErrorResponse for ListTransactionsRequest {
    type Response = ListTransactionsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        ListTransactionsResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for DescribeClusterRequest {
    type Response = DescribeClusterResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        DescribeClusterResponse::default()
            .with_error_code(error_code)
            .with_controller_id(BrokerId(-1))
    }
}

impl ErrorResponse for DescribeProducersRequest {
    type Response = DescribeProducersResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use describe_producers_response::{PartitionResponse, TopicResponse};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                TopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|&p| {
                                PartitionResponse::default()
                                    .with_partition_index(p)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeProducersResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for DescribeTopicPartitionsRequest {
    type Response = DescribeTopicPartitionsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(t.name.clone()))
                    .with_error_code(error_code)
            })
            .collect();
        DescribeTopicPartitionsResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for ListConfigResourcesRequest {
    type Response = ListConfigResourcesResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        ListConfigResourcesResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for DescribeLogDirsRequest {
    type Response = DescribeLogDirsResponse;
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        // Before v3 the response has no error code of its own, and results are per log
        // directory, which the request does not name: an empty answer is all there is.
        if version >= 3 {
            DescribeLogDirsResponse::default().with_error_code(error_code)
        } else {
            DescribeLogDirsResponse::default()
        }
    }
}

impl ErrorResponse for AlterReplicaLogDirsRequest {
    type Response = AlterReplicaLogDirsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use alter_replica_log_dirs_response::{
            AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
        };
        let results = self
            .dirs
            .iter()
            .flat_map(|dir| &dir.topics)
            .map(|t| {
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                AlterReplicaLogDirPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        AlterReplicaLogDirsResponse::default().with_results(results)
    }
}

impl ErrorResponse for OffsetForLeaderEpochRequest {
    type Response = OffsetForLeaderEpochResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
        let topics = self
            .topics
            .iter()
            .map(|t| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                EpochEndOffset::default()
                                    .with_partition(p.partition)
                                    .with_error_code(error_code)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}

impl ErrorResponse for AlterPartitionReassignmentsRequest {
    type Response = AlterPartitionReassignmentsResponse;
    /// The error at the top and on every named partition.
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        };
        let responses = self
            .topics
            .iter()
            .map(|t| {
                ReassignableTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                ReassignablePartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        AlterPartitionReassignmentsResponse::default()
            .with_error_code(error_code)
            .with_allow_replication_factor_change(self.allow_replication_factor_change)
            .with_responses(responses)
    }
}

impl ErrorResponse for ListPartitionReassignmentsRequest {
    type Response = ListPartitionReassignmentsResponse;
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        ListPartitionReassignmentsResponse::default().with_error_code(error_code)
    }
}

impl ErrorResponse for ElectLeadersRequest {
    type Response = ElectLeadersResponse;
    /// Every named partition with the error (v1+: at the top level too); none named (all
    /// partitions) leaves only the top-level error.
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        let results = self
            .topic_partitions
            .iter()
            .flatten()
            .map(|t| {
                elect_leaders_response::ReplicaElectionResult::default()
                    .with_topic(t.topic.clone())
                    .with_partition_result(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                elect_leaders_response::PartitionResult::default()
                                    .with_partition_id(p)
                                    .with_error_code(error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = ElectLeadersResponse::default().with_replica_election_results(results);
        if version >= 1 {
            response.with_error_code(error_code)
        } else {
            response
        }
    }
}

impl ErrorResponse for DescribeQuorumRequest {
    type Response = DescribeQuorumResponse;
    /// Kafka answers a failed DescribeQuorum with the error at the top level only.
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        DescribeQuorumResponse::default().with_error_code(error_code)
    }
}
