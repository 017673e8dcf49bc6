//! The Kafka-protocol server: accepts connections, decodes requests through the protocol crate,
//! runs them against the storage crate, and writes responses in request order.
//!
//! This is the only crate that sees both the wire format and storage.

mod admin;
mod auto_create;
mod budget;
mod cluster;
pub mod config;
mod descriptors;
mod errors;
mod groups;
mod handlers;
mod internal_topic;
mod metrics;
mod response;
mod server;
mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_partition::{CommitOnAppend, ReplicaManager};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::BrokerConfig;

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct BrokerState {
    pub config: BrokerConfig,
    /// Every partition, through the partition layer: the broker's only door to storage.
    pub replicas: Arc<ReplicaManager>,
    /// The advertised (host, port), fixed once the listener is bound.
    pub advertised: (String, u16),
    /// Flips to true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// The group coordinator and its `__consumer_offsets` log.
    pub groups: groups::Groups,
    /// The transaction coordinator and its `__transaction_state` log.
    pub txns: txn::Transactions,
    /// Counters and histograms for `/metrics` and the console.
    pub metrics: Arc<metrics::Metrics>,
    /// Open connections, within `max.connections` and the open-file limit.
    pub descriptors: descriptors::Descriptors,
    /// Topics Metadata requests asked to create, created off the request path.
    pub auto_create: auto_create::AutoCreate,
    /// Request bytes held across connections (`queued.max.request.bytes`).
    pub request_bytes: Arc<budget::Budget>,
    /// Encoded response bytes waiting for their clients (`queued.max.response.bytes`).
    pub response_bytes: Arc<budget::Budget>,
    /// Unsupported request versions already logged, per client and API.
    pub version_log: handlers::VersionLog,
    /// This node's metadata quorum voter, controller and broker registration.
    pub cluster: Arc<cluster::Cluster>,
    /// The replication throttle's rates and meters (KIP-73).
    pub throttle: cluster::throttle::ReplicationThrottle,
}

impl BrokerState {
    /// Whether this broker may serve `partition` to clients, as the cluster metadata says:
    /// NOT_LEADER_OR_FOLLOWER where another broker (or none) leads it; where the client
    /// names the leader epoch it knows (`current_leader_epoch`, -1 for none),
    /// FENCED_LEADER_EPOCH if it is older than this leader's and UNKNOWN_LEADER_EPOCH if it
    /// is newer (this broker has not heard of it yet).
    pub(crate) fn leads(
        &self,
        partition: &sluice_partition::Partition,
        current_leader_epoch: i32,
    ) -> Result<(), i16> {
        use kafka_protocol::ResponseError;
        if partition.leader() != self.config.node_id {
            return Err(ResponseError::NotLeaderOrFollower.code());
        }
        let epoch = partition.leader_epoch();
        match current_leader_epoch {
            e if e < 0 || e == epoch => Ok(()),
            e if e < epoch => Err(ResponseError::FencedLeaderEpoch.code()),
            _ => Err(ResponseError::UnknownLeaderEpoch.code()),
        }
    }
}

/// A broker that is accepting connections.
pub struct RunningBroker {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    cluster: Arc<cluster::Cluster>,
}

impl RunningBroker {
    /// The address the Kafka listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the admin HTTP listener is bound to, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown.timeout.ms`), then
    /// flushes and fsyncs every log and writes the recovery checkpoint.
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.shutdown.send(true);
        let result = self
            .task
            .await
            .map_err(|e| format!("broker task failed: {e}"));
        // The controlled shutdown started with the signal; the quorum stops last.
        self.cluster.stop().await;
        let result = result?;
        if let Some(mut admin) = self.admin_task {
            // Open SSE streams end on the shutdown signal; idle connections close at once.
            if tokio::time::timeout(ADMIN_SHUTDOWN_TIMEOUT, &mut admin)
                .await
                .is_err()
            {
                tracing::warn!("admin listener did not stop in time; aborting it");
                admin.abort();
            }
        }
        result
    }

    /// Waits until the broker stops by itself (it only does on a fatal error).
    pub async fn wait(&mut self) -> Result<(), String> {
        (&mut self.task)
            .await
            .map_err(|e| format!("broker task failed: {e}"))?
    }
}

/// How long shutdown waits for the admin listener's connections.
const ADMIN_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the admin listener (logging `admin listening on http://HOST:PORT`), opens the data
/// directory (recovering every log), binds the Kafka listener and starts serving. Logs
/// `listening on HOST:PORT` once connections are accepted.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, String> {
    start_with_durability(config, None).await
}

/// [`start`], with every fsync going through `durability` instead of the timed production
/// one: the seam fault tests use to make syncs fail or wait.
pub async fn start_with_durability(
    config: BrokerConfig,
    durability: Option<Arc<dyn sluice_partition::Durability>>,
) -> Result<RunningBroker, String> {
    let seams = Seams {
        durability,
        ..Seams::default()
    };
    start_with(config, seams).await
}

