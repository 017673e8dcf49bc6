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
    /// False until `__transaction_state` has been replayed, and while it is again.
    loaded: AtomicBool,
    /// Set when this broker gains or loses the leadership of a partition of
    /// `__transaction_state`: a replay under way must start again.
    stale: AtomicBool,
    /// Grows with every (re)load: a marker job of an older load stops (the newer load runs
    /// its own for the transactions it found prepared).
    generation: std::sync::atomic::AtomicU64,
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
            stale: AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
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

    /// Rebuilds the coordinator from the partitions of `__transaction_state` this broker
    /// leads, then opens it for requests and finishes the transactions that were being
    /// committed or aborted. Runs on a blocking thread at start-up.
    pub fn load(&self, state: &Arc<BrokerState>) -> Result<(), StorageError> {
        self.rebuild(state)
    }

    /// This broker became (or stopped being) the leader of a partition of
    /// `__transaction_state`: the transactional ids stored there are its own from now on (or
    /// no longer). Until [`Transactions::reload`] has rebuilt the coordinator, requests are
    /// answered COORDINATOR_LOAD_IN_PROGRESS. Returns whether the caller must run that
    /// reload (a load already under way starts again by itself).
    pub fn begin_reload(&self) -> bool {
        self.stale.store(true, Ordering::SeqCst);
        self.loaded.swap(false, Ordering::SeqCst)
    }

    /// Rebuilds the coordinator from the partitions this broker now leads; transactions
    /// found prepared get their markers, as after a restart (the previous coordinator may
    /// have died between its Prepare record and the markers). A failed replay is tried
    /// again every second until it succeeds or the broker stops: meanwhile requests are
    /// answered COORDINATOR_LOAD_IN_PROGRESS.
    pub fn reload(&self, state: &Arc<BrokerState>) -> Result<(), StorageError> {
        loop {
            match self.rebuild(state) {
                Ok(()) => return Ok(()),
                Err(e) if *state.shutdown.borrow() => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "cannot load the transaction coordinator; retrying");
                    std::thread::sleep(RELOAD_RETRY);
                }
            }
        }
    }

    /// Replays the log without holding the coordinator, swaps it in unless a leadership
    /// change came meanwhile (then replays again), and opens it. A change that comes
    /// between that check and the opening found nothing to reload; it is taken here.
    fn rebuild(&self, state: &Arc<BrokerState>) -> Result<(), StorageError> {
        loop {
            self.stale.store(false, Ordering::SeqCst);
            let config = self.lock().config().clone();
            let coordinator = replayed(state, config)?;
            let mut c = self.lock();
            if self.stale.load(Ordering::SeqCst) {
                continue; // the leadership moved while the log was read
            }
            *c = coordinator;
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.loaded.store(true, Ordering::SeqCst);
            // Transactions replayed in a Prepare state get their markers now.
            let _ = settle(&mut c, state);
            drop(c);
            if self.stale.load(Ordering::SeqCst) && self.loaded.swap(false, Ordering::SeqCst) {
                continue;
            }
            return Ok(());
        }
    }

    /// Whether `job`'s transaction is still the one this coordinator, in load `generation`,
    /// is ending: the same producer, epoch and start, in the Prepare state of its outcome.
    fn still_ending(&self, job: &Job) -> bool {
        self.generation.load(Ordering::SeqCst) == job.generation && self.read(|c| job.matches(c))
    }
}

/// How long a failed coordinator load waits before it is tried again.
const RELOAD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A marker job, with what identifies its transaction: the load it came from and when the
/// transaction started (a later transaction of the same producer epoch starts later).
struct Job {
    markers: MarkerJob,
    generation: u64,
    started_ms: i64,
}

impl Job {
    fn matches(&self, c: &TransactionCoordinator) -> bool {
        let want = if self.markers.commit {
            sluice_txn::TxnState::PrepareCommit
        } else {
            sluice_txn::TxnState::PrepareAbort
        };
        c.describe(&self.markers.transactional_id).is_some_and(|d| {
            d.state == want
                && d.producer_id == self.markers.producer_id
                && d.producer_epoch == self.markers.producer_epoch
                && d.transaction_start_ms == self.started_ms
        })
    }
}

