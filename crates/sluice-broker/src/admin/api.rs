//! The JSON routes under `/api/v1` (the message browser's is in `messages`). Shapes are
//! described in `openapi.json`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, StatusCode};
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
use sluice_partition::{Topic, TOPIC_CONFIG_NAMES};

use super::{
    int_param, off_the_runtime, query_pairs, Admin, ApiError, ApiResult, Shared, MAX_STREAMS,
};
use crate::groups::OffsetLag;
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
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{group_id}", get(describe_group))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stream", get(stream))
}

/// Parses a JSON body: `Content-Type: application/json` or 415; then any failure (syntax,
/// types, unknown fields) is a 400.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "the body must be JSON, sent as Content-Type: application/json".into(),
        });
    }
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn topic(state: &BrokerState, name: &str) -> ApiResult<Arc<Topic>> {
    state
        .replicas
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
    let message = message.unwrap_or_else(|| sluice_protocol::error_name(code));
    let (status, code) = match e {
        Some(ResponseError::TopicAlreadyExists) => (StatusCode::CONFLICT, "topic_exists"),
        Some(ResponseError::UnknownTopicOrPartition) => (StatusCode::NOT_FOUND, "not_found"),
        Some(ResponseError::InvalidConfig) => (StatusCode::BAD_REQUEST, "invalid_config"),
        Some(ResponseError::InvalidTopicException) => (StatusCode::BAD_REQUEST, "invalid_topic"),
        Some(ResponseError::KafkaStorageError) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_error")
        }
        Some(
            ResponseError::InvalidPartitions
            | ResponseError::InvalidReplicationFactor
            | ResponseError::InvalidReplicaAssignment
            | ResponseError::InvalidRequest
            | ResponseError::PolicyViolation
            | ResponseError::InvalidRecord,
        ) => (StatusCode::BAD_REQUEST, "bad_request"),
        // Anything else is the broker's own trouble, not the request's.
        _ => (StatusCode::SERVICE_UNAVAILABLE, "internal"),
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
    membership: crate::cluster::ClusterStatus,
}

