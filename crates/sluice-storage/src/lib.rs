//! Sluice's storage engine: partition logs made of segments, sparse indexes, recovery after a
//! crash, group commit, and the topic metadata of one data directory.
//!
//! This crate knows files and record batches; it knows nothing of sockets or Kafka request
//! types. The broker translates [`StorageError`]s into Kafka error codes.

mod config;
mod durability;
mod epoch_cache;
mod files;
mod fs;
mod index;
mod log;
mod manager;
mod pace;
mod producer_state;
mod segment;
mod topic_journal;
mod txn_index;

pub use config::{LogConfig, ThrottledReplicas, TimestampPolicy, TOPIC_CONFIG_NAMES};
pub use durability::{syncfs_supported, Durability, FailAfter, Fsync};
pub use epoch_cache::{EpochEntry, LeaderEpochCache};
pub use files::{
    is_out_of_descriptors, open_file_count, CountedFile, HandleCache, SegmentFile,
    DEFAULT_OPEN_SEGMENT_FILES_MAX,
};
pub use fs::{
    create_dir_all_durably, write_file_atomically, Fs, FsDir, FsFile, FsLock, OpenMode, RealFs,
    SimFs,
};
pub use index::{OffsetIndex, TimeIndex, DEFAULT_INDEX_BLOCK_ENTRIES};
pub use log::{
    sync_together, AppendOutcome, CleanStats, CleanerConfig, DirState, FileSlice, Isolation,
    ReadOutcome, RetentionOutcome, SliceOutcome, Throttle, UnifiedLog, LEADER_EPOCH,
    MAX_DECOMPRESSED_BATCH_BYTES,
};
pub use manager::{
    validate_topic_name, DirLimits, LogManager, NewTopic, Topic, MAX_PARTITIONS_PER_TOPIC,
    TOPIC_NAME_MAX_LEN,
};
pub use pace::EveryInterval;
pub use producer_state::{
    ActiveProducer, ProducerStateManager, SequenceCheck, BATCHES_PER_PRODUCER,
};
pub use txn_index::AbortedTxn;

use sluice_records::BatchError;

/// Everything storage can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Some records of a batch are refused (KIP-467): their indexes in the batch, and why.
    #[error("{message}: records {records:?}")]
    RecordErrors { message: String, records: Vec<i32> },
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("batch of {size} bytes exceeds max.message.bytes={max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("the log directory is offline after an I/O failure")]
    Offline,
    /// Raised by the partition layer, never by storage itself: an append to a partition
    /// this broker does not lead (its log follows the leader's).
    #[error("this broker does not lead the partition")]
    NotLeader,
    /// The process ran out of file descriptors: the operation did nothing and may be retried
    /// once descriptors are free again. Never takes the directory offline.
    #[error("out of file descriptors: {0}")]
    OutOfDescriptors(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    #[error("duplicate sequence: {0}")]
    DuplicateSequence(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A transaction marker from a coordinator older than one whose marker the partition
    /// already holds for the producer: a zombie coordinator's.
    #[error("transaction coordinator fenced: {0}")]
    CoordinatorFenced(String),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        if is_out_of_descriptors(&e) {
            StorageError::OutOfDescriptors(e.to_string())
        } else {
            StorageError::Io(e.to_string())
        }
    }
}

impl From<BatchError> for StorageError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Truncated { .. } | BatchError::Corrupt(_) => {
                StorageError::CorruptMessage(e.to_string())
            }
            BatchError::InvalidRecord(_) | BatchError::DecompressedTooLarge(_) => {
                StorageError::InvalidRecord(e.to_string())
            }
            BatchError::InvalidTimestamp(_) => StorageError::InvalidTimestamp(e.to_string()),
            BatchError::TooLarge { size, max } => StorageError::MessageTooLarge { size, max },
        }
    }
}
