//! The metadata quorum: the cluster metadata log (`sluice_metadata`'s record batches)
//! replicated with openraft among the controller voters, as Kafka's KRaft quorum replicates
//! `__cluster_metadata`. This crate is the shell openraft needs: the Raft log and the vote on
//! disk ([`log_store`]), the state machine that applies committed batches to the metadata
//! image and snapshots it ([`state_machine`]), and the network between voters
//! ([`network`]). All of its files go through storage's `Fs` seam, so the simulation in
//! `tests` can cut the power under it.

pub use openraft;

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tcp_tests;
#[cfg(test)]
mod tests;

pub use log_store::{open_storage, LogStore};
pub use network::{call_service, serve, Service, TcpNetwork};
pub use state_machine::{MetadataView, StateMachine};
pub use types::{MetadataBatch, NodeId, QuorumTypes, Raft};

/// Opens the quorum's files in `dir` on the real file system, every sync an fsync.
pub fn open_on_disk(dir: &std::path::Path) -> std::io::Result<(LogStore, StateMachine)> {
    let fs: std::sync::Arc<dyn sluice_storage::Fs> = std::sync::Arc::new(
        sluice_storage::RealFs::new(std::sync::Arc::new(sluice_storage::Fsync)),
    );
    open_storage(fs, dir)
}
