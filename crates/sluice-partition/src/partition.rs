//! One partition as the broker serves it (Kafka's `Partition`): its log, the leader epoch, the
//! high watermark kept apart from the log end offset, the last stable offset, the rule that
//! decides when an appended batch counts as committed, and the operations parked on it (a
//! produce waiting for its commit, a fetch waiting for bytes), woken by this partition alone.
//!
//! Invariants, asserted where they change: log start <= high watermark <= log end offset;
//! last stable offset <= high watermark; the leader epoch and the high watermark never go
//! back.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sluice_storage::{
    ActiveProducer, AppendOutcome, CleanStats, CleanerConfig, FileSlice, Isolation, LogConfig,
    StorageError, Throttle, UnifiedLog,
};
use tokio::sync::Notify;

use crate::flusher::{FlushWait, Flusher};

/// The leader of a partition no broker leads (Kafka's -1).
pub const NO_LEADER: i32 = -1;

/// When an appended batch counts as committed: the partition's high watermark moves to it.
/// On a single node the leader is the only in-sync replica, so an append is committed at
/// once ([`CommitOnAppend`]); with replication the rule waits for the in-sync replicas.
/// Durability (the fsync acks=all waits for) is separate: see [`Partition::committed`].
pub trait CommitRule: Send + Sync + fmt::Debug {
    /// An append to `partition` ended at `end_offset`. The rule calls
    /// [`Partition::advance_high_watermark`] now or later.
    fn appended(&self, partition: &Arc<Partition>, end_offset: i64);
}

/// The rule of the cluster: the leader's high watermark moves as far as its in-sync
/// replicas hold the log (at once with an ISR of one; see [`Partition::assign`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitOnAppend;

impl CommitRule for CommitOnAppend {
    fn appended(&self, partition: &Arc<Partition>, end_offset: i64) {
        partition.commit_append(end_offset);
    }
}

/// Commits only when told to, while held: the seam for tests that prove readers and acks=all
/// never see what is not committed (the shape of a commit that waits for replicas). Not
/// held, it commits at once like [`CommitOnAppend`].
#[derive(Debug, Default)]
pub struct ManualCommit {
    held: std::sync::atomic::AtomicBool,
    pending: Mutex<Vec<(Arc<Partition>, i64)>>,
}

impl ManualCommit {
    /// A rule that holds every append until [`ManualCommit::release`].
    pub fn held() -> Self {
        let rule = Self::default();
        rule.hold();
        rule
    }

    /// From now on, appends wait for [`ManualCommit::release`].
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Appends held so far.
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    /// Commits everything held, and everything appended from now on at once.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        for (partition, end) in pending {
            partition.advance_high_watermark(end);
        }
    }
}

impl CommitRule for ManualCommit {
    fn appended(&self, partition: &Arc<Partition>, end_offset: i64) {
        let mut pending = self.pending.lock().expect("pending lock");
        if self.held.load(Ordering::SeqCst) {
            pending.push((partition.clone(), end_offset));
        } else {
            drop(pending);
            partition.advance_high_watermark(end_offset);
        }
    }
}

/// What a read found: whole batches below the high watermark (or the last stable offset for
/// read_committed), still in their segment file, and the partition's offsets at that moment.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub records: Option<FileSlice>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For read_committed: `(producer id, first offset)` of the aborted transactions with
    /// records in the range returned, for the client to filter.
    pub aborted: Vec<(i64, i64)>,
}

/// A parked operation (a fetch waiting for bytes, a produce waiting for its commit): woken
/// by an advance of the high watermark of a partition it registered with.
#[derive(Debug, Default)]
pub struct Waiter {
    notify: Notify,
    /// When the first wake-up since the last wait came.
    woken_at: Mutex<Option<std::time::Instant>>,
}

impl Waiter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn wake(&self) {
        self.woken_at
            .lock()
            .expect("waiter lock")
            .get_or_insert_with(std::time::Instant::now);
        // A stored permit: a waiter that has not started waiting yet returns at once.
        self.notify.notify_one();
    }

    /// Waits for a wake-up; returns how long ago it came (the wake-up latency).
    pub async fn wait(&self) -> std::time::Duration {
        self.notify.notified().await;
        self.woken_at
            .lock()
            .expect("waiter lock")
            .take()
            .map_or(std::time::Duration::ZERO, |at| at.elapsed())
    }
}

/// Parked operations: each registers a [`Waiter`] of its own; an advance of the high
/// watermark wakes every one registered (and forgets them: a waiter registers again before
/// it checks again, so no wake-up is lost between its check and its wait).
#[derive(Default)]
pub(crate) struct Waiters(Mutex<Vec<Weak<Waiter>>>);

