//! Transactions: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and DescribeTransactions / ListTransactions for
//! operators. Every state change is answered once its `__transaction_state` record is fsynced.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::ResponseError;
use sluice_group::{CommitOffset, TxnCommitRequest};
use sluice_txn::codes;

use super::{ready, respond, str_bytes, Dispatched};
use crate::errors::error_code;
use crate::groups::{Durable, OFFSETS_TOPIC};
use crate::txn::TXN_TOPIC;
use crate::BrokerState;

/// The longest EndTxn waits for its markers after the outcome is durable.
const END_TXN_COMPLETION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// PRODUCER_FENCED exists from these versions on (KIP-588); older clients are told
/// INVALID_PRODUCER_EPOCH, as Kafka does.
fn fenced_for(code: i16, version: i16, since: i16) -> i16 {
    if code == codes::PRODUCER_FENCED && version < since {
        codes::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// A transactional write outside the producer's transaction: INVALID_TXN_STATE for clients
/// that predate KIP-890's TRANSACTION_ABORTABLE (which Kafka answers from Produce v11 and
/// TxnOffsetCommit v4, the versions whose clients abort on it instead of failing).
pub(crate) fn abortable_for(code: i16, version: i16, since: i16) -> i16 {
    if code == codes::INVALID_TXN_STATE && version >= since {
        codes::TRANSACTION_ABORTABLE
    } else {
        code
    }
}

/// Checks the coordinator is loaded and its topic exists.
fn ready_to_change(state: &BrokerState) -> Result<(), i16> {
    if !state.txns.is_loaded() {
        return Err(codes::COORDINATOR_LOAD_IN_PROGRESS);
    }
    let partitions = state.txns.read(|c| c.config().state_partitions);
    crate::txn::txn_topic(state, partitions)
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot create {TXN_TOPIC}");
            codes::COORDINATOR_NOT_AVAILABLE
        })
}

/// The outcome of a change once its records are durable (or the append failed).
async fn settled<R>(result: Result<R, i16>, durable: Durable) -> Result<R, i16> {
    let value = result?;
    match durable.wait().await {
        Ok(()) => Ok(value),
        Err(sluice_partition::StorageError::NotLeader) => {
            Err(kafka_protocol::ResponseError::NotCoordinator.code())
        }
        Err(e) => {
            tracing::warn!(error = %e, "transaction state not durable");
            Err(codes::COORDINATOR_NOT_AVAILABLE)
        }
    }
}

pub(crate) fn init_producer_id(
    state: &Arc<BrokerState>,
    req: InitProducerIdRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::InitProducerId;
    let response = move |r: Result<(i64, i16), i16>| {
        let base = InitProducerIdResponse::default();
        match r {
            Ok((pid, epoch)) => base
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(code) => base
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_error_code(fenced_for(code, version, 4)),
        }
    };
    let txn_id = req
        .transactional_id
        .as_ref()
        .map(|t| t.to_string())
        .filter(|t| !t.is_empty());
    let Some(txn_id) = txn_id else {
        // An idempotent producer: a fresh producer id at epoch 0 every time, as Kafka does.
        let result = cluster_producer_id(state).map(|id| (id, 0));
        return ready(api, version, corr, response(result));
    };
    if let Err(code) = ready_to_change(state) {
        return ready(api, version, corr, response(Err(code)));
    }
    let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let timeout = req.transaction_timeout_ms;
    let (result, durable) = state.txns.call(state, |c, now| {
        let mut allocate = || cluster_producer_id(state);
        c.init_producer_id(&txn_id, timeout, expected, now, &mut allocate)
    });
    respond(api, version, corr, async move {
        response(settled(result, durable).await)
    })
}

/// The most producer ids one broker hands out: its share of the id space.
const PRODUCER_IDS_PER_BROKER: i64 = 1 << 32;

