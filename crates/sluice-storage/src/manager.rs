//! `LogManager`: the data directory, its topics and their partition logs.
//!
//! ```text
//! <data-dir>/
//!   .lock                               flock held while a broker uses the directory
//!   meta.json                           {"cluster_id": "...", "node_id": 0}
//!   topics.json                         [{"name", "id", "partitions", "configs"}], replaced atomically
//!   recovery-point-offset-checkpoint    Kafka's format: "0\n<count>\n<topic> <partition> <offset>\n…"
//!   <topic>-<partition>/                one UnifiedLog each
//!   <topic>-<partition>.<uuid>-delete/  a deleted partition, removed at the next opportunity
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::LogConfig;
use crate::log::{write_file_atomically as write_atomically, DirState, UnifiedLog};
use crate::{Durability, StorageError};

const TOPICS_FILE: &str = "topics.json";
const META_FILE: &str = "meta.json";
const RECOVERY_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Log start offsets above the first segment's base (DeleteRecords), same format.
const LOG_START_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
const DELETE_SUFFIX: &str = "-delete";
const PRODUCER_ID_BLOCK_FILE: &str = "producer-id-block.json";
/// Producer ids are reserved durably in blocks of this many, so handing one out rarely syncs.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_LEN: usize = 249;
/// The most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// A topic as stored: immutable; changes replace the whole `Arc<Topic>`.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// Config overrides as given at creation.
    pub overrides: BTreeMap<String, String>,
    pub config: LogConfig,
    pub partitions: Vec<Arc<UnifiedLog>>,
}

#[derive(Serialize, Deserialize)]
struct StoredTopic {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    cluster_id: String,
    node_id: i32,
}

/// Owns every log in one data directory.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    defaults: LogConfig,
    dir_state: Arc<DirState>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic changes and the writes of `topics.json`.
    metadata_lock: Mutex<()>,
    /// Serialises checkpoint writes (recovery points, log start offsets).
    checkpoint_lock: Mutex<()>,
    cluster_id: String,
    producer_ids: Mutex<ProducerIdBlock>,
    _dir_lock: File,
}

