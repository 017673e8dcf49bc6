//! Deterministic tests of the coordinator: time is a number the test moves, and the shell is a
//! vector the records are appended to. The seeded simulation at the end prints its seed so
//! any failure replays exactly.

use super::*;

const TIMEOUT_MS: i32 = 60_000;

/// What one `__transaction_state` record says: the id, and its state, producer id and epoch
/// (`None` for a tombstone).
type Said = (String, Option<(TxnState, i64, i16)>);

/// A shell that appends records to an in-memory log and hands out producer ids from 1000.
struct Shell {
    c: TransactionCoordinator,
    next_producer_id: i64,
    log: Vec<Record>,
}

impl Shell {
    fn new() -> Self {
        Self::with(TxnConfig::default())
    }

    fn with(config: TxnConfig) -> Self {
        Self {
            c: TransactionCoordinator::new(config),
            next_producer_id: 999,
            log: Vec::new(),
        }
    }

    fn init(&mut self, id: &str, now: i64) -> Result<(i64, i16), i16> {
        self.init_expecting(id, None, now)
    }

    fn init_expecting(
        &mut self,
        id: &str,
        expected: Option<(i64, i16)>,
        now: i64,
    ) -> Result<(i64, i16), i16> {
        let next = &mut self.next_producer_id;
        self.c
            .init_producer_id(id, TIMEOUT_MS, expected, now, &mut || {
                *next += 1;
                Ok(*next)
            })
    }

    /// Appends the records taken and reports success; returns what they say.
    fn flush(&mut self) -> Vec<Said> {
        let records = self.c.take_records();
        for r in &records {
            assert_eq!(r.partition, self.c.partition_for(&said(r).0));
        }
        self.c.records_appended(true);
        let out = records.iter().map(said).collect();
        self.log.extend(records);
        out
    }

    /// Takes the records and reports that they could not be appended; returns how many.
    fn fail_flush(&mut self) -> usize {
        let n = self.c.take_records().len();
        self.c.records_appended(false);
        n
    }

    /// Writes the markers of every job available, then reports them written.
    fn write_markers(&mut self, now: i64) -> Vec<MarkerJob> {
        let jobs = self.c.take_marker_jobs();
        for j in &jobs {
            self.c
                .markers_written(&j.transactional_id, j.producer_id, j.producer_epoch, now);
        }
        jobs
    }

    fn state(&self, id: &str) -> Option<TxnState> {
        self.c.describe(id).map(|d| d.state)
    }

    /// Initialises `id` and starts a transaction over `partitions`, all appended.
    fn begin(&mut self, id: &str, partitions: &[(&str, i32)], now: i64) -> (i64, i16) {
        let (pid, epoch) = self.init(id, now).expect("init");
        self.c
            .add_partitions(id, pid, epoch, &parts(partitions), now)
            .expect("add partitions");
        self.flush();
        (pid, epoch)
    }
}

fn said(r: &Record) -> Said {
    let id = records::decode_key(&r.key).expect("key decodes");
    let value = r.value.as_ref().map(|v| {
        let v = records::decode_value(v).expect("value decodes");
        (v.state, v.producer_id, v.producer_epoch)
    });
    (id, value)
}

fn rec(id: &str, state: TxnState, pid: i64, epoch: i16) -> Said {
    (id.to_string(), Some((state, pid, epoch)))
}

fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

/// Every transactional id of `c`, as loading would see it: everything but the in-memory
/// `last_producer`.
fn persistent_state(c: &TransactionCoordinator) -> Vec<(String, TxnMetadata)> {
    c.txns
        .iter()
        .map(|(id, m)| {
            let mut m = m.clone();
            m.last_producer = None;
            (id.clone(), m)
        })
        .collect()
}

/// The producer id index is exactly the inverse of the transactional ids' producer ids.
fn assert_index_consistent(c: &TransactionCoordinator) {
    let expected: BTreeMap<i64, String> = c
        .txns
        .iter()
        .map(|(id, m)| (m.producer_id, id.clone()))
        .collect();
    assert_eq!(expected.len(), c.txns.len(), "two ids share a producer id");
    assert_eq!(c.by_producer_id, expected);
}

#[test]
fn a_new_transactional_id_gets_a_fresh_producer_id_at_epoch_0() {
    let mut s = Shell::new();
    assert_eq!(s.init("t", 5), Ok((1000, 0)));
    assert_eq!(s.flush(), vec![rec("t", TxnState::Empty, 1000, 0)]);
    assert_eq!(
        s.c.describe("t"),
        Some(TxnDescription {
            transactional_id: "t".into(),
            state: TxnState::Empty,
            producer_id: 1000,
            producer_epoch: 0,
            transaction_timeout_ms: TIMEOUT_MS,
            transaction_start_ms: -1,
            partitions: vec![],
        })
    );
    assert_eq!(s.init("u", 6), Ok((1001, 0)));
    assert_eq!(s.c.len(), 2);
    assert_index_consistent(&s.c);
}

