//! The partition layer's promises, with the commit rule held back (as replication would hold
//! it until followers caught up): readers see only committed records, acks=all waits for the commit, parked operations
//! wake per partition, and the invariants hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_records::{BatchBuilder, BatchIter, NewRecord};

use super::*;

fn batch(values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for v in values {
        b.push(NewRecord {
            value: Some(v.as_bytes().to_vec()),
            ..NewRecord::default()
        });
    }
    b.build()
}

fn open(dir: &Path, commit: Arc<dyn CommitRule>) -> ReplicaManager {
    ReplicaManager::open(
        dir,
        LogConfig::default(),
        Arc::new(Fsync),
        commit,
        64,
        SyncScope::FileSystem,
    )
    .expect("open")
}

fn topic(replicas: &ReplicaManager, name: &str, partitions: i32) -> Arc<Topic> {
    replicas
        .create_topic(name, partitions, BTreeMap::new(), false)
        .expect("create")
}

/// Offsets of the records a read returned.
fn offsets(read: &PartitionRead) -> Vec<i64> {
    let Some(slice) = &read.records else {
        return Vec::new();
    };
    let bytes = slice.to_vec().unwrap();
    BatchIter::new(&bytes)
        .map(|b| sluice_records::BatchHeader::parse(b.unwrap()).unwrap())
        .flat_map(|h| h.base_offset..h.next_offset())
        .collect()
}

#[test]
fn readers_never_see_records_above_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Arc::new(ManualCommit::held());
    let replicas = open(dir.path(), rule.clone());
    let p = topic(&replicas, "t", 1).partitions[0].clone();

    p.append(&batch(&["a", "b"]), 1_000).unwrap();
    assert_eq!(p.log_end_offset(), 2);
    assert_eq!(
        p.high_watermark(),
        0,
        "nothing is committed while the rule holds"
    );
    for isolation in [Isolation::ReadUncommitted, Isolation::ReadCommitted] {
        let read = p.read(0, 1 << 20, true, isolation).unwrap();
        assert!(
            read.records.is_none(),
            "{isolation:?} read returned uncommitted records"
        );
        assert_eq!((read.high_watermark, read.last_stable_offset), (0, 0));
    }
    assert!(p.read_bytes(0, 1 << 20).unwrap().is_empty());
    assert_eq!(p.last_stable_offset(), 0);
    // Offsets past the high watermark but within the log are not out of range: empty.
    assert!(p.read(1, 1 << 20, true, Isolation::ReadUncommitted).is_ok());
    assert!(p
        .read(3, 1 << 20, true, Isolation::ReadUncommitted)
        .is_err());
    // Timestamps of uncommitted records are not revealed either.
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(p.max_timestamp_record().unwrap(), None);
    // DeleteRecords cannot move the log start past the high watermark.
    assert!(replicas.delete_records(&p, 1).is_err());

    rule.release();
    assert_eq!(p.high_watermark(), 2);
    let read = p
        .read(0, 1 << 20, true, Isolation::ReadUncommitted)
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 1]);

    // Held again: a second append stays invisible while the first stays readable.
    rule.hold();
    p.append(&batch(&["c"]), 1_000).unwrap();
    let read = p
        .read(0, 1 << 20, true, Isolation::ReadUncommitted)
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 1]);
    assert_eq!(read.high_watermark, 2);
    rule.release();
    let read = p
        .read(0, 1 << 20, true, Isolation::ReadUncommitted)
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 1, 2]);
}

#[test]
fn the_high_watermark_never_passes_the_log_end_nor_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(ManualCommit::held()));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    p.append(&batch(&["a", "b", "c"]), 1_000).unwrap();
    p.advance_high_watermark(100);
    assert_eq!(p.high_watermark(), 3, "capped by the log end offset");
    p.advance_high_watermark(1);
    assert_eq!(p.high_watermark(), 3, "never back");
    assert!(p.last_stable_offset() <= p.high_watermark());
}

#[test]
#[should_panic(expected = "went back")]
fn leader_epochs_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    p.set_leader_epoch(3);
    assert_eq!(p.leader_epoch(), 3);
    p.set_leader_epoch(2);
}

#[test]
fn appends_are_stamped_with_the_partitions_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    p.set_leader_epoch(7);
    p.append(&batch(&["a"]), 1_000).unwrap();
    let bytes = p.read_bytes(0, 1 << 20).unwrap();
    let header = sluice_records::BatchHeader::parse(&bytes).unwrap();
    assert_eq!(header.partition_leader_epoch, 7);
}

