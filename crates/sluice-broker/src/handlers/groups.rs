//! The group APIs: translate between `kafka-protocol` types (per version) and the
//! coordinator's, and wait where the coordinator parks a request or an offset commit waits
//! for its fsync.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_group::{
    codes, CommitOffset, CommitRequest, Committed, JoinRequest, JoinResponse, SyncRequest,
    SyncResponse,
};

use super::{coordinator_partition, ready, respond, str_bytes, CoordinatorKind, Dispatched};
use crate::groups::{offsets_topic, Reply};
use crate::BrokerState;
use sluice_partition::{StorageError, NO_LEADER};
use sluice_protocol::ErrorResponse;

const LOAD_IN_PROGRESS: i16 = codes::COORDINATOR_LOAD_IN_PROGRESS;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn opt_str(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

/// Kafka's form of a client address in group descriptions.
fn client_host(peer: SocketAddr) -> String {
    format!("/{}", peer.ip())
}

pub(crate) fn find_coordinator(
    state: &Arc<BrokerState>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let (host, port) = state.advertised.clone();
    let error = if req.key_type == 1 {
        // Transactions: this node coordinates every transactional id.
        if !state.txns.is_loaded() {
            ResponseError::CoordinatorNotAvailable.code()
        } else {
            let partitions = state.txns.read(|c| c.config().state_partitions);
            match crate::txn::txn_topic(state, partitions) {
                Ok(_) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the transaction topic");
                    ResponseError::CoordinatorNotAvailable.code()
                }
            }
        }
    } else if req.key_type != 0 {
        ResponseError::InvalidRequest.code()
    } else if !state.groups.is_loaded() {
        ResponseError::CoordinatorNotAvailable.code()
    } else {
        let partitions = state.groups.read(|c| c.config().offsets_topic_partitions);
        match offsets_topic(state, partitions) {
            Ok(_) => 0,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the offsets topic");
                ResponseError::CoordinatorNotAvailable.code()
            }
        }
    };
    let kind = if req.key_type == 1 {
        CoordinatorKind::Transaction
    } else {
        CoordinatorKind::Group
    };
    // Each key's coordinator: the leader of the partition holding its state.
    let locate = |key: &str| -> (i16, i32, String, i32) {
        if error != 0 {
            return (error, -1, String::new(), -1);
        }
        let leader = coordinator_partition(state, kind, key).map_or(NO_LEADER, |p| p.leader());
        if leader == state.config.node_id {
            return (0, leader, host.clone(), i32::from(port));
        }
        let endpoint = state.cluster.view.read(|image| {
            image
                .broker(leader)
                .filter(|b| !b.fenced)
                .and_then(|b| b.endpoints.first())
                .map(|e| (e.host.clone(), i32::from(e.port)))
        });
        match endpoint {
            Some((h, p)) => (0, leader, h, p),
            None => (
                ResponseError::CoordinatorNotAvailable.code(),
                -1,
                String::new(),
                -1,
            ),
        }
    };
    if version >= 4 {
        let coordinators = keys
            .into_iter()
            .map(|key| {
                let (error, node, host, port) = locate(key.as_str());
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(&host))
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (error, node, host, port) = locate(keys.first().map_or("", |k| k.as_str()));
    // Kafka's v1-v3 answer names the error, "NONE" included.
    let message = (version >= 1 && error == 0).then(|| str_bytes("NONE"));
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_error_message(message)
        .with_node_id(BrokerId(node))
        .with_host(str_bytes(&host))
        .with_port(port)
}

fn join_response(r: JoinResponse, version: i16) -> JoinGroupResponse {
    // Before v7 the protocol name is not nullable; Kafka sends "" there.
    let protocol_name = match r.protocol_name {
        Some(p) => Some(str_bytes(&p)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation_id)
        .with_protocol_type(opt_str(&r.protocol_type))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&r.leader))
        .with_skip_assignment(r.skip_assignment && version >= 9)
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(opt_str(&m.group_instance_id))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub(crate) fn join_group(
    state: &Arc<BrokerState>,
    req: JoinGroupRequest,
    version: i16,
    corr: i32,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> Dispatched {
    let api = ApiKey::JoinGroup;
    if !state.groups.is_loaded() {
        let r = JoinResponse {
            error: LOAD_IN_PROGRESS,
            generation_id: -1,
            member_id: req.member_id.to_string(),
            ..JoinResponse::default()
        };
        return ready(api, version, corr, join_response(r, version));
    }
    let request = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        client_id: client_id.unwrap_or_default().to_string(),
        client_host: client_host(peer),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let member_id = request.member_id.clone();
    match state
        .groups
        .join(state, |c, waiter, now| c.join_group(request, waiter, now))
    {
        Reply::Now(r) => ready(api, version, corr, join_response(r, version)),
        Reply::Later(rx) => respond(api, version, corr, async move {
            let r = rx.await.unwrap_or_else(|_| JoinResponse {
                error: codes::COORDINATOR_NOT_AVAILABLE,
                generation_id: -1,
                member_id,
                ..JoinResponse::default()
            });
            join_response(r, version)
        }),
    }
}

fn sync_response(r: SyncResponse) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_protocol_type(opt_str(&r.protocol_type))
        .with_protocol_name(opt_str(&r.protocol_name))
        .with_assignment(r.assignment)
}

pub(crate) fn sync_group(
    state: &Arc<BrokerState>,
    req: SyncGroupRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::SyncGroup;
    if !state.groups.is_loaded() {
        // As Kafka: the rebalance state was lost with the restart, so the member must rejoin;
        // older clients do not expect COORDINATOR_LOAD_IN_PROGRESS here.
        let r = SyncResponse {
            error: codes::REBALANCE_IN_PROGRESS,
            ..SyncResponse::default()
        };
        return ready(api, version, corr, sync_response(r));
    }
    let request = SyncRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        generation_id: req.generation_id,
        group_instance_id: opt(&req.group_instance_id),
        protocol_type: opt(&req.protocol_type),
        protocol_name: opt(&req.protocol_name),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    match state
        .groups
        .sync(state, |c, waiter, now| c.sync_group(request, waiter, now))
    {
        Reply::Now(r) => ready(api, version, corr, sync_response(r)),
        Reply::Later(rx) => respond(api, version, corr, async move {
            let r = rx.await.unwrap_or_else(|_| SyncResponse {
                error: codes::COORDINATOR_NOT_AVAILABLE,
                ..SyncResponse::default()
            });
            sync_response(r)
        }),
    }
}

pub(crate) fn heartbeat(state: &Arc<BrokerState>, req: HeartbeatRequest) -> HeartbeatResponse {
    if !state.groups.is_loaded() {
        // As Kafka: answered blindly while loading, for clients that do not expect an error.
        return HeartbeatResponse::default();
    }
    let instance = opt(&req.group_instance_id);
    let (error, _) = state.groups.call(state, |c, now| {
        c.heartbeat(
            req.group_id.as_str(),
            req.member_id.as_str(),
            instance.as_deref(),
            req.generation_id,
            now,
        )
    });
    HeartbeatResponse::default().with_error_code(error)
}

pub(crate) fn leave_group(
    state: &Arc<BrokerState>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    if !state.groups.is_loaded() {
        return LeaveGroupResponse::default().with_error_code(LOAD_IN_PROGRESS);
    }
    let ((top, errors), _) = state.groups.call(state, |c, now| {
        c.leave_group(req.group_id.as_str(), &members, now)
    });
    if version < 3 {
        // One member, whose error is the response's.
        let error = if top != 0 { top } else { errors[0] };
        return LeaveGroupResponse::default().with_error_code(error);
    }
    let members = members
        .into_iter()
        .zip(errors)
        .map(|((member_id, instance), error)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(opt_str(&instance))
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(top)
        .with_members(members)
}

/// An OffsetCommit answer echoing the request's partitions with `errors`, in order.
pub(crate) fn offset_commit_answer(
    req: &OffsetCommitRequest,
    errors: &mut dyn Iterator<Item = i16>,
) -> OffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(errors.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub(crate) fn offset_commit(
    state: &Arc<BrokerState>,
    req: OffsetCommitRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::OffsetCommit;
    if !state.groups.is_loaded() {
        let body = req.error_response(version, LOAD_IN_PROGRESS);
        return ready(api, version, corr, body);
    }
    // Partitions of unknown topics are refused before the coordinator sees them, as Kafka
    // does; the rest are committed together.
    let mut unknown = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let topic = state.replicas.topic(t.name.as_str());
        for p in &t.partitions {
            let known = topic.as_ref().is_some_and(|topic| {
                usize::try_from(p.partition_index).is_ok_and(|i| i < topic.partitions.len())
            });
            unknown.push(!known);
            if known {
                offsets.push(CommitOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: opt(&p.committed_metadata),
                });
            }
        }
    }
    let commit = CommitRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: opt(&req.group_instance_id),
        retention_time_ms: if (2..=4).contains(&version) {
            req.retention_time_ms
        } else {
            -1
        },
        offsets,
    };
    let (result, durable) = state
        .groups
        .call(state, |c, now| c.commit_offsets(commit, now));
    respond(api, version, corr, async move {
        let mut committed = match result {
            Ok(errors) => errors,
            Err(e) => vec![e; unknown.len()],
        };
        if let Err(e) = durable.wait().await {
            tracing::warn!(error = %e, "offset commit not durable");
            let code = match e {
                StorageError::MessageTooLarge { .. } => codes::INVALID_COMMIT_OFFSET_SIZE,
                // The group's partition moved to another leader: the client finds it.
                StorageError::NotLeader => ResponseError::NotCoordinator.code(),
                _ => codes::COORDINATOR_NOT_AVAILABLE,
            };
            for c in committed.iter_mut().filter(|c| **c == 0) {
                *c = code;
            }
        }
        let mut committed = committed.into_iter();
        let mut errors = unknown.into_iter().map(|unknown| {
            if unknown {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                committed.next().unwrap_or(0)
            }
        });
        offset_commit_answer(&req, &mut errors)
    })
}

