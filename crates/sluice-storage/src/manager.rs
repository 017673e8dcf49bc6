//! `LogManager`: the data directory, its topics and their partition logs.
//!
//! ```text
//! <data-dir>/
//!   .lock                               flock held while a broker uses the directory
//!   meta.json                           {"version": 1, "cluster_id": "...", "node_id": 0}
//!   producer-id-block.json              {"version": 1, "next": n, "end": m}: ids below m may be used
//!   topics.json                         {"version": 1, "topics": [...]}, replaced atomically
//!   topics.journal                      changes since topics.json, one line each (topic_journal.rs)
//!   recovery-point-offset-checkpoint    Kafka's format: "0\n<count>\n<topic> <partition> <offset>\n…"
//!   <topic>-<partition>/                one UnifiedLog each
//!   <topic>-<partition>.<uuid>-delete/  a deleted partition, removed at the next opportunity
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::LogConfig;
use crate::fs::write_file_atomically as write_atomically;
use crate::log::{DirState, UnifiedLog};
use crate::topic_journal::{Change, StoredTopic, TopicJournal};
use crate::{Durability, Fs, FsLock, RealFs, StorageError};

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

/// Threads that flush logs at once for [`LogManager::flush_and_checkpoint`].
const FLUSH_THREADS: usize = 8;

/// A topic to create: see [`LogManager::create_topics`].
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
    /// The topic's id as the cluster metadata gives it; `None` for a new random one.
    pub id: Option<Uuid>,
}

fn stored(t: &Topic) -> StoredTopic {
    StoredTopic {
        name: t.name.clone(),
        id: t.id,
        partitions: t.partitions.len() as i32,
        configs: t.overrides.clone(),
    }
}

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

/// The version of `meta.json` and `producer-id-block.json` this code writes. Files from before
/// the field existed read as version 0, the same layout.
const META_VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    #[serde(default)]
    version: u16,
    cluster_id: String,
    node_id: i32,
}

/// Parses a small JSON file of this directory, refusing one that does not parse or has a
/// version this code does not know: they hold what cannot be rebuilt (the cluster id, the
/// producer ids already handed out), so guessing would be worse than not starting.
fn parse_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    version: impl Fn(&T) -> u16,
) -> Result<T, StorageError> {
    let value: T = serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Corrupt(format!("{}: {e}", path.display())))?;
    if version(&value) > META_VERSION {
        return Err(StorageError::Corrupt(format!(
            "{}: unknown version {}",
            path.display(),
            version(&value)
        )));
    }
    Ok(value)
}

/// Owns every log in one data directory.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    defaults: LogConfig,
    dir_state: Arc<DirState>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topic ids to names, for requests that name topics by id (Fetch v13+, Produce v13+).
    ids: RwLock<HashMap<Uuid, String>>,
    /// Serialises topic changes; holds the journal they are written to.
    metadata_lock: Mutex<TopicJournal>,
    /// Topics named in the recovery-point checkpoint last written: a topic re-created under
    /// such a name must not inherit its predecessor's recovery points.
    checkpointed_topics: Mutex<HashSet<String>>,
    /// Serialises checkpoint writes (recovery points, log start offsets).
    checkpoint_lock: Mutex<()>,
    cluster_id: String,
    producer_ids: Mutex<ProducerIdBlock>,
    _dir_lock: Box<dyn FsLock>,
}

/// The producer ids this broker may hand out without touching disk: `next..end`.
#[derive(Debug, Serialize, Deserialize)]
struct ProducerIdBlock {
    #[serde(default)]
    version: u16,
    next: i64,
    end: i64,
}

/// The metadata quorum's directory in the data directory is named as Kafka names the metadata
/// log's partition, `__cluster_metadata-0`: no topic may take that name (nor may start-up
/// take that directory for an orphan partition).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), StorageError> {
    if name == METADATA_TOPIC {
        return Err(StorageError::InvalidTopic(format!(
            "{METADATA_TOPIC} is the cluster metadata log's name, reserved"
        )));
    }
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

/// The longest file name Linux file systems take.
const FILE_NAME_MAX_BYTES: usize = 255;

