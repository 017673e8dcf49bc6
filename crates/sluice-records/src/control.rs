//! Control batches: the transaction markers the broker writes into a partition when a
//! transaction ends. Clients never show them to applications; they tell read_committed
//! consumers where a producer's transaction committed or aborted.
//!
//! ```text
//! batch     attributes = transactional | control, producer id and epoch of the
//!           transaction, base sequence -1, exactly one record
//! key       i16 version = 0 | i16 type (0 = abort, 1 = commit)
//! value     i16 version = 0 | i32 coordinator epoch
//! ```

use crate::batch::{BatchHeader, CONTROL_BIT, TRANSACTIONAL_BIT};
use crate::builder::{BatchBuilder, NewRecord};
use crate::BatchError;

/// What a control batch marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// A control record this broker does not write (leader change, snapshot markers).
    Other(i16),
}

/// A whole marker batch, base offset 0, ready to append.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut builder = BatchBuilder::new(timestamp_ms);
    builder
        .producer(producer_id, producer_epoch, -1)
        .push(NewRecord {
            key: Some(key),
            value: Some(value),
            ..NewRecord::default()
        });
    builder.attributes |= TRANSACTIONAL_BIT | CONTROL_BIT;
    builder.build()
}

/// Largest control batch body this module will decode: a marker is a few dozen bytes.
const CONTROL_BATCH_MAX_BYTES: usize = 4096;

/// The type of a control batch, read from its first record's key.
pub fn control_type(header: &BatchHeader, batch: &[u8]) -> Result<ControlType, BatchError> {
    if !header.is_control() {
        return Err(BatchError::InvalidRecord("not a control batch"));
    }
    let records = header.records(batch, CONTROL_BATCH_MAX_BYTES)?;
    let key = records
        .first()
        .and_then(|r| r.key.as_deref())
        .filter(|k| k.len() >= 4)
        .ok_or(BatchError::InvalidRecord("control record without a key"))?;
    Ok(match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        other => ControlType::Other(other),
    })
}

/// What a transaction marker says: `Some((commit, coordinator epoch))` for a commit or an
/// abort (the epoch -1 where the value does not carry one), `None` for another control
/// record.
pub fn marker_of(header: &BatchHeader, batch: &[u8]) -> Result<Option<(bool, i32)>, BatchError> {
    let commit = match control_type(header, batch)? {
        ControlType::Commit => true,
        ControlType::Abort => false,
        ControlType::Other(_) => return Ok(None),
    };
    let records = header.records(batch, CONTROL_BATCH_MAX_BYTES)?;
    let coordinator_epoch = records
        .first()
        .and_then(|r| r.value.as_deref())
        .filter(|v| v.len() >= 6)
        .map_or(-1, |v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]));
    Ok(Some((commit, coordinator_epoch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_carry_the_producer() {
        for commit in [false, true] {
            let batch = marker_batch(42, 7, commit, 3, 1_000);
            let header = BatchHeader::validate_stored(&batch).unwrap();
            assert_eq!(marker_of(&header, &batch).unwrap(), Some((commit, 3)));
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 7));
            assert_eq!(header.base_sequence, -1);
            let expected = if commit {
                ControlType::Commit
            } else {
                ControlType::Abort
            };
            assert_eq!(control_type(&header, &batch).unwrap(), expected);
        }
    }

    #[test]
    fn a_data_batch_is_not_a_marker() {
        let mut b = BatchBuilder::new(0);
        b.push(NewRecord::default());
        let batch = b.build();
        let header = BatchHeader::parse(&batch).unwrap();
        assert!(control_type(&header, &batch).is_err());
    }
}
