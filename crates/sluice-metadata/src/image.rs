//! The cluster's metadata as the records build it: brokers, topics, partitions and configs.
//! Kafka calls this the metadata image. Every node builds its own by replaying the metadata
//! log from a snapshot; the controller builds its from the same records, so one replay
//! function is the only place state changes.

use std::collections::BTreeMap;

use uuid::Uuid;

pub use crate::records::{BrokerRegistration, PartitionRegistration};
use crate::records::{
    MetadataRecord, PartitionChange, PartitionRecord, LEADER_UNCHANGED, NO_LEADER, RESOURCE_TOPIC,
};

/// The config under which the cluster's id is kept.
pub const CLUSTER_ID_CONFIG: &str = "cluster.id";

/// Kafka's longest topic name.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// A record that does not apply to the image it was replayed on: the log is damaged or was
/// written by a controller with a defect. The image may be partly changed; the caller stops
/// replaying and reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError(pub String);

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metadata record does not apply: {}", self.0)
    }
}

impl std::error::Error for ReplayError {}

fn refuse<T>(why: String) -> Result<T, ReplayError> {
    Err(ReplayError(why))
}

impl BrokerRegistration {
    /// Whether the broker may lead a partition or join an ISR.
    pub fn is_eligible(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

impl PartitionRegistration {
    /// The invariants every partition satisfies after every record: replicas distinct and not
    /// empty, the ISR a non-empty subset of them, the leader in the ISR or none, the eligible
    /// leader replicas distinct replicas out of the ISR.
    fn check(&self) -> Result<(), String> {
        if self.replicas.is_empty() {
            return Err("no replicas".into());
        }
        if has_duplicates(&self.replicas) || has_duplicates(&self.isr) {
            return Err("a broker is listed twice".into());
        }
        if self.isr.is_empty() {
            return Err("an empty ISR".into());
        }
        if let Some(b) = self.isr.iter().find(|b| !self.replicas.contains(b)) {
            return Err(format!("ISR member {b} is not a replica"));
        }
        if self.leader != NO_LEADER && !self.isr.contains(&self.leader) {
            return Err(format!("leader {} is not in the ISR", self.leader));
        }
        if self.leader_epoch < 0 || self.partition_epoch < 0 {
            return Err("a negative epoch".into());
        }
        let moving = self.removing_replicas.iter().chain(&self.adding_replicas);
        if let Some(b) = moving.clone().find(|b| !self.replicas.contains(b)) {
            return Err(format!("reassigned broker {b} is not a replica"));
        }
        if has_duplicates(&moving.copied().collect::<Vec<_>>()) {
            return Err("a broker both added and removed".into());
        }
        if self.replicas.len() <= self.removing_replicas.len() {
            return Err("a reassignment removing every replica".into());
        }
        if has_duplicates(&self.elr) {
            return Err("an eligible leader replica listed twice".into());
        }
        if let Some(b) = self
            .elr
            .iter()
            .find(|b| !self.replicas.contains(b) || self.isr.contains(b))
        {
            return Err(format!(
                "eligible leader replica {b} is not a replica, or is in the ISR"
            ));
        }
        Ok(())
    }

    /// Whether a reassignment is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment under way moves to (all of them when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing_replicas.contains(b))
            .collect()
    }

    /// The replicas before the reassignment under way (all of them when none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding_replicas.contains(b))
            .collect()
    }

    /// The preferred leader: the first assigned replica.
    pub fn preferred_leader(&self) -> i32 {
        self.replicas[0]
    }
}

fn has_duplicates(ids: &[i32]) -> bool {
    ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id))
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionRegistration>,
}

/// The whole metadata state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    brokers: BTreeMap<i32, BrokerRegistration>,
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids: BTreeMap<String, Uuid>,
    configs: BTreeMap<(i8, String), BTreeMap<String, String>>,
    /// The largest broker epoch ever registered (kept across unregistrations and in
    /// snapshots, so that an epoch is never handed out twice).
    last_broker_epoch: i64,
}