/// The name a deleted partition's directory is renamed to before it is removed, as Kafka
/// names it: `<topic>-<partition>.<uuid>-delete`, the topic cut short so that the whole name
/// fits in [`FILE_NAME_MAX_BYTES`] (a 249-character topic would not fit otherwise).
fn delete_dir_name(topic: &str, partition: i32) -> String {
    let suffix = format!("-{partition}.{}{DELETE_SUFFIX}", Uuid::new_v4().simple());
    // Topic names are ASCII, so any byte length is a character boundary.
    let keep = topic.len().min(FILE_NAME_MAX_BYTES - suffix.len());
    format!("{}{suffix}", &topic[..keep])
}

/// Where the directory of partition log `dir` goes to be removed: a `-delete` name beside
/// it, which start-up removes. `None` if `dir` is not named as a partition's.
pub(crate) fn doomed_dir(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_str()?;
    let (topic, partition) = parse_partition_dir(name)?;
    Some(dir.with_file_name(delete_dir_name(topic, partition)))
}

/// Removes a deleted partition's directory: renamed first, so that a crash midway leaves a
/// `-delete` directory that start-up removes, never a partial one under the live name. If the
/// rename fails, the directory is removed where it is; if that fails too, start-up removes it
/// as an orphan (no topic names it), so deleted records never come back.
fn remove_partition_dir(fs: &dyn Fs, data_dir: &Path, dir: &Path, topic: &str, partition: i32) {
    let doomed = data_dir.join(delete_dir_name(topic, partition));
    let removed = match fs.rename(dir, &doomed) {
        Ok(()) => fs.remove_dir_all(&doomed),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e,
                "could not rename a deleted partition; removing it in place");
            fs.remove_dir_all(dir)
        }
    };
    if let Err(e) = removed {
        tracing::warn!(dir = %dir.display(), error = %e,
            "could not remove a deleted partition; start-up will");
    }
}

/// `(topic, partition)` if `name` is a partition directory's name, `<topic>-<partition>`.
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    validate_topic_name(topic).ok()?;
    Some((topic, partition.parse().ok()?))
}

/// Whether `dir` holds a segment file (`<20 digits>.log`): what tells a partition directory
/// apart from anything else an operator may keep in the data directory.
fn holds_segments(fs: &dyn Fs, dir: &Path) -> bool {
    fs.read_dir(dir).is_ok_and(|names| {
        names
            .iter()
            .any(|name| crate::segment::parse_segment_file_name(name).is_some())
    })
}

/// Reads a `0\n<count>\n<topic> <partition> <offset>\n…` checkpoint (recovery points, log
/// start offsets); a missing or unknown file reads as empty.
fn read_recovery_checkpoint(fs: &dyn Fs, path: &Path) -> HashMap<(String, i32), i64> {
    let mut points = HashMap::new();
    let Some(text) = fs.read(path).ok().and_then(|b| String::from_utf8(b).ok()) else {
        return points;
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        tracing::warn!(path = %path.display(), "ignoring recovery checkpoint of unknown version");
        return points;
    }
    let _count = lines.next();
    let mut unreadable = 0usize;
    for line in lines {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            unreadable += 1;
            continue;
        };
        match (partition.parse(), offset.parse()) {
            (Ok(p), Ok(o)) => {
                points.insert((topic.to_string(), p), o);
            }
            _ => unreadable += 1,
        }
    }
    if unreadable > 0 {
        // Those partitions are recovered as if never checkpointed: validated batch by batch.
        tracing::warn!(path = %path.display(), unreadable,
            "ignoring unreadable lines of a checkpoint");
    }
    points
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bounds a directory's logs hold to from the moment they open (recovery included).
#[derive(Debug, Clone, Copy)]
pub struct DirLimits {
    /// Segment files kept open at once (others are closed and reopened on use).
    pub segment_files_max: usize,
    /// Index entries of a closed segment per entry kept in memory.
    pub index_block_entries: usize,
}

impl Default for DirLimits {
    fn default() -> Self {
        Self {
            segment_files_max: crate::DEFAULT_OPEN_SEGMENT_FILES_MAX,
            index_block_entries: crate::DEFAULT_INDEX_BLOCK_ENTRIES,
        }
    }
}

impl LogManager {
    /// Opens the data directory, creating it if needed, and recovers every partition log.
    pub fn open(
        data_dir: &Path,
        defaults: LogConfig,
        durability: Arc<dyn Durability>,
    ) -> Result<Self, StorageError> {
        Self::open_with_fs(
            data_dir,
            defaults,
            Arc::new(RealFs::new(durability)),
            DirLimits::default(),
        )
    }

