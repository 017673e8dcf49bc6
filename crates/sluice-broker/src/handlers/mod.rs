//! Request dispatch. Each handler does its state-changing work synchronously (so requests on
//! one connection take effect in order) and returns a future for what it waits on.

pub(crate) mod admin;
pub(crate) mod alter_configs;
mod delete_records;
mod describe;
mod error_codes;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod txn;
mod unsupported;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use sluice_protocol::{
    encode_response, parse_request_header, DecodeError, Request, SUPPORTED_APIS,
};

use crate::server::{Answer, OutChunk, Response, ResponseResult};
use crate::BrokerState;
use error_codes::ErrorCodes;
use sluice_protocol::fetch_response::Chunk;

/// What the connection should do with a request: send the response (computed now, or by a
/// future), or close (the string says why, for the one log line; empty when the reason was
/// logged already).
pub(crate) type Dispatched = Result<Option<Response>, String>;

/// The most (client id, API) pairs remembered for logging unsupported versions once each;
/// past it, such lines are paced instead.
const VERSION_LOG_PAIRS_MAX: usize = 4096;

/// Logs a request at a version Sluice does not offer once per client id and API, not once
/// per request (an old client retrying would otherwise write a line every few milliseconds).
#[derive(Debug)]
pub(crate) struct VersionLog {
    seen: std::sync::Mutex<std::collections::HashSet<(String, i16)>>,
    overflow: sluice_partition::EveryInterval,
}

impl Default for VersionLog {
    fn default() -> Self {
        Self {
            seen: Default::default(),
            overflow: sluice_partition::EveryInterval::new(std::time::Duration::from_secs(60)),
        }
    }
}

impl VersionLog {
    /// Whether this client's request for `api` should be logged.
    fn first(&self, client: &str, api: ApiKey) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (client.to_string(), api as i16);
        if seen.contains(&key) {
            return false;
        }
        if seen.len() >= VERSION_LOG_PAIRS_MAX {
            return self.overflow.due().is_some();
        }
        seen.insert(key)
    }
}

