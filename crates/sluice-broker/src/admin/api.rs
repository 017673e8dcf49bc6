//! The JSON routes under `/api/v1`. Shapes are described in `openapi.json`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use sluice_storage::{Topic, TOPIC_CONFIG_NAMES};

use super::{messages, Admin, ApiError, ApiResult, Shared};
use crate::handlers::str_bytes;
use crate::BrokerState;

pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/brokers", get(brokers))
        .route("/api/v1/brokers/{node_id}", get(broker))
        .route("/api/v1/topics", get(list_topics).post(create_topic))
        .route(
            "/api/v1/topics/{name}",
            get(describe_topic).delete(delete_topic),
        )
        .route(
            "/api/v1/topics/{name}/configs",
            get(topic_configs).patch(alter_topic_configs),
        )
        .route("/api/v1/topics/{name}/partitions", get(topic_partitions))
        .route(
            "/api/v1/topics/{name}/partitions/{partition}/messages",
            get(messages::browse),
        )
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{group_id}", get(describe_group))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stream", get(stream))
}

/// Query parameters as (name, value) pairs; a malformed query string is a 400.
pub(super) fn query_pairs(raw: Option<String>) -> ApiResult<Vec<(String, String)>> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded::from_str(&raw)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

/// The integer query parameter `name`, if present; not an integer is a 400.
pub(super) fn int_param(pairs: &[(String, String)], name: &str) -> ApiResult<Option<i64>> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name}={v}: expected an integer")))
        })
        .transpose()
}

/// Parses a JSON body; any failure (syntax, types, unknown fields) is a 400.
fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn topic(state: &BrokerState, name: &str) -> ApiResult<Arc<Topic>> {
    state
        .logs
        .topic(name)
        .ok_or_else(|| ApiError::not_found(format!("unknown topic {name}")))
}

fn internal_topic(name: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_topic",
        message: format!("{name} is internal to the broker's coordinators"),
    }
}

/// An error code from a Kafka-protocol handler, as an HTTP error.
fn kafka_error(code: i16, message: Option<String>) -> ApiError {
    let e = ResponseError::try_from_code(code);
    let message = message.unwrap_or_else(|| crate::metrics::error_name(code));
    let (status, code) = match e {
        Some(ResponseError::TopicAlreadyExists) => (StatusCode::CONFLICT, "topic_exists"),
        Some(ResponseError::UnknownTopicOrPartition) => (StatusCode::NOT_FOUND, "not_found"),
        Some(ResponseError::InvalidConfig) => (StatusCode::BAD_REQUEST, "invalid_config"),
        Some(ResponseError::InvalidTopicException) => (StatusCode::BAD_REQUEST, "invalid_topic"),
        Some(ResponseError::KafkaStorageError) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_error")
        }
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    ApiError {
        status,
        code,
        message,
    }
}

// -- cluster and brokers ---------------------------------------------------------------------

#[derive(Serialize)]
struct BrokerInfo {
    node_id: i32,
    host: String,
    port: u16,
    admin_address: String,
    version: &'static str,
    data_dir: String,
    started_at_ms: i64,
    uptime_ms: i64,
}

fn broker_info(admin: &Admin, state: &BrokerState) -> BrokerInfo {
    BrokerInfo {
        node_id: state.config.node_id,
        host: state.advertised.0.clone(),
        port: state.advertised.1,
        admin_address: admin.address.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        data_dir: state.config.data_dir.display().to_string(),
        started_at_ms: admin.started_at_ms,
        uptime_ms: crate::now_ms() - admin.started_at_ms,
    }
}

#[derive(Serialize)]
struct Cluster {
    cluster_id: String,
    controller_id: i32,
    brokers: Vec<BrokerInfo>,
}

async fn cluster(admin: Shared) -> ApiResult<Json<Cluster>> {
    let state = admin.state()?;
    Ok(Json(Cluster {
        cluster_id: state.logs.cluster_id().to_string(),
        controller_id: state.config.node_id,
        brokers: vec![broker_info(&admin, state)],
    }))
}

async fn brokers(admin: Shared) -> ApiResult<Json<Vec<BrokerInfo>>> {
    let state = admin.state()?;
    Ok(Json(vec![broker_info(&admin, state)]))
}