    /// Like [`LogManager::open`], keeping at most `segment_files_max` segment files open from
    /// the start (recovery opens every segment: with more partitions than descriptors, the
    /// bound must hold before it).
    pub fn open_bounded(
        data_dir: &Path,
        defaults: LogConfig,
        durability: Arc<dyn Durability>,
        segment_files_max: usize,
    ) -> Result<Self, StorageError> {
        let fs = Arc::new(RealFs::new(durability));
        let limits = DirLimits {
            segment_files_max,
            ..DirLimits::default()
        };
        Self::open_with_fs(data_dir, defaults, fs, limits)
    }

    /// Like [`LogManager::open`], on the file system `fs`, within `limits`.
    pub fn open_with_fs(
        data_dir: &Path,
        defaults: LogConfig,
        fs: Arc<dyn Fs>,
        limits: DirLimits,
    ) -> Result<Self, StorageError> {
        // A data directory Sluice creates must survive a power cut as much as the topics
        // acknowledged in it: its entry in its parent is synced too (and theirs, for every
        // directory created on the way).
        crate::fs::create_dir_all_durably(fs.as_ref(), data_dir)?;
        let dir_lock = fs.try_lock(&data_dir.join(".lock"))?.ok_or_else(|| {
            StorageError::Io(format!(
                "{} is in use by another broker",
                data_dir.display()
            ))
        })?;
        let dir_state = Arc::new(DirState::with_fs(fs.clone()));
        dir_state.set_open_segment_files_max(limits.segment_files_max);
        dir_state.set_index_block_entries(limits.index_block_entries);

        let meta_path = data_dir.join(META_FILE);
        let cluster_id = if fs.exists(&meta_path) {
            let bytes = fs.read(&meta_path)?;
            let meta: StoredMeta = parse_versioned(&meta_path, &bytes, |m: &StoredMeta| m.version)?;
            meta.cluster_id
        } else {
            let meta = StoredMeta {
                version: META_VERSION,
                cluster_id: new_cluster_id(),
                node_id: 0,
            };
            let bytes = serde_json::to_vec_pretty(&meta).expect("meta serialises");
            write_atomically(fs.as_ref(), data_dir, META_FILE, &bytes)?;
            meta.cluster_id
        };

        for name in fs.read_dir(data_dir)? {
            if name.ends_with(DELETE_SUFFIX) {
                fs.remove_dir_all(&data_dir.join(name))?;
            }
        }

        let (journal, stored) = TopicJournal::open(data_dir, fs.clone())?;
        let stored: Vec<StoredTopic> = stored.into_values().collect();
        remove_orphan_partitions(fs.as_ref(), data_dir, &stored)?;
        let recovery_points =
            read_recovery_checkpoint(fs.as_ref(), &data_dir.join(RECOVERY_CHECKPOINT_FILE));
        let log_starts =
            read_recovery_checkpoint(fs.as_ref(), &data_dir.join(LOG_START_CHECKPOINT_FILE));
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
        // Only a missing file means no id was ever handed out: one that does not parse is
        // refused, as reading it as zero would hand the same ids out again.
        let block_path = data_dir.join(PRODUCER_ID_BLOCK_FILE);
        let reserved_end = match fs.read(&block_path) {
            Ok(bytes) => {
                parse_versioned(&block_path, &bytes, |b: &ProducerIdBlock| b.version)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot open the data directory"))?
                    .end
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let manager = Self {
            producer_ids: Mutex::new(ProducerIdBlock {
                version: META_VERSION,
                next: reserved_end,
                end: reserved_end,
            }),
            data_dir: data_dir.to_path_buf(),
            defaults,
            dir_state,
            ids: RwLock::new(topics.values().map(|t| (t.id, t.name.clone())).collect()),
            topics: RwLock::new(topics),
            metadata_lock: Mutex::new(journal),
            checkpointed_topics: Mutex::new(HashSet::new()),
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
        let name = self.ids.read().expect("ids lock").get(&id)?.clone();
        self.topic(&name).filter(|t| t.id == id)
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

    /// Makes `changes` durable in the topic journal.
    fn record_changes(
        &self,
        journal: &mut TopicJournal,
        changes: &[Change],
    ) -> Result<(), StorageError> {
        journal
            .append(changes)
            .map_err(|e| self.dir_state.fail("topic journal write", &e))
    }

    /// Folds the journal into the snapshot if it is due. The changes are already durable in
    /// the journal, so a failure here does not undo them; it is reported (and a failed sync
    /// takes the directory offline, as always).
    fn maybe_compact_journal(&self, journal: &mut TopicJournal) {
        let topics = self.topics.read().expect("topics lock");
        if !journal.wants_compaction(topics.len()) {
            return;
        }
        let stored: Vec<StoredTopic> = topics.values().map(|t| stored(t)).collect();
        drop(topics);
        if let Err(e) = journal.compact(stored.iter()) {
            let _ = self.dir_state.fail("topic snapshot write", &e);
        }
    }

    /// Creates a topic. With `validate_only` every check runs and nothing changes.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let topic = NewTopic {
            name: name.to_string(),
            partitions,
            overrides,
            id: None,
        };
        self.create_topics(vec![topic], validate_only)
            .pop()
            .expect("one result per topic")
    }

    /// Creates topics, each with all of its partitions or none, and answers for each in
    /// order. The topics created together are recorded with one journal write and one sync of
    /// the data directory, so creating many at once costs little more than creating one.
    /// With `validate_only` every check runs and nothing changes.
    pub fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Arc<Topic>, StorageError>> {
        let mut journal = self.metadata_lock.lock().expect("metadata lock");
        let mut results: Vec<Result<Arc<Topic>, StorageError>> = Vec::with_capacity(topics.len());
        let mut names = HashSet::new();
        for new in topics {
            let result = self.prepare_topic(new, validate_only, &mut names);
            results.push(result);
        }
        let created: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].as_ref().is_ok_and(|t| !t.partitions.is_empty()))
            .collect();
        if validate_only || created.is_empty() {
            return results;
        }
        let changes: Vec<Change> = created
            .iter()
            .map(|&i| Change::Upsert(stored(results[i].as_ref().expect("created"))))
            .collect();
        let recorded = self
            .sync_data_dir()
            .and_then(|()| self.record_changes(&mut journal, &changes));
        match recorded {
            Ok(()) => {
                let mut map = self.topics.write().expect("topics lock");
                let mut ids = self.ids.write().expect("ids lock");
                for &i in &created {
                    let topic = results[i].as_ref().expect("created").clone();
                    ids.insert(topic.id, topic.name.clone());
                    map.insert(topic.name.clone(), topic);
                }
                drop((map, ids));
                self.maybe_compact_journal(&mut journal);
            }
            Err(e) => {
                for &i in &created {
                    let topic = std::mem::replace(&mut results[i], Err(e.clone()));
                    if let Ok(topic) = topic {
                        self.discard_partitions(&topic.name, topic.partitions.clone(), 0);
                    }
                }
            }
        }
        results
    }

