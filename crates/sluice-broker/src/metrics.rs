//! Broker metrics, exposed in OpenMetrics text at `GET /metrics` on the admin listener.
//!
//! Counters and histograms live in [`Metrics`] and are bumped on the request path; handles
//! for every API key and phase are resolved once at start-up and per topic on first use, so
//! recording is an atomic add or a short histogram lock, never a label-set allocation (error
//! counts, which are rare, are looked up by label). Values that are
//! state rather than events (log sizes, offsets, group lag, memory) are read at scrape time
//! by [`encode`]. With `metrics.enabled=false` every recording method returns at once.
//!
//! Names and their Kafka JMX equivalents are listed in README.md ("Metrics").

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use sluice_partition::Durability;

use crate::BrokerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabels {
    group: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 50 µs doubling to ~26 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The counters of one API key.
#[derive(Debug, Clone)]
struct ApiHandles {
    name: String,
    requests: Counter,
    seconds: Histogram,
}

/// The phase histograms, resolved once.
#[derive(Debug, Clone)]
struct PhaseHandles {
    produce_queue: Histogram,
    produce_append: Histogram,
    produce_fsync: Histogram,
    produce_send: Histogram,
    fetch_queue: Histogram,
    fetch_read: Histogram,
    fetch_wait: Histogram,
    fetch_wakeup: Histogram,
    fetch_send: Histogram,
    replica_fetch_call: Histogram,
    replica_fetch_append: Histogram,
    replica_fetch_fsync: Histogram,
}

impl PhaseHandles {
    fn new(
        produce: &Histograms<PhaseLabels>,
        fetch: &Histograms<PhaseLabels>,
        replica_fetch: &Histograms<PhaseLabels>,
    ) -> Self {
        let get = |family: &Histograms<PhaseLabels>, phase| {
            family.get_or_create(&PhaseLabels { phase }).clone()
        };
        Self {
            produce_queue: get(produce, "queue"),
            produce_append: get(produce, "append"),
            produce_fsync: get(produce, "fsync"),
            produce_send: get(produce, "send"),
            fetch_queue: get(fetch, "queue"),
            fetch_read: get(fetch, "read"),
            fetch_wait: get(fetch, "wait"),
            fetch_wakeup: get(fetch, "wakeup"),
            fetch_send: get(fetch, "send"),
            replica_fetch_call: get(replica_fetch, "call"),
            replica_fetch_append: get(replica_fetch, "append"),
            replica_fetch_fsync: get(replica_fetch, "fsync"),
        }
    }
}

/// The counters of one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicHandles {
    bytes_in: Counter,
    messages_in: Counter,
    bytes_out: Counter,
    messages_out: Counter,
}

/// Cumulative per-topic traffic, for the console's live view.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicTraffic {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
}

/// Where one request's time went, measured by the connection pipeline from the moment its
/// frame has been read (the reader dispatches at once, so requests never wait before their
/// handler).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestTiming {
    pub api_key: i16,
    /// The finished response waiting behind earlier responses on its connection (answers go
    /// out in request order).
    pub queue: Duration,
    /// The handler's synchronous part: decoding, validation, and for Produce the append.
    pub local: Duration,
    /// The handler's future: for Produce the fsync wait, for Fetch reads and the long poll.
    pub remote: Duration,
    /// Writing the response to the socket.
    pub send: Duration,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    enabled: bool,
    started: Instant,
    apis: Vec<Option<ApiHandles>>,
    unknown_api: ApiHandles,
    requests: Family<ApiLabels, Counter>,
    request_seconds: Histograms<ApiLabels>,
    errors: Family<ErrorLabels, Counter>,
    produce_phase: Histograms<PhaseLabels>,
    fetch_phase: Histograms<PhaseLabels>,
    replica_fetch_phase: Histograms<PhaseLabels>,
    phases: PhaseHandles,
    fsync_seconds: Histogram,
    topics: RwLock<HashMap<String, TopicHandles>>,
    bytes_in: Family<TopicLabels, Counter>,
    messages_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    messages_out: Family<TopicLabels, Counter>,
    connections: Gauge,
    connections_accepted: Counter,
    connections_refused: Counter,
    cleaner_runs: Counter,
    cleaner_errors: Counter,
    isr_changes: Counter,
    cleaner_bytes_read: Counter,
    cleaner_bytes_written: Counter,
    cleaner_records_removed: Counter,
    cleaner_seconds: Histogram,
    retention_segments_deleted: Counter,
    retention_bytes_deleted: Counter,
    /// Records converted between the old message formats and batches, by direction.
    conversions: Family<DirectionLabels, Counter>,
    registry: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