/// Dropped waiters (a fetch that timed out elsewhere) and repeated ones are swept whenever
/// the list reaches a power of two from this on.
pub(crate) const WAITERS_SWEEP_AT: usize = 64;

impl Waiters {
    pub(crate) fn register(&self, waiter: &Arc<Waiter>) {
        let mut list = self.0.lock().expect("waiters lock");
        if list.len() >= WAITERS_SWEEP_AT && list.len().is_power_of_two() {
            // Gone, or registered again since (a fetch re-registers each time it wakes).
            let mut seen = std::collections::HashSet::new();
            list.retain(|w| w.strong_count() > 0 && seen.insert(w.as_ptr()));
        }
        list.push(Arc::downgrade(waiter));
    }

    pub(crate) fn wake(&self) {
        let list = std::mem::take(&mut *self.0.lock().expect("waiters lock"));
        for waiter in list.iter().filter_map(Weak::upgrade) {
            waiter.wake();
        }
    }

    fn len(&self) -> usize {
        self.0.lock().expect("waiters lock").len()
    }
}

/// Where a transactional write stands while its remote coordinator verifies it (KIP-890).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The producer's transaction is already open here: it stays valid until its marker.
    InTransaction,
    /// A guard token, valid until the producer's next marker here.
    Guard(u64),
}

/// One partition of a topic, led by this broker.
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    pub(crate) log: Arc<UnifiedLog>,
    leader_epoch: AtomicI32,
    /// The broker the cluster metadata names as this partition's leader, or
    /// [`NO_LEADER`] until the metadata says (or while no broker leads it).
    pub(crate) leader: AtomicI32,
    high_watermark: AtomicI64,
    pub(crate) waiters: Waiters,
    /// Followers' fetches parked for the next append.
    pub(crate) appended: Waiters,
    /// Leader, follower or neither, as the cluster metadata says.
    pub(crate) role: Mutex<crate::replica::Role>,
    /// Whether the metadata has assigned this partition since it was opened.
    pub(crate) assigned: std::sync::atomic::AtomicBool,
    /// Held while the high watermark moves and while the log shrinks under it (a full
    /// truncation or a replica's removal, which then set it back): an advance computed
    /// against the log before it shrank can then never land after it.
    hw_lock: Mutex<()>,
    /// Whether the metadata's last word placed a replica of this partition on this broker
    /// (true until the metadata speaks).
    pub(crate) hosted: std::sync::atomic::AtomicBool,
    /// KIP-890's verification guards: by producer id, the token of a transactional write
    /// being verified with a remote transaction coordinator. A marker for the producer
    /// removes it, so a write verified before the marker cannot land after it.
    verifying: Mutex<std::collections::HashMap<i64, u64>>,
    next_guard: std::sync::atomic::AtomicU64,
    /// The high watermark the last run checkpointed (-1: none): where a replicated
    /// partition's starts at its first assignment.
    pub(crate) restored_high_watermark: AtomicI64,
    commit: Arc<dyn CommitRule>,
    flusher: Flusher,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .field("leader_epoch", &self.leader_epoch())
            .field("leader", &self.leader())
            .field("high_watermark", &self.high_watermark())
            .field("log_end_offset", &self.log_end_offset())
            .finish()
    }
}

