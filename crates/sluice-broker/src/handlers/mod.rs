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
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use sluice_protocol::{
    api_versions_response, encode_response, parse_request_header, DecodeError, Request,
};

use crate::response::{Answer, OutChunk, Response, ResponseResult};
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
                let body = api_versions_response(ResponseError::UnsupportedVersion.code());
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
            let body = api_versions_response(ResponseError::UnsupportedVersion.code());
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
                Ok(request) => unsupported::respond(&request, version, corr),
                Err(e) if log => Err(format!("{e} (client_id {client}, correlation_id {corr})")),
                Err(_) => Err(String::new()),
            };
        }
        Err(e) => {
            let client = header.client_id.as_deref().unwrap_or("-");
            return Err(format!("{e} (client_id {client}, correlation_id {corr})"));
        }
    };
    if let Some((kind, key)) = coordinator_key(&request, version) {
        if !coordinates(state, kind, key) {
            return unsupported::error_response(
                &request,
                version,
                corr,
                ResponseError::NotCoordinator.code(),
            );
        }
    }
    let call = Call {
        state,
        api: request.api(),
        version,
        corr,
        client_id: header.client_id.as_deref(),
        peer,
    };
    handle(&call, request)
}

/// Which coordinator a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CoordinatorKind {
    Group,
    Transaction,
}

/// The group id or transactional id a coordinator request names (the first, for the
/// requests that name several: clients send those to one coordinator at a time).
fn coordinator_key(request: &Request, version: i16) -> Option<(CoordinatorKind, &str)> {
    use CoordinatorKind::*;
    let key = match request {
        Request::JoinGroup(r) => (Group, r.group_id.as_str()),
        Request::SyncGroup(r) => (Group, r.group_id.as_str()),
        Request::Heartbeat(r) => (Group, r.group_id.as_str()),
        Request::LeaveGroup(r) => (Group, r.group_id.as_str()),
        Request::OffsetCommit(r) => (Group, r.group_id.as_str()),
        Request::OffsetDelete(r) => (Group, r.group_id.as_str()),
        Request::TxnOffsetCommit(r) => (Group, r.group_id.as_str()),
        Request::OffsetFetch(r) if version >= 8 => (Group, r.groups.first()?.group_id.as_str()),
        Request::OffsetFetch(r) => (Group, r.group_id.as_str()),
        Request::DescribeGroups(r) => (Group, r.groups.first()?.as_str()),
        Request::DeleteGroups(r) => (Group, r.groups_names.first()?.as_str()),
        Request::InitProducerId(r) => (Transaction, r.transactional_id.as_ref()?.as_str()),
        Request::AddOffsetsToTxn(r) => (Transaction, r.transactional_id.as_str()),
        Request::EndTxn(r) => (Transaction, r.transactional_id.as_str()),
        Request::AddPartitionsToTxn(r) if version >= 4 => (
            Transaction,
            r.transactions.first()?.transactional_id.as_str(),
        ),
        Request::AddPartitionsToTxn(r) => (Transaction, r.v3_and_below_transactional_id.as_str()),
        _ => return None,
    };
    Some(key)
}

/// The partition of the coordinator's topic that holds `key`'s state, and that topic's
/// name, if it exists yet.
pub(crate) fn coordinator_partition(
    state: &BrokerState,
    kind: CoordinatorKind,
    key: &str,
) -> Option<Arc<sluice_partition::Partition>> {
    let (name, configured) = match kind {
        CoordinatorKind::Group => (
            crate::groups::OFFSETS_TOPIC,
            state.config.groups.offsets_topic_partitions,
        ),
        CoordinatorKind::Transaction => (crate::txn::TXN_TOPIC, state.config.txn.state_partitions),
    };
    let topic = state.replicas.topic(name)?;
    let partitions = if topic.partitions.is_empty() {
        configured
    } else {
        topic.partitions.len() as i32
    };
    let index = match kind {
        CoordinatorKind::Group => sluice_group::partition_for(key, partitions),
        CoordinatorKind::Transaction => sluice_txn::partition_for(key, partitions),
    };
    topic.partition(index).cloned()
}

/// Whether this broker coordinates `key`: it leads the partition holding its state. Until
/// that topic exists (it is made on first use, by FindCoordinator) this broker answers.
pub(crate) fn coordinates(state: &BrokerState, kind: CoordinatorKind, key: &str) -> bool {
    match coordinator_partition(state, kind, key) {
        Some(p) => p.leader() == state.config.node_id,
        None => true,
    }
}