/// A coordinator replayed from the partitions of `__transaction_state` this broker leads.
fn replayed(
    state: &Arc<BrokerState>,
    mut config: TxnConfig,
) -> Result<TransactionCoordinator, StorageError> {
    let started = std::time::Instant::now();
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
    let mut led = 0;
    for log in topic.iter().flat_map(|t| t.partitions.iter()) {
        // Only the partitions this broker leads: the other ids are other coordinators'.
        if log.isr().is_none() {
            continue;
        }
        led += 1;
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
    coordinator.finish_loading(now_ms());
    tracing::info!(
        partitions = led,
        records = counts.records,
        skipped = counts.skipped,
        transactional_ids = coordinator.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "transaction coordinator loaded"
    );
    Ok(coordinator)
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
    let generation = state.txns.generation.load(Ordering::SeqCst);
    for markers in jobs {
        // Only the job's own Prepare record: its partition of the transaction topic.
        let own = c.partition_for(&markers.transactional_id);
        let prepare = prepare
            .iter()
            .filter(|(log, _)| log.index() == own)
            .map(|(log, end)| crate::groups::Appended::new(log.clone(), *end))
            .collect();
        let started_ms = c
            .describe(&markers.transactional_id)
            .map_or(-1, |d| d.transaction_start_ms);
        let job = Job {
            markers,
            generation,
            started_ms,
        };
        tokio::spawn(write_markers(state.clone(), job, Durable(prepare, None)));
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

/// How long a partition leader may take to answer WriteTxnMarkers (it waits for the
/// markers' commit).
const MARKER_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(40);

/// Writes one job's markers once its Prepare record is committed, then reports them
/// written (which emits the Complete record) and wakes the EndTxn waiting for them.
///
/// The Prepare record must be committed (on the in-sync replicas of its partition) before
/// any marker is written: a coordinator that fails over to a replica without it would
/// otherwise abort, on timeout, a transaction whose commit markers are already out. The
/// wait goes on (a slow follower leaves the ISR within `replica.lag.time.max.ms`) until it
/// commits, or this broker loses the partition (the next coordinator finds the Prepare
/// record, if it survived, and writes the markers itself).
///
/// Before every attempt, and when reporting, the job checks that its transaction is still
/// the one this coordinator is ending (same load, producer, epoch and start): a job of an
/// older load, or for a transaction another coordinator has finished meanwhile, stops
/// rather than end a later transaction of the same producer epoch. A failed attempt is
/// retried with backoff until the markers are written, the data directory goes offline (a
/// restart redoes the job from the Prepare record), the job stops so, or the broker stops:
/// until then the transaction's partitions cannot move their last stable offset.
async fn write_markers(state: Arc<BrokerState>, job: Job, prepare: Durable) {
    let id = job.markers.transactional_id.clone();
    let mut pause = MARKER_RETRY_FIRST;
    let prepare_appended = prepare.0;
    for appended in prepare_appended {
        loop {
            let once = Durable(vec![appended.again()], None);
            match once.wait().await {
                Ok(()) => break,
                Err(StorageError::NotLeader) => {
                    tracing::warn!(
                        transactional_id = id,
                        "this broker lost the transaction's partition before its outcome \
                         committed; its markers are left to the next coordinator"
                    );
                    return;
                }
                Err(e) => {
                    if *state.shutdown.borrow() || !state.txns.still_ending(&job) {
                        return;
                    }
                    tracing::warn!(transactional_id = id, error = %e,
                        "the transaction's outcome is not committed yet; waiting on");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MARKER_RETRY_MAX);
                }
            }
        }
    }
    pause = MARKER_RETRY_FIRST;
    loop {
        let stopping = *state.shutdown.borrow()
            || state.replicas.is_offline()
            || !state.txns.still_ending(&job);
        let Some(coordinator_epoch) = coordinator_epoch(&state, &id).filter(|_| !stopping) else {
            tracing::info!(
                transactional_id = id,
                "marker job stopped: this coordinator no longer ends the transaction"
            );
            return;
        };
        match try_write_markers(&state, &job.markers, coordinator_epoch).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(
                    transactional_id = id,
                    error = %e,
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot write transaction markers"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MARKER_RETRY_MAX);
            }
        }
    }
    // Off the runtime: a reload may hold the coordinator for a while.
    let st = state.clone();
    let reported = tokio::task::spawn_blocking(move || {
        let generation = st.txns.generation.load(Ordering::SeqCst);
        st.txns.call(&st, |c, now| {
            let m = &job.markers;
            if generation == job.generation && job.matches(c) {
                c.markers_written(&m.transactional_id, m.producer_id, m.producer_epoch, now);
            }
        })
    })
    .await;
    state.txns.completed(&id);
    match reported {
        Ok((_, durable)) => {
            if let Err(e) = durable.wait().await {
                tracing::warn!(error = %e, "transaction completion not durable");
            }
        }
        Err(e) => tracing::error!(error = %e, "the marker report failed"),
    }
}

/// The leader epoch of the `__transaction_state` partition holding `transactional_id`, while
/// this broker leads it (the coordinator epoch its markers carry); `None` when another
/// broker coordinates the id.
fn coordinator_epoch(state: &BrokerState, transactional_id: &str) -> Option<i32> {
    let topic = state.replicas.topic(TXN_TOPIC)?;
    let index = sluice_txn::partition_for(transactional_id, topic.partitions.len() as i32);
    let log = topic.partition(index)?;
    (log.leader() == state.config.node_id).then(|| log.leader_epoch())
}

/// One attempt: every marker appended where this broker leads, sent to the leader where
/// another broker does, and every one committed. Repeating a marker after a partial attempt
/// is harmless: the second one ends nothing.
async fn try_write_markers(
    state: &Arc<BrokerState>,
    job: &MarkerJob,
    coordinator_epoch: i32,
) -> Result<(), StorageError> {
    // The partitions by their leader; those with none yet fail this attempt.
    let me = state.config.node_id;
    let mut local = Vec::new();
    let mut remote: std::collections::BTreeMap<i32, Vec<(String, i32)>> = Default::default();
    for (topic, partition) in &job.partitions {
        let log = state
            .replicas
            .topic(topic)
            .and_then(|t| t.partition(*partition).cloned());
        let Some(log) = log else {
            continue; // the topic was deleted: nothing left to mark
        };
        match log.leader() {
            l if l == me => local.push((topic.clone(), log)),
            sluice_partition::NO_LEADER => {
                return Err(StorageError::Io(format!(
                    "{topic}-{partition} has no leader for its transaction marker"
                )))
            }
            l => remote
                .entry(l)
                .or_default()
                .push((topic.clone(), *partition)),
        }
    }
    let st = state.clone();
    let j = job.clone();
    let local_writes = async move {
        let appended =
            tokio::task::spawn_blocking(move || append_markers(&st, &j, &local, coordinator_epoch))
                .await
                .map_err(|e| StorageError::Io(format!("marker task failed: {e}")))??;
        // Every partition registered first, so they share the flusher's next pass; then
        // each committed on its in-sync replicas.
        let durable = Durable(
            appended
                .into_iter()
                .map(|(log, end)| crate::groups::Appended::new(log, end))
                .collect(),
            None,
        );
        durable.wait().await
    };
    let remote_writes = remote.into_iter().map(|(leader, partitions)| {
        send_markers(state, job, leader, partitions, coordinator_epoch)
    });
    let (local, remote) = tokio::join!(local_writes, futures_util::future::join_all(remote_writes));
    local?;
    remote.into_iter().collect()
}

/// Sends the markers of `job` for `partitions` to their leader `leader` (WriteTxnMarkers)
/// and reads its verdict on each.
async fn send_markers(
    state: &Arc<BrokerState>,
    job: &MarkerJob,
    leader: i32,
    partitions: Vec<(String, i32)>,
    coordinator_epoch: i32,
) -> Result<(), StorageError> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    };
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for (topic, p) in partitions {
        by_topic.entry(topic).or_default().push(p);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(job.producer_id))
            .with_producer_epoch(job.producer_epoch)
            .with_transaction_result(job.commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(name, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                                name,
                            )))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let response: WriteTxnMarkersResponse = crate::cluster::peer::call_once(
        state,
        leader,
        ApiKey::WriteTxnMarkers,
        1,
        &request,
        MARKER_REQUEST_TIMEOUT,
    )
    .await
    .map_err(StorageError::Io)?;
    let refused: Vec<String> = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .filter(|(t, p)| {
            // Ended there already (a newer producer epoch), or the topic is gone.
            let done = [
                0,
                sluice_txn::codes::INVALID_PRODUCER_EPOCH,
                kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
            ];
            if p.error_code == sluice_txn::codes::INVALID_PRODUCER_EPOCH {
                tracing::warn!(
                    topic = t.name.as_str(),
                    partition = p.partition_index,
                    "stale transaction marker skipped by its leader"
                );
            }
            !done.contains(&p.error_code)
        })
        .map(|(t, p)| {
            format!(
                "{}-{}: error {}",
                t.name.as_str(),
                p.partition_index,
                p.error_code
            )
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(StorageError::Io(format!(
            "broker {leader} refused markers: {}",
            refused.join(", ")
        )))
    }
}

/// Appends the markers of `job` to `partitions` (led here); returns each log with the
/// offset to make durable.
fn append_markers(
    state: &BrokerState,
    job: &MarkerJob,
    partitions: &[(String, Arc<Partition>)],
    coordinator_epoch: i32,
) -> Result<Vec<(Arc<Partition>, i64)>, StorageError> {
    let mut ends = Vec::with_capacity(partitions.len());
    for (topic, log) in partitions {
        let (pid, epoch, commit) = (job.producer_id, job.producer_epoch, job.commit);
        let outcome = if topic == OFFSETS_TOPIC {
            state
                .groups
                .write_marker(log, log.index(), pid, epoch, commit)
        } else {
            log.append_marker(pid, epoch, commit, coordinator_epoch, now_ms())
        };
        match outcome {
            Ok(o) => ends.push((log.clone(), o.last_offset + 1)),
            // The partition has seen a newer epoch of this producer: its transaction there
            // was already ended.
            Err(StorageError::InvalidProducerEpoch(e)) => {
                tracing::warn!(topic, partition = log.index(), error = %e,
                    "stale transaction marker skipped")
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
    internal_topic::ensure(
        state,
        TXN_TOPIC,
        partitions,
        state.config.txn_topic_replication_factor,
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