    /// Checks one topic of a [`LogManager::create_topics`] batch and, unless validating only,
    /// creates its partition logs (not yet recorded, nor visible).
    fn prepare_topic(
        &self,
        new: NewTopic,
        validate_only: bool,
        names: &mut HashSet<String>,
    ) -> Result<Arc<Topic>, StorageError> {
        let NewTopic {
            name,
            partitions,
            overrides,
            id,
        } = new;
        validate_topic_name(&name)?;
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(StorageError::InvalidPartitions(format!(
                "partition count {partitions} is outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        let config = LogConfig::with_overrides(&self.defaults, &overrides)?;
        // Metadata changes wait for a restart too, like every write to an offline directory.
        self.dir_state.check()?;
        if self.topic(&name).is_some() || names.contains(&name) {
            return Err(StorageError::TopicExists(name));
        }
        let topic = Topic {
            name: name.clone(),
            id: id.unwrap_or_else(Uuid::new_v4),
            overrides,
            config,
            partitions: Vec::new(),
        };
        if validate_only {
            return Ok(Arc::new(topic));
        }
        // A deleted topic of this name may still be in the recovery-point checkpoint.
        self.forget_checkpointed(&name)?;
        let topic = self.with_partitions(topic, partitions)?;
        names.insert(name);
        Ok(topic)
    }

    /// Makes new partition directories' entries durable.
    fn sync_data_dir(&self) -> Result<(), StorageError> {
        let dir = self
            .dir_state
            .fs
            .open_dir(&self.data_dir)
            .map_err(|e| self.dir_state.fail("directory open", &e))?;
        dir.sync()
            .map_err(|e| self.dir_state.fail("directory fsync", &e))
    }

    /// Closes and removes partition logs that were created but never recorded: `logs` are
    /// partitions `first..` of `topic`.
    fn discard_partitions(&self, topic: &str, logs: Vec<Arc<UnifiedLog>>, first: usize) {
        let count = logs.len();
        drop(logs);
        for p in first..first + count {
            let dir = partition_dir(&self.data_dir, topic, p as i32);
            if let Err(err) = self.dir_state.fs.remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %err,
                        "could not remove the directory of a partition that failed to create");
                }
            }
        }
    }

