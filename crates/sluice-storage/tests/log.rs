//! Storage properties: what is appended reads back byte-for-byte, indexes and segment rolls
//! are transparent, recovery keeps exactly the valid prefix, group commit shares syncs, and a
//! failed sync takes the directory offline.

#[path = "log/sim.rs"]
mod sim;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use proptest::prelude::*;
use sluice_records::{BatchBuilder, BatchHeader, BatchIter, NewRecord};
use sluice_storage::{
    AbortedTxn, CleanerConfig, DirState, Durability, FailAfter, Isolation, LogConfig, LogManager,
    StorageError, Throttle, TimestampPolicy, UnifiedLog,
};

/// Skips syncing: for tests that reopen logs hundreds of times and do not test durability.
#[derive(Debug, Default)]
struct NoSync;
impl Durability for NoSync {
    fn sync_file(&self, _: &File) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&self, _: &File) -> io::Result<()> {
        Ok(())
    }
}

fn state(d: impl Durability + 'static) -> Arc<DirState> {
    Arc::new(DirState::new(Arc::new(d)))
}

/// A batch of `n` records whose values identify `(tag, record index)`.
fn batch(tag: u32, n: usize, timestamp: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(timestamp);
    for i in 0..n {
        b.push(NewRecord {
            key: Some(format!("key-{tag}-{i}").into_bytes()),
            value: Some(
                format!(
                    "value-{tag}-{i}-{}",
                    "x".repeat((tag as usize * 7 + i) % 50)
                )
                .into_bytes(),
            ),
            headers: vec![("tag".into(), Some(tag.to_be_bytes().to_vec()))],
            timestamp_delta: i as i64,
        });
    }
    b.build()
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// All batches readable from `offset` on, following reads until the log end.
fn read_all(log: &UnifiedLog, mut offset: i64) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1000, true).unwrap();
        assert!(!read.records.is_empty(), "no progress at offset {offset}");
        for b in BatchIter::new(&read.records) {
            let h = BatchHeader::validate(b.unwrap()).expect("served batches are valid");
            out.push(h);
            offset = h.next_offset();
        }
    }
    out
}

#[test]
fn appended_batches_read_back_with_assigned_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    let mut expected = Vec::new();
    for tag in 0..30u32 {
        let bytes = batch(tag, 1 + tag as usize % 4, 1000 + i64::from(tag));
        let out = log.append(&bytes, 0).unwrap();
        expected.push((out.base_offset, out.last_offset, bytes));
    }
    let headers = read_all(&log, 0);
    assert_eq!(headers.len(), expected.len());
    for (h, (base, last, _)) in headers.iter().zip(&expected) {
        assert_eq!((h.base_offset, h.last_offset()), (*base, *last));
    }
    // A read starting mid-batch returns that whole batch first, as Kafka does.
    let (base, last, ref original) = expected[7];
    assert!(last > base, "batch 7 has several records");
    let read = log.read(base + 1, 1, true).unwrap();
    let first = BatchIter::new(&read.records).next().unwrap().unwrap();
    assert_eq!(first.len(), original.len());
    // Only the base offset (0..8) and the partition leader epoch (12..16) are the broker's.
    assert_eq!(&first[8..12], &original[8..12]);
    assert_eq!(
        &first[16..],
        &original[16..],
        "the rest is stored exactly as produced"
    );
    assert_eq!(BatchHeader::parse(first).unwrap().partition_leader_epoch, 0);
    assert_eq!(BatchHeader::parse(first).unwrap().base_offset, base);
    // Reads never pass the log end, and offsets past it are out of range.
    assert_eq!(read.end_offset, log.log_end_offset());
    assert!(log
        .read(log.log_end_offset(), 1000, true)
        .unwrap()
        .records
        .is_empty());
    assert!(matches!(
        log.read(log.log_end_offset() + 1, 1000, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

/// One append of 700 batches (1,400 write slices, over Linux's IOV_MAX of 1,024 per call) is
/// written whole and in order, each batch exactly as produced but for its patched prefix.
#[test]
fn an_append_of_many_batches_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 30), None, state(NoSync), 0).unwrap();
    let originals: Vec<Vec<u8>> = (0..700u32)
        .map(|t| batch(t, 1 + t as usize % 2, 9))
        .collect();
    let out = log.append(&originals.concat(), 0).unwrap();
    assert_eq!(out.base_offset, 0);
    let mut stored = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        for b in BatchIter::new(&read.records) {
            let b = b.unwrap();
            offset = BatchHeader::parse(b).unwrap().next_offset();
            stored.push(b.to_vec());
        }
    }
    assert_eq!(stored.len(), originals.len());
    for (s, o) in stored.iter().zip(&originals) {
        assert_eq!(&s[8..12], &o[8..12]);
        assert_eq!(&s[16..], &o[16..]);
    }
}

#[test]
fn max_bytes_cuts_at_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    let sizes: Vec<usize> = (0..5u32).map(|t| log_append_len(&log, t)).collect();
    let read = log.read(0, sizes[0] + sizes[1] + 1, false).unwrap();
    assert_eq!(read.records.len(), sizes[0] + sizes[1]);
    // Smaller than one batch: nothing, unless at least one batch is asked for.
    assert!(log.read(0, 10, false).unwrap().records.is_empty());
    assert_eq!(log.read(0, 10, true).unwrap().records.len(), sizes[0]);
}

fn log_append_len(log: &UnifiedLog, tag: u32) -> usize {
    let bytes = batch(tag, 3, 5);
    log.append(&bytes, 0).unwrap();
    bytes.len()
}

#[test]
fn segments_roll_by_size_and_age_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2_000);
    cfg.segment_ms = 1_000;
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    let mut total = 0;
    for tag in 0..40u32 {
        let bytes = batch(tag, 2, 7);
        total += bytes.len();
        log.append(&bytes, 0).unwrap();
    }
    let by_size = log.segment_count();
    assert!(
        by_size >= total / 2_000,
        "{total} bytes in 2 KB segments: {by_size} segments"
    );
    assert!(by_size > 1);
    log.append(&batch(99, 1, 7), 5_000).unwrap();
    assert_eq!(
        log.segment_count(),
        by_size + 1,
        "an old segment rolls on the next append"
    );
    let headers = read_all(&log, 0);
    assert_eq!(headers.len(), 41);
    assert_eq!(headers.last().unwrap().next_offset(), log.log_end_offset());
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(
        names.iter().all(|n| n.len() == 24),
        "20-digit base offset names: {names:?}"
    );
}

#[test]
fn invalid_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 20);
    cfg.max_message_bytes = 300;
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    let good = batch(1, 1, 5);
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let big = batch(2, 20, 5);
    assert!(big.len() > 300);
    assert!(matches!(
        log.append(&bad_crc, 0),
        Err(StorageError::CorruptMessage(_))
    ));
    assert!(matches!(
        log.append(&big, 0),
        Err(StorageError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        log.append(&good[..good.len() - 1], 0),
        Err(StorageError::CorruptMessage(_))
    ));
    // A good batch followed by a bad one: all or nothing.
    let mut mixed = good.clone();
    mixed.extend_from_slice(&bad_crc);
    assert!(log.append(&mixed, 0).is_err());
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(
        fs::metadata(dir.path().join("00000000000000000000.log"))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn log_append_time_topics_stamp_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 20);
    cfg.timestamp_type = TimestampPolicy::LogAppendTime;
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    let out = log.append(&batch(1, 2, 5), 123_456).unwrap();
    assert_eq!(out.log_append_time, 123_456);
    let h = read_all(&log, 0)[0];
    assert_eq!(h.max_timestamp, 123_456);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1_500), None, state(NoSync), 0).unwrap();
    // Batch t has records at timestamps 1000*t + i for i in 0..3.
    for t in 0..30u32 {
        log.append(&batch(t, 3, 1000 * i64::from(t)), 0).unwrap();
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), Some((16, 5_001)));
    assert_eq!(log.offset_for_timestamp(5_003).unwrap(), Some((18, 6_000)));
    assert_eq!(
        log.offset_for_timestamp(29_002).unwrap(),
        Some((89, 29_002))
    );
    assert_eq!(log.offset_for_timestamp(29_003).unwrap(), None);
}

/// Builds a log of `batches` batches in `dir` and returns each batch's (end position in the
/// single segment, next offset).
fn build_log(dir: &Path, batches: u32) -> Vec<(u64, i64)> {
    let log = UnifiedLog::open(dir, config(1 << 30), None, state(NoSync), 0).unwrap();
    let mut ends = Vec::new();
    let mut pos = 0u64;
    for tag in 0..batches {
        let bytes = batch(tag, 1 + tag as usize % 3, 100);
        let out = log.append(&bytes, 0).unwrap();
        pos += bytes.len() as u64;
        ends.push((pos, out.last_offset + 1));
    }
    ends
}

/// Truncating the active segment at every byte position of its last batches (a torn write
/// at any point) recovers exactly the batches that were complete, serves nothing corrupt, and
/// accepts new appends at the recovered end.
#[test]
fn recovery_keeps_the_complete_prefix_for_every_cut_position() {
    let src = tempfile::tempdir().unwrap();
    let ends = build_log(src.path(), 12);
    let segment = "00000000000000000000.log";
    let original = fs::read(src.path().join(segment)).unwrap();
    let from = ends[ends.len() - 4].0 as usize;
    for cut in from..=original.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment), &original[..cut]).unwrap();
        let log = UnifiedLog::open(dir.path(), config(1 << 30), None, state(NoSync), 0).unwrap();
        let (keep_pos, keep_next) = ends
            .iter()
            .rev()
            .find(|(end, _)| *end as usize <= cut)
            .copied()
            .unwrap();
        assert_eq!(log.log_end_offset(), keep_next, "cut at {cut}");
        assert_eq!(
            fs::metadata(dir.path().join(segment)).unwrap().len(),
            keep_pos,
            "cut at {cut}"
        );
        let served = log.read(0, 1 << 20, true).unwrap().records;
        assert_eq!(served, &original[..keep_pos as usize], "cut at {cut}");
        let out = log.append(&batch(99, 1, 100), 0).unwrap();
        assert_eq!(out.base_offset, keep_next);
    }
}