#[test]
fn init_of_an_idle_id_bumps_the_epoch_and_keeps_the_producer_id() {
    let mut s = Shell::new();
    let (pid, _) = s.begin("t", &[("a", 0)], 0);
    s.c.end_txn("t", pid, 0, true, 1).unwrap();
    s.flush();
    s.write_markers(2);
    s.flush();
    assert_eq!(s.state("t"), Some(TxnState::CompleteCommit));
    let next = &mut s.next_producer_id;
    let r = s.c.init_producer_id("t", 30_000, None, 3, &mut || {
        *next += 1;
        Ok(*next)
    });
    assert_eq!(r, Ok((pid, 1)));
    assert_eq!(s.flush(), vec![rec("t", TxnState::Empty, pid, 1)]);
    let d = s.c.describe("t").unwrap();
    assert_eq!(
        (d.transaction_timeout_ms, d.transaction_start_ms),
        (30_000, -1)
    );
    assert_eq!(s.init("t", 4), Ok((pid, 2)), "Empty bumps too");
}

#[test]
fn init_while_a_transaction_is_ongoing_aborts_it_with_a_bumped_epoch_and_the_retry_gets_a_higher_one(
) {
    let mut s = Shell::new();
    let (pid, _) = s.begin("t", &[("a", 0), ("a", 1)], 0);
    assert_eq!(s.init("t", 10), Err(CONCURRENT_TRANSACTIONS));
    assert_eq!(s.flush(), vec![rec("t", TxnState::PrepareAbort, pid, 1)]);
    let jobs = s.c.take_marker_jobs();
    assert_eq!(
        jobs,
        vec![MarkerJob {
            transactional_id: "t".into(),
            producer_id: pid,
            producer_epoch: 1,
            commit: false,
            partitions: parts(&[("a", 0), ("a", 1)]),
        }]
    );
    // The old producer is fenced; the new one must wait for the abort.
    assert_eq!(s.c.end_txn("t", pid, 0, true, 11), Err(PRODUCER_FENCED));
    assert_eq!(s.init("t", 12), Err(CONCURRENT_TRANSACTIONS));
    assert!(s.flush().is_empty(), "a refused retry writes nothing");
    s.c.markers_written("t", pid, 1, 13);
    assert_eq!(s.flush(), vec![rec("t", TxnState::CompleteAbort, pid, 1)]);
    assert_eq!(s.init("t", 14), Ok((pid, 2)));
}

#[test]
fn a_transaction_writes_ongoing_then_prepare_then_complete_and_its_markers_once_durable() {
    for commit in [true, false] {
        let (prepare, complete) = if commit {
            (TxnState::PrepareCommit, TxnState::CompleteCommit)
        } else {
            (TxnState::PrepareAbort, TxnState::CompleteAbort)
        };
        let mut s = Shell::new();
        let (pid, epoch) = s.init("t", 0).unwrap();
        let mut log = s.flush();
        s.c.add_partitions("t", pid, epoch, &parts(&[("a", 1), ("a", 0)]), 100)
            .unwrap();
        log.extend(s.flush());
        s.c.add_offsets("t", pid, epoch, 7, 200).unwrap();
        log.extend(s.flush());
        s.c.end_txn("t", pid, epoch, commit, 300).unwrap();
        assert!(
            s.c.take_marker_jobs().is_empty(),
            "no markers before the Prepare record is durable"
        );
        log.extend(s.flush());
        let jobs = s.write_markers(400);
        assert_eq!(
            jobs,
            vec![MarkerJob {
                transactional_id: "t".into(),
                producer_id: pid,
                producer_epoch: epoch,
                commit,
                partitions: parts(&[("__consumer_offsets", 7), ("a", 0), ("a", 1)]),
            }]
        );
        log.extend(s.flush());
        assert_eq!(
            log,
            vec![
                rec("t", TxnState::Empty, pid, 0),
                rec("t", TxnState::Ongoing, pid, 0),
                rec("t", TxnState::Ongoing, pid, 0),
                rec("t", prepare, pid, 0),
                rec("t", complete, pid, 0),
            ],
            "commit = {commit}"
        );
        let d = s.c.describe("t").unwrap();
        assert_eq!(d.state, complete);
        assert!(
            d.partitions.is_empty(),
            "a completed transaction has no partitions"
        );
        assert_eq!(
            d.transaction_start_ms, 100,
            "started with the first partition"
        );
        // The Ongoing record carries the partitions, grouped by topic.
        let ongoing = records::decode_value(s.log[2].value.as_ref().unwrap()).unwrap();
        assert_eq!(
            ongoing.partitions,
            Some(vec![
                ("__consumer_offsets".into(), vec![7]),
                ("a".into(), vec![0, 1])
            ])
        );
    }
}

