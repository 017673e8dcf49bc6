//! Kafka's transaction coordinator, as a state machine without I/O.
//!
//! [`TransactionCoordinator`] takes InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and
//! EndTxn requests with the current time as an argument and answers at once. What the shell
//! around it must do in the world comes out as values it drains after every call: records for
//! the internal `__transaction_state` topic ([`records`]), and [`MarkerJob`]s, the commit or
//! abort markers to write into the partitions of a finished transaction. At start-up the
//! coordinator is rebuilt by replaying `__transaction_state`, so the log is the only source of
//! its state.

pub mod codes;
mod coordinator;
pub mod records;

pub use coordinator::*;