impl Partition {
    /// A partition over an opened log. Everything recovered is committed: on one node the
    /// log is the whole in-sync replica set.
    pub(crate) fn new(
        topic: Arc<str>,
        index: i32,
        log: Arc<UnifiedLog>,
        leader_epoch: i32,
        restored_high_watermark: Option<i64>,
        commit: Arc<dyn CommitRule>,
        flusher: Flusher,
    ) -> Self {
        let high_watermark = log.log_end_offset();
        // Never behind the epochs that already wrote here: appends in an older epoch would
        // rewrite the leader epoch history.
        let leader_epoch = leader_epoch.max(log.latest_epoch().unwrap_or(-1));
        log.assign_leader_epoch(leader_epoch);
        Self {
            topic,
            index,
            log,
            leader_epoch: AtomicI32::new(leader_epoch),
            leader: AtomicI32::new(NO_LEADER),
            high_watermark: AtomicI64::new(high_watermark),
            waiters: Waiters::default(),
            appended: Waiters::default(),
            role: Mutex::new(crate::replica::Role::default()),
            assigned: std::sync::atomic::AtomicBool::new(false),
            hosted: std::sync::atomic::AtomicBool::new(true),
            hw_lock: Mutex::new(()),
            verifying: Mutex::new(std::collections::HashMap::new()),
            next_guard: std::sync::atomic::AtomicU64::new(1),
            restored_high_watermark: AtomicI64::new(restored_high_watermark.unwrap_or(-1)),
            commit,
            flusher,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    /// The same log: used to tell a partition that survived a topic change from a new one.
    pub(crate) fn same_log(&self, log: &Arc<UnifiedLog>) -> bool {
        Arc::ptr_eq(&self.log, log)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Moves to a new leader epoch. Epochs only grow.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.follow_leader_epoch(epoch);
        self.log.assign_leader_epoch(epoch);
    }

    /// The partition's leader epoch moves to `epoch` (never back) without marking it in the
    /// log's epoch cache: what a follower does, whose cache only the copied batches fill.
    pub(crate) fn follow_leader_epoch(&self, epoch: i32) {
        let before = self.leader_epoch.fetch_max(epoch, Ordering::AcqRel);
        assert!(
            epoch >= before,
            "leader epoch of {}-{} went back from {before} to {epoch}",
            self.topic,
            self.index
        );
    }

    /// The leader the cluster metadata names, or [`NO_LEADER`].
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
    }

    /// Takes this partition out of service: no broker leads it here (a log whose epochs
    /// the metadata does not match). Epochs only grow.
    pub fn set_no_leader(&self) {
        // Assigned: out of service, not a lone log that commits on append.
        self.assigned.store(true, Ordering::Release);
        self.leader.store(NO_LEADER, Ordering::Release);
        *self.role.lock().expect("role lock") = crate::replica::Role::Unassigned;
        self.waiters.wake();
    }

    /// Starts the high watermark again from `offset` (at most the log end), back if need
    /// be: at the first assignment of a replicated partition, before anyone reads it
    /// (handlers serve a partition only once the metadata names this broker its leader),
    /// and on a follower whose emptied log starts again below it.
    pub(crate) fn reset_high_watermark(&self, offset: i64) {
        let _moving = self.hw_lock.lock().expect("high watermark lock");
        let target = offset.clamp(0, self.log.log_end_offset());
        self.high_watermark.store(target, Ordering::Release);
    }

    /// Runs `shrink` (which may cut the log below the high watermark) and then sets the
    /// high watermark to what `reset` gives, with no advance in between.
    pub(crate) fn shrink_log<T>(
        &self,
        shrink: impl FnOnce() -> Result<T, StorageError>,
        reset: impl FnOnce(&T) -> Option<i64>,
    ) -> Result<T, StorageError> {
        let _moving = self.hw_lock.lock().expect("high watermark lock");
        let done = shrink()?;
        if let Some(offset) = reset(&done) {
            let target = offset.clamp(0, self.log.log_end_offset());
            self.high_watermark.store(target, Ordering::Release);
        }
        Ok(done)
    }

    /// Where leader epoch `epoch` ends in this log (Kafka's `endOffsetFor`): the largest
    /// epoch at or below it that wrote here, and the offset its records end at. `None` if
    /// every epoch here is newer.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(epoch)
    }

    /// Offsets below this are committed: readers see them, acks=all may count them.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Advances the high watermark to `offset` (capped by the log end offset; never back) and
    /// wakes the operations parked on this partition if it moved.
    pub fn advance_high_watermark(&self, offset: i64) {
        let _moving = self.hw_lock.lock().expect("high watermark lock");
        let log_end = self.log.log_end_offset();
        let target = offset.min(log_end);
        let before = self.high_watermark.fetch_max(target, Ordering::AcqRel);
        let now = before.max(target);
        assert!(
            now <= log_end,
            "high watermark {now} of {}-{} past the log end offset {log_end}",
            self.topic,
            self.index
        );
        if target > before {
            self.waiters.wake();
        }
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// Below this every transaction has ended, and everything is committed.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        let lso = self.log.last_stable_offset().min(hw);
        debug_assert!(
            lso <= hw,
            "last stable offset {lso} past high watermark {hw}"
        );
        lso
    }

    /// Appends client batches in the current leader epoch and lets the commit rule decide
    /// when they are committed.
    pub fn append(
        self: &Arc<Self>,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        self.append_in_epoch(records, now_ms)
            .map(|(outcome, _)| outcome)
    }

    /// [`Partition::append`], also returning the leader epoch the batches were stamped with:
    /// the check that this broker leads, the epoch and the write happen under the role lock,
    /// so that a change of leadership comes wholly before or wholly after them.
    pub fn append_in_epoch(
        self: &Arc<Self>,
        records: &[u8],
        now_ms: i64,
    ) -> Result<(AppendOutcome, i32), StorageError> {
        let role = self.role.lock().expect("role lock");
        if !self.may_append_under(&role) {
            return Err(StorageError::NotLeader);
        }
        self.append_holding(role, records, now_ms)
    }