/// A producer id unique in the cluster: this broker's own counter (kept in its data
/// directory) within its share of the id space, `node.id << 32`, so that no two brokers
/// ever hand out the same id without asking anyone (Kafka asks its controller for blocks;
/// node 0, a single node's id, keeps the ids it always had).
fn cluster_producer_id(state: &BrokerState) -> Result<i64, i16> {
    let local = tokio::task::block_in_place(|| state.replicas.allocate_producer_id())
        .map_err(|e| error_code(&e))?;
    if !(0..PRODUCER_IDS_PER_BROKER).contains(&local) {
        tracing::error!(local, "this broker's share of producer ids is used up");
        return Err(ResponseError::UnknownServerError.code());
    }
    Ok(i64::from(state.config.node_id.max(0)) * PRODUCER_IDS_PER_BROKER + local)
}

/// Per requested topic, each partition's error code.
type PartitionCodes = Vec<(TopicName, Vec<(i32, i16)>)>;

/// What one transaction's part of AddPartitionsToTxn came to: codes now, or after the
/// coordinator's record is durable.
enum Added {
    Now(PartitionCodes),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = PartitionCodes> + Send>>),
}

/// Adds `requested` to transaction `txn_id` of (`pid`, `epoch`), or with `verify_only` (v4+,
/// KIP-890) only checks that they are in it.
fn add_to_transaction(
    state: &Arc<BrokerState>,
    txn_id: String,
    (pid, epoch): (i64, i16),
    requested: Vec<(TopicName, Vec<i32>)>,
    verify_only: bool,
    version: i16,
) -> Added {
    let with = |code_of: &dyn Fn(&TopicName, i32) -> i16| -> PartitionCodes {
        requested
            .iter()
            .map(|(name, ps)| {
                (
                    name.clone(),
                    ps.iter().map(|&p| (p, code_of(name, p))).collect(),
                )
            })
            .collect()
    };
    // A transaction spans at most `transaction.partitions.max` partitions: a longer list is
    // refused before any work proportional to it but the answer.
    let count: usize = requested.iter().map(|(_, ps)| ps.len()).sum();
    let max = state.txns.read(|c| c.config().transaction_partitions_max);
    if count > max {
        return Added::Now(with(&|_, _| ResponseError::InvalidRequest.code()));
    }
    if verify_only {
        if !state.txns.is_loaded() {
            return Added::Now(with(&|_, _| codes::COORDINATOR_LOAD_IN_PROGRESS));
        }
        let codes = state.txns.read(|c| {
            with(&|name, p| {
                c.verify_partition(pid, epoch, name.as_str(), p)
                    .err()
                    .unwrap_or(0)
            })
        });
        return Added::Now(codes);
    }
    // Partitions that cannot take part: unknown ones, and the internal topics.
    let mut unknown = std::collections::HashSet::new();
    let mut partitions = Vec::new();
    for (name, ps) in &requested {
        let topic = state.replicas.topic(name.as_str());
        for &p in ps {
            let exists = topic
                .as_ref()
                .is_some_and(|t| usize::try_from(p).is_ok_and(|i| i < t.partitions.len()));
            let internal = name.as_str() == TXN_TOPIC || name.as_str() == OFFSETS_TOPIC;
            if exists && !internal {
                partitions.push((name.to_string(), p));
            } else {
                unknown.insert((name.to_string(), p));
            }
        }
    }
    if !unknown.is_empty() {
        // As Kafka: the unknown partitions get their error, the rest OPERATION_NOT_ATTEMPTED.
        return Added::Now(with(&|name, p| {
            if unknown.contains(&(name.to_string(), p)) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        }));
    }
    if let Err(code) = ready_to_change(state) {
        return Added::Now(with(&|_, _| code));
    }
    let (result, durable) = state.txns.call(state, |c, now| {
        c.add_partitions(&txn_id, pid, epoch, &partitions, now)
    });
    Added::Later(Box::pin(async move {
        let code = match settled(result, durable).await {
            Ok(()) => 0,
            Err(code) => fenced_for(code, version, 2),
        };
        requested
            .iter()
            .map(|(name, ps)| (name.clone(), ps.iter().map(|&p| (p, code)).collect()))
            .collect()
    }))
}