impl Metrics {
    pub fn new(enabled: bool) -> Self {
        let requests = Family::<ApiLabels, Counter>::default();
        let request_seconds: Histograms<ApiLabels> =
            Family::new_with_constructor(latency_histogram);
        let handles = |name: String| ApiHandles {
            requests: requests
                .get_or_create(&ApiLabels { api: name.clone() })
                .clone(),
            seconds: request_seconds
                .get_or_create(&ApiLabels { api: name.clone() })
                .clone(),
            name,
        };
        let mut apis = Vec::new();
        for &(api, _, _) in sluice_protocol::SUPPORTED_APIS {
            let key = api as usize;
            if apis.len() <= key {
                apis.resize(key + 1, None);
            }
            apis[key] = Some(handles(format!("{api:?}")));
        }
        let unknown_api = handles("Unknown".to_string());
        let produce_phase: Histograms<PhaseLabels> =
            Family::new_with_constructor(latency_histogram);
        let fetch_phase: Histograms<PhaseLabels> = Family::new_with_constructor(latency_histogram);
        let replica_fetch_phase: Histograms<PhaseLabels> =
            Family::new_with_constructor(latency_histogram);
        let phases = PhaseHandles::new(&produce_phase, &fetch_phase, &replica_fetch_phase);
        let mut metrics = Self {
            enabled,
            started: Instant::now(),
            apis,
            unknown_api,
            requests,
            request_seconds,
            errors: Family::default(),
            produce_phase,
            fetch_phase,
            replica_fetch_phase,
            phases,
            fsync_seconds: latency_histogram(),
            topics: RwLock::new(HashMap::new()),
            bytes_in: Family::default(),
            messages_in: Family::default(),
            bytes_out: Family::default(),
            messages_out: Family::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            cleaner_runs: Counter::default(),
            cleaner_errors: Counter::default(),
            isr_changes: Counter::default(),
            cleaner_bytes_read: Counter::default(),
            cleaner_bytes_written: Counter::default(),
            cleaner_records_removed: Counter::default(),
            cleaner_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            retention_segments_deleted: Counter::default(),
            retention_bytes_deleted: Counter::default(),
            conversions: Family::default(),
            registry: Registry::with_prefix("sluice"),
        };
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests received, by API",
            self.requests.clone(),
        );
        r.register(
            "request_errors",
            "Requests refused or answered with an error code, by API and error",
            self.errors.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's frame being read to its response being written, by API",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register_with_unit(
            "produce_phase_duration",
            "Produce request time by phase: queue, append, fsync, send",
            Unit::Seconds,
            self.produce_phase.clone(),
        );
        r.register_with_unit(
            "fetch_phase_duration",
            "Fetch request time by phase: queue, read, wait (long poll), send; wakeup is the \
             part of a wait from the append that ended it to the fetch running again",
            Unit::Seconds,
            self.fetch_phase.clone(),
        );
        r.register_with_unit(
            "replica_fetch_phase_duration",
            "A follower's fetches from its leaders by phase: call (request sent to response \
             read, the leader's long poll included), append (the records fetched), fsync \
             (waiting for them to be durable, before the next fetch reports them)",
            Unit::Seconds,
            self.replica_fetch_phase.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Duration of each file or directory sync",
            Unit::Seconds,
            self.fsync_seconds.clone(),
        );
        r.register_with_unit(
            "topic_in",
            "Record bytes appended by producers, by topic",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        r.register(
            "topic_messages_in",
            "Records appended by producers, by topic",
            self.messages_in.clone(),
        );
        r.register_with_unit(
            "topic_out",
            "Record bytes sent to consumers, by topic",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
        r.register(
            "topic_messages_out",
            "Records sent to consumers (counted from batch headers), by topic",
            self.messages_out.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            self.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "Client connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed at once: max.connections reached",
            self.connections_refused.clone(),
        );
        r.register(
            "cleaner_runs",
            "Log cleanings that rewrote segments",
            self.cleaner_runs.clone(),
        );
        r.register(
            "cleaner_errors",
            "Log cleanings that failed",
            self.cleaner_errors.clone(),
        );
        r.register(
            "isr_changes",
            "ISR changes this broker asked the controller for as a leader, and got \
             (Kafka's IsrShrinksPerSec plus IsrExpandsPerSec)",
            self.isr_changes.clone(),
        );
        r.register_with_unit(
            "cleaner_read",
            "Bytes of segments the cleaner rewrote (before cleaning)",
            Unit::Bytes,
            self.cleaner_bytes_read.clone(),
        );
        r.register_with_unit(
            "cleaner_written",
            "Bytes of segments the cleaner wrote (after cleaning)",
            Unit::Bytes,
            self.cleaner_bytes_written.clone(),
        );
        r.register(
            "cleaner_records_removed",
            "Records the cleaner removed",
            self.cleaner_records_removed.clone(),
        );
        r.register_with_unit(
            "cleaner_duration",
            "Duration of each log cleaning",
            Unit::Seconds,
            self.cleaner_seconds.clone(),
        );
        r.register(
            "retention_segments_deleted",
            "Segments deleted by retention",
            self.retention_segments_deleted.clone(),
        );
        r.register_with_unit(
            "retention_deleted",
            "Bytes deleted by retention",
            Unit::Bytes,
            self.retention_bytes_deleted.clone(),
        );
        r.register(
            "message_conversions",
            "Records converted from (produce) or to (fetch) the old message formats",
            self.conversions.clone(),
        );
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn api(&self, key: i16) -> &ApiHandles {
        usize::try_from(key)
            .ok()
            .and_then(|k| self.apis.get(k))
            .and_then(Option::as_ref)
            .unwrap_or(&self.unknown_api)
    }

    /// A request was read off a connection.
    pub fn request(&self, api_key: i16) {
        if self.enabled {
            self.api(api_key).requests.inc();
        }
    }

    /// A request was refused or answered with an error; `error` is a Kafka error name.
    pub fn error(&self, api_key: i16, error: &str) {
        if self.enabled {
            let labels = ErrorLabels {
                api: self.api(api_key).name.clone(),
                error: error.to_string(),
            };
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Every non-zero code in `codes`, counted as errors of `api_key`.
    pub fn error_codes(&self, api_key: i16, codes: impl IntoIterator<Item = i16>) {
        if self.enabled {
            for code in codes.into_iter().filter(|&c| c != 0) {
                self.error(api_key, &sluice_protocol::error_name(code));
            }
        }
    }

    /// A response was written.
    pub fn responded(&self, t: &RequestTiming) {
        if !self.enabled {
            return;
        }
        let total = t.queue + t.local + t.remote + t.send;
        self.api(t.api_key).seconds.observe(total.as_secs_f64());
        const PRODUCE: i16 = kafka_protocol::messages::ApiKey::Produce as i16;
        const FETCH: i16 = kafka_protocol::messages::ApiKey::Fetch as i16;
        let p = &self.phases;
        // The waits in the handlers' futures (the produce fsync, the fetch's reads and long
        // poll) are recorded by the handlers, which know what they waited for.
        let phases: &[(&Histogram, Duration)] = match t.api_key {
            PRODUCE => &[
                (&p.produce_queue, t.queue),
                (&p.produce_append, t.local),
                (&p.produce_send, t.send),
            ],
            FETCH => &[(&p.fetch_queue, t.queue), (&p.fetch_send, t.send)],
            _ => &[],
        };
        for (histogram, d) in phases {
            histogram.observe(d.as_secs_f64());
        }
    }

    /// How long an acks=all produce waited for its fsync.
    pub fn produce_fsync(&self, waited: Duration) {
        if self.enabled {
            self.phases.produce_fsync.observe(waited.as_secs_f64());
        }
    }

    /// Time a fetch spent reading logs and waiting for data (its long poll).
    pub fn fetch_read_and_wait(&self, read: Duration, wait: Duration) {
        if self.enabled {
            self.phases.fetch_read.observe(read.as_secs_f64());
            self.phases.fetch_wait.observe(wait.as_secs_f64());
        }
    }

    /// One fetch of a follower from its leader: the round trip, the appends of what it
    /// brought, and the wait for them to be durable.
    pub fn replica_fetched(&self, call: Duration, append: Duration, fsync: Duration) {
        if self.enabled {
            self.phases.replica_fetch_call.observe(call.as_secs_f64());
            self.phases
                .replica_fetch_append
                .observe(append.as_secs_f64());
            self.phases.replica_fetch_fsync.observe(fsync.as_secs_f64());
        }
    }

    /// A parked fetch ran again `after` the append that woke it.
    pub fn fetch_woken(&self, after: Duration) {
        if self.enabled {
            self.phases.fetch_wakeup.observe(after.as_secs_f64());
        }
    }

    fn topic(&self, name: &str) -> TopicHandles {
        if let Some(h) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return h.clone();
        }
        // Created under the write lock that `topic_deleted` takes too, so the map never
        // holds handles whose series were removed.
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = topics.get(name) {
            return h.clone();
        }
        let labels = TopicLabels {
            topic: name.to_string(),
        };
        let handles = TopicHandles {
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            messages_in: self.messages_in.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
            messages_out: self.messages_out.get_or_create(&labels).clone(),
        };
        topics.insert(name.to_string(), handles.clone());
        handles
    }

    /// Records appended to `topic` by a producer.
    pub fn produced(&self, topic: &str, bytes: usize, messages: u64) {
        if self.enabled {
            let h = self.topic(topic);
            h.bytes_in.inc_by(bytes as u64);
            h.messages_in.inc_by(messages);
        }
    }

    /// Records of `topic` sent to a consumer.
    pub fn fetched(&self, topic: &str, bytes: usize, messages: u64) {
        if self.enabled && bytes > 0 {
            let h = self.topic(topic);
            h.bytes_out.inc_by(bytes as u64);
            h.messages_out.inc_by(messages);
        }
    }

    /// Forgets a deleted topic's series.
    pub fn topic_deleted(&self, topic: &str) {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.remove(topic);
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        for family in [
            &self.bytes_in,
            &self.messages_in,
            &self.bytes_out,
            &self.messages_out,
        ] {
            family.remove(&labels);
        }
    }

    /// Cumulative traffic of every topic seen since start.
    pub fn traffic(&self) -> HashMap<String, TopicTraffic> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, h)| {
                let t = TopicTraffic {
                    bytes_in: h.bytes_in.get(),
                    messages_in: h.messages_in.get(),
                    bytes_out: h.bytes_out.get(),
                    messages_out: h.messages_out.get(),
                };
                (name.clone(), t)
            })
            .collect()
    }