type Partitions = Vec<(String, Vec<i32>)>;
/// Committed offsets of one topic, by partition.
type TopicOffsets = (String, Vec<(i32, Fetched)>);
/// One partition's answer: its committed offset (if any), or an error for that partition.
type Fetched = Result<Option<Committed>, i16>;

/// UNSTABLE_OFFSET_COMMIT: a transaction that has not ended holds an offset commit.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// A group's committed offsets. With `require_stable` (KIP-447, sent by read_committed
/// consumers), a partition with a transactional commit pending is answered
/// UNSTABLE_OFFSET_COMMIT on its own, as Kafka does, and the client retries it.
fn fetch_group(
    state: &Arc<BrokerState>,
    group: &str,
    partitions: Option<Partitions>,
    require_stable: bool,
) -> Result<Vec<(String, i32, Fetched)>, i16> {
    if !state.groups.is_loaded() {
        return Err(LOAD_IN_PROGRESS);
    }
    Ok(state.groups.read(|c| {
        c.fetch_offsets(group, partitions.as_deref())
            .into_iter()
            .map(|(t, p, committed)| {
                let unstable = require_stable && c.has_pending_txn_offset(group, &t, p);
                let fetched = if unstable {
                    Err(UNSTABLE_OFFSET_COMMIT)
                } else {
                    Ok(committed)
                };
                (t, p, fetched)
            })
            .collect()
    }))
}

