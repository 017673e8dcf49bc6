//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set, delete, append
//! to or subtract from single configs) for topics, and for the dynamic broker configs
//! (replication throttle rates), per broker or for all. Changes are validated as a whole, written
//! durably to `topics.json`, and applied to the running logs without a restart.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response as incremental;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_partition::{StorageError, TOPIC_CONFIG_NAMES};

use super::admin::RESOURCE_TOPIC;
use super::str_bytes;
use crate::cluster::rpc::ControllerRequest;
use crate::config::DYNAMIC_BROKER_CONFIGS;
use crate::BrokerState;
use std::sync::Arc;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic configs whose values are lists, the only ones APPEND and SUBTRACT apply to.
const LIST_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

/// Why a resource's change was refused: a Kafka error code and a message.
struct Refusal(i16, String);

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::InvalidConfig(m) => invalid_config(m),
            StorageError::UnknownTopic(t) => Refusal(
                ResponseError::UnknownTopicOrPartition.code(),
                format!("unknown topic {t}"),
            ),
            e => Refusal(crate::errors::error_code(&e), e.to_string()),
        }
    }
}

type Outcome = Result<(), Refusal>;

fn invalid_config(message: String) -> Refusal {
    Refusal(ResponseError::InvalidConfig.code(), message)
}

/// Changes topic `name`'s overrides with `change` (validating every value, refusing unknown
/// names), applied to the topic as it is under the metadata lock.
fn apply(
    state: &BrokerState,
    resource_type: i8,
    name: &str,
    change: impl FnOnce(&sluice_partition::LogConfig, &mut BTreeMap<String, String>) -> Outcome,
) -> Result<(i8, ConfigChanges), Refusal> {
    match resource_type {
        RESOURCE_TOPIC => apply_topic(state, name, change).map(|c| (RESOURCE_TOPIC, c)),
        RESOURCE_BROKER => apply_broker(state, name, change).map(|c| (RESOURCE_BROKER, c)),
        other => Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("resource type {other}: only topic and broker configs can be altered"),
        )),
    }
}

/// Kafka's config resource type for brokers.
const RESOURCE_BROKER: i8 = 4;

/// Changes the dynamic configs of broker `name` (its id, or `""` for every broker): only
/// [`DYNAMIC_BROKER_CONFIGS`], each a non-negative long.
fn apply_broker(
    state: &BrokerState,
    name: &str,
    change: impl FnOnce(&sluice_partition::LogConfig, &mut BTreeMap<String, String>) -> Outcome,
) -> Result<ConfigChanges, Refusal> {
    if !name.is_empty() && name.parse::<i32>().is_err() {
        return Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("'{name}' is not a broker id"),
        ));
    }
    let before: BTreeMap<String, String> = state.cluster.view.read(|image| {
        image
            .configs(RESOURCE_BROKER, name)
            .into_iter()
            .flatten()
            .filter(|(k, _)| DYNAMIC_BROKER_CONFIGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let mut after = before.clone();
    change(state.replicas.defaults(), &mut after)?;
    let fixed: Vec<&str> = after
        .keys()
        .map(String::as_str)
        .filter(|k| !DYNAMIC_BROKER_CONFIGS.contains(k))
        .collect();
    if !fixed.is_empty() {
        return Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("Cannot update these configs dynamically: {fixed:?}"),
        ));
    }
    for (k, v) in &after {
        if v.trim().parse::<i64>().map_or(true, |n| n < 0) {
            return Err(invalid_config(format!(
                "{k}={v} is not a non-negative long"
            )));
        }
    }
    Ok((name.to_string(), diff(&before, &after)))
}

/// The changes that turn `before` into `after`: removals, then new or changed values.
fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let mut changes: Vec<(String, Option<String>)> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| (k.clone(), None))
        .collect();
    changes.extend(
        after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), Some(v.clone()))),
    );
    changes
}

fn apply_topic(
    state: &BrokerState,
    name: &str,
    change: impl FnOnce(&sluice_partition::LogConfig, &mut BTreeMap<String, String>) -> Outcome,
) -> Result<ConfigChanges, Refusal> {
    if crate::is_internal_topic(name) {
        return Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("{name} is internal to the broker's coordinators"),
        ));
    }
    let mut before = BTreeMap::new();
    // Checked as the data directory would apply it, changing nothing: the controller
    // writes the change, and every broker applies it from the metadata log.
    let after = tokio::task::block_in_place(|| {
        state.replicas.alter_topic_config(
            name,
            |overrides, config| {
                before = overrides.clone();
                let mut overrides = overrides.clone();
                change(config, &mut overrides)?;
                if let Some(unknown) = overrides
                    .keys()
                    .find(|k| !TOPIC_CONFIG_NAMES.contains(&k.as_str()))
                {
                    return Err(invalid_config(format!("unknown topic config {unknown}")));
                }
                Ok(overrides)
            },
            true,
        )
    })?;
    Ok((name.to_string(), diff(&before, &after.overrides)))
}

use crate::cluster::rpc::TopicConfigChanges as ConfigChanges;

