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
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::ResponseError;
use sluice_partition::{LogConfig, StorageError, Topic, TOPIC_CONFIG_NAMES};
use uuid::Uuid;

use super::str_bytes;
use crate::config::{topic_config_for_broker_key, ConfigType, BROKER_CONFIGS};
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

pub(crate) fn create_topics(state: &BrokerState, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str().to_string()))
        .map(|t| t.name.as_str().to_string())
        .collect();
    // A name given twice is answered once, with INVALID_REQUEST, as Kafka answers it.
    let mut answered = HashSet::new();
    let topics = req
        .topics
        .iter()
        .filter(|t| answered.insert(t.name.as_str().to_string()))
        .map(|t| {
            let name = t.name.as_str();
            // Kafka's answer carries no message unless there is an error.
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_message(None);
            if duplicates.contains(name) {
                let msg = format!("topic {name} appears more than once in the request");
                return with_error(result, failure(ResponseError::InvalidRequest.code(), msg));
            }
            if is_internal_topic(name) {
                let msg = format!("{name} is internal; its coordinator creates it");
                return with_error(result, failure(ResponseError::InvalidRequest.code(), msg));
            }
            match create_one(state, t, req.validate_only) {
                Ok(topic) => {
                    tracing::info!(
                        topic = name,
                        partitions = topic.partitions.len(),
                        validate_only = req.validate_only,
                        "created topic"
                    );
                    result
                        .with_topic_id(if req.validate_only {
                            Uuid::nil()
                        } else {
                            topic.id
                        })
                        .with_num_partitions(topic_partitions(t, state, &topic))
                        .with_replication_factor(1)
                        .with_configs(Some(topic_configs(state, &topic.config, &topic.overrides)))
                }
                Err(e) => with_error(result, e),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
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
        let node = state.config.node_id;
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
            return Err(invalid_assignment(
                "partitions must be numbered 0..n without gaps",
            ));
        }
        if t.assignments
            .iter()
            .any(|a| a.broker_ids.iter().map(|b| b.0).ne([node]))
        {
            return Err(invalid_assignment(
                "every partition must be assigned to this one broker",
            ));
        }
        return Ok(t.assignments.len() as i32);
    }
    if !matches!(t.replication_factor, -1 | 1) {
        return Err(failure(
            ResponseError::InvalidReplicationFactor.code(),
            format!(
                "replication factor {} is larger than the 1 available broker",
                t.replication_factor
            ),
        ));
    }
    Ok(if t.num_partitions == -1 {
        state.config.num_partitions
    } else {
        t.num_partitions
    })
}

fn create_one(
    state: &BrokerState,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<std::sync::Arc<Topic>, (i16, Option<String>)> {
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
    tokio::task::block_in_place(|| {
        state
            .replicas
            .create_topic(t.name.as_str(), partitions, overrides, validate_only)
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

pub(crate) fn delete_topics(state: &BrokerState, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
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
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let resolved = match (&name, id) {
                (Some(name), _) => state
                    .replicas
                    .topic(name)
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                (None, id) => state
                    .replicas
                    .topic_by_id(id)
                    .ok_or(ResponseError::UnknownTopicId),
            };
            let result = DeletableTopicResult::default()
                .with_name(name.as_ref().map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            let topic = match resolved {
                Ok(topic) => topic,
                Err(e) => return result.with_error_code(e.code()),
            };
            let result = result
                .with_name(Some(TopicName(str_bytes(&topic.name))))
                .with_topic_id(topic.id);
            if is_internal_topic(&topic.name) {
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(INTERNAL)));
            }
            match tokio::task::block_in_place(|| state.replicas.delete_topic(&topic.name)) {
                Ok(_) => {
                    tracing::info!(topic = topic.name, "deleted topic");
                    state.metrics.topic_deleted(&topic.name);
                    if state.groups.is_loaded() {
                        let _ = state
                            .groups
                            .call(state, |c, _| c.delete_topic_offsets(&topic.name));
                    }
                    result
                }
                Err(e) => result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) fn create_partitions(
    state: &BrokerState,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = state.config.node_id;
    let results = req
        .topics
        .iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if is_internal_topic(t.name.as_str()) {
                // Groups are placed by partition count; changing it would orphan them.
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(INTERNAL)));
            }
            if let Some(assignments) = &t.assignments {
                if assignments
                    .iter()
                    .any(|a| a.broker_ids.iter().map(|b| b.0).ne([node]))
                {
                    return result
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(str_bytes(
                            "every partition must be assigned to this one broker",
                        )));
                }
            }
            if !req.validate_only {
                let have = state
                    .replicas
                    .topic(t.name.as_str())
                    .map_or(0, |topic| topic.partitions.len() as i32);
                if let Err((code, msg)) = room_for_partitions(state, t.count - have) {
                    return result
                        .with_error_code(code)
                        .with_error_message(msg.map(|m| str_bytes(&m)));
                }
            }
            let created = tokio::task::block_in_place(|| {
                state
                    .replicas
                    .create_partitions(t.name.as_str(), t.count, req.validate_only)
            });
            match created {
                Ok(_) => result,
                Err(e) => result
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

fn topic_config_type(name: &str) -> i8 {
    (match name {
        "cleanup.policy" => ConfigType::List,
        "message.timestamp.type" | "compression.type" => ConfigType::String,
        "min.cleanable.dirty.ratio" => ConfigType::Double,
        "max.message.bytes" | "segment.bytes" | "segment.index.bytes" | "index.interval.bytes" => {
            ConfigType::Int
        }
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
                            .map(|(key, ty, doc)| {
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
