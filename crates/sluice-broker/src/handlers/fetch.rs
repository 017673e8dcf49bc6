//! Fetch: stored batches straight from the segment files, with long polling. A
//! read_committed fetch stops at the last stable offset and carries the aborted transactions
//! of the range it returns.
//!
//! Fetch sessions (KIP-227) are declined: every response carries session id 0, which tells
//! the client to keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, FetchRequest};
use kafka_protocol::ResponseError;
use sluice_partition::{Isolation, ReplicaFetch, Waiter};
use sluice_protocol::fetch_response::{
    FetchPartitionOut, FetchResponseOut, FetchTopicOut, RecordSet,
};
use tokio::time::Instant;

use crate::errors::error_code;
use crate::response::FetchedRecords;
use crate::BrokerState;

/// Cap on a client's max_wait_ms, so a hostile value cannot park a request for days.
const MAX_WAIT_MS_LIMIT: i32 = 5 * 60 * 1000;

pub(crate) async fn handle(state: Arc<BrokerState>, req: FetchRequest, version: i16) -> FetchOut {
    if req.session_id != 0 {
        // We never hand out a session, so a client naming one is confused or replaying.
        return FetchOut {
            error_code: ResponseError::FetchSessionIdNotFound.code(),
            ..FetchOut::default()
        };
    }
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut shutdown = state.shutdown.clone();
    let started = Instant::now();
    let mut read = Duration::ZERO;
    // Parked, the fetch is woken by an advance of the high watermark of a partition it
    // reads, and by no other partition (Kafka's delayed fetch, keyed by partition).
    let waiter = Waiter::new();
    let mut timed_collect = |state: &BrokerState, park: Option<&Arc<Waiter>>| {
        let at = Instant::now();
        let collected = collect(state, &req, version, park);
        read += at.elapsed();
        collected
    };
    let response = loop {
        // Registered before reading, so an advance that lands while we read wakes the wait
        // below (the permit is kept).
        let park = (wait > Duration::ZERO && min_bytes > 0).then_some(&waiter);
        let (response, bytes, errors) = timed_collect(&state, park);
        if bytes >= min_bytes || errors || *shutdown.borrow() || park.is_none() {
            break response;
        }
        tokio::select! {
            after = waiter.wait() => state.metrics.fetch_woken(after),
            _ = tokio::time::sleep_until(deadline) => break timed_collect(&state, None).0,
            _ = shutdown.changed() => break response,
        }
    };
    // Fetch v0-3 clients read the old message formats: magic 0 before v2, magic 1 after.
    let response = if version < 4 {
        let magic = if version < 2 { 0 } else { 1 };
        downgrade(&state, &req, response, magic).await
    } else {
        response
    };
    record_metrics(
        &state,
        &response,
        read,
        started.elapsed().saturating_sub(read),
    );
    response
}

/// Converts every partition's records into a message set of `magic`, off the runtime's
/// threads (it decompresses). A partition whose batches cannot be converted gets
/// CORRUPT_MESSAGE and no records.
async fn downgrade(
    state: &Arc<BrokerState>,
    req: &FetchRequest,
    response: FetchOut,
    magic: i8,
) -> FetchOut {
    // The converted (uncompressed) messages are held in memory: no more than the client
    // asked per partition, nor than fetch.max.bytes, whatever the stored batches expand to.
    let cap = state.config.fetch_max_bytes;
    let asked: Vec<Vec<(i64, usize)>> = req
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| {
                    (
                        p.fetch_offset,
                        (p.partition_max_bytes.max(0) as usize).min(cap),
                    )
                })
                .collect()
        })
        .collect();
    let metrics = state.metrics.clone();
    let converted = tokio::task::spawn_blocking(move || {
        let mut response = response;
        // The whole response holds at most fetch.max.bytes of converted messages.
        let mut remaining = cap;
        for (topic, asked) in response.topics.iter_mut().zip(&asked) {
            for (p, &(from, max_bytes)) in topic.partitions.iter_mut().zip(asked) {
                let max_bytes = max_bytes.min(remaining);
                let Some(TopicRecords {
                    records: FetchedRecords::File(slice),
                    topic,
                }) = p.records.clone()
                else {
                    continue; // no records, or an error: nothing to convert
                };
                if max_bytes == 0 {
                    // The response is full: this partition's records come in the next fetch.
                    p.records = Some(TopicRecords {
                        records: FetchedRecords::Empty,
                        topic,
                    });
                    continue;
                }
                let converted = slice
                    .to_vec()
                    .map_err(sluice_partition::StorageError::from)
                    .and_then(|bytes| {
                        sluice_records::legacy::to_message_set(
                            &bytes,
                            magic,
                            from,
                            max_bytes,
                            sluice_partition::MAX_DECOMPRESSED_BATCH_BYTES,
                        )
                        .map_err(sluice_partition::StorageError::from)
                    });
                let records = match converted {
                    Ok(c) => {
                        remaining = remaining.saturating_sub(c.bytes.len());
                        metrics.converted("fetch", c.messages);
                        FetchedRecords::Converted {
                            bytes: bytes::Bytes::from(c.bytes),
                            records: c.messages as u64,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %topic, partition = p.partition, error = %e,
                            "cannot convert records for an old fetch");
                        p.error_code = ResponseError::CorruptMessage.code();
                        FetchedRecords::Empty
                    }
                };
                p.records = Some(TopicRecords { records, topic });
            }
        }
        response
    })
    .await;
    converted.unwrap_or_else(|e| {
        tracing::error!(error = %e, "converting an old fetch panicked");
        FetchOut {
            error_code: ResponseError::UnknownServerError.code(),
            ..FetchOut::default()
        }
    })
}