/// A flipped bit in a middle batch truncates the log there and drops later segments: nothing
/// after the damage is served, even if it was itself intact.
#[test]
fn recovery_truncates_at_corruption_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = UnifiedLog::open(dir.path(), config(1_000), None, state(NoSync), 0).unwrap();
        for tag in 0..30u32 {
            log.append(&batch(tag, 2, 100), 0).unwrap();
        }
        assert!(log.segment_count() >= 4);
    }
    let mut logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let victim = &logs[1];
    let mut bytes = fs::read(victim).unwrap();
    let (_, first) = BatchHeader::peek_size(&bytes).unwrap();
    bytes[first + 70] ^= 0x40; // inside the second batch's records
    fs::write(victim, &bytes).unwrap();
    let log = UnifiedLog::open(dir.path(), config(1_000), None, state(NoSync), 0).unwrap();
    assert_eq!(log.segment_count(), 2);
    let base: i64 = victim
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    assert_eq!(
        log.log_end_offset(),
        base + 2,
        "only the first batch of the damaged segment stays"
    );
    for h in read_all(&log, 0) {
        assert!(h.next_offset() <= base + 2);
    }
}

/// After a clean shutdown (flush + checkpointed recovery point) opening validates no batch
/// bodies; after a crash (no recovery point) it validates the segments.
#[test]
fn clean_restart_does_not_rescan_but_crash_restart_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(4_000);
    let (end, rp) = {
        let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
        for tag in 0..60u32 {
            log.append(&batch(tag, 3, 100), 0).unwrap();
        }
        log.flush_all(0).unwrap();
        (log.log_end_offset(), log.recovery_point())
    };
    assert_eq!(rp, end);
    let clean = UnifiedLog::open(dir.path(), cfg.clone(), Some(rp), state(NoSync), 0).unwrap();
    assert_eq!(clean.recovery_scanned_bytes(), 0);
    assert_eq!(clean.log_end_offset(), end);
    assert_eq!(read_all(&clean, 0).len(), 60);
    drop(clean);
    let crashed = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    assert!(crashed.recovery_scanned_bytes() > 0);
    assert_eq!(crashed.log_end_offset(), end);
}

/// Closed segments keep one index entry in 512 in memory and read the rest from their index
/// files, and every read, timestamp lookup and restart (clean or after a crash) still finds
/// exactly what the whole index in memory found; `segment.index.bytes` rolls a segment whose
/// index is full.
#[test]
fn closed_segments_keep_a_summary_of_their_indexes_and_still_find_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 250_000,
        index_interval_bytes: 0, // an entry per batch: thousands per segment
        ..LogConfig::default()
    };
    let (end, rp) = {
        let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
        for t in 0..8000u32 {
            log.append(&batch(t % 5, 1, 1000 + i64::from(t)), 0)
                .unwrap();
        }
        log.flush_all(0).unwrap();
        (log.log_end_offset(), log.recovery_point())
    };
    assert_eq!(end, 8000);
    for recovery_point in [Some(rp), None] {
        let log =
            UnifiedLog::open(dir.path(), cfg.clone(), recovery_point, state(NoSync), 0).unwrap();
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        let (resident, all) = log.index_entries();
        assert_eq!(all, 2 * 8000, "one offset and one time entry per batch");
        assert!(
            resident < all / 3,
            "{recovery_point:?}: {resident} of {all} entries resident"
        );
        for offset in (0..8000).step_by(37) {
            let read = log.read(offset, 1, true).unwrap();
            let first = BatchIter::new(&read.records).next().unwrap().unwrap();
            assert_eq!(BatchHeader::validate(first).unwrap().base_offset, offset);
        }
        for t in (0..8000i64).step_by(53) {
            assert_eq!(
                log.offset_for_timestamp(1000 + t).unwrap(),
                Some((t, 1000 + t))
            );
        }
        assert_eq!(read_all(&log, 0).len(), 8000);
    }
    // With segment.index.bytes at 4 KiB, no segment holds more than 512 offset entries.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_index_bytes: 4096,
        ..cfg
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for t in 0..2000u32 {
        log.append(&batch(t % 5, 1, 1000), 0).unwrap();
    }
    assert_eq!(log.segment_count(), 4, "2000 entries, 512 per segment");
    assert_eq!(read_all(&log, 0).len(), 2000);
}

/// A sync that blocks lets other appenders queue; when it finishes, one more sync covers all
/// of them (group commit), instead of one sync each.
#[test]
fn concurrent_flushes_share_one_sync() {
    #[derive(Debug)]
    struct Gate {
        syncs: AtomicU64,
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
    }
    impl Durability for Gate {
        fn sync_file(&self, _: &File) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
            }
            Ok(())
        }
        fn sync_dir(&self, _: &File) -> io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        syncs: AtomicU64::new(0),
        entered: Mutex::new(None),
        release: Mutex::new(Some(release_rx)),
    });
    let dir_state = Arc::new(DirState::new(gate.clone()));
    let log = Arc::new(UnifiedLog::open(dir.path(), config(1 << 20), None, dir_state, 0).unwrap());
    *gate.entered.lock().unwrap() = Some(entered_tx);
    let before = gate.syncs.load(Ordering::SeqCst);

    let first = {
        let log = log.clone();
        std::thread::spawn(move || {
            let out = log.append(&batch(0, 1, 1), 0).unwrap();
            log.flush_to(out.last_offset + 1).unwrap();
        })
    };
    entered_rx.recv().unwrap(); // the first sync is in progress
    let (appended_tx, appended_rx) = mpsc::channel();
    let waiters: Vec<_> = (1..=8u32)
        .map(|t| {
            let log = log.clone();
            let appended_tx = appended_tx.clone();
            std::thread::spawn(move || {
                let out = log.append(&batch(t, 1, 1), 0).unwrap();
                appended_tx.send(()).unwrap();
                log.flush_to(out.last_offset + 1).unwrap();
            })
        })
        .collect();
    for _ in 0..8 {
        appended_rx.recv().unwrap();
    }
    release_tx.send(()).unwrap();
    first.join().unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(
        gate.syncs.load(Ordering::SeqCst) - before,
        2,
        "9 flushes, 2 syncs"
    );
    assert_eq!(log.recovery_point(), 9);
}

/// A periodic checkpoint of a log with no new appends syncs and writes nothing.
#[test]
fn checkpointing_an_unchanged_log_does_no_io() {
    #[derive(Debug, Default)]
    struct Count(AtomicU64);
    impl Durability for Count {
        fn sync_file(&self, _: &File) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn sync_dir(&self, _: &File) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let count = Arc::new(Count::default());
    let log = UnifiedLog::open(
        dir.path(),
        config(1 << 20),
        None,
        Arc::new(DirState::new(count.clone())),
        0,
    )
    .unwrap();
    log.append(&batch(1, 2, 5), 0).unwrap();
    log.flush_all(0).unwrap();
    let after_first = count.0.load(Ordering::SeqCst);
    log.flush_all(0).unwrap();
    log.flush_all(0).unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), after_first);
    log.append(&batch(2, 2, 5), 0).unwrap();
    log.flush_all(0).unwrap();
    assert!(count.0.load(Ordering::SeqCst) > after_first);
}

#[test]
fn failed_sync_takes_the_directory_offline() {
    let dir = tempfile::tempdir().unwrap();
    // Opening a new log syncs nothing (its first flush syncs the segment and the directory);
    // the first sync fails.
    let dir_state = Arc::new(DirState::new(Arc::new(FailAfter::new(0))));
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, dir_state.clone(), 0).unwrap();
    let out = log.append(&batch(0, 1, 1), 0).unwrap();
    assert_eq!(
        log.flush_to(out.last_offset + 1),
        Err(StorageError::Offline)
    );
    assert!(dir_state.is_offline());
    assert_eq!(log.append(&batch(1, 1, 1), 0), Err(StorageError::Offline));
    assert_eq!(log.read(0, 100, true), Err(StorageError::Offline));
    assert_eq!(
        log.flush_to(out.last_offset + 1),
        Err(StorageError::Offline)
    );
}

#[test]
fn topics_survive_reopen_and_deletion_removes_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut overrides = BTreeMap::new();
    overrides.insert("segment.bytes".to_string(), "5000".to_string());
    let (id, other_id) = {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        let t = m
            .create_topic("orders", 3, overrides.clone(), false)
            .unwrap();
        let o = m.create_topic("other", 1, BTreeMap::new(), false).unwrap();
        assert!(matches!(
            m.create_topic("orders", 1, BTreeMap::new(), false),
            Err(StorageError::TopicExists(_))
        ));
        assert!(m
            .create_topic("bad/name", 1, BTreeMap::new(), false)
            .is_err());
        assert!(m.create_topic("v", 1, BTreeMap::new(), true).is_ok());
        assert!(m.topic("v").is_none(), "validate_only creates nothing");
        m.partition("orders", 2)
            .unwrap()
            .append(&batch(1, 2, 1), 0)
            .unwrap();
        m.create_partitions("orders", 5, false).unwrap();
        assert!(m.create_partitions("orders", 4, false).is_err());
        m.flush_and_checkpoint().unwrap();
        (t.id, o.id)
    };
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    let t = m.topic("orders").unwrap();
    assert_eq!(t.id, id);
    assert_eq!(t.partitions.len(), 5);
    assert_eq!(t.config.segment_bytes, 5000);
    assert_eq!(m.partition("orders", 2).unwrap().log_end_offset(), 2);
    assert_eq!(m.topic_by_id(other_id).unwrap().name, "other");
    m.delete_topic("orders").unwrap();
    assert!(!dir.path().join("orders-0").exists());
    drop(m);
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    assert!(m.topic("orders").is_none());
    assert!(m.topic("other").is_some());
}