/// What a handler gets besides its request.
struct Call<'a> {
    state: &'a Arc<BrokerState>,
    api: ApiKey,
    version: i16,
    corr: i32,
    client_id: Option<&'a str>,
    peer: SocketAddr,
}

impl Call<'_> {
    /// Answers now with `body`.
    fn ready<R: Encodable + ErrorCodes>(&self, body: R) -> Dispatched {
        ready(self.api, self.version, self.corr, body)
    }

    /// Answers with what `body` computes.
    fn respond<R, F>(&self, body: F) -> Dispatched
    where
        R: Encodable + ErrorCodes + Send + 'static,
        F: Future<Output = R> + Send + 'static,
    {
        respond(self.api, self.version, self.corr, body)
    }
}

macro_rules! handler_dispatch {
    ($((
        $api:ident, $request:ident, $min:literal, $max:literal,
        $schema:ident, $flexible:expr, $handler:ident
    ))*) => {
        /// Runs the handler the API table names for the request's API.
        fn handle(call: &Call<'_>, request: Request) -> Dispatched {
            match request {
                $(Request::$api(r) => $handler(call, r),)*
            }
        }
    };
}
sluice_protocol::for_each_api!(handler_dispatch);

// The handlers the API table (`sluice_protocol::for_each_api!`) names, one per API, each
// calling into the module of its API family.

fn produce(c: &Call<'_>, r: ProduceRequest) -> Dispatched {
    produce::handle(c.state, r, c.version, c.corr)
}

