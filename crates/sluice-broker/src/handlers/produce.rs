//! Produce: validate and append client batches as they are; with acks=all answer only once
//! the appended bytes are fsynced (sharing syncs with concurrent appenders).

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use sluice_partition::{Partition, StorageError, Verification, MAX_DECOMPRESSED_BATCH_BYTES};
use sluice_protocol::ErrorResponse;

use super::{ready, respond, str_bytes, Dispatched};
use crate::errors::error_code;
use crate::{now_ms, BrokerState};

/// An appended partition waiting for its commit (fsynced, and below the high watermark).
struct Awaiting {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
    end_offset: i64,
    /// The leader epoch the records were appended in.
    epoch: i32,
}

pub(crate) fn handle(
    state: &Arc<BrokerState>,
    req: ProduceRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let acks = req.acks;
    if !matches!(acks, -1..=1) {
        let code = ResponseError::InvalidRequiredAcks.code();
        let response = req.error_response(version, code);
        return ready(ApiKey::Produce, version, corr, response);
    }
    remote_verification(state, req, version, corr)
}

/// Where this request carries transactional batches whose coordinator is another broker
/// (KIP-890): an ordered step that has the coordinator verify each partition is in the
/// producer's transaction, then appends (see [`append_all`]). Otherwise the append now.
/// The guards are taken before the question is sent, so a marker that arrives while it is
/// out voids them.
fn remote_verification(
    state: &Arc<BrokerState>,
    req: ProduceRequest,
    version: i16,
    corr: i32,
) -> Dispatched {
    let coordinator = req
        .transactional_id
        .as_ref()
        .filter(|t| !t.is_empty() && version >= 3)
        .and_then(|t| super::txn::remote_coordinator(state, t.as_str()));
    let Some(coordinator) = coordinator else {
        return append_all(state, &req, version, corr, None);
    };
    // Every partition led here with transactional batches of one producer, guarded now.
    let mut guarded = Vec::new();
    let mut producer = None;
    for topic_data in &req.topic_data {
        let topic = if version >= 13 {
            state.replicas.topic_by_id(topic_data.topic_id)
        } else {
            state.replicas.topic(topic_data.name.as_str())
        };
        let Some(topic) = topic else { continue };
        for data in &topic_data.partition_data {
            let Some(log) = topic.partition(data.index) else {
                continue;
            };
            let Some(records) = data.records.as_deref() else {
                continue;
            };
            if state.leads(log, -1).is_err() {
                continue;
            }
            if let Ok(Some((pid, epoch))) = transactional_producer(records) {
                if producer.is_some_and(|p| p != (pid, epoch)) {
                    continue; // refused when appended: one producer per request
                }
                producer = Some((pid, epoch));
                let verification = log.begin_verification(pid, epoch);
                guarded.push((topic.name.clone(), data.index, log.clone(), verification));
            }
        }
    }
    let Some((pid, epoch)) = producer else {
        return append_all(state, &req, version, corr, None);
    };
    // A partition where the producer's transaction is open needs no question: the guard
    // holds until its marker (KIP-890 asks only for the first write of a transaction).
    let mut verdicts = Verdicts::new();
    guarded.retain(|(topic, index, _, verification)| {
        let open = *verification == Verification::InTransaction;
        if open {
            verdicts.insert((topic.clone(), *index), Ok(*verification));
        }
        !open
    });
    if guarded.is_empty() {
        return append_all(state, &req, version, corr, Some(&verdicts));
    }
    let state = state.clone();
    let txn_id = req
        .transactional_id
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(Some(crate::response::Response::First(Box::pin(
        async move {
            let partitions: Vec<(String, i32)> =
                guarded.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect();
            let codes =
                super::txn::verify_remote(&state, coordinator, &txn_id, pid, epoch, &partitions)
                    .await;
            let mut verdicts = verdicts;
            for (topic, index, log, verification) in guarded {
                let code = codes
                    .get(&(topic.clone(), index))
                    .copied()
                    .unwrap_or(ResponseError::NotEnoughReplicas.code());
                if code == 0 {
                    verdicts.insert((topic, index), Ok(verification));
                } else {
                    log.end_verification(pid, verification);
                    tracing::info!(
                        topic,
                        partition = index,
                        code,
                        "transactional produce refused by its coordinator"
                    );
                    verdicts.insert((topic, index), Err(code));
                }
            }
            append_all(&state, &req, version, corr, Some(&verdicts))
        },
    ))))
}