#[test]
fn a_data_directory_serves_one_broker_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _first = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    assert!(LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).is_err());
}

/// Index files are derived: deleted, truncated or nonsensical ones are rebuilt from the log,
/// and reads and timestamp lookups stay exact.
#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1_500);
    let rp = {
        let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
        for t in 0..30u32 {
            log.append(&batch(t, 3, 1000 * i64::from(t)), 0).unwrap();
        }
        log.flush_all(0).unwrap();
        log.recovery_point()
    };
    let mut indexes: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 6);
    fs::remove_file(&indexes[0]).unwrap(); // missing
    fs::write(&indexes[1], b"garbage").unwrap(); // wrong length
    fs::write(&indexes[2], [0u8; 16]).unwrap(); // entries that do not increase
    let log = UnifiedLog::open(dir.path(), cfg, Some(rp), state(NoSync), 0).unwrap();
    assert!(
        log.recovery_scanned_bytes() > 0,
        "damaged segments were rescanned"
    );
    assert_eq!(read_all(&log, 0).len(), 30);
    for offset in 0..90 {
        let h = BatchHeader::parse(&log.read(offset, 1, true).unwrap().records).unwrap();
        assert!(h.base_offset <= offset && offset <= h.last_offset());
    }
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), Some((16, 5_001)));
    assert_eq!(
        log.offset_for_timestamp(12_000).unwrap(),
        Some((36, 12_000))
    );
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    b.producer(pid, epoch, seq);
    for i in 0..n {
        b.push(NewRecord {
            value: Some(format!("{pid}-{seq}-{i}").into_bytes()),
            ..NewRecord::default()
        });
    }
    b.build()
}

/// A retried idempotent batch gets its original offsets back and is not written twice; a
/// gap in sequence numbers is refused. The state survives a clean restart (snapshot) and a
/// crash (replay of the log's batch headers).
#[test]
fn idempotent_retries_are_deduplicated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1_000);
    let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
    log.append(&batch(0, 2, 5), 0).unwrap(); // a non-idempotent batch first
    let mut seq = 0;
    let mut placed = Vec::new();
    for _ in 0..8 {
        let out = log.append(&idempotent_batch(42, 0, seq, 3), 0).unwrap();
        placed.push((seq, out.base_offset, out.last_offset));
        seq += 3;
    }
    let end = log.log_end_offset();
    let (retry_seq, base, last) = placed[6];
    let again = log
        .append(&idempotent_batch(42, 0, retry_seq, 3), 0)
        .unwrap();
    assert_eq!((again.base_offset, again.last_offset), (base, last));
    assert_eq!(log.log_end_offset(), end, "a duplicate writes nothing");
    assert!(matches!(
        log.append(&idempotent_batch(42, 0, seq + 1, 1), 0),
        Err(StorageError::OutOfOrderSequence(_))
    ));
    log.flush_all(0).unwrap();
    let rp = log.recovery_point();
    drop(log);

    for recovery_point in [Some(rp), None] {
        let log =
            UnifiedLog::open(dir.path(), cfg.clone(), recovery_point, state(NoSync), 0).unwrap();
        assert_eq!(log.producer_count(), 1);
        let again = log
            .append(&idempotent_batch(42, 0, retry_seq, 3), 0)
            .unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset),
            (base, last),
            "{recovery_point:?}"
        );
        assert_eq!(log.log_end_offset(), end);
    }
    // Without the snapshot the state is rebuilt from the whole log.
    fs::remove_file(dir.path().join("producer-state.json")).unwrap();
    let log = UnifiedLog::open(dir.path(), cfg, Some(rp), state(NoSync), 0).unwrap();
    let again = log
        .append(&idempotent_batch(42, 0, retry_seq, 3), 0)
        .unwrap();
    assert_eq!(again.base_offset, base);
    let next = log.append(&idempotent_batch(42, 0, seq, 1), 0).unwrap();
    assert_eq!(next.base_offset, end);
}

#[test]
fn producer_ids_are_never_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        for _ in 0..5 {
            assert!(seen.insert(m.allocate_producer_id().unwrap()));
        }
    }
}

/// Control batches are the coordinator's: a client cannot forge a transaction marker.
#[test]
fn client_control_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    let forged = sluice_records::marker_batch(1, 0, true, 0, 0);
    assert!(matches!(
        log.append(&forged, 0),
        Err(StorageError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
}

/// Deleting a topic while its log is still referenced (an in-flight produce, a checkpoint
/// pass) refuses further work with an ordinary error instead of writing into the removed
/// directory and taking the data directory offline. The deletion does not rewrite the
/// recovery-point checkpoint (it costs one journal line), but a new topic of the same name
/// rewrites it before its first partition exists, so it cannot inherit the old points.
#[test]
fn deleting_a_topic_in_use_does_not_take_the_directory_offline() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    m.create_topic("doomed", 1, BTreeMap::new(), false).unwrap();
    let log = m.partition("doomed", 0).unwrap();
    let out = log.append(&batch(1, 2, 5), 0).unwrap();
    m.flush_and_checkpoint().unwrap();
    let checkpoint = dir.path().join("recovery-point-offset-checkpoint");
    assert!(fs::read_to_string(&checkpoint)
        .unwrap()
        .contains("doomed 0 2"));
    log.append(&batch(2, 2, 5), 0).unwrap(); // appended, not yet flushed
    m.delete_topic("doomed").unwrap();
    assert!(fs::read_to_string(&checkpoint)
        .unwrap()
        .contains("doomed 0 2"));
    assert!(matches!(
        log.append(&batch(3, 1, 5), 0),
        Err(StorageError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.flush_to(out.last_offset + 10),
        Err(StorageError::UnknownTopic(_))
    ));
    assert_eq!(log.flush_all(0), Ok(()));
    // A new topic of the same name starts empty and unaffected.
    m.create_topic("doomed", 1, BTreeMap::new(), false).unwrap();
    assert!(!fs::read_to_string(&checkpoint)
        .unwrap()
        .contains("doomed 0 2"));
    assert_eq!(m.partition("doomed", 0).unwrap().log_end_offset(), 0);
    m.flush_and_checkpoint().unwrap();
    assert!(!m.is_offline());
}

/// When recovery deletes segments after a corrupt one, the directory is synced, so the
/// unlinks are durable before their offsets are reused.
#[test]
fn recovery_syncs_the_directory_after_deleting_segments() {
    #[derive(Debug, Default)]
    struct DirSyncs(AtomicU64);
    impl Durability for DirSyncs {
        fn sync_file(&self, _: &File) -> io::Result<()> {
            Ok(())
        }
        fn sync_dir(&self, _: &File) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let log = UnifiedLog::open(dir.path(), config(1_000), None, state(NoSync), 0).unwrap();
        for tag in 0..30u32 {
            log.append(&batch(tag, 2, 100), 0).unwrap();
        }
    }
    let first = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // damage the last batch of the first segment
    fs::write(&first, &bytes).unwrap();
    let syncs = Arc::new(DirSyncs::default());
    let log = UnifiedLog::open(
        dir.path(),
        config(1_000),
        None,
        Arc::new(DirState::new(syncs.clone())),
        0,
    )
    .unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(syncs.0.load(Ordering::SeqCst) >= 1);
}

/// A hostile base offset in an idempotent client batch (the broker overwrites it) must not
/// overflow while the producer state is checked.
#[test]
fn hostile_client_base_offsets_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    let mut bytes = idempotent_batch(5, 0, 0, 2);
    sluice_records::patch_base_offset(&mut bytes, i64::MAX);
    let out = log.append(&bytes, 0).unwrap();
    assert_eq!((out.base_offset, out.last_offset), (0, 1));
}

/// The CRC does not cover the base offset: a damaged one is caught because batches in a
/// segment are contiguous, and the log is cut there instead of jumping ahead.
#[test]
fn recovery_rejects_a_damaged_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<usize> = {
        let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
        (0..5u32)
            .map(|t| {
                let b = batch(t, 2, 100);
                log.append(&b, 0).unwrap();
                b.len()
            })
            .collect()
    };
    let seg = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&seg).unwrap();
    let third = sizes[0] + sizes[1];
    bytes[third] |= 0x40; // a high bit of the third batch's base offset
    fs::write(&seg, &bytes).unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

/// Where the cleaner's checkpoint says segments may have gaps (its second line), recovery
/// still reads a segment whose batches follow one another: a batch that starts where the
/// previous one ended is in place even across the marker (a log truncated below a stale
/// marker appends there), but never past the next segment's base (an overlap, as a segment
/// whose unlink did not persist could make): the log is cut there, as at any invalid batch,
/// and nothing is served twice.
#[test]
fn recovery_under_a_gap_marker_keeps_contiguous_batches_only_before_the_next_segment() {
    let marker = |dir: &Path, gaps: i64| {
        fs::write(
            dir.join("cleaner-offset-checkpoint"),
            format!("1\n0\n{gaps}\n"),
        )
        .unwrap()
    };
    // Contiguous batches across a marker at 3: all kept.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
        for t in 0..5u32 {
            log.append(&batch(t, 2, 100), 0).unwrap();
        }
    }
    marker(dir.path(), 3);
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(read_all(&log, 0).len(), 5);
    drop(log);

    // Two segments under a marker at 100; the first gets a copy of the second's first
    // batch, contiguous with its own end but reaching past the second's base: cut there.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = UnifiedLog::open(dir.path(), config(600), None, state(NoSync), 0).unwrap();
        for t in 0..8u32 {
            log.append(&batch(t, 2, 100), 0).unwrap();
        }
    }
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 2, "{bases:?}");
    let first = dir.path().join(format!("{:020}.log", bases[0]));
    let second = fs::read(dir.path().join(format!("{:020}.log", bases[1]))).unwrap();
    let first_len = fs::metadata(&first).unwrap().len();
    let overlap = &second[..12 + i32::from_be_bytes(second[8..12].try_into().unwrap()) as usize];
    assert_eq!(
        i64::from_be_bytes(overlap[..8].try_into().unwrap()),
        bases[1]
    );
    let mut bytes = fs::read(&first).unwrap();
    bytes.extend_from_slice(overlap);
    fs::write(&first, &bytes).unwrap();
    for index in ["index", "timeindex"] {
        let _ = fs::remove_file(dir.path().join(format!("{:020}.{index}", bases[0])));
    }
    marker(dir.path(), 100);
    let log = UnifiedLog::open(dir.path(), config(600), None, state(NoSync), 0).unwrap();
    assert_eq!(
        fs::metadata(&first).unwrap().len(),
        first_len,
        "the overlapping batch was kept"
    );
    let headers = read_all(&log, 0);
    let bases_read: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
    let mut unique = bases_read.clone();
    unique.dedup();
    assert_eq!(bases_read, unique, "a batch served twice");
    // As at any invalid batch, the log ends there and later segments go.
    assert_eq!(log.log_end_offset(), bases[1]);
}

