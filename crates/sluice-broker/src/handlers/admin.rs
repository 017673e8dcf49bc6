//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::ResponseError;
use sluice_partition::{LogConfig, StorageError, Topic, TOPIC_CONFIG_NAMES};
use sluice_protocol::ErrorResponse;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::str_bytes;
use crate::cluster::rpc::{ControllerRequest, NewPartitions, TopicOutcome, WireNewTopic};
use crate::config::{
    topic_config_for_broker_key, ConfigType, BROKER_CONFIGS, DYNAMIC_BROKER_CONFIGS,
};
use crate::errors::error_code;
use crate::{is_internal_topic, BrokerState};

/// DescribeConfigs resource types.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs / CreateTopics config sources.
pub(crate) const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

fn failure(code: i16, message: String) -> (i16, Option<String>) {
    (code, Some(message))
}

fn storage_failure(e: &StorageError) -> (i16, Option<String>) {
    failure(error_code(e), e.to_string())
}

const INTERNAL: &str = "the topic is internal to the broker's coordinators";

/// The most one topic request waits for the controller and for this broker to apply the
/// change, whatever timeout the client gave.
const TOPIC_REQUEST_MAX: Duration = Duration::from_secs(60);
/// The least it waits: a client's timeout of 0 still gets the controller asked.
const TOPIC_REQUEST_MIN: Duration = Duration::from_secs(1);

fn topic_request_bound(timeout_ms: i32) -> Duration {
    Duration::from_millis(timeout_ms.max(0) as u64).clamp(TOPIC_REQUEST_MIN, TOPIC_REQUEST_MAX)
}

/// Sends a topic request to the controller: one outcome per item, each `REQUEST_TIMED_OUT`
/// when no controller answered.
async fn ask_controller(
    state: &BrokerState,
    request: ControllerRequest,
    items: usize,
    bound: Duration,
) -> Vec<TopicOutcome> {
    match state.cluster.topic_request(request, bound).await {
        Ok(outcomes) if outcomes.len() == items => outcomes,
        Ok(outcomes) => {
            let message = format!("the controller answered {} of {items}", outcomes.len());
            vec![Some((ResponseError::UnknownServerError.code(), message)); items]
        }
        Err(e) => vec![Some((ResponseError::RequestTimedOut.code(), e)); items],
    }
}

