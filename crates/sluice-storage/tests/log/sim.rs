//! Crash simulation: seeded schedules of appends, acknowledgements, rolls, retention,
//! compaction, DeleteRecords, truncation from the end (as a follower cuts a divergent tail),
//! full truncation (as a follower whose leader's log starts past its end starts again),
//! removal of every record (as a replica moved off this broker starts again at 0),
//! checkpoints, clean restarts and power cuts run against a
//! `LogManager` on `SimFs`, with EIO and ENOSPC injected into any file operation. After every
//! restart the log is compared with a model of what was acknowledged:
//!
//! - every acknowledged record is read back at its offset with its exact key and value, unless
//!   retention or DeleteRecords removed it, or compaction did because a later acknowledged
//!   record has the same key;
//! - every batch served passes its CRC check, offsets only go up, and every record served is
//!   one that was appended at that offset;
//! - the leader epoch cache knows the epoch of every batch served (appends move to a new
//!   epoch now and then), and says it ends after that batch.
//!
//! `SLUICE_SIM_SEED=n` replays one schedule; `SLUICE_SIM_SEEDS=n` runs n schedules (default
//! [`DEFAULT_SCHEDULES`]) from `SLUICE_SIM_SEED_BASE` (default 0).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use sluice_records::{BatchBuilder, BatchHeader, BatchIter, NewRecord};
use sluice_storage::{
    sync_together, CleanerConfig, DirLimits, LogConfig, LogManager, SimFs, StorageError, Throttle,
    UnifiedLog, MAX_DECOMPRESSED_BATCH_BYTES,
};

/// The bound on open segment files the schedules run with.
const OPEN_SEGMENT_FILES_MAX: usize = 2;
/// Index entries of a closed segment per entry kept in memory (512 in production).
const INDEX_BLOCK_ENTRIES: usize = 2;

/// Schedules a plain `cargo test` runs.
const DEFAULT_SCHEDULES: u64 = 2_000;
/// Operations in one schedule (restarts included).
const OPS_PER_SCHEDULE: usize = 60;
const TOPIC: &str = "sim";
const DATA_DIR: &str = "/data";
/// Distinct keys: few, so that compaction has records to drop.
const KEYS: u64 = 6;

/// splitmix64: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Milliseconds a record is kept (`retention.ms`).
const RETENTION_MS: i64 = 30_000;

/// What the log must and may hold.
#[derive(Debug, Default)]
struct Model {
    /// Every record appended (or maybe appended, by an append that failed), by offset; those
    /// past the log end after a restart are forgotten, as their offsets are reused.
    records: BTreeMap<i64, Rec>,
    /// Every offset below this was acknowledged: a flush covering it succeeded.
    acked_end: i64,
    /// Offsets below this may be gone: retention or DeleteRecords removed them.
    removed_below: i64,
    /// The append time of each record, by offset (they only go up).
    timestamps: BTreeMap<i64, i64>,
    /// Unacknowledged records a restart did not bring back (the log may keep their offsets:
    /// a segment whose unsynced batches were lost, followed by one whose file survived). An
    /// acknowledgement later does not cover them.
    lost: BTreeSet<i64>,
    /// Records a restart forgot because they lay past the log end it found, with their
    /// append times: if an operation that failed had unlinked their segment without making
    /// the unlink durable, a power cut before the next sync of the directory (the first
    /// flush after a restart does one) brings that segment back, over whatever was appended
    /// at those offsets since and not acknowledged. Forgotten at each acknowledgement.
    ghosts: BTreeMap<i64, (Rec, Option<i64>)>,
    /// The log end at the last cleaning: the cleaner may have used any record below it to
    /// drop older ones, so truncation stays at or above it (a cluster cleans below the high
    /// watermark and never truncates below it).
    cleaned_upto: i64,
}