    /// A connection opened; the returned guard closes it in the gauge when dropped.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        if self.enabled {
            self.connections.inc();
            self.connections_accepted.inc();
        }
        ConnectionGuard(self.clone())
    }

    pub fn connection_refused(&self) {
        if self.enabled {
            self.connections_refused.inc();
        }
    }

    pub fn open_connections(&self) -> i64 {
        self.connections.get()
    }

    pub fn cleaned(&self, stats: &sluice_partition::CleanStats) {
        if self.enabled {
            self.cleaner_runs.inc();
            self.cleaner_bytes_read.inc_by(stats.bytes_before);
            self.cleaner_bytes_written.inc_by(stats.bytes_after);
            self.cleaner_records_removed
                .inc_by(stats.records_before.saturating_sub(stats.records_after));
            self.cleaner_seconds.observe(stats.elapsed.as_secs_f64());
        }
    }

    pub fn isr_changed(&self) {
        if self.enabled {
            self.isr_changes.inc();
        }
    }

    pub fn cleaner_failed(&self) {
        if self.enabled {
            self.cleaner_errors.inc();
        }
    }

    /// Counts records converted for an old client: `direction` is "produce" or "fetch".
    pub fn converted(&self, direction: &'static str, records: usize) {
        if self.enabled {
            self.conversions
                .get_or_create(&DirectionLabels { direction })
                .inc_by(records as u64);
        }
    }

    pub fn retention_deleted(&self, segments: usize, bytes: u64) {
        if self.enabled {
            self.retention_segments_deleted.inc_by(segments as u64);
            self.retention_bytes_deleted.inc_by(bytes);
        }
    }

    fn observe_fsync(&self, elapsed: Duration) {
        if self.enabled {
            self.fsync_seconds.observe(elapsed.as_secs_f64());
        }
    }
}

