//! Sparse per-segment indexes. Both are derived state: rebuilt from the `.log` whenever they are
//! missing or fail the sanity check.
//!
//! ```text
//! .index      entries of 8 bytes:  relative_offset: u32 BE | position: u32 BE
//! .timeindex  entries of 12 bytes: timestamp: i64 BE | relative_offset: u32 BE
//! ```
//! `relative_offset` is the batch's base offset minus the segment's base offset; `position` is
//! the byte position of that batch in the `.log`. A time index entry says "every batch up to
//! and including this offset has max timestamp ≤ timestamp"; entries strictly increase in both.

/// Maps relative offsets to file positions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

impl OffsetIndex {
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            if relative_offset <= last_rel || position <= last_pos {
                return;
            }
        }
        self.entries.push((relative_offset, position));
    }

    /// The entry with the largest relative offset ≤ `relative_offset`, or `(0, 0)`.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let i = self
            .entries
            .partition_point(|&(rel, _)| rel <= relative_offset);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    /// The largest indexed position ≤ `position` (a batch start), or 0.
    pub fn floor_position(&self, position: u32) -> u32 {
        let i = self.entries.partition_point(|&(_, pos)| pos <= position);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Drops entries at or past `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, pos)| pos < position);
        self.entries.truncate(keep);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_SIZE);
        for &(rel, pos) in &self.entries {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    /// Parses an index file, or `None` if it is not a plausible index of a log of
    /// `log_size` bytes (wrong length, entries out of order or past the end).
    pub fn from_bytes(bytes: &[u8], log_size: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_SIZE) {
            return None;
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_SIZE) {
            let rel = u32::from_be_bytes(chunk[..4].try_into().ok()?);
            let pos = u32::from_be_bytes(chunk[4..].try_into().ok()?);
            if u64::from(pos) >= log_size {
                return None;
            }
            if let Some(&(last_rel, last_pos)) = index.entries.last() {
                if rel <= last_rel || pos <= last_pos {
                    return None;
                }
            }
            index.entries.push((rel, pos));
        }
        Some(index)
    }
}

/// Maps max timestamps to relative offsets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn append(&mut self, timestamp: i64, relative_offset: u32) {
        if let Some(&(last_ts, last_rel)) = self.entries.last() {
            if timestamp <= last_ts || relative_offset <= last_rel {
                return;
            }
        }
        self.entries.push((timestamp, relative_offset));
    }

    /// The relative offset of the last entry whose timestamp is below `target`: every batch
    /// up to it has smaller timestamps, so a search for `target` may start after it.
    pub fn last_below(&self, target: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(ts, _)| ts < target);
        (i > 0).then(|| self.entries[i - 1].1)
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(ts, _)| ts)
    }

    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|&(_, rel)| rel < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_SIZE);
        for &(ts, rel) in &self.entries {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Parses a time index, or `None` if it is implausible for a segment whose offsets end
    /// before relative offset `relative_end`.
    pub fn from_bytes(bytes: &[u8], relative_end: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_SIZE) {
            return None;
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_SIZE) {
            let ts = i64::from_be_bytes(chunk[..8].try_into().ok()?);
            let rel = u32::from_be_bytes(chunk[8..].try_into().ok()?);
            if u64::from(rel) >= relative_end {
                return None;
            }
            if let Some(&(last_ts, last_rel)) = index.entries.last() {
                if ts <= last_ts || rel <= last_rel {
                    return None;
                }
            }
            index.entries.push((ts, rel));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_returns_floor_entry() {
        let mut index = OffsetIndex::default();
        index.append(0, 0);
        index.append(10, 4096);
        index.append(20, 8192);
        assert_eq!(index.lookup(0), (0, 0));
        assert_eq!(index.lookup(9), (0, 0));
        assert_eq!(index.lookup(10), (10, 4096));
        assert_eq!(index.lookup(25), (20, 8192));
    }

    #[test]
    fn index_round_trips_and_rejects_entries_past_the_log() {
        let mut index = OffsetIndex::default();
        index.append(3, 100);
        index.append(7, 900);
        let bytes = index.to_bytes();
        assert_eq!(OffsetIndex::from_bytes(&bytes, 1000), Some(index));
        assert_eq!(OffsetIndex::from_bytes(&bytes, 900), None);
        assert_eq!(OffsetIndex::from_bytes(&bytes[..7], 1000), None);
    }

    #[test]
    fn time_index_finds_last_entry_below_target() {
        let mut index = TimeIndex::default();
        index.append(100, 0);
        index.append(200, 5);
        index.append(150, 9); // not increasing: ignored
        assert_eq!(index.last_below(100), None);
        assert_eq!(index.last_below(101), Some(0));
        assert_eq!(index.last_below(1000), Some(5));
        assert_eq!(
            TimeIndex::from_bytes(&index.to_bytes(), 6),
            Some(index.clone())
        );
        assert_eq!(TimeIndex::from_bytes(&index.to_bytes(), 5), None);
    }
}