#[test]
fn adding_partitions_already_in_the_transaction_writes_no_record() {
    let mut s = Shell::new();
    let (pid, epoch) = s.begin("t", &[("a", 0), ("b", 3)], 0);
    assert_eq!(
        s.c.add_partitions("t", pid, epoch, &parts(&[("b", 3)]), 5),
        Ok(())
    );
    assert!(s.flush().is_empty());
    s.c.add_partitions("t", pid, epoch, &parts(&[("b", 3), ("b", 4)]), 6)
        .unwrap();
    assert_eq!(s.flush(), vec![rec("t", TxnState::Ongoing, pid, epoch)]);
    assert_eq!(
        s.c.describe("t").unwrap().transaction_start_ms,
        0,
        "extending keeps the start"
    );
}

#[test]
fn adding_no_partitions_starts_no_transaction() {
    let mut s = Shell::new();
    let (pid, epoch) = s.init("t", 0).unwrap();
    s.flush();
    assert_eq!(s.c.add_partitions("t", pid, epoch, &[], 1), Ok(()));
    assert!(s.flush().is_empty());
    assert_eq!(s.state("t"), Some(TxnState::Empty));
}

#[test]
fn requests_while_markers_are_written_get_concurrent_transactions() {
    let mut s = Shell::new();
    let (pid, epoch) = s.begin("t", &[("a", 0)], 0);
    s.c.end_txn("t", pid, epoch, true, 1).unwrap();
    s.flush();
    let a = parts(&[("a", 1)]);
    assert_eq!(
        s.c.add_partitions("t", pid, epoch, &a, 2),
        Err(CONCURRENT_TRANSACTIONS)
    );
    assert_eq!(
        s.c.add_offsets("t", pid, epoch, 0, 2),
        Err(CONCURRENT_TRANSACTIONS)
    );
    assert_eq!(
        s.c.end_txn("t", pid, epoch, true, 2),
        Err(CONCURRENT_TRANSACTIONS),
        "a retried commit waits for the markers"
    );
    assert_eq!(
        s.c.end_txn("t", pid, epoch, false, 2),
        Err(INVALID_TXN_STATE),
        "an abort cannot overtake a commit"
    );
    assert_eq!(s.init("t", 2), Err(CONCURRENT_TRANSACTIONS));
    assert!(s.flush().is_empty());
    assert_eq!(s.state("t"), Some(TxnState::PrepareCommit));
}

#[test]
fn repeating_the_end_of_a_completed_transaction_succeeds_and_other_ends_are_invalid() {
    let mut s = Shell::new();
    let (pid, epoch) = s.init("t", 0).unwrap();
    s.flush();
    for commit in [true, false] {
        assert_eq!(
            s.c.end_txn("t", pid, epoch, commit, 1),
            Err(INVALID_TXN_STATE),
            "nothing to end in Empty"
        );
    }
    s.c.add_partitions("t", pid, epoch, &parts(&[("a", 0)]), 2)
        .unwrap();
    s.c.end_txn("t", pid, epoch, false, 3).unwrap();
    s.flush();
    s.write_markers(4);
    s.flush();
    assert_eq!(s.c.end_txn("t", pid, epoch, false, 5), Ok(()));
    assert!(s.flush().is_empty(), "a retry writes nothing");
    assert!(s.c.take_marker_jobs().is_empty(), "nor markers");
    assert_eq!(
        s.c.end_txn("t", pid, epoch, true, 6),
        Err(INVALID_TXN_STATE)
    );
}

#[test]
fn requests_with_a_wrong_producer_id_or_epoch_are_refused() {
    let mut s = Shell::new();
    let (pid, _) = s.init("t", 0).unwrap();
    s.init("t", 1).unwrap();
    s.init("t", 2).unwrap();
    s.flush();
    // The id is at epoch 2 now.
    let cases: [(&str, i64, i16, i16); 5] = [
        ("unknown", pid, 2, INVALID_PRODUCER_ID_MAPPING),
        ("t", pid + 1, 2, INVALID_PRODUCER_ID_MAPPING),
        ("t", pid, 1, PRODUCER_FENCED),
        ("t", pid, 3, PRODUCER_FENCED),
        ("t", pid, -1, PRODUCER_FENCED),
    ];
    let a = parts(&[("a", 0)]);
    for (id, p, e, error) in cases {
        assert_eq!(
            s.c.add_partitions(id, p, e, &a, 3),
            Err(error),
            "{id} {p} {e}"
        );
        assert_eq!(s.c.add_offsets(id, p, e, 0, 3), Err(error), "{id} {p} {e}");
        assert_eq!(s.c.end_txn(id, p, e, true, 3), Err(error), "{id} {p} {e}");
        assert_eq!(s.c.end_txn(id, p, e, false, 3), Err(error), "{id} {p} {e}");
    }
    assert!(s.flush().is_empty());
    assert_eq!(s.state("t"), Some(TxnState::Empty));
}