/// A compressed batch's record count is not checked against its (undecoded) body, so one
/// batch may claim up to i32::MAX offsets; an append may not span more than a segment's
/// 32-bit relative offsets, and the next append rolls a new segment.
#[test]
fn appends_never_overflow_relative_offsets() {
    fn claiming(records: i32) -> Vec<u8> {
        let mut bytes = batch(0, 1, 5);
        bytes[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip: records not walked
        bytes[23..27].copy_from_slice(&(records - 1).to_be_bytes());
        bytes[57..61].copy_from_slice(&records.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    let mut two = claiming(i32::MAX);
    two.extend_from_slice(&claiming(i32::MAX));
    assert!(matches!(
        log.append(&two, 0),
        Err(StorageError::InvalidRecord(_))
    ));
    log.append(&claiming(i32::MAX), 0).unwrap();
    let out = log.append(&batch(1, 1, 5), 0).unwrap();
    assert_eq!(out.base_offset, i64::from(i32::MAX));
    assert_eq!(log.segment_count(), 2, "the second append rolled");
    let read = log.read(out.base_offset, 1 << 20, true).unwrap();
    assert_eq!(
        BatchHeader::parse(&read.records).unwrap().base_offset,
        out.base_offset
    );
    let early = log.read(5, 1 << 20, true).unwrap();
    assert_eq!(BatchHeader::parse(&early.records).unwrap().base_offset, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// For random batch sizes and segment sizes, every offset reads back the batch that holds
    /// it, before and after an unclean and a clean reopen.
    #[test]
    fn every_offset_reads_its_batch_across_rolls_and_reopens(
        sizes in proptest::collection::vec(1usize..6, 1..40),
        segment_bytes in 200u64..3_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes);
        let mut spans = Vec::new();
        {
            let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
            for (tag, n) in sizes.iter().enumerate() {
                let out = log.append(&batch(tag as u32, *n, 5), 0).unwrap();
                spans.push((out.base_offset, out.last_offset));
            }
        }
        let check = |log: &UnifiedLog| -> Result<(), TestCaseError> {
            prop_assert_eq!(log.log_end_offset(), spans.last().unwrap().1 + 1);
            for &(base, last) in &spans {
                for offset in base..=last {
                    let read = log.read(offset, 1, true).unwrap();
                    let h = BatchHeader::parse(&read.records).unwrap();
                    prop_assert_eq!((h.base_offset, h.last_offset()), (base, last));
                }
            }
            Ok(())
        };
        let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
        check(&log)?;
        log.flush_all(0).unwrap();
        let rp = log.recovery_point();
        drop(log);
        let log = UnifiedLog::open(dir.path(), cfg, Some(rp), state(NoSync), 0).unwrap();
        check(&log)?;
    }
}

/// The first offset of each segment, from the file names.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .collect();
    bases.sort();
    bases
}

#[test]
fn retention_by_bytes_deletes_the_oldest_whole_segments_and_keeps_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: 3000,
        ..config(1000)
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for tag in 0..40 {
        log.append(&batch(tag, 2, 1_000), 0).unwrap();
    }
    let before = log.size_bytes();
    let outcome = log.apply_retention(10).unwrap();
    assert!(outcome.deleted_segments > 0);
    let kept = log.size_bytes();
    assert_eq!(before - kept, outcome.deleted_bytes);
    let bases = segment_bases(dir.path());
    // At least retention.bytes remain, and removing the oldest remaining closed segment would
    // go below it.
    assert!(kept >= 3000, "{kept}");
    assert_eq!(log.log_start_offset(), bases[0]);
    assert_eq!(outcome.log_start_offset, bases[0]);
    assert!(matches!(
        log.read(0, 1000, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let served = read_all(&log, bases[0]);
    assert_eq!(
        served.last().unwrap().next_offset(),
        80,
        "the tail is untouched"
    );
    assert_eq!(
        log.apply_retention(20).unwrap().deleted_segments,
        0,
        "stable"
    );
}

/// Retention in a cluster stops at the high watermark (Kafka's rule): an expired segment
/// goes only once every record in it is below the bound, so a log never starts past what
/// its partition committed (a follower starting again at its leader's log start would
/// otherwise take uncommitted offsets as committed).
#[test]
fn retention_deletes_nothing_past_the_bound_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 1_000,
        ..config(1000)
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for tag in 0..40 {
        log.append(&batch(tag, 2, 1_000), 0).unwrap();
    }
    let bases = segment_bases(dir.path());
    assert!(bases.len() > 3, "{bases:?}");
    // Every segment expired; the bound falls inside the third.
    let bound = bases[2] + 1;
    let outcome = log.apply_retention_below(1_000_000, bound).unwrap();
    assert_eq!(outcome.deleted_segments, 2);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert_eq!(log.log_end_offset(), 80, "the tail is untouched");
    let outcome = log.apply_retention_below(1_000_000, 80).unwrap();
    assert!(outcome.deleted_segments > 0);
    assert_eq!(
        log.log_start_offset(),
        80,
        "with everything committed, all of it goes"
    );
}

#[test]
fn retention_by_time_deletes_expired_segments_and_rolls_an_expired_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000;
    let cfg = LogConfig {
        retention_ms: hour,
        ..config(1000)
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    let now = 10 * hour;
    for tag in 0..10 {
        log.append(&batch(tag, 2, now - 3 * hour), now).unwrap();
    }
    let old_end = log.log_end_offset();
    for tag in 10..20 {
        log.append(&batch(tag, 2, now), now).unwrap();
    }
    log.apply_retention(now).unwrap();
    let start = log.log_start_offset();
    assert!(start > 0 && start <= old_end, "{start} of {old_end}");
    // Every recent batch is still served, from the new start on.
    let served = read_all(&log, start);
    assert_eq!(served.first().unwrap().base_offset, start);
    assert_eq!(served.last().unwrap().next_offset(), 40);

    // Everything expires, the active segment included: it is rolled and deleted.
    log.apply_retention(now + 2 * hour).unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(segment_bases(dir.path()), vec![log.log_end_offset()]);
    let next = log.append(&batch(99, 1, now + 2 * hour), now).unwrap();
    assert_eq!(next.base_offset, 40);
}

#[test]
fn compact_only_topics_are_not_touched_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: 1,
        retention_ms: 1,
        cleanup_policy: "compact".into(),
        ..config(1000)
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for tag in 0..20 {
        log.append(&batch(tag, 2, 0), 0).unwrap();
    }
    assert_eq!(log.apply_retention(1_000_000).unwrap().deleted_segments, 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn delete_records_and_config_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        m.create_topic(
            "t",
            1,
            BTreeMap::from([("segment.bytes".to_string(), "1000".to_string())]),
            false,
        )
        .unwrap();
        let log = m.partition("t", 0).unwrap();
        for tag in 0..30 {
            log.append(&batch(tag, 2, 1), 0).unwrap();
        }
        assert_eq!(m.delete_records(&log, 25).unwrap(), 25);
        assert_eq!(m.delete_records(&log, 10).unwrap(), 25, "never moves back");
        assert!(matches!(
            m.delete_records(&log, 61),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert!(segment_bases(&dir.path().join("t-0"))[0] <= 25);
        assert!(matches!(
            log.read(24, 1000, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));

        let overrides = BTreeMap::from([("retention.bytes".to_string(), "2000".to_string())]);
        let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
        let set = |o: &BTreeMap<String, String>| {
            let o = o.clone();
            move |_: &sluice_storage::Topic| Ok::<_, StorageError>(o)
        };
        assert!(m.alter_topic_config("t", set(&bad), false).is_err());
        m.alter_topic_config("t", set(&overrides), true).unwrap();
        assert_eq!(
            m.topic("t").unwrap().config.retention_bytes,
            -1,
            "validate only"
        );
        m.alter_topic_config("t", set(&overrides), false).unwrap();
        assert_eq!(
            log.config().retention_bytes,
            2000,
            "applied to the running log"
        );
        assert_eq!(
            log.config().segment_bytes,
            1 << 30,
            "unnamed configs revert"
        );
        m.flush_and_checkpoint().unwrap();
    }
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    let log = m.partition("t", 0).unwrap();
    assert_eq!(log.log_start_offset(), 25);
    assert_eq!(log.config().retention_bytes, 2000);
    assert_eq!(read_all(&log, 25).last().unwrap().next_offset(), 60);
}

// -- compaction ---------------------------------------------------------------------------

/// One batch of records with keys `k{key}`; `None` values are tombstones.
fn keyed(records: &[(u32, Option<&str>)], timestamp: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(timestamp);
    for (key, value) in records {
        b.push(NewRecord {
            key: Some(format!("k{key}").into_bytes()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![("h".into(), Some(vec![*key as u8]))],
            timestamp_delta: 0,
        });
    }
    b.build()
}

/// Every record the log serves from its start: (offset, key, value).
fn table(log: &UnifiedLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        assert!(!read.records.is_empty(), "no progress at offset {offset}");
        for b in BatchIter::new(&read.records) {
            let b = b.unwrap();
            let h = BatchHeader::validate_stored(b).expect("served batches are valid as stored");
            for r in h.records(b, 1 << 20).unwrap() {
                let key = String::from_utf8(r.key.unwrap()).unwrap();
                let value = r.value.map(|v| String::from_utf8(v).unwrap());
                out.push((r.offset, key, value));
            }
            offset = h.next_offset();
        }
    }
    out
}

fn compacted_config() -> LogConfig {
    LogConfig {
        cleanup_policy: "compact".into(),
        min_cleanable_dirty_ratio: 0.0,
        ..config(600)
    }
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_offset_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    let mut latest = BTreeMap::new();
    let mut offset = 0i64;
    for round in 0..60u32 {
        let records: Vec<(u32, String)> = (0..3)
            .map(|i| ((round * 3 + i) % 7, format!("v{round}-{i}")))
            .collect();
        let refs: Vec<(u32, Option<&str>)> = records
            .iter()
            .map(|(k, v)| (*k, Some(v.as_str())))
            .collect();
        log.append(&keyed(&refs, 1), 0).unwrap();
        for (k, v) in &records {
            latest.insert(format!("k{k}"), (offset, v.clone()));
            offset += 1;
        }
    }
    // The cleaner only cleans what is durable.
    log.flush_to(i64::MAX).unwrap();
    let before = table(&log);
    let stats = log
        .clean(10, &CleanerConfig::default(), &mut Throttle::new(f64::MAX))
        .unwrap()
        .expect("a pass ran");
    assert!(stats.records_after < stats.records_before, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
    let after = table(&log);
    // Offsets increase, every latest value is there at its original offset, and a record
    // survives only if it is the latest for its key or still in the active segment.
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    for (key, (off, value)) in &latest {
        assert!(
            after.contains(&(*off, key.clone(), Some(value.clone()))),
            "{key}"
        );
    }
    // The active segment is never cleaned (nor mapped): in the closed segments, exactly the
    // latest record of each key among them survives.
    let active_base = *segment_bases(dir.path()).last().unwrap();
    let mut latest_closed = BTreeMap::new();
    for rec in before.iter().filter(|r| r.0 < active_base) {
        latest_closed.insert(rec.1.clone(), rec.0);
    }
    let expected: Vec<_> = before
        .iter()
        .filter(|r| r.0 >= active_base || latest_closed[&r.1] == r.0)
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert_eq!(log.log_end_offset(), offset, "offsets never change");
    log.flush_to(i64::MAX).unwrap();
    drop(log);
    // Reopen without a recovery point: every cleaned segment is validated as stored.
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    assert_eq!(table(&log), after);
    assert!(log
        .clean(20, &CleanerConfig::default(), &mut Throttle::new(f64::MAX))
        .unwrap()
        .is_none_or(|s| s.records_after == s.records_before));
}

#[test]
fn tombstones_delete_keys_and_go_themselves_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        delete_retention_ms: 1_000,
        ..compacted_config()
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for round in 0..10 {
        log.append(&keyed(&[(1, Some("a")), (2, Some("b"))], 100 + round), 0)
            .unwrap();
    }
    log.append(&keyed(&[(1, None)], 200), 0).unwrap();
    for _ in 0..20 {
        log.append(&keyed(&[(3, Some("c"))], 300), 0).unwrap();
    }
    let pass = |now| {
        // The cleaner only cleans what is durable.
        log.flush_to(i64::MAX).unwrap();
        log.clean(now, &CleanerConfig::default(), &mut Throttle::new(f64::MAX))
            .unwrap();
    };
    pass(500); // within delete.retention.ms of the tombstone
    let keys: Vec<(String, Option<String>)> =
        table(&log).into_iter().map(|(_, k, v)| (k, v)).collect();
    assert!(
        keys.contains(&("k1".into(), None)),
        "the tombstone stays: {keys:?}"
    );
    assert!(!keys.contains(&("k1".into(), Some("a".into()))));
    // Make everything dirty again (keeping the line that says where segments may have gaps)
    // and clean past the horizon.
    let checkpoint = dir.path().join("cleaner-offset-checkpoint");
    let text = fs::read_to_string(&checkpoint).unwrap();
    let gaps = text.lines().nth(1).unwrap();
    fs::write(&checkpoint, format!("0\n{gaps}\n")).unwrap();
    drop(log);
    let cfg = LogConfig {
        delete_retention_ms: 1_000,
        ..compacted_config()
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    log.clean(
        5_000,
        &CleanerConfig::default(),
        &mut Throttle::new(f64::MAX),
    )
    .unwrap();
    let keys: Vec<String> = table(&log).into_iter().map(|(_, k, _)| k).collect();
    assert!(!keys.contains(&"k1".to_string()), "{keys:?}");
    assert!(keys.contains(&"k2".to_string()));
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    for round in 0..100u32 {
        log.append(&keyed(&[(round % 40, Some("x"))], 1), 0)
            .unwrap();
    }
    // Room for about 12 keys: a segment of 600 bytes holds fewer records than that.
    let small = CleanerConfig {
        dedupe_buffer_bytes: 12 * 48,
        ..CleanerConfig::default()
    };
    // The cleaner only cleans what is durable.
    log.flush_to(i64::MAX).unwrap();
    let mut passes = 0;
    let mut last = -1;
    while let Some(s) = log.clean(10, &small, &mut Throttle::new(f64::MAX)).unwrap() {
        assert!(s.cleaned_to > last, "every pass makes progress");
        last = s.cleaned_to;
        passes += 1;
        assert!(passes < 100);
    }
    assert!(passes > 1, "{passes}");
    let active_base = *segment_bases(dir.path()).last().unwrap();
    let closed: Vec<String> = table(&log)
        .into_iter()
        .filter(|r| r.0 < active_base)
        .map(|r| r.1)
        .collect();
    let unique: std::collections::BTreeSet<&String> = closed.iter().collect();
    assert!(
        closed.len() <= unique.len() + 12,
        "{} records, {} keys",
        closed.len(),
        unique.len()
    );
}

#[test]
fn compacted_logs_refuse_keyless_records_and_leftover_rewrites_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
        // A keyed record between two keyless ones: the refusal names the keyless records'
        // indexes in the batch (KIP-467).
        let mut b = BatchBuilder::new(1);
        for key in [None, Some(b"k".to_vec()), None] {
            b.push(NewRecord {
                key,
                value: Some(b"v".to_vec()),
                ..NewRecord::default()
            });
        }
        match log.append(&b.build(), 0) {
            Err(StorageError::RecordErrors { records, .. }) => assert_eq!(records, vec![0, 2]),
            other => panic!("{other:?}"),
        }
        for round in 0..10 {
            log.append(&keyed(&[(round, Some("v"))], 1), 0).unwrap();
        }
        log.flush_to(i64::MAX).unwrap();
    }
    // A crash in the middle of a rewrite leaves a partial `.cleaned` file.
    fs::write(
        dir.path().join("00000000000000000000.log.cleaned"),
        b"half a segment",
    )
    .unwrap();
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    assert!(!dir.path().join("00000000000000000000.log.cleaned").exists());
    assert_eq!(table(&log).len(), 10);
}

#[test]
fn min_compaction_lag_keeps_recent_segments_out_of_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        min_compaction_lag_ms: 10_000,
        ..compacted_config()
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for _ in 0..40 {
        log.append(&keyed(&[(1, Some("x"))], 1_000), 0).unwrap();
    }
    // The cleaner only cleans what is durable.
    log.flush_to(i64::MAX).unwrap();
    let none = CleanerConfig::default();
    // At 5 s every record is younger than the lag: nothing may be cleaned.
    assert!(log
        .clean(5_000, &none, &mut Throttle::new(f64::MAX))
        .unwrap()
        .is_none());
    assert_eq!(table(&log).len(), 40);
    // At 20 s they are old enough.
    let stats = log
        .clean(20_000, &none, &mut Throttle::new(f64::MAX))
        .unwrap()
        .expect("a pass ran");
    assert!(stats.records_after < stats.records_before);
}

#[test]
fn retention_by_time_and_bytes_together_when_everything_expired() {
    // Both limits set and every segment expired, the active one included: the expired
    // active segment is rolled and the bytes rule has no closed segment left to look at.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 1_000,
        retention_bytes: 100,
        ..config(1000)
    };
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    for tag in 0..10 {
        log.append(&batch(tag, 2, 0), 0).unwrap();
    }
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.append(&batch(99, 1, 0), 0).unwrap().base_offset, 20);
}

#[test]
fn delete_records_is_refused_on_compact_only_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    log.append(&keyed(&[(1, Some("a"))], 1), 0).unwrap();
    assert!(matches!(
        log.delete_records_before(1),
        Err(StorageError::PolicyViolation(_))
    ));
}