/// The seams fault tests use to break or slow the broker.
#[derive(Default)]
pub struct Seams {
    /// Every fsync goes through it instead of the timed production one.
    pub durability: Option<Arc<dyn sluice_partition::Durability>>,
    /// When an append counts as committed, instead of at once ([`CommitOnAppend`]).
    pub commit: Option<Arc<dyn sluice_partition::CommitRule>>,
}

/// [`start`], with the given seams.
pub async fn start_with(config: BrokerConfig, seams: Seams) -> Result<RunningBroker, String> {
    let Seams { durability, commit } = seams;
    // Before anything counts descriptors against the limit.
    match descriptors::raise_open_file_limit() {
        Ok(Some(limit)) => tracing::info!(open_file_limit = limit, "raised the open-file limit"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, open_file_limit = descriptors::open_file_limit(),
            "cannot raise the open-file limit to its hard limit"),
    }
    let metrics = Arc::new(metrics::Metrics::new(config.metrics_enabled));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The admin listener comes first, so health checks can see the recovery.
    let admin = match config.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (admin.listen): {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let admin = Arc::new(admin::Admin::new(
                metrics.clone(),
                bound,
                shutdown_rx.clone(),
            ));
            tracing::info!("admin listening on http://{bound}");
            let task = tokio::spawn(admin::serve(listener, admin.clone()));
            Some((admin, task))
        }
        None => None,
    };
    let abort_admin = admin.as_ref().map(|(_, task)| task.abort_handle());
    let durability = durability.unwrap_or_else(|| Arc::new(metrics::TimedFsync(metrics.clone())));
    let commit = commit.unwrap_or_else(|| Arc::new(CommitOnAppend));
    let opened = open(
        config,
        metrics,
        (durability, commit),
        shutdown_tx,
        shutdown_rx,
        admin,
    )
    .await;
    if let (Err(_), Some(admin)) = (&opened, abort_admin) {
        admin.abort();
    }
    opened
}

