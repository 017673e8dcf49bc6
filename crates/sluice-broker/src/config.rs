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
    /// `listeners`: the Kafka listener (the one not named in `controller.listener.names`).
    pub listen: SocketAddr,
    /// The Kafka listener's name in `listeners` (`PLAINTEXT` unless named otherwise).
    pub listener_name: String,
    /// Whether `listeners` names a Kafka listener (a dedicated controller's may not).
    pub has_kafka_listener: bool,
    /// `listeners` as given, kept to be classified again if `controller.listener.names`
    /// changes after it.
    pub listener_entries: Vec<(Option<String>, SocketAddr)>,
    /// `listeners`: the controller listener, the one named in `controller.listener.names`,
    /// where the metadata quorum and the controller are served. `None`: the address this node
    /// has in `controller.quorum.voters`, or none at all for a cluster of one.
    pub controller_listen: Option<SocketAddr>,
    /// `controller.listener.names`: the first is the controller listener's name.
    pub controller_listener_names: Vec<String>,
    /// `process.roles`: `broker`, `controller`, or both (the default).
    pub process_roles: ProcessRoles,
    /// `controller.quorum.voters`: `id@host:port` of every voter of the metadata quorum.
    /// Empty: this node is the only voter (a cluster of one).
    pub quorum_voters: Vec<Voter>,
    /// `controller.quorum.bootstrap.servers`: controller listeners (`HOST:PORT,...`) a
    /// broker-only node asks to find the quorum's leader, instead of naming the voters.
    pub quorum_bootstrap_servers: Vec<(String, u16)>,
    /// `controller.quorum.election.timeout.ms`: how long a voter waits without hearing from a
    /// leader before it stands for election (openraft waits between this and twice this).
    pub quorum_election_timeout_ms: u64,
    /// `metadata.log.snapshot.interval.entries` (Sluice's own; Kafka counts bytes): a
    /// snapshot of the metadata image is taken after this many entries, and the log before
    /// it removed.
    pub metadata_snapshot_interval_entries: u64,
    /// `broker.session.timeout.ms`: the controller fences a broker it has not heard from for
    /// this long.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the controller.
    pub broker_heartbeat_interval_ms: u64,
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
    /// `default.replication.factor`: replicas of auto-created topics and CreateTopics with -1.
    pub default_replication_factor: i16,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `auto.leader.rebalance.enable`: the controller gives leaderships back to preferred
    /// replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval_seconds: u64,

    /// `fetch.max.bytes`: cap on the bytes one Fetch response carries.
    pub fetch_max_bytes: usize,
    /// `log.flush.offset.checkpoint.interval.ms`: how often every log is flushed and the
    /// recovery points checkpointed.
    pub checkpoint_interval_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`: how often the high watermarks of
    /// replicated partitions are checkpointed (when one moved).
    pub high_watermark_checkpoint_interval_ms: u64,
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
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets` partitions, at
    /// most as many as there are brokers when it is created.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` (small segments
    /// let the cleaner compact it sooner).
    pub offsets_topic_segment_bytes: u64,
    /// The transaction coordinator's limits and timers (`transaction.*`,
    /// `transactional.id.expiration.ms`).
    pub txn: TxnConfig,
    /// `transaction.state.log.segment.bytes`: segment size of `__transaction_state`.
    pub txn_topic_segment_bytes: u64,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state`
    /// partitions, at most as many as there are brokers when it is created.
    pub txn_topic_replication_factor: i16,
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
            listener_name: "PLAINTEXT".to_string(),
            has_kafka_listener: true,
            listener_entries: Vec::new(),
            controller_listen: None,
            controller_listener_names: vec!["CONTROLLER".to_string()],
            process_roles: ProcessRoles {
                broker: true,
                controller: true,
            },
            quorum_voters: Vec::new(),
            quorum_bootstrap_servers: Vec::new(),
            quorum_election_timeout_ms: 1_000,
            metadata_snapshot_interval_entries: 1_000,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
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
            replica_lag_time_max_ms: 30_000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,

            fetch_max_bytes: 55 * 1024 * 1024,
            checkpoint_interval_ms: 60_000,
            high_watermark_checkpoint_interval_ms: 5_000,
            flush_scope: sluice_partition::SyncScope::File,
            shutdown_timeout_ms: 10_000,
            retention_check_interval_ms: 300_000,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner: CleanerConfig::default(),
            log: LogConfig::default(),
            groups: CoordinatorConfig::default(),
            offsets_topic_segment_bytes: 100 << 20,
            offsets_topic_replication_factor: 3,
            txn: TxnConfig::default(),
            txn_topic_segment_bytes: 100 << 20,
            txn_topic_replication_factor: 3,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            admin_listen: Some("127.0.0.1:9644".parse().expect("valid address")),
            metrics_enabled: true,
        }
    }
}

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

/// One voter of `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Voter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, address(&self.host, self.port))
    }
}

