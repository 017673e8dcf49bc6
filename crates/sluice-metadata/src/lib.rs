//! Cluster metadata as an event-sourced log, as Kafka's KRaft mode keeps it: the records
//! ([`records`]), the image every node builds by replaying them ([`image`]), snapshots of
//! that image ([`snapshot`]), and the active controller's decisions ([`controller`]):
//! broker registration, heartbeats and fencing, topic placement, leader election and ISR
//! changes. Nothing here does I/O or reads a clock: the shell around it (the Raft quorum
//! that replicates the log, the broker that serves requests) passes time and requests in
//! and carries the records out.

pub mod codes;
pub mod controller;
pub mod image;
pub mod records;
pub mod snapshot;

pub use controller::{
    AlterPartition, Controller, ControllerConfig, ControllerError, ElectionType, Heartbeat,
    HeartbeatReply, NewTopic, RegistrationRequest,
};
pub use image::{
    BrokerRegistration, MetadataImage, PartitionRegistration, ReplayError, TopicImage,
};
pub use records::{Endpoint, MetadataRecord, PartitionChange, PartitionRecord};
pub use snapshot::{decode_snapshot, encode_snapshot, SnapshotError};