// -- transactions -------------------------------------------------------------------------

/// A transactional batch of producer `pid` with keyed records `k{key}` = value.
fn txn_batch(pid: i64, epoch: i16, seq: i32, records: &[(u32, Option<&str>)]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1);
    b.producer(pid, epoch, seq).transactional();
    for (key, value) in records {
        b.push(NewRecord {
            key: Some(format!("k{key}").into_bytes()),
            value: value.map(|v| v.as_bytes().to_vec()),
            ..NewRecord::default()
        });
    }
    b.build()
}

/// What a read_committed consumer shows from offset 0, filtering as Kafka clients do: the
/// aborted list names (producer id, first offset); from that offset on, the producer's
/// transactional batches are dropped until its abort marker. (offset, key, value)
fn committed_view(log: &UnifiedLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    // Aborted transactions not yet reached, by first offset; producers being skipped.
    let mut upcoming: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut skipping = std::collections::HashSet::new();
    loop {
        let read = log
            .read_isolated(offset, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        if read.records.is_empty() {
            return out;
        }
        for a in read.aborted {
            let pids = upcoming.entry(a.first_offset).or_default();
            if !pids.contains(&a.producer_id) {
                pids.push(a.producer_id);
            }
        }
        for b in BatchIter::new(&read.records) {
            let b = b.unwrap();
            let h = BatchHeader::validate_stored(b).unwrap();
            offset = h.next_offset();
            assert!(h.base_offset < read.last_stable_offset);
            let reached: Vec<i64> = upcoming.range(..=h.base_offset).map(|(k, _)| *k).collect();
            for first in reached {
                skipping.extend(upcoming.remove(&first).unwrap());
            }
            if h.is_control() {
                if sluice_records::control_type(&h, b).unwrap()
                    == sluice_records::ControlType::Abort
                {
                    skipping.remove(&h.producer_id);
                }
                continue;
            }
            if h.is_transactional() && skipping.contains(&h.producer_id) {
                continue;
            }
            for r in h.records(b, 1 << 20).unwrap() {
                let key = String::from_utf8(r.key.unwrap()).unwrap();
                out.push((
                    r.offset,
                    key,
                    r.value.map(|v| String::from_utf8(v).unwrap()),
                ));
            }
        }
    }
}

/// An open transaction holds the last stable offset at its first offset: read_committed
/// reads stop there while read_uncommitted reads go on to the log end. An abort
/// marker releases it and the read lists the aborted transaction so the client can drop
/// its records; a commit lists nothing.
#[test]
fn read_committed_stops_at_the_lso_and_lists_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    log.append(&keyed(&[(1, Some("plain"))], 1), 0).unwrap(); // 0
    log.append(&txn_batch(7, 0, 0, &[(2, Some("a")), (3, Some("b"))]), 0)
        .unwrap(); // 1-2
    log.append(&keyed(&[(4, Some("after"))], 1), 0).unwrap(); // 3
    assert_eq!(log.last_stable_offset(), 1);
    let rc = log
        .read_isolated(0, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(BatchIter::new(&rc.records).count(), 1);
    assert_eq!((rc.end_offset, rc.last_stable_offset), (4, 1));
    let ru = log
        .read_isolated(0, 1 << 20, true, Isolation::ReadUncommitted)
        .unwrap();
    assert_eq!(BatchIter::new(&ru.records).count(), 3);
    assert!(log
        .read_isolated(1, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap()
        .records
        .is_empty());

    let marker = log.append_marker(7, 0, false, 0, 0).unwrap();
    assert_eq!(marker.base_offset, 4);
    assert_eq!(log.last_stable_offset(), 5);
    log.append(&txn_batch(9, 0, 0, &[(5, Some("kept"))]), 0)
        .unwrap(); // 5
    log.append_marker(9, 0, true, 0, 0).unwrap(); // 6
    let rc = log
        .read_isolated(2, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(
        rc.aborted,
        vec![AbortedTxn {
            producer_id: 7,
            first_offset: 1,
            last_offset: 4,
            last_stable_offset: 5
        }]
    );
    assert_eq!(
        committed_view(&log),
        vec![
            (0, "k1".into(), Some("plain".into())),
            (3, "k4".into(), Some("after".into())),
            (5, "k5".into(), Some("kept".into())),
        ]
    );
    // Past the aborted transaction, nothing is listed.
    assert!(log
        .read_isolated(5, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap()
        .aborted
        .is_empty());
}

/// A marker from an epoch older than the partition has seen is refused, and a producer's
/// plain batch inside its own open transaction is refused.
#[test]
fn stale_markers_and_plain_batches_inside_a_transaction_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    log.append(&txn_batch(3, 2, 0, &[(1, Some("x"))]), 0)
        .unwrap();
    assert!(matches!(
        log.append_marker(3, 1, true, 0, 0),
        Err(StorageError::InvalidProducerEpoch(_))
    ));
    assert!(matches!(
        log.append(&idempotent_batch(3, 2, 1, 1), 0),
        Err(StorageError::InvalidTxnState(_))
    ));
    assert_eq!(log.last_stable_offset(), 0);
    log.append_marker(3, 2, true, 0, 0).unwrap();
    assert_eq!(log.last_stable_offset(), 2);
}

/// Open transactions and the aborted-transaction index survive a clean restart, a crash
/// (replay from the recovery point) and the loss of the producer snapshot (replay of the
/// whole log); a torn abort marker is cut by recovery and its transaction is open again.
#[test]
fn transaction_state_is_rebuilt_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(300);
    let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
    for round in 0..6 {
        let pid = 100 + round % 2;
        let seq = round as i32 / 2;
        log.append(&txn_batch(pid, 0, seq, &[(round as u32, Some("v"))]), 0)
            .unwrap();
        log.append(&keyed(&[(50, Some("plain"))], 1), 0).unwrap();
        log.append_marker(pid, 0, round % 3 != 0, 0, 0).unwrap();
    }
    // A snapshot here, then more aborts after it: a crash restart replays them from the
    // (now stale) snapshot and must rebuild their index entries.
    log.flush_all(0).unwrap();
    for round in 6..9 {
        let pid = 100 + round % 2;
        let seq = round as i32 / 2;
        log.append(&txn_batch(pid, 0, seq, &[(round as u32, Some("v"))]), 0)
            .unwrap();
        log.append_marker(pid, 0, false, 0, 0).unwrap();
    }
    log.append(&txn_batch(200, 0, 0, &[(9, Some("open"))]), 0)
        .unwrap();
    let open_at = log.log_end_offset() - 1;
    log.append(&keyed(&[(51, Some("tail"))], 1), 0).unwrap();
    let view = committed_view(&log);
    let aborted = log.aborted_transactions(0, i64::MAX);
    assert_eq!(aborted.len(), 5);
    assert!(log.segment_count() > 2, "the test must span segments");
    log.flush_to(i64::MAX).unwrap();
    let rp = log.recovery_point();
    drop(log);

    let check = |recovery_point: Option<i64>| {
        let log =
            UnifiedLog::open(dir.path(), cfg.clone(), recovery_point, state(NoSync), 0).unwrap();
        assert_eq!(log.last_stable_offset(), open_at, "{recovery_point:?}");
        assert_eq!(log.aborted_transactions(0, i64::MAX), aborted);
        assert_eq!(committed_view(&log), view);
        log
    };
    check(Some(rp));
    check(None);
    fs::remove_file(dir.path().join("producer-state.json")).unwrap();
    let log = check(Some(rp));

    // Abort the open transaction, then tear the marker off the end: recovery cuts it, the
    // transaction is open again and its index entry is gone.
    let marker = log.append_marker(200, 0, false, 0, 0).unwrap();
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 6);
    log.flush_all(0).unwrap();
    drop(log);
    let last = *segment_bases(dir.path()).last().unwrap();
    let path = dir.path().join(format!("{last:020}.log"));
    let len = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    fs::remove_file(dir.path().join("producer-state.json")).unwrap();
    let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
    assert_eq!(log.log_end_offset(), marker.base_offset);
    assert_eq!(log.last_stable_offset(), open_at);
    assert_eq!(log.aborted_transactions(0, i64::MAX), aborted);
}

fn marker_offsets(log: &UnifiedLog) -> Vec<i64> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        for b in BatchIter::new(&read.records) {
            let h = BatchHeader::parse(b.unwrap()).unwrap();
            if h.is_control() {
                out.push(h.base_offset);
            }
            offset = h.next_offset();
        }
    }
    out
}