async fn broker(
    admin: Shared,
    node_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<BrokerInfo>> {
    let Path(node_id) = node_id?;
    let state = admin.state()?;
    match node_id.parse::<i32>() {
        Ok(id) if id == state.config.node_id => Ok(Json(broker_info(&admin, state))),
        Ok(id) => Err(ApiError::not_found(format!("unknown broker {id}"))),
        Err(_) => Err(ApiError::bad_request(format!(
            "broker id {node_id}: expected an integer"
        ))),
    }
}

// -- topics ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    topic_id: String,
    internal: bool,
    partition_count: usize,
    replication_factor: i32,
    size_bytes: u64,
    messages: i64,
    cleanup_policy: String,
}

#[derive(Serialize)]
pub(super) struct PartitionInfo {
    partition: usize,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: i64,
    high_watermark: i64,
    last_stable_offset: i64,
    size_bytes: u64,
    segments: usize,
}

#[derive(Serialize)]
struct TopicDetail {
    #[serde(flatten)]
    summary: TopicSummary,
    partitions: Vec<PartitionInfo>,
    configs: BTreeMap<String, String>,
}

fn summary(t: &Topic) -> TopicSummary {
    TopicSummary {
        name: t.name.clone(),
        topic_id: t.id.to_string(),
        internal: crate::is_internal_topic(&t.name),
        partition_count: t.partitions.len(),
        replication_factor: 1,
        size_bytes: t.partitions.iter().map(|l| l.size_bytes()).sum(),
        messages: t
            .partitions
            .iter()
            .map(|l| l.log_end_offset() - l.log_start_offset())
            .sum(),
        cleanup_policy: t.config.get("cleanup.policy").unwrap_or_default(),
    }
}

fn partitions(state: &BrokerState, t: &Topic) -> Vec<PartitionInfo> {
    let node = state.config.node_id;
    t.partitions
        .iter()
        .enumerate()
        .map(|(p, log)| PartitionInfo {
            partition: p,
            leader: node,
            replicas: vec![node],
            isr: vec![node],
            log_start_offset: log.log_start_offset(),
            high_watermark: log.log_end_offset(),
            last_stable_offset: log.last_stable_offset(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
        })
        .collect()
}

fn detail(state: &BrokerState, t: &Topic) -> TopicDetail {
    TopicDetail {
        summary: summary(t),
        partitions: partitions(state, t),
        configs: TOPIC_CONFIG_NAMES
            .iter()
            .filter_map(|name| Some((name.to_string(), t.config.get(name)?)))
            .collect(),
    }
}

async fn list_topics(admin: Shared) -> ApiResult<Json<Vec<TopicSummary>>> {
    let state = admin.state()?;
    let mut topics: Vec<_> = state.logs.topics().iter().map(|t| summary(t)).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(topics))
}

async fn describe_topic(
    admin: Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TopicDetail>> {
    let Path(name) = name?;
    let state = admin.state()?;
    let t = topic(state, &name)?;
    Ok(Json(detail(state, &t)))
}

async fn topic_partitions(
    admin: Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<PartitionInfo>>> {
    let Path(name) = name?;
    let state = admin.state()?;
    let t = topic(state, &name)?;
    Ok(Json(partitions(state, &t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

async fn create_topic(admin: Shared, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let state = admin.state()?.clone();
    let new: NewTopic = json_body(body)?;
    if let Some(p) = new.partitions.filter(|&p| p < 1) {
        return Err(ApiError::bad_request(format!(
            "partitions {p}: a topic needs at least one partition"
        )));
    }
    if let Some(rf) = new.replication_factor.filter(|&rf| rf < 1) {
        return Err(ApiError::bad_request(format!(
            "replication_factor {rf}: must be at least 1"
        )));
    }
    if crate::is_internal_topic(&new.name) {
        return Err(internal_topic(&new.name));
    }
    let configs = new
        .configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
        })
        .collect();
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(str_bytes(&new.name)))
        .with_num_partitions(new.partitions.unwrap_or(-1))
        .with_replication_factor(new.replication_factor.unwrap_or(-1))
        .with_configs(configs)]);
    let name = new.name.clone();
    let created = blocking(&state, move |state| {
        crate::handlers::admin::create_topics(state, request)
    })
    .await?;
    let result = created
        .topics
        .first()
        .ok_or_else(|| ApiError::bad_request("nothing created"))?;
    if result.error_code != 0 {
        let message = result.error_message.as_ref().map(|m| m.to_string());
        return Err(kafka_error(result.error_code, message));
    }
    let topic = topic(&state, &name)?;
    Ok((StatusCode::CREATED, Json(detail(&state, &topic))).into_response())
}

/// Runs a handler that may do file I/O (creating or deleting logs) on a blocking thread.
async fn blocking<R: Send + 'static>(
    state: &Arc<BrokerState>,
    f: impl FnOnce(&BrokerState) -> R + Send + 'static,
) -> ApiResult<R> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| ApiError::unavailable("internal", format!("the operation failed: {e}")))
}

