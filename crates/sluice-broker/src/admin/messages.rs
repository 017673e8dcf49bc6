//! The message browser: records of one partition from an offset or a timestamp, decoded for
//! people (text where the bytes are UTF-8, hex always).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sluice_partition::{Partition, MAX_DECOMPRESSED_BATCH_BYTES};
use sluice_records::{BatchError, BatchHeader, BatchIter, Compression, Record, TimestampType};

use super::{int_param, off_the_runtime, query_pairs, Admin, ApiError, ApiResult, Shared};

/// The browser's one route, `/api/v1/topics/{name}/partitions/{partition}/messages`.
pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new().route(
        "/api/v1/topics/{name}/partitions/{partition}/messages",
        get(browse),
    )
}

/// Default and largest number of records one request returns.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Keys, values and header values are shown up to this many bytes.
const MAX_SHOWN_BYTES: usize = 4096;
/// Bytes read from the log per step while collecting records.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Reads per request, so a partition of empty or control batches cannot keep one busy.
const MAX_READS: usize = 64;
/// Decoded bytes one request may produce (past its first batch); the page ends before a batch
/// that would exceed it and `next_offset` says where to go on.
const MAX_DECOMPRESSED_PER_REQUEST: usize = 64 << 20;

/// Bytes as a person may want them: UTF-8 text when they are text, and hex.
#[derive(Serialize)]
struct Data {
    size: usize,
    text: Option<String>,
    hex: String,
    truncated: bool,
}

impl Data {
    fn of(bytes: &[u8]) -> Self {
        let shown = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
        let mut hex = String::with_capacity(shown.len() * 2);
        for b in shown {
            let _ = write!(hex, "{b:02x}");
        }
        // A cut may fall inside a multi-byte character: keep the valid prefix then.
        let text = match std::str::from_utf8(shown) {
            Ok(s) => Some(s.to_string()),
            Err(e) if shown.len() < bytes.len() && e.error_len().is_none() => {
                Some(String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned())
            }
            Err(_) => None,
        };
        Self {
            size: bytes.len(),
            text,
            hex,
            truncated: shown.len() < bytes.len(),
        }
    }
}

#[derive(Serialize)]
struct HeaderOut {
    key: String,
    value: Option<Data>,
}

#[derive(Serialize)]
struct Message {
    offset: i64,
    timestamp: i64,
    timestamp_type: &'static str,
    key: Option<Data>,
    value: Option<Data>,
    headers: Vec<HeaderOut>,
}

/// A stored batch whose records cannot be decoded (a compressed batch whose payload is not
/// valid for its codec: the broker checks client batches by header and CRC only).
#[derive(Serialize)]
struct Skipped {
    base_offset: i64,
    last_offset: i64,
    error: String,
}

#[derive(Serialize)]
pub(super) struct Page {
    topic: String,
    partition: i32,
    log_start_offset: i64,
    high_watermark: i64,
    next_offset: i64,
    messages: Vec<Message>,
    skipped: Vec<Skipped>,
}

async fn browse(
    admin: Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    query: RawQuery,
) -> ApiResult<Json<Page>> {
    let Path((topic, partition)) = path?;
    let partition: i32 = partition.parse().map_err(|_| {
        ApiError::bad_request(format!("partition {partition}: expected an integer"))
    })?;
    let pairs = query_pairs(query.0)?;
    let offset = int_param(&pairs, "offset")?;
    let timestamp = int_param(&pairs, "timestamp")?;
    let limit = int_param(&pairs, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: must be within 1..={MAX_LIMIT}"
        )));
    }
    if offset.is_some() && timestamp.is_some() {
        return Err(ApiError::bad_request("give offset or timestamp, not both"));
    }
    if let Some(o) = offset.filter(|&o| o < 0) {
        return Err(ApiError::bad_request(format!("offset={o}: must be >= 0")));
    }
    let state = admin.state()?.clone();
    let log = state.replicas.partition(&topic, partition).ok_or_else(|| {
        ApiError::not_found(format!("unknown topic or partition {topic}-{partition}"))
    })?;
    if !log.is_hosted() {
        // Its records are on its replicas only: ask one of them.
        return Err(ApiError::not_hosted(format!(
            "{topic}-{partition} has no replica on this broker (node {}); its leader is \
             node {}",
            state.config.node_id,
            log.leader()
        )));
    }
    // Decoding is bounded per request; this bounds how many decode at once.
    let _turn = admin
        .browses
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("internal", "the browser is closed"))?;
    let page = off_the_runtime(move || {
        read_page(&log, topic, partition, offset, timestamp, limit as usize)
    })
    .await??;
    Ok(Json(page))
}

/// The bytes a record's key, value and header values take once decoded (never more than its
/// share of the decompressed batch).
fn record_bytes(r: &Record) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    len(&r.key) + len(&r.value) + r.headers.iter().map(|h| len(&h.value)).sum::<usize>()
}

