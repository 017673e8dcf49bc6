//! Kafka's classic consumer-group coordinator, as a state machine without I/O.
//!
//! [`GroupCoordinator`] takes requests and the current time as arguments and returns
//! responses. What it cannot answer at once (a JoinGroup waiting for the rest of the group, a
//! follower's SyncGroup waiting for the leader) it answers later through [`Output`]s, which the
//! caller drains after every call. Everything the coordinator must remember across restarts it
//! emits as records for the internal `__consumer_offsets` topic ([`records`]); at start-up it
//! is rebuilt by replaying those records, so the log is the only source of its state.

pub mod codes;
mod coordinator;
pub mod records;
pub mod subscription;

pub use coordinator::*;