    /// The append itself, with the role lock held (and released before waking anyone).
    fn append_holding(
        self: &Arc<Self>,
        role: std::sync::MutexGuard<'_, crate::replica::Role>,
        records: &[u8],
        now_ms: i64,
    ) -> Result<(AppendOutcome, i32), StorageError> {
        let epoch = self.leader_epoch();
        let outcome = self.log.append_in_epoch(records, epoch, now_ms)?;
        drop(role);
        self.appended.wake();
        self.commit.appended(self, outcome.last_offset + 1);
        Ok((outcome, epoch))
    }

    /// Starts the verification of a transactional write of `producer_id` at `epoch` with its
    /// (remote) transaction coordinator; see [`Verification`].
    pub fn begin_verification(&self, producer_id: i64, epoch: i16) -> Verification {
        let _role = self.role.lock().expect("role lock");
        if self.log.in_transaction(producer_id, epoch) {
            return Verification::InTransaction;
        }
        let mut verifying = self.verifying.lock().expect("verification lock");
        let token = *verifying.entry(producer_id).or_insert_with(|| {
            self.next_guard
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        Verification::Guard(token)
    }

    /// Drops every verification guard (the leader epoch changed).
    pub(crate) fn clear_verifications(&self) {
        self.verifying.lock().expect("verification lock").clear();
    }

    /// The coordinator said the write is not part of the producer's transaction: its guard
    /// goes (unless a newer verification replaced it).
    pub fn end_verification(&self, producer_id: i64, verification: Verification) {
        if let Verification::Guard(token) = verification {
            let mut verifying = self.verifying.lock().expect("verification lock");
            if verifying.get(&producer_id) == Some(&token) {
                verifying.remove(&producer_id);
            }
        }
    }

    /// Whether a write verified as `verification` may still join the producer's transaction
    /// here: it is open, or no marker came since the verification began. A caller that
    /// appends after asking must keep markers out meanwhile (as [`Partition::append_verified`]
    /// does with the role lock, and the group coordinator with its own).
    pub fn verification_holds(
        &self,
        producer_id: i64,
        epoch: i16,
        verification: Verification,
    ) -> bool {
        self.log.in_transaction(producer_id, epoch)
            || match verification {
                Verification::Guard(token) => {
                    self.verifying
                        .lock()
                        .expect("verification lock")
                        .get(&producer_id)
                        == Some(&token)
                }
                Verification::InTransaction => false,
            }
    }

    /// [`Partition::append_in_epoch`] of a transactional write its coordinator verified:
    /// refused with INVALID_TXN_STATE if the producer's transaction here ended since the
    /// verification began (its marker came in between).
    pub fn append_verified(
        self: &Arc<Self>,
        records: &[u8],
        now_ms: i64,
        producer_id: i64,
        epoch: i16,
        verification: Verification,
    ) -> Result<(AppendOutcome, i32), StorageError> {
        let role = self.role.lock().expect("role lock");
        if !self.may_append_under(&role) {
            return Err(StorageError::NotLeader);
        }
        if !self.verification_holds(producer_id, epoch, verification) {
            return Err(StorageError::InvalidTxnState(format!(
                "the transaction of producer {producer_id} ended while its write was verified"
            )));
        }
        self.append_holding(role, records, now_ms)
    }

    /// Appends a transaction marker (from the transaction coordinator only). Only where
    /// this broker leads, or before the metadata has assigned the partition (a lone log):
    /// a marker written into a follower's log would diverge from its leader's.
    pub fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let role = self.role.lock().expect("role lock");
        if !self.may_append_under(&role) {
            return Err(StorageError::NotLeader);
        }
        self.verifying
            .lock()
            .expect("verification lock")
            .remove(&producer_id);
        let outcome = self.log.append_marker_in_epoch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            self.leader_epoch(),
            now_ms,
        )?;
        drop(role);
        self.appended.wake();
        self.commit.appended(self, outcome.last_offset + 1);
        Ok(outcome)
    }

    /// Every offset below this is durable on this broker's disk.
    pub fn durable_end(&self) -> i64 {
        self.log.recovery_point()
    }

    /// Registers a wait for every offset below `end_offset` to be durable on this broker's
    /// disk. Registered now, so several partitions share the flusher's next pass.
    pub fn flush(&self, end_offset: i64) -> FlushWait {
        self.flusher.flush(self.log.clone(), end_offset)
    }