#[tokio::test]
async fn acks_all_waits_for_the_commit_not_only_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Arc::new(ManualCommit::held());
    let replicas = open(dir.path(), rule.clone());
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    let outcome = p.append(&batch(&["a"]), 1_000).unwrap();
    let end = outcome.last_offset + 1;
    // Durable, but not committed: the wait does not end.
    p.flush(end).wait().await.unwrap();
    let held = tokio::time::timeout(Duration::from_millis(50), p.committed(end)).await;
    assert!(held.is_err(), "acks=all answered before the commit");
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.committed(end).await }
    });
    while p.parked() == 0 {
        tokio::task::yield_now().await;
    }
    rule.release();
    waiting.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_parked_fetch_wakes_for_its_own_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let t = topic(&replicas, "t", 2);
    let (mine, other) = (t.partitions[0].clone(), t.partitions[1].clone());
    let waiter = Waiter::new();
    mine.register(&waiter);
    other.append(&batch(&["x"]), 1_000).unwrap();
    let woke = tokio::time::timeout(Duration::from_millis(50), waiter.wait()).await;
    assert!(woke.is_err(), "woken by another partition's append");
    // An advance between registering and waiting is not lost.
    mine.append(&batch(&["y"]), 1_000).unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter.wait())
        .await
        .expect("woken by its partition's append");
    assert_eq!(mine.parked(), 0, "a wake-up forgets the waiters it woke");
}

#[test]
fn dropped_and_repeated_waiters_do_not_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    let kept = Waiter::new();
    for _ in 0..10_000 {
        p.register(&kept);
        p.register(&Waiter::new());
    }
    assert!(
        p.parked() <= 2 * crate::partition::WAITERS_SWEEP_AT,
        "{} waiters parked",
        p.parked()
    );
}

#[test]
fn topic_changes_keep_partitions_and_their_high_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Arc::new(ManualCommit::default());
    let replicas = open(dir.path(), rule.clone());
    let before = topic(&replicas, "t", 1);
    before.partitions[0].append(&batch(&["a"]), 1_000).unwrap();
    let mut retention = BTreeMap::new();
    retention.insert("retention.ms".to_string(), "1000".to_string());
    let altered = replicas
        .alter_topic_config::<StorageError>("t", |_, _| Ok(retention), false)
        .unwrap();
    let grown = replicas.create_partitions("t", 3, false).unwrap();
    assert!(Arc::ptr_eq(&before.partitions[0], &altered.partitions[0]));
    assert!(Arc::ptr_eq(&before.partitions[0], &grown.partitions[0]));
    assert_eq!(grown.partitions.len(), 3);
    assert_eq!(
        replicas.topic("t").unwrap().partitions[0].high_watermark(),
        1
    );
    replicas.delete_topic("t").unwrap();
    assert!(replicas.topic("t").is_none());
    let again = topic(&replicas, "t", 1);
    assert_eq!(again.partitions[0].high_watermark(), 0);
}

/// One transactional batch of producer 7 at epoch 0, with sequence `seq`.
fn txn_batch(seq: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    b.producer(7, 0, seq).transactional().push(NewRecord {
        value: Some(b"t".to_vec()),
        ..NewRecord::default()
    });
    b.build()
}

/// KIP-890's guard: a transactional write verified with a remote coordinator goes in only if
/// no marker of its producer came between the start of the verification and the append, so
/// a write checked before its transaction ended can never land after the marker (where no
/// marker would ever end it).
#[test]
fn a_marker_during_a_verification_voids_the_verified_write() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();

    // No marker in between: the write goes in, and opens the transaction.
    let v = p.begin_verification(7, 0);
    assert!(matches!(v, Verification::Guard(_)));
    p.append_verified(&txn_batch(0), 1_000, 7, 0, v)
        .expect("verified write");
    // Open now: later writes need no guard, until the marker.
    let open = p.begin_verification(7, 0);
    assert_eq!(open, Verification::InTransaction);
    p.append_marker(7, 0, true, 0, 1_000).expect("marker");
    let refused = p.append_verified(&txn_batch(1), 1_000, 7, 0, open);
    assert!(
        matches!(refused, Err(StorageError::InvalidTxnState(_))),
        "{refused:?}"
    );

    // A guard taken, then a marker (the transaction ended meanwhile): refused.
    let v = p.begin_verification(7, 0);
    p.append_marker(7, 0, false, 0, 1_000).expect("marker");
    assert!(!p.verification_holds(7, 0, v));
    let refused = p.append_verified(&txn_batch(1), 1_000, 7, 0, v);
    assert!(
        matches!(refused, Err(StorageError::InvalidTxnState(_))),
        "{refused:?}"
    );
    let end = p.log_end_offset();

    // A refused verification drops its guard; a new one gets a new token.
    let v = p.begin_verification(7, 0);
    p.end_verification(7, v);
    assert!(!p.verification_holds(7, 0, v));
    let w = p.begin_verification(7, 0);
    assert_ne!(v, w);
    p.append_verified(&txn_batch(1), 1_000, 7, 0, w)
        .expect("fresh guard");
    assert_eq!(p.log_end_offset(), end + 1);
}