/// A partition's records in a fetch response, with the topic their traffic is counted for.
#[derive(Debug, Clone)]
pub(crate) struct TopicRecords {
    pub records: FetchedRecords,
    pub topic: Arc<str>,
}

impl RecordSet for TopicRecords {
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// The response as the fetch handler builds it.
pub(crate) type FetchOut = FetchResponseOut<TopicRecords>;

/// Counts the response's partition errors and where the fetch's time went. Its traffic
/// (bytes, records) is counted as the records are written.
fn record_metrics(state: &BrokerState, response: &FetchOut, read: Duration, wait: Duration) {
    let metrics = &state.metrics;
    if !metrics.enabled() {
        return;
    }
    metrics.fetch_read_and_wait(read, wait);
    metrics.error_codes(ApiKey::Fetch as i16, [response.error_code]);
    for topic in &response.topics {
        for p in &topic.partitions {
            metrics.error_codes(ApiKey::Fetch as i16, [p.error_code]);
        }
    }
}

/// Puts what a read found into the partition's answer, counting its bytes in `total`.
fn attach(
    out: &mut FetchPartitionOut<TopicRecords>,
    records: Option<sluice_partition::FileSlice>,
    topic: &Arc<str>,
    total: &mut usize,
) {
    if let Some(slice) = records {
        *total += slice.len();
        out.records = Some(TopicRecords {
            records: FetchedRecords::File(slice),
            topic: topic.clone(),
        });
    }
}

/// The broker a fetch comes from, if it is a follower's (Kafka's replica id: a broker id;
/// consumers send -1, and -2 or lower for tools that read like a follower without being
/// one, which are served like consumers here).
fn replica_id(req: &FetchRequest, version: i16) -> Option<i32> {
    let id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// Locates every requested partition's records once (their bytes stay in the segment
/// files). Returns the response, its record bytes, and whether any partition had an error
/// (which ends a long poll at once, as in Kafka).
/// With `park`, the waiter is registered with every partition read, before it is read.
fn collect(
    state: &BrokerState,
    req: &FetchRequest,
    version: i16,
    park: Option<&Arc<Waiter>>,
) -> (FetchOut, usize, bool) {
    let max_bytes = (req.max_bytes.max(0) as usize).min(state.config.fetch_max_bytes);
    // isolation_level 1 is READ_COMMITTED: stop at the last stable offset and list aborted
    // transactions for the client to filter.
    let isolation = if req.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    let replica = replica_id(req, version);
    let now = crate::now_ms();
    for fetch_topic in &req.topics {
        // Fetch v13 names topics by id (KIP-516).
        let by_id = version >= 13;
        let topic = if by_id {
            state.replicas.topic_by_id(fetch_topic.topic_id)
        } else {
            state.replicas.topic(fetch_topic.topic.as_str())
        };
        let name: Arc<str> = match &topic {
            Some(t) => Arc::from(t.name.as_str()),
            None => Arc::from(fetch_topic.topic.as_str()),
        };
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for p in &fetch_topic.partitions {
            let mut out = FetchPartitionOut {
                partition: p.partition,
                error_code: 0,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                // Kafka answers an unknown partition with an empty list.
                aborted: Some(Vec::new()),
                // Empty, not null, for partitions with errors, as Kafka sends them:
                // librdkafka refuses a null record set ("invalid MessageSetSize -1").
                records: Some(TopicRecords {
                    records: FetchedRecords::Empty,
                    topic: name.clone(),
                }),
                diverging_epoch: None,
            };
            let log = topic.as_ref().and_then(|t| t.partition(p.partition));
            let Some(log) = log else {
                errors = true;
                out.error_code = if by_id && topic.is_none() {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                partitions.push(out);
                continue;
            };
            if let Some(follower) = replica {
                // A follower's fetch: it reports how far it holds the log (moving the high
                // watermark), and copies whole batches up to the log end.
                let last_fetched_epoch =
                    (p.last_fetched_epoch >= 0).then_some(p.last_fetched_epoch);
                let answer = log.on_replica_fetch(
                    follower,
                    p.fetch_offset,
                    last_fetched_epoch,
                    p.current_leader_epoch,
                    now,
                );
                out.log_start_offset = log.log_start_offset();
                out.high_watermark = log.high_watermark();
                out.last_stable_offset = log.last_stable_offset();
                match answer {
                    ReplicaFetch::Records { high_watermark } => {
                        out.high_watermark = high_watermark;
                        if let Some(waiter) = park {
                            log.register_for_append(waiter);
                        }
                        let budget = max_bytes.saturating_sub(total);
                        let mut limit = (p.partition_max_bytes.max(0) as usize).min(budget);
                        // KIP-73: where the topic throttles this leader's replica
                        // (leader.replication.throttled.replicas names it), an out-of-sync
                        // follower gets its share of leader.replication.throttled.rate, a
                        // piece at a time.
                        let meter = &state.throttle.leader;
                        let throttled = meter.limit().is_some()
                            && log.throttled_replica(true, state.config.node_id)
                            && !log.isr().is_some_and(|isr| isr.contains(&follower));
                        if throttled {
                            limit = meter.piece(limit);
                        }
                        let read = if throttled && meter.exceeded() {
                            Ok(None) // over the rate: nothing this time
                        } else {
                            log.read_for_replica(p.fetch_offset, limit).map(Some)
                        };
                        match read {
                            Ok(None) => {}
                            Ok(Some(read)) => {
                                let before = total;
                                attach(&mut out, read.records, &name, &mut total);
                                if throttled {
                                    meter.record(total - before);
                                }
                            }
                            Err(e) => {
                                errors = true;
                                out.error_code = error_code(&e);
                            }
                        }
                    }
                    ReplicaFetch::Diverging { epoch, end_offset } => {
                        // An answer the follower acts on at once, like an error.
                        errors = true;
                        out.diverging_epoch = Some((epoch, end_offset));
                    }
                    ReplicaFetch::Error(code) => {
                        errors = true;
                        out.error_code = code;
                    }
                }
                partitions.push(out);
                continue;
            }
            if let Err(code) = state.leads(log, p.current_leader_epoch) {
                errors = true;
                out.error_code = code;
                partitions.push(out);
                continue;
            }
            let budget = max_bytes.saturating_sub(total);
            let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
            // KIP-74: the first batch of the response is returned whole even past the limits,
            // so a consumer always makes progress.
            let min_one = total == 0;
            if let Some(waiter) = park {
                log.register(waiter);
            }
            match log.read(p.fetch_offset, limit, min_one, isolation) {
                Ok(read) => {
                    out.high_watermark = read.high_watermark;
                    out.last_stable_offset = read.last_stable_offset;
                    out.log_start_offset = read.log_start_offset;
                    out.aborted = (isolation == Isolation::ReadCommitted).then_some(read.aborted);
                    attach(&mut out, read.records, &name, &mut total);
                }
                // As Kafka: a refused read leaves the offsets unknown (-1) and aborted null.
                Err(e) => {
                    errors = true;
                    out.error_code = error_code(&e);
                    out.aborted = None;
                }
            }
            partitions.push(out);
        }
        topics.push(FetchTopicOut {
            name: fetch_topic.topic.0.clone().into_bytes(),
            topic_id: *fetch_topic.topic_id.as_bytes(),
            partitions,
        });
    }
    (
        FetchOut {
            topics,
            ..FetchOut::default()
        },
        total,
        errors,
    )
}