    /// Returns `topic` extended with new, empty partition logs up to `count`: all of them or,
    /// on any failure (running out of descriptors among them), none, with every directory
    /// made on the way removed again. The caller syncs the data directory and records them.
    fn with_partitions(&self, mut topic: Topic, count: i32) -> Result<Arc<Topic>, StorageError> {
        let now = now_ms();
        let fs = self.dir_state.fs.as_ref();
        let first = topic.partitions.len();
        for p in first as i32..count {
            let dir = partition_dir(&self.data_dir, &topic.name, p);
            let opened = (|| {
                if fs.exists(&dir) {
                    // Left over from a crash between creating the directory and recording it.
                    fs.remove_dir_all(&dir)?;
                }
                UnifiedLog::open(
                    &dir,
                    topic.config.clone(),
                    None,
                    self.dir_state.clone(),
                    now,
                )
            })();
            match opened {
                Ok(log) => topic.partitions.push(Arc::new(log)),
                Err(e) => {
                    let made = topic.partitions.split_off(first);
                    // The failed one may have left its directory too.
                    let _ = fs.remove_dir_all(&dir);
                    self.discard_partitions(&topic.name, made, first);
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(topic))
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let mut journal = self.metadata_lock.lock().expect("metadata lock");
        self.dir_state.check()?;
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
        let recorded = self
            .sync_data_dir()
            .and_then(|()| self.record_changes(&mut journal, &[Change::Upsert(stored(&topic))]));
        if let Err(e) = recorded {
            let added = topic.partitions[have as usize..].to_vec();
            drop(topic);
            self.discard_partitions(name, added, have as usize);
            return Err(e);
        }
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), topic.clone());
        self.maybe_compact_journal(&mut journal);
        Ok(topic)
    }

