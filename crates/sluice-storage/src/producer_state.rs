//! `ProducerStateManager`: per partition, the recent batches of each idempotent producer, so a
//! retried batch is recognised and answered with its original offsets instead of being written
//! twice, and a gap in sequence numbers is refused.
//!
//! Like Kafka, it remembers the last [`BATCHES_PER_PRODUCER`] batches of each producer; state
//! is rebuilt at start-up from a snapshot plus the batch headers appended after it, so it is
//! derived from the log. Snapshot file `producer-state.json` in the partition directory:
//! `{"offset": N, "producers": [{"producer_id", "epoch", "last_append_ms", "batches": [...]}]}`
//! where `offset` is the log end offset the snapshot covers.
//!
//! It also tracks transactions: the first offset of each producer's open transaction on this
//! partition, so the partition knows its last stable offset (LSO, the first offset of the
//! oldest open transaction), and which transactions an abort marker closes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_records::BatchHeader;

use crate::txn_index::AbortedTxn;
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
    /// The first offset of this producer's open transaction on the partition.
    #[serde(default)]
    txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last transaction marker for this producer here (-1:
    /// none): a marker from an older coordinator is a zombie's.
    #[serde(default = "no_coordinator_epoch")]
    coordinator_epoch: i32,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

impl ProducerEntry {
    /// A producer first seen in batch `h`.
    fn new(h: &BatchHeader, last_append_ms: i64) -> Self {
        Self {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            last_append_ms,
            batches: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }
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

/// What DescribeProducers reports of one producer on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence number appended, -1 if none is remembered.
    pub last_sequence: i32,
    /// When the producer last appended here (wall clock, ms).
    pub last_append_ms: i64,
    /// The first offset of its open transaction on this partition, if one is open.
    pub txn_start_offset: Option<i64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
}

/// The producer-state snapshot format this code writes; snapshots from before it had a
/// version read as version 0, which is the same layout. Version 2 added `epochs`.
pub(crate) const SNAPSHOT_VERSION: u16 = 2;

/// `producer-state.json`: `{"version": 2, "offset": <log end it covers>, "producers": [...],
/// "epochs": [{"epoch", "start_offset"}, ...]}`; the epochs are the log's leader epoch cache
/// up to `offset`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    #[serde(default)]
    pub version: u16,
    pub offset: i64,
    producers: Vec<ProducerEntry>,
    /// Absent in version 1 snapshots: then the epochs are rebuilt from the whole log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<Vec<crate::EpochEntry>>,
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
        if !h.is_transactional()
            && h.producer_epoch == entry.epoch
            && entry.txn_first_offset.is_some()
        {
            return Err(StorageError::InvalidTxnState(format!(
                "producer {} sent a non-transactional batch inside its open transaction",
                h.producer_id
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
                        .unwrap_or_else(|| ProducerEntry::new(h, 0));
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
        // Transactional batches without sequence numbers (the group coordinator's offset
        // commits inside a producer's transaction) still open the transaction.
        let tracked = is_idempotent(h) || (h.is_transactional() && h.producer_id >= 0);
        if !tracked {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::new(h, now_ms));
        if is_idempotent(h) {
            Self::push(entry, h, now_ms);
        } else {
            entry.last_append_ms = entry.last_append_ms.max(now_ms);
        }
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.producer_id);
        }
    }

    /// Checks a transaction marker against the producer's epoch and the coordinator epoch
    /// of its last marker here (Kafka's checks): a marker from an older producer epoch than
    /// the partition has seen, or from an older coordinator than the last marker's, is a
    /// zombie coordinator's, and refused.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), StorageError> {
        match self.producers.get(&producer_id) {
            Some(e) if e.epoch > epoch => Err(StorageError::InvalidProducerEpoch(format!(
                "marker for producer {producer_id} at epoch {epoch}, older than {}",
                e.epoch
            ))),
            Some(e) if e.coordinator_epoch > coordinator_epoch => {
                Err(StorageError::CoordinatorFenced(format!(
                    "marker for producer {producer_id} from coordinator epoch \
                     {coordinator_epoch}, older than {}",
                    e.coordinator_epoch
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records an appended (or replayed) transaction marker: the producer's open transaction
    /// ends. For an abort that had records here, returns the aborted-index entry.
    pub fn record_marker(
        &mut self,
        h: &BatchHeader,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Option<AbortedTxn> {
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::new(h, now_ms));
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        if h.producer_epoch > entry.epoch {
            // The coordinator bumped the epoch (a timed-out transaction): fence the old one.
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        let first = entry.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        (!commit).then(|| AbortedTxn {
            producer_id: h.producer_id,
            first_offset: first,
            last_offset: h.base_offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(h.base_offset + 1),
        })
    }

    /// The first offset of the oldest open transaction, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Open transactions on this partition: (producer id, first offset), oldest first.
    /// Whether `producer_id` has a transaction open on this partition at `epoch`.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.ongoing
            .iter()
            .map(|(&first, &pid)| (pid, first))
            .collect()
    }

    /// Forgets producers idle for longer than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), so state does not grow without bound.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        // A producer with an open transaction stays until the transaction ends.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_append_ms <= expiration_ms
        });
    }

    /// Drops batches at or past `offset` (after recovery truncated the log).
    pub fn truncate_to(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
            if entry.txn_first_offset.is_some_and(|f| f >= offset) {
                entry.txn_first_offset = None;
            }
        }
        self.producers
            .retain(|_, e| !e.batches.is_empty() || e.txn_first_offset.is_some());
        self.ongoing = Self::ongoing_of(&self.producers);
    }

    /// Every producer this partition remembers, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .values()
            .map(|p| ActiveProducer {
                producer_id: p.producer_id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |b| b.last_seq),
                last_append_ms: p.last_append_ms,
                txn_start_offset: p.txn_first_offset,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
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
        Snapshot {
            version: SNAPSHOT_VERSION,
            offset,
            producers,
            epochs: None,
        }
    }

    pub(crate) fn from_snapshot(snapshot: Snapshot) -> Self {
        let producers = snapshot
            .producers
            .into_iter()
            .map(|e| (e.producer_id, e))
            .collect();
        let ongoing = Self::ongoing_of(&producers);
        Self { producers, ongoing }
    }

    fn ongoing_of(producers: &HashMap<i64, ProducerEntry>) -> BTreeMap<i64, i64> {
        producers
            .values()
            .filter_map(|e| Some((e.txn_first_offset?, e.producer_id)))
            .collect()
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

    fn txn(pid: i64, seq: i32, base_offset: i64) -> BatchHeader {
        let mut h = header(pid, 0, seq, 2, base_offset);
        h.attributes |= 0x10;
        h
    }

    fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, -1, 1, offset);
        h.attributes |= 0x30;
        h
    }

    /// The LSO is the first offset of the oldest open transaction; a commit ends one without
    /// an index entry, an abort yields the entry that covers exactly its records.
    #[test]
    fn open_transactions_set_the_lso_and_aborts_yield_index_entries() {
        let mut state = ProducerStateManager::default();
        state.record(&txn(1, 0, 10), 0);
        state.record(&txn(2, 0, 12), 0);
        state.record(&txn(1, 2, 14), 0);
        assert_eq!(state.first_unstable_offset(), Some(10));
        assert_eq!(state.record_marker(&marker(1, 0, 16), true, 0, 0), None);
        assert_eq!(state.first_unstable_offset(), Some(12));
        let aborted = state.record_marker(&marker(2, 0, 17), false, 0, 0).unwrap();
        assert_eq!(
            aborted,
            AbortedTxn {
                producer_id: 2,
                first_offset: 12,
                last_offset: 17,
                last_stable_offset: 18
            }
        );
        assert_eq!(state.first_unstable_offset(), None);
        // A marker for a producer with nothing open here ends nothing.
        assert_eq!(state.record_marker(&marker(2, 0, 18), false, 0, 0), None);
    }

    #[test]
    fn a_plain_batch_inside_an_open_transaction_is_refused() {
        let mut state = ProducerStateManager::default();
        state.record(&txn(1, 0, 0), 0);
        assert!(matches!(
            state.check_append(&[header(1, 0, 2, 1, -1)]),
            Err(StorageError::InvalidTxnState(_))
        ));
        assert_eq!(
            state.check_append(&[txn(1, 2, -1)]).unwrap(),
            SequenceCheck::Append
        );
    }

    /// A timed-out transaction's abort marker carries a bumped epoch: the producer's next
    /// batch at the old epoch is fenced, and so is a marker from the old epoch.
    #[test]
    fn a_bumped_marker_fences_the_old_epoch() {
        let mut state = ProducerStateManager::default();
        state.record(&txn(5, 0, 0), 0);
        assert!(state.record_marker(&marker(5, 1, 2), false, 0, 0).is_some());
        assert!(matches!(
            state.check_append(&[txn(5, 2, -1)]),
            Err(StorageError::InvalidProducerEpoch(_))
        ));
        assert!(state.check_marker(5, 0, 0).is_err());
        assert!(state.check_marker(5, 1, 0).is_ok());
    }

    /// A marker from a coordinator older than the one whose marker the partition holds for
    /// the producer (a zombie that lost its `__transaction_state` partition) is refused,
    /// even at the same producer epoch (a transaction protocol v1 producer keeps its epoch
    /// across transactions: the zombie's stale marker would end its next one); the
    /// coordinator epoch survives a snapshot.
    #[test]
    fn a_newer_coordinators_marker_fences_an_older_coordinator() {
        let mut state = ProducerStateManager::default();
        state.record(&txn(7, 0, 0), 0);
        assert!(state.check_marker(7, 0, 3).is_ok());
        state.record_marker(&marker(7, 0, 2), true, 3, 0);
        state.record(&txn(7, 2, 3), 0);
        assert!(matches!(
            state.check_marker(7, 0, 2),
            Err(StorageError::CoordinatorFenced(_))
        ));
        assert!(state.check_marker(7, 0, 3).is_ok());
        assert!(state.check_marker(7, 0, 4).is_ok());
        let bytes = serde_json::to_vec(&state.to_snapshot(5)).unwrap();
        let back = ProducerStateManager::from_snapshot(serde_json::from_slice(&bytes).unwrap());
        assert!(back.check_marker(7, 0, 2).is_err());
    }

    #[test]
    fn open_transactions_survive_snapshots_and_expiry() {
        let mut state = ProducerStateManager::default();
        state.record(&txn(3, 0, 40), 1_000);
        state.record(&header(4, 0, 0, 1, 42), 1_000);
        state.expire(1_000_000, 10);
        assert_eq!(
            state.len(),
            1,
            "only the producer with an open transaction stays"
        );
        let bytes = serde_json::to_vec(&state.to_snapshot(43)).unwrap();
        let back = ProducerStateManager::from_snapshot(serde_json::from_slice(&bytes).unwrap());
        assert_eq!(back.first_unstable_offset(), Some(40));
        assert_eq!(back, state);
    }
}