/// A leader that lost its leadership with a tail the others never got must find that tail
/// when it follows: taking the new leader epoch must not stamp the epoch cache at its own
/// log end (only a leader does), or its next fetch would claim the new epoch for the old
/// tail and the leader would see no divergence (KIP-320) to truncate.
#[test]
fn a_demoted_leader_keeps_its_old_epoch_for_the_divergence_check() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    let replicas_ids = [1, 2, 3];
    let lead = Assignment {
        me: 1,
        leader: 1,
        leader_epoch: 4,
        partition_epoch: 0,
        replicas: &replicas_ids,
        isr: &replicas_ids,
        elr: &[],
    };
    p.assign(lead, 1_000);
    p.append(&batch(&["a", "b"]), 1_000).unwrap();
    assert_eq!(p.latest_epoch(), Some(4));
    let follow = Assignment {
        me: 1,
        leader: 2,
        leader_epoch: 5,
        partition_epoch: 1,
        ..lead
    };
    p.assign(follow, 2_000);
    assert_eq!(p.leader_epoch(), 5, "the partition knows the new epoch");
    assert_eq!(
        p.latest_epoch(),
        Some(4),
        "but its log's last epoch is still the one its records carry"
    );
}

/// `batch` with its base offset set (the base offset lies outside the batch's CRC).
fn batch_at(base: i64, values: &[&str]) -> Vec<u8> {
    let mut b = batch(values);
    b[..8].copy_from_slice(&base.to_be_bytes());
    b
}

/// A follower whose leader's log starts past its own end empties its log and starts it at
/// the leader's log start; the leader then sends the whole batch holding that offset, and
/// the log starts at that batch instead; the log start then follows the leader's. Nothing
/// of the old log is served afterwards, and a log that reaches the leader's log start is
/// left alone.
#[test]
fn a_follower_behind_its_leaders_log_start_starts_again_there() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    let ids = [1, 2];
    let follow = Assignment {
        me: 1,
        leader: 2,
        leader_epoch: 3,
        partition_epoch: 0,
        replicas: &ids,
        isr: &ids,
        elr: &[],
    };
    p.assign(follow, 1_000);
    p.append_as_follower(&batch_at(0, &["a", "b", "c"]), 2, 3, 1_000)
        .unwrap();
    p.follow_high_watermark(2, 3, 3);
    assert!(
        !replicas
            .start_follower_log_at(&p, 3, 12, (2, 3), 1_000)
            .unwrap(),
        "a log that reaches the leader's log start keeps its records"
    );
    assert!(
        replicas
            .start_follower_log_at(&p, 10, 12, (9, 3), 1_000)
            .is_err(),
        "only while it follows that leader"
    );
    assert!(replicas
        .start_follower_log_at(&p, 10, 12, (2, 3), 1_000)
        .unwrap());
    assert_eq!(
        (p.log_start_offset(), p.log_end_offset(), p.high_watermark()),
        (10, 10, 10)
    );
    assert_eq!(
        p.latest_epoch(),
        None,
        "the old records' epochs went with them"
    );
    // The leader's log start lies inside its batch 8..12: that batch comes whole, and the
    // emptied log starts again at it (as the fetcher does before appending it).
    assert!(
        replicas
            .start_follower_log_at(&p, 8, 12, (2, 3), 2_000)
            .unwrap(),
        "an emptied log starts again below its start"
    );
    p.append_as_follower(&batch_at(8, &["i", "j", "k", "l"]), 2, 3, 2_000)
        .unwrap();
    p.follow_high_watermark(2, 3, 12);
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (8, 12));
    assert_eq!(
        offsets(&p.read_for_replica(8, 1 << 20).unwrap()),
        vec![8, 9, 10, 11]
    );
    assert_eq!(replicas.follow_log_start(&p, 10).unwrap(), Some(10));
    assert_eq!(p.log_start_offset(), 10);
    assert_eq!(replicas.follow_log_start(&p, 10).unwrap(), None, "once");
    assert!(p.high_watermark() <= p.log_end_offset());
    assert!(
        !replicas
            .start_follower_log_at(&p, 5, 12, (2, 3), 3_000)
            .unwrap(),
        "a log holding records never starts again below its end"
    );
    assert_eq!(p.log_end_offset(), 12);
}