fn read_page(
    log: &Partition,
    topic: String,
    partition: i32,
    offset: Option<i64>,
    timestamp: Option<i64>,
    limit: usize,
) -> ApiResult<Page> {
    let storage = |e: sluice_partition::StorageError| match e {
        // Deleted while we read.
        sluice_partition::StorageError::UnknownTopic(_) => ApiError::not_found(e.to_string()),
        _ => ApiError::unavailable("storage_error", e.to_string()),
    };
    let start = log.log_start_offset();
    // Committed records only: the high watermark, as a consumer sees the partition.
    let end = log.high_watermark();
    let mut next = match (offset, timestamp) {
        (Some(o), _) => o.max(start),
        (None, Some(ts)) => log
            .offset_for_timestamp(ts)
            .map_err(storage)?
            .map_or(end, |(o, _)| o),
        (None, None) => start,
    };
    let mut messages = Vec::new();
    let mut skipped = Vec::new();
    let mut budget = MAX_DECOMPRESSED_PER_REQUEST;
    'reads: for _ in 0..MAX_READS {
        if messages.len() >= limit || next >= end {
            break;
        }
        let read = log.read_bytes(next, READ_CHUNK_BYTES).map_err(storage)?;
        if read.is_empty() {
            break;
        }
        for batch in BatchIter::new(&read) {
            if messages.len() >= limit {
                break 'reads;
            }
            let Ok(batch) = batch else { break };
            let Ok(header) = BatchHeader::parse(batch) else {
                break;
            };
            if header.is_control() {
                next = next.max(header.next_offset());
                continue;
            }
            // The first batch of a page may use the whole per-batch limit, as on produce, so
            // a page always makes progress; after it, no batch may decode past the budget,
            // and the page ends before one that would.
            let first = messages.is_empty();
            let compressed = !matches!(header.compression(), Ok(Compression::None));
            if !first && !compressed && batch.len() > budget {
                break 'reads;
            }
            let decode_limit = if first {
                MAX_DECOMPRESSED_BATCH_BYTES
            } else {
                budget.min(MAX_DECOMPRESSED_BATCH_BYTES)
            };
            let records = match header.records(batch, decode_limit) {
                Ok(records) => records,
                Err(BatchError::DecompressedTooLarge(_)) if !first => break 'reads,
                Err(e) => {
                    skipped.push(Skipped {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        error: e.to_string(),
                    });
                    next = next.max(header.next_offset());
                    continue;
                }
            };
            let decoded: usize = records.iter().map(record_bytes).sum();
            budget = budget.saturating_sub(decoded);
            let timestamp_type = match header.timestamp_type() {
                TimestampType::LogAppendTime => "log_append_time",
                TimestampType::CreateTime => "create_time",
            };
            for r in records {
                if r.offset < next || messages.len() >= limit {
                    continue;
                }
                let timestamp = match header.timestamp_type() {
                    TimestampType::LogAppendTime => header.max_timestamp,
                    TimestampType::CreateTime => r.timestamp,
                };
                next = r.offset + 1;
                messages.push(Message {
                    offset: r.offset,
                    timestamp,
                    timestamp_type,
                    key: r.key.as_deref().map(Data::of),
                    value: r.value.as_deref().map(Data::of),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| HeaderOut {
                            key: h.key.clone(),
                            value: h.value.as_deref().map(Data::of),
                        })
                        .collect(),
                });
            }
            if messages.len() < limit {
                // Records removed by compaction leave gaps; go on after the batch.
                next = next.max(header.next_offset());
            }
        }
    }
    Ok(Page {
        topic,
        partition,
        log_start_offset: start,
        high_watermark: end,
        next_offset: next.min(end),
        messages,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_text_when_utf8_and_always_hex() {
        let d = Data::of(b"hi");
        assert_eq!(
            (d.text.as_deref(), d.hex.as_str(), d.size),
            (Some("hi"), "6869", 2)
        );
        let d = Data::of(&[0xff, 0x00]);
        assert_eq!((d.text, d.hex.as_str()), (None, "ff00"));
        let long = "é".repeat(MAX_SHOWN_BYTES); // 2 bytes each: the cut splits none...
        let d = Data::of(long.as_bytes());
        assert!(d.truncated);
        assert_eq!(d.text.map(|t| t.len()), Some(MAX_SHOWN_BYTES));
        let odd = format!("a{long}"); // ...and here it splits one, which is dropped.
        let d = Data::of(odd.as_bytes());
        assert_eq!(d.text.map(|t| t.len()), Some(MAX_SHOWN_BYTES - 1));
        assert_eq!(d.hex.len(), 2 * MAX_SHOWN_BYTES);
    }
}
