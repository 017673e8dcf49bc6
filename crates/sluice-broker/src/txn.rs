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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_partition::{Partition, StorageError};
use sluice_txn::{MarkerJob, Record, TransactionCoordinator, TxnConfig};
use tokio::sync::oneshot;

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
    /// EndTxn requests waiting for their transaction's markers, by transactional id.
    completions: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
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
            completions: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves when the transaction of `transactional_id` now being ended has its markers
    /// written (or is dropped if the caller finds nothing to wait for). Register before the
    /// EndTxn call, so a fast completion cannot be missed.
    pub fn on_complete(&self, transactional_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(transactional_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    fn completed(&self, transactional_id: &str) {
        let waiters = self
            .completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(transactional_id);
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
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
        let topic = state.replicas.topic(TXN_TOPIC);
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
    // After a failed append the coordinator re-queues the completion of transactions whose
    // markers are already durable: those jobs run too, with nothing to wait for.
    let prepare = appended.clone().unwrap_or_default();
    for job in jobs {
        tokio::spawn(write_markers(state.clone(), job, prepare.clone()));
    }
    match appended {
        Ok(ends) => Durable(
            ends.into_iter()
                .map(|(log, end)| crate::groups::Appended::new(log, end))
                .collect(),
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot append to {TXN_TOPIC}");
            Durable(Vec::new(), Some(e))
        }
    }
}

/// The first pause before a failed marker job is tried again; it doubles up to
/// [`MARKER_RETRY_MAX`].
const MARKER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const MARKER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes one job's markers once the records before it are durable, then reports them
/// written (which emits the Complete record) and wakes the EndTxn waiting for them. A
/// failure is retried with backoff until the markers are written, the data directory goes
/// offline (a restart then redoes the job from the Prepare record) or the broker stops:
/// until then the transaction's partitions cannot move their last stable offset.
async fn write_markers(
    state: Arc<BrokerState>,
    job: MarkerJob,
    prepare: Vec<(Arc<Partition>, i64)>,
) {
    let mut pause = MARKER_RETRY_FIRST;
    loop {
        match try_write_markers(&state, &job, &prepare).await {
            Ok(()) => break,
            Err(e) => {
                let stopping = *state.shutdown.borrow() || state.replicas.is_offline();
                tracing::error!(
                    transactional_id = job.transactional_id,
                    error = %e,
                    retry_in_ms = if stopping { None } else { Some(pause.as_millis() as u64) },
                    "cannot write transaction markers"
                );
                if stopping {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MARKER_RETRY_MAX);
            }
        }
    }
    let (_, durable) = state.txns.call(&state, |c, now| {
        c.markers_written(
            &job.transactional_id,
            job.producer_id,
            job.producer_epoch,
            now,
        )
    });
    state.txns.completed(&job.transactional_id);
    if let Err(e) = durable.wait().await {
        tracing::warn!(error = %e, "transaction completion not durable");
    }
}

/// One attempt: the Prepare record durable, every marker appended, every marker durable.
/// Repeating a marker after a partial attempt is harmless: the second one ends nothing.
async fn try_write_markers(
    state: &Arc<BrokerState>,
    job: &MarkerJob,
    prepare: &[(Arc<Partition>, i64)],
) -> Result<(), StorageError> {
    for (log, end) in prepare {
        log.flush(*end).wait().await?;
    }
    let st = state.clone();
    let j = job.clone();
    let appended = tokio::task::spawn_blocking(move || append_markers(&st, &j))
        .await
        .map_err(|e| StorageError::Io(format!("marker task failed: {e}")))??;
    // Register every partition first, so they share the flusher's next pass.
    let waits: Vec<_> = appended
        .into_iter()
        .map(|(log, end)| log.flush(end))
        .collect();
    for w in waits {
        w.wait().await?;
    }
    Ok(())
}

/// Appends the markers of `job`; returns each log with the offset to make durable.
fn append_markers(
    state: &BrokerState,
    job: &MarkerJob,
) -> Result<Vec<(Arc<Partition>, i64)>, StorageError> {
    let mut ends = Vec::with_capacity(job.partitions.len());
    for (topic, partition) in &job.partitions {
        let log = state
            .replicas
            .topic(topic)
            .and_then(|t| t.partition(*partition).cloned());
        let Some(log) = log else {
            continue; // the topic was deleted: nothing left to mark
        };
        let (pid, epoch, commit) = (job.producer_id, job.producer_epoch, job.commit);
        let outcome = if topic == OFFSETS_TOPIC {
            state
                .groups
                .write_marker(&log, *partition, pid, epoch, commit)
        } else {
            log.append_marker(pid, epoch, commit, 0, now_ms())
        };
        match outcome {
            Ok(o) => ends.push((log, o.last_offset + 1)),
            // The partition has seen a newer epoch of this producer: its transaction there
            // was already ended.
            Err(StorageError::InvalidProducerEpoch(e)) => {
                tracing::warn!(topic, partition, error = %e, "stale transaction marker skipped")
            }
            Err(StorageError::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ends)
}

/// The transaction topic, created on first use: compacted, one partition per
/// `transaction.state.log.num.partitions`.
pub(crate) fn txn_topic(
    state: &BrokerState,
    partitions: i32,
) -> Result<Arc<sluice_partition::Topic>, StorageError> {
    // One replica until the transaction coordinator moves with its partitions' leaders
    // (markers to remote leaders are not written yet).
    internal_topic::ensure(
        state,
        TXN_TOPIC,
        partitions,
        1,
        state.config.txn_topic_segment_bytes,
        TXN_TOPIC_MESSAGE_MAX_BYTES,
    )
}

/// Appends the coordinator's records in emission order.
fn append(
    state: &BrokerState,
    partitions: i32,
    records: Vec<Record>,
) -> Result<Vec<(Arc<Partition>, i64)>, StorageError> {
    let topic = txn_topic(state, partitions)?;
    internal_topic::append(&topic, TXN_TOPIC, records, now_ms())
}