/// `HOST:PORT`, with an IPv6 host in brackets.
pub fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The most voters `controller.quorum.voters` may name.
pub const QUORUM_VOTERS_MAX: usize = 16;
/// The most listeners `listeners` may name.
pub const LISTENERS_MAX: usize = 16;

fn parse_voters(key: &str, value: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if voters.len() == QUORUM_VOTERS_MAX {
            return Err(format!("{key}: more than {QUORUM_VOTERS_MAX} voters"));
        }
        let (id, address) = part
            .split_once('@')
            .ok_or_else(|| format!("{key}={value}: expected ID@HOST:PORT,..."))?;
        let id: i32 = parse(key, id)?;
        if id < 0 {
            return Err(format!("{key}: voter ids are not negative"));
        }
        let (host, port) = host_port(key, address)?;
        if port == 0 {
            return Err(format!("{key}: voter {id} needs a port"));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!("{key}: voter {id} is listed twice"));
        }
        voters.push(Voter { id, host, port });
    }
    Ok(voters)
}

fn parse_roles(key: &str, value: &str) -> Result<ProcessRoles, String> {
    let mut roles = ProcessRoles {
        broker: false,
        controller: false,
    };
    for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            _ => return Err(format!("{key}: unknown role {role:?} (broker, controller)")),
        }
    }
    if !roles.broker && !roles.controller {
        return Err(format!("{key}: name broker, controller or both"));
    }
    Ok(roles)
}

