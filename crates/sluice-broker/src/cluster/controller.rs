//! The shell around the active controller (`sluice_metadata::Controller`, a state machine
//! without I/O): one task takes brokers' requests and a timer's ticks in turn, asks the
//! controller, writes the records it decided on as one metadata log entry, and answers once
//! that entry is committed.
//!
//! Only the node that leads the quorum answers; the others say who leads. A controller is
//! built from the committed image when this node starts to lead (after every entry of earlier
//! terms is applied), and dropped when a write fails or the term changes: its image may hold
//! records that never committed, so it starts again from what did, as Kafka's controller
//! reverts to its last committed state.

use std::time::Duration;

use sluice_metadata::{
    codes, records::encode_batch, AlterPartition, Controller, ControllerConfig, ControllerError,
    ElectionType, Endpoint, Heartbeat, MetadataRecord, NewTopic, RegistrationRequest,
};
use sluice_quorum::openraft::{self, ServerState};
use sluice_quorum::{MetadataBatch, MetadataView, Raft};
use tokio::sync::{mpsc, watch};

use super::rpc::{Call, ControllerReply, ControllerRequest, QuorumDescription, ReplicaDescription};

/// How often the controller checks for brokers whose session has expired.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How long the controller waits for a metadata log entry to commit (or for the entries of
/// earlier terms to apply) before it gives up its state and answers NotController: a leader
/// cut off from the majority never commits, and must not hold every request behind it.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct ControllerShell {
    pub node_id: i32,
    pub raft: Raft,
    pub view: MetadataView,
    pub config: ControllerConfig,
    pub requests: mpsc::Receiver<Call>,
    pub stop: watch::Receiver<bool>,
    /// How long a majority has to confirm this node's leadership before it answers
    /// anything (`controller.quorum.election.timeout.ms`): a leader cut off from the
    /// majority keeps its state in openraft, and must not answer from it.
    pub lease: Duration,
    /// This node's data directory's cluster id, which the first active controller gives
    /// the cluster.
    pub cluster_id: String,
}

/// The most learners (brokers that are not voters) the quorum takes: each is in every
/// membership entry, which must stay within the quorum's frame bound.
const LEARNERS_MAX: usize = 1024;

