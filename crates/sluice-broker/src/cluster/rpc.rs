//! What brokers ask the active controller, and how a request reaches it: through a channel
//! when the controller is in this process, else as a quorum service request (JSON, in the
//! quorum's bounded frames) on the controller listener of the node that leads the quorum.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_metadata::codes;
use sluice_quorum::Raft;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// How long one request to a remote controller may take, connection included.
pub(crate) const REMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may wait for the controller in this process: it takes requests one at
/// a time, each bounded by its commit timeout.
pub(crate) const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// One listener a broker registers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireEndpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: i16,
}

fn no_epoch() -> i64 {
    -1
}

/// A broker's request to the controller (Kafka's BrokerRegistration and BrokerHeartbeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ControllerRequest {
    Register {
        broker_id: i32,
        incarnation_id: Uuid,
        endpoints: Vec<WireEndpoint>,
        rack: Option<String>,
        /// Where a broker that is not a voter receives the metadata log (its controller
        /// listener, `HOST:PORT`): the controller adds it to the quorum as a learner.
        metadata_addr: Option<String>,
        /// The epoch this broker's previous process held, from its data directory, or -1.
        #[serde(default = "no_epoch")]
        previous_broker_epoch: i64,
    },
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        caught_up: bool,
        want_fence: bool,
        want_shut_down: bool,
        /// As in `Register`: a broker not yet a learner is added on its heartbeats.
        #[serde(default)]
        metadata_addr: Option<String>,
    },
    /// The quorum's state, as its leader knows it (Kafka's DescribeQuorum).
    DescribeQuorum,
    /// Kafka's CreateTopics, as a broker forwards it: one answer per topic, in order.
    CreateTopics { topics: Vec<WireNewTopic> },
    /// Kafka's DeleteTopics, by name.
    DeleteTopics { names: Vec<String> },
    /// Kafka's CreatePartitions: each topic grows to `total` partitions, on the given replica
    /// lists (one per new partition) or placed by the controller when empty.
    CreatePartitions { topics: Vec<NewPartitions> },
    /// Topic config changes (IncrementalAlterConfigs, AlterConfigs), checked by the broker
    /// that forwards them: per topic, each config set to a value or removed (`None`).
    AlterConfigs { topics: Vec<TopicConfigChanges> },
    /// Dynamic broker config changes, checked by the forwarding broker: per broker id (or
    /// `""` for every broker), each config set or removed.
    AlterBrokerConfigs { brokers: Vec<TopicConfigChanges> },
    /// Kafka's ElectLeaders: the preferred replica of each partition (or, `unclean`, any
    /// eligible replica of a partition without a leader).
    ElectLeaders {
        partitions: Vec<(Uuid, i32)>,
        unclean: bool,
    },
    /// Kafka's AlterPartitionReassignments (KIP-455): each partition to its target
    /// replicas, or `None` to cancel its reassignment.
    AlterReassignments {
        partitions: Vec<(Uuid, i32, Option<Vec<i32>>)>,
    },
    /// Kafka's AlterPartition: a leader's ISR changes, one per partition.
    AlterPartition {
        broker_id: i32,
        broker_epoch: i64,
        changes: Vec<WireIsrChange>,
    },
}

/// One partition's ISR change, as its leader asks for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireIsrChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// A topic's name and its config changes: a value to set, or `None` to remove.
pub(crate) type TopicConfigChanges = (String, Vec<(String, Option<String>)>);

/// A topic's name, the partition count it grows to, and the new partitions' replica lists
/// (empty for placement by the controller).
pub(crate) type NewPartitions = (String, i32, Vec<Vec<i32>>);

/// A topic to create, as a broker forwards it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireNewTopic {
    pub name: String,
    /// Chosen by the broker that forwards the request (or the id a topic that predates the
    /// cluster metadata already has).
    pub topic_id: Uuid,
    /// -1 for `num.partitions`.
    pub num_partitions: i32,
    /// -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Replicas per partition, in partition order; empty for placement by the controller.
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, String)>,
    /// The leader epoch every partition starts in: 0, or for a topic whose logs predate the
    /// metadata log, past every epoch they hold.
    #[serde(default)]
    pub leader_epoch: i32,
}

