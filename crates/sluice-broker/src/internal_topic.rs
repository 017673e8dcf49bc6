//! What the coordinators' internal topics (`__consumer_offsets`, `__transaction_state`) share:
//! creation on first use as compacted topics, appending the records a coordinator emitted,
//! and replay of their records at start-up.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_partition::{Partition, StorageError, Topic};
use sluice_records::{BatchBuilder, BatchHeader, BatchIter, ControlType, NewRecord};

use crate::cluster::rpc::{ControllerRequest, WireNewTopic};
use crate::BrokerState;
use sluice_metadata::codes;

/// Bytes read from a partition at a time while loading.
const LOAD_READ_BYTES: usize = 4 << 20;

/// The most decompressed bytes one stored batch may expand to while loading.
const LOAD_BATCH_MAX_BYTES: usize = 64 << 20;

/// How long creating an internal topic may wait for the controller and for this broker to
/// apply it.
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The topic `name`, created compacted with `partitions` partitions of up to
/// `replication_factor` replicas (as many as there are brokers) if it does not exist: by the
/// active controller, in the cluster metadata, like every topic. Blocks the calling thread
/// (never a runtime worker's tasks) until this broker has its logs.
pub(crate) fn ensure(
    state: &BrokerState,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    segment_bytes: u64,
    max_message_bytes: usize,
) -> Result<Arc<Topic>, StorageError> {
    if let Some(topic) = state.replicas.topic(name) {
        return Ok(topic);
    }
    let configs = vec![
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), segment_bytes.to_string()),
        (
            "max.message.bytes".to_string(),
            max_message_bytes.to_string(),
        ),
    ];
    let request = ControllerRequest::CreateTopics {
        topics: vec![WireNewTopic {
            name: name.to_string(),
            topic_id: uuid::Uuid::new_v4(),
            num_partitions: partitions,
            replication_factor: replication_factor.min(eligible_brokers(state)).max(1),
            assignments: Vec::new(),
            configs,
            leader_epoch: 0,
        }],
    };
    let asked = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(state.cluster.topic_request(request, CREATE_TIMEOUT))
    });
    match asked.as_ref().map(|o| o.first()) {
        Ok(Some(None)) => tracing::info!(partitions, "created {name}"),
        Ok(Some(Some((code, _)))) if *code == codes::TOPIC_ALREADY_EXISTS => {}
        Ok(Some(Some((code, message)))) => {
            return Err(StorageError::Io(format!(
                "the controller refused to create {name} ({code}): {message}"
            )))
        }
        Ok(None) => return Err(StorageError::Io(format!("no answer creating {name}"))),
        Err(e) => return Err(StorageError::Io(format!("cannot create {name}: {e}"))),
    }
    state
        .replicas
        .topic(name)
        .ok_or_else(|| StorageError::Io(format!("{name} is not on this broker yet")))
}

/// The brokers the controller may place replicas on, as this broker's image has them.
fn eligible_brokers(state: &BrokerState) -> i16 {
    state.cluster.view.read(|image| {
        let n = image.brokers().filter(|b| b.is_eligible()).count();
        i16::try_from(n).unwrap_or(i16::MAX)
    })
}

/// A batch is closed once its keys and values reach this many bytes, so one coordinator call
/// that emits many records (a large offset commit) writes several batches, each well under
/// the topic's `max.message.bytes`.
const BATCH_TARGET_BYTES: usize = 256 << 10;

/// A record a coordinator emitted for its topic.
pub(crate) struct Emitted {
    pub partition: i32,
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// For a transactional offset commit: the producer id and epoch whose transaction the
    /// record belongs to (it is written in a transactional batch of that producer, so that
    /// the transaction's marker commits or aborts it).
    pub producer: Option<(i64, i16)>,
}

impl From<sluice_group::Record> for Emitted {
    fn from(r: sluice_group::Record) -> Self {
        let sluice_group::Record {
            partition,
            key,
            value,
            producer,
        } = r;
        Self {
            partition,
            key,
            value,
            producer,
        }
    }
}

impl From<sluice_txn::Record> for Emitted {
    fn from(r: sluice_txn::Record) -> Self {
        let sluice_txn::Record {
            partition,
            key,
            value,
        } = r;
        Self {
            partition,
            key,
            value,
            producer: None,
        }
    }
}

/// Appends `records` to `topic` (named `name`), in emission order within each partition:
/// one batch per run of records of one partition and producer, closed at
/// [`BATCH_TARGET_BYTES`]. Returns each batch's partition and end offset, to be made durable.
pub(crate) fn append(
    topic: &Topic,
    name: &str,
    records: impl IntoIterator<Item = impl Into<Emitted>>,
    now: i64,
) -> Result<Vec<(Arc<Partition>, i64)>, StorageError> {
    let mut by_partition: BTreeMap<i32, Vec<Emitted>> = BTreeMap::new();
    for r in records.into_iter().map(Into::into) {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut ends = Vec::new();
    for (p, records) in by_partition {
        let log = topic
            .partition(p)
            .ok_or_else(|| StorageError::Io(format!("{name} has no partition {p}")))?;
        let new_builder = |producer: Option<(i64, i16)>| {
            let mut builder = BatchBuilder::new(now);
            if let Some((pid, epoch)) = producer {
                // No sequence: no client ever writes here.
                builder.producer(pid, epoch, -1).transactional();
            }
            builder
        };
        let mut builder = new_builder(records[0].producer);
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            bytes += r.key.len() + r.value.as_ref().map_or(0, |v| v.len());
            builder.push(NewRecord {
                key: Some(r.key.to_vec()),
                value: r.value.as_ref().map(|v| v.to_vec()),
                ..NewRecord::default()
            });
            let next = records.get(i + 1).map(|n| n.producer);
            if bytes >= BATCH_TARGET_BYTES || next.is_none_or(|p| p != r.producer) {
                let outcome = log.append(&builder.build(), now)?;
                ends.push((log.clone(), outcome.last_offset + 1));
                builder = new_builder(next.flatten());
                bytes = 0;
            }
        }
    }
    Ok(ends)
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

/// Replays a partition of internal topic `name` from its start to its log end: every record goes to
/// `record` (which returns false to count it as skipped) and every transaction marker to
/// `marker` as (producer id, commit). Recovery has checked every batch's CRC; a batch that
/// still does not decode is skipped rather than leaving the coordinator unavailable.
pub(crate) fn replay(
    log: &Partition,
    name: &str,
    counts: &mut ReplayCounts,
    mut record: impl FnMut(Replayed<'_>) -> bool,
    mut marker: impl FnMut(i64, bool),
) -> Result<(), StorageError> {
    let mut offset = log.log_start_offset();
    // To the log end, as Kafka's coordinators load: where this broker leads, its log is
    // what will be committed (a replicated partition's high watermark lags behind at first).
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read_bytes_to_log_end(offset, LOAD_READ_BYTES)?;
        if read.is_empty() {
            break;
        }
        for batch in BatchIter::new(&read) {
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