/// A remote coordinator's verdict on each partition of a transactional produce: the guard
/// to append under, or the error to answer.
type Verdicts = std::collections::HashMap<(String, i32), Result<Verification, i16>>;

/// Validates and appends every partition of `req`; transactional batches are checked with
/// the local coordinator, or against `verdicts` when a remote one verified them.
fn append_all(
    state: &Arc<BrokerState>,
    req: &ProduceRequest,
    version: i16,
    corr: i32,
    verdicts: Option<&Verdicts>,
) -> Dispatched {
    let acks = req.acks;
    let now = now_ms();
    let mut awaiting = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (ti, topic_data) in req.topic_data.iter().enumerate() {
        // Produce v13 names topics by id (KIP-516).
        let topic = if version >= 13 {
            state.replicas.topic_by_id(topic_data.topic_id)
        } else {
            state.replicas.topic(topic_data.name.as_str())
        };
        let resolved_name = topic.as_ref().map(|t| t.name.clone());
        let name = resolved_name
            .as_deref()
            .unwrap_or_else(|| topic_data.name.as_str());
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (pi, data) in topic_data.partition_data.iter().enumerate() {
            let mut out = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let log = topic.as_ref().and_then(|t| t.partition(data.index));
            // Produce v0-2 carries the old message formats: converted once into a batch,
            // which is then checked like any client batch.
            let converted;
            let records = match (&data.records, version < 3) {
                (Some(set), true) => match upgrade_message_set(set) {
                    Ok(batch) => {
                        state.metrics.converted("produce", batch.1);
                        converted = Some(batch.0);
                        converted.as_deref()
                    }
                    Err(e) => {
                        log_refusal(name, data.index, &e);
                        partitions.push(out.with_error_code(error_code(&e)));
                        continue;
                    }
                },
                (records, _) => records.as_deref(),
            };
            let mut refused_records: Option<(Vec<i32>, String)> = None;
            let mut refused_log_start = -1;
            let result = match (log, records) {
                // Only the coordinator writes its topic: a client record there would be
                // replayed as group state.
                _ if crate::is_internal_topic(name) => {
                    Err(ResponseError::InvalidTopicException.code())
                }
                (None, _) if version >= 13 && topic.is_none() => {
                    Err(ResponseError::UnknownTopicId.code())
                }
                (None, _) => Err(ResponseError::UnknownTopicOrPartition.code()),
                (Some(log), _) if state.leads(log, -1).is_err() => {
                    Err(ResponseError::NotLeaderOrFollower.code())
                }
                // acks=all needs min.insync.replicas in the ISR before anything is appended.
                (Some(log), _)
                    if acks == -1
                        && !log
                            .enough_replicas(log.config().min_insync_replicas.max(1) as usize) =>
                {
                    Err(ResponseError::NotEnoughReplicas.code())
                }
                (Some(_), None) => Err(ResponseError::CorruptMessage.code()),
                (Some(log), Some(records)) => {
                    let mut append_with = |appended: Result<_, StorageError>| {
                        appended.map(|o| (log, o)).map_err(|e| {
                            log_refusal(name, data.index, &e);
                            // KIP-467: which records were refused, and why.
                            if let StorageError::RecordErrors { message, records } = &e {
                                let detail =
                                    format!("{message} in topic partition {name}-{}.", data.index);
                                refused_records = Some((records.clone(), detail));
                            }
                            let code = error_code(&e);
                            if reports_log_start(code) {
                                refused_log_start = log.log_start_offset();
                            }
                            code
                        })
                    };
                    match (transactional_producer(records), verdicts) {
                        (Err(code), _) => Err(code),
                        // A transactional batch goes in only if its partition was added to
                        // the producer's ongoing transaction (checked and appended under the
                        // transaction coordinator's lock).
                        (Ok(Some((pid, epoch))), None) => state
                            .txns
                            .verified(pid, epoch, name, data.index, || {
                                append_with(log.append_in_epoch(records, now))
                            })
                            .unwrap_or_else(|code| {
                                tracing::info!(
                                    topic = name,
                                    partition = data.index,
                                    code,
                                    "transactional produce outside the producer's transaction"
                                );
                                // A coordinator (re)loading: a produce error clients retry.
                                if code == sluice_txn::codes::COORDINATOR_LOAD_IN_PROGRESS {
                                    return Err(ResponseError::NotEnoughReplicas.code());
                                }
                                Err(super::txn::abortable_for(code, version, 11))
                            }),
                        // Checked by the remote coordinator; appended only if no marker of
                        // the producer came since the check began.
                        (Ok(Some((pid, epoch))), Some(verdicts)) => {
                            match verdicts.get(&(name.to_string(), data.index)) {
                                Some(Ok(v)) => {
                                    append_with(log.append_verified(records, now, pid, epoch, *v))
                                        .map_err(|code| {
                                            super::txn::abortable_for(code, version, 11)
                                        })
                                }
                                Some(Err(code)) => {
                                    Err(super::txn::abortable_for(*code, version, 11))
                                }
                                None => Err(ResponseError::InvalidRecord.code()),
                            }
                        }
                        (Ok(None), _) => append_with(log.append_in_epoch(records, now)),
                    }
                }
            };
            match result {
                Ok((log, (outcome, epoch))) => {
                    if !outcome.duplicate {
                        let bytes = data.records.as_ref().map_or(0, |r| r.len());
                        let messages = outcome.last_offset - outcome.base_offset + 1;
                        state.metrics.produced(name, bytes, messages.max(0) as u64);
                    }
                    out = out
                        .with_base_offset(outcome.base_offset)
                        .with_log_append_time_ms(outcome.log_append_time)
                        .with_log_start_offset(outcome.log_start_offset);
                    if acks == -1 {
                        awaiting.push(Awaiting {
                            topic: ti,
                            partition: pi,
                            log: log.clone(),
                            end_offset: outcome.last_offset + 1,
                            epoch,
                        });
                    }
                }
                Err(code) => {
                    out = out
                        .with_error_code(code)
                        .with_log_start_offset(refused_log_start);
                    // Record errors exist from v8 on.
                    if let Some((records, detail)) = refused_records.filter(|_| version >= 8) {
                        out = with_record_errors(out, &records, &detail);
                    }
                }
            }
            partitions.push(out);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name.clone())
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partitions),
        );
    }
    let response = ProduceResponse::default().with_responses(responses);
    if acks == 0 {
        // No response to carry an error: like Kafka, close the connection so the client
        // notices (and refreshes its metadata) instead of losing data silently.
        let failed = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.error_code != 0);
        if let Some(p) = failed {
            return Err(format!("acks=0 produce failed with error {}", p.error_code));
        }
        return Ok(None);
    }
    if awaiting.is_empty() {
        return ready(ApiKey::Produce, version, corr, response);
    }
    // The produce timeout bounds waiting for the commit (Kafka: for the in-sync replicas),
    // not our own fsync: a disk that hangs is bounded by the client's request timeout, and a
    // failed sync takes the directory offline.
    let metrics = state.metrics.clone();
    let me = state.config.node_id;
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    respond(ApiKey::Produce, version, corr, async move {
        let mut response = response;
        let waiting = std::time::Instant::now();
        // Register every partition with the flusher first, so they share its next pass.
        let waits: Vec<_> = awaiting
            .into_iter()
            .map(|a| (a.topic, a.partition, a.log.flush(a.end_offset), a))
            .collect();
        let mut results = Vec::with_capacity(waits.len());
        let deadline = tokio::time::Instant::now() + timeout;
        for (t, p, wait, a) in waits {
            let result = match wait.wait().await {
                Ok(()) => {
                    // Committed: the high watermark passed it, so every in-sync replica holds
                    // it (and has fsynced it before saying so).
                    let committed = a.log.wait_for_commit(a.end_offset, me, a.epoch);
                    let min_isr = a.log.config().min_insync_replicas.max(1) as usize;
                    match tokio::time::timeout_at(deadline, committed).await {
                        Ok(true) => match a.log.ack_status(a.end_offset, min_isr) {
                            sluice_partition::AckStatus::NotEnoughReplicasAfterAppend => {
                                Err(ResponseError::NotEnoughReplicasAfterAppend.code())
                            }
                            _ => Ok(()),
                        },
                        Ok(false) => Err(ResponseError::NotLeaderOrFollower.code()),
                        Err(_) => Err(ResponseError::RequestTimedOut.code()),
                    }
                }
                Err(e) => Err(error_code(&e)).inspect_err(|_| {
                    let out = &mut response.responses[t].partition_responses[p];
                    out.error_message = Some(str_bytes(&e.to_string()));
                }),
            };
            results.push((t, p, result));
        }
        metrics.produce_fsync(waiting.elapsed());
        let synced: std::collections::HashSet<(usize, usize)> = results
            .iter()
            .filter(|(_, _, r)| r.is_ok())
            .map(|(t, p, _)| (*t, *p))
            .collect();
        for (t, p, result) in &results {
            if let Err(code) = result {
                let out = &mut response.responses[*t].partition_responses[*p];
                out.error_code = *code;
                out.base_offset = -1;
            }
        }
        // Anything appended that was not confirmed synced must not look acknowledged.
        for (t, topic) in response.responses.iter_mut().enumerate() {
            for (p, out) in topic.partition_responses.iter_mut().enumerate() {
                if out.error_code == 0 && !synced.contains(&(t, p)) {
                    out.error_code = ResponseError::KafkaStorageError.code();
                    out.base_offset = -1;
                }
            }
        }
        response
    })
}

