//! The active controller's decisions, as a state machine without I/O: Kafka's
//! `QuorumController` with its cluster control (registrations, heartbeats, fencing) and
//! replication control (topic creation and placement, leader election, ISR changes).
//!
//! Every call takes the current time where it matters and returns the records it decided
//! on, already applied to the controller's own image. The shell writes each call's records
//! as one entry of the metadata log and answers the caller once that entry is committed.
//! If the entry is not committed (this node lost the leadership), the shell drops the
//! controller and builds a new one from the committed image when it leads again, as Kafka
//! reverts to its last committed state.
//!
//! Safety rules kept here: only a member of the ISR becomes leader (unless unclean election is
//! enabled for the topic); the ISR never becomes empty (its last member stays in it while it
//! is fenced, and is the only one that can lead again); the ISR grows only at the leader's
//! request (AlterPartition) and only with eligible brokers; leader and partition epochs only
//! grow; a request carrying an old broker epoch, leader epoch or partition epoch is refused.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::codes;
use crate::image::{
    BrokerRegistration, MetadataImage, PartitionRegistration, TOPIC_NAME_BYTES_MAX,
};
use crate::records::{
    Endpoint, MetadataRecord, PartitionChange, PartitionRecord, LEADER_UNCHANGED, NO_LEADER,
    RESOURCE_TOPIC,
};

/// The most listeners one broker may register.
pub const ENDPOINTS_PER_BROKER_MAX: usize = 64;
/// The longest host, listener or rack name a broker may register.
pub const NAME_BYTES_MAX: usize = 255;

/// The controller's settings, under Kafka's config names.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: i64,
    /// `unclean.leader.election.enable`: the cluster default for topics that do not set it.
    pub unclean_leader_election_enable: bool,
    /// `min.insync.replicas`: the cluster default for topics that do not set it, below which
    /// replicas leaving an ISR become eligible leader replicas (KIP-966).
    pub min_insync_replicas: i32,
    /// `default.replication.factor`, for CreateTopics asking for -1.
    pub default_replication_factor: i16,
    /// `num.partitions`, for CreateTopics asking for -1.
    pub num_partitions: i32,
    /// The most partitions one topic may have (a bound on what one request can create).
    pub topic_partitions_max: i32,
    /// The most records one call may write: they go into one metadata log entry, which
    /// must stay within the quorum's frame bound (Kafka's `MAX_RECORDS_PER_USER_OP`).
    pub records_per_call_max: usize,
    /// `auto.leader.rebalance.enable`: move leaderships back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in milliseconds.
    pub leader_imbalance_check_interval_ms: i64,
    /// The share (percent) of a broker's preferred leaderships held elsewhere above which
    /// they are given back: 0, any (Kafka 4's controller; Kafka 3 had
    /// `leader.imbalance.per.broker.percentage`, 10).
    pub leader_imbalance_per_broker_percentage: i64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            broker_session_timeout_ms: 9_000,
            unclean_leader_election_enable: false,
            min_insync_replicas: 1,
            default_replication_factor: 1,
            num_partitions: 1,
            topic_partitions_max: 1_000_000,
            records_per_call_max: 10_000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 0,
        }
    }
}

/// A request refused, with Kafka's error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerError {
    pub code: i16,
    pub message: String,
}

fn refuse<T>(code: i16, message: impl Into<String>) -> Result<T, ControllerError> {
    Err(ControllerError {
        code,
        message: message.into(),
    })
}

/// BrokerRegistration's fields the controller uses.
#[derive(Debug, Clone)]
pub struct RegistrationRequest {
    pub broker_id: i32,
    /// New for every start of the broker process.
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// The epoch of the registration this process's broker last held, from its own data
    /// directory, or -1 (Kafka's PreviousBrokerEpoch).
    pub previous_broker_epoch: i64,
}

/// BrokerHeartbeat's fields the controller uses.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// Whether the broker has replayed the metadata log up to its own registration, so that
    /// it knows what it leads.
    pub caught_up: bool,
    pub want_fence: bool,
    pub want_shut_down: bool,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub is_fenced: bool,
    pub in_controlled_shutdown: bool,
    /// The controlled shutdown is complete: the broker leads nothing and may stop.
    pub should_shut_down: bool,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// Chosen by the shell (random), so that this state machine stays deterministic.
    pub topic_id: Uuid,
    /// -1 for `num.partitions`.
    pub num_partitions: i32,
    /// -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Replicas per partition, in partition order; empty for automatic placement.
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, String)>,
}

/// AlterPartition's fields for one partition: the leader's new ISR.
#[derive(Debug, Clone)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Which leader an election looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first assigned replica, if it is in the ISR and eligible.
    Preferred,
    /// Any eligible replica, in or out of the ISR, for a partition that has no leader.
    Unclean,
}

/// The active controller's state.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    image: MetadataImage,
    /// When each broker was last heard from. Not in the log: a controller that takes over
    /// gives every broker a whole session from its own start, as Kafka's does.
    last_contact_ms: BTreeMap<i32, i64>,
    /// Where automatic placement starts its round, moved on by every topic so that leaders
    /// spread over the brokers.
    placement_start: usize,
    /// When leader imbalance was last checked (not in the log: a new controller waits one
    /// interval from its start).
    last_imbalance_check_ms: i64,
}