impl Model {
    /// The acknowledged records the log must still serve: for each key, its last
    /// acknowledged record (compaction may drop the earlier ones), if not removed, and unless
    /// the log serves a later record of that key (then compaction may have dropped it too).
    fn required(&self, served: &BTreeMap<i64, Rec>) -> Vec<(i64, &Rec)> {
        let mut latest: HashMap<&[u8], (i64, &Rec)> = HashMap::new();
        for (&offset, rec) in self.records.range(..self.acked_end) {
            if self.lost.contains(&offset) {
                continue;
            }
            latest.insert(&rec.key, (offset, rec));
        }
        let mut out: Vec<_> = latest
            .into_values()
            .filter(|&(offset, _)| offset >= self.removed_below)
            .filter(|&(offset, rec)| {
                !served
                    .range(offset + 1..)
                    .any(|(_, later)| later.key == rec.key)
            })
            .collect();
        out.sort_by_key(|&(offset, _)| offset);
        out
    }
}

/// One schedule: its file system, its randomness, the model and a trace of what it did.
struct Schedule {
    seed: u64,
    fs: SimFs,
    rng: Rng,
    model: Model,
    defaults: LogConfig,
    /// One file operation in this many fails (0: none).
    fail_one_in: u64,
    now_ms: i64,
    next_value: u64,
    /// The leader epoch appends are stamped with; it grows now and then, as leaders change.
    epoch: i32,
    /// Truncations that cut records off.
    truncations: u64,
    /// Full truncations that succeeded, and those of them that started an emptied log
    /// again below its start.
    full_truncations: u64,
    restarts_below: u64,
    /// Logs emptied and started again at 0 (a replica moved off this broker).
    removals: u64,
    trace: Vec<String>,
}

/// Why a schedule failed.
type Failure = String;