/// A replicated partition's high watermark survives a restart through the checkpoint
/// (`replication-offset-checkpoint`): the restarted leader starts from it, where without
/// one it would start from the log start and serve nothing until every ISR member fetched
/// again. A partition not yet assigned checkpoints the value it was restored with (its
/// log end was never committed), and a deleted topic's entries go with it, so a topic
/// created again under its name starts from nothing.
#[test]
fn the_high_watermark_is_checkpointed_and_restored_at_the_first_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [1, 2, 3];
    let lead = Assignment {
        me: 1,
        leader: 1,
        leader_epoch: 1,
        partition_epoch: 0,
        replicas: &ids,
        isr: &ids,
        elr: &[],
    };
    {
        let replicas = open(dir.path(), Arc::new(CommitOnAppend));
        let p = topic(&replicas, "t", 1).partitions[0].clone();
        p.assign(lead, 1_000);
        p.append(&batch(&["a", "b", "c", "d"]), 1_000).unwrap();
        p.on_replica_fetch(2, 3, Some(1), 1, 1_000);
        p.on_replica_fetch(3, 3, Some(1), 1, 1_000);
        assert_eq!((p.high_watermark(), p.log_end_offset()), (3, 4));
        replicas.flush_and_checkpoint().unwrap();
    }
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = replicas.partition("t", 0).unwrap();
    // Unassigned, its high watermark is its log end; the checkpoint keeps what was committed.
    replicas.flush_and_checkpoint().unwrap();
    drop(p);
    drop(replicas);
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = replicas.partition("t", 0).unwrap();
    p.assign(
        Assignment {
            leader_epoch: 2,
            ..lead
        },
        2_000,
    );
    assert_eq!(
        p.high_watermark(),
        3,
        "the restarted leader starts from the checkpointed high watermark, not 0 nor 4"
    );
    replicas.delete_topic("t").unwrap();
    topic(&replicas, "t", 1);
    drop(replicas);
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = replicas.partition("t", 0).unwrap();
    p.append(&batch(&["x", "y"]), 3_000).unwrap();
    p.assign(
        Assignment {
            leader_epoch: 3,
            ..lead
        },
        3_000,
    );
    assert_eq!(p.high_watermark(), 0, "the new topic inherits nothing");
}

/// A replica the metadata moves off this broker (a reassignment drained it) loses its
/// records, for good: the log is empty at 0 then and after a restart, with no old
/// directory left behind. A replica still hosted keeps its records, and a partition moved
/// back here starts again from offset 0 as a new replica does.
#[test]
fn a_replica_moved_off_this_broker_empties_its_log_and_may_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = open(dir.path(), Arc::new(CommitOnAppend));
    let p = topic(&replicas, "t", 1).partitions[0].clone();
    let here = [1, 2];
    let follow = Assignment {
        me: 1,
        leader: 2,
        leader_epoch: 3,
        partition_epoch: 0,
        replicas: &here,
        isr: &here,
        elr: &[],
    };
    p.assign(follow, 1_000);
    p.append_as_follower(&batch_at(0, &["a", "b", "c"]), 2, 3, 1_000)
        .unwrap();
    p.follow_high_watermark(2, 3, 3);
    assert!(p.is_hosted());
    assert!(
        !replicas.remove_stray_records(&p, 1_000).unwrap(),
        "a hosted replica keeps its records"
    );
    assert_eq!(p.log_end_offset(), 3);

    let elsewhere = [2, 3];
    p.assign(
        Assignment {
            partition_epoch: 1,
            replicas: &elsewhere,
            isr: &elsewhere,
            ..follow
        },
        2_000,
    );
    assert!(!p.is_hosted());
    assert!(replicas.remove_stray_records(&p, 2_000).unwrap());
    assert_eq!(
        (
            p.log_start_offset(),
            p.log_end_offset(),
            p.high_watermark(),
            p.size_bytes()
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(p.latest_epoch(), None);
    assert!(
        !replicas.remove_stray_records(&p, 2_000).unwrap(),
        "an empty log at 0 is left alone"
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-delete"))
        .collect();
    assert!(leftovers.is_empty(), "old directories left: {leftovers:?}");

    // Back here: the new replica copies from offset 0.
    p.assign(
        Assignment {
            partition_epoch: 2,
            ..follow
        },
        3_000,
    );
    assert!(p.is_hosted());
    p.append_as_follower(&batch_at(0, &["x", "y"]), 2, 3, 3_000)
        .unwrap();
    assert_eq!(
        offsets(&p.read_for_replica(0, 1 << 20).unwrap()),
        vec![0, 1]
    );
    replicas.flush_and_checkpoint().unwrap();
    drop(p);
    drop(replicas);
    let reopened = open(dir.path(), Arc::new(CommitOnAppend));
    let p = reopened.partition("t", 0).unwrap();
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (0, 2));
}
