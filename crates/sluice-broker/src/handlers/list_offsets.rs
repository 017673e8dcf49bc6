//! ListOffsets: earliest (-2), latest (-1), the record with the largest timestamp (-3,
//! KIP-734), the earliest local offset (-4, KIP-405: every offset is local here) and the
//! latest tiered one (-5: none, as Kafka answers without tiered storage), or the first
//! offset at or after a timestamp. For a read_committed client (isolation_level 1), latest
//! is the last stable offset.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use sluice_partition::Partition;

use crate::errors::error_code;
use crate::BrokerState;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

pub(crate) async fn handle(
    state: Arc<BrokerState>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // Timestamp lookups read (and may decompress) batches: keep them off the reactor.
    let result = tokio::task::spawn_blocking(move || answer(&state, &req, version)).await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "ListOffsets lookup panicked");
        ListOffsetsResponse::default()
    })
}

fn answer(state: &BrokerState, req: &ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // A partition named twice is answered once, INVALID_REQUEST (as Kafka).
    let mut seen = HashSet::new();
    let duplicates: HashSet<(&str, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.as_str(), p.partition_index))
        })
        .filter(|key| !seen.insert(*key))
        .collect();
    let mut answered = HashSet::new();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = state.replicas.topic(t.name.as_str());
            let partitions = t
                .partitions
                .iter()
                .filter(|p| answered.insert((t.name.as_str(), p.partition_index)))
                .map(|p| {
                    let out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let log = topic.as_ref().and_then(|t| t.partition(p.partition_index));
                    if duplicates.contains(&(t.name.as_str(), p.partition_index)) {
                        return out.with_error_code(ResponseError::InvalidRequest.code());
                    }
                    match log {
                        None => out.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                        Some(log) if state.leads(log, p.current_leader_epoch).is_err() => {
                            let code = state.leads(log, p.current_leader_epoch).unwrap_err();
                            out.with_error_code(code)
                        }
                        Some(log) => {
                            let found = lookup(log, p.timestamp, req.isolation_level == 1, out);
                            // No epoch history is kept yet: every offset is in the current
                            // epoch (the one Metadata reports). The field exists from v4.
                            if found.offset >= 0 && version >= 4 {
                                found.with_leader_epoch(log.leader_epoch())
                            } else {
                                found
                            }
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn lookup(
    log: &Partition,
    timestamp: i64,
    read_committed: bool,
    out: ListOffsetsPartitionResponse,
) -> ListOffsetsPartitionResponse {
    match timestamp {
        LATEST_TIMESTAMP if read_committed => out.with_offset(log.last_stable_offset()),
        LATEST_TIMESTAMP => out.with_offset(log.high_watermark()),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => out.with_offset(log.log_start_offset()),
        LATEST_TIERED_TIMESTAMP => out,
        MAX_TIMESTAMP => match log.max_timestamp_record() {
            Ok(Some((offset, found))) => out.with_offset(offset).with_timestamp(found),
            Ok(None) => out,
            Err(e) => out.with_error_code(error_code(&e)),
        },
        ts if ts < 0 => out.with_error_code(ResponseError::UnsupportedVersion.code()),
        ts => match log.offset_for_timestamp(ts) {
            // A read_committed client is not told of offsets past the last stable offset.
            Ok(Some((offset, _))) if read_committed && offset >= log.last_stable_offset() => out,
            Ok(Some((offset, found))) => out.with_offset(offset).with_timestamp(found),
            Ok(None) => out,
            Err(e) => out.with_error_code(error_code(&e)),
        },
    }
}