impl Schedule {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0x51ce_5eed);
        let fail_one_in = match rng.below(3) {
            0 => 0,
            _ => 40 + rng.below(400),
        };
        let defaults = LogConfig {
            segment_bytes: 250 + rng.below(700),
            index_interval_bytes: 64 + rng.below(256),
            cleanup_policy: "compact,delete".into(),
            retention_ms: RETENTION_MS,
            min_cleanable_dirty_ratio: 0.01,
            ..LogConfig::default()
        };
        Self {
            seed,
            fs: SimFs::new(seed),
            rng,
            model: Model::default(),
            defaults,
            fail_one_in,
            now_ms: 1_000_000,
            next_value: 0,
            epoch: 0,
            truncations: 0,
            full_truncations: 0,
            restarts_below: 0,
            removals: 0,
            trace: Vec::new(),
        }
    }

    fn open(&self) -> Result<LogManager, StorageError> {
        // Two open segment files at most: segments are closed and reopened all the time, so
        // every schedule also checks that a reopened file reads, writes and syncs as the
        // one it replaced. Index blocks of a few entries: closed segments of a few hundred
        // bytes keep only a summary of their indexes and read the rest from their files.
        LogManager::open_with_fs(
            Path::new(DATA_DIR),
            self.defaults.clone(),
            Arc::new(self.fs.clone()),
            DirLimits {
                segment_files_max: OPEN_SEGMENT_FILES_MAX,
                index_block_entries: INDEX_BLOCK_ENTRIES,
            },
        )
    }

    /// Opens the data directory after a restart, sometimes losing power during recovery
    /// first, and checks the log against the model. Faults resume afterwards.
    fn reopen(&mut self) -> Result<LogManager, Failure> {
        if self.fs.is_powered_off() {
            self.trace.push("the power went off: crash".into());
            self.fs.crash();
        }
        if self.rng.below(4) == 0 {
            let after = 1 + self.rng.below(80);
            self.fs.set_faults(0, Some(after));
            self.trace
                .push(format!("open, power cut after {after} calls"));
            match self.open() {
                Ok(m) => {
                    self.fs.set_faults(0, None);
                    if !self.fs.is_powered_off() {
                        return self.checked(m);
                    }
                    drop(m);
                }
                Err(e) if self.fs.is_powered_off() => {
                    self.trace.push(format!("open failed: {e}"));
                }
                Err(e) => return Err(format!("open failed with no fault injected: {e}")),
            }
            self.trace.push("crash".into());
            self.fs.crash();
        }
        self.fs.set_faults(0, None);
        self.trace.push("open".into());
        let m = self.open().map_err(|e| format!("open failed: {e}"))?;
        self.checked(m)
    }

    fn checked(&mut self, m: LogManager) -> Result<LogManager, Failure> {
        let log = m
            .partition(TOPIC, 0)
            .ok_or("the topic is gone after a restart")?;
        let end = log.log_end_offset();
        // Offsets past the end are reused by the next appends.
        let mut timestamps = self.model.timestamps.split_off(&end);
        for (offset, rec) in self.model.records.split_off(&end) {
            let ts = timestamps.remove(&offset);
            self.model.ghosts.insert(offset, (rec, ts));
        }
        self.model.lost.split_off(&end);
        self.check(&log)?;
        // DeleteRecords past what survived: the log start is the log end now.
        self.model.removed_below = self.model.removed_below.min(end);
        self.arm_faults();
        Ok(m)
    }

    fn arm_faults(&mut self) {
        let power_cut = (self.rng.below(3) == 0).then(|| 1 + self.rng.below(300));
        self.fs.set_faults(self.fail_one_in, power_cut);
    }

    /// Compares the log with the model (faults off: the checker is not under test).
    fn check(&mut self, log: &UnifiedLog) -> Result<(), Failure> {
        let mut ghosts_back = Vec::new();
        let result = self.check_against_model(log, &mut ghosts_back);
        // What came back is in the log again, as if appended there.
        for offset in ghosts_back {
            if let Some((rec, ts)) = self.model.ghosts.remove(&offset) {
                self.model.records.insert(offset, rec);
                self.model.lost.remove(&offset);
                match ts {
                    Some(ts) => self.model.timestamps.insert(offset, ts),
                    None => self.model.timestamps.remove(&offset),
                };
            }
        }
        result
    }

    fn check_against_model(
        &mut self,
        log: &UnifiedLog,
        ghosts_back: &mut Vec<i64>,
    ) -> Result<(), Failure> {
        let model = &self.model;
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        if end < model.acked_end {
            return Err(format!(
                "the log ends at {end}, but offsets below {} were acknowledged",
                model.acked_end
            ));
        }
        let mut served: BTreeMap<i64, Rec> = BTreeMap::new();
        // (base offset, next offset, leader epoch) of every batch served.
        let mut headers: Vec<(i64, i64, i32)> = Vec::new();
        let mut offset = start;
        let mut next_batch = i64::MIN;
        while offset < end {
            let read = log
                .read(offset, 1 << 20, true)
                .map_err(|e| format!("read at {offset} failed: {e}"))?;
            if read.records.is_empty() {
                break; // a compacted tail: nothing left below the end
            }
            for batch in BatchIter::new(&read.records) {
                let batch = batch.map_err(|e| format!("served a torn batch near {offset}: {e}"))?;
                let h = BatchHeader::validate_stored(batch)
                    .map_err(|e| format!("served a corrupt batch near {offset}: {e}"))?;
                if h.base_offset < next_batch {
                    return Err(format!(
                        "batch at {} served after one ending at {next_batch}",
                        h.base_offset
                    ));
                }
                next_batch = h.next_offset();
                offset = h.next_offset();
                headers.push((h.base_offset, h.next_offset(), h.partition_leader_epoch));
                let records = h
                    .records(batch, MAX_DECOMPRESSED_BATCH_BYTES)
                    .map_err(|e| format!("served batch at {} unreadable: {e}", h.base_offset))?;
                for r in records {
                    let rec = Rec {
                        key: r.key.unwrap_or_default(),
                        value: r.value.unwrap_or_default(),
                    };
                    match model.records.get(&r.offset) {
                        Some(expected) if *expected == rec => {}
                        _ if r.offset >= model.acked_end
                            && model.ghosts.get(&r.offset).is_some_and(|(g, _)| *g == rec) =>
                        {
                            ghosts_back.push(r.offset);
                        }
                        Some(expected) => {
                            return Err(format!(
                                "offset {} holds {:?}={:?}, appended as {:?}={:?}",
                                r.offset,
                                String::from_utf8_lossy(&rec.key),
                                String::from_utf8_lossy(&rec.value),
                                String::from_utf8_lossy(&expected.key),
                                String::from_utf8_lossy(&expected.value),
                            ))
                        }
                        None => {
                            return Err(format!(
                                "offset {} holds a record never appended there",
                                r.offset
                            ))
                        }
                    }
                    served.insert(r.offset, rec);
                }
            }
        }
        // The leader epoch cache agrees with the stored batches: each batch's epoch is known,
        // and ends after it but no later than the next batch of a newer epoch (or the log end).
        for (i, &(base, next, epoch)) in headers.iter().enumerate() {
            let bound = headers[i..]
                .iter()
                .find(|h| h.2 > epoch)
                .map_or(end, |h| h.0);
            match log.end_offset_for_epoch(epoch) {
                Some((e, epoch_end)) if e == epoch && (next..=bound).contains(&epoch_end) => {}
                other => {
                    return Err(format!(
                        "batch {base}..{next} of epoch {epoch}, next newer epoch at {bound}, but \
                         the epoch cache says {other:?} ({:?})",
                        log.epoch_entries()
                    ))
                }
            }
        }
        if let Some(past) = log.epoch_entries().iter().find(|e| e.start_offset > end) {
            return Err(format!(
                "the epoch cache has {past:?} past the log end {end}"
            ));
        }
        for (offset, rec) in model.required(&served) {
            if !served.contains_key(&offset) {
                return Err(format!(
                    "acknowledged record {:?}={:?} at offset {offset} is gone (log {start}..{end}, \
                     served {:?})",
                    String::from_utf8_lossy(&rec.key),
                    String::from_utf8_lossy(&rec.value),
                    served.keys().collect::<Vec<_>>(),
                ));
            }
        }
        let unacked = self.model.records.range(self.model.acked_end..);
        let lost: Vec<i64> = unacked
            .map(|(&o, _)| o)
            .filter(|o| !served.contains_key(o))
            .collect();
        self.model.lost.extend(lost);
        self.trace.push(format!(
            "checked: log {start}..{end}, {} served",
            served.len()
        ));
        Ok(())
    }

    fn batch(&mut self) -> Vec<Rec> {
        let n = 1 + self.rng.below(4);
        (0..n)
            .map(|_| {
                let key = format!("k{}", self.rng.below(KEYS)).into_bytes();
                self.next_value += 1;
                let pad = "x".repeat(self.rng.below(40) as usize);
                let value = format!("v{}-{}{pad}", self.seed, self.next_value).into_bytes();
                Rec { key, value }
            })
            .collect()
    }

    /// Runs one operation; `Err` from storage means a fault hit it.
    fn step(&mut self, m: &LogManager) -> Result<(), StorageError> {
        let log = m.partition(TOPIC, 0).expect("the topic exists");
        self.now_ms += self.rng.below(3_000) as i64;
        let now = self.now_ms;
        match self.rng.below(100) {
            0..=44 => {
                let records = self.batch();
                let mut b = BatchBuilder::new(now);
                for r in &records {
                    b.push(NewRecord {
                        key: Some(r.key.clone()),
                        value: Some(r.value.clone()),
                        headers: Vec::new(),
                        timestamp_delta: 0,
                    });
                }
                let base = log.log_end_offset();
                // Recorded before the append: a failed write may still leave it in the log.
                for (i, r) in records.into_iter().enumerate() {
                    self.model.records.insert(base + i as i64, r);
                    self.model.timestamps.insert(base + i as i64, now);
                }
                if self.rng.below(8) == 0 {
                    self.epoch += 1;
                }
                self.trace
                    .push(format!("append at {base} in epoch {}", self.epoch));
                log.append_in_epoch(&b.build(), self.epoch, now)?;
            }
            45..=64 => {
                let target = log.log_end_offset();
                // The flusher syncs one partition alone, or several with one sync of the
                // whole file system.
                if self.rng.below(2) == 0 {
                    self.trace.push(format!("ack to {target}"));
                    log.flush_to(target)?;
                } else {
                    self.trace
                        .push(format!("ack to {target} by a file-system sync"));
                    let mut outcomes = sync_together(std::slice::from_ref(&log))
                        .expect("the simulated file system syncs as a whole");
                    outcomes.remove(0)?;
                }
                self.model.acked_end = self.model.acked_end.max(target);
                self.model.ghosts.clear();
            }
            65..=71 => {
                self.trace.push("checkpoint recovery points".into());
                m.checkpoint_recovery_points()?;
            }
            72..=79 => {
                self.trace.push("clean".into());
                self.model.cleaned_upto = self.model.cleaned_upto.max(log.log_end_offset());
                let stats =
                    log.clean(now, &CleanerConfig::default(), &mut Throttle::new(f64::MAX))?;
                if let Some(s) = stats {
                    self.trace.push(format!("  cleaned to {}", s.cleaned_to));
                }
            }
            80..=85 => {
                self.trace.push(format!("retention at {now}"));
                // Retention may remove (whole segments of) records older than retention.ms,
                // which, as timestamps only go up, lie below the first one that is not.
                let horizon = now - RETENTION_MS;
                // (Segments emptied by a crash or by compaction go whatever their age.)
                let lost = &self.model.lost;
                let young = self
                    .model
                    .timestamps
                    .iter()
                    .find(|&(o, &ts)| ts >= horizon && !lost.contains(o));
                let expired_below = young.map_or(log.log_end_offset(), |(&o, _)| o);
                self.model.removed_below = self.model.removed_below.max(expired_below);
                m.apply_retention(now)?;
            }
            86..=87 => {
                // A follower cutting a divergent tail: never below what was acknowledged.
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                let low = self.model.acked_end.max(self.model.cleaned_upto).max(start);
                if low < end {
                    let target = low + self.rng.below((end - low) as u64) as i64;
                    self.trace.push(format!("truncate to {target}"));
                    let new_end = match m.truncate_to(&log, target, now) {
                        // Below what the cleaner compacted: refused, nothing changed.
                        Err(StorageError::PolicyViolation(why)) => {
                            self.trace.push(format!("  refused: {why}"));
                            return Ok(());
                        }
                        other => other?,
                    };
                    if new_end > target || new_end < self.model.acked_end {
                        return Err(StorageError::Io(format!(
                            "truncation to {target} left the log ending at {new_end}"
                        )));
                    }
                    if new_end < end {
                        self.truncations += 1;
                    }
                    // The cut records are gone for good: none may come back, even after a
                    // power cut, unless appended again.
                    self.model.records.split_off(&new_end);
                    self.model.timestamps.split_off(&new_end);
                    self.model.lost.split_off(&new_end);
                }
            }
            88..=89 => {
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                let target = start + self.rng.below((end - start + 1) as u64) as i64;
                self.trace.push(format!("delete records before {target}"));
                // Even if it fails, it may have deleted segments below the target.
                self.model.removed_below = self.model.removed_below.max(target);
                m.delete_records(&log, target)?;
            }
            90..=91 if self.rng.below(3) == 0 => {
                // A replica the cluster moved off this broker: the log empties and starts
                // again at 0. Until that is done a crash may leave any prefix of the old
                // log, or nothing; what survives is still what was appended.
                self.trace.push("remove all records".into());
                self.model.acked_end = 0;
                self.model.removed_below = log.log_end_offset();
                m.remove_all_records(&log, now)?;
                self.removals += 1;
                self.model.ghosts.clear();
                self.model.records.clear();
                self.model.timestamps.clear();
                self.model.lost.clear();
                self.model.cleaned_upto = 0;
                self.model.removed_below = 0;
                if log.log_start_offset() != 0 || log.log_end_offset() != 0 || log.size_bytes() != 0
                {
                    return Err(StorageError::Io(format!(
                        "after removing every record the log spans {}..{} in {} bytes",
                        log.log_start_offset(),
                        log.log_end_offset(),
                        log.size_bytes()
                    )));
                }
            }
            90..=91 => {
                // A follower whose leader's log starts past this log's end: everything goes,
                // and the log starts again at the leader's log start; or, on a log emptied
                // so, again below its start (at the batch holding the leader's log start).
                // Until that is done nothing of the old log must survive (a crash may leave
                // any prefix of it, or nothing), but what survives is still what was
                // appended.
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                // (Only a log emptied so a moment ago holds no bytes at all.)
                let below =
                    start == end && end > 0 && log.size_bytes() == 0 && self.rng.below(2) == 0;
                let target = if below {
                    end - 1 - self.rng.below(end.min(50) as u64) as i64
                } else {
                    end + 1 + self.rng.below(50) as i64
                };
                self.trace
                    .push(format!("truncate fully and start at {target}"));
                self.model.acked_end = 0;
                self.model.removed_below = self.model.removed_below.max(target);
                m.truncate_fully_and_start_at(&log, target, now)?;
                self.full_truncations += 1;
                self.restarts_below += u64::from(below);
                self.model.ghosts.clear();
                self.model.records.clear();
                self.model.timestamps.clear();
                self.model.lost.clear();
                self.model.cleaned_upto = target;
                // Durable when it returns: the log may not start or end before `target`.
                self.model.acked_end = target;
                self.model.removed_below = target;
            }
            _ => {
                let target = log.log_end_offset();
                self.trace.push(format!("flush and checkpoint at {target}"));
                m.flush_and_checkpoint()?;
                self.model.acked_end = self.model.acked_end.max(target);
                self.model.ghosts.clear();
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), Failure> {
        let m = self.open().map_err(|e| format!("first open: {e}"))?;
        m.create_topic(TOPIC, 1, BTreeMap::new(), false)
            .map_err(|e| format!("create topic: {e}"))?;
        self.arm_faults();
        let mut m = Some(m);
        for _ in 0..OPS_PER_SCHEDULE {
            let manager = m.take().expect("open");
            match self.rng.below(100) {
                0..=3 => {
                    self.trace.push("clean restart".into());
                    let target = manager.partition(TOPIC, 0).expect("topic").log_end_offset();
                    if manager.flush_and_checkpoint().is_ok() {
                        self.model.acked_end = self.model.acked_end.max(target);
                        self.model.ghosts.clear();
                    }
                    drop(manager);
                    m = Some(self.reopen()?);
                }
                4..=9 => {
                    self.trace.push("crash".into());
                    drop(manager);
                    self.fs.crash();
                    m = Some(self.reopen()?);
                }
                _ => {
                    let faults = self.fs.faults_injected();
                    match self.step(&manager) {
                        Ok(()) => m = Some(manager),
                        Err(e) => {
                            let powered_off = self.fs.is_powered_off();
                            if !powered_off && self.fs.faults_injected() == faults {
                                return Err(format!("failed with no fault injected: {e}"));
                            }
                            self.trace.push(format!("  failed: {e}"));
                            drop(manager);
                            if powered_off || self.rng.below(2) == 0 {
                                self.trace.push("crash".into());
                                self.fs.crash();
                            } else {
                                self.trace.push("restart".into());
                            }
                            m = Some(self.reopen()?);
                        }
                    }
                }
            }
        }
        drop(m);
        self.trace.push("final crash".into());
        self.fs.crash();
        self.reopen().map(drop)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// The property of the module's documentation, over [`DEFAULT_SCHEDULES`] seeded schedules.
#[test]
fn acknowledged_records_survive_every_simulated_crash() {
    let seeds = match env_u64("SLUICE_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let base = env_u64("SLUICE_SIM_SEED_BASE").unwrap_or(0);
            base..base + env_u64("SLUICE_SIM_SEEDS").unwrap_or(DEFAULT_SCHEDULES)
        }
    };
    let started = std::time::Instant::now();
    let count = seeds.end - seeds.start;
    // Replaying one seed also prints every file operation.
    let replay = count == 1;
    let mut truncations = 0;
    let mut full_truncations = 0;
    let mut restarts_below = 0;
    let mut removals = 0;
    for seed in seeds {
        let mut schedule = Schedule::new(seed);
        schedule.fs.trace(replay);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schedule.run()));
        truncations += schedule.truncations;
        full_truncations += schedule.full_truncations;
        restarts_below += schedule.restarts_below;
        removals += schedule.removals;
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(failure)) => failure,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .map_or("panicked".into(), |p| format!("panicked: {p}")),
        };
        if replay {
            eprintln!(
                "file operations:\n  {}",
                schedule.fs.trace(false).join("\n  ")
            );
        }
        let tail = schedule.trace.len().saturating_sub(40);
        panic!(
            "simulation seed {seed} failed: {failure}\nlast steps:\n  {}\nreplay with: \
             SLUICE_SIM_SEED={seed} cargo test -p sluice-storage --test log -- \
             sim::acknowledged_records_survive_every_simulated_crash",
            schedule.trace[tail..].join("\n  ")
        );
    }
    eprintln!(
        "{count} simulated schedules in {:?}, {truncations} truncations, {full_truncations} \
         full truncations ({restarts_below} below the start of an emptied log), {removals} \
         logs emptied to start again at 0",
        started.elapsed()
    );
    if count >= 100 {
        assert!(truncations > 0, "no schedule truncated anything");
        assert!(full_truncations > 0, "no schedule truncated a log fully");
        assert!(
            restarts_below > 0,
            "no schedule started an emptied log below its start"
        );
        assert!(
            removals > 0,
            "no schedule emptied a log to start again at 0"
        );
    }
}

