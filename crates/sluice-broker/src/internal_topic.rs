//! What the coordinators' internal topics (`__consumer_offsets`, `__transaction_state`) share:
//! creation on first use as compacted topics, and replay of their records at start-up.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_records::{BatchHeader, BatchIter, ControlType};
use sluice_storage::{StorageError, Topic, UnifiedLog};

use crate::BrokerState;

/// Bytes read from a partition at a time while loading.
const LOAD_READ_BYTES: usize = 4 << 20;

/// The most decompressed bytes one stored batch may expand to while loading.
const LOAD_BATCH_MAX_BYTES: usize = 64 << 20;

/// The topic `name`, created compacted with `partitions` partitions if it does not exist.
pub(crate) fn ensure(
    state: &BrokerState,
    name: &str,
    partitions: i32,
    segment_bytes: u64,
    max_message_bytes: usize,
) -> Result<Arc<Topic>, StorageError> {
    if let Some(topic) = state.logs.topic(name) {
        return Ok(topic);
    }
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), segment_bytes.to_string()),
        (
            "max.message.bytes".to_string(),
            max_message_bytes.to_string(),
        ),
    ]);
    let created =
        tokio::task::block_in_place(|| state.logs.create_topic(name, partitions, overrides, false));
    match created {
        Ok(topic) => {
            tracing::info!(partitions, "created {name}");
            Ok(topic)
        }
        Err(StorageError::TopicExists(_)) => state
            .logs
            .topic(name)
            .ok_or_else(|| StorageError::Io(format!("{name} vanished"))),
        Err(e) => Err(e),
    }
}

/// One record met while replaying: its key and value, and the producer of its batch when
/// the batch is transactional.
pub(crate) struct Replayed<'a> {
    pub offset: i64,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub transactional_producer: Option<i64>,
}

/// What a replay saw besides the records it handed over.
#[derive(Debug, Default)]
pub(crate) struct ReplayCounts {
    pub records: u64,
    /// Records skipped: undecodable batches, keyless records, records `visit` refused.
    pub skipped: u64,
}

/// Replays a partition of internal topic `name` from its start: every record goes to
/// `record` (which returns false to count it as skipped) and every transaction marker to
/// `marker` as (producer id, commit). Recovery has checked every batch's CRC; a batch that
/// still does not decode is skipped rather than leaving the coordinator unavailable.
pub(crate) fn replay(
    log: &UnifiedLog,
    name: &str,
    counts: &mut ReplayCounts,
    mut record: impl FnMut(Replayed<'_>) -> bool,
    mut marker: impl FnMut(i64, bool),
) -> Result<(), StorageError> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, LOAD_READ_BYTES, true)?;
        if read.records.is_empty() {
            break;
        }
        for batch in BatchIter::new(&read.records) {
            let batch = batch.map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let header =
                BatchHeader::parse(batch).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            offset = header.next_offset();
            if header.is_control() {
                match sluice_records::control_type(&header, batch) {
                    Ok(ControlType::Commit) => marker(header.producer_id, true),
                    Ok(ControlType::Abort) => marker(header.producer_id, false),
                    Ok(ControlType::Other(_)) => {}
                    Err(e) => tracing::warn!(offset = header.base_offset, error = %e,
                        "skipping an unreadable marker of {name}"),
                }
                continue;
            }
            let decoded = match header.records(batch, LOAD_BATCH_MAX_BYTES) {
                Ok(records) => records,
                Err(e) => {
                    counts.skipped += u64::from(header.records_count.max(0) as u32);
                    tracing::warn!(offset = header.base_offset, error = %e,
                        "skipping an undecodable batch of {name}");
                    continue;
                }
            };
            let producer = header.is_transactional().then_some(header.producer_id);
            for r in decoded {
                counts.records += 1;
                let Some(key) = r.key.as_deref() else {
                    counts.skipped += 1;
                    continue;
                };
                let replayed = Replayed {
                    offset: r.offset,
                    key,
                    value: r.value.as_deref(),
                    transactional_producer: producer,
                };
                if !record(replayed) {
                    counts.skipped += 1;
                }
            }
        }
    }
    Ok(())
}