/// Decrements the open-connection gauge when the connection ends.
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.enabled {
            self.0.connections.dec();
        }
    }
}

/// The production [`Durability`] with every sync timed into `sluice_fsync_duration_seconds`.
#[derive(Debug)]
pub(crate) struct TimedFsync(pub Arc<Metrics>);

impl Durability for TimedFsync {
    fn sync_file(&self, file: &File) -> std::io::Result<()> {
        let started = Instant::now();
        let result = sluice_partition::Fsync.sync_file(file);
        self.0.observe_fsync(started.elapsed());
        result
    }

    fn sync_dir(&self, dir: &File) -> std::io::Result<()> {
        let started = Instant::now();
        let result = sluice_partition::Fsync.sync_dir(dir);
        self.0.observe_fsync(started.elapsed());
        result
    }

    fn sync_filesystem(&self, dir: &File) -> std::io::Result<()> {
        let started = Instant::now();
        let result = sluice_partition::Fsync.sync_filesystem(dir);
        self.0.observe_fsync(started.elapsed());
        result
    }
}

/// The whole exposition: the registered metrics, then what is read from state at scrape
/// time (per-partition log figures, group lag, process memory).
pub(crate) fn encode(metrics: &Metrics, state: Option<&BrokerState>) -> String {
    let mut scraped = Registry::with_prefix("sluice");
    if let Some(state) = state {
        register_log_gauges(&mut scraped, state);
        register_group_gauges(&mut scraped, state);
        register_cluster_gauges(&mut scraped, state);
    }
    register_process_gauges(&mut scraped, metrics);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &metrics.registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &scraped);
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    topic: String,
    partition: String,
    follower: String,
}