/// Converts a message set (magic 0 or 1, as Produce v0-2 carries) into one v2 batch in the
/// codec it was sent with; returns the batch and how many records it holds.
fn upgrade_message_set(set: &[u8]) -> Result<(Vec<u8>, usize), StorageError> {
    let up = sluice_records::legacy::upgrade(set, MAX_DECOMPRESSED_BATCH_BYTES)?;
    Ok((up.batch, up.records))
}

/// Kafka shows at most this many record errors in a partition's error message.
const RECORD_ERRORS_SHOWN: usize = 3;

/// KIP-467's answer for a batch refused because of some of its records: each record's index
/// and reason, and a message naming the first few, worded as Kafka words it.
fn with_record_errors(
    out: PartitionProduceResponse,
    records: &[i32],
    detail: &str,
) -> PartitionProduceResponse {
    let errors: Vec<BatchIndexAndErrorMessage> = records
        .iter()
        .map(|&i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(str_bytes(detail)))
        })
        .collect();
    let shown: Vec<String> = records
        .iter()
        .take(RECORD_ERRORS_SHOWN)
        .map(|i| format!("RecordError(batchIndex={i}, message='{detail}')"))
        .collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only \
         showing the first three errors at most: [{}]",
        records.len(),
        shown.join(", ")
    );
    out.with_record_errors(errors)
        .with_error_message(Some(str_bytes(&message)))
}