pub(crate) fn dispatch(state: &Arc<BrokerState>, frame: Bytes, peer: SocketAddr) -> Dispatched {
    let (header, body) = match parse_request_header(&frame) {
        Ok(parsed) => parsed,
        Err(e) => {
            // An ApiVersions request from a newer client is answered whatever follows its
            // fixed header fields: the client needs our ranges to pick a version at all.
            if let Some(corr) = unsupported_api_versions(&frame) {
                let body = api_versions(ResponseError::UnsupportedVersion.code());
                return ready(ApiKey::ApiVersions, 0, corr, body);
            }
            return Err(e.to_string());
        }
    };
    let corr = header.correlation_id;
    let version = header.api_version;
    let budget = state.config.socket_request_max_bytes;
    let request = match Request::decode(&header, body.clone(), budget) {
        Ok(request) => request,
        Err(DecodeError::UnsupportedVersion {
            api: ApiKey::ApiVersions,
            version,
        }) => {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the client
            // can retry with a version we support.
            tracing::debug!(version, "ApiVersions version unsupported; answering v0");
            let body = api_versions(ResponseError::UnsupportedVersion.code());
            return ready(ApiKey::ApiVersions, 0, corr, body);
        }
        Err(DecodeError::UnsupportedVersion { api, version }) => {
            // Answer with UNSUPPORTED_VERSION where the codec can still read the request;
            // otherwise there is no format to answer in, and the connection closes.
            let client = header.client_id.as_deref().unwrap_or("-");
            let log = state.version_log.first(client, api);
            if log {
                tracing::info!(
                    ?api,
                    version,
                    client,
                    "request at an unsupported version (logged once per client and API)"
                );
            }
            return match Request::decode_unsupported(&header, body, budget) {
                Ok(request) => unsupported::respond(request, version, corr),
                Err(e) if log => Err(format!("{e} (client_id {client}, correlation_id {corr})")),
                Err(_) => Err(String::new()),
            };
        }
        Err(e) => {
            let client = header.client_id.as_deref().unwrap_or("-");
            return Err(format!("{e} (client_id {client}, correlation_id {corr})"));
        }
    };
    let api = header.api().expect("decoded requests have a known key");
    match request {
        Request::ApiVersions(_) => ready(api, version, corr, api_versions(0)),
        Request::Metadata(r) => ready(api, version, corr, metadata::handle(state, r, version)),
        Request::Produce(r) => produce::handle(state, r, version, corr),
        Request::Fetch(r) => {
            let response = fetch::handle(state.clone(), r, version);
            Ok(Some(Response::Later(Box::pin(async move {
                // Fetch counts its partition errors itself; its traffic is counted as the
                // records are written.
                let chunks = response
                    .await
                    .encode(version, corr)
                    .into_iter()
                    .map(|chunk| match chunk {
                        Chunk::Encoded(bytes) => OutChunk::Bytes(bytes),
                        Chunk::Records(fetch::TopicRecords { records, topic }) => {
                            OutChunk::Records { records, topic }
                        }
                    })
                    .collect();
                Ok(Some(Answer {
                    chunks,
                    errors: Vec::new(),
                }))
            }))))
        }
        Request::ListOffsets(r) => respond(
            api,
            version,
            corr,
            list_offsets::handle(state.clone(), r, version),
        ),
        Request::CreateTopics(r) => ready(api, version, corr, admin::create_topics(state, r)),
        Request::DeleteTopics(r) => ready(api, version, corr, admin::delete_topics(state, r)),
        Request::DescribeConfigs(r) => ready(
            api,
            version,
            corr,
            admin::describe_configs(state, r, version),
        ),
        Request::CreatePartitions(r) => {
            ready(api, version, corr, admin::create_partitions(state, r))
        }
        Request::InitProducerId(r) => txn::init_producer_id(state, r, version, corr),
        Request::FindCoordinator(r) => ready(
            api,
            version,
            corr,
            groups::find_coordinator(state, r, version),
        ),
        Request::JoinGroup(r) => {
            let client = header.client_id.as_deref();
            groups::join_group(state, r, version, corr, client, peer)
        }
        Request::SyncGroup(r) => groups::sync_group(state, r, version, corr),
        Request::Heartbeat(r) => ready(api, version, corr, groups::heartbeat(state, r)),
        Request::LeaveGroup(r) => ready(api, version, corr, groups::leave_group(state, r, version)),
        Request::OffsetCommit(r) => groups::offset_commit(state, r, version, corr),
        Request::OffsetFetch(r) => {
            ready(api, version, corr, groups::offset_fetch(state, r, version))
        }
        Request::ListGroups(r) => ready(api, version, corr, groups::list_groups(state, r)),
        Request::DescribeGroups(r) => ready(
            api,
            version,
            corr,
            groups::describe_groups(state, r, version),
        ),
        Request::DeleteGroups(r) => groups::delete_groups(state, r, version, corr),
        Request::OffsetDelete(r) => groups::offset_delete(state, r, version, corr),
        Request::DeleteRecords(r) => ready(api, version, corr, delete_records::handle(state, r)),
        Request::AlterConfigs(r) => {
            ready(api, version, corr, alter_configs::alter_configs(state, r))
        }
        Request::IncrementalAlterConfigs(r) => ready(
            api,
            version,
            corr,
            alter_configs::incremental_alter_configs(state, r),
        ),
        Request::AddPartitionsToTxn(r) => txn::add_partitions(state, r, version, corr),
        Request::AddOffsetsToTxn(r) => txn::add_offsets(state, r, version, corr),
        Request::TxnOffsetCommit(r) => txn::txn_offset_commit(state, r, version, corr),
        Request::EndTxn(r) => txn::end_txn(state, r, version, corr),
        Request::DescribeTransactions(r) => {
            ready(api, version, corr, txn::describe_transactions(state, r))
        }
        Request::ListTransactions(r) => ready(api, version, corr, txn::list_transactions(state, r)),
        Request::DescribeCluster(r) => {
            ready(api, version, corr, describe::describe_cluster(state, r))
        }
        Request::DescribeTopicPartitions(r) => ready(
            api,
            version,
            corr,
            describe::describe_topic_partitions(state, r),
        ),
        Request::DescribeLogDirs(r) => {
            let body = tokio::task::block_in_place(|| describe::describe_log_dirs(state, r));
            ready(api, version, corr, body)
        }
        Request::AlterReplicaLogDirs(r) => ready(
            api,
            version,
            corr,
            describe::alter_replica_log_dirs(state, r),
        ),
        Request::DescribeProducers(r) => {
            ready(api, version, corr, describe::describe_producers(state, r))
        }
        Request::ListConfigResources(r) => ready(
            api,
            version,
            corr,
            describe::list_config_resources(state, r, version),
        ),
        Request::OffsetForLeaderEpoch(r) => ready(
            api,
            version,
            corr,
            describe::offset_for_leader_epoch(state, r),
        ),
    }
}

/// The correlation id of an ApiVersions request at a version above ours, if `frame` is one.
fn unsupported_api_versions(frame: &[u8]) -> Option<i32> {
    let fixed = frame.get(..sluice_protocol::REQUEST_HEADER_MIN_SIZE)?;
    let key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let (_, max) = sluice_protocol::supported_versions(ApiKey::ApiVersions)?;
    (key == ApiKey::ApiVersions as i16 && version > max)
        .then(|| i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]))
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
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

/// Encodes a response. A failure is a bug of ours (a field set that the client's version
/// lacks), not client input; the connection closes rather than sending garbage.
fn encode<R: Encodable + ErrorCodes>(
    api: ApiKey,
    version: i16,
    corr: i32,
    body: &R,
) -> ResponseResult {
    let mut errors = Vec::new();
    body.error_codes(&mut errors);
    encode_response(api, version, corr, body)
        .map(|bytes| {
            Some(Answer {
                chunks: vec![OutChunk::Bytes(bytes)],
                errors,
            })
        })
        .map_err(|e| format!("cannot encode {api:?} v{version} response: {e}"))
}

/// A response computed synchronously.
pub(crate) fn ready<R: Encodable + ErrorCodes>(
    api: ApiKey,
    version: i16,
    corr: i32,
    body: R,
) -> Dispatched {
    let answer = encode(api, version, corr, &body)?;
    Ok(Some(Response::Now(Ok(answer))))
}

/// A response that is computed by a future.
pub(crate) fn respond<R, F>(api: ApiKey, version: i16, corr: i32, body: F) -> Dispatched
where
    R: Encodable + ErrorCodes + Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    Ok(Some(Response::Later(Box::pin(async move {
        encode(api, version, corr, &body.await)
    }))))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
