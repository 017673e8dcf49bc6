//! Kafka's ISR replication as a state machine without I/O.
//!
//! A partition's leader learns from its followers' fetches how far each has copied its log,
//! and moves the high watermark to the lowest log end among the in-sync replicas: a record
//! below it is on every replica that can be elected, so it is committed (acks=all is answered,
//! consumers may read it). The leader asks the controller to take followers that fall behind
//! out of the ISR and to put back those that caught up. A follower whose log diverged from
//! the leader's (it was written under an older leader) learns where from the leader epochs:
//! it sends the epoch of its last record with every fetch, the leader answers with the end of
//! that epoch in its own log when they differ, and the follower truncates there.
//!
//! Everything here takes the log as an [`EpochLog`] (its end and its leader epoch history)
//! and the time as an argument; the partition layer does the reading, writing and sending.
//! `tests/model.rs` explores every interleaving of produce, fetch, ISR changes, crashes,
//! restarts and elections (through the real controller) for three replicas, and checks that
//! no acknowledged record is lost and that logs agree wherever their epochs do.

use std::collections::BTreeMap;

/// The part of a replica's log replication needs: where it ends, and which leader epoch wrote
/// which offsets (Kafka's leader epoch cache).
pub trait EpochLog {
    /// The offset the next record will get.
    fn log_end_offset(&self) -> i64;

    /// Kafka's `endOffsetFor`: the largest epoch at or below `epoch` that wrote records here,
    /// and the offset where that epoch's records end (the first offset of the next epoch, or
    /// the log end for the latest). For an epoch older than every one here, either `None` or
    /// (as storage answers, like Kafka) that epoch and the first epoch's start; both lead to
    /// the same truncation.
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)>;

    /// The epoch of the last record, if any.
    fn latest_epoch(&self) -> Option<i32>;

    /// The partition's `min.insync.replicas`: while its ISR is smaller (and it has at least
    /// that many replicas) the high watermark does not move (KIP-966), so that the replicas
    /// that left the ISR keep holding every committed record and stay eligible to lead.
    fn min_insync_replicas(&self) -> usize {
        1
    }
}

/// What a follower is known to hold, from its fetches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FollowerProgress {
    /// The offset it fetched from last: it holds everything below it. -1 until it fetches.
    log_end_offset: i64,
    /// The last time it was caught up: its fetch asked for the leader's log end then, or
    /// reached what the leader's log end was at its fetch before (Kafka's rule, so that a
    /// follower a few records behind under steady load is not taken for one that lags).
    caught_up_ms: i64,
    /// The leader's log end and the time at this follower's last fetch.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// An ISR change the leader asked the controller for (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsrChange {
    pub new_isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// Where an acks=all produce stands on its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    Waiting,
    Committed,
    NotEnoughReplicasAfterAppend,
}

/// The leader's answer to a follower's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Records from the fetch offset on are the follower's to copy; `high_watermark` is the
    /// leader's.
    Records { high_watermark: i64 },
    /// The follower's log diverged: it must truncate to [`truncation_offset`] of these.
    Diverging { epoch: i32, end_offset: i64 },
    /// The fetch offset is past the leader's log end.
    OffsetOutOfRange,
    /// The fetching broker is not a replica of this partition.
    NotAReplica,
}

/// The controller's decision that makes a broker a partition's leader.
#[derive(Debug, Clone, Copy)]
pub struct Elected<'a> {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: &'a [i32],
    pub isr: &'a [i32],
}

/// A partition's state on its leader.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderState {
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// The controller's partition epoch for the ISR below.
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The ISR as the controller has committed it.
    pub isr: Vec<i32>,
    /// An ISR change sent and not answered yet: no other is sent meanwhile, and the high
    /// watermark counts the members of both (Kafka's "maximal ISR", KIP-497).
    pending: Option<IsrChange>,
    followers: BTreeMap<i32, FollowerProgress>,
    /// The log end when this replica became leader: a follower joins the ISR only once it
    /// holds this epoch's first offset, so it no longer holds another leader's tail.
    epoch_start_offset: i64,
    high_watermark: i64,
    /// The controller lists eligible leader replicas for the partition (KIP-966): it holds
    /// the ISR below its `min.insync.replicas`, whatever this broker's own setting says,
    /// so the high watermark stands still.
    eligible_leaders: bool,
}

