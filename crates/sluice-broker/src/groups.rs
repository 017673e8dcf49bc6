//! The shell around the group coordinator: the clock, the waiters of parked requests, and the
//! `__consumer_offsets` log the coordinator's records go to and are replayed from.
//!
//! Every call runs under one lock: the coordinator decides, its records are appended to their
//! partitions in the order it emitted them (so the log replays to the same state), and parked
//! requests it answered are woken. The durability wait happens after the lock is released:
//! an offset commit is acknowledged only once its record is fsynced, exactly like a produce
//! with acks=all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sluice_group::{
    CoordinatorConfig, GroupCoordinator, JoinResponse, Output, Record, SyncResponse, WaiterId,
};
use sluice_partition::{Partition, ReplicaManager, StorageError};
use tokio::sync::oneshot;

use crate::internal_topic::{self, ReplayCounts};
use crate::{now_ms, BrokerState};
use sluice_partition::FlushWait;

/// A committed offset and how far behind the partition's end it is.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OffsetLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub log_end_offset: i64,
    pub lag: i64,
    pub metadata: String,
}

/// A group's committed offsets with their lag; see [`Groups::lags`].
#[derive(Debug, Clone)]
pub(crate) struct GroupLag {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub members: usize,
    /// The sum of `offsets[].lag`.
    pub lag: i64,
    pub offsets: Vec<OffsetLag>,
}

/// The internal topic holding committed offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often sessions and rebalance timers are checked: the resolution of every group timer.
/// The longest the group timers sleep between looks at the coordinator's next deadline.
pub(crate) const TICK_MS: u64 = 100;

/// `max.message.bytes` of the offsets topic: room for the group record of a large group.
const OFFSETS_TOPIC_MESSAGE_MAX_BYTES: usize = 16 << 20;

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

struct Inner {
    coordinator: GroupCoordinator,
    waiters: HashMap<WaiterId, Waiter>,
    next_waiter: WaiterId,
}

/// A reply now, or one a parked request will get.
pub(crate) enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// How long a coordinator's append may wait for its in-sync replicas.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Records a coordinator appended to one partition of its topic, up to `end`.
pub(crate) struct Appended {
    partition: Arc<sluice_partition::Partition>,
    end: i64,
    /// The leader and leader epoch when they were appended: they count only if it still
    /// leads in that epoch once committed.
    leader: i32,
    epoch: i32,
    flush: FlushWait,
}

impl Appended {
    /// The same wait once more (a wait is used up by waiting): for the same records, leader
    /// and epoch.
    pub(crate) fn again(&self) -> Self {
        Self {
            partition: self.partition.clone(),
            end: self.end,
            leader: self.leader,
            epoch: self.epoch,
            flush: self.partition.flush(self.end),
        }
    }

    /// Read right after the append, outside its lock: a change of leadership in between
    /// makes the wait fail (the epoch moved on) rather than succeed wrongly, unless the
    /// leadership left and came back in that instant.
    pub(crate) fn new(partition: Arc<sluice_partition::Partition>, end: i64) -> Self {
        let flush = partition.flush(end);
        Self {
            leader: partition.leader(),
            epoch: partition.leader_epoch(),
            partition,
            end,
            flush,
        }
    }
}

/// Waits for the records a call appended to be durable: fsynced here, and committed (on
/// every in-sync replica of their partition), as acks=all is.
pub(crate) struct Durable(pub Vec<Appended>, pub Option<StorageError>);

