//! Storage errors as Kafka error codes.

use kafka_protocol::ResponseError;
use sluice_partition::StorageError;

/// The Kafka error code a client should see for a storage error.
pub fn error_code(e: &StorageError) -> i16 {
    let kafka = match e {
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) | StorageError::RecordErrors { .. } => {
            ResponseError::InvalidRecord
        }
        StorageError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Out of descriptors is passing, and clients retry KAFKA_STORAGE_ERROR.
        StorageError::Offline
        | StorageError::Corrupt(_)
        | StorageError::Io(_)
        | StorageError::OutOfDescriptors(_) => ResponseError::KafkaStorageError,
        StorageError::InvalidConfig(_) => ResponseError::InvalidConfig,
        StorageError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        StorageError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        StorageError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        StorageError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        StorageError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        StorageError::DuplicateSequence(_) => ResponseError::DuplicateSequenceNumber,
        StorageError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        StorageError::PolicyViolation(_) => ResponseError::PolicyViolation,
        StorageError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        StorageError::CoordinatorFenced(_) => ResponseError::TransactionCoordinatorFenced,
        StorageError::NotLeader => ResponseError::NotLeaderOrFollower,
    };
    kafka.code()
}
