//! Kafka v2 record batches ("magic 2"), the unit Sluice stores and serves.
//!
//! The same bytes travel from the producer's socket to the segment file and back out to a
//! consumer's socket; this crate is the only place that knows their layout. It never re-encodes
//! a client batch: validation reads it, and [`patch_base_offset`] / [`set_log_append_time`]
//! rewrite fixed-position header fields in place.
//!
//! It also holds [`kv`], the fields Kafka's versioned key/value records are made of (the keys
//! and values of the internal topics `__consumer_offsets` and `__transaction_state`), so that
//! the group and transaction coordinators share one bounds-checked codec.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset              i64  (patched by the broker on append)
//!      8     4  batch_length             i32  bytes after this field
//!     12     4  partition_leader_epoch   i32  (patched by the broker on append)
//!     16     1  magic                    i8   = 2
//!     17     4  crc                      u32  CRC-32C of bytes 21..end
//!     21     2  attributes               i16  bits 0-2 codec, 3 timestamp type,
//!                                              4 transactional, 5 control
//!     23     4  last_offset_delta        i32
//!     27     8  base_timestamp           i64
//!     35     8  max_timestamp            i64
//!     43     8  producer_id              i64
//!     51     2  producer_epoch           i16
//!     53     4  base_sequence            i32
//!     57     4  records_count            i32
//!     61     …  records (compressed as a whole when the codec is not none)
//! ```

mod batch;
mod builder;
pub mod compact;
mod compression;
mod control;
mod counter;
pub mod kv;
pub mod legacy;
mod record;
mod varint;

pub use batch::{
    patch_base_offset, patch_partition_leader_epoch, set_log_append_time, BatchHeader, BatchIter,
    Compression, TimestampType, BATCH_HEADER_SIZE, LOG_OVERHEAD,
};
pub use builder::{BatchBuilder, NewRecord};
pub use compression::{compress, recompress};
pub use control::{control_type, marker_batch, marker_of, ControlType};
pub use counter::RecordCounter;
pub use record::{Header, Record};

/// Why a batch was refused. Each maps to one Kafka error code in the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The bytes end before the batch does (a torn write, or a short produce payload).
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// The CRC, the length or the magic byte is wrong: the bytes are not a batch we can trust.
    #[error("corrupt batch: {0}")]
    Corrupt(&'static str),
    /// The batch is well-formed but its records disagree with its header.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// A record timestamp Kafka would refuse.
    #[error("invalid timestamp {0}")]
    InvalidTimestamp(i64),
    /// The batch is larger than the configured maximum.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Decompressing would exceed the caller's output limit.
    #[error("decompressed size exceeds the limit of {0} bytes")]
    DecompressedTooLarge(usize),
}