    /// Deletes a topic and its data. The metadata change is durable before any data goes.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<Topic>, StorageError> {
        let mut journal = self.metadata_lock.lock().expect("metadata lock");
        // Refused while offline, whatever the file system would still allow: a deletion
        // recorded now might not be the state recovery finds.
        self.dir_state.check()?;
        if self.topic(name).is_none() {
            return Err(StorageError::UnknownTopic(name.into()));
        }
        self.record_changes(&mut journal, &[Change::Delete(name.to_string())])?;
        let topic = self
            .topics
            .write()
            .expect("topics lock")
            .remove(name)
            .expect("checked under the metadata lock");
        self.ids.write().expect("ids lock").remove(&topic.id);
        // Its recovery points stay in the checkpoint until the next one is written; a topic
        // re-created under this name first rewrites it (`checkpointed_topics`).
        for (p, log) in topic.partitions.iter().enumerate() {
            // Wait out in-flight appends and flushes; none may touch the directory after this.
            log.close();
            remove_partition_dir(
                self.dir_state.fs.as_ref(),
                &self.data_dir,
                log.dir(),
                &topic.name,
                p as i32,
            );
        }
        self.maybe_compact_journal(&mut journal);
        Ok(topic)
    }

    /// Hands out a producer id never handed out before by this data directory, reserving a new
    /// block durably when the current one is used up.
    /// Bounds the segment files every log of the directory keeps open at once: the least
    /// recently used are closed, and reopened when next read, written or synced.
    pub fn set_open_segment_files_max(&self, max: usize) {
        self.dir_state.set_open_segment_files_max(max);
    }

    /// Segment files open now, and the bound.
    pub fn open_segment_files(&self) -> (usize, usize) {
        self.dir_state.open_segment_files()
    }

    /// Sets `producer.id.expiration.ms` for every partition.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.dir_state.set_producer_id_expiration_ms(ms);
    }

    pub fn allocate_producer_id(&self) -> Result<i64, StorageError> {
        let mut block = self.producer_ids.lock().expect("producer id lock");
        if block.next >= block.end {
            let end = block.end + PRODUCER_ID_BLOCK_SIZE;
            let bytes = serde_json::to_vec(&ProducerIdBlock {
                version: META_VERSION,
                next: block.end,
                end,
            })
            .expect("block serialises");
            write_atomically(
                self.dir_state.fs.as_ref(),
                &self.data_dir,
                PRODUCER_ID_BLOCK_FILE,
                &bytes,
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
        let checkpoint = self.checkpoint_lock.lock().expect("checkpoint lock");
        self.write_checkpoints(&checkpoint)
    }

    /// Rewrites the checkpoints if `name` may be in them, so that a topic created under the
    /// name of a deleted one cannot inherit its recovery point or log start offset. Checked
    /// and written under the checkpoint lock: a checkpoint being written meanwhile has either
    /// finished (and its names are known) or not started.
    fn forget_checkpointed(&self, name: &str) -> Result<(), StorageError> {
        let checkpoint = self.checkpoint_lock.lock().expect("checkpoint lock");
        let named = self
            .checkpointed_topics
            .lock()
            .expect("checkpoint names lock")
            .contains(name);
        if named {
            self.write_checkpoints(&checkpoint)?;
        }
        Ok(())
    }

    /// Writes both checkpoint files; the caller holds the checkpoint lock.
    fn write_checkpoints(&self, _lock: &std::sync::MutexGuard<'_, ()>) -> Result<(), StorageError> {
        let topics = self.topics();
        let mut points = Vec::new();
        let mut starts = Vec::new();
        let names: HashSet<String> = topics.iter().map(|t| t.name.clone()).collect();
        // Names about to be written count as written before the first byte is: a failure
        // between the two files must not leave a name on disk that the set has lost.
        self.checkpointed_topics
            .lock()
            .expect("checkpoint names lock")
            .extend(names.iter().cloned());
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
            // Kafka's layout: version, count, one line per entry (none for an empty one).
            let mut text = format!("0\n{}\n", lines.len());
            for line in &lines {
                text.push_str(line);
                text.push('\n');
            }
            write_atomically(
                self.dir_state.fs.as_ref(),
                &self.data_dir,
                file,
                text.as_bytes(),
            )
            .map_err(|e| self.dir_state.fail("checkpoint write", &e))?;
        }
        *self
            .checkpointed_topics
            .lock()
            .expect("checkpoint names lock") = names;
        Ok(())
    }

    /// Writes `entries` (topic, partition, offset) to the data directory's file `name`, in
    /// Kafka's offset checkpoint format, atomically and durably: for the layers above, which
    /// keep offsets of their own per partition (the partition layer's high watermarks).
    /// `name` must not be one of storage's own files.
    pub fn write_offset_checkpoint(
        &self,
        name: &str,
        entries: &[(&str, i32, i64)],
    ) -> Result<(), StorageError> {
        assert!(
            ![RECOVERY_CHECKPOINT_FILE, LOG_START_CHECKPOINT_FILE].contains(&name),
            "{name} is storage's own checkpoint"
        );
        let mut text = format!("0\n{}\n", entries.len());
        for (topic, partition, offset) in entries {
            text.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        write_atomically(
            self.dir_state.fs.as_ref(),
            &self.data_dir,
            name,
            text.as_bytes(),
        )
        .map_err(|e| self.dir_state.fail("checkpoint write", &e))
    }

    /// The entries of the data directory's offset checkpoint file `name`, by topic and
    /// partition; none if it is missing or unreadable (reported).
    pub fn read_offset_checkpoint(&self, name: &str) -> HashMap<(String, i32), i64> {
        read_recovery_checkpoint(self.dir_state.fs.as_ref(), &self.data_dir.join(name))
    }

    /// One retention pass over every log ([`UnifiedLog::apply_retention`]); checkpoints the
    /// new log start offsets if anything was deleted. Returns the segments and bytes deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<(usize, u64), StorageError> {
        self.apply_retention_below(now_ms, |_, _| i64::MAX)
    }

    /// [`LogManager::apply_retention`], each log deleting only segments that end at or
    /// below `upper(topic, partition)` (its high watermark).
    pub fn apply_retention_below(
        &self,
        now_ms: i64,
        upper: impl Fn(&str, i32) -> i64,
    ) -> Result<(usize, u64), StorageError> {
        let (mut segments, mut bytes) = (0, 0);
        for t in self.topics() {
            for (i, log) in t.partitions.iter().enumerate() {
                match log.apply_retention_below(now_ms, upper(&t.name, i as i32)) {
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

    /// Truncates `log` from the end ([`UnifiedLog::truncate_to`]) and checkpoints the
    /// recovery points before this returns: a checkpoint from before may name a recovery
    /// point past the new end, and recovery would trust whatever is appended there next
    /// (a torn batch below it, in a segment the next one follows, is never scanned).
    /// Returns the new log end. Nothing may be appended to `log` until this returns.
    pub fn truncate_to(
        &self,
        log: &UnifiedLog,
        offset: i64,
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let end = log.truncate_to(offset, now_ms)?;
        self.checkpoint_recovery_points()?;
        Ok(end)
    }

    /// Empties `log` and starts it at `offset` ([`UnifiedLog::truncate_fully_and_start_at`])
    /// and checkpoints the recovery points before this returns, as [`LogManager::truncate_to`].
    pub fn truncate_fully_and_start_at(
        &self,
        log: &UnifiedLog,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        log.truncate_fully_and_start_at(offset, now_ms)?;
        self.checkpoint_recovery_points()
    }

    /// Empties `log` and starts it again at 0 ([`UnifiedLog::remove_all_records`]), then
    /// checkpoints the recovery points, so that none names an offset of the old log.
    pub fn remove_all_records(&self, log: &UnifiedLog, now_ms: i64) -> Result<(), StorageError> {
        log.remove_all_records(now_ms)?;
        self.checkpoint_recovery_points()
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
        let mut journal = self.metadata_lock.lock().expect("metadata lock");
        self.dir_state.check()?;
        let old = self
            .topic(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.into()))?;
        let overrides = change(&old)?;
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
        self.record_changes(&mut journal, &[Change::Upsert(stored(&topic))])?;
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), topic.clone());
        self.maybe_compact_journal(&mut journal);
        for log in &topic.partitions {
            log.set_config(config.clone());
        }
        Ok(topic)
    }

    /// Flushes every log, persists indexes and writes the recovery checkpoint: run
    /// periodically and at shutdown so that the next start-up need not rescan.
    pub fn flush_and_checkpoint(&self) -> Result<(), StorageError> {
        let logs: Vec<Arc<UnifiedLog>> = self
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        // Each log's flush is a few syncs of its own files, which the disk serves best
        // several at a time: with many partitions, one after another takes minutes.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let workers = FLUSH_THREADS.min(logs.len());
        let results: Vec<Result<(), StorageError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(log) = logs.get(i) else {
                                return Ok(());
                            };
                            if let Err(e) = log.flush_all(now_ms()) {
                                // Stop the others too: the checkpoint will not be written.
                                next.store(logs.len(), std::sync::atomic::Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(StorageError::Io("a flush thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<(), StorageError>>()?;
        self.checkpoint_recovery_points()
    }
}

/// Removes partition directories no stored topic names: left by a crash between creating a
/// partition and recording it, or by a deletion that could not remove its directory. Their
/// records belong to no topic, and must not reappear if a topic of that name is created.
fn remove_orphan_partitions(
    fs: &dyn Fs,
    data_dir: &Path,
    stored: &[StoredTopic],
) -> Result<(), StorageError> {
    let known: std::collections::HashMap<&str, i32> = stored
        .iter()
        .map(|t| (t.name.as_str(), t.partitions))
        .collect();
    for name in fs.read_dir(data_dir)? {
        let path = data_dir.join(&name);
        let Some((topic, partition)) = parse_partition_dir(&name) else {
            continue;
        };
        let orphan = known.get(topic).is_none_or(|&count| partition >= count);
        // Only a directory lists segments.
        if orphan && holds_segments(fs, &path) {
            tracing::warn!(dir = %path.display(),
                "removing a partition directory no topic names");
            fs.remove_dir_all(&path)?;
        }
    }
    Ok(())
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