impl Controller {
    /// A controller over the committed image, at time `now_ms`.
    pub fn new(config: ControllerConfig, image: MetadataImage, now_ms: i64) -> Self {
        let last_contact_ms = image.brokers().map(|b| (b.broker_id, now_ms)).collect();
        Self {
            config,
            image,
            last_contact_ms,
            placement_start: 0,
            last_imbalance_check_ms: now_ms,
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The image with every record this controller has decided on applied.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Applies a record this controller decided on and keeps it for the caller.
    fn emit(&mut self, out: &mut Vec<MetadataRecord>, record: MetadataRecord) {
        if let Err(e) = self.image.apply(&record) {
            panic!("the controller wrote a record that does not apply: {e}: {record:?}");
        }
        out.push(record);
    }

    /// Checks, after each call, the invariant no single record can: leaders are live.
    fn done<T>(&self, value: T, records: Vec<MetadataRecord>) -> (T, Vec<MetadataRecord>) {
        if let Err(e) = self.image.check_leaders() {
            panic!("controller invariant broken: {e}");
        }
        (value, records)
    }

    /// Names the cluster `id` unless it is named already: the first active controller gives
    /// the whole cluster its own data directory's id, so that every broker reports one.
    pub fn ensure_cluster_id(&mut self, id: &str) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        if self.image.cluster_id().is_none() && !id.is_empty() && id.len() <= NAME_BYTES_MAX {
            self.emit(
                &mut records,
                MetadataRecord::Config {
                    resource_type: crate::records::RESOURCE_BROKER,
                    resource_name: String::new(),
                    name: crate::image::CLUSTER_ID_CONFIG.to_string(),
                    value: Some(id.to_string()),
                },
            );
        }
        records
    }

    // ---- Cluster control: registration, heartbeats, fencing ----

    /// Registers a broker process, which starts fenced. Returns its broker epoch.
    pub fn register_broker(
        &mut self,
        request: RegistrationRequest,
        now_ms: i64,
    ) -> Result<(i64, Vec<MetadataRecord>), ControllerError> {
        if request.broker_id < 0 {
            return refuse(codes::INVALID_REQUEST, "broker ids are not negative");
        }
        if request.endpoints.len() > ENDPOINTS_PER_BROKER_MAX {
            return refuse(
                codes::INVALID_REQUEST,
                format!("more than {ENDPOINTS_PER_BROKER_MAX} listeners"),
            );
        }
        let too_long = |s: &str| s.len() > NAME_BYTES_MAX;
        if request
            .endpoints
            .iter()
            .any(|e| too_long(&e.listener) || too_long(&e.host))
            || request.rack.as_deref().is_some_and(too_long)
        {
            return refuse(
                codes::INVALID_REQUEST,
                format!("a listener, host or rack name longer than {NAME_BYTES_MAX} bytes"),
            );
        }
        let mut records = Vec::new();
        if let Some(existing) = self.image.broker(request.broker_id).cloned() {
            if existing.incarnation_id == request.incarnation_id {
                // A retry of a registration that was committed.
                self.last_contact_ms.insert(request.broker_id, now_ms);
                return Ok(self.done(existing.broker_epoch, records));
            }
            if !existing.fenced {
                // The broker's own next process says which registration it replaces (Kafka's
                // PreviousBrokerEpoch, KIP-966): only a process that holds the broker's data
                // knows it, so it may take over a session that still looks alive (after a
                // kill -9, say). Anyone else waits for that session to expire.
                let replaces_itself = request.previous_broker_epoch == existing.broker_epoch;
                if !replaces_itself && self.session_alive(request.broker_id, now_ms) {
                    return refuse(
                        codes::DUPLICATE_BROKER_REGISTRATION,
                        format!(
                            "broker {} is registered by another live process",
                            request.broker_id
                        ),
                    );
                }
                self.fence(&mut records, request.broker_id, existing.broker_epoch);
            }
            if request.previous_broker_epoch != existing.broker_epoch {
                // Not the process whose data the last registration vouched for (a new or
                // wiped data directory): it may lack committed records, so it is no longer
                // an eligible leader replica anywhere (KIP-966's rule for an unclean start;
                // a crash keeps what a follower reported, as followers fsync first).
                self.drop_from_elr(&mut records, request.broker_id);
            }
        }
        let broker_epoch = self.image.last_broker_epoch() + 1;
        self.emit(
            &mut records,
            MetadataRecord::RegisterBroker(BrokerRegistration {
                broker_id: request.broker_id,
                incarnation_id: request.incarnation_id,
                broker_epoch,
                endpoints: request.endpoints,
                rack: request.rack,
                fenced: true,
                in_controlled_shutdown: false,
            }),
        );
        self.last_contact_ms.insert(request.broker_id, now_ms);
        Ok(self.done(broker_epoch, records))
    }

    /// The registration of a broker whose request carries `broker_epoch`, refused if that
    /// process has been replaced.
    fn current_process(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<BrokerRegistration, ControllerError> {
        match self.image.broker(broker_id) {
            Some(b) if b.broker_epoch == broker_epoch => Ok(b.clone()),
            Some(b) => refuse(
                codes::STALE_BROKER_EPOCH,
                format!(
                    "broker {broker_id} is at epoch {}, not {broker_epoch}",
                    b.broker_epoch
                ),
            ),
            None => refuse(
                codes::BROKER_ID_NOT_REGISTERED,
                format!("broker {broker_id} is not registered"),
            ),
        }
    }

    fn session_alive(&self, broker_id: i32, now_ms: i64) -> bool {
        self.last_contact_ms
            .get(&broker_id)
            .is_some_and(|&t| now_ms.saturating_sub(t) <= self.config.broker_session_timeout_ms)
    }

    /// A broker's heartbeat: keeps its session, unfences it once it has caught up, and runs
    /// its controlled shutdown.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now_ms: i64,
    ) -> Result<(HeartbeatReply, Vec<MetadataRecord>), ControllerError> {
        let broker = self.current_process(hb.broker_id, hb.broker_epoch)?;
        self.last_contact_ms.insert(hb.broker_id, now_ms);
        let mut records = Vec::new();
        let epoch = broker.broker_epoch;
        let mut should_shut_down = false;
        if hb.want_shut_down {
            if !broker.in_controlled_shutdown && !broker.fenced {
                self.emit(
                    &mut records,
                    MetadataRecord::BrokerRegistrationChange {
                        broker_id: hb.broker_id,
                        broker_epoch: epoch,
                        in_controlled_shutdown: true,
                    },
                );
                self.move_leadership_away(&mut records, hb.broker_id);
            }
            if self.leads_nothing(hb.broker_id) {
                should_shut_down = true;
                if !self.image.broker(hb.broker_id).is_some_and(|b| b.fenced) {
                    self.fence(&mut records, hb.broker_id, epoch);
                }
            }
        } else if broker.fenced && hb.caught_up && !hb.want_fence {
            if broker.in_controlled_shutdown {
                // A broker that gave up shutting down starts over.
                self.emit(
                    &mut records,
                    MetadataRecord::BrokerRegistrationChange {
                        broker_id: hb.broker_id,
                        broker_epoch: epoch,
                        in_controlled_shutdown: false,
                    },
                );
            }
            self.emit(
                &mut records,
                MetadataRecord::UnfenceBroker {
                    broker_id: hb.broker_id,
                    broker_epoch: epoch,
                },
            );
            self.elect_offline_partitions(&mut records);
        } else if !broker.fenced && hb.want_fence {
            self.fence(&mut records, hb.broker_id, epoch);
        }
        let now = self.image.broker(hb.broker_id).expect("registered above");
        let reply = HeartbeatReply {
            is_fenced: now.fenced,
            in_controlled_shutdown: now.in_controlled_shutdown,
            should_shut_down,
        };
        Ok(self.done(reply, records))
    }

    /// Fences every unfenced broker whose session has expired, moving its leaderships.
    pub fn tick(&mut self, now_ms: i64) -> Vec<MetadataRecord> {
        let expired: Vec<(i32, i64)> = self
            .image
            .brokers()
            .filter(|b| !b.fenced && !self.session_alive(b.broker_id, now_ms))
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect();
        let mut records = Vec::new();
        for (broker_id, epoch) in expired {
            self.fence(&mut records, broker_id, epoch);
        }
        if self.config.auto_leader_rebalance_enable
            && now_ms - self.last_imbalance_check_ms
                >= self.config.leader_imbalance_check_interval_ms
        {
            self.last_imbalance_check_ms = now_ms;
            self.rebalance_leaders(&mut records);
        }
        self.done((), records).1
    }

    /// Kafka's automatic preferred-leader election: every broker whose share of the
    /// partitions it prefers but does not lead is above
    /// `leader.imbalance.per.broker.percentage` gets back each of them where it is in the
    /// ISR and eligible. Bounded by what one log entry may hold.
    fn rebalance_leaders(&mut self, records: &mut Vec<MetadataRecord>) {
        let mut preferred: BTreeMap<i32, (usize, Vec<(Uuid, i32)>)> = BTreeMap::new();
        for topic in self.image.topics() {
            for (&partition, p) in &topic.partitions {
                let entry = preferred.entry(p.preferred_leader()).or_default();
                entry.0 += 1;
                if p.leader != p.preferred_leader() {
                    entry.1.push((topic.topic_id, partition));
                }
            }
        }
        let pct = self.config.leader_imbalance_per_broker_percentage;
        let mut changes = Vec::new();
        for (broker, (total, imbalanced)) in preferred {
            if imbalanced.is_empty() || (imbalanced.len() as i64) * 100 <= pct * total as i64 {
                continue;
            }
            if !self.is_eligible(broker) {
                continue;
            }
            for (topic_id, partition) in imbalanced {
                let Some(p) = self.image.partition(topic_id, partition).cloned() else {
                    continue;
                };
                if !p.isr.contains(&broker) {
                    continue;
                }
                let unclean = false;
                let change = self.change_for(
                    topic_id,
                    partition,
                    &p,
                    p.isr.clone(),
                    Some(ElectionType::Preferred),
                    unclean,
                );
                changes.extend(change);
                if changes.len() >= self.config.records_per_call_max / 2 {
                    break;
                }
            }
        }
        for change in changes {
            self.emit(records, MetadataRecord::PartitionChange(change));
        }
    }

    /// Removes a broker's registration (UnregisterBroker), fencing it first. Where it was
    /// the last member of an ISR it stays there: only it holds every committed record.
    pub fn unregister_broker(
        &mut self,
        broker_id: i32,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(broker) = self.image.broker(broker_id).cloned() else {
            return refuse(
                codes::BROKER_ID_NOT_REGISTERED,
                format!("broker {broker_id} is not registered"),
            );
        };
        let mut records = Vec::new();
        if !broker.fenced {
            self.fence(&mut records, broker_id, broker.broker_epoch);
        }
        self.emit(
            &mut records,
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch: broker.broker_epoch,
            },
        );
        self.last_contact_ms.remove(&broker_id);
        Ok(self.done((), records).1)
    }

