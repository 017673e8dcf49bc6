//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set, delete, append
//! to or subtract from single configs) for topics. Changes are validated as a whole, written
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
use crate::BrokerState;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic configs whose values are lists, the only ones APPEND and SUBTRACT apply to.
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

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
    validate_only: bool,
) -> Outcome {
    if resource_type != RESOURCE_TOPIC {
        return Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("resource type {resource_type}: only topic configs can be altered"),
        ));
    }
    if crate::is_internal_topic(name) {
        return Err(Refusal(
            ResponseError::InvalidRequest.code(),
            format!("{name} is internal to the broker's coordinators"),
        ));
    }
    tokio::task::block_in_place(|| {
        state.replicas.alter_topic_config(
            name,
            |overrides, config| {
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
            validate_only,
        )
    })?;
    if !validate_only {
        tracing::info!(topic = name, "altered topic configs");
    }
    Ok(())
}

fn error_fields(outcome: Outcome) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err(Refusal(code, message)) => (code, Some(str_bytes(&message))),
    }
}

/// AlterConfigs replaces every override of the topic: configs not named revert to defaults.
pub(crate) fn alter_configs(state: &BrokerState, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let outcome = apply(
                state,
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
                req.validate_only,
            );
            let (code, message) = error_fields(outcome);
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

pub(crate) fn incremental_alter_configs(
    state: &BrokerState,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let outcome = apply(
                state,
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
                req.validate_only,
            );
            let (code, message) = error_fields(outcome);
            incremental::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
