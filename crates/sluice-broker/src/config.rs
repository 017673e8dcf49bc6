//! Broker configuration: Kafka's broker config names, embedded defaults, typed values.

use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_group::CoordinatorConfig;
use sluice_partition::{CleanerConfig, LogConfig, TimestampPolicy};
use sluice_txn::TxnConfig;

/// Everything the broker needs to run. [`BrokerConfig::default`] is the zero-config broker
/// `sluice serve` starts.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// `listeners`: the Kafka listener.
    pub listen: SocketAddr,
    /// `advertised.listeners` host and port; `None` means the bound listener address.
    pub advertised: Option<(String, u16)>,
    /// `log.dirs` (one directory).
    pub data_dir: PathBuf,
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `max.connections`: connections beyond this are closed on accept.
    pub max_connections: usize,
    /// `queued.max.requests.per.connection`: requests read ahead of their responses on one
    /// connection (pipelining depth). 500, Kafka's `queued.max.requests`: one producer
    /// connection feeding 16 partitions at half the disk's rate keeps about 200 requests
    /// waiting for their syncs, and a lower bound left its requests unread in the socket.
    pub queued_max_requests_per_connection: usize,
    /// `queued.max.request.bytes`: request bytes all connections may hold before large
    /// requests wait to be read (-1, unbounded, as in Kafka, is `usize::MAX`).
    pub queued_max_request_bytes: usize,
    /// `queued.max.response.bytes` (Sluice's own): encoded response bytes waiting for their
    /// clients across the broker, beyond which connections with unsent responses stop reading.
    pub queued_max_response_bytes: usize,
    /// `queued.max.response.bytes.per.connection` (Sluice's own): the same for one connection.
    pub queued_max_response_bytes_per_connection: usize,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `auto.create.topics.max.per.request` (Sluice's own): the most unknown topics one
    /// Metadata request may queue for auto-creation; the rest get UNKNOWN_TOPIC_OR_PARTITION.
    pub auto_create_topics_max_per_request: usize,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`; a single node only accepts 1.
    pub default_replication_factor: i16,
    /// `fetch.max.bytes`: cap on the bytes one Fetch response carries.
    pub fetch_max_bytes: usize,
    /// `log.flush.offset.checkpoint.interval.ms`: how often every log is flushed and the
    /// recovery points checkpointed.
    pub checkpoint_interval_ms: u64,
    /// `log.flush.scope` (Sluice's own): `file` (the default) makes acks=all appends durable
    /// with a sync of each partition's files, `filesystem` with one sync of the data
    /// directory's file system for every partition waiting.
    pub flush_scope: sluice_partition::SyncScope,
    /// Shutdown waits this long for in-flight requests before closing connections.
    pub shutdown_timeout_ms: u64,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub retention_check_interval_ms: u64,
    /// `log.cleaner.enable`: whether compacted topics are cleaned.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between cleaner passes over all logs.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size` and `log.cleaner.io.max.bytes.per.second`.
    pub cleaner: CleanerConfig,
    /// Topic config defaults (`log.segment.bytes`, `message.max.bytes`, …).
    pub log: LogConfig,
    /// The group coordinator's limits and timers (`group.*`, `offsets.*`).
    pub groups: CoordinatorConfig,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` (small segments
    /// let the cleaner compact it sooner).
    pub offsets_topic_segment_bytes: u64,
    /// The transaction coordinator's limits and timers (`transaction.*`,
    /// `transactional.id.expiration.ms`).
    pub txn: TxnConfig,
    /// `transaction.state.log.segment.bytes`: segment size of `__transaction_state`.
    pub txn_topic_segment_bytes: u64,
    /// `producer.id.expiration.ms`: a partition forgets an idempotent producer idle this long.
    pub producer_id_expiration_ms: i64,
    /// `admin.listen` (Sluice's own; `serve --admin-listen`): the admin HTTP listener for
    /// metrics, the JSON API and the console. `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// `metrics.enabled` (Sluice's own): record metrics. Off, `/metrics` answers 404 and the
    /// request path does no metric work (the console's throughput figures stay at zero).
    pub metrics_enabled: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listen: "127.0.0.1:9092".parse().expect("valid address"),
            advertised: None,
            data_dir: PathBuf::from("./sluice-data"),
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            queued_max_requests_per_connection: 500,
            queued_max_request_bytes: 256 << 20,
            queued_max_response_bytes: 256 << 20,
            queued_max_response_bytes_per_connection: 16 << 20,
            auto_create_topics_enable: true,
            auto_create_topics_max_per_request: 1_000,
            num_partitions: 1,
            default_replication_factor: 1,
            fetch_max_bytes: 55 * 1024 * 1024,
            checkpoint_interval_ms: 60_000,
            flush_scope: sluice_partition::SyncScope::File,
            shutdown_timeout_ms: 10_000,
            retention_check_interval_ms: 300_000,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner: CleanerConfig::default(),
            log: LogConfig::default(),
            groups: CoordinatorConfig::default(),
            offsets_topic_segment_bytes: 100 << 20,
            txn: TxnConfig::default(),
            txn_topic_segment_bytes: 100 << 20,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            admin_listen: Some("127.0.0.1:9644".parse().expect("valid address")),
            metrics_enabled: true,
        }
    }
}