/// The producer id and epoch of the transactional batches in `records`, if there are any.
/// A record set mixing producers (or transactional and plain batches of different producers)
/// gets `Err`: one transaction check must cover every batch. Malformed batches are left for
/// storage to refuse.
fn transactional_producer(records: &[u8]) -> Result<Option<(i64, i16)>, i16> {
    let mut producers = sluice_records::BatchIter::new(records)
        .map_while(|b| b.ok())
        .filter_map(|b| sluice_records::BatchHeader::parse(b).ok())
        .map(|h| (h.is_transactional(), h.producer_id, h.producer_epoch));
    let Some(first) = producers.next() else {
        return Ok(None);
    };
    if producers.any(|p| p != first) {
        return Err(ResponseError::InvalidRecord.code());
    }
    Ok(first.0.then_some((first.1, first.2)))
}

fn log_refusal(topic: &str, partition: i32, e: &StorageError) {
    match e {
        StorageError::Offline => {}
        _ => tracing::info!(topic, partition, error = %e, "produce refused"),
    }
}

/// Whether a refused append answers the partition's log start offset. Kafka answers -1 only
/// where the partition could not be reached or the request could not be read (unknown
/// partition, not the leader, too large, corrupt, storage failure) and the log start offset
/// for every other refusal (invalid records, sequence and epoch errors...).
fn reports_log_start(code: i16) -> bool {
    ![
        ResponseError::UnknownTopicOrPartition.code(),
        ResponseError::NotLeaderOrFollower.code(),
        ResponseError::MessageTooLarge.code(),
        ResponseError::RecordListTooLarge.code(),
        ResponseError::CorruptMessage.code(),
        ResponseError::KafkaStorageError.code(),
    ]
    .contains(&code)
}