/// A partition directory on a fresh `SimFs` whose own entry is durable, with its log's state.
fn sim_dir(seed: u64) -> (SimFs, Arc<sluice_storage::DirState>, &'static Path) {
    let fs = SimFs::new(seed);
    let dir = Path::new("/data/p-0");
    sluice_storage::Fs::create_dir_all(&fs, dir).unwrap();
    for d in ["/", "/data"] {
        sluice_storage::Fs::open_dir(&fs, Path::new(d))
            .unwrap()
            .sync()
            .unwrap();
    }
    let state = Arc::new(sluice_storage::DirState::with_fs(Arc::new(fs.clone())));
    (fs, state, dir)
}

/// A new log leaves syncing its directory to its first flush. If the process stops before
/// that flush and the next one acknowledges appends, that flush must sync the directory: the
/// segment's entry may never have reached the disk. (Simulation seed 4 found this.)
#[test]
fn the_first_flush_after_a_restart_syncs_the_directory() {
    for seed in 0..16 {
        let (fs, state, dir) = sim_dir(seed);
        drop(UnifiedLog::open(dir, super::config(1 << 20), None, state.clone(), 0).unwrap());
        let log = UnifiedLog::open(dir, super::config(1 << 20), None, state, 0).unwrap();
        log.append(&super::keyed(&[(1, Some("acked"))], 0), 0)
            .unwrap();
        log.flush_to(log.log_end_offset()).unwrap();
        drop(log);
        fs.crash();
        let state = Arc::new(sluice_storage::DirState::with_fs(Arc::new(fs.clone())));
        let log = UnifiedLog::open(dir, super::config(1 << 20), None, state, 0).unwrap();
        assert_eq!(
            super::table(&log),
            vec![(0, "k1".to_string(), Some("acked".to_string()))],
            "seed {seed}"
        );
    }
}