/// How a broker config key is typed, for DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Broker config names Sluice understands, with their types and one-line documentation.
pub const BROKER_CONFIGS: &[(&str, ConfigType, &str)] = &[
    ("node.id", ConfigType::Int, "The id of this broker."),
    (
        "listeners",
        ConfigType::List,
        "The address the Kafka listener binds, HOST:PORT.",
    ),
    (
        "advertised.listeners",
        ConfigType::List,
        "The address clients are told to connect to.",
    ),
    ("log.dirs", ConfigType::List, "The data directory."),
    (
        "admin.listen",
        ConfigType::String,
        "Sluice's own: the admin HTTP listener (metrics, JSON API, console), HOST:PORT, or off.",
    ),
    (
        "metrics.enabled",
        ConfigType::Boolean,
        "Sluice's own: record metrics; off, /metrics answers 404.",
    ),
    (
        "socket.request.max.bytes",
        ConfigType::Int,
        "The largest request accepted.",
    ),
    (
        "max.connections",
        ConfigType::Int,
        "The most client connections at once.",
    ),
    (
        "queued.max.requests.per.connection",
        ConfigType::Int,
        "Requests read ahead of their responses on one connection.",
    ),
    (
        "queued.max.request.bytes",
        ConfigType::Long,
        "Request bytes all connections may hold before large requests wait (-1: no limit).",
    ),
    (
        "queued.max.response.bytes",
        ConfigType::Long,
        "Unsent response bytes across the broker before connections holding some stop reading (Sluice's own).",
    ),
    (
        "queued.max.response.bytes.per.connection",
        ConfigType::Long,
        "Unsent response bytes one connection may hold before it stops reading (Sluice's own).",
    ),
    (
        "auto.create.topics.enable",
        ConfigType::Boolean,
        "Create unknown topics on metadata requests.",
    ),
    (
        "auto.create.topics.max.per.request",
        ConfigType::Int,
        "The most unknown topics one metadata request may queue for creation (Sluice's own).",
    ),
    (
        "num.partitions",
        ConfigType::Int,
        "Default partition count of new topics.",
    ),
    (
        "default.replication.factor",
        ConfigType::Int,
        "Default replication factor (1 on one node).",
    ),
    (
        "fetch.max.bytes",
        ConfigType::Int,
        "The most bytes one fetch response carries.",
    ),
    (
        "log.flush.offset.checkpoint.interval.ms",
        ConfigType::Int,
        "How often logs are flushed and recovery points checkpointed.",
    ),
    (
        "log.flush.scope",
        ConfigType::String,
        "file (default): each waiting partition's files are fdatasynced; filesystem: one \
         syncfs of the data directory's file system makes every waiting partition durable \
         (Linux 5.8+; elsewhere as file).",
    ),
    (
        "log.segment.bytes",
        ConfigType::Int,
        "Default segment.bytes of topics.",
    ),
    (
        "log.roll.ms",
        ConfigType::Long,
        "Default segment.ms of topics.",
    ),
    (
        "message.max.bytes",
        ConfigType::Int,
        "Default max.message.bytes of topics.",
    ),
    (
        "log.message.timestamp.type",
        ConfigType::String,
        "Default message.timestamp.type of topics.",
    ),
    (
        "log.index.interval.bytes",
        ConfigType::Int,
        "Default index.interval.bytes of topics.",
    ),
    (
        "log.index.size.max.bytes",
        ConfigType::Int,
        "Default segment.index.bytes of topics.",
    ),
    (
        "compression.type",
        ConfigType::String,
        "Default compression.type of topics: producer, uncompressed, gzip, snappy, lz4 or zstd.",
    ),
    (
        "log.cleanup.policy",
        ConfigType::List,
        "Default cleanup.policy of topics.",
    ),
    (
        "log.retention.ms",
        ConfigType::Long,
        "Default retention.ms of topics.",
    ),
    (
        "log.retention.bytes",
        ConfigType::Long,
        "Default retention.bytes of topics.",
    ),
    (
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        "Default delete.retention.ms of topics.",
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double,
        "Default min.cleanable.dirty.ratio of topics.",
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        ConfigType::Long,
        "Default min.compaction.lag.ms of topics.",
    ),
    (
        "log.cleaner.max.compaction.lag.ms",
        ConfigType::Long,
        "Default max.compaction.lag.ms of topics.",
    ),
    (
        "log.cleaner.enable",
        ConfigType::Boolean,
        "Whether compacted topics are cleaned.",
    ),
    (
        "log.cleaner.backoff.ms",
        ConfigType::Long,
        "The pause between cleaner passes over all logs.",
    ),
    (
        "log.cleaner.dedupe.buffer.size",
        ConfigType::Long,
        "Memory for the cleaner's offset map in one pass.",
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        ConfigType::Double,
        "The read plus write rate the cleaner keeps to.",
    ),
    (
        "log.retention.check.interval.ms",
        ConfigType::Long,
        "How often segments past retention.ms or retention.bytes are deleted.",
    ),
    (
        "shutdown.timeout.ms",
        ConfigType::Long,
        "How long shutdown waits for in-flight requests.",
    ),
    (
        "offsets.topic.num.partitions",
        ConfigType::Int,
        "Partitions of __consumer_offsets (fixed once the topic exists).",
    ),
    (
        "offsets.topic.segment.bytes",
        ConfigType::Int,
        "Segment size of __consumer_offsets, set when it is created.",
    ),
    (
        "group.min.session.timeout.ms",
        ConfigType::Int,
        "The shortest session timeout a group member may ask for.",
    ),
    (
        "group.max.session.timeout.ms",
        ConfigType::Int,
        "The longest session timeout a group member may ask for.",
    ),
    (
        "group.initial.rebalance.delay.ms",
        ConfigType::Int,
        "How long the first rebalance of an empty group waits for more members.",
    ),
    (
        "group.max.size",
        ConfigType::Int,
        "The most members one group may have.",
    ),
    (
        "group.member.metadata.max.bytes",
        ConfigType::Int,
        "The most protocol metadata one member may send in a JoinGroup (Sluice's own).",
    ),
    (
        "group.member.protocols.max",
        ConfigType::Int,
        "The most protocols one member may offer in a JoinGroup (Sluice's own).",
    ),
    (
        "offset.metadata.max.bytes",
        ConfigType::Int,
        "The longest metadata string of a committed offset.",
    ),
    (
        "offsets.retention.minutes",
        ConfigType::Int,
        "How long offsets of an empty group are kept.",
    ),
    (
        "offsets.retention.check.interval.ms",
        ConfigType::Long,
        "How often expired offsets are removed.",
    ),
    (
        "transaction.state.log.num.partitions",
        ConfigType::Int,
        "Partitions of __transaction_state (fixed once the topic exists).",
    ),
    (
        "transaction.state.log.segment.bytes",
        ConfigType::Int,
        "Segment size of __transaction_state, set when it is created.",
    ),
    (
        "transaction.max.timeout.ms",
        ConfigType::Int,
        "The longest transaction timeout a producer may ask for.",
    ),
    (
        "transactional.id.expiration.ms",
        ConfigType::Int,
        "How long a transactional id without a transaction in progress is kept.",
    ),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        ConfigType::Int,
        "How often transactions past their timeout are aborted.",
    ),
    (
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        ConfigType::Int,
        "How often expired transactional ids are removed.",
    ),
    (
        "transaction.partitions.max",
        ConfigType::Int,
        "The most partitions one transaction may span (Sluice's own).",
    ),
    (
        "producer.id.expiration.ms",
        ConfigType::Int,
        "How long a partition remembers an idle idempotent producer.",
    ),
];

