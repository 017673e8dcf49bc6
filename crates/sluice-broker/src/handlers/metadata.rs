//! Metadata, from the cluster metadata image: every unfenced broker, and each partition's
//! leader, leader epoch, replicas and ISR as the controller decided them.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use sluice_partition::{validate_topic_name, NO_LEADER};
use uuid::Uuid;

use super::describe::{CLUSTER_OPERATIONS, OPERATIONS_NOT_ASKED, TOPIC_OPERATIONS};
use super::str_bytes;
use crate::{is_internal_topic, BrokerState};

/// The brokers clients may use: every unfenced broker's first listener, and always this
/// one (a client must find the broker it asked).
pub(crate) fn live_brokers(state: &BrokerState) -> Vec<MetadataResponseBroker> {
    let me = state.config.node_id;
    let (host, port) = &state.advertised;
    let mut brokers: Vec<MetadataResponseBroker> = state.cluster.view.read(|image| {
        image
            .brokers()
            .filter(|b| !b.fenced && b.broker_id != me)
            .filter_map(|b| {
                let e = b.endpoints.first()?;
                Some(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.broker_id))
                        .with_host(str_bytes(&e.host))
                        .with_port(i32::from(e.port))
                        .with_rack(b.rack.as_deref().map(str_bytes)),
                )
            })
            .collect()
    });
    brokers.push(
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(me))
            .with_host(str_bytes(host))
            .with_port(i32::from(*port)),
    );
    brokers.sort_by_key(|b| b.node_id.0);
    brokers
}

pub(crate) fn handle(state: &BrokerState, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(state.config.node_id);
    // v0 used an empty list for "all topics"; later versions use null.
    let all = match &req.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    let auto_create = state.config.auto_create_topics_enable && req.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all {
        let ids: Vec<Uuid> = state
            .cluster
            .view
            .read(|image| image.topics().map(|t| t.topic_id).collect());
        for id in ids {
            if let Some(t) = describe_id(state, id) {
                topics.push(t);
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
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
        .with_brokers(live_brokers(state))
        .with_cluster_id(Some(str_bytes(
            &state.cluster.cluster_id(state.replicas.cluster_id()),
        )))
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
    let id = state
        .cluster
        .view
        .read(|image| image.topic_by_name(name).map(|t| t.topic_id));
    if let Some(t) = id.and_then(|id| describe_id(state, id)) {
        return t;
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
    describe_id(state, id).unwrap_or_else(|| {
        MetadataResponseTopic::default()
            .with_name(None)
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code())
    })
}

/// A topic of the image: each partition's leader (LEADER_NOT_AVAILABLE where none leads it),
/// leader epoch, replicas and ISR.
fn describe_id(state: &BrokerState, id: Uuid) -> Option<MetadataResponseTopic> {
    let me = state.config.node_id;
    let offline = state.replicas.is_offline();
    state.cluster.view.read(|image| {
        let topic = image.topic(id)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|(&index, p)| {
                let error = if p.leader == NO_LEADER {
                    ResponseError::LeaderNotAvailable.code()
                } else if offline && p.leader == me {
                    ResponseError::KafkaStorageError.code()
                } else {
                    0
                };
                let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
                MetadataResponsePartition::default()
                    .with_error_code(error)
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(ids(&p.replicas))
                    .with_isr_nodes(ids(&p.isr))
            })
            .collect();
        Some(
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(&topic.name))))
                .with_topic_id(topic.topic_id)
                .with_is_internal(is_internal_topic(&topic.name))
                .with_partitions(partitions),
        )
    })
}
