//! Per-topic log configuration: Kafka's topic config names, with broker-wide defaults.

use std::collections::BTreeMap;

use sluice_records::Compression;

use crate::StorageError;

/// How record timestamps are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampPolicy {
    CreateTime,
    LogAppendTime,
}

/// The typed configuration of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampPolicy,
    /// `index.interval.bytes`: bytes between offset index entries.
    pub index_interval_bytes: u64,
    /// `segment.index.bytes`: the active segment rolls when its offset or time index would
    /// grow past this, which bounds the index memory of an active segment.
    pub segment_index_bytes: usize,
    /// `cleanup.policy`: `delete` (retention), `compact` (the cleaner), or both.
    pub cleanup_policy: String,
    /// `retention.ms`: segments whose largest timestamp is older are deleted; -1 for no limit.
    pub retention_ms: i64,
    /// `retention.bytes`: per partition, -1 for no limit.
    pub retention_bytes: i64,
    /// `delete.retention.ms`: how long tombstones survive compaction, counted from their own
    /// timestamp.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable bytes that must be dirty before
    /// the cleaner rewrites a log (unless `max.compaction.lag.ms` makes it overdue).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a closed segment is cleaned only once its largest timestamp
    /// is at least this old.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log is cleaned whatever its dirty ratio once a dirty closed
    /// segment's largest timestamp is older than this. It never rolls the active segment
    /// (Kafka's does; see the README's "Where Sluice differs").
    pub max_compaction_lag_ms: i64,
    /// `compression.type`: the codec batches are stored in, or `None` for `producer` (as the
    /// client sent them).
    pub compression_type: Option<Compression>,
    /// `min.insync.replicas`: an acks=all produce needs at least this many in-sync
    /// replicas (kept with the topic; replication, not storage, reads it).
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`: whether a replica outside the ISR may be elected
    /// (kept with the topic; the controller reads it).
    pub unclean_leader_election_enable: bool,
    /// `leader.replication.throttled.replicas` and `follower.replication.throttled.replicas`:
    /// the replicas whose catching up the leader (resp. the follower) throttles to the
    /// broker's `*.replication.throttled.rate` (kept with the topic; replication reads it).
    pub leader_replication_throttled_replicas: ThrottledReplicas,
    pub follower_replication_throttled_replicas: ThrottledReplicas,
}

/// Which replicas of a topic are throttled: none, every one (`*`), or the listed
/// `partition:broker` pairs, as Kafka writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Listed(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    fn parse(name: &str, value: &str) -> Result<Self, StorageError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(Self::None);
        }
        if value == "*" {
            return Ok(Self::All);
        }
        let pairs = value
            .split(',')
            .map(|pair| {
                let (p, b) = pair.trim().split_once(':')?;
                Some((p.trim().parse().ok()?, b.trim().parse().ok()?))
            })
            .collect::<Option<Vec<(i32, i32)>>>()
            .ok_or_else(|| {
                StorageError::InvalidConfig(format!(
                    "{name}={value}: expected * or partition:broker pairs separated by commas"
                ))
            })?;
        Ok(Self::Listed(pairs))
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Listed(pairs) => pairs.contains(&(partition, broker)),
        }
    }

    fn to_config(&self) -> String {
        match self {
            Self::None => String::new(),
            Self::All => "*".into(),
            Self::Listed(pairs) => pairs
                .iter()
                .map(|(p, b)| format!("{p}:{b}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampPolicy::CreateTime,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            cleanup_policy: "delete".into(),
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            compression_type: None,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            leader_replication_throttled_replicas: ThrottledReplicas::None,
            follower_replication_throttled_replicas: ThrottledReplicas::None,
        }
    }
}

/// The topic config names Sluice knows, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

fn parse_int(name: &str, value: &str, min: i64) -> Result<i64, StorageError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| StorageError::InvalidConfig(format!("{name}={value} is not an integer")))?;
    if v < min {
        return Err(StorageError::InvalidConfig(format!(
            "{name}={value} is below {min}"
        )));
    }
    Ok(v)
}

impl LogConfig {
    /// Whether `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy
            .split(',')
            .any(|p| p.trim() == "compact")
    }

    /// Whether `cleanup.policy` includes `delete`.
    pub fn is_deleted_by_retention(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p.trim() == "delete")
    }

    /// Applies one `name=value` override; unknown names and bad values are errors.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), StorageError> {
        match name {
            "segment.bytes" => self.segment_bytes = parse_int(name, value, 14)? as u64,
            "min.insync.replicas" => {
                self.min_insync_replicas = parse_int(name, value, 1)?.min(i32::MAX as i64) as i32
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(StorageError::InvalidConfig(format!(
                            "{name}={value} is not true or false"
                        )))
                    }
                }
            }
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas = ThrottledReplicas::parse(name, value)?
            }
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas =
                    ThrottledReplicas::parse(name, value)?
            }
            "segment.ms" => self.segment_ms = parse_int(name, value, 1)?,
            "max.message.bytes" => {
                self.max_message_bytes = parse_int(name, value, 0)?.min(i32::MAX as i64) as usize
            }
            "index.interval.bytes" => self.index_interval_bytes = parse_int(name, value, 0)? as u64,
            // Kafka's minimum: room for a few entries of either index.
            "segment.index.bytes" => {
                self.segment_index_bytes = parse_int(name, value, 4)?.min(i32::MAX as i64) as usize
            }
            "retention.ms" => self.retention_ms = parse_int(name, value, -1)?,
            "retention.bytes" => self.retention_bytes = parse_int(name, value, -1)?,
            "delete.retention.ms" => self.delete_retention_ms = parse_int(name, value, 0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_int(name, value, 0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse_int(name, value, 1)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value.trim().parse().map_err(|_| {
                    StorageError::InvalidConfig(format!("{name}={value} is not a number"))
                })?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(StorageError::InvalidConfig(format!(
                        "{name}={value} is outside [0, 1]"
                    )));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampPolicy::CreateTime,
                    "LogAppendTime" => TimestampPolicy::LogAppendTime,
                    _ => {
                        return Err(StorageError::InvalidConfig(format!(
                            "{name}={value}: expected CreateTime or LogAppendTime"
                        )))
                    }
                }
            }
            "compression.type" => {
                self.compression_type = match value.trim() {
                    "producer" => None,
                    "uncompressed" => Some(Compression::None),
                    "gzip" => Some(Compression::Gzip),
                    "snappy" => Some(Compression::Snappy),
                    "lz4" => Some(Compression::Lz4),
                    "zstd" => Some(Compression::Zstd),
                    _ => {
                        return Err(StorageError::InvalidConfig(format!(
                            "{name}={value}: expected producer, uncompressed, gzip, snappy, lz4 \
                             or zstd"
                        )))
                    }
                }
            }
            "cleanup.policy" => {
                let ok = value
                    .split(',')
                    .all(|p| matches!(p.trim(), "delete" | "compact"));
                if !ok || value.is_empty() {
                    return Err(StorageError::InvalidConfig(format!(
                        "{name}={value}: expected delete, compact or both"
                    )));
                }
                self.cleanup_policy = value.to_string();
            }
            _ => {
                return Err(StorageError::InvalidConfig(format!(
                    "unknown topic config {name}"
                )))
            }
        }
        Ok(())
    }

    /// `defaults` with every override in `overrides` applied.
    pub fn with_overrides(
        defaults: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, StorageError> {
        let mut config = defaults.clone();
        for (name, value) in overrides {
            config.set(name, value)?;
        }
        Ok(config)
    }

    /// The value of a known config name as Kafka prints it.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "segment.bytes" => self.segment_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election_enable.to_string(),
            "leader.replication.throttled.replicas" => {
                self.leader_replication_throttled_replicas.to_config()
            }
            "follower.replication.throttled.replicas" => {
                self.follower_replication_throttled_replicas.to_config()
            }
            "segment.ms" => self.segment_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "cleanup.policy" => self.cleanup_policy.clone(),
            "compression.type" => match self.compression_type {
                None => "producer",
                Some(Compression::None) => "uncompressed",
                Some(Compression::Gzip) => "gzip",
                Some(Compression::Snappy) => "snappy",
                Some(Compression::Lz4) => "lz4",
                Some(Compression::Zstd) => "zstd",
            }
            .into(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampPolicy::CreateTime => "CreateTime".into(),
                TimestampPolicy::LogAppendTime => "LogAppendTime".into(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_bad_values_are_refused() {
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), "2048".to_string());
        overrides.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let config = LogConfig::with_overrides(&LogConfig::default(), &overrides).unwrap();
        assert_eq!(config.segment_bytes, 2048);
        assert_eq!(config.timestamp_type, TimestampPolicy::LogAppendTime);
        assert_eq!(config.get("segment.bytes").as_deref(), Some("2048"));

        let mut bad = LogConfig::default();
        assert!(bad.set("segment.bytes", "ten").is_err());
        assert!(bad.set("segment.bytes", "3").is_err());
        assert!(bad.set("no.such.config", "1").is_err());
        assert!(bad.set("message.timestamp.type", "Whenever").is_err());
        assert!(bad
            .set("leader.replication.throttled.replicas", "0:1,x")
            .is_err());
        assert!(bad
            .set("follower.replication.throttled.replicas", "0-1")
            .is_err());
    }

    #[test]
    fn throttled_replicas_are_none_all_or_listed_pairs() {
        let mut c = LogConfig::default();
        assert!(!c.leader_replication_throttled_replicas.contains(0, 1));
        c.set("leader.replication.throttled.replicas", " 0:1, 2:3 ")
            .unwrap();
        let listed = &c.leader_replication_throttled_replicas;
        assert!(listed.contains(0, 1) && listed.contains(2, 3) && !listed.contains(1, 0));
        assert_eq!(
            c.get("leader.replication.throttled.replicas").as_deref(),
            Some("0:1,2:3")
        );
        c.set("follower.replication.throttled.replicas", "*")
            .unwrap();
        assert!(c.follower_replication_throttled_replicas.contains(7, 9));
    }

    #[test]
    fn every_listed_name_has_a_value() {
        let config = LogConfig::default();
        for name in TOPIC_CONFIG_NAMES {
            assert!(config.get(name).is_some(), "{name}");
            let value = config.get(name).unwrap();
            let mut copy = config.clone();
            copy.set(name, &value).unwrap();
            assert_eq!(copy, config, "{name} does not round-trip");
        }
    }
}
