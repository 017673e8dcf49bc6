//! The descriptive APIs admin clients and tools call: DescribeCluster, DescribeTopicPartitions
//! (the Java admin client's describeTopics since 3.8), DescribeLogDirs and AlterReplicaLogDirs
//! (one log directory, with its real sizes), DescribeProducers, ListConfigResources and
//! OffsetForLeaderEpoch (one leader epoch, 0, on a single node).

use std::collections::BTreeSet;

use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::list_config_resources_response::ConfigResource;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::{is_internal_topic, BrokerState};

/// Kafka's ACL operation codes, as bits of an authorized-operations field.
const READ: i32 = 1 << 3;
const WRITE: i32 = 1 << 4;
const CREATE: i32 = 1 << 5;
const DELETE: i32 = 1 << 6;
const ALTER: i32 = 1 << 7;
const DESCRIBE: i32 = 1 << 8;
const CLUSTER_ACTION: i32 = 1 << 9;
const DESCRIBE_CONFIGS: i32 = 1 << 10;
const ALTER_CONFIGS: i32 = 1 << 11;
const IDEMPOTENT_WRITE: i32 = 1 << 12;

/// What a client may do to a topic. Without an authorizer Kafka answers every operation the
/// resource type supports, and so does Sluice, which has none yet.
pub(crate) const TOPIC_OPERATIONS: i32 =
    READ | WRITE | CREATE | DELETE | ALTER | DESCRIBE | DESCRIBE_CONFIGS | ALTER_CONFIGS;
/// The same for the cluster.
pub(crate) const CLUSTER_OPERATIONS: i32 = CREATE
    | CLUSTER_ACTION
    | DESCRIBE_CONFIGS
    | ALTER_CONFIGS
    | IDEMPOTENT_WRITE
    | ALTER
    | DESCRIBE;
/// The same for a consumer group.
pub(crate) const GROUP_OPERATIONS: i32 =
    READ | DELETE | DESCRIBE | DESCRIBE_CONFIGS | ALTER_CONFIGS;
/// What a response carries when the client did not ask (Kafka's `Int.MinValue`).
pub(crate) const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// `endpoint_type` 1: brokers; 2 is controllers, which a broker listener does not serve.
const ENDPOINT_BROKERS: i8 = 1;
/// Kafka's MISMATCHED_ENDPOINT_TYPE.
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
/// Kafka's LOG_DIR_NOT_FOUND.
const LOG_DIR_NOT_FOUND: i16 = 57;
/// The partitions DescribeTopicPartitions returns at most, whatever the client asks.
const PARTITION_LIMIT_MAX: i32 = 10_000;

/// DescribeQuorum, as a Kafka broker answers it: forwarded to the leader of the metadata
/// quorum, which describes its replication. Only `__cluster_metadata` partition 0 exists;
/// offsets are the metadata log's entry indexes.
pub(crate) async fn describe_quorum(
    state: std::sync::Arc<BrokerState>,
    req: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let asks_metadata_log = req.topics.len() == 1
        && req.topics[0].topic_name.as_str() == "__cluster_metadata"
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    let answer = |partition: PartitionData| {
        let topic_name = req
            .topics
            .first()
            .map(|t| t.topic_name.clone())
            .unwrap_or_default();
        DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
            .with_topic_name(topic_name)
            .with_partitions(vec![partition])])
    };
    if !asks_metadata_log {
        return answer(
            PartitionData::default()
                .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1)
                .with_high_watermark(-1),
        );
    }
    let quorum = match state.cluster.describe_quorum().await {
        Ok(quorum) => quorum,
        Err(e) => {
            return answer(
                PartitionData::default()
                    .with_error_code(ResponseError::NotLeaderOrFollower.code())
                    .with_error_message(Some(str_bytes(&e)))
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1)
                    .with_high_watermark(-1),
            )
        }
    };
    let states = |replicas: &[crate::cluster::rpc::ReplicaDescription]| {
        replicas
            .iter()
            .map(|v| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(v.replica_id))
                    .with_log_end_offset(v.log_end_offset)
                    .with_last_fetch_timestamp(v.last_caught_up_timestamp)
                    .with_last_caught_up_timestamp(v.last_caught_up_timestamp)
            })
            .collect()
    };
    let mut response = answer(
        PartitionData::default()
            .with_leader_id(BrokerId(quorum.leader_id))
            .with_leader_epoch(quorum.leader_epoch)
            .with_high_watermark(quorum.high_watermark)
            .with_current_voters(states(&quorum.voters))
            .with_observers(states(&quorum.observers)),
    );
    if version >= 2 {
        let name = state.config.controller_listener_names[0].as_str();
        response.nodes = quorum
            .nodes
            .iter()
            .map(|(id, host, port)| {
                Node::default()
                    .with_node_id(BrokerId(*id))
                    .with_listeners(vec![Listener::default()
                        .with_name(str_bytes(name))
                        .with_host(str_bytes(host))
                        .with_port(*port)])
            })
            .collect();
    }
    response
}

