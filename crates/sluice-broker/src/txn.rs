//! The shell around the transaction coordinator: the clock, the `__transaction_state` log its
//! records go to and are replayed from, and the writing of transaction markers.
//!
//! A call runs under the coordinator's lock and appends the records it emitted in order; the
//! client is answered once they are fsynced. Ending a transaction takes two steps, as in
//! Kafka: the Prepare record is made durable, then a marker (control batch) is appended to
//! every partition of the transaction and fsynced, and only then is the Complete record
//! written. A crash in between leaves a Prepare record, and loading writes the markers again.
//!
//! Produce of a transactional batch holds the same lock across its check that the partition
//! was added to the producer's ongoing transaction and its append (see
//! [`Transactions::verified`]): a batch checked before EndTxn is in the log before the
//! Prepare record, hence before the marker, and one arriving after is refused, so no batch
//! can land after its transaction's marker and leave a transaction nobody will end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_records::{BatchBuilder, NewRecord};
use sluice_storage::{StorageError, UnifiedLog};
use sluice_txn::{MarkerJob, Record, TransactionCoordinator, TxnConfig};

use crate::groups::{Durable, OFFSETS_TOPIC};
use crate::internal_topic::{self, ReplayCounts};
use crate::{now_ms, BrokerState};

/// The internal topic holding transaction state.
pub(crate) const TXN_TOPIC: &str = "__transaction_state";

/// How often transaction timeouts and id expiry are looked at (the coordinator keeps to its
/// own, longer intervals).
pub(crate) const TICK_MS: u64 = 100;

/// `max.message.bytes` of the transaction topic: room for a transaction spanning
/// `transaction.partitions.max` partitions.
const TXN_TOPIC_MESSAGE_MAX_BYTES: usize = 16 << 20;

pub(crate) struct Transactions {
    coordinator: Mutex<TransactionCoordinator>,
    /// False until `__transaction_state` has been replayed.
    loaded: AtomicBool,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("loaded", &self.loaded.load(Ordering::Relaxed))
            .finish()
    }
}