fn fetch(c: &Call<'_>, r: FetchRequest) -> Dispatched {
    let (version, corr) = (c.version, c.corr);
    let response = fetch::handle(c.state.clone(), r, version);
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

fn list_offsets(c: &Call<'_>, r: ListOffsetsRequest) -> Dispatched {
    c.respond(list_offsets::handle(c.state.clone(), r, c.version))
}

fn metadata(c: &Call<'_>, r: MetadataRequest) -> Dispatched {
    c.ready(metadata::handle(c.state, r, c.version))
}

fn api_versions(c: &Call<'_>, _: ApiVersionsRequest) -> Dispatched {
    c.ready(api_versions_response(0))
}

fn create_topics(c: &Call<'_>, r: CreateTopicsRequest) -> Dispatched {
    c.respond(admin::create_topics(c.state.clone(), r))
}

fn delete_topics(c: &Call<'_>, r: DeleteTopicsRequest) -> Dispatched {
    c.respond(admin::delete_topics(c.state.clone(), r))
}

fn describe_configs(c: &Call<'_>, r: DescribeConfigsRequest) -> Dispatched {
    c.ready(admin::describe_configs(c.state, r, c.version))
}

fn create_partitions(c: &Call<'_>, r: CreatePartitionsRequest) -> Dispatched {
    c.respond(admin::create_partitions(c.state.clone(), r))
}

fn init_producer_id(c: &Call<'_>, r: InitProducerIdRequest) -> Dispatched {
    txn::init_producer_id(c.state, r, c.version, c.corr)
}

fn find_coordinator(c: &Call<'_>, r: FindCoordinatorRequest) -> Dispatched {
    c.ready(groups::find_coordinator(c.state, r, c.version))
}

fn join_group(c: &Call<'_>, r: JoinGroupRequest) -> Dispatched {
    groups::join_group(c.state, r, c.version, c.corr, c.client_id, c.peer)
}

fn sync_group(c: &Call<'_>, r: SyncGroupRequest) -> Dispatched {
    groups::sync_group(c.state, r, c.version, c.corr)
}

fn heartbeat(c: &Call<'_>, r: HeartbeatRequest) -> Dispatched {
    c.ready(groups::heartbeat(c.state, r))
}

fn leave_group(c: &Call<'_>, r: LeaveGroupRequest) -> Dispatched {
    c.ready(groups::leave_group(c.state, r, c.version))
}

fn offset_commit(c: &Call<'_>, r: OffsetCommitRequest) -> Dispatched {
    groups::offset_commit(c.state, r, c.version, c.corr)
}

fn offset_fetch(c: &Call<'_>, r: OffsetFetchRequest) -> Dispatched {
    c.ready(groups::offset_fetch(c.state, r, c.version))
}

fn list_groups(c: &Call<'_>, r: ListGroupsRequest) -> Dispatched {
    c.ready(groups::list_groups(c.state, r))
}

fn describe_groups(c: &Call<'_>, r: DescribeGroupsRequest) -> Dispatched {
    c.ready(groups::describe_groups(c.state, r, c.version))
}

fn delete_groups(c: &Call<'_>, r: DeleteGroupsRequest) -> Dispatched {
    groups::delete_groups(c.state, r, c.version, c.corr)
}

fn offset_delete(c: &Call<'_>, r: OffsetDeleteRequest) -> Dispatched {
    groups::offset_delete(c.state, r, c.version, c.corr)
}

fn delete_records(c: &Call<'_>, r: DeleteRecordsRequest) -> Dispatched {
    c.ready(delete_records::handle(c.state, r))
}

fn alter_configs(c: &Call<'_>, r: AlterConfigsRequest) -> Dispatched {
    c.respond(alter_configs::alter_configs(c.state.clone(), r))
}

fn incremental_alter_configs(c: &Call<'_>, r: IncrementalAlterConfigsRequest) -> Dispatched {
    c.respond(alter_configs::incremental_alter_configs(c.state.clone(), r))
}

fn add_partitions_to_txn(c: &Call<'_>, r: AddPartitionsToTxnRequest) -> Dispatched {
    txn::add_partitions(c.state, r, c.version, c.corr)
}

fn add_offsets_to_txn(c: &Call<'_>, r: AddOffsetsToTxnRequest) -> Dispatched {
    txn::add_offsets(c.state, r, c.version, c.corr)
}

fn end_txn(c: &Call<'_>, r: EndTxnRequest) -> Dispatched {
    txn::end_txn(c.state, r, c.version, c.corr)
}

fn write_txn_markers(c: &Call<'_>, r: WriteTxnMarkersRequest) -> Dispatched {
    txn::write_txn_markers(c.state, r, c.version, c.corr)
}

fn txn_offset_commit(c: &Call<'_>, r: TxnOffsetCommitRequest) -> Dispatched {
    txn::txn_offset_commit(c.state, r, c.version, c.corr)
}

fn describe_transactions(c: &Call<'_>, r: DescribeTransactionsRequest) -> Dispatched {
    c.ready(txn::describe_transactions(c.state, r))
}

fn list_transactions(c: &Call<'_>, r: ListTransactionsRequest) -> Dispatched {
    c.ready(txn::list_transactions(c.state, r))
}

fn describe_cluster(c: &Call<'_>, r: DescribeClusterRequest) -> Dispatched {
    c.ready(describe::describe_cluster(c.state, r))
}

fn describe_quorum(c: &Call<'_>, r: DescribeQuorumRequest) -> Dispatched {
    c.respond(describe::describe_quorum(c.state.clone(), r, c.version))
}

fn elect_leaders(c: &Call<'_>, r: ElectLeadersRequest) -> Dispatched {
    c.respond(admin::elect_leaders(c.state.clone(), r, c.version))
}

fn alter_partition_reassignments(
    c: &Call<'_>,
    r: AlterPartitionReassignmentsRequest,
) -> Dispatched {
    c.respond(admin::alter_partition_reassignments(
        c.state.clone(),
        r,
        c.version,
    ))
}

fn list_partition_reassignments(c: &Call<'_>, r: ListPartitionReassignmentsRequest) -> Dispatched {
    c.ready(admin::list_partition_reassignments(c.state, r))
}

fn describe_producers(c: &Call<'_>, r: DescribeProducersRequest) -> Dispatched {
    c.ready(describe::describe_producers(c.state, r))
}

fn describe_topic_partitions(c: &Call<'_>, r: DescribeTopicPartitionsRequest) -> Dispatched {
    c.ready(describe::describe_topic_partitions(c.state, r))
}

fn list_config_resources(c: &Call<'_>, r: ListConfigResourcesRequest) -> Dispatched {
    c.ready(describe::list_config_resources(c.state, r, c.version))
}

fn describe_log_dirs(c: &Call<'_>, r: DescribeLogDirsRequest) -> Dispatched {
    let body = tokio::task::block_in_place(|| describe::describe_log_dirs(c.state, r));
    c.ready(body)
}

fn alter_replica_log_dirs(c: &Call<'_>, r: AlterReplicaLogDirsRequest) -> Dispatched {
    c.ready(describe::alter_replica_log_dirs(c.state, r))
}

fn offset_for_leader_epoch(c: &Call<'_>, r: OffsetForLeaderEpochRequest) -> Dispatched {
    c.ready(describe::offset_for_leader_epoch(c.state, r))
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