impl LeaderState {
    /// Takes over a partition as the controller elected this broker: `high_watermark` is the
    /// one this replica knew (from its checkpoint or its last fetch).
    pub fn become_leader(
        elected: Elected<'_>,
        log: &impl EpochLog,
        high_watermark: i64,
        now_ms: i64,
    ) -> Self {
        let Elected {
            leader_id,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
        } = elected;
        assert!(isr.contains(&leader_id), "a leader outside its ISR");
        let followers = replicas
            .iter()
            .filter(|&&r| r != leader_id)
            .map(|&r| {
                let progress = FollowerProgress {
                    log_end_offset: -1,
                    caught_up_ms: now_ms,
                    last_fetch_leader_end: -1,
                    last_fetch_ms: now_ms,
                };
                (r, progress)
            })
            .collect();
        let state = Self {
            leader_id,
            leader_epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            pending: None,
            followers,
            epoch_start_offset: log.log_end_offset(),
            high_watermark: high_watermark.min(log.log_end_offset()),
            eligible_leaders: false,
        };
        state.check(log);
        state
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Each follower and the log end its last fetch reported (-1 before its first).
    pub fn follower_log_ends(&self) -> Vec<(i32, i64)> {
        self.followers
            .iter()
            .map(|(&b, f)| (b, f.log_end_offset))
            .collect()
    }

    /// Whether an acks=all produce may be appended: the ISR holds at least
    /// `min.insync.replicas` (else NOT_ENOUGH_REPLICAS).
    pub fn enough_replicas(&self, min_insync_replicas: usize) -> bool {
        self.isr.len() >= min_insync_replicas
    }

    /// Where an acks=all produce whose last record is at `last_offset` stands: waiting for
    /// the high watermark, answered, or refused because the ISR shrank below
    /// `min.insync.replicas` before its records were committed (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND; the records stay, the client retries).
    pub fn ack_status(&self, last_offset: i64, min_insync_replicas: usize) -> AckStatus {
        if self.high_watermark <= last_offset {
            AckStatus::Waiting
        } else if self.isr.len() >= min_insync_replicas {
            AckStatus::Committed
        } else {
            AckStatus::NotEnoughReplicasAfterAppend
        }
    }

    /// The members whose progress bounds the high watermark: the ISR, and while a change is
    /// pending, the members it adds too.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut members = self.isr.clone();
        if let Some(change) = &self.pending {
            for b in &change.new_isr {
                if !members.contains(b) {
                    members.push(*b);
                }
            }
        }
        members
    }

    /// Moves the high watermark to the lowest log end of the maximal ISR, never back; not at
    /// all while the ISR is below `min.insync.replicas` (KIP-966: the controller counts the
    /// replicas that left it as eligible leaders, which they stay only while nothing more
    /// is committed).
    fn advance_high_watermark(&mut self, log: &impl EpochLog) {
        let below_minimum = self.isr.len() < log.min_insync_replicas().min(self.replicas.len());
        if below_minimum || self.eligible_leaders {
            self.check(log);
            return;
        }
        let lowest = self
            .maximal_isr()
            .iter()
            .map(|&b| {
                if b == self.leader_id {
                    log.log_end_offset()
                } else {
                    self.followers.get(&b).map_or(-1, |f| f.log_end_offset)
                }
            })
            .min()
            .unwrap_or_else(|| log.log_end_offset());
        if lowest > self.high_watermark {
            self.high_watermark = lowest;
        }
        self.check(log);
    }

    fn check(&self, log: &impl EpochLog) {
        assert!(
            self.high_watermark <= log.log_end_offset(),
            "high watermark {} above the log end {}",
            self.high_watermark,
            log.log_end_offset()
        );
    }