/// CreateTopics: each topic checked here (name, partitions, configs), then created by the
/// active controller in the cluster metadata; answered once this broker has its logs.
pub(crate) async fn create_topics(
    state: Arc<BrokerState>,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str().to_string()))
        .map(|t| t.name.as_str().to_string())
        .collect();
    // A name given twice is answered once, with INVALID_REQUEST, as Kafka answers it.
    let mut answered = HashSet::new();
    let mut results = Vec::new();
    // Checked topics to send to the controller: (index in `results`, topic, its validation).
    let mut send: Vec<(usize, WireNewTopic, Arc<Topic>)> = Vec::new();
    for t in req
        .topics
        .iter()
        .filter(|t| answered.insert(t.name.as_str().to_string()))
    {
        let name = t.name.as_str();
        // Kafka's answer carries no message unless there is an error.
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_message(None);
        if duplicates.contains(name) {
            let msg = format!("topic {name} appears more than once in the request");
            results.push(with_error(
                result,
                failure(ResponseError::InvalidRequest.code(), msg),
            ));
            continue;
        }
        if is_internal_topic(name) {
            let msg = format!("{name} is internal; its coordinator creates it");
            results.push(with_error(
                result,
                failure(ResponseError::InvalidRequest.code(), msg),
            ));
            continue;
        }
        match check_one(&state, t, req.validate_only) {
            Ok(topic) if req.validate_only => {
                tracing::info!(topic = name, validate_only = true, "validated topic");
                results.push(
                    result
                        .with_topic_id(Uuid::nil())
                        .with_num_partitions(topic_partitions(t, &state, &topic))
                        .with_replication_factor(match t.replication_factor {
                            -1 => state.config.default_replication_factor,
                            n => n,
                        })
                        .with_configs(Some(topic_configs(&state, &topic.config, &topic.overrides))),
                );
            }
            Ok(topic) => {
                let wire = WireNewTopic {
                    name: name.to_string(),
                    topic_id: Uuid::new_v4(),
                    num_partitions: if t.assignments.is_empty() {
                        topic_partitions(t, &state, &topic)
                    } else {
                        -1
                    },
                    replication_factor: if t.assignments.is_empty() {
                        t.replication_factor
                    } else {
                        -1
                    },
                    assignments: assignments_of(t),
                    configs: topic
                        .overrides
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    leader_epoch: 0,
                };
                send.push((results.len(), wire, topic));
                results.push(result);
            }
            Err(e) => results.push(with_error(result, e)),
        }
    }
    if !send.is_empty() {
        let topics: Vec<WireNewTopic> = send.iter().map(|(_, w, _)| w.clone()).collect();
        let outcomes = ask_controller(
            &state,
            ControllerRequest::CreateTopics { topics },
            send.len(),
            topic_request_bound(req.timeout_ms),
        )
        .await;
        for ((i, wire, topic), outcome) in send.into_iter().zip(outcomes) {
            let result = std::mem::take(&mut results[i]);
            results[i] = match outcome {
                None => {
                    let (partitions, factor) = state.cluster.view.read(|image| {
                        image
                            .topic(wire.topic_id)
                            .map_or((wire.assignments.len() as i32, 1), |t| {
                                let factor = t.partitions.get(&0).map_or(1, |p| p.replicas.len());
                                (t.partitions.len() as i32, factor as i16)
                            })
                    });
                    tracing::info!(
                        topic = wire.name,
                        partitions,
                        replication_factor = factor,
                        "created topic"
                    );
                    result
                        .with_topic_id(wire.topic_id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(factor)
                        .with_configs(Some(topic_configs(&state, &topic.config, &topic.overrides)))
                }
                Some((code, message)) => with_error(result, failure(code, message)),
            };
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// The replica lists of a request's manual assignment, in partition order.
fn assignments_of(t: &CreatableTopic) -> Vec<Vec<i32>> {
    let mut assignments: Vec<_> = t.assignments.iter().collect();
    assignments.sort_by_key(|a| a.partition_index);
    assignments
        .into_iter()
        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
        .collect()
}

/// The partition count of the created (or validated) topic.
fn topic_partitions(req: &CreatableTopic, state: &BrokerState, topic: &Topic) -> i32 {
    if !topic.partitions.is_empty() {
        return topic.partitions.len() as i32;
    }
    requested_partitions(req, state).unwrap_or(-1)
}

fn requested_partitions(
    t: &CreatableTopic,
    state: &BrokerState,
) -> Result<i32, (i16, Option<String>)> {
    let invalid_assignment =
        |msg: &str| failure(ResponseError::InvalidReplicaAssignment.code(), msg.into());
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(failure(
                ResponseError::InvalidRequest.code(),
                "with a replica assignment, num_partitions and replication_factor must be -1"
                    .into(),
            ));
        }
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
            return Err(invalid_assignment(
                "partitions must be numbered 0..n without gaps",
            ));
        }
        return Ok(t.assignments.len() as i32);
    }
    // The controller places replicas among the brokers it knows; this checks only what no
    // cluster could satisfy.
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err(failure(
            ResponseError::InvalidReplicationFactor.code(),
            format!("replication factor {} is below 1", t.replication_factor),
        ));
    }
    Ok(if t.num_partitions == -1 {
        state.config.num_partitions
    } else {
        t.num_partitions
    })
}