/// Compaction never lets an aborted record win or survive: a key whose newest record was
/// aborted keeps its committed value; markers stay; a segment with an open transaction (and
/// everything after it) is left alone until the transaction ends.
#[test]
fn compaction_drops_aborted_records_and_waits_for_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), compacted_config(), None, state(NoSync), 0).unwrap();
    for round in 0..20u32 {
        log.append(&keyed(&[(round % 4, Some(&format!("c{round}")))], 1), 0)
            .unwrap();
        // Every round, producer 5 overwrites key 0 in a transaction that aborts.
        let seq = round as i32;
        log.append(&txn_batch(5, 0, seq, &[(0, Some("aborted"))]), 0)
            .unwrap();
        log.append_marker(5, 0, false, 0, 0).unwrap();
    }
    // Committed transactional records with keys of their own must survive cleaning.
    for i in 0..5u32 {
        log.append(
            &txn_batch(8, 0, i as i32, &[(100 + i, Some("committed"))]),
            0,
        )
        .unwrap();
        log.append_marker(8, 0, true, 0, 0).unwrap();
    }
    // An open transaction, then enough data to close its segment.
    log.append(&txn_batch(6, 0, 0, &[(1, Some("open"))]), 0)
        .unwrap();
    let open_at = log.log_end_offset() - 1;
    for round in 0..20u32 {
        log.append(&keyed(&[(2, Some(&format!("late{round}")))], 1), 0)
            .unwrap();
    }
    // The cleaner only cleans what is durable.
    log.flush_to(i64::MAX).unwrap();
    let before = committed_view(&log);
    let markers_before = marker_offsets(&log);
    let cleaner = CleanerConfig::default();
    let mut cleaned_to = 0;
    while let Some(stats) = log
        .clean(10, &cleaner, &mut Throttle::new(f64::MAX))
        .unwrap()
    {
        cleaned_to = stats.cleaned_to;
    }
    assert!(
        cleaned_to > 0 && cleaned_to <= open_at,
        "{cleaned_to} vs {open_at}"
    );
    let after = committed_view(&log);
    // Nothing at or past the open transaction was touched.
    let tail = |v: &[(i64, String, Option<String>)]| {
        v.iter()
            .filter(|r| r.0 >= open_at)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(tail(&after), tail(&before));
    let value_of = |v: &[(i64, String, Option<String>)], key: &str| {
        v.iter()
            .rev()
            .find(|r| r.1 == key && r.0 < open_at)
            .cloned()
    };
    for key in [
        "k0", "k1", "k2", "k3", "k100", "k101", "k102", "k103", "k104",
    ] {
        assert_eq!(value_of(&after, key), value_of(&before, key), "{key}");
    }
    assert_eq!(
        value_of(&after, "k102").unwrap().2.as_deref(),
        Some("committed")
    );
    assert_eq!(value_of(&after, "k0").unwrap().2.as_deref(), Some("c16"));
    // No aborted record is left in the cleaned part, in any isolation; every marker stays.
    assert_eq!(marker_offsets(&log), markers_before);
    let mut offset = 0;
    while offset < cleaned_to {
        let read = log.read(offset, 1 << 20, true).unwrap();
        for b in BatchIter::new(&read.records) {
            let b = b.unwrap();
            let h = BatchHeader::validate_stored(b).unwrap();
            offset = h.next_offset();
            if !h.is_control() && h.base_offset < cleaned_to && h.producer_id == 5 {
                panic!("aborted batch at {}", h.base_offset);
            }
        }
    }
    // Once the transaction commits, the rest can be cleaned.
    log.append_marker(6, 0, true, 0, 0).unwrap();
    log.append(&keyed(&[(3, Some("roll"))], 1), 0).unwrap();
    log.flush_to(i64::MAX).unwrap();
    let cleaned = log
        .clean(10, &cleaner, &mut Throttle::new(f64::MAX))
        .unwrap()
        .expect("the rest is cleanable now");
    assert!(cleaned.cleaned_to > open_at);
}

