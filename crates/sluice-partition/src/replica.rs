//! A partition's place in replication (Kafka's `Partition.makeLeader`/`makeFollower`): the
//! cluster metadata makes this broker the partition's leader, one of its followers, or
//! neither. On the leader, `sluice_replication::LeaderState` decides the high watermark from
//! the followers' fetches and the ISR; appends and follower fetches move it. A follower
//! appends what it fetched as it is, truncates a divergent tail, and takes the leader's high
//! watermark as far as its own log reaches.

use std::sync::atomic::Ordering;

use sluice_replication::{
    truncation_offset, AckStatus, Elected, EpochLog, FetchAnswer, IsrChange, LeaderState,
};
use sluice_storage::{AppendOutcome, StorageError, UnifiedLog};

use crate::partition::{Partition, NO_LEADER};

/// What this broker is for a partition.
#[derive(Debug, Default)]
pub(crate) enum Role {
    /// The metadata has not named this broker leader or follower (yet).
    #[default]
    Unassigned,
    Leader(LeaderState),
    Follower {
        leader: i32,
    },
}

/// The log as replication sees it.
pub(crate) struct LogView<'a>(pub &'a UnifiedLog);

impl EpochLog for LogView<'_> {
    fn log_end_offset(&self) -> i64 {
        self.0.log_end_offset()
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.0.end_offset_for_epoch(epoch)
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.0.latest_epoch()
    }

    fn min_insync_replicas(&self) -> usize {
        self.0
            .with_config(|c| c.min_insync_replicas.max(1) as usize)
    }
}

/// The metadata's word on one partition, as the publisher hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    /// This broker.
    pub me: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: &'a [i32],
    pub isr: &'a [i32],
    /// KIP-966's eligible leader replicas, as the controller lists them.
    pub elr: &'a [i32],
}

/// How far one follower is behind its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    pub follower: i32,
    pub in_sync: bool,
    /// Records between its last fetch offset and the leader's log end.
    pub behind: i64,
}

/// What the leader answers a follower's fetch of this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaFetch {
    /// Read from the fetch offset up to the log end; `high_watermark` is the leader's.
    Records { high_watermark: i64 },
    /// The follower's log diverges: it truncates at the end of `epoch`, `end_offset`.
    Diverging { epoch: i32, end_offset: i64 },
    /// Kafka's error code for the fetch.
    Error(i16),
}

/// Kafka's error codes the replication answers use.
const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