/// The topic config each `log.*` broker default feeds.
pub fn topic_config_for_broker_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "log.segment.bytes" => "segment.bytes",
        "log.roll.ms" => "segment.ms",
        "message.max.bytes" => "max.message.bytes",
        "log.message.timestamp.type" => "message.timestamp.type",
        "log.index.interval.bytes" => "index.interval.bytes",
        "log.index.size.max.bytes" => "segment.index.bytes",
        "log.cleanup.policy" => "cleanup.policy",
        "log.retention.ms" => "retention.ms",
        "log.retention.bytes" => "retention.bytes",
        "log.cleaner.delete.retention.ms" => "delete.retention.ms",
        "log.cleaner.min.cleanable.ratio" => "min.cleanable.dirty.ratio",
        "log.cleaner.min.compaction.lag.ms" => "min.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms" => "max.compaction.lag.ms",
        "compression.type" => "compression.type",
        _ => return None,
    })
}

/// A double as Java's `Double.toString` prints it, which is how Kafka reports double configs:
/// plain with at least one decimal between 10^-3 and 10^7, scientific (`1.0E8`) outside.
pub fn java_double(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() || value == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let plain = format!("{value}");
        return if plain.contains('.') || !value.is_finite() {
            plain
        } else {
            format!("{plain}.0")
        };
    }
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("scientific notation");
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exponent}")
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{key}={value}: not a valid value"))
}

