//! This node's place in the cluster, as Kafka's KRaft mode gives it one: a voter of the
//! metadata quorum (the Raft-replicated metadata log, `sluice-quorum`), the active
//! controller's shell when it leads that quorum ([`controller`]), and the broker's
//! lifecycle: registration with the controller, heartbeats, fencing, and a controlled
//! shutdown ([`lifecycle`]). A single node is a cluster of one: the same quorum with one
//! voter, the same controller, the same registration.
//!
//! ```text
//! <metadata dir>/__cluster_metadata-0/   quorum.log, quorum.vote, quorum.snapshot
//! ```
//!
//! The data plane does not read the metadata image yet: topics and their partitions are
//! still this node's own (`topics.json`). What this module gives today is the quorum, the
//! controller and the brokers' membership, visible in the admin API.

mod controller;
pub(crate) mod fetcher;
mod lifecycle;
pub(crate) mod peer;
pub(crate) mod publisher;
pub(crate) mod rpc;
pub(crate) mod throttle;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sluice_metadata::ControllerConfig;
use sluice_quorum::openraft::{self, BasicNode, SnapshotPolicy};
use sluice_quorum::{MetadataView, Raft, StateMachine, TcpNetwork};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use rpc::{ControllerClient, ControllerService};

/// The quorum's directory, under Kafka's name for the metadata log's partition.
pub(crate) const METADATA_DIR: &str = "__cluster_metadata-0";
/// The epoch of this broker's last registration, for its next process (Kafka's
/// PreviousBrokerEpoch).
const BROKER_EPOCH_FILE: &str = "broker-epoch.json";
/// Requests waiting for the controller task.
const CONTROLLER_QUEUE: usize = 256;
/// How long stopping waits for the controlled shutdown.
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(5);

/// What this broker knows of its own registration.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct BrokerLifecycle {
    /// The epoch of its registration, once registered.
    pub broker_epoch: Option<i64>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// The last error from the controller, if the last request failed.
    pub last_error: Option<String>,
    /// When the controller last acknowledged a registration or heartbeat (ms since the
    /// epoch), if ever.
    pub last_ack_ms: Option<i64>,
    /// The metadata log index of this process's registration: an image past it knows
    /// everything the cluster knew when this broker joined.
    #[serde(skip)]
    pub registered_at: Option<u64>,
}