fn partition_labels(topic: &str, partition: usize) -> PartitionLabels {
    PartitionLabels {
        topic: topic.to_string(),
        partition: partition.to_string(),
    }
}

fn register_log_gauges(registry: &mut Registry, state: &BrokerState) {
    let size = Family::<PartitionLabels, Gauge>::default();
    let segments = Family::<PartitionLabels, Gauge>::default();
    let start = Family::<PartitionLabels, Gauge>::default();
    let end = Family::<PartitionLabels, Gauge>::default();
    let stable = Family::<PartitionLabels, Gauge>::default();
    let high_watermark = Family::<PartitionLabels, Gauge>::default();
    for topic in state.replicas.topics() {
        for (p, log) in topic.partitions.iter().enumerate() {
            let labels = partition_labels(&topic.name, p);
            size.get_or_create(&labels)
                .set(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX));
            segments
                .get_or_create(&labels)
                .set(log.segment_count() as i64);
            start.get_or_create(&labels).set(log.log_start_offset());
            end.get_or_create(&labels).set(log.log_end_offset());
            stable.get_or_create(&labels).set(log.last_stable_offset());
            high_watermark
                .get_or_create(&labels)
                .set(log.high_watermark());
        }
    }
    registry.register_with_unit(
        "log_size",
        "Bytes of a partition's segments",
        Unit::Bytes,
        size,
    );
    registry.register("log_segments", "Segments of a partition", segments);
    registry.register("log_start_offset", "First offset of a partition", start);
    registry.register(
        "log_end_offset",
        "Offset the next record of a partition gets",
        end,
    );
    registry.register(
        "log_high_watermark",
        "Offset below which a partition's records are committed and readable",
        high_watermark,
    );
    registry.register(
        "log_last_stable_offset",
        "First offset of a partition's oldest open transaction, or its end",
        stable,
    );
    // Kafka's kafka.log:type=LogManager,name=OfflineLogDirectoryCount.
    let offline = Gauge::<i64>::default();
    offline.set(i64::from(state.replicas.is_offline()));
    registry.register(
        "log_directories_offline",
        "Log directories taken offline by a failed write or sync (until a restart)",
        offline,
    );
    let files = Gauge::<i64>::default();
    files.set(sluice_partition::open_file_count() as i64);
    registry.register(
        "partition_open_files",
        "Segment and index files the partition logs hold open",
        files,
    );
    let connections = Gauge::<i64>::default();
    connections.set(state.descriptors.connections() as i64);
    registry.register(
        "connections_admitted",
        "Kafka connections open now (within max.connections and the open-file limit)",
        connections,
    );
    let requests = Gauge::<i64>::default();
    requests.set(state.request_bytes.used() as i64);
    registry.register_with_unit(
        "request_queue",
        "Request bytes held by connections, bounded by queued.max.request.bytes",
        Unit::Bytes,
        requests,
    );
    let responses = Gauge::<i64>::default();
    responses.set(state.response_bytes.used() as i64);
    registry.register_with_unit(
        "response_queue",
        "Encoded response bytes waiting for their clients, bounded by queued.max.response.bytes",
        Unit::Bytes,
        responses,
    );
    let limit = Gauge::<i64>::default();
    limit.set(i64::try_from(crate::descriptors::open_file_limit()).unwrap_or(i64::MAX));
    registry.register(
        "open_file_limit",
        "The process's open-file limit (RLIMIT_NOFILE), shared by connections and partitions",
        limit,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: String,
}

