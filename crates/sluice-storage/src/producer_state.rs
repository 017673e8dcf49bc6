//! `ProducerStateManager`: per partition, the recent batches of each idempotent producer, so a
//! retried batch is recognised and answered with its original offsets instead of being written
//! twice, and a gap in sequence numbers is refused.
//!
//! Like Kafka, it remembers the last [`BATCHES_PER_PRODUCER`] batches of each producer; state
//! is rebuilt at start-up from a snapshot plus the batch headers appended after it, so it is
//! derived from the log. Snapshot file `producer-state.json` in the partition directory:
//! `{"offset": N, "producers": [{"producer_id", "epoch", "last_append_ms", "batches": [...]}]}`
//! where `offset` is the log end offset the snapshot covers.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_records::BatchHeader;

use crate::StorageError;

/// Batches remembered per producer; clients keep at most 5 in flight per partition.
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BatchMetadata {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    producer_id: i64,
    epoch: i16,
    last_append_ms: i64,
    batches: VecDeque<BatchMetadata>,
}

/// The outcome of checking a batch against producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch, or the next in sequence: append it.
    Append,
    /// A retry of a batch already in the log at these offsets: do not append again.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Sequence numbers wrap from `i32::MAX` to 0.
fn increment(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

fn metadata(h: &BatchHeader) -> BatchMetadata {
    BatchMetadata {
        first_seq: h.base_sequence,
        last_seq: increment(h.base_sequence, h.last_offset_delta),
        base_offset: h.base_offset,
        last_offset: h.last_offset(),
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub offset: i64,
    producers: Vec<ProducerEntry>,
}

impl ProducerStateManager {
    /// Checks one batch. `pending` holds entries already updated by earlier batches of the
    /// same append, which must chain onto each other.
    fn check_one(
        &self,
        h: &BatchHeader,
        pending: &HashMap<i64, ProducerEntry>,
    ) -> Result<SequenceCheck, StorageError> {
        if !is_idempotent(h) {
            return Ok(SequenceCheck::Append);
        }
        let entry = pending
            .get(&h.producer_id)
            .or_else(|| self.producers.get(&h.producer_id));
        let Some(entry) = entry else {
            // Unknown producer (new, or its state expired): any starting sequence is accepted,
            // as Kafka does since KIP-360.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch(format!(
                "producer {} epoch {} is older than {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        let this = metadata(h);
        if h.producer_epoch > entry.epoch {
            if this.first_seq != 0 {
                return Err(StorageError::OutOfOrderSequence(format!(
                    "producer {} starts epoch {} at sequence {}, not 0",
                    h.producer_id, h.producer_epoch, this.first_seq
                )));
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == this.first_seq && b.last_seq == this.last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        let expected = entry.batches.back().map(|b| increment(b.last_seq, 1));
        match expected {
            Some(next) if next != this.first_seq => Err(StorageError::OutOfOrderSequence(format!(
                "producer {} sent sequence {} where {} was expected",
                h.producer_id, this.first_seq, next
            ))),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Checks the batches of one append, in order. A duplicate is only accepted as the whole
    /// append (clients send one batch per partition per request).
    pub fn check_append(&self, headers: &[BatchHeader]) -> Result<SequenceCheck, StorageError> {
        let mut pending: HashMap<i64, ProducerEntry> = HashMap::new();
        for h in headers {
            match self.check_one(h, &pending)? {
                SequenceCheck::Duplicate { .. } if headers.len() > 1 => {
                    return Err(StorageError::DuplicateSequence(format!(
                        "producer {} resent sequence {} inside a multi-batch append",
                        h.producer_id, h.base_sequence
                    )));
                }
                dup @ SequenceCheck::Duplicate { .. } => return Ok(dup),
                SequenceCheck::Append if is_idempotent(h) => {
                    let mut entry = pending
                        .get(&h.producer_id)
                        .or_else(|| self.producers.get(&h.producer_id))
                        .cloned()
                        .unwrap_or_else(|| ProducerEntry {
                            producer_id: h.producer_id,
                            epoch: h.producer_epoch,
                            last_append_ms: 0,
                            batches: VecDeque::new(),
                        });
                    Self::push(&mut entry, h, 0);
                    pending.insert(h.producer_id, entry);
                }
                SequenceCheck::Append => {}
            }
        }
        Ok(SequenceCheck::Append)
    }

    fn push(entry: &mut ProducerEntry, h: &BatchHeader, now_ms: i64) {
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(metadata(h));
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    /// Records an appended (or replayed) batch with its assigned offsets.
    pub fn record(&mut self, h: &BatchHeader, now_ms: i64) {
        if !is_idempotent(h) {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                last_append_ms: now_ms,
                batches: VecDeque::new(),
            });
        Self::push(entry, h, now_ms);
    }

    /// Forgets producers idle for longer than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), so state does not grow without bound.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms - e.last_append_ms <= expiration_ms);
    }

    /// Drops batches at or past `offset` (after recovery truncated the log).
    pub fn truncate_to(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub(crate) fn to_snapshot(&self, offset: i64) -> Snapshot {
        let mut producers: Vec<ProducerEntry> = self.producers.values().cloned().collect();
        producers.sort_by_key(|e| e.producer_id);
        Snapshot { offset, producers }
    }

    pub(crate) fn from_snapshot(snapshot: Snapshot) -> Self {
        Self {
            producers: snapshot
                .producers
                .into_iter()
                .map(|e| (e.producer_id, e))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_records::BatchBuilder;
    use sluice_records::NewRecord;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32, base_offset: i64) -> BatchHeader {
        let mut b = BatchBuilder::new(0);
        b.push(NewRecord::default());
        let mut h = BatchHeader::parse(&b.build()).unwrap();
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
        h.last_offset_delta = records - 1;
        h.records_count = records;
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut state = ProducerStateManager::default();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(state.check_append(&[first]).unwrap(), SequenceCheck::Append);
        state.record(&first, 1);
        let second = header(7, 0, 3, 2, 103);
        assert_eq!(
            state.check_append(&[second]).unwrap(),
            SequenceCheck::Append
        );
        state.record(&second, 1);
        assert_eq!(
            state.check_append(&[header(7, 0, 0, 3, -1)]).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert!(matches!(
            state.check_append(&[header(7, 0, 9, 1, -1)]),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            state.check_append(&[header(7, -1, 5, 1, -1)]),
            Err(StorageError::InvalidProducerEpoch(_))
        ));
        // A new epoch must start at sequence 0.
        assert!(state.check_append(&[header(7, 1, 5, 1, -1)]).is_err());
        assert_eq!(
            state.check_append(&[header(7, 1, 0, 1, -1)]).unwrap(),
            SequenceCheck::Append
        );
        // Non-idempotent batches are never checked.
        assert_eq!(
            state.check_append(&[header(-1, -1, -1, 1, -1)]).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut state = ProducerStateManager::default();
        for i in 0..7 {
            state.record(&header(1, 0, i, 1, i64::from(i)), 0);
        }
        assert!(matches!(
            state.check_append(&[header(1, 0, 2, 1, -1)]).unwrap(),
            SequenceCheck::Duplicate { base_offset: 2, .. }
        ));
        // Sequence 1 fell out of the window: it is neither a known duplicate nor next.
        assert!(state.check_append(&[header(1, 0, 1, 1, -1)]).is_err());
    }

    #[test]
    fn batches_in_one_append_must_chain() {
        let state = ProducerStateManager::default();
        let ok = [header(3, 0, 0, 2, 0), header(3, 0, 2, 2, 2)];
        assert_eq!(state.check_append(&ok).unwrap(), SequenceCheck::Append);
        let gap = [header(3, 0, 0, 2, 0), header(3, 0, 5, 2, 2)];
        assert!(state.check_append(&gap).is_err());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment(i32::MAX, 1), 0);
        assert_eq!(increment(i32::MAX - 1, 3), 1);
        let mut state = ProducerStateManager::default();
        state.record(&header(2, 0, i32::MAX - 1, 2, 0), 0);
        assert_eq!(
            state.check_append(&[header(2, 0, 0, 1, 2)]).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn expiry_and_truncation_forget_state() {
        let mut state = ProducerStateManager::default();
        state.record(&header(1, 0, 0, 1, 0), 1_000);
        state.record(&header(2, 0, 0, 1, 1), 5_000);
        state.expire(6_000, 2_000);
        assert_eq!(state.len(), 1);
        state.truncate_to(1);
        assert!(state.is_empty());
    }
}