#[test]
fn a_timed_out_transaction_is_aborted_with_a_bumped_epoch_that_fences_the_hung_producer() {
    let mut s = Shell::new();
    s.c.tick(0);
    let (pid, epoch) = s.begin("t", &[("a", 0)], 1_000);
    // Times out once start + timeout < now, checked at most every 10 s.
    s.c.tick(61_000);
    assert!(s.flush().is_empty(), "not past the timeout yet");
    s.c.tick(61_001);
    assert!(s.flush().is_empty(), "past it, but checked 1 ms ago");
    s.c.tick(71_000);
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::PrepareAbort, pid, epoch + 1)]
    );
    assert_eq!(
        s.c.take_marker_jobs(),
        vec![MarkerJob {
            transactional_id: "t".into(),
            producer_id: pid,
            producer_epoch: epoch + 1,
            commit: false,
            partitions: parts(&[("a", 0)]),
        }]
    );
    // The hung producer comes back: everything it tries is refused.
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Err(INVALID_PRODUCER_EPOCH)
    );
    assert_eq!(
        s.c.add_partitions("t", pid, epoch, &parts(&[("a", 1)]), 71_001),
        Err(PRODUCER_FENCED)
    );
    assert_eq!(
        s.c.end_txn("t", pid, epoch, true, 71_001),
        Err(PRODUCER_FENCED)
    );
    s.c.markers_written("t", pid, epoch, 71_002);
    assert!(s.flush().is_empty(), "markers of a stale epoch are ignored");
    s.c.markers_written("t", pid, epoch + 1, 71_003);
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::CompleteAbort, pid, epoch + 1)]
    );
    assert_eq!(
        s.c.end_txn("t", pid, epoch, false, 71_004),
        Err(PRODUCER_FENCED),
        "still fenced after the abort completes"
    );
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Err(INVALID_PRODUCER_EPOCH)
    );
}

#[test]
fn a_fenced_producer_may_init_with_its_old_epoch_until_another_producer_inits() {
    let mut s = Shell::new();
    let (pid, _) = s.begin("t", &[("a", 0)], 0);
    s.c.tick(TIMEOUT_MS as i64 + 1);
    s.flush();
    s.write_markers(TIMEOUT_MS as i64 + 2);
    s.flush();
    // Epoch 1 was the coordinator's own; the producer that held 0 may take it over (KIP-360).
    assert_eq!(
        s.init_expecting("t", Some((pid, 5)), 1),
        Err(PRODUCER_FENCED)
    );
    assert_eq!(
        s.init_expecting("t", Some((pid + 1, 0)), 1),
        Err(PRODUCER_FENCED)
    );
    assert_eq!(s.init_expecting("t", Some((pid, 0)), 2), Ok((pid, 1)));
    assert_eq!(
        s.init_expecting("t", Some((pid, 0)), 3),
        Ok((pid, 1)),
        "a retry whose answer was lost gets the same epoch"
    );
    assert_eq!(
        s.init_expecting("t", Some((pid, 1)), 4),
        Ok((pid, 2)),
        "the current epoch is bumped"
    );
    assert_eq!(s.init_expecting("t", Some((pid, 1)), 5), Ok((pid, 2)));
    // A producer that does not name an epoch (a new instance) fences every earlier one.
    assert_eq!(s.init("t", 6), Ok((pid, 3)));
    assert_eq!(
        s.init_expecting("t", Some((pid, 1)), 7),
        Err(PRODUCER_FENCED)
    );
    assert_eq!(
        s.init_expecting("t", Some((pid, 2)), 7),
        Err(PRODUCER_FENCED)
    );
    let records = s.flush();
    assert_eq!(records.len(), 5, "every init that succeeded is recorded");
}