/// One topic's answer: `None` when done, else the Kafka error code and a message.
pub(crate) type TopicOutcome = Option<(i16, String)>;

/// The controller's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum ControllerReply {
    /// Registered: the broker's epoch, and the metadata log index the broker must have
    /// replayed before it counts as caught up.
    Registered {
        broker_epoch: i64,
        log_index: u64,
    },
    Heartbeat {
        is_fenced: bool,
        in_controlled_shutdown: bool,
        should_shut_down: bool,
    },
    Quorum(QuorumDescription),
    /// The answers to a topic request, one per topic in order, and the metadata log index
    /// holding the changes (a broker answers its client once it has applied it).
    Topics {
        outcomes: Vec<TopicOutcome>,
        log_index: u64,
    },
    /// Refused with a Kafka error code.
    Refused {
        code: i16,
        message: String,
    },
    /// This node does not lead the quorum (any more); `leader` is the one it knows of, and
    /// `leader_addr` its controller listener, if known (for callers that know no voters).
    NotController {
        leader: Option<i32>,
        #[serde(default)]
        leader_addr: Option<String>,
    },
}

/// The metadata log's replication, as its leader sees it. Offsets are Raft log indexes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct QuorumDescription {
    pub leader_id: i32,
    /// The Raft term.
    pub leader_epoch: i32,
    /// One past the last entry applied on the leader (every applied entry is committed).
    pub high_watermark: i64,
    pub voters: Vec<ReplicaDescription>,
    /// Learners: brokers that are not voters, following the log (Kafka's observers).
    #[serde(default)]
    pub observers: Vec<ReplicaDescription>,
    /// Each voter's controller listener: (id, host, port).
    pub nodes: Vec<(i32, String, u16)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ReplicaDescription {
    pub replica_id: i32,
    /// One past the last entry the leader knows the replica holds; -1 if it knows none.
    pub log_end_offset: i64,
    /// When the replica was last known to hold everything the leader has (now, if it
    /// does), or -1.
    pub last_caught_up_timestamp: i64,
}

impl ControllerReply {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Refused {
            code: codes::INVALID_REQUEST,
            message: message.into(),
        }
    }
}

pub(crate) type Call = (ControllerRequest, oneshot::Sender<ControllerReply>);

/// Whom a request goes to: a voter by id, or a bootstrap server by address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Voter(i32),
    Address(String),
}

/// Sends requests to whichever node leads the metadata quorum.
#[derive(Clone)]
pub(crate) struct ControllerClient {
    node_id: i32,
    raft: Raft,
    /// The controller in this process.
    local: mpsc::Sender<Call>,
    /// Each voter's controller listener, `host:port`.
    voters: BTreeMap<i32, String>,
    /// `controller.quorum.bootstrap.servers`: controller listeners to ask when no voter is
    /// known (a broker-only node configured without `controller.quorum.voters`).
    bootstrap: Vec<String>,
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

impl ControllerClient {
    pub(crate) fn new(
        node_id: i32,
        raft: Raft,
        local: mpsc::Sender<Call>,
        voters: BTreeMap<i32, String>,
        bootstrap: Vec<String>,
    ) -> Self {
        Self {
            node_id,
            raft,
            local,
            voters,
            bootstrap,
        }
    }

    /// Where voter `id`'s controller listener is: this node's configuration, else the
    /// membership this node has replayed.
    fn address_of(&self, id: i32) -> Option<String> {
        self.voters.get(&id).cloned().or_else(|| {
            self.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&(id as u64))
                .map(|n| n.addr.clone())
                .filter(|a| !a.is_empty())
        })
    }

