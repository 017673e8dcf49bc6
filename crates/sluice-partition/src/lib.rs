//! The partition layer (Kafka's `ReplicaManager` and `Partition`): the only door from the
//! broker's handlers, coordinators, admin API and metrics to storage.
//!
//! Storage knows segments, indexes, recovery and the cleaner, and where a log ends. This
//! layer knows what is committed: per partition it owns the leader epoch, the high watermark
//! (kept apart from the log end offset), the last stable offset, the rule for when an
//! appended batch counts as committed, and the operations parked on the partition. Readers
//! see only committed data.

mod flusher;
mod partition;
mod replica;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use sluice_storage::{LogManager, UnifiedLog};
use uuid::Uuid;

pub use flusher::{FlushWait, SyncScope};
pub use partition::{
    CommitOnAppend, CommitRule, ManualCommit, Partition, PartitionRead, Verification, Waiter,
    NO_LEADER,
};
pub use replica::{Assignment, ReplicaFetch};
pub use sluice_replication::{AckStatus, IsrChange};
// Values and errors the layer's callers speak in; never the logs themselves.
pub use sluice_storage::{
    is_out_of_descriptors, open_file_count, validate_topic_name, ActiveProducer, AppendOutcome,
    CleanStats, CleanerConfig, Durability, EveryInterval, FailAfter, FileSlice, Fsync, Isolation,
    LogConfig, NewTopic, StorageError, Throttle, TimestampPolicy, MAX_DECOMPRESSED_BATCH_BYTES,
    MAX_PARTITIONS_PER_TOPIC, TOPIC_CONFIG_NAMES, TOPIC_NAME_MAX_LEN,
};

/// The leader epoch every partition starts in on a single node, where nothing elects another
/// leader (in a Kafka cluster the controller assigns epochs).
pub const INITIAL_LEADER_EPOCH: i32 = 0;

/// A topic as the broker serves it: its metadata and its partitions. Immutable; a change to
/// the topic (configs, more partitions) yields a new one that keeps the same [`Partition`]s.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// Config overrides as given at creation or altered since.
    pub overrides: BTreeMap<String, String>,
    pub config: LogConfig,
    pub partitions: Vec<Arc<Partition>>,
    /// The storage topic this view was made from: a different one means the view is stale.
    stored: Arc<sluice_storage::Topic>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// Every partition this broker serves, over one data directory.
#[derive(Debug)]
pub struct ReplicaManager {
    logs: LogManager,
    commit: Arc<dyn CommitRule>,
    flusher: flusher::Flusher,
    /// Views of the storage topics, made on first use and remade when storage's changes.
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// The high watermarks the last run checkpointed, by topic and partition: each is taken
    /// by its partition when the view is first made, and dropped with its topic.
    restored_high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// Serialises high watermark checkpoints (each snapshot is written before the next is
    /// taken, so a deleted topic's entries never come back), and holds the entries last
    /// written, so that an unchanged set is not written again.
    high_watermark_checkpoint: Mutex<Option<Vec<(String, i32, i64)>>>,
}

/// Kafka's name for the high watermark checkpoint of a data directory.
const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

impl ReplicaManager {
    /// Opens (and recovers) the data directory, with every fsync going through `durability`
    /// and at most `segment_files_max` segment files open at once, and starts the flusher,
    /// which syncs with `sync_scope`.
    pub fn open(
        data_dir: &Path,
        defaults: LogConfig,
        durability: Arc<dyn Durability>,
        commit: Arc<dyn CommitRule>,
        segment_files_max: usize,
        sync_scope: SyncScope,
    ) -> Result<Self, StorageError> {
        let logs = LogManager::open_bounded(data_dir, defaults, durability, segment_files_max)?;
        let flusher = flusher::Flusher::start(sync_scope)?;
        let restored = logs.read_offset_checkpoint(HIGH_WATERMARK_CHECKPOINT_FILE);
        Ok(Self {
            logs,
            commit,
            flusher,
            topics: RwLock::new(HashMap::new()),
            restored_high_watermarks: Mutex::new(restored),
            high_watermark_checkpoint: Mutex::new(None),
        })
    }

    /// The view of `stored`, reusing the cached one (and its partitions) when it is current.
    fn view(&self, stored: Arc<sluice_storage::Topic>) -> Arc<Topic> {
        if let Some(t) = self.topics.read().expect("topics lock").get(&stored.name) {
            if Arc::ptr_eq(&t.stored, &stored) {
                return t.clone();
            }
        }
        let mut topics = self.topics.write().expect("topics lock");
        if let Some(t) = topics.get(&stored.name) {
            if Arc::ptr_eq(&t.stored, &stored) {
                return t.clone();
            }
        }
        let name: Arc<str> = Arc::from(stored.name.as_str());
        let previous = topics.get(&stored.name);
        let partitions = stored
            .partitions
            .iter()
            .enumerate()
            .map(|(i, log)| self.partition_for(&name, i, log, previous))
            .collect();
        let view = Arc::new(Topic {
            name: stored.name.clone(),
            id: stored.id,
            overrides: stored.overrides.clone(),
            config: stored.config.clone(),
            partitions,
            stored: stored.clone(),
        });
        topics.insert(stored.name.clone(), view.clone());
        view
    }