/// The metadata quorum, the controller and the brokers' membership, as this node sees them.
/// Replication as this broker sees it: partitions it leads, those whose ISR is smaller than
/// their replica set (Kafka's UnderReplicatedPartitions), and each follower's lag behind
/// the leader's log end (Kafka's follower lag, measured on the leader).
fn register_replication_gauges(registry: &mut Registry, state: &BrokerState) {
    let mut leading = 0i64;
    let mut under = 0i64;
    let lag = Family::<FollowerLabels, Gauge>::default();
    for topic in state.replicas.topics() {
        for p in &topic.partitions {
            let Some((replicas, followers)) = p.replica_lags() else {
                continue;
            };
            leading += 1;
            let in_sync = 1 + followers.iter().filter(|f| f.in_sync).count();
            if in_sync < replicas {
                under += 1;
            }
            for f in followers {
                lag.get_or_create(&FollowerLabels {
                    topic: topic.name.clone(),
                    partition: p.index().to_string(),
                    follower: f.follower.to_string(),
                })
                .set(f.behind);
            }
        }
    }
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    registry.register(
        "partitions_led",
        "Partitions this broker leads (Kafka's LeaderCount)",
        gauge(leading),
    );
    registry.register(
        "under_replicated_partitions",
        "Partitions this broker leads whose ISR is smaller than their replica set",
        gauge(under),
    );
    registry.register(
        "replica_lag",
        "Records a follower is behind the leader's log end, as its last fetch said",
        lag,
    );
}