fn positive(key: &str, value: &str) -> Result<usize, String> {
    let v: usize = parse(key, value)?;
    if v == 0 {
        return Err(format!("{key} must be positive"));
    }
    Ok(v)
}

fn positive_i32(key: &str, value: &str) -> Result<i32, String> {
    let v: i32 = parse(key, value)?;
    if v <= 0 {
        return Err(format!("{key} must be positive"));
    }
    Ok(v)
}

fn host_port(key: &str, value: &str) -> Result<(String, u16), String> {
    // Accept Kafka's "PLAINTEXT://host:port" form as well as "host:port".
    let plain = value.rsplit("://").next().unwrap_or(value);
    let (host, port) = plain
        .rsplit_once(':')
        .ok_or_else(|| format!("{key}={value}: expected HOST:PORT"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), parse(key, port)?))
}

impl BrokerConfig {
    /// Sets one config by its Kafka name. Unknown names are errors, so typos do not pass
    /// silently.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(topic_key) = topic_config_for_broker_key(key) {
            return self
                .log
                .set(topic_key, value)
                .map_err(|e| format!("{key}: {e}"));
        }
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "listeners" => {
                let (host, port) = host_port(key, value)?;
                let addr = format!("{host}:{port}");
                self.listen = addr
                    .parse()
                    .map_err(|_| format!("{key}={value}: expected an IP address and port"))?;
            }
            "advertised.listeners" => self.advertised = Some(host_port(key, value)?),
            "admin.listen" => {
                self.admin_listen = match value {
                    "" | "off" | "none" => None,
                    // A host name (`localhost:9644`) is resolved once, here.
                    _ => Some(
                        std::net::ToSocketAddrs::to_socket_addrs(value)
                            .ok()
                            .and_then(|mut addrs| addrs.next())
                            .ok_or_else(|| format!("{key}={value}: expected HOST:PORT, or off"))?,
                    ),
                }
            }
            "metrics.enabled" => self.metrics_enabled = parse(key, value)?,
            "log.dirs" | "log.dir" => self.data_dir = PathBuf::from(value),
            "socket.request.max.bytes" => {
                let v = positive(key, value)?;
                if v > i32::MAX as usize {
                    return Err(format!("{key} must fit in an int32"));
                }
                self.socket_request_max_bytes = v;
            }
            "max.connections" => self.max_connections = positive(key, value)?,
            "queued.max.requests.per.connection" => {
                self.queued_max_requests_per_connection = positive(key, value)?
            }
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = if value.trim() == "-1" {
                    usize::MAX
                } else {
                    positive(key, value)?
                }
            }
            "queued.max.response.bytes" => self.queued_max_response_bytes = positive(key, value)?,
            "queued.max.response.bytes.per.connection" => {
                self.queued_max_response_bytes_per_connection = positive(key, value)?
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse(key, value)?,
            "auto.create.topics.max.per.request" => {
                self.auto_create_topics_max_per_request = positive(key, value)?
            }
            "num.partitions" => {
                let v: i32 = parse(key, value)?;
                if v < 1 {
                    return Err(format!("{key} must be at least 1"));
                }
                self.num_partitions = v;
            }
            "default.replication.factor" => {
                let v: i16 = parse(key, value)?;
                if v != 1 {
                    return Err(format!("{key}: a single node supports only 1"));
                }
                self.default_replication_factor = v;
            }
            "fetch.max.bytes" => self.fetch_max_bytes = positive(key, value)?,
            "log.flush.scope" => {
                self.flush_scope = match value {
                    "filesystem" => sluice_partition::SyncScope::FileSystem,
                    "file" => sluice_partition::SyncScope::File,
                    _ => return Err(format!("{key} must be filesystem or file, not {value:?}")),
                }
            }
            "log.flush.offset.checkpoint.interval.ms" => {
                self.checkpoint_interval_ms = positive(key, value)? as u64
            }
            "shutdown.timeout.ms" => self.shutdown_timeout_ms = parse(key, value)?,
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = positive(key, value)? as u64
            }
            "log.cleaner.enable" => self.cleaner_enable = parse(key, value)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = positive(key, value)? as u64,
            "log.cleaner.dedupe.buffer.size" => {
                self.cleaner.dedupe_buffer_bytes = positive(key, value)?
            }
            "log.cleaner.io.max.bytes.per.second" => {
                let v: f64 = parse(key, value)?;
                if v.is_nan() || v <= 0.0 {
                    return Err(format!("{key} must be positive"));
                }
                self.cleaner.io_max_bytes_per_second = v;
            }
            "offsets.topic.num.partitions" => {
                let v: i32 = parse(key, value)?;
                if !(1..=10_000).contains(&v) {
                    return Err(format!("{key} must be within 1..=10000"));
                }
                self.groups.offsets_topic_partitions = v;
            }
            "offsets.topic.segment.bytes" => {
                self.offsets_topic_segment_bytes = positive_i32(key, value)? as u64
            }
            "transaction.state.log.num.partitions" => {
                let v: i32 = parse(key, value)?;
                if !(1..=10_000).contains(&v) {
                    return Err(format!("{key} must be within 1..=10000"));
                }
                self.txn.state_partitions = v;
            }
            "transaction.state.log.segment.bytes" => {
                self.txn_topic_segment_bytes = positive_i32(key, value)? as u64
            }
            "transaction.max.timeout.ms" => self.txn.max_timeout_ms = positive_i32(key, value)?,
            "transactional.id.expiration.ms" => {
                self.txn.id_expiration_ms = i64::from(positive_i32(key, value)?)
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn.abort_check_interval_ms = i64::from(positive_i32(key, value)?)
            }
            "transaction.remove.expired.transaction.cleanup.interval.ms" => {
                self.txn.expire_check_interval_ms = i64::from(positive_i32(key, value)?)
            }
            "transaction.partitions.max" => {
                self.txn.transaction_partitions_max = positive_i32(key, value)? as usize
            }
            "producer.id.expiration.ms" => {
                self.producer_id_expiration_ms = i64::from(positive_i32(key, value)?)
            }
            "group.min.session.timeout.ms" => {
                self.groups.session_timeout_min_ms = positive_i32(key, value)?
            }
            "group.max.session.timeout.ms" => {
                self.groups.session_timeout_max_ms = positive_i32(key, value)?
            }
            "group.initial.rebalance.delay.ms" => {
                let v: i32 = parse(key, value)?;
                if v < 0 {
                    return Err(format!("{key} must not be negative"));
                }
                self.groups.initial_rebalance_delay_ms = v;
            }
            "group.max.size" => self.groups.group_max_size = positive_i32(key, value)? as usize,
            "group.member.metadata.max.bytes" => {
                self.groups.member_metadata_max_bytes = positive_i32(key, value)? as usize
            }
            "offset.metadata.max.bytes" => {
                self.groups.offset_metadata_max_bytes = positive_i32(key, value)? as usize
            }
            "group.member.protocols.max" => {
                self.groups.member_protocols_max = positive_i32(key, value)? as usize
            }
            "offsets.retention.minutes" => {
                self.groups.offsets_retention_ms = i64::from(positive_i32(key, value)?) * 60_000
            }
            "offsets.retention.check.interval.ms" => {
                self.groups.offsets_retention_check_interval_ms = positive(key, value)? as i64
            }
            _ => return Err(format!("unknown config {key}")),
        }
        Ok(())
    }

    /// The current value of a broker config, as Kafka prints it.
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(topic_key) = topic_config_for_broker_key(key) {
            return self.log.get(topic_key);
        }
        Some(match key {
            "node.id" => self.node_id.to_string(),
            "listeners" => format!("PLAINTEXT://{}", self.listen),
            "advertised.listeners" => match &self.advertised {
                Some((h, p)) => format!("PLAINTEXT://{h}:{p}"),
                None => format!("PLAINTEXT://{}", self.listen),
            },
            "log.dirs" => self.data_dir.display().to_string(),
            "admin.listen" => match self.admin_listen {
                Some(addr) => addr.to_string(),
                None => "off".to_string(),
            },
            "metrics.enabled" => self.metrics_enabled.to_string(),
            "socket.request.max.bytes" => self.socket_request_max_bytes.to_string(),
            "max.connections" => self.max_connections.to_string(),
            "queued.max.requests.per.connection" => {
                self.queued_max_requests_per_connection.to_string()
            }
            "queued.max.request.bytes" => match self.queued_max_request_bytes {
                usize::MAX => "-1".to_string(),
                n => n.to_string(),
            },
            "queued.max.response.bytes" => self.queued_max_response_bytes.to_string(),
            "queued.max.response.bytes.per.connection" => {
                self.queued_max_response_bytes_per_connection.to_string()
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable.to_string(),
            "auto.create.topics.max.per.request" => {
                self.auto_create_topics_max_per_request.to_string()
            }
            "num.partitions" => self.num_partitions.to_string(),
            "default.replication.factor" => self.default_replication_factor.to_string(),
            "fetch.max.bytes" => self.fetch_max_bytes.to_string(),
            "log.flush.offset.checkpoint.interval.ms" => self.checkpoint_interval_ms.to_string(),
            "log.flush.scope" => match self.flush_scope {
                sluice_partition::SyncScope::FileSystem => "filesystem",
                sluice_partition::SyncScope::File => "file",
            }
            .to_string(),
            "shutdown.timeout.ms" => self.shutdown_timeout_ms.to_string(),
            "log.retention.check.interval.ms" => self.retention_check_interval_ms.to_string(),
            "log.cleaner.enable" => self.cleaner_enable.to_string(),
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms.to_string(),
            "log.cleaner.dedupe.buffer.size" => self.cleaner.dedupe_buffer_bytes.to_string(),
            "log.cleaner.io.max.bytes.per.second" => {
                java_double(self.cleaner.io_max_bytes_per_second)
            }
            "offsets.topic.num.partitions" => self.groups.offsets_topic_partitions.to_string(),
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes.to_string(),
            "transaction.state.log.num.partitions" => self.txn.state_partitions.to_string(),
            "transaction.state.log.segment.bytes" => self.txn_topic_segment_bytes.to_string(),
            "transaction.max.timeout.ms" => self.txn.max_timeout_ms.to_string(),
            "transactional.id.expiration.ms" => self.txn.id_expiration_ms.to_string(),
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn.abort_check_interval_ms.to_string()
            }
            "transaction.remove.expired.transaction.cleanup.interval.ms" => {
                self.txn.expire_check_interval_ms.to_string()
            }
            "transaction.partitions.max" => self.txn.transaction_partitions_max.to_string(),
            "producer.id.expiration.ms" => self.producer_id_expiration_ms.to_string(),
            "group.min.session.timeout.ms" => self.groups.session_timeout_min_ms.to_string(),
            "group.max.session.timeout.ms" => self.groups.session_timeout_max_ms.to_string(),
            "group.initial.rebalance.delay.ms" => {
                self.groups.initial_rebalance_delay_ms.to_string()
            }
            "group.max.size" => self.groups.group_max_size.to_string(),
            "group.member.metadata.max.bytes" => self.groups.member_metadata_max_bytes.to_string(),
            "offset.metadata.max.bytes" => self.groups.offset_metadata_max_bytes.to_string(),
            "group.member.protocols.max" => self.groups.member_protocols_max.to_string(),
            "offsets.retention.minutes" => (self.groups.offsets_retention_ms / 60_000).to_string(),
            "offsets.retention.check.interval.ms" => {
                self.groups.offsets_retention_check_interval_ms.to_string()
            }
            _ => return None,
        })
    }

    /// Whether `key` still has its embedded default value.
    pub fn is_default(&self, key: &str) -> bool {
        Self::default().get(key) == self.get(key)
    }

    pub fn timestamp_policy(&self) -> TimestampPolicy {
        self.log.timestamp_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_can_be_read_and_set_to_its_own_value() {
        let config = BrokerConfig::default();
        for (key, _, _) in BROKER_CONFIGS {
            let value = config
                .get(key)
                .unwrap_or_else(|| panic!("{key} has no value"));
            let mut copy = config.clone();
            copy.set(key, &value)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(copy.get(key), Some(value), "{key}");
            assert!(copy.is_default(key));
        }
    }

    #[test]
    fn doubles_print_as_java_prints_them() {
        assert_eq!(java_double(f64::MAX), "1.7976931348623157E308");
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(1048576.0), "1048576.0");
        assert_eq!(java_double(1e8), "1.0E8");
        assert_eq!(java_double(0.0001), "1.0E-4");
    }

    #[test]
    fn settings_change_values_and_bad_ones_are_refused() {
        let mut config = BrokerConfig::default();
        config.set("log.segment.bytes", "4096").unwrap();
        assert_eq!(config.log.segment_bytes, 4096);
        assert!(!config.is_default("log.segment.bytes"));
        config
            .set("listeners", "PLAINTEXT://127.0.0.1:19092")
            .unwrap();
        assert_eq!(config.listen.port(), 19092);
        assert!(config.set("num.partitions", "0").is_err());
        assert!(config.set("default.replication.factor", "3").is_err());
        assert!(config.set("no.such.key", "1").is_err());
        assert!(config.set("socket.request.max.bytes", "many").is_err());
    }
}