#[test]
fn idle_ids_expire_with_a_tombstone_but_transactions_in_progress_do_not() {
    let mut s = Shell::with(TxnConfig {
        id_expiration_ms: 1_000,
        expire_check_interval_ms: 100,
        ..TxnConfig::default()
    });
    let (idle_pid, _) = s.init("idle", 0).unwrap();
    s.begin("busy", &[("a", 0)], 0);
    s.flush();
    s.c.tick(1_000);
    assert!(s.flush().is_empty(), "idle exactly as long as allowed");
    s.c.tick(1_050);
    assert!(s.flush().is_empty(), "checked 50 ms ago");
    s.c.tick(1_100);
    assert_eq!(s.flush(), vec![("idle".to_string(), None)]);
    assert_eq!(s.c.describe("idle"), None);
    assert_eq!(s.c.len(), 1);
    assert_eq!(s.state("busy"), Some(TxnState::Ongoing));
    assert!(!s.c.by_producer_id.contains_key(&idle_pid));
    assert_index_consistent(&s.c);
    // The id starts over with a fresh producer id.
    assert_eq!(
        s.init("idle", 1_200).map(|(p, e)| (p > idle_pid, e)),
        Ok((true, 0))
    );
}

#[test]
fn a_failed_append_undoes_every_transition_it_carried_and_drops_their_marker_jobs() {
    let mut s = Shell::new();
    let (pid, epoch) = s.init("a", 0).unwrap();
    s.flush();
    let before = persistent_state(&s.c);
    let (new_pid, _) = s.init("b", 1).unwrap();
    s.c.add_partitions("a", pid, epoch, &parts(&[("x", 0)]), 2)
        .unwrap();
    s.c.end_txn("a", pid, epoch, true, 3).unwrap();
    assert_eq!(s.fail_flush(), 3);
    assert_eq!(persistent_state(&s.c), before);
    assert_eq!(
        s.c.describe("b"),
        None,
        "a new id whose record failed is gone"
    );
    assert!(!s.c.by_producer_id.contains_key(&new_pid));
    assert_index_consistent(&s.c);
    assert!(s.c.take_marker_jobs().is_empty());
    assert_eq!(
        s.c.verify_partition(pid, epoch, "x", 0),
        Err(INVALID_TXN_STATE)
    );
    // The producer can simply try again.
    s.c.add_partitions("a", pid, epoch, &parts(&[("x", 0)]), 4)
        .unwrap();
    assert_eq!(s.flush(), vec![rec("a", TxnState::Ongoing, pid, epoch)]);
}

#[test]
fn a_failed_timeout_abort_is_undone_and_tried_again_at_the_next_check() {
    let mut s = Shell::new();
    let (pid, epoch) = s.begin("t", &[("a", 0)], 0);
    s.c.tick(100_000);
    assert_eq!(s.fail_flush(), 1);
    assert!(s.c.take_marker_jobs().is_empty());
    let d = s.c.describe("t").unwrap();
    assert_eq!((d.state, d.producer_epoch), (TxnState::Ongoing, epoch));
    assert_eq!(s.c.verify_partition(pid, epoch, "a", 0), Ok(()));
    s.c.tick(110_000);
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::PrepareAbort, pid, epoch + 1)]
    );
}

#[test]
fn requests_for_an_id_whose_records_are_in_flight_get_concurrent_transactions() {
    let mut s = Shell::new();
    let (pid, epoch) = s.init("t", 0).unwrap();
    let taken = s.c.take_records();
    assert_eq!(taken.len(), 1);
    let a = parts(&[("a", 0)]);
    assert_eq!(s.init("t", 1), Err(CONCURRENT_TRANSACTIONS));
    assert_eq!(
        s.c.add_partitions("t", pid, epoch, &a, 1),
        Err(CONCURRENT_TRANSACTIONS)
    );
    assert_eq!(
        s.c.end_txn("t", pid, epoch, true, 1),
        Err(CONCURRENT_TRANSACTIONS)
    );
    s.c.records_appended(true);
    assert_eq!(s.c.add_partitions("t", pid, epoch, &a, 2), Ok(()));
}

#[test]
fn a_lost_complete_record_is_retried_without_writing_the_markers_again() {
    let mut s = Shell::new();
    let (pid, epoch) = s.begin("t", &[("a", 0)], 0);
    s.c.end_txn("t", pid, epoch, true, 1).unwrap();
    s.flush();
    assert_eq!(s.write_markers(2).len(), 1);
    assert_eq!(s.fail_flush(), 1);
    assert_eq!(s.state("t"), Some(TxnState::PrepareCommit));
    let jobs = s.write_markers(3);
    assert_eq!(
        jobs,
        vec![MarkerJob {
            transactional_id: "t".into(),
            producer_id: pid,
            producer_epoch: epoch,
            commit: true,
            partitions: vec![],
        }]
    );
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::CompleteCommit, pid, epoch)]
    );
}