    fn partition_for(
        &self,
        name: &Arc<str>,
        index: usize,
        log: &Arc<UnifiedLog>,
        previous: Option<&Arc<Topic>>,
    ) -> Arc<Partition> {
        // A config change or new partitions keep the partitions that were there: their high
        // watermarks and parked operations live on.
        if let Some(p) = previous
            .and_then(|t| t.partitions.get(index))
            .filter(|p| p.same_log(log))
        {
            return p.clone();
        }
        let restored = self
            .restored_high_watermarks
            .lock()
            .expect("restored high watermarks lock")
            .remove(&(name.to_string(), index as i32));
        Arc::new(Partition::new(
            name.clone(),
            index as i32,
            log.clone(),
            INITIAL_LEADER_EPOCH,
            restored,
            self.commit.clone(),
            self.flusher.clone(),
        ))
    }

    /// Forgets the view of a topic storage no longer has.
    fn forget(&self, name: &str) {
        self.topics.write().expect("topics lock").remove(name);
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        match self.logs.topic(name) {
            Some(stored) => Some(self.view(stored)),
            None => {
                if self.topics.read().expect("topics lock").contains_key(name) {
                    self.forget(name);
                }
                None
            }
        }
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.logs.topic_by_id(id).map(|stored| self.view(stored))
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.logs
            .topics()
            .into_iter()
            .map(|stored| self.view(stored))
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }

    pub fn cluster_id(&self) -> &str {
        self.logs.cluster_id()
    }

    pub fn defaults(&self) -> &LogConfig {
        self.logs.defaults()
    }

    pub fn data_dir(&self) -> &Path {
        self.logs.data_dir()
    }

    pub fn is_offline(&self) -> bool {
        self.logs.is_offline()
    }