pub(crate) fn describe_cluster(
    state: &BrokerState,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node = BrokerId(state.config.node_id);
    if req.endpoint_type != ENDPOINT_BROKERS {
        // As Kafka answers: only the error, every other field at its default.
        return DescribeClusterResponse::default()
            .with_controller_id(BrokerId(-1))
            .with_cluster_authorized_operations(OPERATIONS_NOT_ASKED)
            .with_error_code(MISMATCHED_ENDPOINT_TYPE)
            .with_error_message(Some(str_bytes(
                "this listener serves brokers; there are no separate controllers",
            )));
    }
    let mut response = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(
            &state.cluster.cluster_id(state.replicas.cluster_id()),
        ))
        .with_controller_id(node)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_ASKED
        });
    // The brokers Metadata names: every unfenced one, from the cluster metadata.
    response.brokers = super::metadata::live_brokers(state)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    response
}

pub(crate) fn describe_topic_partitions(
    state: &BrokerState,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = BrokerId(state.config.node_id);
    let mut names: BTreeSet<String> = req
        .topics
        .iter()
        .map(|t| t.name.as_str().to_string())
        .collect();
    let all = names.is_empty();
    if all {
        names = state
            .replicas
            .topics()
            .iter()
            .map(|t| t.name.clone())
            .collect();
    }
    let (from_topic, from_partition) = match &req.cursor {
        Some(c) => (c.topic_name.as_str().to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    let mut budget = req.response_partition_limit.clamp(1, PARTITION_LIMIT_MAX) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.range(from_topic.clone()..) {
        let first = if *name == from_topic {
            from_partition as usize
        } else {
            0
        };
        let Some(topic) = state.replicas.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_topic_authorized_operations(TOPIC_OPERATIONS),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partition_index(first as i32),
            );
            break;
        }
        let error = if state.replicas.is_offline() {
            ResponseError::KafkaStorageError.code()
        } else {
            0
        };
        let count = topic.partitions.len();
        let last = count.min(first + budget);
        // Leaders, replicas and ISRs as the cluster metadata has them.
        let registrations = state.cluster.view.read(|image| {
            image
                .topic(topic.id)
                .map(|t| t.partitions.clone())
                .unwrap_or_default()
        });
        let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
        let partitions = topic.partitions[first..last]
            .iter()
            .map(|p| {
                let (leader, epoch, replicas, isr, elr) = match registrations.get(&p.index()) {
                    Some(r) => (
                        BrokerId(r.leader),
                        r.leader_epoch,
                        ids(&r.replicas),
                        ids(&r.isr),
                        ids(&r.elr),
                    ),
                    None => (
                        BrokerId(-1),
                        p.leader_epoch(),
                        vec![node],
                        vec![node],
                        vec![],
                    ),
                };
                let error = if leader.0 < 0 {
                    ResponseError::LeaderNotAvailable.code()
                } else {
                    error
                };
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(error)
                    .with_partition_index(p.index())
                    .with_leader_id(leader)
                    .with_leader_epoch(epoch)
                    .with_replica_nodes(replicas)
                    .with_isr_nodes(isr)
                    .with_eligible_leader_replicas(Some(elr))
                    .with_last_known_elr(Some(Vec::new()))
            })
            .collect();
        budget -= last - first;
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_topic_id(topic.id)
                .with_is_internal(is_internal_topic(name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if last < count {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partition_index(last as i32),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// (total, usable) bytes of the file system holding `dir`, as `statvfs` reports them.
fn file_system_bytes(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: statvfs writes only the struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return (-1, -1);
    }
    let block = stat.f_frsize as i64;
    (
        (stat.f_blocks as i64).saturating_mul(block),
        (stat.f_bavail as i64).saturating_mul(block),
    )
}

/// The data directory as DescribeLogDirs names it: absolute, as Kafka prints `log.dirs`.
fn log_dir(state: &BrokerState) -> String {
    let dir = state.replicas.data_dir();
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

pub(crate) fn describe_log_dirs(
    state: &BrokerState,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<Vec<(String, Option<Vec<i32>>)>> = req.topics.map(|topics| {
        topics
            .iter()
            .map(|t| (t.topic.as_str().to_string(), Some(t.partitions.clone())))
            .collect()
    });
    let wanted = wanted.unwrap_or_else(|| {
        state
            .replicas
            .topics()
            .iter()
            .map(|t| (t.name.clone(), None))
            .collect()
    });
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let Some(topic) = state.replicas.topic(&name) else {
            continue; // Kafka leaves out what the directory does not hold
        };
        let indexes: Vec<i32> =
            partitions.unwrap_or_else(|| (0..topic.partitions.len() as i32).collect());
        let partitions: Vec<DescribeLogDirsPartition> = indexes
            .iter()
            .filter_map(|&p| {
                let log = topic.partitions.get(usize::try_from(p).ok()?)?;
                // Only the replicas this broker holds, as Kafka lists them: the log of a
                // partition placed elsewhere is an empty stand-in.
                if !log.is_hosted() {
                    return None;
                }
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(log.size_bytes() as i64),
                )
            })
            .collect();
        topics.push(
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(&name)))
                .with_partitions(partitions),
        );
    }
    let (total, usable) = file_system_bytes(state.replicas.data_dir());
    let error = if state.replicas.is_offline() {
        ResponseError::KafkaStorageError.code()
    } else {
        0
    };
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_error_code(error)
        .with_log_dir(str_bytes(&log_dir(state)))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}

pub(crate) fn alter_replica_log_dirs(
    state: &BrokerState,
    req: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let ours = log_dir(state);
    let mut results = Vec::new();
    for dir in &req.dirs {
        let same = std::fs::canonicalize(dir.path.as_str())
            .map(|p| p.display().to_string() == ours)
            .unwrap_or(false);
        for topic in &dir.topics {
            let known = state.replicas.topic(topic.name.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|&p| {
                    let exists = known
                        .as_ref()
                        .is_some_and(|t| usize::try_from(p).is_ok_and(|i| i < t.partitions.len()));
                    // One directory: every partition already lives in it.
                    let code = match (same, exists) {
                        (false, _) => LOG_DIR_NOT_FOUND,
                        (true, false) => ResponseError::UnknownTopicOrPartition.code(),
                        (true, true) => 0,
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}

pub(crate) fn describe_producers(
    state: &BrokerState,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = state.replicas.topic(t.name.as_str());
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let out = PartitionResponse::default().with_partition_index(p);
                    let log = topic.as_ref().and_then(|t| t.partition(p));
                    let Some(log) = log else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let producers = log
                        .active_producers()
                        .into_iter()
                        .map(|a| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_producer_epoch(i32::from(a.epoch))
                                .with_last_sequence(a.last_sequence)
                                .with_last_timestamp(a.last_append_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(a.txn_start_offset.unwrap_or(-1))
                        })
                        .collect();
                    out.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// Config resource types (DescribeConfigs' `resource_type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_CLIENT_METRICS: i8 = 16;

pub(crate) fn list_config_resources(
    state: &BrokerState,
    req: ListConfigResourcesRequest,
    version: i16,
) -> ListConfigResourcesResponse {
    // v0 was ListClientMetricsResources: client metrics only, of which Sluice has none.
    let types: Vec<i8> = if version == 0 {
        vec![RESOURCE_CLIENT_METRICS]
    } else if req.resource_types.is_empty() {
        vec![RESOURCE_TOPIC, RESOURCE_BROKER]
    } else {
        req.resource_types.clone()
    };
    let mut resources = Vec::new();
    if types.contains(&RESOURCE_TOPIC) {
        for topic in state.replicas.topics() {
            resources.push(
                ConfigResource::default()
                    .with_resource_name(str_bytes(&topic.name))
                    .with_resource_type(RESOURCE_TOPIC),
            );
        }
    }
    if types.contains(&RESOURCE_BROKER) {
        resources.push(
            ConfigResource::default()
                .with_resource_name(str_bytes(&state.config.node_id.to_string()))
                .with_resource_type(RESOURCE_BROKER),
        );
    }
    ListConfigResourcesResponse::default().with_config_resources(resources)
}

pub(crate) fn offset_for_leader_epoch(
    state: &BrokerState,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = state.replicas.topic(t.topic.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let log = topic.as_ref().and_then(|t| t.partition(p.partition));
                    let Some(log) = log else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let epoch = log.leader_epoch();
                    // The client's view of the leader epoch is checked as Kafka checks it.
                    if p.current_leader_epoch > epoch {
                        return out.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                        return out.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    }
                    // From the log's leader epoch cache, as Kafka answers: an epoch past ours
                    // has no end yet (UNDEFINED), and one older than every epoch here ends
                    // where the first one starts.
                    if p.leader_epoch > epoch {
                        return out;
                    }
                    match log.end_offset_for_epoch(p.leader_epoch) {
                        Some((e, end)) => out.with_leader_epoch(e).with_end_offset(end),
                        None => out,
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