    /// Completes when every offset below `end_offset` is durable and committed: what
    /// acks=all waits for. The caller bounds the wait (the produce timeout).
    pub async fn committed(&self, end_offset: i64) -> Result<(), StorageError> {
        self.flush(end_offset).wait().await?;
        self.wait_for_high_watermark(end_offset).await;
        Ok(())
    }

    /// Completes once the high watermark reaches `offset`.
    pub async fn wait_for_high_watermark(&self, offset: i64) {
        if self.high_watermark() >= offset {
            return;
        }
        let waiter = Waiter::new();
        loop {
            self.register(&waiter);
            if self.high_watermark() >= offset {
                return;
            }
            waiter.wait().await;
        }
    }

    /// Completes with `true` once the high watermark reaches `offset` while `leader` leads
    /// this partition in `epoch` (the one the records were appended in), or `false` as soon
    /// as it no longer does: its appends may then never be committed (a new leader may have
    /// cut them, even if this broker leads again later).
    pub async fn wait_for_commit(&self, offset: i64, leader: i32, epoch: i32) -> bool {
        let waiter = Waiter::new();
        loop {
            self.register(&waiter);
            if self.leader() != leader || self.leader_epoch() != epoch {
                return false;
            }
            if self.high_watermark() >= offset {
                return true;
            }
            waiter.wait().await;
        }
    }

    /// Parks `waiter`: it is notified at the next advance of the high watermark. Register
    /// before checking the partition, then wait: an advance in between is not lost.
    pub fn register(&self, waiter: &Arc<Waiter>) {
        self.waiters.register(waiter);
    }

    /// Operations parked on this partition (for tests and metrics).
    pub fn parked(&self) -> usize {
        self.waiters.len()
    }

    /// Whole batches from the one holding `offset`, none at or past the high watermark (or
    /// the last stable offset, read_committed), at most `max_bytes` unless `min_one_batch`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<PartitionRead, StorageError> {
        let hw = self.high_watermark();
        let read = self
            .log
            .read_slice_below(offset, hw, max_bytes, min_one_batch, isolation)?;
        debug_assert!(read.end_offset <= hw && read.last_stable_offset <= hw);
        Ok(PartitionRead {
            records: read.records,
            high_watermark: read.end_offset,
            last_stable_offset: read.last_stable_offset,
            log_start_offset: read.log_start_offset,
            aborted: read
                .aborted
                .iter()
                .map(|a| (a.producer_id, a.first_offset))
                .collect(),
        })
    }

    /// [`Partition::read`] into memory, read_uncommitted: for the coordinators' replay and the
    /// admin message browser.
    pub fn read_bytes(&self, offset: i64, max_bytes: usize) -> Result<Vec<u8>, StorageError> {
        let read = self.read(offset, max_bytes, true, Isolation::ReadUncommitted)?;
        match read.records {
            Some(slice) => Ok(slice.to_vec()?),
            None => Ok(Vec::new()),
        }
    }

    pub fn config(&self) -> LogConfig {
        self.log.config()
    }

    /// Whether the topic lists this partition's replica on `broker` as throttled: as a
    /// leader sending to out-of-sync followers (`leader.replication.throttled.replicas`),
    /// or, with `leader` false, as an out-of-sync follower fetching
    /// (`follower.replication.throttled.replicas`), as Kafka reads those lists.
    pub fn throttled_replica(&self, leader: bool, broker: i32) -> bool {
        self.log.with_config(|c| {
            let listed = if leader {
                &c.leader_replication_throttled_replicas
            } else {
                &c.follower_replication_throttled_replicas
            };
            listed.contains(self.index, broker)
        })
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.log.active_producers()
    }

    pub fn producer_count(&self) -> usize {
        self.log.producer_count()
    }

    /// Open transactions: (producer id, first offset), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.log.open_transactions()
    }

    /// The offset and timestamp of the first committed record at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let hw = self.high_watermark();
        Ok(self
            .log
            .offset_for_timestamp(timestamp)?
            .filter(|&(offset, _)| offset < hw))
    }

    /// The first record with the largest timestamp (KIP-734), if committed.
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let hw = self.high_watermark();
        Ok(self
            .log
            .max_timestamp_record()?
            .filter(|&(offset, _)| offset < hw))
    }

    /// One cleaner pass over this partition (compacted topics).
    pub fn clean(
        &self,
        now_ms: i64,
        cleaner: &CleanerConfig,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanStats>, StorageError> {
        self.log.clean(now_ms, cleaner, throttle)
    }

    pub(crate) fn log(&self) -> &Arc<UnifiedLog> {
        &self.log
    }
}