async fn delete_topic(
    admin: Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(name) = name?;
    let state = admin.state()?.clone();
    if crate::is_internal_topic(&name) {
        return Err(internal_topic(&name));
    }
    topic(&state, &name)?;
    let request =
        DeleteTopicsRequest::default().with_topic_names(vec![TopicName(str_bytes(&name))]);
    let deleted = blocking(&state, move |state| {
        crate::handlers::admin::delete_topics(state, request)
    })
    .await?;
    if let Some(r) = deleted.responses.first().filter(|r| r.error_code != 0) {
        let message = r.error_message.as_ref().map(|m| m.to_string());
        return Err(kafka_error(r.error_code, message));
    }
    Ok(Json(serde_json::json!({ "deleted": name })))
}

#[derive(Serialize)]
struct ConfigEntry {
    name: &'static str,
    value: String,
    source: &'static str,
}

fn config_entries(t: &Topic) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_NAMES
        .iter()
        .filter_map(|&name| {
            Some(ConfigEntry {
                name,
                value: t.config.get(name)?,
                source: if t.overrides.contains_key(name) {
                    "topic"
                } else {
                    "default"
                },
            })
        })
        .collect()
}

async fn topic_configs(
    admin: Shared,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<ConfigEntry>>> {
    let Path(name) = name?;
    let state = admin.state()?;
    let t = topic(state, &name)?;
    Ok(Json(config_entries(&t)))
}

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// The DescribeConfigs / AlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

async fn alter_topic_configs(
    admin: Shared,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<ConfigEntry>>> {
    let Path(name) = name?;
    let state = admin.state()?.clone();
    topic(&state, &name)?;
    if crate::is_internal_topic(&name) {
        return Err(internal_topic(&name));
    }
    let changes: BTreeMap<String, Option<String>> = json_body(body)?;
    let configs = changes
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(if v.is_some() { OP_SET } else { OP_DELETE })
                .with_value(v.as_deref().map(str_bytes))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(&name))
            .with_configs(configs),
    ]);
    let altered = blocking(&state, move |state| {
        crate::handlers::alter_configs::incremental_alter_configs(state, request)
    })
    .await?;
    if let Some(r) = altered.responses.first().filter(|r| r.error_code != 0) {
        let message = r.error_message.as_ref().map(|m| m.to_string());
        return Err(kafka_error(r.error_code, message));
    }
    let t = topic(&state, &name)?;
    Ok(Json(config_entries(&t)))
}

// -- groups ----------------------------------------------------------------------------------

#[derive(Serialize, Clone)]
pub(crate) struct OffsetLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub log_end_offset: i64,
    pub lag: i64,
    pub metadata: String,
}

#[derive(Serialize)]
pub(crate) struct Assignment {
    topic: String,
    partition: i32,
}

#[derive(Serialize)]
pub(crate) struct MemberInfo {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    assignments: Vec<Assignment>,
}

/// A group with its committed offsets and their lag.
#[derive(Serialize)]
pub(crate) struct GroupLag {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    #[serde(skip)]
    pub members: usize,
    #[serde(rename = "members")]
    pub member_details: Vec<MemberInfo>,
    pub lag: i64,
    pub offsets: Vec<OffsetLag>,
}