#[test]
fn a_failed_batch_that_completed_and_restarted_a_transaction_brings_back_the_completion() {
    // Found by the simulation: the batch ends in PrepareAbort as it began, but the abort it
    // restores still needs its Complete record.
    let mut s = Shell::new();
    let (pid, epoch) = s.begin("t", &[("a", 0)], 0);
    s.c.end_txn("t", pid, epoch, false, 1).unwrap();
    s.flush();
    s.write_markers(2);
    s.c.add_partitions("t", pid, epoch, &parts(&[("b", 0)]), 3)
        .unwrap();
    s.c.end_txn("t", pid, epoch, false, 4).unwrap();
    assert_eq!(s.fail_flush(), 3);
    let d = s.c.describe("t").unwrap();
    assert_eq!(
        (d.state, d.partitions),
        (TxnState::PrepareAbort, parts(&[("a", 0)]))
    );
    let jobs = s.write_markers(5);
    assert_eq!(jobs.len(), 1);
    assert!(!jobs[0].commit && jobs[0].partitions.is_empty());
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::CompleteAbort, pid, epoch)]
    );
}

#[test]
fn an_id_whose_expiry_is_in_flight_is_not_reused_until_the_tombstone_is_durable() {
    // Found by the simulation: the id is already absent from the map while its tombstone is
    // in flight, and must not be created afresh underneath it.
    let mut s = Shell::with(TxnConfig {
        id_expiration_ms: 1_000,
        expire_check_interval_ms: 100,
        ..TxnConfig::default()
    });
    let (pid, _) = s.init("t", 0).unwrap();
    s.flush();
    s.c.tick(2_000);
    assert_eq!(s.c.take_records().len(), 1);
    assert_eq!(s.init("t", 2_001), Err(CONCURRENT_TRANSACTIONS));
    s.c.records_appended(false);
    assert_eq!(s.c.describe("t").map(|d| d.producer_id), Some(pid));
    assert_index_consistent(&s.c);
    s.c.tick(20_000);
    s.flush();
    assert_eq!(s.c.describe("t"), None);
    assert_eq!(
        s.init("t", 20_001).map(|(p, e)| (p > pid, e)),
        Ok((true, 0))
    );
}

#[test]
fn replaying_the_log_rebuilds_every_transaction_and_resumes_their_markers() {
    let mut s = Shell::new();
    s.c.tick(0);
    s.begin("timed-out", &[("c", 0)], 10);
    s.c.tick(TIMEOUT_MS as i64 + 11);
    s.flush();
    s.c.take_marker_jobs();
    s.init("empty", 20).unwrap();
    s.flush();
    let (ongoing_pid, ongoing_epoch) = s.begin("ongoing", &[("a", 0), ("b", 1)], 30);
    let (pid, epoch) = s.begin("committing", &[("a", 1)], 40);
    s.c.end_txn("committing", pid, epoch, true, 50).unwrap();
    let (pid, epoch) = s.begin("committed", &[("a", 2)], 60);
    s.c.end_txn("committed", pid, epoch, true, 70).unwrap();
    s.flush();
    let jobs = s.c.take_marker_jobs();
    assert_eq!(jobs.len(), 2);
    s.c.markers_written("committed", pid, epoch, 80);
    s.flush();
    // Transitions whose append failed are not in the log, and must not come back.
    let (pid, epoch) = s.begin("failed", &[("d", 0)], 90);
    s.c.end_txn("failed", pid, epoch, false, 100).unwrap();
    s.fail_flush();

    let mut loaded = TransactionCoordinator::new(TxnConfig::default());
    for r in &s.log {
        loaded.replay(&r.key, r.value.as_deref()).unwrap();
    }
    loaded.finish_loading(100_000);
    assert_eq!(persistent_state(&loaded), persistent_state(&s.c));
    for id in s.c.txns.keys() {
        assert_eq!(loaded.describe(id), s.c.describe(id), "{id}");
    }
    assert_eq!(loaded.len(), 6);
    assert_index_consistent(&loaded);
    let resumed: Vec<(String, bool, i16)> = loaded
        .take_marker_jobs()
        .into_iter()
        .map(|j| (j.transactional_id, j.commit, j.producer_epoch))
        .collect();
    assert_eq!(
        resumed,
        vec![
            ("committing".into(), true, 0),
            ("timed-out".into(), false, 1)
        ]
    );
    assert_eq!(
        loaded.verify_partition(ongoing_pid, ongoing_epoch, "b", 1),
        Ok(())
    );
    // The Ongoing transaction kept its start (30 ms), so it times out as it would have.
    loaded.tick(TIMEOUT_MS as i64 + 31);
    let aborted: Vec<Said> = loaded.take_records().iter().map(said).collect();
    assert_eq!(
        aborted,
        vec![rec(
            "ongoing",
            TxnState::PrepareAbort,
            ongoing_pid,
            ongoing_epoch + 1
        )]
    );
}