impl MetadataImage {
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    pub fn broker(&self, broker_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic(&self, topic_id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<&PartitionRegistration> {
        self.topics.get(&topic_id)?.partitions.get(&partition)
    }

    /// The configs set on a resource (`RESOURCE_TOPIC` and a topic name, `RESOURCE_BROKER`
    /// and a broker id or "" for the cluster default).
    pub fn configs(
        &self,
        resource_type: i8,
        resource_name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        self.configs.get(&(resource_type, resource_name.to_owned()))
    }

    /// The cluster's id, once the first active controller has written it (a cluster-wide
    /// broker config, `cluster.id`, the way Kafka keeps cluster-wide dynamic configs).
    pub fn cluster_id(&self) -> Option<&str> {
        self.configs
            .get(&(crate::records::RESOURCE_BROKER, String::new()))
            .and_then(|c| c.get(CLUSTER_ID_CONFIG))
            .map(String::as_str)
    }

    pub fn last_broker_epoch(&self) -> i64 {
        self.last_broker_epoch
    }

    /// Applies a batch of records in order. A batch is what one metadata log entry holds:
    /// the controller made it to apply as a whole.
    pub fn apply_all(&mut self, records: &[MetadataRecord]) -> Result<(), ReplayError> {
        records.iter().try_for_each(|r| self.apply(r))
    }

    /// Applies one record, refusing one that does not fit the image.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ReplayError> {
        match record {
            MetadataRecord::RegisterBroker(b) => {
                if b.broker_epoch <= self.last_broker_epoch {
                    return refuse(format!(
                        "broker {} registered at epoch {}, not above {}",
                        b.broker_id, b.broker_epoch, self.last_broker_epoch
                    ));
                }
                self.last_broker_epoch = b.broker_epoch;
                self.brokers.insert(b.broker_id, b.clone());
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                self.registered(*broker_id, *broker_epoch)?;
                self.brokers.remove(broker_id);
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.registered(*broker_id, *broker_epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.registered(*broker_id, *broker_epoch)?.fenced = false,
            MetadataRecord::BrokerRegistrationChange {
                broker_id,
                broker_epoch,
                in_controlled_shutdown,
            } => {
                self.registered(*broker_id, *broker_epoch)?
                    .in_controlled_shutdown = *in_controlled_shutdown
            }
            MetadataRecord::Topic { name, topic_id } => {
                if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
                    return refuse(format!("topic name of {} bytes", name.len()));
                }
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    return refuse(format!("topic {name} ({topic_id}) exists"));
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition(p) => self.apply_partition(p)?,
            MetadataRecord::PartitionChange(c) => self.apply_change(c)?,
            MetadataRecord::RemoveTopic { topic_id } => {
                let Some(topic) = self.topics.remove(topic_id) else {
                    return refuse(format!("no topic {topic_id} to remove"));
                };
                self.topic_ids.remove(&topic.name);
                self.configs.remove(&(RESOURCE_TOPIC, topic.name));
            }
            MetadataRecord::Config {
                resource_type,
                resource_name,
                name,
                value,
            } => {
                let key = (*resource_type, resource_name.clone());
                match value {
                    Some(value) => {
                        self.configs
                            .entry(key)
                            .or_default()
                            .insert(name.clone(), value.clone());
                    }
                    None => {
                        if let Some(set) = self.configs.get_mut(&key) {
                            set.remove(name);
                            if set.is_empty() {
                                self.configs.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn registered(
        &mut self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<&mut BrokerRegistration, ReplayError> {
        match self.brokers.get_mut(&broker_id) {
            Some(b) if b.broker_epoch == broker_epoch => Ok(b),
            Some(b) => refuse(format!(
                "broker {broker_id} is at epoch {}, not {broker_epoch}",
                b.broker_epoch
            )),
            None => refuse(format!("broker {broker_id} is not registered")),
        }
    }

    fn apply_partition(&mut self, p: &PartitionRecord) -> Result<(), ReplayError> {
        let Some(topic) = self.topics.get_mut(&p.topic_id) else {
            return refuse(format!("partition of unknown topic {}", p.topic_id));
        };
        if p.partition < 0 || topic.partitions.contains_key(&p.partition) {
            return refuse(format!(
                "partition {} of {} exists or is negative",
                p.partition, topic.name
            ));
        }
        let registration = p.registration.clone();
        registration
            .check()
            .or_else(|why| refuse(format!("{}-{}: {why}", topic.name, p.partition)))?;
        topic.partitions.insert(p.partition, registration);
        Ok(())
    }

    fn apply_change(&mut self, c: &PartitionChange) -> Result<(), ReplayError> {
        let Some(topic) = self.topics.get_mut(&c.topic_id) else {
            return refuse(format!(
                "change to a partition of unknown topic {}",
                c.topic_id
            ));
        };
        let name = &topic.name;
        let Some(current) = topic.partitions.get_mut(&c.partition) else {
            return refuse(format!(
                "change to unknown partition {name}-{}",
                c.partition
            ));
        };
        let mut next = current.clone();
        if let Some(replicas) = &c.replicas {
            next.replicas = replicas.clone();
        }
        if let Some(isr) = &c.isr {
            next.isr = isr.clone();
        }
        if let Some(removing) = &c.removing_replicas {
            next.removing_replicas = removing.clone();
        }
        if let Some(adding) = &c.adding_replicas {
            next.adding_replicas = adding.clone();
        }
        if let Some(elr) = &c.elr {
            next.elr = elr.clone();
        }
        if c.leader != LEADER_UNCHANGED {
            if c.leader < NO_LEADER {
                return refuse(format!("leader {} for {name}-{}", c.leader, c.partition));
            }
            if c.leader != current.leader {
                next.leader = c.leader;
                next.leader_epoch = bump(current.leader_epoch, "leader epoch")?;
            }
        }
        next.partition_epoch = bump(current.partition_epoch, "partition epoch")?;
        next.check()
            .or_else(|why| refuse(format!("{name}-{}: {why}", c.partition)))?;
        // Epochs only grow: what every fencing check relies on.
        assert!(next.leader_epoch >= current.leader_epoch);
        assert!(next.partition_epoch > current.partition_epoch);
        *current = next;
        Ok(())
    }

    /// Records that rebuild this image from nothing, for a snapshot: brokers, then topics with
    /// their partitions, then configs. Replaying them gives an equal image except for the
    /// last broker epoch, which the snapshot carries beside them.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for b in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker(b.clone()));
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            });
            for (partition, p) in &topic.partitions {
                records.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: topic.topic_id,
                    partition: *partition,
                    registration: p.clone(),
                }));
            }
        }
        for ((resource_type, resource_name), set) in &self.configs {
            for (name, value) in set {
                records.push(MetadataRecord::Config {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        records
    }

    /// Rebuilds an image from [`MetadataImage::to_records`]' records and the last broker
    /// epoch.
    pub fn from_records(
        records: &[MetadataRecord],
        last_broker_epoch: i64,
    ) -> Result<Self, ReplayError> {
        let mut image = Self::default();
        // Registrations in a snapshot come in broker id order, not epoch order.
        for record in records {
            match record {
                MetadataRecord::RegisterBroker(b) => {
                    if image.brokers.contains_key(&b.broker_id) {
                        return refuse(format!("broker {} twice in a snapshot", b.broker_id));
                    }
                    image.last_broker_epoch = b.broker_epoch.saturating_sub(1);
                    image.apply(record)?;
                }
                _ => image.apply(record)?,
            }
        }
        if image
            .brokers
            .values()
            .any(|b| b.broker_epoch > last_broker_epoch)
        {
            return refuse("a broker epoch above the snapshot's last".into());
        }
        image.last_broker_epoch = last_broker_epoch;
        Ok(image)
    }

    /// The invariant the controller keeps after every batch it writes: each leader is a
    /// registered broker that is not fenced. (Within a batch it may not hold.)
    pub fn check_leaders(&self) -> Result<(), String> {
        for topic in self.topics.values() {
            for (partition, p) in &topic.partitions {
                if p.leader == NO_LEADER {
                    continue;
                }
                match self.brokers.get(&p.leader) {
                    Some(b) if !b.fenced => {}
                    _ => {
                        return Err(format!(
                            "{}-{partition} is led by {}, which is fenced or unregistered",
                            topic.name, p.leader
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

fn bump(epoch: i32, what: &str) -> Result<i32, ReplayError> {
    epoch
        .checked_add(1)
        .ok_or_else(|| ReplayError(format!("{what} overflows")))
}