/// Whether `addr` is a `HOST:PORT` a learner may be reached at.
fn valid_metadata_addr(addr: &str) -> bool {
    addr.len() <= sluice_metadata::controller::NAME_BYTES_MAX
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

impl ControllerShell {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The controller, and the Raft term it was built in.
        let mut active: Option<(u64, Controller)> = None;
        // openraft's own logs are off by default: its fatal errors are reported here, once.
        let mut fatal_reported = false;
        loop {
            if !fatal_reported {
                if let Err(e) = &self.raft.metrics().borrow().running_state {
                    tracing::error!(error = %e, "the metadata quorum stopped on a fatal error; \
                        this node no longer takes part in it");
                    fatal_reported = true;
                }
            }
            let call = tokio::select! {
                call = self.requests.recv() => match call {
                    Some(call) => Some(call),
                    None => return,
                },
                _ = tick.tick() => None,
                _ = self.stop.changed() => return,
            };
            let (request, answer_to) = match call {
                // A caller that gave up is not waited for: its request is not decided.
                Some((_, answer_to)) if answer_to.is_closed() => continue,
                Some((request, answer_to)) => (Some(request), Some(answer_to)),
                None => (None, None),
            };
            let reply = self.handle(&mut active, request).await;
            if let (Some(answer_to), Some(reply)) = (answer_to, reply) {
                let _ = answer_to.send(reply);
            }
        }
    }

    fn not_controller(&self) -> ControllerReply {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader;
        let leader_addr = leader
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
            .map(|n| n.addr)
            .filter(|a| !a.is_empty());
        ControllerReply::NotController {
            leader: leader.and_then(|l| i32::try_from(l).ok()),
            leader_addr,
        }
    }

    /// The quorum as this node, its leader, sees it.
    fn describe_quorum(&self) -> QuorumDescription {
        let m = self.raft.metrics().borrow().clone();
        let now = crate::now_ms();
        let own_end = m.last_log_index.map_or(0, |i| i as i64 + 1);
        let matched = m.replication.clone().unwrap_or_default();
        let replica = |id: u64| {
            let end = if id == self.node_id as u64 {
                own_end
            } else {
                matched
                    .get(&id)
                    .copied()
                    .flatten()
                    .map_or(-1, |l| l.index as i64 + 1)
            };
            // openraft does not say when each follower last answered: -1 (unknown), except
            // for the leader itself.
            ReplicaDescription {
                replica_id: id as i32,
                log_end_offset: end,
                last_caught_up_timestamp: if id == self.node_id as u64 { now } else { -1 },
            }
        };
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().map(replica).collect();
        let observers = membership.learner_ids().map(replica).collect();
        let nodes = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|node| (id, node)))
            .filter_map(|(id, node)| {
                let (host, port) = node.addr.rsplit_once(':')?;
                Some((
                    id as i32,
                    host.trim_matches(['[', ']']).to_string(),
                    port.parse().ok()?,
                ))
            })
            .collect();
        QuorumDescription {
            leader_id: self.node_id,
            leader_epoch: i32::try_from(m.current_term).unwrap_or(i32::MAX),
            high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
            voters,
            observers,
            nodes,
        }
    }

    /// Makes a registered broker that is not a voter a learner of the quorum at `addr`, so
    /// that the leader sends it the metadata log (Kafka's brokers are observers that fetch
    /// it; openraft's leader pushes). Does not wait for the learner to catch up: the broker
    /// reports that itself in its heartbeats.
    async fn ensure_learner(&self, broker_id: i32, addr: String) {
        let id = broker_id as u64;
        let known = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            if membership.voter_ids().any(|v| v == id) {
                return;
            }
            membership.get_node(&id).map(|n| n.addr.clone())
        };
        if known.as_deref() == Some(addr.as_str()) {
            return;
        }
        let learners = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .learner_ids()
            .count();
        if known.is_none() && learners >= LEARNERS_MAX {
            tracing::warn!(
                broker_id,
                learners,
                "the metadata quorum has as many learners as it \
                takes; the broker is not added"
            );
            return;
        }
        let added = tokio::time::timeout(
            COMMIT_TIMEOUT,
            self.raft
                .add_learner(id, openraft::BasicNode::new(addr.clone()), false),
        )
        .await;
        match added {
            Ok(Ok(_)) => tracing::info!(
                broker_id,
                addr,
                "broker added to the metadata quorum as a learner"
            ),
            Ok(Err(e)) => tracing::warn!(broker_id, addr, error = %e,
                "could not add the broker to the metadata quorum as a learner; its next \
                 heartbeat tries again"),
            Err(_) => tracing::warn!(
                broker_id,
                addr,
                "adding the broker as a learner did not \
                commit in time; its next heartbeat tries again"
            ),
        }
    }

    /// One request (or, with `None`, one tick): its reply, if it has one.
    async fn handle(
        &self,
        active: &mut Option<(u64, Controller)>,
        request: Option<ControllerRequest>,
    ) -> Option<ControllerReply> {
        let (leading, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.node_id as u64),
                m.current_term,
            )
        };
        if !leading {
            if active.take().is_some() {
                tracing::info!(node_id = self.node_id, "no longer the active controller");
            }
            return request.map(|_| self.not_controller());
        }
        // Every answer, and every tick, first has a majority confirm this node still leads
        // (Raft's read index), and waits for what it committed to be applied.
        match tokio::time::timeout(self.lease, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "leadership not confirmed");
                *active = None;
                return request.map(|_| self.not_controller());
            }
            Err(_) => {
                if active.take().is_some() {
                    tracing::warn!(
                        node_id = self.node_id,
                        "no majority confirmed this node's leadership within the lease; not \
                         acting as the controller"
                    );
                }
                return request.map(|_| self.not_controller());
            }
        }
        if matches!(request, Some(ControllerRequest::DescribeQuorum)) {
            return Some(ControllerReply::Quorum(self.describe_quorum()));
        }
        if active.as_ref().map(|(t, _)| *t) != Some(term) {
            let image = self.view.read(|image| image.clone());
            tracing::info!(
                node_id = self.node_id,
                term,
                brokers = image.brokers().count(),
                topics = image.topics().count(),
                "active controller"
            );
            *active = Some((
                term,
                Controller::new(self.config.clone(), image, crate::now_ms()),
            ));
        }
        let controller = &mut active.as_mut().expect("built above").1;
        let now = crate::now_ms();
        let learner = match &request {
            Some(
                ControllerRequest::Register {
                    broker_id,
                    metadata_addr: Some(addr),
                    ..
                }
                | ControllerRequest::Heartbeat {
                    broker_id,
                    metadata_addr: Some(addr),
                    ..
                },
            ) => {
                if !valid_metadata_addr(addr) {
                    return Some(ControllerReply::invalid(
                        "metadata_addr must be HOST:PORT, at most 255 bytes",
                    ));
                }
                Some((*broker_id, addr.clone()))
            }
            _ => None,
        };
        let (mut reply, records) = match request {
            None => {
                let mut records = controller.ensure_cluster_id(&self.cluster_id);
                records.extend(controller.tick(now));
                (None, records)
            }
            Some(request) => {
                let (reply, records) = decide(controller, request, now);
                (Some(reply), records)
            }
        };
        if let (Some(ControllerReply::Heartbeat { .. }), Some((id, addr))) = (&reply, &learner) {
            // A broker whose addition as a learner failed (a lost leadership) is added on
            // its heartbeats.
            self.ensure_learner(*id, addr.clone()).await;
        }
        if records.is_empty() {
            // A retry of a committed registration writes nothing: the broker has caught up
            // once it has replayed what is applied here, which holds the registration (the
            // controller only starts from a committed image).
            if let Some(ControllerReply::Topics { log_index, .. }) = &mut reply {
                *log_index = self.view.last_applied().map_or(0, |l| l.index);
            }
            if let Some(ControllerReply::Registered { log_index, .. }) = &mut reply {
                *log_index = self.view.last_applied().map_or(0, |l| l.index);
                if let Some((id, addr)) = learner {
                    self.ensure_learner(id, addr).await;
                }
            }
            return reply;
        }
        let entry = MetadataBatch(encode_batch(&records).to_vec());
        let failure =
            match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(entry)).await {
                Ok(Ok(written)) => {
                    log_decisions(&records);
                    if let Some(ControllerReply::Topics { log_index, .. }) = &mut reply {
                        *log_index = written.log_id.index;
                    }
                    if let Some(ControllerReply::Registered { log_index, .. }) = &mut reply {
                        *log_index = written.log_id.index;
                        if let Some((id, addr)) = learner {
                            self.ensure_learner(id, addr).await;
                        }
                    }
                    return reply;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("not committed within {COMMIT_TIMEOUT:?}"),
            };
        tracing::warn!(
            error = failure,
            "a metadata log write failed; the controller starts \
            again from the committed image"
        );
        *active = None;
        reply.map(|_| self.not_controller())
    }
}