/// The names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A topic with the longest name Kafka allows (249 characters) is deleted with its data: the
/// directory it is renamed to on the way still fits a file name, nothing of it stays on disk,
/// and a topic re-created under the name after a restart starts empty.
#[test]
fn deleting_a_topic_with_a_249_character_name_removes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let name = "t".repeat(sluice_storage::TOPIC_NAME_MAX_LEN);
    {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        m.create_topic(&name, 2, BTreeMap::new(), false).unwrap();
        for p in 0..2 {
            m.partition(&name, p)
                .unwrap()
                .append(&batch(p as u32, 3, 5), 0)
                .unwrap();
        }
        m.delete_topic(&name).unwrap();
        assert!(
            !entries(dir.path()).iter().any(|e| e.starts_with("ttt")),
            "{:?}",
            entries(dir.path())
        );
    }
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    assert!(m.topic(&name).is_none());
    m.create_topic(&name, 2, BTreeMap::new(), false).unwrap();
    for p in 0..2 {
        assert_eq!(m.partition(&name, p).unwrap().log_end_offset(), 0);
    }
}

/// A partition directory that no topic names (a deletion that could not remove it, a crash
/// between creating a partition and recording it) is removed at start-up, so its records
/// cannot come back; directories that are not partitions are left alone.
#[test]
fn orphan_partition_directories_are_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        m.create_topic("kept", 1, BTreeMap::new(), false).unwrap();
        m.partition("kept", 0)
            .unwrap()
            .append(&batch(1, 2, 5), 0)
            .unwrap();
    }
    // An orphan topic, an orphan partition of a live topic, and an operator's own folder.
    for orphan in ["gone-0", "kept-1"] {
        let log = UnifiedLog::open(
            &dir.path().join(orphan),
            config(1 << 20),
            None,
            state(NoSync),
            0,
        )
        .unwrap();
        log.append(&batch(9, 2, 5), 0).unwrap();
    }
    fs::create_dir(dir.path().join("notes-1")).unwrap();
    fs::write(dir.path().join("notes-1").join("todo.txt"), b"x").unwrap();
    // The metadata quorum's directory is never taken for an orphan, whatever it holds.
    let quorum = dir.path().join("__cluster_metadata-0");
    fs::create_dir(&quorum).unwrap();
    fs::write(quorum.join("00000000000000000000.log"), b"").unwrap();
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    let names = entries(dir.path());
    assert!(
        names.contains(&"__cluster_metadata-0".to_string()),
        "{names:?}"
    );
    // Nor can a topic take its name.
    assert!(matches!(
        m.create_topic("__cluster_metadata", 1, BTreeMap::new(), false),
        Err(sluice_storage::StorageError::InvalidTopic(_))
    ));
    assert!(!names.contains(&"gone-0".to_string()), "{names:?}");
    assert!(!names.contains(&"kept-1".to_string()), "{names:?}");
    assert!(names.contains(&"notes-1".to_string()), "{names:?}");
    assert_eq!(m.partition("kept", 0).unwrap().log_end_offset(), 2);
    // A partition added later starts empty, not with the orphan's records.
    m.create_partitions("kept", 2, false).unwrap();
    assert_eq!(m.partition("kept", 1).unwrap().log_end_offset(), 0);
}

/// A topic is created with all of its partitions or none: when one partition cannot be
/// created, the directories made for the others are removed, the topic does not exist (now
/// or after a restart), and the other topics of the same request are created.
#[test]
fn a_topic_whose_partition_fails_is_created_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    // A plain file where partition 5's directory must go makes that partition fail.
    fs::write(dir.path().join("half-5"), b"in the way").unwrap();
    let new = |name: &str, partitions| sluice_storage::NewTopic {
        name: name.into(),
        partitions,
        overrides: BTreeMap::new(),
        id: None,
    };
    let results = m.create_topics(
        vec![new("before", 2), new("half", 8), new("after", 3)],
        false,
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(results[1].is_err(), "{:?}", results[1]);
    let names = entries(dir.path());
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("half-") || n == "half-5"),
        "{names:?}"
    );
    assert!(m.topic("half").is_none());
    drop(m);
    fs::remove_file(dir.path().join("half-5")).unwrap();
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    assert!(m.topic("half").is_none());
    assert_eq!(m.topic("before").unwrap().partitions.len(), 2);
    assert_eq!(m.topic("after").unwrap().partitions.len(), 3);
}

/// Topic metadata survives a restart whatever the sequence of changes, including across the
/// journal's compaction into the snapshot: 1,200 creations (past the compaction threshold),
/// then deletions, partition increases and config changes.
#[test]
fn topic_metadata_survives_restarts_across_journal_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let describe = |m: &LogManager| -> Vec<(String, uuid::Uuid, usize, BTreeMap<String, String>)> {
        m.topics()
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.id,
                    t.partitions.len(),
                    t.overrides.clone(),
                )
            })
            .collect()
    };
    let before = {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        let batch: Vec<sluice_storage::NewTopic> = (0..1200)
            .map(|i| sluice_storage::NewTopic {
                name: format!("t{i:04}"),
                partitions: 1,
                overrides: BTreeMap::new(),
                id: None,
            })
            .collect();
        assert!(m.create_topics(batch, false).iter().all(Result::is_ok));
        for i in (0..1200).step_by(7) {
            m.delete_topic(&format!("t{i:04}")).unwrap();
        }
        m.create_partitions("t0001", 3, false).unwrap();
        m.alter_topic_config::<StorageError>(
            "t0002",
            |_| Ok(BTreeMap::from([("retention.ms".into(), "1000".into())])),
            false,
        )
        .unwrap();
        m.create_topic("t0000", 2, BTreeMap::new(), false).unwrap();
        describe(&m)
    };
    let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
    assert_eq!(describe(&m), before);
    assert!(
        dir.path().join("topics.json").exists(),
        "compaction wrote a snapshot"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A read found from the indexes and batch headers alone returns exactly what reading
    /// the segment and cutting it would: consecutive whole batches from the one holding the
    /// offset, within max_bytes (or the first batch alone when asked), and as many as fit
    /// before the segment ends.
    #[test]
    fn reads_are_the_longest_run_of_whole_batches_that_fits(
        records in proptest::collection::vec(1usize..30, 1..40),
        segment_bytes in 600u64..6000,
        interval in prop_oneof![Just(1u64), 64u64..2048],
        reads in proptest::collection::vec((0usize..1000, 0usize..8000, any::<bool>()), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes,
            index_interval_bytes: interval,
            ..LogConfig::default()
        };
        let log = UnifiedLog::open(dir.path(), cfg, None, state(NoSync), 0).unwrap();
        // (base offset, next offset, size) of every batch, in order.
        let mut batches = Vec::new();
        for (tag, &n) in records.iter().enumerate() {
            let bytes = batch(tag as u32, n, 5);
            let out = log.append(&bytes, 0).unwrap();
            batches.push((out.base_offset, out.last_offset + 1, bytes.len()));
        }
        let segment_bases: std::collections::HashSet<i64> = entries(dir.path())
            .iter()
            .filter_map(|n| n.strip_suffix(".log").and_then(|b| b.parse().ok()))
            .collect();
        let end = log.log_end_offset();
        for (pick, max_bytes, min_one) in reads {
            let offset = (pick as i64) % (end + 1);
            let slice = log
                .read_slice(offset, max_bytes, min_one, Isolation::ReadUncommitted)
                .unwrap();
            let records = slice.records.map(|s| s.to_vec().unwrap()).unwrap_or_default();
            let first = batches.iter().position(|&(_, next, _)| next > offset);
            let Some(first) = first else {
                prop_assert!(records.is_empty());
                continue;
            };
            // The model: whole batches from `first` while they fit, not crossing a segment.
            let mut want = 0usize;
            let mut i = first;
            while i < batches.len() {
                let (base, _, size) = batches[i];
                if i > first && segment_bases.contains(&base) {
                    break;
                }
                let fits = want + size <= max_bytes || (min_one && i == first);
                if !fits {
                    break;
                }
                want += size;
                i += 1;
            }
            prop_assert_eq!(records.len(), want, "offset {} max {} min_one {}", offset, max_bytes, min_one);
            let got: Vec<i64> = BatchIter::new(&records)
                .map(|b| BatchHeader::validate(b.unwrap()).unwrap().base_offset)
                .collect();
            let expected: Vec<i64> = batches[first..i].iter().map(|b| b.0).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

/// However many segments the logs of a directory have, at most `open.segment.files.max` of
/// their files are open at once (the least recently used are closed, and reopened on use),
/// and every record stays readable, durable and in place across closes, reopens, syncs and
/// a restart. The bound is checked after every operation.
#[test]
fn open_segment_files_stay_within_the_bound_and_reopen_on_use() {
    const BOUND: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(dir.path(), config(600), Arc::new(NoSync)).unwrap();
    m.set_open_segment_files_max(BOUND);
    let small = BTreeMap::from([("segment.bytes".to_string(), "100".to_string())]);
    let t = m.create_topic("wide", 30, small, false).unwrap();
    let within = |m: &LogManager| {
        let (open, bound) = m.open_segment_files();
        assert!(open <= bound, "{open} segment files open, bound {bound}");
    };
    within(&m);
    let mut appended = vec![Vec::new(); 30];
    for round in 0..6u32 {
        for (p, log) in t.partitions.iter().enumerate() {
            // Each append rolls a segment (100-byte segments, larger batches).
            let b = batch(round * 100 + p as u32, 5, 1_000);
            let out = log.append(&b, 1_000).unwrap();
            appended[p].push(out.base_offset);
            within(&m);
            log.flush_to(log.log_end_offset()).unwrap();
            within(&m);
        }
    }
    assert!(
        t.partitions[0].segment_count() >= 6,
        "the test rolls segments"
    );
    for (p, log) in t.partitions.iter().enumerate() {
        let bases: Vec<i64> = read_all(log, 0).iter().map(|h| h.base_offset).collect();
        assert_eq!(bases, appended[p], "partition {p}");
        within(&m);
    }
    drop(t);
    drop(m);
    // Recovery opens every segment: opened with the bound, it holds from the start.
    let m = LogManager::open_bounded(dir.path(), config(600), Arc::new(NoSync), BOUND).unwrap();
    within(&m);
    let t = m.topic("wide").unwrap();
    for (p, log) in t.partitions.iter().enumerate() {
        let bases: Vec<i64> = read_all(log, 0).iter().map(|h| h.base_offset).collect();
        assert_eq!(bases, appended[p], "partition {p} after a restart");
        within(&m);
    }
}

/// A damaged aborted-transaction index is rebuilt from the log's markers on open, even for
/// markers below the producer-state snapshot, so read_committed still lists the aborted
/// transaction rather than serving its records as committed.
#[test]
fn a_damaged_transaction_index_is_rebuilt_from_the_markers() {
    let dir = tempfile::tempdir().unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), None, state(NoSync), 0).unwrap();
    log.append(&txn_batch(7, 0, 0, &[(2, Some("a"))]), 0)
        .unwrap(); // 0
    log.append_marker(7, 0, false, 0, 0).unwrap(); // 1
    log.append(&keyed(&[(4, Some("after"))], 1), 0).unwrap(); // 2
    log.flush_all(0).unwrap();
    let rp = log.recovery_point();
    drop(log);
    let path = dir.path().join("00000000000000000000.txnindex");
    let mut bytes = fs::read(&path).unwrap();
    bytes[1] = 9; // an entry version nobody knows
    fs::write(&path, &bytes).unwrap();
    let log = UnifiedLog::open(dir.path(), config(1 << 20), Some(rp), state(NoSync), 0).unwrap();
    let rc = log
        .read_isolated(0, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(
        rc.aborted,
        vec![AbortedTxn {
            producer_id: 7,
            first_offset: 0,
            last_offset: 1,
            last_stable_offset: 2
        }]
    );
}

/// A producer-id block that does not parse refuses the start: read as zero, it would hand
/// out producer ids already in use.
#[test]
fn an_unreadable_producer_id_block_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap();
        m.allocate_producer_id().unwrap();
    }
    fs::write(
        dir.path().join("producer-id-block.json"),
        b"{\"next\": 0, \"en",
    )
    .unwrap();
    let err = LogManager::open(dir.path(), LogConfig::default(), Arc::new(NoSync)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt(_)), "{err:?}");
}