/// Every group with its members and lag. Lag is the partition's end minus the committed
/// offset (never negative); partitions of deleted topics are left out.
pub(crate) fn group_lags(state: &BrokerState) -> Vec<GroupLag> {
    let groups = state.groups.read(|c| {
        c.list_groups(&[])
            .into_iter()
            .map(|g| {
                let described = c.describe_group(&g.group_id);
                let offsets = c.fetch_offsets(&g.group_id, None);
                (g, described, offsets)
            })
            .collect::<Vec<_>>()
    });
    let mut out: Vec<GroupLag> = groups
        .into_iter()
        .map(|(listing, described, offsets)| {
            let mut offsets: Vec<OffsetLag> = offsets
                .into_iter()
                .filter_map(|(topic, partition, committed)| {
                    let committed = committed?;
                    let end = state.logs.partition(&topic, partition)?.log_end_offset();
                    Some(OffsetLag {
                        lag: (end - committed.offset).max(0),
                        topic,
                        partition,
                        committed_offset: committed.offset,
                        log_end_offset: end,
                        metadata: committed.metadata,
                    })
                })
                .collect();
            offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            let consumer = listing.protocol_type == "consumer";
            let member_details: Vec<MemberInfo> = described
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    assignments: if consumer {
                        parse_assignment(&m.assignment)
                    } else {
                        Vec::new()
                    },
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect();
            GroupLag {
                group_id: listing.group_id,
                state: listing.state.name(),
                protocol_type: listing.protocol_type,
                protocol: described.protocol_name,
                members: member_details.len(),
                member_details,
                lag: offsets.iter().map(|o| o.lag).sum(),
                offsets,
            }
        })
        .collect();
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out
}

/// The partitions of a consumer-protocol assignment (version, then an array of topic name
/// and partition array; user data after it is ignored). The bytes come from a client, so
/// every count is checked against what is left before anything is allocated; a malformed
/// assignment shows as none.
fn parse_assignment(bytes: &[u8]) -> Vec<Assignment> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (buf.get(..n)?, buf.get(n..)?);
        *buf = rest;
        Some(head)
    }
    fn int(buf: &mut &[u8]) -> Option<i32> {
        take(buf, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn parse(mut buf: &[u8]) -> Option<Vec<Assignment>> {
        let buf = &mut buf;
        take(buf, 2)?; // version
        let topics = usize::try_from(int(buf)?).ok()?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let len = take(buf, 2).map(|b| i16::from_be_bytes([b[0], b[1]]))?;
            let name = std::str::from_utf8(take(buf, usize::try_from(len).ok()?)?).ok()?;
            let count = usize::try_from(int(buf)?).ok()?;
            if count > buf.len() / 4 {
                return None;
            }
            for _ in 0..count {
                out.push(Assignment {
                    topic: name.to_string(),
                    partition: int(buf)?,
                });
            }
        }
        Some(out)
    }
    parse(bytes).unwrap_or_default()
}

#[derive(Serialize)]
struct GroupSummary {
    group_id: String,
    state: &'static str,
    protocol_type: String,
    members: usize,
    lag: i64,
}

async fn list_groups(admin: Shared) -> ApiResult<Json<Vec<GroupSummary>>> {
    let state = admin.state()?;
    Ok(Json(
        group_lags(state)
            .into_iter()
            .map(|g| GroupSummary {
                group_id: g.group_id,
                state: g.state,
                protocol_type: g.protocol_type,
                members: g.members,
                lag: g.lag,
            })
            .collect(),
    ))
}

