//! Metadata: this node as the only broker, controller and leader of every partition.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use sluice_partition::{validate_topic_name, Topic};
use uuid::Uuid;

use super::describe::{CLUSTER_OPERATIONS, OPERATIONS_NOT_ASKED, TOPIC_OPERATIONS};
use super::str_bytes;
use crate::{is_internal_topic, BrokerState};

pub(crate) fn handle(state: &BrokerState, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(state.config.node_id);
    let (host, port) = &state.advertised;
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(host))
        .with_port(i32::from(*port));
    // v0 used an empty list for "all topics"; later versions use null.
    let all = match &req.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    let auto_create = state.config.auto_create_topics_enable && req.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all {
        for topic in state.replicas.topics() {
            topics.push(describe(state, &topic));
        }
    } else {
        let mut asked_to_create = 0;
        for requested in req.topics.unwrap_or_default() {
            topics.push(match requested.name {
                Some(name) => by_name(state, name.as_str(), auto_create, &mut asked_to_create),
                None => by_id(state, requested.topic_id),
            });
        }
    }
    // Without an authorizer, every operation a resource type supports, as Kafka answers.
    let topic_ops = if req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_ASKED
    };
    for t in &mut topics {
        t.topic_authorized_operations = topic_ops;
    }
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes(state.replicas.cluster_id())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_ASKED
        })
}

/// A topic by name. An unknown topic that may be auto-created is queued for creation and
/// answered with UNKNOWN_TOPIC_OR_PARTITION, as Kafka 4 answers it: the request never waits
/// for the creation, and the client asks again.
fn by_name(
    state: &BrokerState,
    name: &str,
    auto_create: bool,
    asked_to_create: &mut usize,
) -> MetadataResponseTopic {
    let unknown = |code: i16| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(code)
    };
    if let Some(topic) = state.replicas.topic(name) {
        return describe(state, &topic);
    }
    if validate_topic_name(name).is_err() {
        return unknown(ResponseError::InvalidTopicException.code());
    }
    // The internal topics are created by their coordinators, with their own partition counts.
    if !auto_create || is_internal_topic(name) {
        return unknown(ResponseError::UnknownTopicOrPartition.code());
    }
    state.auto_create.request(name, *asked_to_create);
    *asked_to_create += 1;
    // Queued (or refused, over the per-request limit), the topic does not exist yet.
    unknown(ResponseError::UnknownTopicOrPartition.code())
}

fn by_id(state: &BrokerState, id: Uuid) -> MetadataResponseTopic {
    match state.replicas.topic_by_id(id) {
        Some(topic) => describe(state, &topic),
        None => MetadataResponseTopic::default()
            .with_name(None)
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

fn describe(state: &BrokerState, topic: &Arc<Topic>) -> MetadataResponseTopic {
    let node = BrokerId(state.config.node_id);
    let partition_error = if state.replicas.is_offline() {
        ResponseError::KafkaStorageError.code()
    } else {
        0
    };
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(partition_error)
                .with_partition_index(p.index())
                .with_leader_id(node)
                .with_leader_epoch(p.leader_epoch())
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&topic.name))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
}