fn topic_results(codes: PartitionCodes) -> Vec<AddPartitionsToTxnTopicResult> {
    codes
        .into_iter()
        .map(|(name, ps)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(
                    ps.into_iter()
                        .map(|(p, code)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub(crate) fn add_partitions(
    state: &Arc<BrokerState>,
    req: AddPartitionsToTxnRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::AddPartitionsToTxn;
    let topics = |ts: &[kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic]| -> Vec<(TopicName, Vec<i32>)> {
        ts.iter().map(|t| (t.name.clone(), t.partitions.clone())).collect()
    };
    if version <= 3 {
        let added = add_to_transaction(
            state,
            req.v3_and_below_transactional_id.to_string(),
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
            ),
            topics(&req.v3_and_below_topics),
            false,
            version,
        );
        let body = |codes| {
            AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(topic_results(codes))
        };
        return match added {
            Added::Now(codes) => ready(api, version, corr, body(codes)),
            Added::Later(future) => respond(api, version, corr, async move { body(future.await) }),
        };
    }
    // v4+ (KIP-890): several transactions per request, each possibly verify-only.
    let parts: Vec<(TransactionalId, Added)> = req
        .transactions
        .iter()
        .map(|t| {
            let added = add_to_transaction(
                state,
                t.transactional_id.to_string(),
                (t.producer_id.0, t.producer_epoch),
                topics(&t.topics),
                t.verify_only,
                version,
            );
            (t.transactional_id.clone(), added)
        })
        .collect();
    respond(api, version, corr, async move {
        let mut results = Vec::with_capacity(parts.len());
        for (id, added) in parts {
            let codes = match added {
                Added::Now(codes) => codes,
                Added::Later(future) => future.await,
            };
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(id)
                    .with_topic_results(topic_results(codes)),
            );
        }
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
    })
}

pub(crate) fn add_offsets(
    state: &Arc<BrokerState>,
    req: AddOffsetsToTxnRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::AddOffsetsToTxn;
    let answer = |code: i16| AddOffsetsToTxnResponse::default().with_error_code(code);
    if let Err(code) = ready_to_change(state) {
        return ready(api, version, corr, answer(code));
    }
    if !state.groups.is_loaded() {
        return ready(
            api,
            version,
            corr,
            answer(codes::COORDINATOR_LOAD_IN_PROGRESS),
        );
    }
    // The group's offsets partition joins the transaction (and the offsets topic must exist
    // for its marker to be written).
    let partitions = state.groups.read(|c| c.config().offsets_topic_partitions);
    if let Err(e) = crate::groups::offsets_topic(state, partitions) {
        tracing::error!(error = %e, "cannot create {OFFSETS_TOPIC}");
        return ready(api, version, corr, answer(codes::COORDINATOR_NOT_AVAILABLE));
    }
    let offsets_partition = state
        .groups
        .read(|c| c.partition_for(req.group_id.as_str()));
    let txn_id = req.transactional_id.to_string();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let (result, durable) = state.txns.call(state, |c, now| {
        c.add_offsets(&txn_id, pid, epoch, offsets_partition, now)
    });
    respond(api, version, corr, async move {
        match settled(result, durable).await {
            Ok(()) => answer(0),
            Err(code) => answer(fenced_for(code, version, 2)),
        }
    })
}

pub(crate) fn txn_offset_commit(
    state: &Arc<BrokerState>,
    req: TxnOffsetCommitRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::TxnOffsetCommit;
    let requested: Vec<(TopicName, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let answer = move |codes: &mut dyn Iterator<Item = i16>| {
        let topics = requested
            .iter()
            .map(|(name, ps)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        ps.iter()
                            .map(|&p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(codes.next().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    };
    let count: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
    if !state.groups.is_loaded() || !state.txns.is_loaded() {
        let code = codes::COORDINATOR_LOAD_IN_PROGRESS;
        return ready(
            api,
            version,
            corr,
            answer(&mut std::iter::repeat_n(code, count)),
        );
    }
    let group_id = req.group_id.to_string();
    let commit = TxnCommitRequest {
        group_id: group_id.clone(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        offsets: req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| CommitOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect(),
    };
    // Only the producer's ongoing transaction, with this group's offsets partition added,
    // may commit offsets; the check and the append happen under the coordinator's lock.
    let offsets_partition = state.groups.read(|c| c.partition_for(&group_id));
    let (pid, epoch) = (commit.producer_id, commit.producer_epoch);
    let finish = move |verified: Result<(Result<Vec<i16>, i16>, Durable), i16>| -> Dispatched {
        let (result, durable) = match verified {
            Ok(called) => called,
            Err(code) => {
                let code = abortable_for(fenced_for(code, version, 3), version, 4);
                return ready(
                    api,
                    version,
                    corr,
                    answer(&mut std::iter::repeat_n(code, count)),
                );
            }
        };
        respond(api, version, corr, async move {
            let codes: Vec<i16> = match result {
                Err(code) => vec![abortable_for(code, version, 4); count],
                Ok(codes) => match durable.wait().await {
                    Ok(()) => codes,
                    Err(e) => {
                        tracing::warn!(error = %e, "transactional offset commit not durable");
                        vec![codes::COORDINATOR_NOT_AVAILABLE; count]
                    }
                },
            };
            answer(&mut codes.into_iter())
        })
    };
    let txn_id = req.transactional_id.to_string();
    let offsets_log = state.replicas.partition(OFFSETS_TOPIC, offsets_partition);
    let remote = remote_coordinator(state, &txn_id);
    let (Some(coordinator), Some(log)) = (remote, offsets_log) else {
        return finish(
            state
                .txns
                .verified(pid, epoch, OFFSETS_TOPIC, offsets_partition, || {
                    state
                        .groups
                        .call(state, |c, now| c.txn_commit_offsets(commit, now))
                }),
        );
    };
    // The transaction coordinator is another broker: it verifies the offsets partition is
    // in the transaction (KIP-890), and the commit goes in only if no marker came since the
    // check began (markers into the offsets topic are written under the group lock too).
    let verification = log.begin_verification(pid, epoch);
    if verification == sluice_partition::Verification::InTransaction {
        // Already in the transaction here: no question to ask (KIP-890).
        return finish(Ok(state.groups.call(state, |c, now| {
            if log.verification_holds(pid, epoch, verification) {
                c.txn_commit_offsets(commit, now)
            } else {
                Err(codes::INVALID_TXN_STATE)
            }
        })));
    }
    let state = state.clone();
    Ok(Some(crate::response::Response::First(Box::pin(
        async move {
            let key = (OFFSETS_TOPIC.to_string(), offsets_partition);
            let codes = verify_remote(
                &state,
                coordinator,
                &txn_id,
                pid,
                epoch,
                std::slice::from_ref(&key),
            )
            .await;
            let code = codes
                .get(&key)
                .copied()
                .unwrap_or(ResponseError::NotEnoughReplicas.code());
            if code != 0 {
                log.end_verification(pid, verification);
                // Retriable here is COORDINATOR_LOAD_IN_PROGRESS: what clients retry an offset
                // commit on (NOT_ENOUGH_REPLICAS is a produce error).
                let code = if code == ResponseError::NotEnoughReplicas.code() {
                    codes::COORDINATOR_LOAD_IN_PROGRESS
                } else {
                    code
                };
                return finish(Err(code));
            }
            finish(Ok(state.groups.call(&state, |c, now| {
                if log.verification_holds(pid, epoch, verification) {
                    c.txn_commit_offsets(commit, now)
                } else {
                    Err(codes::INVALID_TXN_STATE)
                }
            })))
        },
    ))))
}

pub(crate) fn end_txn(
    state: &Arc<BrokerState>,
    req: EndTxnRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let api = ApiKey::EndTxn;
    // v5 (KIP-890) echoes the producer id and epoch: transactions here stay at the
    // version 1 protocol, whose epoch does not change at the end of a transaction.
    let (pid, epoch) = (req.producer_id, req.producer_epoch);
    let answer = move |code: i16| {
        EndTxnResponse::default()
            .with_error_code(code)
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
    };
    if let Err(code) = ready_to_change(state) {
        return ready(api, version, corr, answer(code));
    }
    let txn_id = req.transactional_id.to_string();
    let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let completion = state.txns.on_complete(&txn_id);
    let (result, durable) = state.txns.call(state, |c, now| {
        let ended = c.end_txn(&txn_id, pid, epoch, commit, now);
        // Markers follow only if this call moved the transaction to a Prepare state (a
        // retry of a completed transaction has nothing left to wait for).
        let preparing = c.describe(&txn_id).is_some_and(|d| {
            matches!(
                d.state,
                sluice_txn::TxnState::PrepareCommit | sluice_txn::TxnState::PrepareAbort
            )
        });
        ended.map(|()| preparing)
    });
    respond(api, version, corr, async move {
        match settled(result, durable).await {
            Ok(preparing) => {
                // The outcome is decided once the Prepare record is durable. Answering after
                // the markers too (bounded, in case a disk fails) spares the client the
                // CONCURRENT_TRANSACTIONS retries its next transaction would otherwise meet
                // while they are written; librdkafka backs off 100 ms per retry.
                if preparing {
                    let _ = tokio::time::timeout(END_TXN_COMPLETION_WAIT, completion).await;
                }
                answer(0)
            }
            Err(code) => answer(fenced_for(code, version, 2)),
        }
    })
}

pub(crate) fn describe_transactions(
    state: &Arc<BrokerState>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let loaded = state.txns.is_loaded();
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            // Errors leave every other field at its schema default (0), as Kafka does.
            let out = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone());
            if !loaded {
                return out.with_error_code(codes::COORDINATOR_LOAD_IN_PROGRESS);
            }
            // An id another broker coordinates is that broker's to describe, as Kafka
            // answers it (the admin client then looks the coordinator up again).
            if !super::coordinates(state, super::CoordinatorKind::Transaction, id.as_str()) {
                return out.with_error_code(ResponseError::NotCoordinator.code());
            }
            let Some(d) = state.txns.read(|c| c.describe(id.as_str())) else {
                return out.with_error_code(codes::TRANSACTIONAL_ID_NOT_FOUND);
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (topic, p) in d.partitions {
                match topics.last_mut() {
                    Some(t) if t.topic.as_str() == topic => t.partitions.push(p),
                    _ => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(str_bytes(&topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            out.with_transaction_state(str_bytes(d.state.name()))
                .with_transaction_timeout_ms(d.transaction_timeout_ms)
                .with_transaction_start_time_ms(d.transaction_start_ms)
                .with_producer_id(ProducerId(d.producer_id))
                .with_producer_epoch(d.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(crate) fn list_transactions(
    state: &Arc<BrokerState>,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    if !state.txns.is_loaded() {
        return ListTransactionsResponse::default()
            .with_error_code(codes::COORDINATOR_LOAD_IN_PROGRESS);
    }
    let filters: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|s| sluice_txn::TxnState::from_name(s.as_str()).is_none())
        .cloned()
        .collect();
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let now = crate::now_ms();
    let listed = state
        .txns
        .read(|c| c.list(&filters, &pids, req.duration_filter, now));
    let states = listed
        .into_iter()
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(kafka_protocol::messages::TransactionalId(str_bytes(
                    &t.transactional_id,
                )))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// How long a partition leader waits for a marker to be committed before it answers the
/// coordinator (which retries).
const MARKER_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// WriteTxnMarkers (from a transaction coordinator): appends each marker to the partitions
/// this broker leads and answers once it is committed (fsynced and on the in-sync replicas),
/// as Kafka answers it with acks=all. A partition that has seen a newer epoch of the producer
/// answers INVALID_PRODUCER_EPOCH: the coordinator takes its transaction there as ended.
pub(crate) fn write_txn_markers(
    state: &Arc<BrokerState>,
    req: WriteTxnMarkersRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let api = ApiKey::WriteTxnMarkers;
    let now = crate::now_ms();
    // Per marker, per topic, per partition: an error now, or a commit to wait for.
    type Outcome = Result<(Arc<sluice_partition::Partition>, i64, i32), i16>;
    type TopicOutcomes = Vec<(TopicName, Vec<(i32, Outcome)>)>;
    let mut outcomes: Vec<(ProducerId, TopicOutcomes)> = Vec::new();
    for marker in &req.markers {
        let (pid, epoch, commit) = (
            marker.producer_id.0,
            marker.producer_epoch,
            marker.transaction_result,
        );
        let mut topics = Vec::with_capacity(marker.topics.len());
        for t in &marker.topics {
            let name = t.name.as_str();
            let topic = state.replicas.topic(name);
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for &p in &t.partition_indexes {
                let log = topic.as_ref().and_then(|t| t.partition(p)).cloned();
                let outcome = match log {
                    None => Err(ResponseError::UnknownTopicOrPartition.code()),
                    Some(_) if name == TXN_TOPIC => Err(ResponseError::InvalidRequest.code()),
                    Some(log) => match state.leads(&log, -1) {
                        Err(code) => Err(code),
                        Ok(()) => {
                            let leader_epoch = log.leader_epoch();
                            let appended = if name == OFFSETS_TOPIC {
                                state.groups.write_marker(&log, p, pid, epoch, commit)
                            } else {
                                log.append_marker(pid, epoch, commit, marker.coordinator_epoch, now)
                            };
                            match appended {
                                Ok(o) => Ok((log, o.last_offset + 1, leader_epoch)),
                                Err(e) => {
                                    tracing::info!(topic = name, partition = p, error = %e,
                                        "transaction marker refused");
                                    Err(error_code(&e))
                                }
                            }
                        }
                    },
                };
                partitions.push((p, outcome));
            }
            topics.push((t.name.clone(), partitions));
        }
        outcomes.push((marker.producer_id, topics));
    }
    let me = state.config.node_id;
    respond(api, version, corr, async move {
        // Register every flush first, so they share the flusher's next pass.
        let flushes: Vec<Vec<Vec<Option<sluice_partition::FlushWait>>>> = outcomes
            .iter()
            .map(|(_, topics)| {
                topics
                    .iter()
                    .map(|(_, ps)| {
                        ps.iter()
                            .map(|(_, o)| o.as_ref().ok().map(|(log, end, _)| log.flush(*end)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut markers = Vec::with_capacity(outcomes.len());
        for ((pid, topics), flushes) in outcomes.into_iter().zip(flushes) {
            let mut results = Vec::with_capacity(topics.len());
            for ((name, partitions), flushes) in topics.into_iter().zip(flushes) {
                let mut ps = Vec::with_capacity(partitions.len());
                for ((p, outcome), flush) in partitions.into_iter().zip(flushes) {
                    let code = match (outcome, flush) {
                        (Err(code), _) => code,
                        (Ok((log, end, epoch)), Some(flush)) => match flush.wait().await {
                            Err(e) => error_code(&e),
                            Ok(()) => {
                                let committed = log.wait_for_commit(end, me, epoch);
                                match tokio::time::timeout(MARKER_COMMIT_WAIT, committed).await {
                                    Ok(true) => 0,
                                    Ok(false) => ResponseError::NotLeaderOrFollower.code(),
                                    Err(_) => ResponseError::RequestTimedOut.code(),
                                }
                            }
                        },
                        (Ok(_), None) => ResponseError::UnknownServerError.code(),
                    };
                    ps.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code),
                    );
                }
                results.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(name)
                        .with_partitions(ps),
                );
            }
            markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(pid)
                    .with_topics(results),
            );
        }
        WriteTxnMarkersResponse::default().with_markers(markers)
    })
}

/// How long a partition leader waits for a remote coordinator's verification.
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The broker coordinating `transactional_id` when it is not this one
/// ([`sluice_partition::NO_LEADER`] while its partition has no leader, or while this broker
/// does not hold the transaction topic yet in a cluster of several: its metadata lags the
/// coordinator that created it, and the caller answers a retriable error); `None` when this
/// broker coordinates it (or, alone, has no transaction topic yet: the local coordinator
/// answers).
pub(crate) fn remote_coordinator(state: &BrokerState, transactional_id: &str) -> Option<i32> {
    let Some(partition) =
        super::coordinator_partition(state, super::CoordinatorKind::Transaction, transactional_id)
    else {
        let others = state
            .cluster
            .view
            .read(|image| image.brokers().any(|b| b.broker_id != state.config.node_id));
        return others.then_some(sluice_partition::NO_LEADER);
    };
    let leader = partition.leader();
    (leader != state.config.node_id).then_some(leader)
}

/// Asks `coordinator` whether each of `partitions` belongs to the ongoing transaction of
/// `producer_id` at `epoch` (AddPartitionsToTxn v4, verify only: KIP-890's check). Returns
/// each partition's code as a produce or offset commit answers it: 0, the coordinator's
/// verdict (INVALID_TXN_STATE, INVALID_PRODUCER_EPOCH, ...), or NOT_ENOUGH_REPLICAS when
/// the coordinator cannot be asked now, which clients retry (Kafka answers the same).
pub(crate) async fn verify_remote(
    state: &BrokerState,
    coordinator: i32,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> std::collections::HashMap<(String, i32), i16> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    let retriable = ResponseError::NotEnoughReplicas.code();
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            ),
    ]);
    let answer: Result<AddPartitionsToTxnResponse, String> = if coordinator < 0 {
        Err("the transaction coordinator's partition has no leader".to_string())
    } else {
        crate::cluster::peer::call_once(
            state,
            coordinator,
            ApiKey::AddPartitionsToTxn,
            4,
            &request,
            VERIFY_TIMEOUT,
        )
        .await
    };
    let mut codes: std::collections::HashMap<(String, i32), i16> =
        partitions.iter().map(|k| (k.clone(), retriable)).collect();
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                coordinator,
                error = e,
                "cannot verify a transactional write"
            );
            return codes;
        }
    };
    let coordinator_unavailable = |code: i16| {
        [
            ResponseError::NotCoordinator.code(),
            ResponseError::CoordinatorNotAvailable.code(),
            ResponseError::CoordinatorLoadInProgress.code(),
        ]
        .contains(&code)
    };
    if response.error_code != 0 {
        let code = response.error_code;
        if !coordinator_unavailable(code) {
            codes.values_mut().for_each(|c| *c = code);
        }
        return codes;
    }
    for txn in &response.results_by_transaction {
        for t in &txn.topic_results {
            for p in &t.results_by_partition {
                let key = (t.name.to_string(), p.partition_index);
                if let Some(c) = codes.get_mut(&key) {
                    *c = if coordinator_unavailable(p.partition_error_code) {
                        retriable
                    } else {
                        p.partition_error_code
                    };
                }
            }
        }
    }
    codes
}