    /// The voter this node believes leads the quorum.
    pub(crate) fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .and_then(|l| i32::try_from(l).ok())
    }

    /// Sends `request` to the active controller: the leader this node knows of, else each
    /// voter, then each bootstrap server, in turn, following the hints they give. `Err` says
    /// why it could not be asked (no one answered as the leader); a refusal is an `Ok`.
    pub(crate) async fn call(&self, request: ControllerRequest) -> Result<ControllerReply, String> {
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let mut queue: VecDeque<Target> = self.leader().map(Target::Voter).into_iter().collect();
        queue.extend(self.voters.keys().map(|&id| Target::Voter(id)));
        queue.extend(self.bootstrap.iter().cloned().map(Target::Address));
        let mut tried: Vec<Target> = Vec::new();
        let mut last_error = "the metadata quorum has no leader yet".to_string();
        // Every target once, plus the hints they give: a bounded walk.
        let bound = (self.voters.len() + self.bootstrap.len()) * 2 + 1;
        for _ in 0..bound {
            let Some(target) = queue.pop_front() else {
                break;
            };
            if tried.contains(&target) {
                continue;
            }
            tried.push(target.clone());
            let reply = match &target {
                Target::Voter(id) if *id == self.node_id => self.call_local(request.clone()).await,
                Target::Voter(id) => match self.address_of(*id) {
                    Some(addr) => self.call_remote(&addr, &body).await,
                    None => Err(format!("no address for voter {id}")),
                },
                Target::Address(addr) => self.call_remote(addr, &body).await,
            };
            match reply {
                Ok(ControllerReply::NotController {
                    leader,
                    leader_addr,
                }) => {
                    last_error = format!("{target:?} does not lead the metadata quorum");
                    match (leader, leader_addr) {
                        (Some(id), _) if self.address_of(id).is_some() || id == self.node_id => {
                            queue.push_front(Target::Voter(id))
                        }
                        (_, Some(addr)) => queue.push_front(Target::Address(addr)),
                        _ => {}
                    }
                }
                Ok(reply) => return Ok(reply),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Sends one encoded request to the controller listener at `addr`.
    async fn call_remote(&self, addr: &str, body: &[u8]) -> Result<ControllerReply, String> {
        let answer = sluice_quorum::call_service(addr, body, REMOTE_CALL_TIMEOUT)
            .await
            .map_err(|e| format!("controller at {addr}: {e}"))?;
        serde_json::from_slice(&answer)
            .map_err(|e| format!("controller at {addr} answered what does not parse: {e}"))
    }

    /// Sends `request` to the controller in this process.
    pub(crate) async fn call_local(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerReply, String> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.local
                .send((request, tx))
                .await
                .map_err(|_| "the controller has stopped".to_string())?;
            rx.await
                .map_err(|_| "the controller has stopped".to_string())
        };
        tokio::time::timeout(LOCAL_CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("the controller did not answer within {LOCAL_CALL_TIMEOUT:?}"))?
    }
}

/// Serves remote brokers' requests on the controller listener, through the local controller.
#[derive(Debug)]
pub(crate) struct ControllerService {
    pub client: ControllerClient,
}

impl sluice_quorum::Service for ControllerService {
    fn call(
        &self,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>> {
        let client = self.client.clone();
        Box::pin(async move {
            let reply = match serde_json::from_slice::<ControllerRequest>(&request) {
                Ok(request) => {
                    client
                        .call_local(request)
                        .await
                        .unwrap_or(ControllerReply::NotController {
                            leader: None,
                            leader_addr: None,
                        })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a controller request that does not parse");
                    ControllerReply::invalid(format!("the request does not parse: {e}"))
                }
            };
            serde_json::to_vec(&reply).unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_an_error() {
        let request = ControllerRequest::Heartbeat {
            broker_id: 3,
            broker_epoch: 7,
            caught_up: true,
            want_fence: false,
            want_shut_down: true,
            metadata_addr: None,
        };
        let bytes = serde_json::to_vec(&request).unwrap();
        assert!(matches!(
            serde_json::from_slice::<ControllerRequest>(&bytes).unwrap(),
            ControllerRequest::Heartbeat {
                broker_id: 3,
                broker_epoch: 7,
                ..
            }
        ));
        let reply = ControllerReply::Registered {
            broker_epoch: 9,
            log_index: 12,
        };
        let bytes = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerReply>(&bytes).unwrap(),
            reply
        );
        assert!(serde_json::from_slice::<ControllerRequest>(b"{\"Register\":1}").is_err());
    }
}
