//! Which leader epoch wrote which offsets: Kafka's leader epoch cache. Each entry is an epoch
//! and the first offset written in it; an epoch ends where the next begins, the last at the
//! log end. Replication asks it where an epoch ends (a follower whose last record is of epoch
//! E, past where E ends here, holds another leader's tail), and so does OffsetForLeaderEpoch.
//!
//! The entries are kept in the producer-state snapshot (`epochs`), which covers the log up to
//! its offset; recovery adds the epochs of the batches after it, so the cache always equals
//! what the batch headers of the log say (the crash simulation checks exactly that).

use serde::{Deserialize, Serialize};

/// One epoch and the first offset it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of a log, oldest first; epochs and start offsets both strictly grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// A cache from stored entries, dropping any that break the order (a damaged snapshot is
    /// caught by its parse; this keeps a hand-edited one from breaking the invariant).
    pub fn from_entries(entries: Vec<EpochEntry>) -> Self {
        let mut cache = Self::default();
        for e in entries {
            cache.assign(e.epoch, e.start_offset);
        }
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Records that `epoch` wrote `start_offset` (the first offset of a batch it wrote), as
    /// Kafka's cache does: the latest epoch again changes nothing; otherwise the new entry
    /// wins, and entries of its epoch or newer, or starting at or after it, are dropped (an
    /// epoch that starts where an older one did replaces it: the older wrote nothing left).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        if epoch < 0 || start_offset < 0 {
            return;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && start_offset >= last.start_offset {
                return;
            }
            if epoch < last.epoch {
                tracing::warn!(
                    epoch,
                    start_offset,
                    latest = last.epoch,
                    "leader epoch cache: an epoch older than the latest; dropping newer entries"
                );
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        debug_assert!(self
            .entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset));
    }

    /// The epoch of the last entry.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `epoch`, and where it ends (the
    /// next epoch's start, or `log_end` for the latest). For an epoch older than every entry,
    /// the epoch asked for and the first entry's start (where its records, if any, ended);
    /// `None` (UNDEFINED) for a negative epoch or an empty cache.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(found) = i.checked_sub(1).and_then(|i| self.entries.get(i)) else {
            return self
                .entries
                .first()
                .map(|first| (epoch, first.start_offset));
        };
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The log was cut at `end`: epochs that started at or after it wrote nothing left.
    pub fn truncate_from_end(&mut self, end: i64) {
        self.entries.retain(|e| e.start_offset < end);
    }

    /// The log now starts at `start`: the epoch holding it starts there, earlier ones go.
    pub fn truncate_from_start(&mut self, start: i64) {
        let keep_from = self.entries.partition_point(|e| e.start_offset <= start);
        if keep_from == 0 {
            return;
        }
        self.entries.drain(..keep_from - 1);
        self.entries[0].start_offset = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive answer from a list of (first offset, epoch) per batch, in offset order.
    fn naive_end(batches: &[(i64, i32)], epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let Some(found) = batches.iter().map(|b| b.1).filter(|&e| e <= epoch).max() else {
            return batches.first().map(|b| (epoch, b.0));
        };
        let end = batches
            .iter()
            .find(|b| b.1 > found)
            .map_or(log_end, |b| b.0);
        Some((found, end))
    }

    proptest! {
        #[test]
        fn answers_equal_a_scan_of_the_batches(
            steps in prop::collection::vec((0i32..4, 1i64..4), 1..30),
            cut in 0usize..30,
            start_cut in 0usize..30,
        ) {
            // Epochs never go down along a log.
            let mut batches = Vec::new();
            let (mut epoch, mut offset) = (0, 0i64);
            for (bump, len) in steps {
                epoch += bump;
                batches.push((offset, epoch));
                offset += len;
            }
            let mut cache = LeaderEpochCache::default();
            for &(o, e) in &batches {
                cache.assign(e, o);
            }
            for e in 0..epoch + 2 {
                prop_assert_eq!(cache.end_offset_for(e, offset), naive_end(&batches, e, offset));
            }
            // Truncating the end keeps the answers of the batches that remain.
            let cut = cut.min(batches.len());
            let end = batches.get(cut).map_or(offset, |b| b.0);
            batches.truncate(cut);
            cache.truncate_from_end(end);
            for e in 0..epoch + 2 {
                prop_assert_eq!(cache.end_offset_for(e, end), naive_end(&batches, e, end));
            }
            // Truncating the start moves the first epoch's start, and keeps the ends.
            if !batches.is_empty() {
                let start = batches[start_cut.min(batches.len() - 1)].0;
                cache.truncate_from_start(start);
                prop_assert!(cache.entries()[0].start_offset == start);
                for e in batches.iter().filter(|b| b.0 >= start).map(|b| b.1) {
                    prop_assert_eq!(cache.end_offset_for(e, end), naive_end(&batches, e, end));
                }
            }
        }
    }

    #[test]
    fn a_newer_epoch_at_the_same_start_replaces_the_older() {
        let mut cache = LeaderEpochCache::default();
        cache.assign(1, 0);
        cache.assign(2, 10);
        cache.truncate_from_end(10);
        cache.assign(3, 5);
        cache.assign(4, 5);
        assert_eq!(
            cache.entries(),
            [
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 4,
                    start_offset: 5
                }
            ]
        );
        assert_eq!(cache.end_offset_for(3, 9), Some((1, 5)));
        // Older than every entry: Kafka's answer, the epoch asked for and the first start.
        assert_eq!(cache.end_offset_for(0, 9), Some((0, 0)));
        assert_eq!(cache.end_offset_for(-1, 9), None);
        // An older epoch assigned later wins over newer entries, as in Kafka.
        cache.assign(2, 7);
        assert_eq!(
            cache.entries(),
            [
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 7
                }
            ]
        );
    }
}