/// How a broker config key is typed, for DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Broker configs that change while the broker runs (IncrementalAlterConfigs or
/// AlterConfigs on a BROKER resource, as `kafka-reassign-partitions.sh --throttle` and
/// `kafka-configs.sh --entity-type brokers` set them): stored in the metadata log, for one
/// broker (resource name its id) or for every broker (resource name empty); the
/// broker's own value wins. Their embedded default is no limit (`Long.MAX_VALUE`).
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Broker config names Sluice understands, with their types and one-line documentation.
pub const BROKER_CONFIGS: &[(&str, ConfigType, &str)] = &[
    (
        "leader.replication.throttled.rate",
        ConfigType::Long,
        "Bytes per second a leader sends to the replicas its topics list in \
         leader.replication.throttled.replicas while they are out of sync (dynamic).",
    ),
    (
        "follower.replication.throttled.rate",
        ConfigType::Long,
        "Bytes per second a follower fetches for the replicas its topics list in \
         follower.replication.throttled.replicas while they are out of sync (dynamic).",
    ),
    (
        "replica.alter.log.dirs.io.max.bytes.per.second",
        ConfigType::Long,
        "Accepted for Kafka's tools; Sluice has one log directory, so nothing moves between \
         directories (dynamic).",
    ),
    ("node.id", ConfigType::Int, "The id of this broker."),
    (
        "listeners",
        ConfigType::List,
        "The address the Kafka listener binds, HOST:PORT.",
    ),
    (
        "process.roles",
        ConfigType::List,
        "The roles of this node: broker, controller, or both.",
    ),
    (
        "controller.quorum.voters",
        ConfigType::List,
        "The metadata quorum's voters, ID@HOST:PORT,...; empty: this node alone.",
    ),
    (
        "controller.quorum.bootstrap.servers",
        ConfigType::List,
        "Controller listeners, HOST:PORT,..., a broker-only node asks to find the controllers.",
    ),
    (
        "controller.listener.names",
        ConfigType::List,
        "The name(s) in listeners of the controller listener.",
    ),
    (
        "controller.quorum.election.timeout.ms",
        ConfigType::Int,
        "How long a voter waits for a leader before it stands for election.",
    ),
    (
        "metadata.log.snapshot.interval.entries",
        ConfigType::Long,
        "Sluice's own: metadata log entries between snapshots of the metadata image.",
    ),
    (
        "broker.session.timeout.ms",
        ConfigType::Int,
        "A broker not heard from for this long is fenced by the controller.",
    ),
    (
        "broker.heartbeat.interval.ms",
        ConfigType::Int,
        "How often a broker heartbeats to the controller.",
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
        "Replicas of auto-created topics and of CreateTopics asking for -1.",
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
        "replica.high.watermark.checkpoint.interval.ms",
        ConfigType::Long,
        "How often the high watermarks of replicated partitions are checkpointed.",
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
        "min.insync.replicas",
        ConfigType::Int,
        "Default min.insync.replicas of topics: an acks=all produce needs this many \
         in-sync replicas.",
    ),
    (
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        "Default unclean.leader.election.enable of topics (false: only in-sync replicas \
         are elected).",
    ),
    (
        "replica.lag.time.max.ms",
        ConfigType::Long,
        "A follower not caught up for this long leaves the ISR.",
    ),
    (
        "auto.leader.rebalance.enable",
        ConfigType::Boolean,
        "The controller gives leaderships back to preferred replicas.",
    ),
    (
        "leader.imbalance.check.interval.seconds",
        ConfigType::Long,
        "How often the controller checks for leaderships away from preferred replicas.",
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
        "offsets.topic.replication.factor",
        ConfigType::Short,
        "Replicas of __consumer_offsets partitions (at most the brokers there are when it is \
         created).",
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
        "transaction.state.log.replication.factor",
        ConfigType::Short,
        "Replicas of __transaction_state partitions (at most the brokers there are when it is \
         created).",
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
        "min.insync.replicas" => "min.insync.replicas",
        "unclean.leader.election.enable" => "unclean.leader.election.enable",
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

/// One entry of `listeners`: its name, if it has one, and its address.
fn listener(key: &str, value: &str) -> Result<(Option<String>, SocketAddr), String> {
    let name = value
        .split_once("://")
        .map(|(name, _)| name.trim().to_ascii_uppercase());
    let (host, port) = host_port(key, value)?;
    let host = if host.is_empty() { "0.0.0.0" } else { &host };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{key}={value}: expected an IP address and port"))?;
    Ok((name, addr))
}

impl BrokerConfig {
    /// Sets one config by its Kafka name. Unknown names are errors, so typos do not pass
    /// silently.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if DYNAMIC_BROKER_CONFIGS.contains(&key) {
            return Err(format!(
                "{key} is set while the broker runs (kafka-configs.sh --entity-type brokers, \
                 or IncrementalAlterConfigs), not at start-up"
            ));
        }
        if let Some(topic_key) = topic_config_for_broker_key(key) {
            return self
                .log
                .set(topic_key, value)
                .map_err(|e| format!("{key}: {e}"));
        }
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "listeners" => self.set_listeners(value)?,
            "process.roles" => self.process_roles = parse_roles(key, value)?,
            "controller.quorum.voters" => self.quorum_voters = parse_voters(key, value)?,
            "controller.quorum.bootstrap.servers" => {
                let servers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| host_port(key, p))
                    .collect::<Result<Vec<_>, _>>()?;
                if servers.len() > QUORUM_VOTERS_MAX {
                    return Err(format!("{key}: more than {QUORUM_VOTERS_MAX} servers"));
                }
                if servers
                    .iter()
                    .any(|(host, port)| host.is_empty() || *port == 0)
                {
                    return Err(format!("{key}={value}: expected HOST:PORT,..."));
                }
                self.quorum_bootstrap_servers = servers;
            }
            "controller.listener.names" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() || names.len() > LISTENERS_MAX {
                    return Err(format!("{key}: name 1 to {LISTENERS_MAX} listeners"));
                }
                self.controller_listener_names = names;
                if !self.listener_entries.is_empty() {
                    self.classify_listeners(self.listener_entries.clone())?;
                }
            }
            "controller.quorum.election.timeout.ms" => {
                self.quorum_election_timeout_ms = positive(key, value)? as u64
            }
            "metadata.log.snapshot.interval.entries" => {
                self.metadata_snapshot_interval_entries = positive(key, value)? as u64
            }
            "broker.session.timeout.ms" => {
                self.broker_session_timeout_ms = positive_i32(key, value)? as u64
            }
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = positive_i32(key, value)? as u64
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
                if v < 1 {
                    return Err(format!("{key} must be at least 1"));
                }
                self.default_replication_factor = v;
            }
            "fetch.max.bytes" => self.fetch_max_bytes = positive(key, value)?,
            "replica.lag.time.max.ms" => {
                self.replica_lag_time_max_ms = positive(key, value)? as u64
            }
            "auto.leader.rebalance.enable" => {
                self.auto_leader_rebalance_enable = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("{key}={value}: expected true or false")),
                }
            }
            "leader.imbalance.check.interval.seconds" => {
                self.leader_imbalance_check_interval_seconds = positive(key, value)? as u64
            }

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
            "replica.high.watermark.checkpoint.interval.ms" => {
                self.high_watermark_checkpoint_interval_ms = positive(key, value)? as u64
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
            "offsets.topic.replication.factor" => {
                let v: i16 = parse(key, value)?;
                if v < 1 {
                    return Err(format!("{key} must be at least 1"));
                }
                self.offsets_topic_replication_factor = v;
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
            "transaction.state.log.replication.factor" => {
                let v: i16 = parse(key, value)?;
                if v < 1 {
                    return Err(format!("{key} must be at least 1"));
                }
                self.txn_topic_replication_factor = v;
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
        if DYNAMIC_BROKER_CONFIGS.contains(&key) {
            // Set only dynamically: the embedded default, no limit.
            return Some(i64::MAX.to_string());
        }
        Some(match key {
            "node.id" => self.node_id.to_string(),
            "listeners" => {
                let mut parts = Vec::new();
                if self.has_kafka_listener {
                    parts.push(format!("{}://{}", self.listener_name, self.listen));
                }
                if let Some(addr) = self.controller_listen {
                    parts.push(format!("{}://{addr}", self.controller_listener_names[0]));
                }
                parts.join(",")
            }
            "advertised.listeners" => match &self.advertised {
                Some((h, p)) => format!("{}://{h}:{p}", self.listener_name),
                None => format!("{}://{}", self.listener_name, self.listen),
            },
            "process.roles" => match (self.process_roles.broker, self.process_roles.controller) {
                (true, true) => "broker,controller",
                (true, false) => "broker",
                _ => "controller",
            }
            .to_string(),
            "controller.quorum.voters" => self
                .quorum_voters
                .iter()
                .map(Voter::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "controller.listener.names" => self.controller_listener_names.join(","),
            "controller.quorum.bootstrap.servers" => self
                .quorum_bootstrap_servers
                .iter()
                .map(|(h, p)| address(h, *p))
                .collect::<Vec<_>>()
                .join(","),
            "controller.quorum.election.timeout.ms" => self.quorum_election_timeout_ms.to_string(),
            "metadata.log.snapshot.interval.entries" => {
                self.metadata_snapshot_interval_entries.to_string()
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms.to_string(),
            "broker.heartbeat.interval.ms" => self.broker_heartbeat_interval_ms.to_string(),
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
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms.to_string(),
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance_enable.to_string(),
            "leader.imbalance.check.interval.seconds" => {
                self.leader_imbalance_check_interval_seconds.to_string()
            }

            "default.replication.factor" => self.default_replication_factor.to_string(),
            "fetch.max.bytes" => self.fetch_max_bytes.to_string(),
            "log.flush.offset.checkpoint.interval.ms" => self.checkpoint_interval_ms.to_string(),
            "replica.high.watermark.checkpoint.interval.ms" => {
                self.high_watermark_checkpoint_interval_ms.to_string()
            }
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
            "offsets.topic.replication.factor" => self.offsets_topic_replication_factor.to_string(),
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes.to_string(),
            "transaction.state.log.num.partitions" => self.txn.state_partitions.to_string(),
            "transaction.state.log.segment.bytes" => self.txn_topic_segment_bytes.to_string(),
            "transaction.state.log.replication.factor" => {
                self.txn_topic_replication_factor.to_string()
            }
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

    /// Sets the Kafka listener alone (`serve --listen`), keeping the controller listener.
    pub fn set_kafka_listener(&mut self, value: &str) -> Result<(), String> {
        let (name, addr) = listener("--listen", value)?;
        if let Some(name) = name {
            self.listener_name = name;
        }
        self.listen = addr;
        self.has_kafka_listener = true;
        Ok(())
    }

    /// `listeners`: a comma-separated list of `[NAME://]HOST:PORT`; the one named in
    /// `controller.listener.names` is the controller listener, and one other (unnamed, or
    /// named anything else) is the Kafka listener.
    fn set_listeners(&mut self, value: &str) -> Result<(), String> {
        let key = "listeners";
        let parts: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() > LISTENERS_MAX {
            return Err(format!("{key}: more than {LISTENERS_MAX} listeners"));
        }
        let entries = parts
            .into_iter()
            .map(|part| listener(key, part))
            .collect::<Result<Vec<_>, _>>()?;
        self.classify_listeners(entries)
    }

    /// Splits `listeners`' entries into the Kafka listener and the controller listener by
    /// `controller.listener.names`, again whenever either setting changes (Kafka reads both
    /// together, so their order in a file does not matter).
    fn classify_listeners(
        &mut self,
        entries: Vec<(Option<String>, SocketAddr)>,
    ) -> Result<(), String> {
        let mut kafka = None;
        let mut controller = None;
        for (name, addr) in &entries {
            let is_controller = name
                .as_ref()
                .is_some_and(|n| self.controller_listener_names.contains(n));
            let slot = if is_controller {
                &mut controller
            } else {
                &mut kafka
            };
            if slot.is_some() {
                return Err(
                    "listeners: one Kafka listener and at most one controller listener \
                     (several Kafka listeners come with security)"
                        .to_string(),
                );
            }
            *slot = Some((name.clone(), *addr));
        }
        self.has_kafka_listener = kafka.is_some();
        if let Some((name, addr)) = kafka {
            self.listener_name = name.unwrap_or_else(|| "PLAINTEXT".to_string());
            self.listen = addr;
        }
        self.controller_listen = controller.map(|(_, addr)| addr);
        self.listener_entries = entries;
        Ok(())
    }

    /// Checks what no single setting can: that the roles, the voters and the listeners fit
    /// together, as Kafka checks them at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id < 0 {
            return Err(format!("node.id {} is negative", self.node_id));
        }
        if self.process_roles.broker && !self.has_kafka_listener {
            return Err("process.roles has broker but listeners names no Kafka listener".into());
        }
        let voter = self.quorum_voters.iter().find(|v| v.id == self.node_id);
        if self.process_roles.controller {
            if self.quorum_voters.is_empty() && !self.quorum_bootstrap_servers.is_empty() {
                return Err(
                    "a controller needs controller.quorum.voters: a quorum formed from \
                     controller.quorum.bootstrap.servers alone (KIP-853) is not supported yet"
                        .to_string(),
                );
            }
            if !self.quorum_voters.is_empty() && voter.is_none() {
                return Err(format!(
                    "node.id {} has the controller role but is not in controller.quorum.voters",
                    self.node_id
                ));
            }
        } else {
            if voter.is_some() {
                return Err(format!(
                    "node.id {} is in controller.quorum.voters but process.roles has no \
                     controller",
                    self.node_id
                ));
            }
            if self.quorum_voters.is_empty() && self.quorum_bootstrap_servers.is_empty() {
                return Err("process.roles=broker needs controller.quorum.voters or \
                     controller.quorum.bootstrap.servers to find the controllers"
                    .to_string());
            }
            if self.controller_listen.is_none() {
                return Err("process.roles=broker needs a controller listener too \
                     (listeners=...,CONTROLLER://HOST:PORT): the controllers send the metadata \
                     log to it"
                    .to_string());
            }
        }
        Ok(())
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
            if DYNAMIC_BROKER_CONFIGS.contains(key) {
                assert!(copy.set(key, &value).is_err(), "{key} is dynamic only");
                continue;
            }
            copy.set(key, &value)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(copy.get(key), Some(value), "{key}");
            assert!(copy.is_default(key));
        }
    }

    #[test]
    fn roles_voters_and_listeners_are_checked_together() {
        let mut config = BrokerConfig::default();
        config.validate().unwrap();
        config.node_id = 1;
        config
            .set("controller.quorum.voters", "2@127.0.0.1:9093")
            .unwrap();
        assert!(config.validate().unwrap_err().contains("not in"));
        config
            .set(
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9094",
            )
            .unwrap();
        config.validate().unwrap();
        config.set("process.roles", "broker").unwrap();
        assert!(config.validate().unwrap_err().contains("process.roles"));
        // A broker-only node: not a voter, and with a listener for the metadata log.
        config.node_id = 4;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("controller listener"));
        config
            .set(
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9095",
            )
            .unwrap();
        config.validate().unwrap();
        // A broker-only node may find the controllers through bootstrap servers instead.
        config.set("controller.quorum.voters", "").unwrap();
        assert!(config.validate().unwrap_err().contains("bootstrap"));
        config
            .set(
                "controller.quorum.bootstrap.servers",
                "127.0.0.1:9093, [::1]:9094",
            )
            .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.get("controller.quorum.bootstrap.servers").unwrap(),
            "127.0.0.1:9093,[::1]:9094"
        );
        assert!(config
            .set("controller.quorum.bootstrap.servers", "nohost")
            .is_err());
        // ...but a controller cannot form a quorum from them alone.
        config.set("process.roles", "broker,controller").unwrap();
        assert!(config.validate().unwrap_err().contains("KIP-853"));
        config
            .set("controller.quorum.bootstrap.servers", "")
            .unwrap();
        config
            .set(
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9094",
            )
            .unwrap();
        // A dedicated controller.
        config.node_id = 1;
        config.set("process.roles", "controller").unwrap();
        config.validate().unwrap();
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
        config
            .set(
                "listeners",
                "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            )
            .unwrap();
        assert_eq!(config.controller_listen.unwrap().port(), 19093);
        config.set_kafka_listener("127.0.0.1:29092").unwrap();
        assert_eq!(config.listen.port(), 29092);
        assert_eq!(config.controller_listen.unwrap().port(), 19093);
        assert!(config
            .set("listeners", "A://127.0.0.1:1,B://127.0.0.1:2")
            .is_err());
        // A controller listener alone: fine for a dedicated controller, not for a broker.
        config.set("listeners", "CONTROLLER://127.0.0.1:1").unwrap();
        assert!(!config.has_kafka_listener);
        assert!(config.validate().unwrap_err().contains("no Kafka listener"));
        config.set("process.roles", "controller").unwrap();
        config.validate().unwrap();
        config.set("process.roles", "broker,controller").unwrap();
        // listeners before controller.listener.names: classified again when the names come.
        config
            .set("listeners", "PLAINTEXT://127.0.0.1:2,CTRL://127.0.0.1:3")
            .unwrap_err();
        config.set("listeners", "CTRL://127.0.0.1:3").unwrap();
        config.set("controller.listener.names", "CTRL").unwrap();
        assert_eq!(config.controller_listen.unwrap().port(), 3);
        assert!(!config.has_kafka_listener);
        config
            .set("listeners", "PLAINTEXT://127.0.0.1:2,CTRL://127.0.0.1:3")
            .unwrap();
        assert_eq!(
            (
                config.listen.port(),
                config.controller_listen.unwrap().port()
            ),
            (2, 3)
        );
        config
            .set("controller.listener.names", "CONTROLLER")
            .unwrap_err();
        config
            .set("controller.quorum.voters", "1@127.0.0.1:9093,2@[::1]:9094")
            .unwrap();
        assert_eq!(config.quorum_voters[1].host, "::1");
        assert_eq!(
            config.get("controller.quorum.voters").unwrap(),
            "1@127.0.0.1:9093,2@[::1]:9094"
        );
        assert!(config
            .set("controller.quorum.voters", "1@h:1,1@h:2")
            .is_err());
        assert!(config.set("controller.quorum.voters", "x@h:1").is_err());
        assert!(config.set("controller.quorum.voters", "1@h").is_err());
        assert!(config.set("process.roles", "").is_err());
        assert!(config.set("process.roles", "broker,leader").is_err());
        assert!(config.set("num.partitions", "0").is_err());
        assert!(config.set("default.replication.factor", "0").is_err());
        assert!(config.set("no.such.key", "1").is_err());
        assert!(config.set("socket.request.max.bytes", "many").is_err());
    }
}