fn register_cluster_gauges(registry: &mut Registry, state: &BrokerState) {
    register_replication_gauges(registry, state);
    let status = state.cluster.status();
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let quorum = &status.quorum;
    registry.register(
        "metadata_quorum_leader",
        "The node leading the metadata quorum (the active controller), or -1",
        gauge(quorum.leader.map_or(-1, i64::from)),
    );
    registry.register(
        "metadata_quorum_term",
        "The metadata quorum's Raft term (its leader epoch)",
        gauge(i64::try_from(quorum.term).unwrap_or(i64::MAX)),
    );
    registry.register(
        "metadata_last_applied_index",
        "The last metadata log entry this node has applied to its image, or -1",
        gauge(quorum.last_applied.map_or(-1, |i| i as i64)),
    );
    registry.register(
        "controller_active",
        "1 if this node is the active controller (it leads the metadata quorum), else 0",
        gauge(i64::from(quorum.leader == Some(status.node_id))),
    );
    let snapshots = Family::<OriginLabels, Counter>::default();
    for (origin, count) in [
        ("built", quorum.snapshots_built),
        ("installed", quorum.snapshots_installed),
    ] {
        snapshots
            .get_or_create(&OriginLabels {
                origin: origin.to_string(),
            })
            .inc_by(count);
    }
    registry.register(
        "metadata_snapshots",
        "Snapshots of the metadata image built here or installed from the leader, since start",
        snapshots,
    );
    let brokers = Family::<StateLabels, Gauge>::default();
    let fenced = status.brokers.iter().filter(|b| b.fenced).count() as i64;
    for (label, count) in [
        ("active", status.brokers.len() as i64 - fenced),
        ("fenced", fenced),
    ] {
        brokers
            .get_or_create(&StateLabels {
                state: label.to_string(),
            })
            .set(count);
    }
    registry.register(
        "cluster_brokers",
        "Brokers registered in this node's metadata image, unfenced (active) or fenced",
        brokers,
    );
    registry.register(
        "broker_fenced",
        "1 while this broker is not registered and unfenced by the controller, else 0",
        gauge(i64::from(
            status.broker.fenced || status.broker.broker_epoch.is_none(),
        )),
    );
}

fn register_group_gauges(registry: &mut Registry, state: &BrokerState) {
    let lag = Family::<GroupPartitionLabels, Gauge>::default();
    let committed = Family::<GroupPartitionLabels, Gauge>::default();
    let members = Family::<GroupLabels, Gauge>::default();
    for group in state.groups.lags(&state.replicas) {
        members
            .get_or_create(&GroupLabels {
                group: group.group_id.clone(),
            })
            .set(group.members as i64);
        for o in &group.offsets {
            let labels = GroupPartitionLabels {
                group: group.group_id.clone(),
                topic: o.topic.clone(),
                partition: o.partition.to_string(),
            };
            lag.get_or_create(&labels).set(o.lag);
            committed.get_or_create(&labels).set(o.committed_offset);
        }
    }
    registry.register(
        "group_lag",
        "Records between a group's committed offset and the partition's end",
        lag,
    );
    registry.register(
        "group_committed_offset",
        "A group's committed offset",
        committed,
    );
    registry.register("group_members", "Members of a consumer group", members);
}

fn register_process_gauges(registry: &mut Registry, metrics: &Metrics) {
    let (resident, virtual_size) = process_memory();
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    registry.register_with_unit(
        "process_resident_memory",
        "Resident memory of the broker process",
        Unit::Bytes,
        gauge(resident),
    );
    registry.register_with_unit(
        "process_virtual_memory",
        "Virtual memory of the broker process",
        Unit::Bytes,
        gauge(virtual_size),
    );
    registry.register_with_unit(
        "uptime",
        "Time since the broker started",
        Unit::Seconds,
        gauge(metrics.uptime().as_secs()),
    );
}

/// Resident and virtual memory from `/proc/self/status` (zero where it cannot be read).
pub(crate) fn process_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |n| n * 1024)
    };
    (kib("VmRSS:"), kib("VmSize:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_metrics_record_nothing() {
        let m = Arc::new(Metrics::new(false));
        m.request(0);
        m.produced("t", 100, 3);
        let _c = m.connection_opened();
        assert_eq!(m.api(0).requests.get(), 0);
        assert!(m.traffic().is_empty());
        assert_eq!(m.open_connections(), 0);
    }

    #[test]
    fn exposition_names_the_registered_families() {
        let m = Arc::new(Metrics::new(true));
        m.request(0);
        m.produced("orders", 100, 3);
        let text = encode(&m, None);
        assert!(
            text.contains("sluice_requests_total{api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(text.contains("sluice_topic_in_bytes_total{topic=\"orders\"} 100"));
        assert!(text.contains("sluice_topic_messages_in_total{topic=\"orders\"} 3"));
        assert!(text.ends_with("# EOF\n"));
        m.topic_deleted("orders");
        assert!(!encode(&m, None).contains("orders"));
    }
}