    /// The leader appended records: with an ISR of one, they are committed at once.
    pub fn on_append(&mut self, log: &impl EpochLog) {
        self.advance_high_watermark(log);
    }

    /// A follower's fetch from `fetch_offset`, whose last record (if any) has
    /// `last_fetched_epoch`.
    pub fn on_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        last_fetched_epoch: Option<i32>,
        log: &impl EpochLog,
        now_ms: i64,
    ) -> FetchAnswer {
        if !self.followers.contains_key(&follower) {
            return FetchAnswer::NotAReplica;
        }
        if let Some(epoch) = last_fetched_epoch {
            // Kafka's check (KIP-320, KIP-595): the follower's last epoch must end, in the
            // leader's log, at or after where the follower's log ends.
            match log.end_offset_for_epoch(epoch) {
                Some((leader_epoch, end)) if leader_epoch == epoch && end >= fetch_offset => {}
                Some((leader_epoch, end)) => {
                    return FetchAnswer::Diverging {
                        epoch: leader_epoch,
                        end_offset: end,
                    }
                }
                None => {
                    return FetchAnswer::Diverging {
                        epoch: -1,
                        end_offset: 0,
                    }
                }
            }
        }
        if fetch_offset > log.log_end_offset() {
            return FetchAnswer::OffsetOutOfRange;
        }
        let progress = self.followers.get_mut(&follower).expect("checked above");
        progress.log_end_offset = fetch_offset;
        let leader_end = log.log_end_offset();
        if fetch_offset >= leader_end {
            progress.caught_up_ms = progress.caught_up_ms.max(now_ms);
        } else if progress.last_fetch_leader_end >= 0
            && fetch_offset >= progress.last_fetch_leader_end
        {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_leader_end = leader_end;
        progress.last_fetch_ms = now_ms;
        self.advance_high_watermark(log);
        FetchAnswer::Records {
            high_watermark: self.high_watermark,
        }
    }

    /// The ISR change to ask for now, if any: followers not caught up for longer than
    /// `replica_lag_time_max_ms` leave, followers that hold the high watermark and this
    /// epoch's start join. Nothing while a change is pending.
    pub fn isr_change(&mut self, now_ms: i64, replica_lag_time_max_ms: i64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let mut new_isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&b| {
                b == self.leader_id
                    || self
                        .followers
                        .get(&b)
                        .is_some_and(|f| now_ms - f.caught_up_ms <= replica_lag_time_max_ms)
            })
            .collect();
        for (&b, f) in &self.followers {
            let caught_up = f.log_end_offset >= self.high_watermark
                && f.log_end_offset >= self.epoch_start_offset
                && now_ms - f.caught_up_ms <= replica_lag_time_max_ms;
            if !new_isr.contains(&b) && caught_up && self.isr.len() == new_isr.len() {
                new_isr.push(b);
            }
        }
        if new_isr == self.isr {
            return None;
        }
        let change = IsrChange {
            new_isr,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        };
        self.pending = Some(change.clone());
        Some(change)
    }

    /// The metadata brought the partition's state for this leader epoch: an ISR the
    /// controller committed, at our request or on its own (it fenced a member). A newer one
    /// replaces ours, and a change we asked for against an older one is moot (the controller
    /// refuses it, or this is its result). An older or equal one changes nothing.
    pub fn on_partition_state(&mut self, isr: &[i32], partition_epoch: i32, log: &impl EpochLog) {
        assert!(isr.contains(&self.leader_id), "an ISR without its leader");
        if partition_epoch <= self.partition_epoch {
            return;
        }
        self.isr = isr.to_vec();
        self.partition_epoch = partition_epoch;
        self.pending = None;
        self.advance_high_watermark(log);
    }

    /// Whether the controller lists eligible leader replicas for the partition (its
    /// metadata, applied with the ISR): while it does, the high watermark stands still,
    /// so a mismatched `min.insync.replicas` between this broker and the controller costs
    /// availability, never an eligible replica's committed records. Nothing moves here:
    /// the next append or fetch moves the high watermark (as the commit rule allows).
    pub fn on_eligible_leaders(&mut self, listed: bool) {
        self.eligible_leaders = listed;
    }

    /// The partition's replicas changed in this leader epoch (a reassignment adds replicas,
    /// then removes others): a new follower is tracked from `now_ms` on (it joins the ISR
    /// once caught up), a removed one is forgotten (the controller took it out of the ISR
    /// with the reassignment; apply that ISR first).
    pub fn on_replicas(&mut self, replicas: &[i32], now_ms: i64) {
        if replicas == self.replicas.as_slice() {
            return;
        }
        self.followers.retain(|b, _| replicas.contains(b));
        for &r in replicas {
            if r != self.leader_id {
                self.followers.entry(r).or_insert(FollowerProgress {
                    log_end_offset: -1,
                    caught_up_ms: now_ms,
                    last_fetch_leader_end: -1,
                    last_fetch_ms: now_ms,
                });
            }
        }
        self.replicas = replicas.to_vec();
    }

    /// The controller's answer to `change`: the ISR and partition epoch it committed, or
    /// `None` for a refusal (a stale epoch, an ineligible replica). An answer to anything
    /// but the change pending now is late and changes nothing: clearing a newer pending
    /// change would let the high watermark pass a replica that change is adding.
    pub fn on_alter_answer(
        &mut self,
        change: &IsrChange,
        committed: Option<(&[i32], i32)>,
        log: &impl EpochLog,
    ) {
        if self.pending.as_ref() != Some(change) {
            return;
        }
        self.pending = None;
        if let Some((isr, partition_epoch)) = committed {
            self.on_partition_state(isr, partition_epoch, log);
        }
        self.advance_high_watermark(log);
    }
}