impl Partition {
    /// Applies the cluster metadata: leader, follower or neither, in `leader_epoch`. A
    /// change of leader epoch starts the role again; a new ISR in the same epoch reaches
    /// the leader's state. The first assignment of a partition with more than one replica
    /// starts its high watermark from the one checkpointed before the restart (as far as
    /// the recovered log reaches), or from the log start without one: what was recovered
    /// past it may never have been committed, and the leader learns the rest again from
    /// its followers' fetches, a follower from the leader. Everything recovered counts as
    /// committed only where this broker is the only replica.
    /// Returns whether this broker became (`Some(true)`) or stopped being (`Some(false)`)
    /// the partition's leader.
    pub fn assign(&self, a: Assignment<'_>, now_ms: i64) -> Option<bool> {
        let mut role = self.role.lock().expect("role lock");
        self.hosted
            .store(a.replicas.contains(&a.me), Ordering::Release);
        if !self.assigned.swap(true, Ordering::AcqRel) && a.replicas.len() > 1 {
            let restored = self.restored_high_watermark.load(Ordering::Acquire);
            self.reset_high_watermark(restored.max(self.log.log_start_offset()));
        }
        let same_epoch = a.leader_epoch == self.leader_epoch();
        if a.leader_epoch < self.leader_epoch() {
            return None;
        }
        if !same_epoch {
            // Markers written under another leader never reached these guards: a write
            // verified before the change must be verified again.
            self.clear_verifications();
        }
        let was_leading = matches!(*role, Role::Leader(_));
        if a.leader == a.me && a.isr.contains(&a.me) {
            match &mut *role {
                Role::Leader(state) if same_epoch => {
                    // The ISR first: a replica a reassignment removed is out of both.
                    state.on_partition_state(a.isr, a.partition_epoch, &LogView(&self.log));
                    state.on_replicas(a.replicas, now_ms);
                    state.on_eligible_leaders(!a.elr.is_empty());
                }
                _ => {
                    self.set_leader_epoch(a.leader_epoch);
                    let elected = Elected {
                        leader_id: a.me,
                        leader_epoch: a.leader_epoch,
                        partition_epoch: a.partition_epoch,
                        replicas: a.replicas,
                        isr: a.isr,
                    };
                    let mut state = LeaderState::become_leader(
                        elected,
                        &LogView(&self.log),
                        self.high_watermark(),
                        now_ms,
                    );
                    state.on_eligible_leaders(!a.elr.is_empty());
                    // What the ISR as the metadata gives it already holds is committed:
                    // with an ISR of this broker alone, its whole log.
                    state.on_append(&LogView(&self.log));
                    *role = Role::Leader(state);
                }
            }
            let hw = match &*role {
                Role::Leader(state) => state.high_watermark(),
                _ => unreachable!("just made leader"),
            };
            self.leader.store(a.me, Ordering::Release);
            drop(role);
            self.advance_high_watermark(hw);
            return (!was_leading).then_some(true);
        }
        // A follower learns the epoch but writes nothing into its epoch cache: only the
        // batches it copies do. Stamping the new epoch at its own log end would hide an
        // unreplicated tail of the old epoch from the leader's divergence check (KIP-320),
        // and that tail would never be truncated.
        self.follow_leader_epoch(a.leader_epoch);
        self.leader.store(a.leader, Ordering::Release);
        *role = if a.replicas.contains(&a.me) && a.leader != NO_LEADER {
            Role::Follower { leader: a.leader }
        } else {
            Role::Unassigned
        };
        drop(role);
        if was_leading {
            // Produces parked here wait for a commit this broker no longer decides: wake
            // them to see that it no longer leads.
            self.waiters.wake();
        }
        was_leading.then_some(false)
    }

    /// Whether this broker holds a replica of the partition, as the metadata last said (a
    /// lone log the metadata never assigned is held).
    pub fn is_hosted(&self) -> bool {
        !self.assigned.load(Ordering::Acquire) || self.hosted.load(Ordering::Acquire)
    }

    /// Empties the log of a partition the metadata no longer places on this broker, and
    /// starts it again at 0 as a new log ([`sluice_storage::UnifiedLog::remove_all_records`]),
    /// checkpointing the recovery points, all under the role lock: only while the
    /// partition is assigned, not hosted and neither led nor followed, so that nothing is
    /// appended meanwhile. Returns whether it removed anything (a log that is empty at 0
    /// already is left as it is).
    pub(crate) fn remove_stray_records(
        &self,
        now_ms: i64,
        logs: &sluice_storage::LogManager,
    ) -> Result<bool, StorageError> {
        let role = self.role.lock().expect("role lock");
        let stray = self.assigned.load(Ordering::Acquire)
            && !self.hosted.load(Ordering::Acquire)
            && matches!(*role, Role::Unassigned);
        let empty_at_zero = self.log.log_start_offset() == 0
            && self.log.log_end_offset() == 0
            && self.log.size_bytes() == 0;
        if !stray || empty_at_zero {
            return Ok(false);
        }
        self.shrink_log(|| logs.remove_all_records(&self.log, now_ms), |_| Some(0))?;
        Ok(true)
    }