/// Groups consecutive entries of one topic.
fn by_topic(offsets: Vec<(String, i32, Fetched)>) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for (topic, p, c) in offsets {
        match out.last_mut() {
            Some((t, parts)) if *t == topic => parts.push((p, c)),
            _ => out.push((topic, vec![(p, c)])),
        }
    }
    out
}

fn partition_fields(c: &Fetched) -> (i64, i32, StrBytes) {
    match c {
        Ok(Some(c)) => (c.offset, c.leader_epoch, str_bytes(&c.metadata)),
        _ => (-1, -1, StrBytes::default()),
    }
}

/// The per-topic answers of OffsetFetch, in the types of either form (`topics` up to v7,
/// `groups[].topics` from v8), which differ only in their names.
macro_rules! fetched_topics {
    ($topic:ty, $partition:ty, $offsets:expr, $error:expr) => {
        by_topic($offsets)
            .into_iter()
            .map(|(topic, parts)| {
                <$topic>::default()
                    .with_name(TopicName(str_bytes(&topic)))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|(p, c)| {
                                let (offset, epoch, meta) = partition_fields(c);
                                <$partition>::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(meta))
                                    .with_error_code(c.as_ref().err().copied().unwrap_or($error))
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

/// The partitions one group of an OffsetFetch v8+ request names (`None`: all of them).
fn group_partitions(
    topics: Option<Vec<offset_fetch_request::OffsetFetchRequestTopics>>,
) -> Option<Partitions> {
    topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    })
}

fn requested(topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, i32, Fetched)> {
    topics
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, Ok(None))))
        .collect()
}

/// An OffsetFetch answer with `error` for every group and every partition it names.
pub(crate) fn offset_fetch_failed(
    req: OffsetFetchRequest,
    version: i16,
    error: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let partitions = group_partitions(g.topics);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(error)
                    .with_topics(fetched_topics!(
                        OffsetFetchResponseTopics,
                        OffsetFetchResponsePartitions,
                        requested(partitions),
                        error
                    ))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let partitions = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let response = OffsetFetchResponse::default().with_topics(fetched_topics!(
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition,
        requested(partitions),
        error
    ));
    // v1 has no top-level error: the partitions carry it.
    if version >= 2 {
        response.with_error_code(error)
    } else {
        response
    }
}