/// Everything after the admin listener; on an error the caller stops that listener.
async fn open(
    config: BrokerConfig,
    metrics: Arc<metrics::Metrics>,
    (durability, commit): (
        Arc<dyn sluice_partition::Durability>,
        Arc<dyn sluice_partition::CommitRule>,
    ),
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    admin: Option<(Arc<admin::Admin>, tokio::task::JoinHandle<()>)>,
) -> Result<RunningBroker, String> {
    let data_dir = config.data_dir.clone();
    let log_defaults = config.log.clone();
    let started = std::time::Instant::now();
    // Recovery opens every segment: the bound on open segment files holds from the start.
    let segment_files = descriptors::segment_files_for(descriptors::open_file_limit());
    let scope = config.flush_scope;
    let logs = tokio::task::spawn_blocking(move || {
        ReplicaManager::open(
            &data_dir,
            log_defaults,
            durability,
            commit,
            segment_files,
            scope,
        )
    })
    .await
    .map_err(|e| format!("opening the data directory panicked: {e}"))?
    .map_err(|e| {
        format!(
            "cannot open data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let partitions: usize = logs.topics().iter().map(|t| t.partitions.len()).sum();
    tracing::info!(
        data_dir = %config.data_dir.display(),
        topics = logs.topics().len(),
        partitions,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log manager opened"
    );
    // A dedicated controller (process.roles=controller) serves no Kafka clients.
    let listener = match config.process_roles.broker {
        true => Some(
            TcpListener::bind(config.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?,
        ),
        false => None,
    };
    let kafka_addr = match &listener {
        Some(listener) => Some(listener.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let advertised = match (&config.advertised, kafka_addr) {
        (Some(advertised), _) => advertised.clone(),
        (None, Some(addr)) => (addr.ip().to_string(), addr.port()),
        (None, None) => (String::new(), 0),
    };
    // Topics the data directory holds before it first joined a cluster are given to the
    // controller once (see `cluster::publisher`).
    let joined = match cluster::publisher::joined_cluster(&config.data_dir) {
        // The data directory is this node's in its cluster, as Kafka's meta.properties
        // pins a log directory to a node.id: under another id every replica it holds
        // would count as placed elsewhere, and be emptied.
        Some((_, Some(owner))) if owner != config.node_id => {
            return Err(format!(
                "the data directory {} belongs to node {owner} ({}), not to node.id {}: \
                 start it with node.id={owner}, or give this node another data directory",
                config.data_dir.display(),
                cluster::publisher::MIGRATED_FILE,
                config.node_id
            ));
        }
        Some((cluster_id, None)) => {
            // A marker from before node ids were kept: this node's from now on.
            cluster::publisher::write_marker(&config.data_dir, &cluster_id, config.node_id)
                .map_err(|e| format!("cannot write {}: {e}", cluster::publisher::MIGRATED_FILE))?;
            Some(cluster_id)
        }
        Some((cluster_id, Some(_))) => Some(cluster_id),
        None => None,
    };
    let migration_candidates = joined
        .is_none()
        .then(|| logs.topics().iter().map(|t| t.id).collect());
    let cluster = cluster::Cluster::start(
        &config,
        advertised.clone(),
        shutdown_rx.clone(),
        joined,
        migration_candidates,
        logs.cluster_id(),
    )
    .await?;
    // What `RunningBroker::local_addr` reports: the Kafka listener, or a dedicated
    // controller's controller listener.
    let addr = kafka_addr
        .or(cluster.controller_addr())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let groups = groups::Groups::new(config.groups.clone());
    let txns = txn::Transactions::new(config.txn.clone());
    logs.set_producer_id_expiration_ms(config.producer_id_expiration_ms);
    let auto_create = auto_create::AutoCreate::new(&config);
    let state = Arc::new(BrokerState {
        groups,
        txns,
        descriptors: descriptors::Descriptors::default(),
        auto_create,
        request_bytes: budget::Budget::new(config.queued_max_request_bytes),
        response_bytes: budget::Budget::new(config.queued_max_response_bytes),
        version_log: handlers::VersionLog::default(),
        config,
        replicas: Arc::new(logs),
        advertised,
        shutdown: shutdown_rx,
        metrics,
        cluster: cluster.clone(),
        throttle: Default::default(),
    });
    let (admin_addr, admin_task) = match admin {
        Some((admin, task)) => {
            admin.set_state(state.clone());
            (Some(admin.address), Some(task))
        }
        None => (None, None),
    };
    let fd_limit = descriptors::open_file_limit();
    let fd_reserve = descriptors::reserve_for(fd_limit);
    let open_files = sluice_partition::open_file_count();
    let room = fd_limit.saturating_sub(fd_reserve + open_files);
    if room < state.config.max_connections {
        tracing::warn!(
            open_file_limit = fd_limit,
            partition_files = open_files,
            reserve = fd_reserve,
            max_connections = state.config.max_connections,
            "the open-file limit leaves room for only {room} connections; more are refused"
        );
    }
    match listener {
        Some(_) => tracing::info!("listening on {addr}"),
        None => tracing::info!(
            "dedicated controller (process.roles=controller): no Kafka listener; controller \
             ready"
        ),
    }
    if state.config.process_roles.broker {
        tokio::spawn(cluster::publisher::run(state.clone()));
        tokio::spawn(cluster::fetcher::run(state.clone()));
        tokio::spawn(cluster::fetcher::isr_updates(state.clone()));
    }
    tokio::spawn(groups::Groups::run_timers(state.clone()));
    tokio::spawn(every(
        state.clone(),
        millis(txn::TICK_MS),
        txn::Transactions::tick,
    ));
    let period = millis(state.config.checkpoint_interval_ms);
    tokio::spawn(every(state.clone(), period, checkpoint_pass));
    let period = millis(state.config.high_watermark_checkpoint_interval_ms);
    tokio::spawn(every(state.clone(), period, high_watermark_checkpoint_pass));
    tokio::spawn(auto_create::run(state.clone()));
    let period = millis(state.config.retention_check_interval_ms);
    tokio::spawn(every(state.clone(), period, retention_pass));
    if state.config.cleaner_enable {
        let period = millis(state.config.cleaner_backoff_ms);
        tokio::spawn(every(state.clone(), period, cleaner_pass));
    }
    let task = match listener {
        Some(listener) => tokio::spawn(async move {
            // Connections wait in the listener's backlog until the controller has unfenced
            // this broker and its partitions follow the cluster metadata: before that it
            // knows neither what it leads nor which topics exist.
            if !state.cluster.ready(state.shutdown.clone()).await {
                // Stopped before serving anyone: only the recovery checkpoint to write.
                let logs = state.replicas.clone();
                return tokio::task::spawn_blocking(move || logs.flush_and_checkpoint())
                    .await
                    .map_err(|e| format!("final flush panicked: {e}"))?
                    .map_err(|e| format!("final flush failed: {e}"));
            }
            tracing::info!("broker ready: unfenced, partitions follow the cluster metadata");
            load_coordinators(&state);
            server::serve(listener, state).await
        }),
        None => {
            let mut stop = state.shutdown.clone();
            tokio::spawn(async move {
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        }
    };
    Ok(RunningBroker {
        addr,
        admin_addr,
        shutdown: shutdown_tx,
        task,
        admin_task,
        cluster,
    })
}

/// Loads the group and transaction coordinators from their topics, off the runtime. Until
/// each is done, its requests are answered with COORDINATOR_LOAD_IN_PROGRESS and clients
/// retry.
fn load_coordinators(state: &Arc<BrokerState>) {
    let loading = state.clone();
    // The transaction coordinator loads after the group coordinator: finishing a replayed
    // transaction can write markers into `__consumer_offsets`, which the group coordinator
    // must see.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = loading.groups.load(&loading) {
            tracing::error!(error = %e, "cannot load the group coordinator");
        }
        if let Err(e) = loading.txns.load(&loading) {
            tracing::error!(error = %e, "cannot load the transaction coordinator");
        }
    });
}

/// Runs `tick` every `period` (the first time one period from now) until shutdown.
pub(crate) async fn every<F, Fut>(state: Arc<BrokerState>, period: Duration, mut tick: F)
where
    F: FnMut(Arc<BrokerState>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut shutdown = state.shutdown.clone();
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        tick(state.clone()).await;
    }
}

/// One cleaner pass over every compacted log, on a blocking thread, throttled as a whole.
async fn cleaner_pass(state: Arc<BrokerState>) {
    let logs = state.replicas.clone();
    let cleaner = state.config.cleaner.clone();
    let metrics = state.metrics.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut throttle = sluice_partition::Throttle::new(cleaner.io_max_bytes_per_second);
        let mut out_of_descriptors_logged = false;
        for topic in logs.topics() {
            if !topic.config.is_compacted() {
                continue;
            }
            for (p, log) in topic.partitions.iter().enumerate() {
                let cleaned = log.clean(now_ms(), &cleaner, &mut throttle);
                match &cleaned {
                    Ok(Some(s)) => metrics.cleaned(s),
                    Ok(None) | Err(sluice_partition::StorageError::UnknownTopic(_)) => {}
                    Err(_) => metrics.cleaner_failed(),
                }
                match cleaned {
                    Ok(Some(s)) => tracing::info!(
                        topic = topic.name,
                        partition = p,
                        segments = s.segments,
                        records_before = s.records_before,
                        records_after = s.records_after,
                        bytes_before = s.bytes_before,
                        bytes_after = s.bytes_after,
                        elapsed_ms = s.elapsed.as_millis() as u64,
                        "cleaned log"
                    ),
                    Ok(None) => {}
                    // Deleted while we were at it.
                    Err(sluice_partition::StorageError::UnknownTopic(_)) => {}
                    Err(e) => {
                        // Out of descriptors, every partition fails alike: one line a pass.
                        if !matches!(e, sluice_partition::StorageError::OutOfDescriptors(_))
                            || !out_of_descriptors_logged
                        {
                            out_of_descriptors_logged |=
                                matches!(e, sluice_partition::StorageError::OutOfDescriptors(_));
                            tracing::error!(topic = topic.name, partition = p, error = %e,
                                "cleaning failed");
                        }
                    }
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cleaner task panicked");
    }
}

/// Writes the high watermark checkpoint (when a high watermark moved), on a blocking thread.
async fn high_watermark_checkpoint_pass(state: Arc<BrokerState>) {
    let replicas = state.replicas.clone();
    match tokio::task::spawn_blocking(move || replicas.checkpoint_high_watermarks()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "high watermark checkpoint failed"),
        Err(e) => tracing::error!(error = %e, "high watermark checkpoint panicked"),
    }
}

/// Flushes every log and writes the recovery checkpoint, on a blocking thread: periodic, and
/// in a task of its own, so that accepting, answering and shutting down never wait for it.
async fn checkpoint_pass(state: Arc<BrokerState>) {
    let logs = state.replicas.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || logs.flush_and_checkpoint()).await {
        Ok(Ok(())) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "periodic flush and checkpoint"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "periodic flush and checkpoint failed"),
        Err(e) => tracing::error!(error = %e, "periodic flush and checkpoint panicked"),
    }
}

/// One retention pass over every log, on a blocking thread.
async fn retention_pass(state: Arc<BrokerState>) {
    let logs = state.replicas.clone();
    match tokio::task::spawn_blocking(move || logs.apply_retention(now_ms())).await {
        Ok(Ok((0, _))) => {}
        Ok(Ok((segments, bytes))) => {
            state.metrics.retention_deleted(segments, bytes);
            tracing::info!(segments, bytes, "retention deleted segments");
        }
        Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
        Err(e) => tracing::error!(error = %e, "retention task panicked"),
    }
}

/// Topics only the coordinators write: `__consumer_offsets` and `__transaction_state`.
/// Clients cannot produce to, create, delete, repartition, alter or truncate them.
pub(crate) fn is_internal_topic(name: &str) -> bool {
    name == groups::OFFSETS_TOPIC || name == txn::TXN_TOPIC
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