/// Asks the controller; a refusal writes nothing.
fn decide(
    controller: &mut Controller,
    request: ControllerRequest,
    now: i64,
) -> (ControllerReply, Vec<MetadataRecord>) {
    let refused = |e: sluice_metadata::ControllerError| {
        (
            ControllerReply::Refused {
                code: e.code,
                message: e.message,
            },
            Vec::new(),
        )
    };
    match request {
        // Answered by the quorum before the controller is asked.
        ControllerRequest::DescribeQuorum => (
            ControllerReply::invalid("DescribeQuorum is not the controller's"),
            Vec::new(),
        ),
        ControllerRequest::CreateTopics { topics } => decide_each(
            controller,
            topics,
            |c, t| {
                let partitions = match (t.assignments.len(), t.num_partitions) {
                    (0, -1) => c.config().num_partitions.max(0) as usize,
                    (0, n) => n.max(0) as usize,
                    (n, _) => n,
                };
                1 + partitions + t.configs.len()
            },
            |c, t| {
                let topic = NewTopic {
                    name: t.name,
                    topic_id: t.topic_id,
                    num_partitions: t.num_partitions,
                    replication_factor: t.replication_factor,
                    assignments: t.assignments,
                    configs: t.configs,
                };
                c.create_topic_at(topic, t.leader_epoch)
            },
        ),
        ControllerRequest::DeleteTopics { names } => {
            decide_each(controller, names, |_, _| 1, |c, name| c.delete_topic(&name))
        }
        ControllerRequest::CreatePartitions { topics } => decide_each(
            controller,
            topics,
            |c, (name, total, _)| {
                let have = c
                    .image()
                    .topic_by_name(name)
                    .map_or(0, |t| t.partitions.len() as i64);
                (i64::from(*total) - have).max(0) as usize
            },
            |c, (name, total, assignments)| c.create_partitions(&name, total, assignments),
        ),
        ControllerRequest::AlterPartition {
            broker_id,
            broker_epoch,
            changes,
        } => decide_each(
            controller,
            changes,
            |_, _| 1,
            |c, ch| {
                c.alter_partition(AlterPartition {
                    broker_id,
                    broker_epoch,
                    topic_id: ch.topic_id,
                    partition: ch.partition,
                    leader_epoch: ch.leader_epoch,
                    partition_epoch: ch.partition_epoch,
                    new_isr: ch.new_isr,
                })
                .map(|(_, records)| records)
            },
        ),
        ControllerRequest::ElectLeaders {
            partitions,
            unclean,
        } => decide_each(
            controller,
            partitions,
            |_, _| 1,
            |c, (topic_id, partition)| {
                let election = if unclean {
                    ElectionType::Unclean
                } else {
                    ElectionType::Preferred
                };
                c.elect_leader(topic_id, partition, election)
            },
        ),
        ControllerRequest::AlterReassignments { partitions } => decide_each(
            controller,
            partitions,
            |_, _| 2,
            |c, (topic_id, partition, target)| c.alter_reassignment(topic_id, partition, target),
        ),
        ControllerRequest::AlterBrokerConfigs { brokers } => decide_each(
            controller,
            brokers,
            |_, (_, changes)| changes.len(),
            |c, (name, changes)| c.alter_broker_configs(&name, changes),
        ),
        ControllerRequest::AlterConfigs { topics } => decide_each(
            controller,
            topics,
            |_, (_, changes)| changes.len(),
            |c, (name, changes)| c.alter_topic_configs(&name, changes),
        ),
        ControllerRequest::Register {
            broker_id,
            incarnation_id,
            endpoints,
            rack,
            metadata_addr: _,
            previous_broker_epoch,
        } => {
            let request = RegistrationRequest {
                broker_id,
                incarnation_id,
                endpoints: endpoints
                    .into_iter()
                    .map(|e| Endpoint {
                        listener: e.listener,
                        host: e.host,
                        port: e.port,
                        security_protocol: e.security_protocol,
                    })
                    .collect(),
                rack,
                previous_broker_epoch,
            };
            match controller.register_broker(request, now) {
                Ok((broker_epoch, records)) => (
                    // The index is that of the entry the records go into, set once written.
                    ControllerReply::Registered {
                        broker_epoch,
                        log_index: 0,
                    },
                    records,
                ),
                Err(e) => refused(e),
            }
        }
        ControllerRequest::Heartbeat {
            broker_id,
            broker_epoch,
            caught_up,
            want_fence,
            want_shut_down,
            metadata_addr: _,
        } => {
            let beat = Heartbeat {
                broker_id,
                broker_epoch,
                caught_up,
                want_fence,
                want_shut_down,
            };
            match controller.heartbeat(beat, now) {
                Ok((reply, records)) => (
                    ControllerReply::Heartbeat {
                        is_fenced: reply.is_fenced,
                        in_controlled_shutdown: reply.in_controlled_shutdown,
                        should_shut_down: reply.should_shut_down,
                    },
                    records,
                ),
                Err(e) => refused(e),
            }
        }
    }
}