/// Checks one topic as the data directory would create it (name, partition count,
/// configs), creating nothing: the controller creates it, then every broker its logs.
fn check_one(
    state: &BrokerState,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<Arc<Topic>, (i16, Option<String>)> {
    let partitions = requested_partitions(t, state)?;
    let mut overrides = BTreeMap::new();
    for c in &t.configs {
        let Some(value) = &c.value else {
            let msg = format!("config {} has a null value", c.name.as_str());
            return Err(failure(ResponseError::InvalidConfig.code(), msg));
        };
        overrides.insert(c.name.as_str().to_string(), value.as_str().to_string());
    }
    if !validate_only {
        room_for_partitions(state, partitions)?;
    }
    if state
        .cluster
        .view
        .read(|image| image.topic_by_name(t.name.as_str()).is_some())
    {
        return Err(storage_failure(&StorageError::TopicExists(
            t.name.as_str().to_string(),
        )));
    }
    tokio::task::block_in_place(|| {
        state
            .replicas
            .create_topic(t.name.as_str(), partitions, overrides, true)
    })
    .map_err(|e| storage_failure(&e))
}

/// Whether `partitions` new partition files fit within the open-file limit beside what is
/// open: otherwise INVALID_PARTITIONS, before anything is created.
fn room_for_partitions(state: &BrokerState, partitions: i32) -> Result<(), (i16, Option<String>)> {
    state
        .descriptors
        .room_for_files(partitions.max(0) as usize)
        .map_err(|room| {
            failure(
                ResponseError::InvalidPartitions.code(),
                format!("the broker cannot open {partitions} more partition files: {room}"),
            )
        })
}

fn with_error(
    result: CreatableTopicResult,
    (code, msg): (i16, Option<String>),
) -> CreatableTopicResult {
    result
        .with_error_code(code)
        .with_error_message(msg.map(|m| str_bytes(&m)))
}

/// Where a topic config value comes from, as DescribeConfigs reports it.
/// The broker config that sets the default of a topic config (`log.retention.ms` for
/// `retention.ms`), if any.
fn broker_key_for(config_name: &str) -> Option<&'static str> {
    BROKER_CONFIGS
        .iter()
        .map(|(k, _, _)| *k)
        .find(|k| topic_config_for_broker_key(k) == Some(config_name))
}

/// Where a topic config's value could come from, most specific first, as Kafka lists
/// synonyms: the topic's own override, then the broker's static setting of the default, then
/// the default itself.
fn topic_config_synonyms(
    name: &str,
    topic: &Topic,
    state: &BrokerState,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if let Some(v) = topic.overrides.get(name) {
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(v)))
                .with_source(SOURCE_TOPIC_CONFIG),
        );
    }
    if let Some(key) = broker_key_for(name) {
        if !state.config.is_default(key) {
            out.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(key))
                    .with_value(state.config.get(key).map(|v| str_bytes(&v)))
                    .with_source(SOURCE_STATIC_BROKER_CONFIG),
            );
        }
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(key))
                .with_value(
                    crate::BrokerConfig::default()
                        .get(key)
                        .map(|v| str_bytes(&v)),
                )
                .with_source(SOURCE_DEFAULT_CONFIG),
        );
    }
    out
}

/// Kafka's sources of dynamic broker configs: this broker's own, and every broker's.
const SOURCE_DYNAMIC_BROKER_CONFIG: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;

/// A dynamic broker config's values in the metadata image, most specific first: this
/// broker's own, then the one for every broker.
pub(crate) fn dynamic_broker_config(state: &BrokerState, key: &str) -> Vec<(String, i8)> {
    let me = state.config.node_id.to_string();
    state.cluster.view.read(|image| {
        [
            (me.as_str(), SOURCE_DYNAMIC_BROKER_CONFIG),
            ("", SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG),
        ]
        .into_iter()
        .filter_map(|(name, source)| {
            let v = image.configs(RESOURCE_BROKER, name)?.get(key)?;
            Some((v.clone(), source))
        })
        .collect()
    })
}

/// The synonyms of a dynamic broker config: its dynamic values, then the default.
fn dynamic_synonyms(
    state: &BrokerState,
    key: &str,
    set: Vec<(String, i8)>,
) -> Vec<DescribeConfigsSynonym> {
    set.into_iter()
        .chain(std::iter::once((
            state.config.get(key).unwrap_or_default(),
            SOURCE_DEFAULT_CONFIG,
        )))
        .map(|(value, source)| {
            DescribeConfigsSynonym::default()
                .with_name(str_bytes(key))
                .with_value(Some(str_bytes(&value)))
                .with_source(source)
        })
        .collect()
}

/// Where a broker config's value comes from, most specific first, as Kafka lists synonyms:
/// the static setting if there is one, then the default (for configs that have one).
fn broker_config_synonyms(
    key: &str,
    value: Option<String>,
    source: i8,
) -> Vec<DescribeConfigsSynonym> {
    let synonym = |value: Option<String>, source| {
        DescribeConfigsSynonym::default()
            .with_name(str_bytes(key))
            .with_value(value.map(|v| str_bytes(&v)))
            .with_source(source)
    };
    // Kafka has no default for these: a set value is their only synonym.
    let no_default = matches!(key, "node.id" | "log.dirs" | "advertised.listeners");
    let mut out = Vec::new();
    if source == SOURCE_STATIC_BROKER_CONFIG {
        out.push(synonym(value, SOURCE_STATIC_BROKER_CONFIG));
        if !no_default {
            out.push(synonym(
                crate::BrokerConfig::default().get(key),
                SOURCE_DEFAULT_CONFIG,
            ));
        }
    } else {
        out.push(synonym(value, SOURCE_DEFAULT_CONFIG));
    }
    out
}