    /// The high watermark to checkpoint: the current one once the metadata has assigned a
    /// replicated partition (as leader, follower or neither), the restored one before
    /// that; none for a lone log, which commits everything it holds.
    pub fn checkpointable_high_watermark(&self) -> Option<i64> {
        let role = self.role.lock().expect("role lock");
        let restored = self.restored_high_watermark.load(Ordering::Acquire);
        if !self.assigned.load(Ordering::Acquire) {
            return (restored >= 0).then_some(restored);
        }
        match &*role {
            Role::Leader(state) if state.replicas.len() <= 1 => None,
            _ => Some(self.high_watermark()),
        }
    }

    /// Whether appends may go into this log, with the role lock held: this broker leads
    /// the partition, or the metadata has not assigned it at all (a lone log, in tests).
    pub(crate) fn may_append_under(&self, role: &Role) -> bool {
        matches!(role, Role::Leader(_)) || !self.assigned.load(Ordering::Acquire)
    }

    /// The broker this one follows for this partition, if it is a follower.
    pub fn following(&self) -> Option<i32> {
        match &*self.role.lock().expect("role lock") {
            Role::Follower { leader } => Some(*leader),
            _ => None,
        }
    }

    /// As leader: the replica count, and each follower's ISR membership and how many records
    /// it is behind this log end (for metrics); `None` if this broker does not lead.
    pub fn replica_lags(&self) -> Option<(usize, Vec<FollowerLag>)> {
        match &*self.role.lock().expect("role lock") {
            Role::Leader(state) => {
                let end = self.log.log_end_offset();
                let lags = state
                    .follower_log_ends()
                    .into_iter()
                    .map(|(b, e)| FollowerLag {
                        follower: b,
                        in_sync: state.isr.contains(&b),
                        behind: end - e.max(0),
                    })
                    .collect();
                Some((state.replicas.len(), lags))
            }
            _ => None,
        }
    }

    /// The ISR this broker has as leader, if it leads.
    pub fn isr(&self) -> Option<Vec<i32>> {
        match &*self.role.lock().expect("role lock") {
            Role::Leader(state) => Some(state.isr.clone()),
            _ => None,
        }
    }

    /// Whether an acks=all produce may be appended: this broker leads and its ISR holds at
    /// least `min_insync_replicas` (Kafka's NOT_ENOUGH_REPLICAS otherwise).
    pub fn enough_replicas(&self, min_insync_replicas: usize) -> bool {
        match &*self.role.lock().expect("role lock") {
            Role::Leader(state) => state.enough_replicas(min_insync_replicas),
            _ => true,
        }
    }

    /// Where an acks=all produce ending at `end_offset` stands once the high watermark has
    /// passed it: NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below
    /// `min_insync_replicas` meanwhile.
    pub fn ack_status(&self, end_offset: i64, min_insync_replicas: usize) -> AckStatus {
        match &*self.role.lock().expect("role lock") {
            Role::Leader(state) => state.ack_status(end_offset - 1, min_insync_replicas),
            _ if self.high_watermark() >= end_offset => AckStatus::Committed,
            _ => AckStatus::Waiting,
        }
    }

    /// The commit rule of a replicated partition: an append moves the leader's high
    /// watermark as far as its ISR holds the log (at once, with an ISR of one). A broker
    /// that is not the leader commits nothing here; before the metadata has assigned the
    /// partition at all, an append counts as committed (a lone log, in tests).
    pub(crate) fn commit_append(&self, end_offset: i64) {
        let hw = match &mut *self.role.lock().expect("role lock") {
            Role::Leader(state) => {
                state.on_append(&LogView(&self.log));
                state.high_watermark()
            }
            Role::Unassigned if !self.assigned.load(Ordering::Acquire) => end_offset,
            _ => return,
        };
        self.advance_high_watermark(hw);
    }