/// Runs `each` for every item of a topic request, gathering one outcome per item and every
/// record decided, into one metadata log entry. Items past what one entry may hold
/// (`records_per_call_max`, counted with `estimate` before deciding) are refused.
fn decide_each<T>(
    controller: &mut Controller,
    items: Vec<T>,
    estimate: impl Fn(&Controller, &T) -> usize,
    mut each: impl FnMut(&mut Controller, T) -> Result<Vec<MetadataRecord>, ControllerError>,
) -> (ControllerReply, Vec<MetadataRecord>) {
    let max = controller.config().records_per_call_max;
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        if records.len() + estimate(controller, &item) > max && !records.is_empty() {
            outcomes.push(Some((
                codes::POLICY_VIOLATION,
                format!(
                    "the request changes more than the {max} metadata records one request may \
                     write: send fewer topics or partitions at once"
                ),
            )));
            continue;
        }
        match each(controller, item) {
            Ok(mut decided) => {
                records.append(&mut decided);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some((e.code, e.message))),
        }
    }
    (
        ControllerReply::Topics {
            outcomes,
            log_index: 0,
        },
        records,
    )
}

/// One line per broker state change the controller decided on, once committed.
fn log_decisions(records: &[MetadataRecord]) {
    for record in records {
        match record {
            MetadataRecord::RegisterBroker(b) => {
                tracing::info!(
                    broker_id = b.broker_id,
                    broker_epoch = b.broker_epoch,
                    "controller: broker registered"
                )
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => tracing::info!(broker_id, broker_epoch, "controller: broker fenced"),
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => tracing::info!(broker_id, broker_epoch, "controller: broker unfenced"),
            _ => {}
        }
    }
}