pub(crate) fn offset_fetch(
    state: &Arc<BrokerState>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let partitions = group_partitions(g.topics);
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(state, g.group_id.as_str(), partitions, req.require_stable) {
                    Err(e) => out.with_error_code(e),
                    Ok(offsets) => out.with_topics(fetched_topics!(
                        OffsetFetchResponseTopics,
                        OffsetFetchResponsePartitions,
                        offsets,
                        0
                    )),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let partitions: Option<Partitions> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    match fetch_group(state, req.group_id.as_str(), partitions, req.require_stable) {
        Err(e) if version < 2 => offset_fetch_failed(req, version, e),
        Err(e) => OffsetFetchResponse::default().with_error_code(e),
        Ok(offsets) => OffsetFetchResponse::default().with_topics(fetched_topics!(
            OffsetFetchResponseTopic,
            OffsetFetchResponsePartition,
            offsets,
            0
        )),
    }
}

/// The group type of every group (ListGroups v5).
const CLASSIC: &str = "classic";

pub(crate) fn list_groups(state: &Arc<BrokerState>, req: ListGroupsRequest) -> ListGroupsResponse {
    if !state.groups.is_loaded() {
        return ListGroupsResponse::default().with_error_code(LOAD_IN_PROGRESS);
    }
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    // Every group here is a classic one (KIP-848's consumer and KIP-932's share groups are
    // not offered): a type filter (v5) without "classic" matches none.
    if !req.types_filter.is_empty()
        && !req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(CLASSIC))
    {
        return ListGroupsResponse::default();
    }
    let groups = state
        .groups
        .read(|c| c.list_groups(&states))
        .into_iter()
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_group_state(str_bytes(g.state.name()))
                .with_group_type(str_bytes(CLASSIC))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups leaves authorized operations out unless asked; Sluice has no ACLs, so when
/// asked it reports every group operation as allowed (Kafka's bit set for READ, DESCRIBE,
/// DELETE).
pub(crate) fn describe_groups(
    state: &Arc<BrokerState>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let out = DescribedGroup::default().with_group_id(id.clone());
            if !state.groups.is_loaded() {
                return out.with_error_code(LOAD_IN_PROGRESS);
            }
            let d = state.groups.read(|c| c.describe_group(id.as_str()));
            // KIP-1043: from v6 a group that does not exist is an error, not a Dead group.
            if version >= 6 && d.state == sluice_group::GroupState::Dead && d.members.is_empty() {
                return out
                    .with_group_state(str_bytes(d.state.name()))
                    .with_error_code(codes::GROUP_ID_NOT_FOUND)
                    .with_error_message(Some(str_bytes(&format!(
                        "Group {} not found.",
                        id.as_str()
                    ))));
            }
            let ops = if req.include_authorized_operations {
                super::describe::GROUP_OPERATIONS
            } else {
                super::describe::OPERATIONS_NOT_ASKED
            };
            out.with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol_name))
                .with_authorized_operations(ops)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(opt_str(&m.group_instance_id))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(crate) fn delete_groups(
    state: &Arc<BrokerState>,
    req: DeleteGroupsRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let names: Vec<String> = req.groups_names.iter().map(|g| g.to_string()).collect();
    let (errors, durable) = if state.groups.is_loaded() {
        let (errors, durable) = state
            .groups
            .call(state, |c, now| c.delete_groups(&names, now));
        (errors, Some(durable))
    } else {
        (vec![LOAD_IN_PROGRESS; names.len()], None)
    };
    respond(ApiKey::DeleteGroups, version, corr, async move {
        let failed = match durable {
            Some(d) => d.wait().await.is_err(),
            None => false,
        };
        let results = req
            .groups_names
            .into_iter()
            .zip(errors)
            .map(|(g, e)| {
                let e = if failed && e == 0 {
                    codes::COORDINATOR_NOT_AVAILABLE
                } else {
                    e
                };
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(e)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    })
}

pub(crate) fn offset_delete(
    state: &Arc<BrokerState>,
    req: OffsetDeleteRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let ((top, errors), durable) = if state.groups.is_loaded() {
        let (r, d) = state.groups.call(state, |c, now| {
            c.delete_offsets(req.group_id.as_str(), &partitions, now)
        });
        (r, Some(d))
    } else {
        ((LOAD_IN_PROGRESS, Vec::new()), None)
    };
    respond(ApiKey::OffsetDelete, version, corr, async move {
        let mut top = top;
        if let Some(d) = durable {
            if d.wait().await.is_err() && top == 0 {
                top = codes::COORDINATOR_NOT_AVAILABLE;
            }
        }
        if top != 0 {
            return OffsetDeleteResponse::default().with_error_code(top);
        }
        offset_delete_answer(req, &mut errors.into_iter())
    })
}

/// An OffsetDelete answer echoing the request's partitions with `errors`, in order.
pub(crate) fn offset_delete_answer(
    req: OffsetDeleteRequest,
    errors: &mut dyn Iterator<Item = i16>,
) -> OffsetDeleteResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(errors.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