impl Durable {
    pub async fn wait(self) -> Result<(), StorageError> {
        if let Some(e) = self.1 {
            return Err(e);
        }
        for a in self.0 {
            a.flush.wait().await?;
            let committed = a.partition.wait_for_commit(a.end, a.leader, a.epoch);
            match tokio::time::timeout(COMMIT_WAIT, committed).await {
                Ok(true) => {}
                Ok(false) => return Err(StorageError::NotLeader),
                Err(_) => {
                    return Err(StorageError::Io(format!(
                        "not committed on the in-sync replicas within {COMMIT_WAIT:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

pub(crate) struct Groups {
    inner: Mutex<Inner>,
    /// False until `__consumer_offsets` has been replayed, and while it is again.
    loaded: AtomicBool,
    /// Set when this broker gains the leadership of a partition of `__consumer_offsets`: a
    /// replay under way must start again.
    stale: AtomicBool,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("loaded", &self.loaded.load(Ordering::Relaxed))
            .finish()
    }
}

impl Groups {
    pub fn new(mut config: CoordinatorConfig) -> Self {
        // Member ids must not repeat across restarts, or a new member could take the id of
        // one replayed from the log.
        config.seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Self {
            inner: Mutex::new(Inner {
                coordinator: GroupCoordinator::new(config),
                waiters: HashMap::new(),
                next_waiter: 1,
            }),
            loaded: AtomicBool::new(false),
            stale: AtomicBool::new(false),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` against the coordinator at the current time, then appends the records it
    /// emitted and wakes the requests it answered.
    pub fn call<R>(
        &self,
        state: &BrokerState,
        f: impl FnOnce(&mut GroupCoordinator, i64) -> R,
    ) -> (R, Durable) {
        let mut inner = self.lock();
        let result = f(&mut inner.coordinator, now_ms());
        let durable = inner.settle(state);
        (result, durable)
    }

    /// Like [`Groups::call`] for a JoinGroup: `f` gets a waiter id and may park the request.
    pub fn join(
        &self,
        state: &BrokerState,
        f: impl FnOnce(&mut GroupCoordinator, WaiterId, i64) -> Option<JoinResponse>,
    ) -> Reply<JoinResponse> {
        self.park(state, Waiter::Join, f)
    }

    /// Like [`Groups::join`] for a SyncGroup.
    pub fn sync(
        &self,
        state: &BrokerState,
        f: impl FnOnce(&mut GroupCoordinator, WaiterId, i64) -> Option<SyncResponse>,
    ) -> Reply<SyncResponse> {
        self.park(state, Waiter::Sync, f)
    }

    fn park<T>(
        &self,
        state: &BrokerState,
        waiter: fn(oneshot::Sender<T>) -> Waiter,
        f: impl FnOnce(&mut GroupCoordinator, WaiterId, i64) -> Option<T>,
    ) -> Reply<T> {
        let mut inner = self.lock();
        let id = inner.next_waiter;
        inner.next_waiter += 1;
        let (tx, rx) = oneshot::channel();
        inner.waiters.insert(id, waiter(tx));
        let now_answer = f(&mut inner.coordinator, id, now_ms());
        if now_answer.is_some() {
            inner.waiters.remove(&id);
        }
        let _ = inner.settle(state);
        match now_answer {
            Some(r) => Reply::Now(r),
            None => Reply::Later(rx),
        }
    }

    /// Writes producer `producer_id`'s transaction marker into a `__consumer_offsets`
    /// partition and, in the same step, applies or drops the offsets its transaction
    /// committed there, so OffsetFetch never disagrees with the log.
    pub fn write_marker(
        &self,
        log: &Arc<Partition>,
        offsets_partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<sluice_partition::AppendOutcome, StorageError> {
        let mut inner = self.lock();
        let outcome = log.append_marker(producer_id, producer_epoch, commit, 0, now_ms())?;
        inner
            .coordinator
            .complete_txn(offsets_partition, producer_id, commit);
        Ok(outcome)
    }

    /// Reads the coordinator without changing it.
    pub fn read<R>(&self, f: impl FnOnce(&GroupCoordinator) -> R) -> R {
        f(&self.lock().coordinator)
    }

    /// Every group with its member count and the lag of each committed offset, for metrics,
    /// the admin API and the console. Lag is the partition's end minus the committed offset
    /// (never negative); offsets of partitions that no longer exist are left out. The
    /// coordinator lock is released before any log is looked at.
    pub fn lags(&self, logs: &ReplicaManager) -> Vec<GroupLag> {
        self.lags_of(logs, None)
    }

    /// [`Groups::lags`] of one group only (empty if it does not exist), or of all.
    pub fn lags_of(&self, logs: &ReplicaManager, only: Option<&str>) -> Vec<GroupLag> {
        let groups = self.read(|c| {
            c.list_groups(&[])
                .into_iter()
                .filter(|g| only.is_none_or(|id| g.group_id == id))
                .map(|g| {
                    let members = c.member_count(&g.group_id);
                    let offsets = c.fetch_offsets(&g.group_id, None);
                    (g, members, offsets)
                })
                .collect::<Vec<_>>()
        });
        let mut out: Vec<GroupLag> = groups
            .into_iter()
            .map(|(listing, members, offsets)| {
                let mut offsets: Vec<OffsetLag> = offsets
                    .into_iter()
                    .filter_map(|(topic, partition, committed)| {
                        let committed = committed?;
                        // As a consumer sees the end: the high watermark.
                        let end = logs.partition(&topic, partition)?.high_watermark();
                        Some(OffsetLag {
                            lag: (end - committed.offset).max(0),
                            topic,
                            partition,
                            committed_offset: committed.offset,
                            log_end_offset: end,
                            metadata: committed.metadata,
                        })
                    })
                    .collect();
                offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                GroupLag {
                    group_id: listing.group_id,
                    state: listing.state.name(),
                    protocol_type: listing.protocol_type,
                    members,
                    lag: offsets.iter().map(|o| o.lag).sum(),
                    offsets,
                }
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// Moves the coordinator's clock at its deadlines: expires sessions, completes
    /// rebalances, expires offsets. Sleeps until the coordinator's next deadline, so a session
    /// ends when its timeout has passed, not up to a tick later; it looks again at least every
    /// [`TICK_MS`], which covers deadlines that requests set meanwhile (a session or rebalance
    /// timeout is far longer than that).
    pub async fn run_timers(state: Arc<BrokerState>) {
        let mut shutdown = state.shutdown.clone();
        loop {
            let now = crate::now_ms();
            let next = if state.groups.is_loaded() {
                state.groups.read(|c| c.next_deadline())
            } else {
                i64::MAX
            };
            if next <= now {
                let (_, durable) = state.groups.call(&state, |c, now| c.tick(now));
                if let Err(e) = durable.wait().await {
                    tracing::warn!(error = %e, "group metadata write failed");
                }
                continue;
            }
            let wait = (next - now).min(TICK_MS as i64) as u64;
            tokio::select! {
                _ = tokio::time::sleep(crate::millis(wait)) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Rebuilds the coordinator from `__consumer_offsets`, then opens it for requests.
    /// Runs on a blocking thread at start-up; requests meanwhile get
    /// COORDINATOR_LOAD_IN_PROGRESS (and FindCoordinator COORDINATOR_NOT_AVAILABLE).
    pub fn load(&self, state: &BrokerState) -> Result<(), StorageError> {
        loop {
            self.stale.store(false, Ordering::Release);
            let config = self.lock().coordinator.config().clone();
            let coordinator = Self::replayed(state, config)?;
            let mut inner = self.lock();
            if self.stale.load(Ordering::Acquire) {
                // This broker became the leader of a partition while it was read.
                continue;
            }
            inner.coordinator = coordinator;
            self.loaded.store(true, Ordering::Release);
            return Ok(());
        }
    }

    /// This broker became (or stopped being) the leader of a partition of
    /// `__consumer_offsets`: the groups stored there are its own from now on, as their log
    /// holds them (or no longer its own). From now until
    /// [`Groups::reload`] has rebuilt the coordinator, requests are answered
    /// COORDINATOR_LOAD_IN_PROGRESS. Returns whether the caller must run that reload (a
    /// load already under way starts again by itself).
    pub fn begin_reload(&self) -> bool {
        self.stale.store(true, Ordering::SeqCst);
        self.loaded.swap(false, Ordering::SeqCst)
    }

    /// Rebuilds the coordinator from `__consumer_offsets` (Kafka loads the one partition;
    /// this replays all of them), holding it meanwhile: a request that got past the loaded
    /// check before [`Groups::begin_reload`] waits and then meets the new state. Requests
    /// parked on the old state are answered COORDINATOR_NOT_AVAILABLE; clients retry.
    /// A replay that fails is tried again every second until it succeeds or the broker
    /// stops; a leadership change that comes between the last check and the opening found
    /// nothing to reload, and is taken here.
    pub fn reload(&self, state: &BrokerState) -> Result<(), StorageError> {
        loop {
            let mut inner = self.lock();
            let replayed = loop {
                self.stale.store(false, Ordering::SeqCst);
                let config = inner.coordinator.config().clone();
                match Self::replayed(state, config) {
                    Ok(c) if !self.stale.load(Ordering::SeqCst) => break Ok(c),
                    Ok(_) => continue,
                    Err(e) => break Err(e),
                }
            };
            match replayed {
                Ok(coordinator) => inner.coordinator = coordinator,
                Err(e) if *state.shutdown.borrow() => return Err(e),
                Err(e) => {
                    drop(inner);
                    tracing::error!(error = %e, "cannot load the group coordinator; retrying");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
            }
            inner.waiters.clear();
            self.loaded.store(true, Ordering::SeqCst);
            drop(inner);
            if self.stale.load(Ordering::SeqCst) && self.loaded.swap(false, Ordering::SeqCst) {
                continue;
            }
            return Ok(());
        }
    }

    /// A coordinator replayed from every partition of `__consumer_offsets` this broker leads.
    fn replayed(
        state: &BrokerState,
        mut config: CoordinatorConfig,
    ) -> Result<GroupCoordinator, StorageError> {
        let started = std::time::Instant::now();
        let topic = state.replicas.topic(OFFSETS_TOPIC);
        if let Some(topic) = &topic {
            let existing = topic.partitions.len() as i32;
            if existing != config.offsets_topic_partitions {
                tracing::warn!(
                    configured = config.offsets_topic_partitions,
                    existing,
                    "offsets.topic.num.partitions differs from the existing {OFFSETS_TOPIC}; \
                     using the existing count"
                );
                config.offsets_topic_partitions = existing;
            }
        }
        config.seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let mut coordinator = GroupCoordinator::new(config);
        let now = now_ms();
        let mut counts = ReplayCounts::default();
        for (index, log) in topic.iter().flat_map(|t| t.partitions.iter().enumerate()) {
            // Only the partitions this broker leads: the groups of the others are other
            // coordinators'.
            if log.isr().is_none() {
                continue;
            }
            // Markers are handed over separately, so `coordinator` is shared by two closures.
            let coordinator = std::cell::RefCell::new(&mut coordinator);
            internal_topic::replay(
                log,
                OFFSETS_TOPIC,
                &mut counts,
                |r| {
                    let mut c = coordinator.borrow_mut();
                    let replayed = match r.transactional_producer {
                        Some(pid) => c.replay_txn(pid, r.key, r.value),
                        None => c.replay(r.key, r.value, now),
                    };
                    replayed
                        .map_err(|e| {
                            tracing::warn!(offset = r.offset, error = %e,
                                "skipping a record of {OFFSETS_TOPIC}")
                        })
                        .is_ok()
                },
                // A transaction marker: the producer's offset commits apply or vanish.
                |pid, commit| {
                    coordinator
                        .borrow_mut()
                        .complete_txn(index as i32, pid, commit)
                },
            )?;
        }
        let (records, bad) = (counts.records, counts.skipped);
        coordinator.finish_loading(now);
        let offsets = coordinator.offset_count();
        let groups = coordinator.list_groups(&[]).len();
        tracing::info!(
            records,
            skipped = bad,
            groups,
            offsets,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
        Ok(coordinator)
    }
}

impl Inner {
    /// Wakes answered requests and appends emitted records; returns the durability wait.
    fn settle(&mut self, state: &BrokerState) -> Durable {
        for output in self.coordinator.take_outputs() {
            match output {
                Output::Join(w, r) => {
                    if let Some(Waiter::Join(tx)) = self.waiters.remove(&w) {
                        let _ = tx.send(r);
                    }
                }
                Output::Sync(w, r) => {
                    if let Some(Waiter::Sync(tx)) = self.waiters.remove(&w) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
        let records = self.coordinator.take_records();
        if records.is_empty() {
            return Durable(Vec::new(), None);
        }
        let partitions = self.coordinator.config().offsets_topic_partitions;
        let appended = append(state, partitions, records);
        self.coordinator.records_appended(appended.is_ok());
        match appended {
            Ok(waits) => Durable(waits, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot append to {OFFSETS_TOPIC}");
                Durable(Vec::new(), Some(e))
            }
        }
    }
}

/// The offsets topic, created on first use with `partitions` partitions, compacted.
pub(crate) fn offsets_topic(
    state: &BrokerState,
    partitions: i32,
) -> Result<Arc<sluice_partition::Topic>, StorageError> {
    internal_topic::ensure(
        state,
        OFFSETS_TOPIC,
        partitions,
        state.config.offsets_topic_replication_factor,
        state.config.offsets_topic_segment_bytes,
        OFFSETS_TOPIC_MESSAGE_MAX_BYTES,
    )
}

fn append(
    state: &BrokerState,
    partitions: i32,
    records: Vec<Record>,
) -> Result<Vec<Appended>, StorageError> {
    let topic = offsets_topic(state, partitions)?;
    let ends = internal_topic::append(&topic, OFFSETS_TOPIC, records, now_ms())?;
    Ok(ends
        .into_iter()
        .map(|(log, end)| Appended::new(log, end))
        .collect())
}