/// One line about each topic config, for DescribeConfigs' documentation.
fn topic_config_doc(name: &str) -> &'static str {
    match name {
        "cleanup.policy" => "delete, compact, or both: how old log segments are discarded.",
        "compression.type" => {
            "The codec batches are stored in; producer keeps what the producer sent."
        }
        "delete.retention.ms" => "How long compaction keeps tombstones.",
        "index.interval.bytes" => "How often an offset index entry is added, in bytes of log.",
        "max.compaction.lag.ms" => {
            "The longest a record in a closed segment stays uncompacted; the active segment is not rolled for it."
        }
        "max.message.bytes" => "The largest record batch the topic accepts.",
        "message.timestamp.type" => "CreateTime or LogAppendTime.",
        "min.cleanable.dirty.ratio" => "How much of the log must be dirty before it is compacted.",
        "min.compaction.lag.ms" => "The shortest a record stays uncompacted.",
        "retention.bytes" => "The most bytes a partition keeps before old segments are deleted.",
        "retention.ms" => "How long segments are kept before they are deleted.",
        "segment.bytes" => "The size at which a segment is rolled.",
        "segment.index.bytes" => "The size of either index at which a segment is rolled.",
        "segment.ms" => "The age at which a segment is rolled.",
        "min.insync.replicas" => {
            "The fewest in-sync replicas an acks=all produce needs (NOT_ENOUGH_REPLICAS otherwise)."
        }
        "unclean.leader.election.enable" => {
            "Whether a replica outside the ISR may be elected leader, at the risk of losing records."
        }
        "leader.replication.throttled.replicas" => {
            "Replicas (partition:broker, or *) whose leader throttles their catching up to leader.replication.throttled.rate."
        }
        "follower.replication.throttled.replicas" => {
            "Replicas (partition:broker, or *) that throttle their own catching up to follower.replication.throttled.rate."
        }
        _ => "",
    }
}

fn topic_config_source(
    config_name: &str,
    overrides: &BTreeMap<String, String>,
    state: &BrokerState,
) -> i8 {
    if overrides.contains_key(config_name) {
        return SOURCE_TOPIC_CONFIG;
    }
    match broker_key_for(config_name) {
        Some(key) if !state.config.is_default(key) => SOURCE_STATIC_BROKER_CONFIG,
        _ => SOURCE_DEFAULT_CONFIG,
    }
}

fn topic_configs(
    state: &BrokerState,
    config: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIG_NAMES
        .iter()
        .map(|name| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(config.get(name).map(|v| str_bytes(&v)))
                .with_read_only(false)
                .with_config_source(topic_config_source(name, overrides, state))
        })
        .collect()
}