async fn describe_group(
    admin: Shared,
    group_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<GroupLag>> {
    let Path(group_id) = group_id?;
    let state = admin.state()?;
    group_lags(state)
        .into_iter()
        .find(|g| g.group_id == group_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown group {group_id}")))
}

// -- live stats ------------------------------------------------------------------------------

#[derive(Serialize)]
struct TopicStats {
    name: String,
    bytes_in: u64,
    bytes_out: u64,
    messages_in: u64,
    messages_out: u64,
    size_bytes: u64,
}

#[derive(Serialize)]
struct GroupStats {
    group_id: String,
    lag: i64,
}

#[derive(Serialize)]
struct Stats {
    time_ms: i64,
    uptime_ms: i64,
    connections: i64,
    bytes_in: u64,
    bytes_out: u64,
    messages_in: u64,
    messages_out: u64,
    topics: Vec<TopicStats>,
    groups: Vec<GroupStats>,
}

fn snapshot(admin: &Admin, state: &BrokerState) -> Stats {
    let traffic = admin.metrics.traffic();
    let mut topics: Vec<TopicStats> = state
        .logs
        .topics()
        .iter()
        .map(|t| {
            let tr = traffic.get(&t.name).cloned().unwrap_or_default();
            TopicStats {
                name: t.name.clone(),
                bytes_in: tr.bytes_in,
                bytes_out: tr.bytes_out,
                messages_in: tr.messages_in,
                messages_out: tr.messages_out,
                size_bytes: t.partitions.iter().map(|l| l.size_bytes()).sum(),
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let now = crate::now_ms();
    Stats {
        time_ms: now,
        uptime_ms: now - admin.started_at_ms,
        connections: admin.metrics.open_connections(),
        bytes_in: traffic.values().map(|t| t.bytes_in).sum(),
        bytes_out: traffic.values().map(|t| t.bytes_out).sum(),
        messages_in: traffic.values().map(|t| t.messages_in).sum(),
        messages_out: traffic.values().map(|t| t.messages_out).sum(),
        topics,
        groups: group_lags(state)
            .into_iter()
            .map(|g| GroupStats {
                group_id: g.group_id,
                lag: g.lag,
            })
            .collect(),
    }
}

async fn stats(admin: Shared) -> ApiResult<Json<Stats>> {
    let state = admin.state()?;
    Ok(Json(snapshot(&admin, state)))
}

/// Bounds of the stream's `interval_ms`.
const STREAM_INTERVAL_MS: std::ops::RangeInclusive<i64> = 100..=60_000;

async fn stream(admin: Shared, query: RawQuery) -> ApiResult<Response> {
    let pairs = query_pairs(query.0)?;
    let interval = int_param(&pairs, "interval_ms")?.unwrap_or(1000);
    if !STREAM_INTERVAL_MS.contains(&interval) {
        return Err(ApiError::bad_request(format!(
            "interval_ms={interval}: must be within {}..={}",
            STREAM_INTERVAL_MS.start(),
            STREAM_INTERVAL_MS.end()
        )));
    }
    let state = admin.state()?.clone();
    let admin = admin.0.clone();
    let period = Duration::from_millis(interval as u64);
    let shutdown = admin.shutdown.clone();
    // One event at once, then one per period, until the client goes or the broker stops.
    let events = futures_util::stream::unfold(
        (admin, state, shutdown, true),
        move |(admin, state, mut shutdown, first)| async move {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                }
            }
            if *shutdown.borrow() {
                return None;
            }
            let data = serde_json::to_string(&snapshot(&admin, &state)).unwrap_or_default();
            let event = Event::default().event("stats").data(data);
            Some((Ok::<_, Infallible>(event), (admin, state, shutdown, false)))
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // null user data
        b
    }

    #[test]
    fn assignments_are_parsed_and_hostile_counts_give_none() {
        let parsed = parse_assignment(&assignment(&[("a", &[0, 2]), ("b", &[1])]));
        let pairs: Vec<_> = parsed
            .iter()
            .map(|a| (a.topic.as_str(), a.partition))
            .collect();
        assert_eq!(pairs, [("a", 0), ("a", 2), ("b", 1)]);
        // A partition count far beyond the bytes present: nothing, and nothing allocated.
        let mut hostile = vec![0, 1, 0, 0, 0, 1, 0, 1, b'a'];
        hostile.extend(i32::MAX.to_be_bytes());
        assert!(parse_assignment(&hostile).is_empty());
        let mut many_topics = vec![0, 1];
        many_topics.extend(i32::MAX.to_be_bytes());
        assert!(parse_assignment(&many_topics).is_empty());
        assert!(parse_assignment(&[]).is_empty());
        assert!(parse_assignment(&[0, 1, 0xff, 0xff, 0xff, 0xff]).is_empty());
    }
}