async fn cluster(admin: Shared) -> ApiResult<Json<Cluster>> {
    let state = admin.state()?;
    Ok(Json(Cluster {
        cluster_id: state.cluster.cluster_id(state.replicas.cluster_id()),
        controller_id: state.config.node_id,
        brokers: vec![broker_info(&admin, state)],
        membership: state.cluster.status(),
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
    /// Whether this broker holds a replica; the figures below are that replica's (a
    /// follower's high watermark may trail its leader's), `None` where it holds none.
    hosted: bool,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
    last_stable_offset: Option<i64>,
    size_bytes: Option<u64>,
    segments: Option<usize>,
}

#[derive(Serialize)]
struct TopicDetail {
    #[serde(flatten)]
    summary: TopicSummary,
    partitions: Vec<PartitionInfo>,
    configs: BTreeMap<String, String>,
}

/// Where the cluster metadata places each partition of `topic`: (leader, replicas, ISR),
/// by partition.
fn placement(state: &BrokerState, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>, Vec<i32>)> {
    state.cluster.view.read(|image| {
        image
            .topic_by_name(topic)
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|(&p, r)| (p, (r.leader, r.replicas.clone(), r.isr.clone())))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The topic as this broker sees it: its replication factor from the metadata, its size
/// and records over the replicas this broker holds.
fn summary(state: &BrokerState, t: &Topic) -> TopicSummary {
    let replication_factor = placement(state, &t.name)
        .values()
        .map(|(_, replicas, _)| replicas.len())
        .max()
        .map_or(1, |n| n as i32);
    let hosted = || t.partitions.iter().filter(|l| l.is_hosted());
    TopicSummary {
        name: t.name.clone(),
        topic_id: t.id.to_string(),
        internal: crate::is_internal_topic(&t.name),
        partition_count: t.partitions.len(),
        replication_factor,
        size_bytes: hosted().map(|l| l.size_bytes()).sum(),
        messages: hosted()
            .map(|l| l.high_watermark() - l.log_start_offset())
            .sum(),
        cleanup_policy: t.config.get("cleanup.policy").unwrap_or_default(),
    }
}

fn partitions(state: &BrokerState, t: &Topic) -> Vec<PartitionInfo> {
    let node = state.config.node_id;
    let placed = placement(state, &t.name);
    t.partitions
        .iter()
        .enumerate()
        .map(|(p, log)| {
            // A log the metadata has not placed yet (a moment after its creation) is this
            // broker's alone.
            let (leader, replicas, isr) = placed
                .get(&(p as i32))
                .cloned()
                .unwrap_or_else(|| (node, vec![node], vec![node]));
            let hosted = log.is_hosted();
            let here = |v| hosted.then_some(v);
            PartitionInfo {
                partition: p,
                leader,
                replicas,
                isr,
                hosted,
                log_start_offset: here(log.log_start_offset()),
                high_watermark: here(log.high_watermark()),
                last_stable_offset: here(log.last_stable_offset()),
                size_bytes: hosted.then(|| log.size_bytes()),
                segments: hosted.then(|| log.segment_count()),
            }
        })
        .collect()
}

fn detail(state: &BrokerState, t: &Topic) -> TopicDetail {
    TopicDetail {
        summary: summary(state, t),
        partitions: partitions(state, t),
        configs: TOPIC_CONFIG_NAMES
            .iter()
            .filter_map(|name| Some((name.to_string(), t.config.get(name)?)))
            .collect(),
    }
}

async fn list_topics(admin: Shared) -> ApiResult<Json<Vec<TopicSummary>>> {
    let state = admin.state()?;
    let mut topics: Vec<_> = state
        .replicas
        .topics()
        .iter()
        .map(|t| summary(state, t))
        .collect();
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

async fn create_topic(
    admin: Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let state = admin.state()?.clone();
    let new: NewTopic = json_body(&headers, body)?;
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
    let created = crate::handlers::admin::create_topics(state.clone(), request).await;
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
    let deleted = crate::handlers::admin::delete_topics(state.clone(), request).await;
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<ConfigEntry>>> {
    let Path(name) = name?;
    let state = admin.state()?.clone();
    topic(&state, &name)?;
    if crate::is_internal_topic(&name) {
        return Err(internal_topic(&name));
    }
    let changes: BTreeMap<String, Option<String>> = json_body(&headers, body)?;
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
    let altered =
        crate::handlers::alter_configs::incremental_alter_configs(state.clone(), request).await;
    if let Some(r) = altered.responses.first().filter(|r| r.error_code != 0) {
        let message = r.error_message.as_ref().map(|m| m.to_string());
        return Err(kafka_error(r.error_code, message));
    }
    let t = topic(&state, &name)?;
    Ok(Json(config_entries(&t)))
}

// -- groups ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct Assignment {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize)]
struct MemberInfo {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    assignments: Vec<Assignment>,
}

#[derive(Serialize)]
struct GroupDetail {
    group_id: String,
    state: &'static str,
    protocol_type: String,
    protocol: String,
    lag: i64,
    members: Vec<MemberInfo>,
    offsets: Vec<OffsetLag>,
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
    let state = admin.state()?.clone();
    let lags = off_the_runtime(move || state.groups.lags(&state.replicas)).await?;
    Ok(Json(
        lags.into_iter()
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
) -> ApiResult<Json<GroupDetail>> {
    let Path(group_id) = group_id?;
    let state = admin.state()?.clone();
    let unknown = || ApiError::not_found(format!("unknown group {group_id}"));
    let wanted = group_id.clone();
    let found = off_the_runtime(move || {
        let lag = state
            .groups
            .lags_of(&state.replicas, Some(&wanted))
            .into_iter()
            .next()?;
        let described = state.groups.read(|c| c.describe_group(&wanted));
        Some((lag, described))
    })
    .await?;
    let (lag, described) = found.ok_or_else(unknown)?;
    let consumer = lag.protocol_type == "consumer";
    let members = described
        .members
        .into_iter()
        .map(|m| MemberInfo {
            // Client bytes: the parser bounds every count by the bytes left.
            assignments: consumer
                .then(|| sluice_group::subscription::assigned_partitions(&m.assignment))
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| Assignment { topic, partitions })
                .collect(),
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
        })
        .collect();
    Ok(Json(GroupDetail {
        group_id: lag.group_id,
        state: lag.state,
        protocol_type: lag.protocol_type,
        protocol: described.protocol_name,
        lag: lag.lag,
        members,
        offsets: lag.offsets,
    }))
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
        .replicas
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
        groups: state
            .groups
            .lags(&state.replicas)
            .into_iter()
            .map(|g| GroupStats {
                group_id: g.group_id,
                lag: g.lag,
            })
            .collect(),
    }
}

/// A snapshot taken on a blocking thread (it takes log and coordinator locks).
async fn snapshot_off_the_runtime(admin: Arc<Admin>, state: Arc<BrokerState>) -> ApiResult<Stats> {
    off_the_runtime(move || snapshot(&admin, &state)).await
}

async fn stats(admin: Shared) -> ApiResult<Json<Stats>> {
    let state = admin.state()?.clone();
    Ok(Json(
        snapshot_off_the_runtime(admin.0.clone(), state).await?,
    ))
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
    let permit = admin
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_requests",
            message: format!("at most {MAX_STREAMS} streams at once"),
        })?;
    let admin = admin.0.clone();
    let period = Duration::from_millis(interval as u64);
    let shutdown = admin.shutdown.clone();
    // One event at once, then one per period, until the client goes (dropping the stream
    // and its permit) or the broker stops.
    let events = futures_util::stream::unfold(
        (admin, state, shutdown, permit, true),
        move |(admin, state, mut shutdown, permit, first)| async move {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                }
            }
            if *shutdown.borrow() {
                return None;
            }
            let stats = snapshot_off_the_runtime(admin.clone(), state.clone())
                .await
                .ok()?;
            let data = serde_json::to_string(&stats).unwrap_or_default();
            let event = Event::default().event("stats").data(data);
            Some((
                Ok::<_, Infallible>(event),
                (admin, state, shutdown, permit, false),
            ))
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