    /// A follower's fetch of this partition, on its leader: from `fetch_offset`, its last
    /// record in `last_fetched_epoch`, knowing leader epoch `current_leader_epoch` (-1:
    /// unknown). Moves the high watermark when the follower's progress allows.
    pub fn on_replica_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        last_fetched_epoch: Option<i32>,
        current_leader_epoch: i32,
        now_ms: i64,
    ) -> ReplicaFetch {
        let epoch = self.leader_epoch();
        if current_leader_epoch >= 0 && current_leader_epoch < epoch {
            return ReplicaFetch::Error(FENCED_LEADER_EPOCH);
        }
        if current_leader_epoch > epoch {
            return ReplicaFetch::Error(UNKNOWN_LEADER_EPOCH);
        }
        let mut role = self.role.lock().expect("role lock");
        let Role::Leader(state) = &mut *role else {
            return ReplicaFetch::Error(NOT_LEADER_OR_FOLLOWER);
        };
        let answer = state.on_fetch(
            follower,
            fetch_offset,
            last_fetched_epoch,
            &LogView(&self.log),
            now_ms,
        );
        let hw = state.high_watermark();
        drop(role);
        self.advance_high_watermark(hw);
        match answer {
            FetchAnswer::Records { high_watermark } => ReplicaFetch::Records { high_watermark },
            FetchAnswer::Diverging { epoch, end_offset } => {
                ReplicaFetch::Diverging { epoch, end_offset }
            }
            FetchAnswer::OffsetOutOfRange => ReplicaFetch::Error(OFFSET_OUT_OF_RANGE),
            FetchAnswer::NotAReplica => ReplicaFetch::Error(NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// The ISR change this leader should ask the controller for now, if any.
    pub fn isr_change(&self, now_ms: i64, replica_lag_time_max_ms: i64) -> Option<IsrChange> {
        match &mut *self.role.lock().expect("role lock") {
            Role::Leader(state) => state.isr_change(now_ms, replica_lag_time_max_ms),
            _ => None,
        }
    }

    /// The controller's answer to `change`: the committed ISR and partition epoch, or
    /// `None` if it refused.
    pub fn on_isr_answer(&self, change: &IsrChange, committed: Option<(&[i32], i32)>) {
        let hw = match &mut *self.role.lock().expect("role lock") {
            Role::Leader(state) => {
                state.on_alter_answer(change, committed, &LogView(&self.log));
                state.high_watermark()
            }
            _ => return,
        };
        self.advance_high_watermark(hw);
    }

    /// Appends batches fetched from `leader` in `epoch`, as they are, if this broker still
    /// follows it in that epoch (checked under the role lock: a fetch answered before a
    /// change of leadership must not write after it).
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader: i32,
        epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let role = self.role.lock().expect("role lock");
        self.still_following(&role, leader, epoch)?;
        let outcome = self.log.append_as_follower(records, now_ms)?;
        drop(role);
        self.appended.wake();
        Ok(outcome)
    }

    /// `Ok` if, with the role lock held, this broker follows `leader` in `epoch`.
    fn still_following(&self, role: &Role, leader: i32, epoch: i32) -> Result<(), StorageError> {
        match role {
            Role::Follower { leader: l } if *l == leader && self.leader_epoch() == epoch => Ok(()),
            _ => Err(StorageError::NotLeader),
        }
    }

    /// A follower of `leader` in `epoch` takes the leader's high watermark, as far as its
    /// own log reaches (nothing if it no longer follows it in that epoch).
    pub fn follow_high_watermark(&self, leader: i32, epoch: i32, leader_high_watermark: i64) {
        let role = self.role.lock().expect("role lock");
        if self.still_following(&role, leader, epoch).is_err() {
            return;
        }
        let hw =
            sluice_replication::follower_high_watermark(&LogView(&self.log), leader_high_watermark);
        drop(role);
        self.advance_high_watermark(hw);
    }

    /// Where this follower's log must be cut when the leader says it diverges at
    /// `(epoch, end_offset)`.
    pub fn truncation_offset(&self, epoch: i32, end_offset: i64) -> i64 {
        truncation_offset(&LogView(&self.log), epoch, end_offset)
    }

    /// Cuts this follower's divergent tail at `offset`, if it still follows `leader` in
    /// `epoch`. Never below the high watermark:
    /// what is committed is on every in-sync replica, and a leader that says otherwise was
    /// elected uncleanly; that is refused, and the follower stops.
    /// The recovery points are checkpointed before the role lock is let go, so nothing is
    /// appended while a checkpoint from before may name a recovery point past the new end.
    pub(crate) fn truncate_to(
        &self,
        offset: i64,
        (leader, epoch): (i32, i32),
        now_ms: i64,
        logs: &sluice_storage::LogManager,
    ) -> Result<i64, StorageError> {
        let role = self.role.lock().expect("role lock");
        self.still_following(&role, leader, epoch)?;
        let hw = self.high_watermark();
        if offset < hw {
            return Err(StorageError::InvalidRecord(format!(
                "refusing to truncate {}-{} to {offset}, below its high watermark {hw}",
                self.topic(),
                self.index()
            )));
        }
        // (At or above the high watermark: it stays where it is.)
        self.shrink_log(|| logs.truncate_to(&self.log, offset, now_ms), |_| None)
    }

    /// Empties this follower's log and starts it at `offset`, if it still follows `leader`
    /// in `epoch` (Kafka's `truncateFullyAndStartAt`), checkpointing the recovery points
    /// (so that none from before names an offset of the new log) under the role lock. Two cases: the leader's log starts past this log's end
    /// (OFFSET_OUT_OF_RANGE: retention or DeleteRecords removed what this follower would
    /// fetch next), and a log emptied so restarting below its start (the leader sent the
    /// whole batch holding its log start, which begins before it; Kafka's follower does the
    /// same on UnexpectedAppendOffsetException). The high watermark goes to `offset`, or to
    /// the leader's if lower. Returns whether it truncated (a log that reaches `offset` and
    /// holds records keeps them).
    pub(crate) fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        leader_high_watermark: i64,
        (leader, epoch): (i32, i32),
        now_ms: i64,
        logs: &sluice_storage::LogManager,
    ) -> Result<bool, StorageError> {
        let role = self.role.lock().expect("role lock");
        self.still_following(&role, leader, epoch)?;
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        let past_end = offset > end;
        let restart_empty = start == end && offset != end;
        if !(past_end || restart_empty) {
            return Ok(false);
        }
        self.shrink_log(
            || logs.truncate_fully_and_start_at(&self.log, offset, now_ms),
            |_| Some(offset.min(leader_high_watermark)),
        )?;
        Ok(true)
    }

    /// The epoch of the last record, for a follower's fetch.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.latest_epoch()
    }

    /// Registers `waiter` to be woken at the next append (a follower's parked fetch).
    pub fn register_for_append(&self, waiter: &std::sync::Arc<crate::partition::Waiter>) {
        self.appended.register(waiter);
    }

    /// Whole batches from `offset` up to the log end, into memory: for a coordinator loading
    /// its internal partition, which reads to the log end as Kafka's does (on a new leader
    /// what lies above the high watermark is what will be committed; its followers have not
    /// fetched it yet).
    pub fn read_bytes_to_log_end(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StorageError> {
        match self.read_for_replica(offset, max_bytes)?.records {
            Some(slice) => Ok(slice.to_vec()?),
            None => Ok(Vec::new()),
        }
    }

    /// Whole batches from `offset` up to the log end, for a follower.
    pub fn read_for_replica(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<crate::PartitionRead, StorageError> {
        let read = self.log.read_slice_below(
            offset,
            i64::MAX,
            max_bytes,
            true,
            sluice_storage::Isolation::ReadUncommitted,
        )?;
        Ok(crate::PartitionRead {
            records: read.records,
            high_watermark: self.high_watermark(),
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: read.log_start_offset,
            aborted: Vec::new(),
        })
    }
}