/// DeleteTopics: resolved against the cluster metadata, deleted by the active controller;
/// answered once this broker has removed the logs.
pub(crate) async fn delete_topics(
    state: Arc<BrokerState>,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics; v6 names or ids them.
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.as_str().to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id)),
    );
    let mut responses = Vec::new();
    let mut send: Vec<(usize, String)> = Vec::new();
    for (name, id) in targets {
        let resolved = state.cluster.view.read(|image| match (&name, id) {
            (Some(name), _) => image
                .topic_by_name(name)
                .map(|t| (t.name.clone(), t.topic_id))
                .ok_or(ResponseError::UnknownTopicOrPartition),
            (None, id) => image
                .topic(id)
                .map(|t| (t.name.clone(), t.topic_id))
                .ok_or(ResponseError::UnknownTopicId),
        });
        let result = DeletableTopicResult::default()
            .with_name(name.as_ref().map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id);
        let (topic_name, topic_id) = match resolved {
            Ok(found) => found,
            Err(e) => {
                responses.push(result.with_error_code(e.code()));
                continue;
            }
        };
        let result = result
            .with_name(Some(TopicName(str_bytes(&topic_name))))
            .with_topic_id(topic_id);
        if is_internal_topic(&topic_name) {
            responses.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(INTERNAL))),
            );
            continue;
        }
        if state.replicas.is_offline() {
            // Answered once this broker has removed the logs, which it cannot now.
            let e = StorageError::Offline;
            responses.push(
                result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            );
            continue;
        }
        send.push((responses.len(), topic_name));
        responses.push(result);
    }
    if !send.is_empty() {
        let names: Vec<String> = send.iter().map(|(_, n)| n.clone()).collect();
        let outcomes = ask_controller(
            &state,
            ControllerRequest::DeleteTopics { names },
            send.len(),
            topic_request_bound(req.timeout_ms),
        )
        .await;
        for ((i, name), outcome) in send.into_iter().zip(outcomes) {
            match outcome {
                None => tracing::info!(topic = name, "deleted topic"),
                Some((code, message)) => {
                    let result = std::mem::take(&mut responses[i]);
                    responses[i] = result
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message)));
                }
            }
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// CreatePartitions: checked here, added by the active controller; answered once this
/// broker has the new partitions' logs.
pub(crate) async fn create_partitions(
    state: Arc<BrokerState>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    let mut send: Vec<(usize, NewPartitions)> = Vec::new();
    for t in &req.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let refuse = |code: i16, message: &str| {
            result
                .clone()
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
        };
        if is_internal_topic(t.name.as_str()) {
            // Groups are placed by partition count; changing it would orphan them.
            results.push(refuse(ResponseError::InvalidRequest.code(), INTERNAL));
            continue;
        }
        let assignments: Vec<Vec<i32>> = t
            .assignments
            .iter()
            .flatten()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        let have = state.cluster.view.read(|image| {
            image
                .topic_by_name(t.name.as_str())
                .map(|topic| topic.partitions.len() as i32)
        });
        let Some(have) = have else {
            results.push(refuse(
                ResponseError::UnknownTopicOrPartition.code(),
                &format!("Topic '{}' does not exist.", t.name.as_str()),
            ));
            continue;
        };
        if !req.validate_only {
            if let Err((code, msg)) = room_for_partitions(&state, t.count - have) {
                results.push(refuse(code, msg.as_deref().unwrap_or_default()));
                continue;
            }
        }
        // The partition count's own checks, as the data directory makes them.
        let checked = tokio::task::block_in_place(|| {
            state
                .replicas
                .create_partitions(t.name.as_str(), t.count, true)
        });
        match checked {
            Ok(_) if req.validate_only => results.push(result),
            Ok(_) => {
                send.push((
                    results.len(),
                    (t.name.as_str().to_string(), t.count, assignments),
                ));
                results.push(result);
            }
            Err(e) => results.push(refuse(error_code(&e), &e.to_string())),
        }
    }
    if !send.is_empty() {
        let topics: Vec<_> = send.iter().map(|(_, t)| t.clone()).collect();
        let outcomes = ask_controller(
            &state,
            ControllerRequest::CreatePartitions { topics },
            send.len(),
            topic_request_bound(req.timeout_ms),
        )
        .await;
        for ((i, (name, count, _)), outcome) in send.into_iter().zip(outcomes) {
            match outcome {
                None => tracing::info!(topic = name, partitions = count, "added partitions"),
                Some((code, message)) => {
                    let result = std::mem::take(&mut results[i]);
                    results[i] = result
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message)));
                }
            }
        }
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// ElectLeaders (Kafka's preferred and unclean leader election, `kafka-leader-election.sh`):
/// each named partition (every partition when none is named) is elected by the active
/// controller; answered once this broker has applied the new leaders.
pub(crate) async fn elect_leaders(
    state: Arc<BrokerState>,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 knows only the preferred election.
    let unclean = version >= 1 && req.election_type == 1;
    if version >= 1 && !matches!(req.election_type, 0 | 1) {
        return req.error_response(version, ResponseError::InvalidRequest.code());
    }
    // (topic, partition) pairs, in the order named; all of them when none is named.
    let named: Vec<(String, i32)> = match &req.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |&p| (t.topic.as_str().to_string(), p))
            })
            .collect(),
        None => state.cluster.view.read(|image| {
            image
                .topics()
                .flat_map(|t| t.partitions.keys().map(move |&p| (t.name.clone(), p)))
                .collect()
        }),
    };
    let mut outcomes: Vec<TopicOutcome> = vec![None; named.len()];
    let mut send = Vec::new();
    for (i, (topic, partition)) in named.iter().enumerate() {
        let id = state
            .cluster
            .view
            .read(|image| image.topic_by_name(topic).map(|t| t.topic_id));
        match id {
            Some(topic_id) => send.push((i, (topic_id, *partition))),
            None => {
                outcomes[i] = Some((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("no topic {topic}"),
                ))
            }
        }
    }
    if !send.is_empty() {
        let partitions = send.iter().map(|(_, p)| *p).collect();
        let answers = ask_controller(
            &state,
            ControllerRequest::ElectLeaders {
                partitions,
                unclean,
            },
            send.len(),
            topic_request_bound(req.timeout_ms),
        )
        .await;
        for ((i, _), answer) in send.into_iter().zip(answers) {
            outcomes[i] = answer;
        }
    }
    // Grouped by topic, in the order first named.
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), outcome) in named.into_iter().zip(outcomes) {
        let (code, message) = outcome.unwrap_or((0, String::new()));
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message((code != 0).then(|| str_bytes(&message)));
        match results.iter_mut().find(|r| r.topic.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(&topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

fn topic_config_type(name: &str) -> i8 {
    (match name {
        "cleanup.policy"
        | "leader.replication.throttled.replicas"
        | "follower.replication.throttled.replicas" => ConfigType::List,
        "message.timestamp.type" | "compression.type" => ConfigType::String,
        "min.cleanable.dirty.ratio" => ConfigType::Double,
        "max.message.bytes"
        | "segment.bytes"
        | "segment.index.bytes"
        | "index.interval.bytes"
        | "min.insync.replicas" => ConfigType::Int,
        "unclean.leader.election.enable" => ConfigType::Boolean,
        _ => ConfigType::Long,
    }) as i8
}

pub(crate) fn describe_configs(
    state: &BrokerState,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|resource| {
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entry = |name: &str,
                         value: Option<String>,
                         source: i8,
                         config_type: i8,
                         read_only: bool,
                         doc: &str| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(name))
                    .with_value(value.map(|v| str_bytes(&v)))
                    .with_read_only(read_only)
                    .with_config_source(source);
                if version >= 3 {
                    e = e
                        .with_config_type(config_type)
                        .with_documentation(req.include_documentation.then(|| str_bytes(doc)));
                }
                e
            };
            match resource.resource_type {
                RESOURCE_TOPIC => match state.replicas.topic(resource.resource_name.as_str()) {
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(str_bytes("unknown topic"))),
                    Some(topic) => result.with_configs(
                        TOPIC_CONFIG_NAMES
                            .iter()
                            .filter(|n| wanted(n))
                            .map(|name| {
                                let source = topic_config_source(name, &topic.overrides, state);
                                let e = entry(
                                    name,
                                    topic.config.get(name),
                                    source,
                                    topic_config_type(name),
                                    false,
                                    topic_config_doc(name),
                                );
                                if version >= 1 && req.include_synonyms {
                                    e.with_synonyms(topic_config_synonyms(name, &topic, state))
                                } else {
                                    e
                                }
                            })
                            .collect(),
                    ),
                },
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if !name.is_empty() && name != state.config.node_id.to_string() {
                        return result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes(&format!(
                                "this is broker {}",
                                state.config.node_id
                            ))));
                    }
                    result.with_configs(
                        BROKER_CONFIGS
                            .iter()
                            .filter(|(k, _, _)| wanted(k))
                            // As Kafka: a dynamic-only config is listed once it is set.
                            .filter(|(k, _, _)| {
                                !DYNAMIC_BROKER_CONFIGS.contains(k)
                                    || !dynamic_broker_config(state, k).is_empty()
                            })
                            .map(|(key, ty, doc)| {
                                if DYNAMIC_BROKER_CONFIGS.contains(key) {
                                    let set = dynamic_broker_config(state, key);
                                    let (value, source) = set.first().cloned().unwrap_or((
                                        state.config.get(key).unwrap_or_default(),
                                        SOURCE_DEFAULT_CONFIG,
                                    ));
                                    let e = entry(key, Some(value), source, *ty as i8, false, doc);
                                    return if version >= 1 && req.include_synonyms {
                                        e.with_synonyms(dynamic_synonyms(state, key, set))
                                    } else {
                                        e
                                    };
                                }
                                let source = if state.config.is_default(key) {
                                    SOURCE_DEFAULT_CONFIG
                                } else {
                                    SOURCE_STATIC_BROKER_CONFIG
                                };
                                let value = state.config.get(key);
                                let e = entry(key, value.clone(), source, *ty as i8, true, doc);
                                if version >= 1 && req.include_synonyms {
                                    e.with_synonyms(broker_config_synonyms(key, value, source))
                                } else {
                                    e
                                }
                            })
                            .collect(),
                    )
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// AlterPartitionReassignments (KIP-455, `kafka-reassign-partitions.sh --execute`): each
/// named partition moves to its target replicas (or its reassignment is cancelled) through
/// the active controller; answered once this broker has applied the change. The added
/// replicas catch up as followers and the others leave once every target replica is in the
/// ISR (ListPartitionReassignments shows the partitions still moving).
pub(crate) async fn alter_partition_reassignments(
    state: Arc<BrokerState>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    // (topic, partition, target) in the order named, with an outcome known now or asked.
    let named: Vec<(TopicName, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let target = p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
                (t.name.clone(), p.partition_index, target)
            })
        })
        .collect();
    let mut outcomes: Vec<TopicOutcome> = vec![None; named.len()];
    let mut send = Vec::new();
    for (i, (topic, partition, target)) in named.iter().enumerate() {
        let current = state.cluster.view.read(|image| {
            let t = image.topic_by_name(topic.as_str())?;
            let p = t.partitions.get(partition)?;
            Some((t.topic_id, p.target_replicas().len()))
        });
        match current {
            None => {
                outcomes[i] = Some((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("no partition {}-{partition}", topic.as_str()),
                ))
            }
            // KIP-860: v1 clients may forbid changing the replication factor.
            Some((_, factor))
                if version >= 1
                    && !req.allow_replication_factor_change
                    && target.as_ref().is_some_and(|t| t.len() != factor) =>
            {
                outcomes[i] = Some((
                    ResponseError::InvalidReplicationFactor.code(),
                    format!("the reassignment would change the replication factor from {factor}"),
                ))
            }
            Some((topic_id, _)) => send.push((i, (topic_id, *partition, target.clone()))),
        }
    }
    if !send.is_empty() {
        let partitions = send.iter().map(|(_, p)| p.clone()).collect();
        let answers = ask_controller(
            &state,
            ControllerRequest::AlterReassignments { partitions },
            send.len(),
            topic_request_bound(req.timeout_ms),
        )
        .await;
        for ((i, _), answer) in send.into_iter().zip(answers) {
            outcomes[i] = answer;
        }
    }
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for ((topic, partition, _), outcome) in named.into_iter().zip(outcomes) {
        let (code, message) = outcome.unwrap_or((0, String::new()));
        let result = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(code)
            .with_error_message((code != 0).then(|| str_bytes(&message)));
        match responses.iter_mut().find(|r| r.name == topic) {
            Some(r) => r.partitions.push(result),
            None => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(topic)
                    .with_partitions(vec![result]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

/// ListPartitionReassignments: the partitions of the named topics (all topics when none is
/// named) whose reassignment is under way, with their replicas and the ones being added
/// and removed, from this broker's metadata image.
pub(crate) fn list_partition_reassignments(
    state: &BrokerState,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    use kafka_protocol::messages::BrokerId;
    let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let topics = state.cluster.view.read(|image| {
        let wanted: Vec<(String, Option<Vec<i32>>)> = match &req.topics {
            Some(ts) => ts
                .iter()
                .map(|t| (t.name.to_string(), Some(t.partition_indexes.clone())))
                .collect(),
            None => image.topics().map(|t| (t.name.clone(), None)).collect(),
        };
        wanted
            .into_iter()
            .filter_map(|(name, only)| {
                let topic = image.topic_by_name(&name)?;
                let partitions: Vec<OngoingPartitionReassignment> = topic
                    .partitions
                    .iter()
                    .filter(|(i, p)| {
                        p.is_reassigning() && only.as_ref().is_none_or(|o| o.contains(i))
                    })
                    .map(|(&i, p)| {
                        OngoingPartitionReassignment::default()
                            .with_partition_index(i)
                            .with_replicas(ids(&p.replicas))
                            .with_adding_replicas(ids(&p.adding_replicas))
                            .with_removing_replicas(ids(&p.removing_replicas))
                    })
                    .collect();
                (!partitions.is_empty()).then(|| {
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str_bytes(&name)))
                        .with_partitions(partitions)
                })
            })
            .collect::<Vec<_>>()
    });
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