#[test]
fn replay_applies_tombstones_and_rejects_malformed_records() {
    let mut c = TransactionCoordinator::new(TxnConfig::default());
    let value = TxnMetadata::new(7, TIMEOUT_MS, 0).value();
    c.replay(&records::txn_key("t"), Some(&records::txn_value(&value)))
        .unwrap();
    assert_eq!(c.len(), 1);
    c.replay(&records::txn_key("t"), None).unwrap();
    assert_eq!(c.len(), 0);
    assert_index_consistent(&c);
    assert!(c.replay(&[0, 0, 0, 5, b'x'], None).is_err());
    assert!(c.replay(&records::txn_key("t"), Some(&[0, 0, 1])).is_err());
    assert_eq!(c.len(), 0);
}

#[test]
fn an_exhausted_epoch_moves_to_a_fresh_producer_id() {
    let mut s = Shell::new();
    let value = TxnValue {
        producer_epoch: i16::MAX - 2,
        ..TxnMetadata::new(5, TIMEOUT_MS, 0).value()
    };
    s.c.replay(&records::txn_key("t"), Some(&records::txn_value(&value)))
        .unwrap();
    s.c.finish_loading(0);
    assert_eq!(s.init("t", 1), Ok((5, i16::MAX - 1)));
    assert_eq!(s.init("t", 2), Ok((1000, 0)));
    assert_eq!(
        s.flush(),
        vec![
            rec("t", TxnState::Empty, 5, i16::MAX - 1),
            rec("t", TxnState::Empty, 1000, 0)
        ]
    );
    assert!(!s.c.by_producer_id.contains_key(&5));
    assert_index_consistent(&s.c);
    assert_eq!(
        s.c.add_partitions("t", 5, i16::MAX - 1, &parts(&[("a", 0)]), 3),
        Err(INVALID_PRODUCER_ID_MAPPING)
    );
}

#[test]
fn the_last_epoch_can_still_be_fenced_by_a_timeout() {
    let mut s = Shell::new();
    let value = TxnValue {
        producer_epoch: i16::MAX - 2,
        ..TxnMetadata::new(5, TIMEOUT_MS, 0).value()
    };
    s.c.replay(&records::txn_key("t"), Some(&records::txn_value(&value)))
        .unwrap();
    let (pid, epoch) = s.begin("t", &[("a", 0)], 0);
    assert_eq!((pid, epoch), (5, i16::MAX - 1));
    s.c.tick(TIMEOUT_MS as i64 + 1);
    assert_eq!(
        s.flush(),
        vec![rec("t", TxnState::PrepareAbort, 5, i16::MAX)]
    );
    s.write_markers(TIMEOUT_MS as i64 + 2);
    s.flush();
    assert_eq!(s.init("t", TIMEOUT_MS as i64 + 3), Ok((1000, 0)));
}

#[test]
fn verify_partition_accepts_only_durable_partitions_of_the_ongoing_transaction() {
    let mut s = Shell::new();
    let (pid, epoch) = s.init("t", 0).unwrap();
    s.flush();
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Err(INVALID_TXN_STATE),
        "no transaction"
    );
    assert_eq!(
        s.c.verify_partition(pid + 1, epoch, "a", 0),
        Err(INVALID_TXN_STATE),
        "unknown producer"
    );
    s.c.add_partitions("t", pid, epoch, &parts(&[("a", 0)]), 1)
        .unwrap();
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Err(INVALID_TXN_STATE),
        "added, but the record is not appended yet"
    );
    s.flush();
    assert_eq!(s.c.verify_partition(pid, epoch, "a", 0), Ok(()));
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 1),
        Err(INVALID_TXN_STATE)
    );
    assert_eq!(
        s.c.verify_partition(pid, epoch, "b", 0),
        Err(INVALID_TXN_STATE)
    );
    assert_eq!(
        s.c.verify_partition(pid, epoch - 1, "a", 0),
        Err(INVALID_PRODUCER_EPOCH)
    );
    s.c.end_txn("t", pid, epoch, true, 2).unwrap();
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Ok(()),
        "the commit is not durable yet"
    );
    s.flush();
    assert_eq!(
        s.c.verify_partition(pid, epoch, "a", 0),
        Err(INVALID_TXN_STATE),
        "a batch after EndTxn would join no transaction"
    );
}