/// The cleaner drops a record only for a later one of its key that is durable: otherwise a
/// power cut can lose the later record after the earlier, acknowledged one is gone.
/// (Simulation seed 22 found this.)
#[test]
fn compaction_never_supersedes_a_record_with_one_not_yet_durable() {
    for seed in 0..16 {
        let (fs, state, dir) = sim_dir(seed);
        let log = UnifiedLog::open(dir, super::compacted_config(), None, state, 0).unwrap();
        log.append(&super::keyed(&[(1, Some("acked"))], 0), 0)
            .unwrap();
        // Unique keys: the only record the cleaner can drop is the acknowledged one.
        for key in 200..220 {
            log.append(&super::keyed(&[(key, Some("x"))], 0), 0)
                .unwrap();
        }
        log.flush_to(log.log_end_offset()).unwrap();
        // Not acknowledged: a later value of the key, in a later segment, and enough to close
        // that one.
        log.append(&super::keyed(&[(1, Some("later"))], 0), 0)
            .unwrap();
        for key in 100..120 {
            log.append(&super::keyed(&[(key, Some("x"))], 0), 0)
                .unwrap();
        }
        log.clean(10, &CleanerConfig::default(), &mut Throttle::new(f64::MAX))
            .unwrap();
        drop(log);
        fs.crash();
        let state = Arc::new(sluice_storage::DirState::with_fs(Arc::new(fs.clone())));
        let log = UnifiedLog::open(dir, super::compacted_config(), None, state, 0).unwrap();
        assert!(
            served_keys(&log).iter().any(|key| key == b"k1"),
            "seed {seed}: key k1 lost its acknowledged value"
        );
    }
}

/// The keys of every record the log serves, which may end in a gap (records lost in a crash,
/// or compacted away).
fn served_keys(log: &UnifiedLog) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        if read.records.is_empty() {
            break;
        }
        for b in BatchIter::new(&read.records) {
            let b = b.unwrap();
            let h = BatchHeader::validate_stored(b).unwrap();
            for r in h.records(b, MAX_DECOMPRESSED_BATCH_BYTES).unwrap() {
                keys.push(r.key.unwrap_or_default());
            }
            offset = h.next_offset();
        }
    }
    keys
}