/// Where a follower truncates when the leader says its log diverges at `(epoch,
/// end_offset)`: at the end of that epoch in its own log, or the leader's end for it, whichever
/// is lower. The follower fetches again from there; if it still diverges (it did not have that
/// epoch at all), the leader answers with an earlier one.
pub fn truncation_offset(log: &impl EpochLog, epoch: i32, end_offset: i64) -> i64 {
    let own_end = match log.end_offset_for_epoch(epoch) {
        Some((_, end)) => end,
        None => 0,
    };
    own_end.min(end_offset).min(log.log_end_offset()).max(0)
}

/// A follower's high watermark after a fetch: the leader's, as far as its own log reaches.
pub fn follower_high_watermark(log: &impl EpochLog, leader_high_watermark: i64) -> i64 {
    leader_high_watermark.min(log.log_end_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epochs of a log's records, one per offset.
    struct Epochs(Vec<i32>);

    impl EpochLog for Epochs {
        fn log_end_offset(&self) -> i64 {
            self.0.len() as i64
        }

        fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
            let found = self.0.iter().copied().filter(|&e| e <= epoch).max()?;
            let end = self
                .0
                .iter()
                .position(|&e| e > found)
                .unwrap_or(self.0.len());
            Some((found, end as i64))
        }

        fn latest_epoch(&self) -> Option<i32> {
            self.0.last().copied()
        }
    }

    fn leader(log: &Epochs) -> LeaderState {
        let elected = Elected {
            leader_id: 1,
            leader_epoch: 2,
            partition_epoch: 0,
            replicas: &[1, 2, 3],
            isr: &[1, 2, 3],
        };
        LeaderState::become_leader(elected, log, 0, 0)
    }

    #[test]
    fn a_follower_with_another_leaders_tail_is_told_where_it_diverges_and_truncates_there() {
        // The leader wrote offsets 0-1 in epoch 0 and 2-3 in epoch 2; the follower holds
        // offsets 0-2 of epoch 0 (offset 2 was never committed) and fetches from 3.
        let leader_log = Epochs(vec![0, 0, 2, 2]);
        let follower_log = Epochs(vec![0, 0, 0]);
        let mut l = leader(&leader_log);
        let answer = l.on_fetch(2, 3, Some(0), &leader_log, 0);
        assert_eq!(
            answer,
            FetchAnswer::Diverging {
                epoch: 0,
                end_offset: 2
            }
        );
        assert_eq!(truncation_offset(&follower_log, 0, 2), 2);
        // From offset 2 with last epoch 0 the logs agree: records flow, the HW waits for the
        // whole ISR.
        let answer = l.on_fetch(2, 2, Some(0), &leader_log, 0);
        assert_eq!(answer, FetchAnswer::Records { high_watermark: 0 });
    }

    #[test]
    fn a_follower_always_a_fetch_behind_under_steady_load_stays_in_sync() {
        // The leader's log grows by 2 records every 3 ms; each follower fetch asks for where
        // the leader's log ended at its previous fetch, so it never asks for the log end.
        let mut log = Epochs(vec![2, 2]);
        let mut l = leader(&log);
        let mut fetched_to = 0;
        for step in 0..10i64 {
            let now = step * 3;
            for follower in [2, 3] {
                let answer = l.on_fetch(follower, fetched_to, Some(2), &log, now);
                assert!(matches!(answer, FetchAnswer::Records { .. }));
            }
            fetched_to = log.log_end_offset();
            log.0.extend([2, 2]);
            assert_eq!(l.isr_change(now, 5), None, "step {step}: nobody lags 5 ms");
        }
        // Once the followers stop fetching, they leave after the lag time.
        let change = l.isr_change(27 + 6 + 3, 5).expect("both lag now");
        assert_eq!(change.new_isr, vec![1]);
    }

    #[test]
    fn a_late_answer_changes_nothing_and_leaves_a_newer_request_pending() {
        let log = Epochs(vec![2, 2, 2, 2, 2]);
        let mut l = leader(&log);
        l.on_fetch(2, 5, Some(2), &log, 0);
        l.on_fetch(3, 2, Some(2), &log, 0);
        // Request A drops 3 (it lags); the metadata then brings the controller's own change
        // (it dropped 3 itself), which makes A moot.
        let a = l.isr_change(10, 5).expect("3 lags");
        l.on_partition_state(&[1, 2], 1, &log);
        // Request B adds 3 back once it fetches again at the log end.
        l.on_fetch(2, 5, Some(2), &log, 11);
        l.on_fetch(3, 5, Some(2), &log, 11);
        let b = l.isr_change(11, 5).expect("3 caught up");
        assert_eq!(b.new_isr, vec![1, 2, 3]);
        // A's answer arrives late: B stays pending, so the HW still counts 3.
        l.on_alter_answer(&a, None, &log);
        assert_eq!(l.pending.as_ref(), Some(&b));
        assert_eq!(l.isr_change(12, 5), None, "one change at a time");
        l.on_alter_answer(&b, Some((&[1, 2, 3], 2)), &log);
        assert_eq!(
            (l.isr.clone(), l.partition_epoch, l.pending.clone()),
            (vec![1, 2, 3], 2, None)
        );
    }

    #[test]
    fn the_high_watermark_is_the_lowest_log_end_of_the_isr_and_never_moves_back() {
        let log = Epochs(vec![2, 2, 2, 2]);
        let mut l = leader(&log);
        l.on_fetch(2, 4, Some(2), &log, 0);
        assert_eq!(l.high_watermark(), 0, "broker 3 has fetched nothing yet");
        l.on_fetch(3, 3, Some(2), &log, 0);
        assert_eq!(l.high_watermark(), 3);
        // 3 falls behind and leaves the ISR; the HW is then 2's and the leader's end.
        let change = l.isr_change(10, 5).expect("both followers lag at t=10");
        assert_eq!(change.new_isr, vec![1]);
        l.on_alter_answer(&change, Some((&[1, 2], 1)), &log);
        assert_eq!(l.high_watermark(), 4);
        l.on_partition_state(&[1, 2, 3], 2, &log);
        assert_eq!(l.high_watermark(), 4, "never back");
        assert!(l.enough_replicas(2));
    }
}