impl Transactions {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            coordinator: Mutex::new(TransactionCoordinator::new(config)),
            loaded: AtomicBool::new(false),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, TransactionCoordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` against the coordinator at the current time, appends the records it emitted
    /// and starts the marker writes it asked for.
    pub fn call<R>(
        &self,
        state: &Arc<BrokerState>,
        f: impl FnOnce(&mut TransactionCoordinator, i64) -> R,
    ) -> (R, Durable) {
        let mut c = self.lock();
        let result = f(&mut c, now_ms());
        let durable = settle(&mut c, state);
        (result, durable)
    }

    /// Runs `append` only if `(producer_id, epoch)` has `topic`/`partition` in its ongoing
    /// transaction, holding the coordinator's lock throughout (see the module docs).
    pub fn verified<T>(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
        append: impl FnOnce() -> T,
    ) -> Result<T, i16> {
        if !self.is_loaded() {
            return Err(sluice_txn::codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        let c = self.lock();
        c.verify_partition(producer_id, epoch, topic, partition)?;
        Ok(append())
    }

    /// Reads the coordinator without changing it.
    pub fn read<R>(&self, f: impl FnOnce(&TransactionCoordinator) -> R) -> R {
        f(&self.lock())
    }

    /// Aborts timed-out transactions and expires idle transactional ids.
    pub async fn tick(state: Arc<BrokerState>) {
        if !state.txns.is_loaded() {
            return;
        }
        let (_, durable) = state.txns.call(&state, |c, now| c.tick(now));
        if let Err(e) = durable.wait().await {
            tracing::warn!(error = %e, "transaction state write failed");
        }
    }

    /// Rebuilds the coordinator from `__transaction_state`, then opens it for requests and
    /// finishes the transactions that were being committed or aborted.
    pub fn load(&self, state: &Arc<BrokerState>) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let mut config = self.lock().config().clone();
        let topic = state.logs.topic(TXN_TOPIC);
        if let Some(topic) = &topic {
            let existing = topic.partitions.len() as i32;
            if existing != config.state_partitions {
                tracing::warn!(
                    configured = config.state_partitions,
                    existing,
                    "transaction.state.log.num.partitions differs from the existing \
                     {TXN_TOPIC}; using the existing count"
                );
                config.state_partitions = existing;
            }
        }
        let mut coordinator = TransactionCoordinator::new(config);
        let mut counts = ReplayCounts::default();
        for log in topic.iter().flat_map(|t| t.partitions.iter()) {
            internal_topic::replay(
                log,
                TXN_TOPIC,
                &mut counts,
                |r| {
                    coordinator
                        .replay(r.key, r.value)
                        .map_err(|e| {
                            tracing::warn!(offset = r.offset, error = ?e,
                                "skipping a record of {TXN_TOPIC}")
                        })
                        .is_ok()
                },
                |_, _| {},
            )?;
        }
        let (records, bad) = (counts.records, counts.skipped);
        let now = now_ms();
        coordinator.finish_loading(now);
        let ids = coordinator.len();
        let mut c = self.lock();
        *c = coordinator;
        self.loaded.store(true, Ordering::Release);
        // Transactions replayed in a Prepare state get their markers now.
        let _ = settle(&mut c, state);
        drop(c);
        tracing::info!(
            records,
            skipped = bad,
            transactional_ids = ids,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "transaction coordinator loaded"
        );
        Ok(())
    }
}

/// Appends emitted records and starts marker jobs; returns the durability wait.
fn settle(c: &mut TransactionCoordinator, state: &Arc<BrokerState>) -> Durable {
    let records = c.take_records();
    let appended = if records.is_empty() {
        Ok(Vec::new())
    } else {
        let result = append(state, c.config().state_partitions, records);
        c.records_appended(result.is_ok());
        result
    };
    let jobs = c.take_marker_jobs();
    match appended {
        Ok(ends) => {
            for job in jobs {
                tokio::spawn(write_markers(state.clone(), job, ends.clone()));
            }
            Durable(
                ends.into_iter()
                    .map(|(log, end)| state.flusher.flush(log, end))
                    .collect(),
                None,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot append to {TXN_TOPIC}");
            Durable(Vec::new(), Some(e))
        }
    }
}

/// Writes one job's markers once the records before it are durable, then reports them
/// written (which emits the Complete record).
async fn write_markers(
    state: Arc<BrokerState>,
    job: MarkerJob,
    prepare: Vec<(Arc<UnifiedLog>, i64)>,
) {
    let st = state.clone();
    let j = job.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
        for (log, end) in &prepare {
            log.flush_to(*end)?;
        }
        let mut ends = Vec::with_capacity(j.partitions.len());
        for (topic, partition) in &j.partitions {
            let log = st.logs.topic(topic).and_then(|t| {
                usize::try_from(*partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i).cloned())
            });
            let Some(log) = log else {
                continue; // the topic was deleted: nothing left to mark
            };
            let outcome = if topic == OFFSETS_TOPIC {
                st.groups
                    .write_marker(&log, j.producer_id, j.producer_epoch, j.commit)
            } else {
                log.append_marker(j.producer_id, j.producer_epoch, j.commit, 0, now_ms())
            };
            match outcome {
                Ok(o) => ends.push((log, o.last_offset + 1)),
                // The partition has seen a newer epoch of this producer: its transaction
                // there was already ended.
                Err(StorageError::InvalidProducerEpoch(e)) => {
                    tracing::warn!(topic, partition, error = %e, "stale transaction marker skipped")
                }
                Err(StorageError::UnknownTopic(_)) => {}
                Err(e) => return Err(e),
            }
        }
        st.notify_appended();
        for (log, end) in ends {
            log.flush_to(end)?;
        }
        Ok(())
    })
    .await;
    match written {
        Ok(Ok(())) => {
            let (_, durable) = state.txns.call(&state, |c, now| {
                c.markers_written(
                    &job.transactional_id,
                    job.producer_id,
                    job.producer_epoch,
                    now,
                )
            });
            if let Err(e) = durable.wait().await {
                tracing::warn!(error = %e, "transaction completion not durable");
            }
        }
        Ok(Err(e)) => tracing::error!(
            transactional_id = job.transactional_id,
            error = %e,
            "cannot write transaction markers; they are written again at the next start"
        ),
        Err(e) => tracing::error!(error = %e, "transaction marker task failed"),
    }
}

/// The transaction topic, created on first use: compacted, one partition per
/// `transaction.state.log.num.partitions`.
pub(crate) fn txn_topic(
    state: &BrokerState,
    partitions: i32,
) -> Result<Arc<sluice_storage::Topic>, StorageError> {
    internal_topic::ensure(
        state,
        TXN_TOPIC,
        partitions,
        state.config.txn_topic_segment_bytes,
        TXN_TOPIC_MESSAGE_MAX_BYTES,
    )
}

/// Appends records in emission order, one batch per run of records for one partition.
fn append(
    state: &BrokerState,
    partitions: i32,
    records: Vec<Record>,
) -> Result<Vec<(Arc<UnifiedLog>, i64)>, StorageError> {
    let topic = txn_topic(state, partitions)?;
    let now = now_ms();
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut ends = Vec::new();
    for (p, records) in by_partition {
        let log = usize::try_from(p)
            .ok()
            .and_then(|i| topic.partitions.get(i))
            .ok_or_else(|| StorageError::Io(format!("{TXN_TOPIC} has no partition {p}")))?;
        let mut builder = BatchBuilder::new(now);
        for r in &records {
            builder.push(NewRecord {
                key: Some(r.key.to_vec()),
                value: r.value.as_ref().map(|v| v.to_vec()),
                ..NewRecord::default()
            });
        }
        let outcome = log.append(&builder.build(), now)?;
        ends.push((log.clone(), outcome.last_offset + 1));
    }
    Ok(ends)
}