/// The node's cluster membership: its quorum voter, controller and broker lifecycle.
pub(crate) struct Cluster {
    pub node_id: i32,
    raft: Raft,
    sm: StateMachine,
    pub(crate) view: MetadataView,
    pub(crate) client: ControllerClient,
    /// The metadata log index the publisher has applied to this broker's partitions.
    pub(crate) published: watch::Sender<u64>,
    /// Whether the data directory's own topics are in the cluster metadata (see
    /// [`publisher`]).
    pub(crate) migrated: std::sync::atomic::AtomicBool,
    /// The ids of the topics the data directory held when it was opened, before migration.
    migration_candidates: Mutex<std::collections::HashSet<uuid::Uuid>>,
    /// The cluster the data directory joined (its `metadata-migrated`), once it has.
    pub(crate) joined: Mutex<Option<String>>,
    lifecycle: Arc<Mutex<BrokerLifecycle>>,
    controller_addr: Option<SocketAddr>,
    voters: BTreeMap<i32, String>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    lifecycle_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

/// openraft's settings from Kafka's names.
fn raft_config(config: &BrokerConfig) -> Result<openraft::Config, String> {
    let election = config.quorum_election_timeout_ms.max(10);
    let interval = config.metadata_snapshot_interval_entries.max(1);
    openraft::Config {
        cluster_name: "sluice".into(),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        heartbeat_interval: (election / 10).max(5),
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(interval),
        // Followers a little behind get entries; further behind, the snapshot.
        max_in_snapshot_log_to_keep: interval / 2,
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("metadata quorum settings: {e}"))
}

impl Cluster {
    /// Opens the metadata log, starts this node's voter (and the controller listener, when
    /// there is one), the controller task and the broker's lifecycle. `kafka` is the
    /// advertised Kafka listener the broker registers.
    pub(crate) async fn start(
        config: &BrokerConfig,
        kafka: (String, u16),
        broker_shutdown: watch::Receiver<bool>,
        joined: Option<String>,
        migration_candidates: Option<std::collections::HashSet<uuid::Uuid>>,
        local_cluster_id: &str,
    ) -> Result<Arc<Cluster>, String> {
        let node_id = config.node_id;
        if node_id < 0 {
            return Err(format!("node.id {node_id} is negative"));
        }
        let dir = config.data_dir.join(METADATA_DIR);
        let opened_dir = dir.clone();
        let (log, sm) =
            tokio::task::spawn_blocking(move || sluice_quorum::open_on_disk(&opened_dir))
                .await
                .map_err(|e| format!("opening the metadata log panicked: {e}"))?
                .map_err(|e| format!("cannot open the metadata log in {}: {e}", dir.display()))?;
        let view = sm.view();
        let voters: BTreeMap<i32, String> = config
            .quorum_voters
            .iter()
            .map(|v| (v.id, crate::config::address(&v.host, v.port)))
            .collect();
        let raft = Raft::new(
            node_id as u64,
            Arc::new(raft_config(config)?),
            // Peers are reached where this node's controller.quorum.voters says.
            TcpNetwork::with_addresses(
                voters
                    .iter()
                    .map(|(&id, addr)| (id as u64, addr.clone()))
                    .collect(),
            ),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| format!("cannot start the metadata quorum: {e}"))?;
        let (stop, stop_rx) = watch::channel(false);
        let (requests, requests_rx) = mpsc::channel(CONTROLLER_QUEUE);
        let bootstrap = config
            .quorum_bootstrap_servers
            .iter()
            .map(|(host, port)| crate::config::address(host, *port))
            .collect();
        let client =
            ControllerClient::new(node_id, raft.clone(), requests, voters.clone(), bootstrap);
        let mut tasks = Vec::new();
        // The controller listener: as configured, else this node's voter address.
        let controller_addr = match config.controller_listen {
            Some(addr) => Some(addr),
            None => match voters.get(&node_id) {
                Some(addr) => Some(
                    tokio::net::lookup_host(addr.as_str())
                        .await
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| {
                            format!("cannot resolve this node's voter address {addr}")
                        })?,
                ),
                None => None,
            },
        };
        let controller_addr = match controller_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    format!("cannot listen on {addr} (the controller listener): {e}")
                })?;
                let bound = listener.local_addr().map_err(|e| e.to_string())?;
                tracing::info!(address = %bound, "controller listener bound (metadata quorum and controller)");
                let service = Arc::new(ControllerService {
                    client: client.clone(),
                });
                let server = sluice_quorum::serve(listener, raft.clone(), Some(service));
                tasks.push(tokio::spawn(async move {
                    let _ = server.await;
                }));
                Some(bound)
            }
            None => None,
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| format!("metadata quorum: {e}"))?;
        if !initialized && config.process_roles.controller {
            let members: BTreeMap<u64, BasicNode> = if voters.is_empty() {
                let addr = controller_addr.map(|a| a.to_string()).unwrap_or_default();
                BTreeMap::from([(node_id as u64, BasicNode::new(addr))])
            } else {
                voters
                    .iter()
                    .map(|(&id, addr)| (id as u64, BasicNode::new(addr.clone())))
                    .collect()
            };
            // Every voter proposes the same membership; whichever wins its election writes it.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "metadata quorum already initialised by a peer");
            }
            tracing::info!(node_id, voters = ?voters.keys().collect::<Vec<_>>(),
                "metadata quorum initialised");
        }
        let controller_config = ControllerConfig {
            broker_session_timeout_ms: config.broker_session_timeout_ms as i64,
            default_replication_factor: config.default_replication_factor,
            num_partitions: config.num_partitions,
            unclean_leader_election_enable: config.log.unclean_leader_election_enable,
            min_insync_replicas: config.log.min_insync_replicas,
            auto_leader_rebalance_enable: config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms: config
                .leader_imbalance_check_interval_seconds
                .saturating_mul(1000)
                .min(i64::MAX as u64) as i64,

            ..ControllerConfig::default()
        };
        let shell = controller::ControllerShell {
            node_id,
            raft: raft.clone(),
            view: view.clone(),
            config: controller_config,
            requests: requests_rx,
            stop: stop_rx,
            lease: Duration::from_millis(config.quorum_election_timeout_ms.max(100)),
            cluster_id: local_cluster_id.to_string(),
        };
        tasks.push(tokio::spawn(shell.run()));
        let lifecycle = Arc::new(Mutex::new(BrokerLifecycle {
            fenced: true,
            ..BrokerLifecycle::default()
        }));
        let (published, published_rx) = watch::channel(0u64);
        // A broker that is not a voter receives the metadata log at its controller
        // listener, which must therefore be an address the voters can reach.
        let metadata_addr = match (config.process_roles.controller, controller_addr) {
            (true, _) => None,
            (false, Some(addr)) if addr.ip().is_unspecified() => {
                return Err(format!(
                    "the controller listener of a broker-only node ({addr}) must be an address \
                     the controllers can reach, not a wildcard"
                ))
            }
            (false, addr) => addr.map(|a| a.to_string()),
        };
        let lifecycle_task = if config.process_roles.broker {
            let broker = lifecycle::BrokerLifecycleTask {
                node_id,
                endpoint: rpc::WireEndpoint {
                    listener: config.listener_name.clone(),
                    host: kafka.0,
                    port: kafka.1,
                    security_protocol: 0,
                },
                metadata_addr,
                heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
                client: client.clone(),
                published: published_rx,
                state: lifecycle.clone(),
                shutdown: broker_shutdown,
                controlled_shutdown_max: CONTROLLED_SHUTDOWN_MAX
                    .min(Duration::from_millis(config.shutdown_timeout_ms)),
                epoch_file: config.data_dir.join(BROKER_EPOCH_FILE),
            };
            Some(tokio::spawn(broker.run()))
        } else {
            None
        };
        Ok(Arc::new(Cluster {
            node_id,
            raft,
            sm,
            view,
            client,
            published,
            migrated: std::sync::atomic::AtomicBool::new(migration_candidates.is_none()),
            migration_candidates: Mutex::new(migration_candidates.unwrap_or_default()),
            joined: Mutex::new(joined),
            lifecycle,
            controller_addr,
            voters,
            stop,
            tasks: Mutex::new(tasks),
            lifecycle_task: Mutex::new(lifecycle_task),
        }))
    }

    /// The cluster's id: the one the metadata log names, else (before the first controller
    /// has named it) this data directory's.
    pub(crate) fn cluster_id(&self, local: &str) -> String {
        self.view
            .read(|image| image.cluster_id().map(str::to_string))
            .unwrap_or_else(|| local.to_string())
    }

    /// Whether the data directory joined the cluster this node's image describes: `None`
    /// until both are known; an empty id (an older marker) matches any cluster.
    pub(crate) fn joined_this_cluster(&self) -> Option<bool> {
        let joined = self.joined.lock().expect("cluster lock").clone()?;
        let current = self
            .view
            .read(|image| image.cluster_id().map(str::to_string))?;
        Some(joined.is_empty() || joined == current)
    }

    /// The metadata log index of this process's registration, once registered.
    pub(crate) fn registered_at(&self) -> Option<u64> {
        self.lifecycle.lock().expect("lifecycle lock").registered_at
    }

    /// The epoch of this broker's registration, once registered.
    pub(crate) fn broker_epoch(&self) -> Option<i64> {
        self.lifecycle.lock().expect("lifecycle lock").broker_epoch
    }

    /// Whether this broker is registered and unfenced.
    pub(crate) fn unfenced(&self) -> bool {
        let s = self.lifecycle.lock().expect("lifecycle lock");
        s.broker_epoch.is_some() && !s.fenced
    }

    pub(crate) fn migration_candidates(&self) -> std::collections::HashSet<uuid::Uuid> {
        self.migration_candidates
            .lock()
            .expect("cluster lock")
            .clone()
    }

    /// Waits until the publisher has applied the metadata log up to `index`, or `bound`
    /// passes; returns whether it did.
    pub(crate) async fn wait_published(&self, index: u64, bound: Duration) -> bool {
        let mut rx = self.published.subscribe();
        tokio::time::timeout(bound, rx.wait_for(|p| *p >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until this broker may serve clients: unfenced, its partitions following an
    /// image that holds its registration, and the data directory's own topics migrated.
    /// Logs why it still waits every `LOG_EVERY`; returns false if shutdown starts first.
    pub(crate) async fn ready(&self, mut shutdown: watch::Receiver<bool>) -> bool {
        const LOG_EVERY: Duration = Duration::from_secs(10);
        let mut published = self.published.subscribe();
        let mut next_log = tokio::time::Instant::now() + LOG_EVERY;
        loop {
            let at = self.registered_at();
            let ok = self.unfenced()
                && at.is_some_and(|at| *published.borrow() >= at)
                && self.migrated.load(std::sync::atomic::Ordering::Acquire);
            if ok {
                return true;
            }
            if tokio::time::Instant::now() >= next_log {
                next_log += LOG_EVERY;
                let s = self.lifecycle.lock().expect("lifecycle lock").clone();
                tracing::info!(
                    registered = s.broker_epoch.is_some(),
                    fenced = s.fenced,
                    last_error = s.last_error,
                    "waiting for the controller to unfence this broker before serving clients"
                );
            }
            tokio::select! {
                _ = published.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return false;
            }
        }
    }

    /// The controller listener's bound address, if there is one.
    pub(crate) fn controller_addr(&self) -> Option<SocketAddr> {
        self.controller_addr
    }

    /// Waits for the controlled shutdown (which starts with the broker's shutdown signal),
    /// then stops the controller and this node's voter.
    pub(crate) async fn stop(&self) {
        let lifecycle = self.lifecycle_task.lock().expect("cluster lock").take();
        if let Some(mut task) = lifecycle {
            // The controlled shutdown keeps to its own bound; this one is a backstop.
            let bound = CONTROLLED_SHUTDOWN_MAX + rpc::REMOTE_CALL_TIMEOUT;
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                tracing::warn!("the broker lifecycle did not stop in time; aborting it");
                task.abort();
            }
        }
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the metadata quorum did not stop cleanly");
        }
        for task in self.tasks.lock().expect("cluster lock").drain(..) {
            task.abort();
        }
    }

    /// Sends a topic request to the active controller and, once it has answered, waits
    /// (within `bound`) for this broker's publisher to apply the change, so that the client
    /// finds the topics here as soon as it is answered. `Err` when no controller answered.
    pub(crate) async fn topic_request(
        &self,
        request: rpc::ControllerRequest,
        bound: Duration,
    ) -> Result<Vec<rpc::TopicOutcome>, String> {
        let started = tokio::time::Instant::now();
        // Only a broker that serves (the admin API's requests can come earlier) asks: before,
        // the controller would place partitions without it.
        let (_never, stop) = watch::channel(false);
        if tokio::time::timeout(bound, self.ready(stop)).await.is_err() {
            return Err(format!(
                "this broker is not serving yet (waiting for the controller to unfence it): \
                 not ready within {bound:?}"
            ));
        }
        let left = bound.saturating_sub(started.elapsed());
        let reply = tokio::time::timeout(left, self.client.call(request))
            .await
            .map_err(|_| format!("the controller did not answer within {bound:?}"))??;
        match reply {
            rpc::ControllerReply::Topics {
                outcomes,
                log_index,
            } => {
                let left = bound.saturating_sub(started.elapsed());
                if !self.wait_published(log_index, left).await {
                    tracing::warn!(
                        log_index,
                        "a topic change committed, but this broker has not applied it in time"
                    );
                }
                Ok(outcomes)
            }
            rpc::ControllerReply::Refused { code, message } => Err(format!("{code}: {message}")),
            other => Err(format!("the controller answered {other:?}")),
        }
    }

    /// The quorum as its leader describes it (Kafka's DescribeQuorum, which a broker
    /// forwards to the active controller).
    pub(crate) async fn describe_quorum(&self) -> Result<rpc::QuorumDescription, String> {
        match self
            .client
            .call(rpc::ControllerRequest::DescribeQuorum)
            .await?
        {
            rpc::ControllerReply::Quorum(q) => Ok(q),
            other => Err(format!("the quorum leader answered {other:?}")),
        }
    }

    /// What the admin API shows of the cluster.
    pub(crate) fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let (built, installed) = self.sm.snapshot_counts();
        let brokers = self.view.read(|image| {
            image
                .brokers()
                .map(|b| BrokerStatus {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                    fenced: b.fenced,
                    in_controlled_shutdown: b.in_controlled_shutdown,
                    endpoints: b
                        .endpoints
                        .iter()
                        .map(|e| format!("{}://{}:{}", e.listener, e.host, e.port))
                        .collect(),
                })
                .collect()
        });
        let voters = m
            .membership_config
            .membership()
            .voter_ids()
            .map(|id| id as i32)
            .collect();
        ClusterStatus {
            node_id: self.node_id,
            controller_listener: self.controller_addr.map(|a| a.to_string()),
            configured_voters: self.voters.clone(),
            quorum: QuorumStatus {
                state: format!("{:?}", m.state),
                leader: self.client.leader(),
                term: m.current_term,
                voters,
                last_log_index: m.last_log_index,
                last_applied: m.last_applied.map(|l| l.index),
                snapshot: m.snapshot.map(|l| l.index),
                purged: m.purged.map(|l| l.index),
                snapshots_built: built,
                snapshots_installed: installed,
            },
            broker: self.lifecycle.lock().expect("lifecycle lock").clone(),
            brokers,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ClusterStatus {
    pub node_id: i32,
    pub controller_listener: Option<String>,
    pub configured_voters: BTreeMap<i32, String>,
    pub quorum: QuorumStatus,
    /// This broker's registration, as it knows it.
    pub broker: BrokerLifecycle,
    /// Every registered broker, from this node's metadata image.
    pub brokers: Vec<BrokerStatus>,
}

#[derive(Debug, Serialize)]
pub(crate) struct QuorumStatus {
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub leader: Option<i32>,
    /// The Raft term: Kafka's leader epoch of the metadata log.
    pub term: u64,
    pub voters: Vec<i32>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct BrokerStatus {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    pub endpoints: Vec<String>,
}