/// Sends the checked changes (`Ok` outcomes) to the controller, unless validating only,
/// and turns each resource's outcome into its error fields.
async fn write_changes(
    state: &BrokerState,
    outcomes: Vec<Result<(i8, ConfigChanges), Refusal>>,
    validate_only: bool,
    timeout: std::time::Duration,
) -> Vec<(i16, Option<StrBytes>)> {
    let of_type = |ty: i8| -> Vec<ConfigChanges> {
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .filter(|(t, _)| *t == ty)
            .map(|(_, c)| c.clone())
            .collect()
    };
    let (topics, brokers) = (of_type(RESOURCE_TOPIC), of_type(RESOURCE_BROKER));
    let mut written_topics = send(state, validate_only, timeout, topics, |topics| {
        ControllerRequest::AlterConfigs { topics }
    })
    .await
    .into_iter();
    let mut written_brokers = send(state, validate_only, timeout, brokers, |brokers| {
        ControllerRequest::AlterBrokerConfigs { brokers }
    })
    .await
    .into_iter();
    outcomes
        .into_iter()
        .map(|o| match o {
            Err(Refusal(code, message)) => (code, Some(str_bytes(&message))),
            Ok((ty, (name, _))) if !validate_only => {
                let written = if ty == RESOURCE_TOPIC {
                    written_topics.next()
                } else {
                    written_brokers.next()
                };
                match written.flatten() {
                    None => {
                        tracing::info!(resource_type = ty, name, "altered configs");
                        (0, None)
                    }
                    Some((code, message)) => (code, Some(str_bytes(&message))),
                }
            }
            Ok(_) => (0, None),
        })
        .collect()
}

/// Sends one kind of config change to the controller: one outcome per resource.
async fn send(
    state: &BrokerState,
    validate_only: bool,
    timeout: std::time::Duration,
    changes: Vec<ConfigChanges>,
    request: impl FnOnce(Vec<ConfigChanges>) -> ControllerRequest,
) -> Vec<crate::cluster::rpc::TopicOutcome> {
    if validate_only || changes.is_empty() {
        return Vec::new();
    }
    let n = changes.len();
    match state.cluster.topic_request(request(changes), timeout).await {
        Ok(o) if o.len() == n => o,
        Ok(_) | Err(_) => vec![
            Some((
                ResponseError::RequestTimedOut.code(),
                "the controller did not write the change".to_string()
            ));
            n
        ],
    }
}

/// How long a config change may wait for the controller and this broker's publisher.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// AlterConfigs replaces every override of the topic: configs not named revert to defaults.
pub(crate) async fn alter_configs(
    state: Arc<BrokerState>,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let outcomes = req
        .resources
        .iter()
        .map(|r| {
            apply(
                &state,
                r.resource_type,
                r.resource_name.as_str(),
                |_, overrides| {
                    overrides.clear();
                    for c in &r.configs {
                        let value = c.value.as_ref().ok_or_else(|| {
                            invalid_config(format!("{}: null value", c.name.as_str()))
                        })?;
                        overrides.insert(c.name.to_string(), value.to_string());
                    }
                    Ok(())
                },
            )
        })
        .collect();
    let fields = write_changes(&state, outcomes, req.validate_only, WRITE_TIMEOUT).await;
    let responses = req
        .resources
        .iter()
        .zip(fields)
        .map(|(r, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) async fn incremental_alter_configs(
    state: Arc<BrokerState>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let outcomes = req
        .resources
        .iter()
        .map(|r| {
            apply(
                &state,
                r.resource_type,
                r.resource_name.as_str(),
                |config, overrides| {
                    for c in &r.configs {
                        let name = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let current =
                            || overrides.get(&name).cloned().or_else(|| config.get(&name));
                        match c.config_operation {
                            OP_SET => {
                                let v = value.ok_or_else(|| {
                                    invalid_config(format!("{name}: null value for SET"))
                                })?;
                                overrides.insert(name, v);
                            }
                            OP_DELETE => {
                                overrides.remove(&name);
                            }
                            OP_APPEND | OP_SUBTRACT => {
                                if !LIST_CONFIGS.contains(&name.as_str()) {
                                    return Err(invalid_config(format!(
                                        "{name} is not a list: APPEND and SUBTRACT do not apply"
                                    )));
                                }
                                let mut items = list_items(&current().unwrap_or_default());
                                for item in list_items(&value.unwrap_or_default()) {
                                    if c.config_operation == OP_APPEND {
                                        if !items.contains(&item) {
                                            items.push(item);
                                        }
                                    } else {
                                        items.retain(|i| *i != item);
                                    }
                                }
                                overrides.insert(name, items.join(","));
                            }
                            other => {
                                return Err(Refusal(
                                    ResponseError::InvalidRequest.code(),
                                    format!("{name}: unknown operation {other}"),
                                ))
                            }
                        }
                    }
                    Ok(())
                },
            )
        })
        .collect();
    let fields = write_changes(&state, outcomes, req.validate_only, WRITE_TIMEOUT).await;
    let responses = req
        .resources
        .iter()
        .zip(fields)
        .map(|(r, (code, message))| {
            incremental::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