    /// Creates a topic. With `validate_only` every check runs and nothing changes.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let stored = self
            .logs
            .create_topic(name, partitions, overrides, validate_only)?;
        Ok(self.result_view(stored, validate_only))
    }

    /// Creates topics, each with all of its partitions or none; one answer per topic, in
    /// order.
    pub fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Arc<Topic>, StorageError>> {
        self.logs
            .create_topics(topics, validate_only)
            .into_iter()
            .map(|r| r.map(|stored| self.result_view(stored, validate_only)))
            .collect()
    }

    /// A view of a topic a change returned: cached only if the change was made.
    fn result_view(&self, stored: Arc<sluice_storage::Topic>, validate_only: bool) -> Arc<Topic> {
        if !validate_only {
            return self.view(stored);
        }
        let name: Arc<str> = Arc::from(stored.name.as_str());
        let previous = self
            .topics
            .read()
            .expect("topics lock")
            .get(&stored.name)
            .cloned();
        Arc::new(Topic {
            name: stored.name.clone(),
            id: stored.id,
            overrides: stored.overrides.clone(),
            config: stored.config.clone(),
            partitions: stored
                .partitions
                .iter()
                .enumerate()
                .map(|(i, log)| self.partition_for(&name, i, log, previous.as_ref()))
                .collect(),
            stored,
        })
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let stored = self.logs.create_partitions(name, count, validate_only)?;
        Ok(self.result_view(stored, validate_only))
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        let deleted = self.logs.delete_topic(name);
        self.forget(name);
        deleted?;
        // A topic created again under this name must not start from these high watermarks.
        self.restored_high_watermarks
            .lock()
            .expect("restored high watermarks lock")
            .retain(|(topic, _), _| topic != name);
        self.checkpoint_high_watermarks()
    }

    /// Changes a topic's config overrides (see [`LogManager::alter_topic_config`]).
    pub fn alter_topic_config<E: From<StorageError>>(
        &self,
        name: &str,
        change: impl FnOnce(
            &BTreeMap<String, String>,
            &LogConfig,
        ) -> Result<BTreeMap<String, String>, E>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, E> {
        let stored = self.logs.alter_topic_config(
            name,
            |t| change(&t.overrides, &t.config),
            validate_only,
        )?;
        Ok(self.result_view(stored, validate_only))
    }

    /// Bounds the segment files kept open (see [`LogManager::set_open_segment_files_max`]).
    pub fn set_open_segment_files_max(&self, max: usize) {
        self.logs.set_open_segment_files_max(max);
    }

    /// Segment files open now, and the bound.
    pub fn open_segment_files(&self) -> (usize, usize) {
        self.logs.open_segment_files()
    }

    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.logs.set_producer_id_expiration_ms(ms);
    }

    pub fn allocate_producer_id(&self) -> Result<i64, StorageError> {
        self.logs.allocate_producer_id()
    }

    /// One retention pass over every log: (segments, bytes) deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<(usize, u64), StorageError> {
        // As Kafka: never past the high watermark, so that every replica's log start stays
        // within what its partition committed.
        self.logs.apply_retention_below(now_ms, |topic, partition| {
            self.partition(topic, partition)
                .map_or(i64::MIN, |p| p.high_watermark())
        })
    }

    /// DeleteRecords for one partition: `offset` (-1: the high watermark) becomes the log
    /// start offset, durable when this returns. As Kafka: a log only compaction may shorten
    /// refuses, and an offset past the high watermark is out of range.
    pub fn delete_records(&self, partition: &Partition, offset: i64) -> Result<i64, StorageError> {
        if !partition.config().is_deleted_by_retention() {
            return Err(StorageError::PolicyViolation(
                "DeleteRecords needs cleanup.policy to include delete".into(),
            ));
        }
        let hw = partition.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: partition.log_start_offset(),
                log_end: hw,
            });
        }
        self.logs.delete_records(partition.log(), target)
    }

    /// A follower takes its leader's log start offset (Kafka's `maybeIncrementLogStartOffset`
    /// for `LeaderOffsetIncremented`): records the leader's retention or DeleteRecords
    /// removed go here too, so that the replicas of a partition start where its leader
    /// does. Only as far as this follower's high watermark, and only where the topic's
    /// cleanup policy deletes (a compacted-only log keeps its start, as on the leader).
    /// Returns the new log start, if it moved. In memory, as Kafka's follower: the next
    /// checkpoint makes it durable (after a crash the follower keeps more, harmlessly).
    pub fn follow_log_start(
        &self,
        partition: &Partition,
        leader_log_start: i64,
    ) -> Result<Option<i64>, StorageError> {
        let target = leader_log_start.min(partition.high_watermark());
        if target <= partition.log_start_offset() || !partition.config().is_deleted_by_retention() {
            return Ok(None);
        }
        partition.log().delete_records_before(target).map(Some)
    }

    /// Empties a follower's log and starts it at `offset`
    /// ([`Partition::truncate_fully_and_start_at`]), checkpointing the recovery points
    /// before anything is appended there. Returns whether it truncated.
    pub fn start_follower_log_at(
        &self,
        partition: &Partition,
        offset: i64,
        leader_high_watermark: i64,
        (leader, epoch): (i32, i32),
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        partition.truncate_fully_and_start_at(
            offset,
            leader_high_watermark,
            (leader, epoch),
            now_ms,
            &self.logs,
        )
    }

    /// Empties the log of a partition the metadata no longer places on this broker
    /// (Kafka deletes such a stray replica's log) and starts it again at 0, so that a
    /// drained broker keeps no copy of what it no longer serves. Returns whether it
    /// removed anything. The caller decides only from metadata that is current: a stale
    /// image could name a broker's replica as not hosted.
    pub fn remove_stray_records(
        &self,
        partition: &Partition,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        partition.remove_stray_records(now_ms, &self.logs)
    }

    /// Cuts a follower's divergent tail at `offset` ([`Partition::truncate_to`]),
    /// checkpointing the recovery points before anything is appended. Returns the new log end.
    pub fn truncate_follower_to(
        &self,
        partition: &Partition,
        offset: i64,
        (leader, epoch): (i32, i32),
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        partition.truncate_to(offset, (leader, epoch), now_ms, &self.logs)
    }

    /// Flushes every log and writes the recovery checkpoint, then the high watermarks'.
    pub fn flush_and_checkpoint(&self) -> Result<(), StorageError> {
        self.logs.flush_and_checkpoint()?;
        self.checkpoint_high_watermarks()
    }

    /// Writes the high watermark of every replicated partition (Kafka's
    /// `replication-offset-checkpoint`), so that a restarted replica starts from what was
    /// committed, not from its log start: a partition whose other replicas stay away would
    /// otherwise serve nothing until its ISR shrank. A partition the metadata has not
    /// assigned yet keeps the value it was restored with (its high watermark is then its
    /// log end, which nothing has committed); a lone log writes none.
    pub fn checkpoint_high_watermarks(&self) -> Result<(), StorageError> {
        let mut written = self
            .high_watermark_checkpoint
            .lock()
            .expect("high watermark checkpoint lock");
        let mut entries = Vec::new();
        for t in self.topics() {
            for p in &t.partitions {
                if let Some(hw) = p.checkpointable_high_watermark() {
                    entries.push((t.name.clone(), p.index(), hw));
                }
            }
        }
        if written.as_ref() == Some(&entries) {
            return Ok(());
        }
        let lines: Vec<(&str, i32, i64)> = entries
            .iter()
            .map(|(t, p, hw)| (t.as_str(), *p, *hw))
            .collect();
        self.logs
            .write_offset_checkpoint(HIGH_WATERMARK_CHECKPOINT_FILE, &lines)?;
        *written = Some(entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