    fn fence(&mut self, records: &mut Vec<MetadataRecord>, broker_id: i32, broker_epoch: i64) {
        self.emit(
            records,
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            },
        );
        self.move_leadership_away(records, broker_id);
    }

    fn leads_nothing(&self, broker_id: i32) -> bool {
        self.image
            .topics()
            .all(|t| t.partitions.values().all(|p| p.leader != broker_id))
    }

    fn is_eligible(&self, broker_id: i32) -> bool {
        self.image
            .broker(broker_id)
            .is_some_and(|b| b.is_eligible())
    }

    fn unclean_allowed(&self, topic_name: &str) -> bool {
        self.image
            .configs(RESOURCE_TOPIC, topic_name)
            .and_then(|c| c.get("unclean.leader.election.enable"))
            .map(|v| v == "true")
            .unwrap_or(self.config.unclean_leader_election_enable)
    }

    /// `min.insync.replicas` of a topic as KIP-966 applies it: its config, else the cluster
    /// default, and never more than its `replicas` (a partition of fewer replicas is never
    /// below it).
    fn min_insync_replicas(&self, topic_name: &str, replicas: usize) -> usize {
        let configured = self
            .image
            .configs(RESOURCE_TOPIC, topic_name)
            .and_then(|c| c.get("min.insync.replicas"))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(self.config.min_insync_replicas);
        (configured.max(1) as usize).min(replicas)
    }

    /// KIP-966's eligible leader replicas of partition `p` once its ISR is `isr` and its
    /// replicas `replicas`. While the ISR is below `min.insync.replicas` its leader's high
    /// watermark does not move, so every replica that was in sync (or eligible) and no longer
    /// is in the ISR still holds every committed record: those are eligible. Once the ISR
    /// reaches `min.insync.replicas` the high watermark moves again and the set is empty.
    fn next_elr(
        &self,
        topic_id: Uuid,
        p: &PartitionRegistration,
        isr: &[i32],
        replicas: &[i32],
    ) -> Vec<i32> {
        let Some(topic) = self.image.topic(topic_id) else {
            return Vec::new();
        };
        if isr.len() >= self.min_insync_replicas(&topic.name, replicas.len()) {
            return Vec::new();
        }
        let mut elr = Vec::new();
        for &b in p.elr.iter().chain(&p.isr) {
            if !isr.contains(&b) && replicas.contains(&b) && !elr.contains(&b) {
                elr.push(b);
            }
        }
        elr
    }

    /// Removes `broker_id` from the eligible leader replicas of every partition.
    fn drop_from_elr(&mut self, records: &mut Vec<MetadataRecord>, broker_id: i32) {
        let mut changes = Vec::new();
        for topic in self.image.topics() {
            for (&partition, p) in &topic.partitions {
                if p.elr.contains(&broker_id) {
                    changes.push(PartitionChange {
                        topic_id: topic.topic_id,
                        partition,
                        leader: LEADER_UNCHANGED,
                        elr: Some(p.elr.iter().copied().filter(|&b| b != broker_id).collect()),
                        isr: None,
                        replicas: None,
                        removing_replicas: None,
                        adding_replicas: None,
                    });
                }
            }
        }
        for change in changes {
            self.emit(records, MetadataRecord::PartitionChange(change));
        }
    }

    /// Takes a broker that can no longer serve out of every ISR it is in (but never empties
    /// an ISR: the last member stays, and may become eligible when another is elected) and
    /// elects new leaders where it led.
    fn move_leadership_away(&mut self, records: &mut Vec<MetadataRecord>, broker_id: i32) {
        let mut changes = Vec::new();
        for topic in self.image.topics() {
            for (&partition, p) in &topic.partitions {
                if !p.isr.contains(&broker_id) && p.leader != broker_id {
                    continue;
                }
                let mut isr: Vec<i32> = p.isr.iter().copied().filter(|&b| b != broker_id).collect();
                if isr.is_empty() {
                    isr = p.isr.clone();
                }
                let unclean = self.unclean_allowed(&topic.name);
                changes.extend(self.change_for(topic.topic_id, partition, p, isr, None, unclean));
            }
        }
        for change in changes {
            self.emit(records, MetadataRecord::PartitionChange(change));
        }
    }

    /// Elects a leader for every partition without one that now has an eligible candidate.
    fn elect_offline_partitions(&mut self, records: &mut Vec<MetadataRecord>) {
        let mut changes = Vec::new();
        for topic in self.image.topics() {
            let unclean = self.unclean_allowed(&topic.name);
            for (&partition, p) in &topic.partitions {
                if p.leader == NO_LEADER {
                    changes.extend(self.change_for(
                        topic.topic_id,
                        partition,
                        p,
                        p.isr.clone(),
                        None,
                        unclean,
                    ));
                }
            }
        }
        for change in changes {
            self.emit(records, MetadataRecord::PartitionChange(change));
        }
    }

    /// The leader a partition with this ISR should have: the current one if it is still in
    /// the ISR and eligible, else the first eligible ISR member in replica order, else (only
    /// where allowed) any eligible replica, whose ISR then is itself alone.
    fn elect(
        &self,
        p: &PartitionRegistration,
        isr: &[i32],
        prefer: Option<ElectionType>,
        unclean_allowed: bool,
    ) -> (i32, Vec<i32>, bool) {
        let usable = |b: &i32| isr.contains(b) && self.is_eligible(*b);
        if prefer == Some(ElectionType::Preferred) && usable(&p.preferred_leader()) {
            return (p.preferred_leader(), isr.to_vec(), true);
        }
        if p.leader != NO_LEADER && usable(&p.leader) {
            return (p.leader, isr.to_vec(), true);
        }
        if let Some(&b) = p.replicas.iter().find(|b| usable(b)) {
            return (b, isr.to_vec(), true);
        }
        // KIP-966: no in-sync replica can lead, but an eligible leader replica holds every
        // committed record: a clean election, with an ISR of it alone.
        if let Some(&b) = p
            .replicas
            .iter()
            .find(|&&b| p.elr.contains(&b) && !isr.contains(&b) && self.is_eligible(b))
        {
            return (b, vec![b], true);
        }
        if unclean_allowed || prefer == Some(ElectionType::Unclean) {
            if let Some(&b) = p.replicas.iter().find(|&&b| self.is_eligible(b)) {
                return (b, vec![b], false);
            }
        }
        (NO_LEADER, isr.to_vec(), true)
    }

    /// The change that gives a partition `isr` and the leader [`Controller::elect`] picks for
    /// it, or `None` if nothing would change.
    fn change_for(
        &self,
        topic_id: Uuid,
        partition: i32,
        p: &PartitionRegistration,
        isr: Vec<i32>,
        prefer: Option<ElectionType>,
        unclean_allowed: bool,
    ) -> Option<PartitionChange> {
        let (leader, isr, clean) = self.elect(p, &isr, prefer, unclean_allowed);
        // An unclean election may lose committed records: nothing is eligible after it.
        let elr = if clean {
            self.next_elr(topic_id, p, &isr, &p.replicas)
        } else {
            Vec::new()
        };
        if leader == p.leader && isr == p.isr && elr == p.elr {
            return None;
        }
        Some(PartitionChange {
            topic_id,
            partition,
            leader: if leader == p.leader {
                LEADER_UNCHANGED
            } else {
                leader
            },
            elr: (elr != p.elr).then_some(elr),
            isr: (isr != p.isr).then_some(isr),
            replicas: None,
            removing_replicas: None,
            adding_replicas: None,
        })
    }

    // ---- Replication control: topics, ISR changes, elections ----

    /// Creates a topic: its partitions placed (or as assigned), each led by its first
    /// eligible replica, with every eligible replica in its ISR.
    pub fn create_topic(
        &mut self,
        topic: NewTopic,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        self.create_topic_at(topic, 0)
    }

    /// [`Controller::create_topic`] with every partition starting in `leader_epoch`: for a
    /// topic whose logs exist already (a data directory that predates the metadata log),
    /// whose batches carry epochs the new leaders must not go below.
    pub fn create_topic_at(
        &mut self,
        topic: NewTopic,
        leader_epoch: i32,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if leader_epoch < 0 {
            return refuse(codes::INVALID_REQUEST, "a negative leader epoch");
        }
        validate_topic_name(&topic.name)?;
        if topic
            .configs
            .iter()
            .any(|(name, value)| name.len() > NAME_BYTES_MAX || value.len() > i16::MAX as usize)
        {
            return refuse(codes::INVALID_REQUEST, "a config name or value too long");
        }
        if self.image.topic_by_name(&topic.name).is_some() {
            return refuse(
                codes::TOPIC_ALREADY_EXISTS,
                format!("topic '{}' already exists", topic.name),
            );
        }
        if self.image.topic(topic.topic_id).is_some() {
            return refuse(codes::INVALID_REQUEST, "that topic id is taken");
        }
        let assignments = if topic.assignments.is_empty() {
            let partitions = match topic.num_partitions {
                -1 => self.config.num_partitions,
                n => n,
            };
            let factor = match topic.replication_factor {
                -1 => self.config.default_replication_factor,
                n => n,
            };
            self.place(partitions, factor)?
        } else {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return refuse(
                    codes::INVALID_REQUEST,
                    "both a replica assignment and a partition count or replication factor",
                );
            }
            self.check_assignments(&topic.assignments)?;
            topic.assignments
        };
        let writes = 1 + assignments.len() + topic.configs.len();
        if writes > self.config.records_per_call_max {
            return refuse(
                codes::POLICY_VIOLATION,
                format!(
                    "creating '{}' takes {writes} metadata records, over the {} one request \
                     may write: create fewer partitions at once",
                    topic.name, self.config.records_per_call_max
                ),
            );
        }
        let new_partitions = self.new_partitions(topic.topic_id, 0, assignments, leader_epoch)?;
        let mut records = Vec::new();
        self.emit(
            &mut records,
            MetadataRecord::Topic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            },
        );
        for partition in new_partitions {
            self.emit(&mut records, MetadataRecord::Partition(partition));
        }
        for (name, value) in topic.configs {
            self.emit(
                &mut records,
                MetadataRecord::Config {
                    resource_type: RESOURCE_TOPIC,
                    resource_name: topic.name.clone(),
                    name,
                    value: Some(value),
                },
            );
        }
        Ok(self.done((), records).1)
    }

    /// The records of new partitions numbered from `first`, one per replica list: the ISR is
    /// the eligible replicas, the leader the first of them.
    fn new_partitions(
        &self,
        topic_id: Uuid,
        first: i32,
        assignments: Vec<Vec<i32>>,
        leader_epoch: i32,
    ) -> Result<Vec<PartitionRecord>, ControllerError> {
        let mut out = Vec::with_capacity(assignments.len());
        for (i, replicas) in assignments.into_iter().enumerate() {
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|&b| self.is_eligible(b))
                .collect();
            // check_assignments and place only pass partitions with an eligible replica.
            let Some(&leader) = isr.first() else {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    "every replica of a new partition is fenced",
                );
            };
            let partition = i32::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .ok_or_else(|| ControllerError {
                    code: codes::INVALID_PARTITIONS,
                    message: "too many partitions".into(),
                })?;
            out.push(PartitionRecord {
                topic_id,
                partition,
                registration: PartitionRegistration {
                    replicas,
                    isr,
                    removing_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                    elr: Vec::new(),
                    leader,
                    leader_epoch,
                    partition_epoch: 0,
                },
            });
        }
        Ok(out)
    }

    /// Replica lists for `partitions` partitions of `factor` replicas each, round-robin over
    /// the eligible brokers from a start that moves on with every topic.
    fn place(&mut self, partitions: i32, factor: i16) -> Result<Vec<Vec<i32>>, ControllerError> {
        if partitions < 1 || partitions > self.config.topic_partitions_max {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!(
                    "number of partitions must be between 1 and {}",
                    self.config.topic_partitions_max
                ),
            );
        }
        let brokers: Vec<i32> = self
            .image
            .brokers()
            .filter(|b| b.is_eligible())
            .map(|b| b.broker_id)
            .collect();
        if factor < 1 || factor as usize > brokers.len() {
            return refuse(
                codes::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {factor} with {} brokers available",
                    brokers.len()
                ),
            );
        }
        let start = self.placement_start;
        self.placement_start = self.placement_start.wrapping_add(1);
        Ok((0..partitions as usize)
            .map(|p| {
                (0..factor as usize)
                    .map(|r| brokers[(start + p + r) % brokers.len()])
                    .collect()
            })
            .collect())
    }

    fn check_assignments(&self, assignments: &[Vec<i32>]) -> Result<(), ControllerError> {
        if assignments.len() > self.config.topic_partitions_max as usize {
            return refuse(codes::INVALID_PARTITIONS, "too many partitions");
        }
        let factor = assignments[0].len();
        for replicas in assignments {
            if replicas.is_empty() || replicas.len() != factor {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    "every partition needs the same, non-zero number of replicas",
                );
            }
            if replicas
                .iter()
                .enumerate()
                .any(|(i, b)| replicas[..i].contains(b))
            {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    "a broker is listed twice",
                );
            }
            if let Some(b) = replicas.iter().find(|&&b| self.image.broker(b).is_none()) {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!("broker {b} is not registered"),
                );
            }
            if !replicas.iter().any(|&b| self.is_eligible(b)) {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    "every replica of a partition is fenced",
                );
            }
        }
        Ok(())
    }

    /// Adds partitions to a topic, to `total` in all (Kafka's CreatePartitions): placed
    /// round-robin with the replication factor of its partition 0, or on `assignments` (one
    /// replica list per new partition) when given. Leaders are the first eligible replicas.
    pub fn create_partitions(
        &mut self,
        name: &str,
        total: i32,
        assignments: Vec<Vec<i32>>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(topic) = self.image.topic_by_name(name) else {
            return refuse(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic '{name}'"),
            );
        };
        let topic_id = topic.topic_id;
        let current = topic.partitions.len() as i32;
        let factor = topic
            .partitions
            .get(&0)
            .map_or(1, |p| p.replicas.len() as i16);
        if total <= current {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!("topic currently has {current} partitions, which is not fewer than the requested {total}"),
            );
        }
        if total > self.config.topic_partitions_max {
            return refuse(
                codes::INVALID_PARTITIONS,
                format!(
                    "number of partitions must be at most {}",
                    self.config.topic_partitions_max
                ),
            );
        }
        let added = total - current;
        if added as usize + 1 > self.config.records_per_call_max {
            return refuse(
                codes::POLICY_VIOLATION,
                format!(
                    "adding {added} partitions takes more metadata records than the {} one \
                     request may write: add fewer at once",
                    self.config.records_per_call_max
                ),
            );
        }
        let assignments = if assignments.is_empty() {
            self.place(added, factor)?
        } else {
            if assignments.len() != added as usize {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "{} replica lists for {added} new partitions",
                        assignments.len()
                    ),
                );
            }
            self.check_assignments(&assignments)?;
            if assignments[0].len() != factor as usize {
                return refuse(
                    codes::INVALID_REPLICA_ASSIGNMENT,
                    format!("the topic's replication factor is {factor}"),
                );
            }
            assignments
        };
        // Every new partition is decided before any is applied: a refusal changes nothing.
        let new_partitions = self.new_partitions(topic_id, current, assignments, 0)?;
        let mut records = Vec::new();
        for partition in new_partitions {
            self.emit(&mut records, MetadataRecord::Partition(partition));
        }
        Ok(self.done((), records).1)
    }

    /// Sets (`Some`) or removes (`None`) configs of a topic. Which names and values are valid
    /// is the broker's to check (it knows the topic configs); this bounds their sizes.
    pub fn alter_topic_configs(
        &mut self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(topic_id) = self.image.topic_by_name(name).map(|t| t.topic_id) else {
            return refuse(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic '{name}'"),
            );
        };
        let mut records = self.set_configs(RESOURCE_TOPIC, name, changes)?;
        // A lower min.insync.replicas lets high watermarks move where an ISR now reaches
        // it: replicas out of that ISR are no longer sure to hold what gets committed.
        self.settle_elr(&mut records, topic_id);
        Ok(self.done((), records).1)
    }

    /// Empties the eligible leader replicas of every partition of `topic_id` whose ISR
    /// reaches its `min.insync.replicas`.
    fn settle_elr(&mut self, records: &mut Vec<MetadataRecord>, topic_id: Uuid) {
        let Some(topic) = self.image.topic(topic_id) else {
            return;
        };
        let stale: Vec<(i32, Vec<i32>)> = topic
            .partitions
            .iter()
            .filter(|(_, p)| !p.elr.is_empty())
            .map(|(&i, p)| (i, self.next_elr(topic_id, p, &p.isr, &p.replicas)))
            .filter(|(i, elr)| *elr != topic.partitions[i].elr)
            .collect();
        for (partition, elr) in stale {
            self.emit(
                records,
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id,
                    partition,
                    leader: LEADER_UNCHANGED,
                    elr: Some(elr),
                    isr: None,
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                }),
            );
        }
    }

    /// Writes the config changes of one resource that change something, within the bounds
    /// one call may write.
    fn set_configs(
        &mut self,
        resource_type: i8,
        resource_name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if changes.len() > self.config.records_per_call_max {
            return refuse(codes::POLICY_VIOLATION, "too many config changes at once");
        }
        if changes.iter().any(|(key, value)| {
            key.len() > NAME_BYTES_MAX
                || value.as_ref().is_some_and(|v| v.len() > i16::MAX as usize)
        }) {
            return refuse(codes::INVALID_REQUEST, "a config name or value too long");
        }
        let mut records = Vec::new();
        for (key, value) in changes {
            let current = self
                .image
                .configs(resource_type, resource_name)
                .and_then(|set| set.get(&key).cloned());
            if current == value {
                continue;
            }
            self.emit(
                &mut records,
                MetadataRecord::Config {
                    resource_type,
                    resource_name: resource_name.to_string(),
                    name: key,
                    value,
                },
            );
        }
        Ok(self.done((), records).1)
    }

    /// Sets or removes dynamic broker configs of broker `resource_name` (its id), or of
    /// every broker (`""`). The broker that forwards the change checked names and values;
    /// the cluster id, which lives among them, cannot be changed.
    pub fn alter_broker_configs(
        &mut self,
        resource_name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if !resource_name.is_empty() && resource_name.parse::<i32>().is_err() {
            return refuse(
                codes::INVALID_REQUEST,
                format!("'{resource_name}' is not a broker id"),
            );
        }
        if changes
            .iter()
            .any(|(key, _)| key == crate::image::CLUSTER_ID_CONFIG)
        {
            return refuse(codes::INVALID_REQUEST, "the cluster id cannot be changed");
        }
        self.set_configs(crate::records::RESOURCE_BROKER, resource_name, changes)
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: &str) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(topic) = self.image.topic_by_name(name) else {
            return refuse(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("no topic '{name}'"),
            );
        };
        let topic_id = topic.topic_id;
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::RemoveTopic { topic_id });
        Ok(self.done((), records).1)
    }

    /// A leader's request to change its partition's ISR (Kafka's AlterPartition): shrink it
    /// by followers that fell behind, or grow it by followers that caught up.
    pub fn alter_partition(
        &mut self,
        request: AlterPartition,
    ) -> Result<(PartitionRegistration, Vec<MetadataRecord>), ControllerError> {
        self.current_process(request.broker_id, request.broker_epoch)?;
        let Some(topic) = self.image.topic(request.topic_id) else {
            return refuse(codes::UNKNOWN_TOPIC_ID, "unknown topic id");
        };
        let Some(p) = topic.partitions.get(&request.partition).cloned() else {
            return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
        };
        if p.leader != request.broker_id {
            return refuse(
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("broker {} does not lead this partition", request.broker_id),
            );
        }
        if request.leader_epoch != p.leader_epoch {
            return refuse(
                codes::FENCED_LEADER_EPOCH,
                format!(
                    "leader epoch {} is not the current {}",
                    request.leader_epoch, p.leader_epoch
                ),
            );
        }
        if request.partition_epoch != p.partition_epoch {
            return refuse(
                codes::INVALID_UPDATE_VERSION,
                format!(
                    "partition epoch {} is not the current {}",
                    request.partition_epoch, p.partition_epoch
                ),
            );
        }
        let isr = request.new_isr;
        if !isr.contains(&p.leader)
            || isr.iter().any(|b| !p.replicas.contains(b))
            || isr.iter().enumerate().any(|(i, b)| isr[..i].contains(b))
        {
            return refuse(
                codes::INVALID_REQUEST,
                "the ISR must hold the leader and distinct replicas only",
            );
        }
        if let Some(b) = isr
            .iter()
            .find(|&&b| !p.isr.contains(&b) && !self.is_eligible(b))
        {
            return refuse(
                codes::INELIGIBLE_REPLICA,
                format!("broker {b} is fenced or shutting down and cannot join the ISR"),
            );
        }
        let mut records = Vec::new();
        if isr != p.isr {
            let elr = self.next_elr(request.topic_id, &p, &isr, &p.replicas);
            self.emit(
                &mut records,
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: request.topic_id,
                    partition: request.partition,
                    leader: LEADER_UNCHANGED,
                    elr: (elr != p.elr).then_some(elr),
                    isr: Some(isr),
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                }),
            );
            // The added replicas may all be in sync now.
            self.complete_reassignment(&mut records, request.topic_id, request.partition);
        }
        let now = self
            .image
            .partition(request.topic_id, request.partition)
            .expect("checked above")
            .clone();
        Ok(self.done(now, records))
    }

    /// Elects a leader for one partition: the preferred replica (ELECTION_NOT_NEEDED if it
    /// leads already), or any eligible replica for a partition without a leader.
    pub fn elect_leader(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        election: ElectionType,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(p) = self.image.partition(topic_id, partition).cloned() else {
            return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
        };
        match election {
            ElectionType::Preferred if p.leader == p.preferred_leader() => {
                return refuse(codes::ELECTION_NOT_NEEDED, "the preferred replica leads")
            }
            ElectionType::Preferred
                if !p.isr.contains(&p.preferred_leader())
                    || !self.is_eligible(p.preferred_leader()) =>
            {
                return refuse(
                    codes::PREFERRED_LEADER_NOT_AVAILABLE,
                    "the preferred replica is not in the ISR or not eligible",
                )
            }
            ElectionType::Unclean if p.leader != NO_LEADER => {
                return refuse(codes::ELECTION_NOT_NEEDED, "the partition has a leader")
            }
            _ => {}
        }
        let change = self.change_for(
            topic_id,
            partition,
            &p,
            p.isr.clone(),
            Some(election),
            false,
        );
        let mut records = Vec::new();
        match change {
            Some(change) => self.emit(&mut records, MetadataRecord::PartitionChange(change)),
            None if election == ElectionType::Unclean => {
                return refuse(
                    codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                    "no replica of the partition is eligible",
                )
            }
            None => {}
        }
        Ok(self.done((), records).1)
    }
}