/// The producer ids this broker may hand out without touching disk: `next..end`.
#[derive(Debug, Serialize, Deserialize)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), StorageError> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name == "." || name == ".." {
        return Err(StorageError::InvalidTopic(format!(
            "illegal topic name {name:?}"
        )));
    }
    if name.len() > TOPIC_NAME_MAX_LEN {
        return Err(StorageError::InvalidTopic(format!(
            "topic name is longer than {TOPIC_NAME_MAX_LEN} characters"
        )));
    }
    if !legal {
        return Err(StorageError::InvalidTopic(format!(
            "topic name {name:?} has characters other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Reads a `0\n<count>\n<topic> <partition> <offset>\n…` checkpoint (recovery points, log
/// start offsets); a missing or unknown file reads as empty.
fn read_recovery_checkpoint(path: &Path) -> HashMap<(String, i32), i64> {
    let mut points = HashMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return points;
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        tracing::warn!(path = %path.display(), "ignoring recovery checkpoint of unknown version");
        return points;
    }
    let _count = lines.next();
    for line in lines {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let (Ok(p), Ok(o)) = (partition.parse(), offset.parse()) {
            points.insert((topic.to_string(), p), o);
        }
    }
    points
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl LogManager {
    /// Opens the data directory, creating it if needed, and recovers every partition log.
    pub fn open(
        data_dir: &Path,
        defaults: LogConfig,
        durability: Arc<dyn Durability>,
    ) -> Result<Self, StorageError> {
        fs::create_dir_all(data_dir)?;
        let dir_lock = File::create(data_dir.join(".lock"))?;
        dir_lock.try_lock().map_err(|_| {
            StorageError::Io(format!(
                "{} is in use by another broker",
                data_dir.display()
            ))
        })?;
        let dir_state = Arc::new(DirState::new(durability.clone()));

        let meta_path = data_dir.join(META_FILE);
        let cluster_id = if meta_path.exists() {
            let meta: StoredMeta = serde_json::from_slice(&fs::read(&meta_path)?)
                .map_err(|e| StorageError::Io(format!("{}: {e}", meta_path.display())))?;
            meta.cluster_id
        } else {
            let meta = StoredMeta {
                cluster_id: new_cluster_id(),
                node_id: 0,
            };
            let bytes = serde_json::to_vec_pretty(&meta).expect("meta serialises");
            write_atomically(data_dir, META_FILE, &bytes, durability.as_ref())?;
            meta.cluster_id
        };

        for entry in fs::read_dir(data_dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(DELETE_SUFFIX) {
                fs::remove_dir_all(entry.path())?;
            }
        }

        let topics_path = data_dir.join(TOPICS_FILE);
        let stored: Vec<StoredTopic> = if topics_path.exists() {
            serde_json::from_slice(&fs::read(&topics_path)?)
                .map_err(|e| StorageError::Io(format!("{}: {e}", topics_path.display())))?
        } else {
            Vec::new()
        };
        let recovery_points = read_recovery_checkpoint(&data_dir.join(RECOVERY_CHECKPOINT_FILE));
        let log_starts = read_recovery_checkpoint(&data_dir.join(LOG_START_CHECKPOINT_FILE));
        let now = now_ms();
        let mut topics = BTreeMap::new();
        for t in stored {
            let config = LogConfig::with_overrides(&defaults, &t.configs)?;
            let mut partitions = Vec::with_capacity(t.partitions.max(0) as usize);
            for p in 0..t.partitions {
                let rp = recovery_points.get(&(t.name.clone(), p)).copied();
                let dir = partition_dir(data_dir, &t.name, p);
                let log = UnifiedLog::open(&dir, config.clone(), rp, dir_state.clone(), now)?;
                if let Some(&start) = log_starts.get(&(t.name.clone(), p)) {
                    log.restore_log_start_offset(start);
                }
                partitions.push(Arc::new(log));
            }
            let topic = Topic {
                name: t.name.clone(),
                id: t.id,
                overrides: t.configs,
                config,
                partitions,
            };
            topics.insert(t.name, Arc::new(topic));
        }
        // Ids below the last reserved end may have been handed out before a crash: start after it.
        let reserved_end = fs::read(data_dir.join(PRODUCER_ID_BLOCK_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<ProducerIdBlock>(&b).ok())
            .map_or(0, |b| b.end);
        let manager = Self {
            producer_ids: Mutex::new(ProducerIdBlock {
                next: reserved_end,
                end: reserved_end,
            }),
            data_dir: data_dir.to_path_buf(),
            defaults,
            dir_state,
            topics: RwLock::new(topics),
            metadata_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            cluster_id,
            _dir_lock: dir_lock,
        };
        manager.checkpoint_recovery_points()?;
        Ok(manager)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_offline(&self) -> bool {
        self.dir_state.is_offline()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<UnifiedLog>> {
        let topics = self.topics.read().expect("topics lock");
        let t = topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.partitions.get(p))
            .cloned()
    }

    fn persist_topics(&self, topics: &BTreeMap<String, Arc<Topic>>) -> Result<(), StorageError> {
        let stored: Vec<StoredTopic> = topics
            .values()
            .map(|t| StoredTopic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions.len() as i32,
                configs: t.overrides.clone(),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&stored).expect("topics serialise");
        write_atomically(
            &self.data_dir,
            TOPICS_FILE,
            &bytes,
            self.dir_state.durability.as_ref(),
        )
        .map_err(|e| self.dir_state.fail("topics.json write", &e))
    }

    /// Creates a topic. With `validate_only` every check runs and nothing changes.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(StorageError::InvalidPartitions(format!(
                "partition count {partitions} is outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        let config = LogConfig::with_overrides(&self.defaults, &overrides)?;
        let _guard = self.metadata_lock.lock().expect("metadata lock");
        if self.topic(name).is_some() {
            return Err(StorageError::TopicExists(name.to_string()));
        }
        let id = Uuid::new_v4();
        let topic = Topic {
            name: name.to_string(),
            id,
            overrides,
            config,
            partitions: Vec::new(),
        };
        if validate_only {
            return Ok(Arc::new(topic));
        }
        let topic = self.with_partitions(topic, partitions)?;
        let mut topics = self.topics.read().expect("topics lock").clone();
        topics.insert(name.to_string(), topic.clone());
        self.persist_topics(&topics)?;
        *self.topics.write().expect("topics lock") = topics;
        Ok(topic)
    }

    /// Returns `topic` extended with new, empty partition logs up to `count`.
    fn with_partitions(&self, mut topic: Topic, count: i32) -> Result<Arc<Topic>, StorageError> {
        let now = now_ms();
        for p in topic.partitions.len() as i32..count {
            let dir = partition_dir(&self.data_dir, &topic.name, p);
            if dir.exists() {
                // Left over from a crash between creating the directory and recording it.
                fs::remove_dir_all(&dir)?;
            }
            let log = UnifiedLog::open(
                &dir,
                topic.config.clone(),
                None,
                self.dir_state.clone(),
                now,
            )?;
            topic.partitions.push(Arc::new(log));
        }
        self.dir_state
            .durability
            .sync_dir(&self.data_dir)
            .map_err(|e| self.dir_state.fail("directory fsync", &e))?;
        Ok(Arc::new(topic))
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let _guard = self.metadata_lock.lock().expect("metadata lock");
        let current = self
            .topic(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.into()))?;
        let have = current.partitions.len() as i32;
        if count <= have {
            return Err(StorageError::InvalidPartitions(format!(
                "topic {name} has {have} partitions; the new count {count} must be larger"
            )));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(StorageError::InvalidPartitions(format!(
                "partition count {count} exceeds {MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        if validate_only {
            return Ok(current);
        }
        let topic = Topic {
            name: current.name.clone(),
            id: current.id,
            overrides: current.overrides.clone(),
            config: current.config.clone(),
            partitions: current.partitions.clone(),
        };
        let topic = self.with_partitions(topic, count)?;
        let mut topics = self.topics.read().expect("topics lock").clone();
        topics.insert(name.to_string(), topic.clone());
        self.persist_topics(&topics)?;
        *self.topics.write().expect("topics lock") = topics;
        Ok(topic)
    }

    /// Deletes a topic and its data. The metadata change is durable before any data goes.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<Topic>, StorageError> {
        let _guard = self.metadata_lock.lock().expect("metadata lock");
        let mut topics = self.topics.read().expect("topics lock").clone();
        let topic = topics
            .remove(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.into()))?;
        self.persist_topics(&topics)?;
        *self.topics.write().expect("topics lock") = topics;
        // Its recovery points must not outlive it: a new topic of the same name would inherit
        // them and trust segments that were never synced.
        self.checkpoint_recovery_points()?;
        for log in &topic.partitions {
            // Wait out in-flight appends and flushes; none may touch the directory after this.
            log.close();
            let dir = log.dir();
            let file_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            let doomed = self.data_dir.join(format!(
                "{}.{}{DELETE_SUFFIX}",
                file_name.unwrap_or_default(),
                Uuid::new_v4().simple()
            ));
            if let Err(e) = fs::rename(dir, &doomed).and_then(|()| fs::remove_dir_all(&doomed)) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove deleted partition");
            }
        }
        Ok(topic)
    }

    /// Hands out a producer id never handed out before by this data directory, reserving a new
    /// block durably when the current one is used up.
    /// Sets `producer.id.expiration.ms` for every partition.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.dir_state.set_producer_id_expiration_ms(ms);
    }

    pub fn allocate_producer_id(&self) -> Result<i64, StorageError> {
        let mut block = self.producer_ids.lock().expect("producer id lock");
        if block.next >= block.end {
            let end = block.end + PRODUCER_ID_BLOCK_SIZE;
            let bytes = serde_json::to_vec(&ProducerIdBlock {
                next: block.end,
                end,
            })
            .expect("block serialises");
            write_atomically(
                &self.data_dir,
                PRODUCER_ID_BLOCK_FILE,
                &bytes,
                self.dir_state.durability.as_ref(),
            )
            .map_err(|e| self.dir_state.fail("producer id block write", &e))?;
            block.end = end;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Writes every log's recovery point and log start offset to their checkpoint files.
    pub fn checkpoint_recovery_points(&self) -> Result<(), StorageError> {
        // One writer at a time, and the snapshot taken under the same lock: the files share
        // a temporary name, and an older snapshot must never replace a newer one.
        let _checkpoint = self.checkpoint_lock.lock().expect("checkpoint lock");
        let topics = self.topics();
        let mut points = Vec::new();
        let mut starts = Vec::new();
        for t in &topics {
            for (p, log) in t.partitions.iter().enumerate() {
                let rp = log.recovery_point();
                if rp >= 0 {
                    points.push(format!("{} {} {}", t.name, p, rp));
                }
                let start = log.log_start_offset();
                if start > 0 {
                    starts.push(format!("{} {} {}", t.name, p, start));
                }
            }
        }
        for (file, lines) in [
            (RECOVERY_CHECKPOINT_FILE, points),
            (LOG_START_CHECKPOINT_FILE, starts),
        ] {
            let text = format!("0\n{}\n{}\n", lines.len(), lines.join("\n"));
            write_atomically(
                &self.data_dir,
                file,
                text.as_bytes(),
                self.dir_state.durability.as_ref(),
            )
            .map_err(|e| self.dir_state.fail("checkpoint write", &e))?;
        }
        Ok(())
    }

    /// One retention pass over every log ([`UnifiedLog::apply_retention`]); checkpoints the
    /// new log start offsets if anything was deleted. Returns the segments and bytes deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<(usize, u64), StorageError> {
        let (mut segments, mut bytes) = (0, 0);
        for t in self.topics() {
            for log in &t.partitions {
                match log.apply_retention(now_ms) {
                    Ok(o) => {
                        segments += o.deleted_segments;
                        bytes += o.deleted_bytes;
                    }
                    // Deleted while we were at it.
                    Err(StorageError::UnknownTopic(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if segments > 0 {
            self.checkpoint_recovery_points()?;
        }
        Ok((segments, bytes))
    }

    /// DeleteRecords for one partition: the new log start offset, checkpointed before this
    /// returns so that it survives a crash.
    pub fn delete_records(&self, log: &UnifiedLog, offset: i64) -> Result<i64, StorageError> {
        let start = log.delete_records_before(offset)?;
        self.checkpoint_recovery_points()?;
        Ok(start)
    }

    /// Changes a topic's config overrides: `change` computes the new set from the topic as it
    /// is, under the metadata lock, so concurrent changes cannot lose one another. The change
    /// is durable in `topics.json` before any log uses it. With `validate_only` only the
    /// checks run.
    pub fn alter_topic_config<E: From<StorageError>>(
        &self,
        name: &str,
        change: impl FnOnce(&Topic) -> Result<BTreeMap<String, String>, E>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, E> {
        let _guard = self.metadata_lock.lock().expect("metadata lock");
        let mut topics = self.topics.read().expect("topics lock").clone();
        let old = topics
            .get(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.into()))?;
        let overrides = change(old)?;
        let config = LogConfig::with_overrides(&self.defaults, &overrides)?;
        let topic = Arc::new(Topic {
            name: old.name.clone(),
            id: old.id,
            overrides,
            config: config.clone(),
            partitions: old.partitions.clone(),
        });
        if validate_only {
            return Ok(topic);
        }
        topics.insert(name.to_string(), topic.clone());
        self.persist_topics(&topics)?;
        *self.topics.write().expect("topics lock") = topics;
        for log in &topic.partitions {
            log.set_config(config.clone());
        }
        Ok(topic)
    }

    /// Flushes every log, persists indexes and writes the recovery checkpoint: run
    /// periodically and at shutdown so that the next start-up need not rescan.
    pub fn flush_and_checkpoint(&self) -> Result<(), StorageError> {
        for t in self.topics() {
            for log in &t.partitions {
                log.flush_all(now_ms())?;
            }
        }
        self.checkpoint_recovery_points()
    }
}

fn new_cluster_id() -> String {
    // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 0x3f) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 0x3f) as usize] as char);
    }
    out
}