#[test]
fn list_filters_by_state_producer_id_and_duration() {
    let mut s = Shell::new();
    let (a, _) = s.begin("a", &[("x", 0)], 1_000);
    let (b, _) = s.begin("b", &[("x", 1)], 5_000);
    let (c, _) = s.init("c", 0).unwrap();
    s.flush();
    let ids =
        |l: Vec<TxnListing>| -> Vec<String> { l.into_iter().map(|l| l.transactional_id).collect() };
    let now = 10_000;
    assert_eq!(ids(s.c.list(&[], &[], -1, now)), ["a", "b", "c"]);
    assert_eq!(
        s.c.list(&["Ongoing".into()], &[b], -1, now),
        vec![TxnListing {
            transactional_id: "b".into(),
            producer_id: b,
            state: TxnState::Ongoing
        }]
    );
    assert_eq!(ids(s.c.list(&["Empty".into()], &[], -1, now)), ["c"]);
    assert_eq!(
        ids(s
            .c
            .list(&["Empty".into(), "Ongoing".into()], &[a, c, 99], -1, now)),
        ["a", "c"]
    );
    assert!(
        s.c.list(&["ongoing".into()], &[], -1, now).is_empty(),
        "names match exactly"
    );
    assert!(s.c.list(&["Nonsense".into()], &[], -1, now).is_empty());
    assert_eq!(
        ids(s.c.list(&[], &[], 6_000, now)),
        ["a"],
        "running longer than 6 s: a started at 1 s, b at 5 s, c never"
    );
    assert_eq!(ids(s.c.list(&[], &[], 0, now)), ["a", "b"]);
    assert_eq!(
        TxnState::from_name("PrepareCommit"),
        Some(TxnState::PrepareCommit)
    );
    assert_eq!(TxnState::from_name("Nonsense"), None);
}

#[test]
fn invalid_requests_are_refused_before_anything_changes() {
    let mut s = Shell::with(TxnConfig {
        transaction_partitions_max: 3,
        ..TxnConfig::default()
    });
    let mut never = || -> Result<i64, i16> { panic!("must not allocate") };
    for timeout in [0, -1, 900_001] {
        assert_eq!(
            s.c.init_producer_id("t", timeout, None, 0, &mut never),
            Err(INVALID_TRANSACTION_TIMEOUT)
        );
    }
    assert_eq!(
        s.c.init_producer_id("", TIMEOUT_MS, None, 0, &mut never),
        Err(INVALID_REQUEST)
    );
    assert_eq!(
        s.c.init_producer_id("t", TIMEOUT_MS, None, 0, &mut || Err(
            COORDINATOR_NOT_AVAILABLE
        )),
        Err(COORDINATOR_NOT_AVAILABLE),
        "the allocator's error is the answer"
    );
    let (pid, epoch) = s.begin("t", &[("a", 0), ("a", 1)], 0);
    assert_eq!(
        s.c.init_producer_id("u", TIMEOUT_MS, None, 0, &mut || Ok(pid)),
        Err(UNKNOWN_SERVER_ERROR),
        "a producer id already in use is never handed out twice"
    );
    let long_topic = "x".repeat(250);
    let cases: [Vec<(String, i32)>; 3] = [
        parts(&[("a", 2), ("a", 3)]),
        vec![(long_topic, 0)],
        parts(&[("a", -1)]),
    ];
    for case in cases {
        assert_eq!(
            s.c.add_partitions("t", pid, epoch, &case, 1),
            Err(INVALID_REQUEST),
            "{case:?}"
        );
    }
    assert!(s.flush().is_empty());
    assert_eq!(s.c.len(), 1);
    assert_eq!(
        s.c.describe("t").unwrap().partitions,
        parts(&[("a", 0), ("a", 1)])
    );
}

#[test]
fn java_string_hash_places_ids_like_kafka() {
    // Well-known Java values: "hello".hashCode() is 99162322, and
    // "polygenelubricants".hashCode() is Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
    assert_eq!(partition_for("hello", 50), 99162322 % 50);
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    let c = TransactionCoordinator::new(TxnConfig {
        state_partitions: 7,
        ..TxnConfig::default()
    });
    assert_eq!(c.partition_for("hello"), 99162322 % 7);
}

#[test]
fn state_names_and_codes_are_kafkas() {
    let expected = [
        (TxnState::Empty, "Empty", 0),
        (TxnState::Ongoing, "Ongoing", 1),
        (TxnState::PrepareCommit, "PrepareCommit", 2),
        (TxnState::PrepareAbort, "PrepareAbort", 3),
        (TxnState::CompleteCommit, "CompleteCommit", 4),
        (TxnState::CompleteAbort, "CompleteAbort", 5),
        (TxnState::Dead, "Dead", 6),
        (TxnState::PrepareEpochFence, "PrepareEpochFence", 7),
    ];
    for (state, name, code) in expected {
        assert_eq!((state.name(), state.code()), (name, code));
        assert_eq!(TxnState::from_code(code), Some(state));
    }
    assert_eq!(TxnState::from_code(8), None);
}

mod simulation;