impl Controller {
    // ---- Reassignment (KIP-455) ----

    /// AlterPartitionReassignments for one partition: `Some(target)` moves it to those
    /// replicas, `None` cancels the reassignment under way. The partition's replicas become
    /// the target followed by the original replicas not in it; the added ones catch up as
    /// followers, and once every target replica is in the ISR
    /// ([`Controller::complete_reassignment`], run on every ISR change) the others leave.
    /// Cancelling goes back to the original replicas.
    pub fn alter_reassignment(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(p) = self.image.partition(topic_id, partition).cloned() else {
            return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
        };
        let original = p.original_replicas();
        let (replicas, adding, removing) = match target {
            None if !p.is_reassigning() => {
                return refuse(
                    codes::NO_REASSIGNMENT_IN_PROGRESS,
                    "no reassignment is in progress",
                )
            }
            None => (original.clone(), Vec::new(), Vec::new()),
            Some(target) => {
                let duplicated = target
                    .iter()
                    .enumerate()
                    .any(|(i, b)| target[..i].contains(b));
                if target.is_empty() || duplicated {
                    return refuse(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        "the target replicas must be distinct and at least one",
                    );
                }
                if let Some(b) = target.iter().find(|&&b| self.image.broker(b).is_none()) {
                    return refuse(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        format!("broker {b} is not registered"),
                    );
                }
                let mut replicas = target.clone();
                replicas.extend(original.iter().filter(|b| !target.contains(b)));
                let adding = target
                    .iter()
                    .copied()
                    .filter(|b| !original.contains(b))
                    .collect();
                let removing = original
                    .iter()
                    .copied()
                    .filter(|b| !target.contains(b))
                    .collect();
                (replicas, adding, removing)
            }
        };
        // Replicas a cancellation drops leave the ISR; a leader among them hands over.
        let isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|b| replicas.contains(b))
            .collect();
        if isr.is_empty() {
            return refuse(
                codes::INVALID_REPLICA_ASSIGNMENT,
                "no in-sync replica would remain",
            );
        }
        let leader = if isr.contains(&p.leader) {
            LEADER_UNCHANGED
        } else {
            replicas
                .iter()
                .copied()
                .find(|b| isr.contains(b) && self.is_eligible(*b))
                .unwrap_or(NO_LEADER)
        };
        let mut records = Vec::new();
        let elr = self.next_elr(topic_id, &p, &isr, &replicas);
        self.emit(
            &mut records,
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition,
                leader,
                elr: (elr != p.elr).then_some(elr),
                isr: (isr != p.isr).then_some(isr),
                replicas: Some(replicas),
                removing_replicas: Some(removing),
                adding_replicas: Some(adding),
            }),
        );
        self.complete_reassignment(&mut records, topic_id, partition);
        Ok(self.done((), records).1)
    }

    /// Ends the reassignment of a partition once every target replica is in its ISR: the
    /// removed replicas leave the replicas and the ISR, and a leader among them hands over
    /// to the first target replica in the ISR (Kafka's rule).
    pub(crate) fn complete_reassignment(
        &mut self,
        records: &mut Vec<MetadataRecord>,
        topic_id: Uuid,
        partition: i32,
    ) {
        let Some(p) = self.image.partition(topic_id, partition).cloned() else {
            return;
        };
        if !p.is_reassigning() {
            return;
        }
        let target = p.target_replicas();
        if !target.iter().all(|b| p.isr.contains(b)) {
            return;
        }
        let isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|b| target.contains(b))
            .collect();
        let leader = if target.contains(&p.leader) {
            LEADER_UNCHANGED
        } else {
            target
                .iter()
                .copied()
                .find(|b| isr.contains(b) && self.is_eligible(*b))
                .unwrap_or(NO_LEADER)
        };
        let elr = self.next_elr(topic_id, &p, &isr, &target);
        self.emit(
            records,
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition,
                leader,
                elr: (elr != p.elr).then_some(elr),
                isr: (isr != p.isr).then_some(isr),
                replicas: Some(target),
                removing_replicas: Some(Vec::new()),
                adding_replicas: Some(Vec::new()),
            }),
        );
    }

    /// Every partition being reassigned: (topic id, partition, registration).
    pub fn reassignments(&self) -> Vec<(Uuid, i32, PartitionRegistration)> {
        self.image
            .topics()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, p)| p.is_reassigning())
                    .map(|(&i, p)| (t.topic_id, i, p.clone()))
            })
            .collect()
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return refuse(
            codes::INVALID_TOPIC_EXCEPTION,
            format!("topic names are 1 to {TOPIC_NAME_BYTES_MAX} characters"),
        );
    }
    if name == "." || name == ".." || !name.chars().all(legal) {
        return refuse(
            codes::INVALID_TOPIC_EXCEPTION,
            format!("illegal topic name '{name}'"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