/// A follower's truncation: the batch holding the offset goes whole, later segments go, the
/// leader epoch cache and the producer state follow, appends continue from the new end, and a
/// restart (clean or after a crash) finds the same log.
#[test]
fn truncation_cuts_at_a_batch_boundary_and_the_log_goes_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1_000);
    let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
    // 40 batches of 3 records, in epochs 0 (0..60) and 2 (60..120), over several segments.
    for tag in 0..40u32 {
        let epoch = if tag < 20 { 0 } else { 2 };
        log.append_in_epoch(&batch(tag, 3, 100), epoch, 0).unwrap();
    }
    log.flush_all(0).unwrap();
    assert!(log.segment_count() > 3);
    // Offset 50 lies inside the batch 48..51: it goes, the log ends at 48, in epoch 0.
    assert_eq!(log.truncate_to(50, 0).unwrap(), 48);
    assert_eq!(log.log_end_offset(), 48);
    assert_eq!(log.end_offset_for_epoch(2), Some((0, 48)));
    let headers = read_all(&log, 0);
    assert_eq!(headers.len(), 16);
    assert_eq!(headers.last().unwrap().next_offset(), 48);
    // At or past the end: nothing to do.
    assert_eq!(log.truncate_to(48, 0).unwrap(), 48);
    // Appends continue from the cut, in a new epoch.
    let out = log.append_in_epoch(&batch(99, 2, 100), 3, 0).unwrap();
    assert_eq!(out.base_offset, 48);
    assert_eq!(log.end_offset_for_epoch(2), Some((0, 48)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 50)));
    log.flush_all(0).unwrap();
    let rp = log.recovery_point();
    drop(log);
    for recovery_point in [Some(rp), None] {
        let reopened =
            UnifiedLog::open(dir.path(), cfg.clone(), recovery_point, state(NoSync), 0).unwrap();
        assert_eq!(reopened.log_end_offset(), 50);
        assert_eq!(read_all(&reopened, 0).len(), 17);
        assert_eq!(reopened.end_offset_for_epoch(2), Some((0, 48)));
        assert_eq!(reopened.end_offset_for_epoch(3), Some((3, 50)));
    }
}

/// A producer snapshot written before snapshots carried leader epochs (version 1) still gives
/// its producers, even one whose records retention has removed; the epochs are read from the
/// log's batch headers below it.
#[test]
fn a_version_1_producer_snapshot_keeps_its_producers_and_the_epochs_come_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1_000);
    let log = UnifiedLog::open(dir.path(), cfg.clone(), None, state(NoSync), 0).unwrap();
    log.append_in_epoch(&idempotent_batch(7, 0, 0, 3), 1, 0)
        .unwrap();
    for tag in 0..10u32 {
        log.append_in_epoch(&batch(tag, 2, 100), 4, 0).unwrap();
    }
    // The producer's only batch goes with its segment: only the snapshot remembers it.
    assert!(log.segment_count() > 1);
    log.delete_records_before(log.log_end_offset() - 1).unwrap();
    assert!(log.log_start_offset() > 3);
    log.flush_all(0).unwrap();
    let rp = log.recovery_point();
    let before = log.epoch_entries();
    let start = log.log_start_offset();
    drop(log);
    // Rewrite the snapshot as the version 1 format wrote it: no epochs.
    let path = dir.path().join("producer-state.json");
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    snapshot["version"] = 1.into();
    snapshot.as_object_mut().unwrap().remove("epochs");
    std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
    let reopened = UnifiedLog::open(dir.path(), cfg, Some(rp), state(NoSync), 0).unwrap();
    // (The log start DeleteRecords set comes back from its own checkpoint.)
    reopened.restore_log_start_offset(start);
    assert_eq!(reopened.epoch_entries(), before);
    assert_eq!(reopened.producer_count(), 1);
    // Producer 7's next sequence continues; a repeat of its batch is a duplicate.
    let again = reopened.append(&idempotent_batch(7, 0, 0, 3), 0).unwrap();
    assert!(again.duplicate);
}

/// A follower copies its leader's batches as they are: byte-identical logs with the same
/// offsets and epochs, built from whole fetched ranges; what does not start at its log end,
/// overlaps, or holds a damaged batch is refused before anything is written; a gap (batches
/// the leader's cleaner removed) starts a new segment.
#[test]
fn a_follower_appends_its_leaders_batches_as_they_are() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = UnifiedLog::open(leader_dir.path(), config(4096), None, state(NoSync), 0).unwrap();
    let follower =
        UnifiedLog::open(follower_dir.path(), config(4096), None, state(NoSync), 0).unwrap();
    for tag in 0..40u32 {
        let epoch = 3 + (tag / 10) as i32;
        leader
            .append_in_epoch(&batch(tag, 1 + tag as usize % 3, 1000), epoch, 0)
            .unwrap();
    }
    // Copy in fetch-sized pieces of whole batches, as the replica fetcher does.
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let read = leader.read(offset, 700, true).unwrap();
        let out = follower.append_as_follower(&read.records, 0).unwrap();
        assert_eq!(out.base_offset, offset);
        offset = out.last_offset + 1;
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    let all = |log: &UnifiedLog| log.read(0, usize::MAX >> 1, true).unwrap().records;
    assert_eq!(
        all(&follower),
        all(&leader),
        "the same bytes at the same offsets"
    );

    // Refused, nothing written: a range that does not start at the log end...
    let again = leader.read(0, 700, true).unwrap().records;
    assert!(follower.append_as_follower(&again, 0).is_err());
    // ...batches that overlap...
    let mut overlapping = batch(90, 2, 1000);
    overlapping[..8].copy_from_slice(&leader.log_end_offset().to_be_bytes());
    let mut second = overlapping.clone();
    second[..8].copy_from_slice(&leader.log_end_offset().to_be_bytes());
    let mut both = overlapping.clone();
    both.extend_from_slice(&second);
    assert!(follower.append_as_follower(&both, 0).is_err());
    // ...a damaged batch after a good one.
    let mut damaged = overlapping.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let mut mixed = overlapping.clone();
    mixed.extend_from_slice(&damaged);
    assert!(follower.append_as_follower(&mixed, 0).is_err());
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(all(&follower), all(&leader));

    // A gap: the next batch starts further on.
    let end = follower.log_end_offset();
    let mut later = batch(91, 1, 1000);
    later[..8].copy_from_slice(&(end + 5).to_be_bytes());
    let out = follower.append_as_follower(&later, 0).unwrap();
    assert_eq!(out.base_offset, end + 5);
    assert_eq!(follower.log_end_offset(), end + 6);
}
