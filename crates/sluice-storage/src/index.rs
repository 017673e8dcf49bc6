//! Sparse per-segment indexes. Both are derived state: rebuilt from the `.log` whenever they are
//! missing or fail the sanity check.
//!
//! ```text
//! .index      header (8 bytes): "SLOI" | version: u16 BE = 1 | 0: u16
//!             entries of 8 bytes:  relative_offset: u32 BE | position: u32 BE
//! .timeindex  header (8 bytes): "SLTI" | version: u16 BE = 1 | 0: u16
//!             entries of 12 bytes: timestamp: i64 BE | relative_offset: u32 BE
//! ```
//! Version 0 files (written before the header existed) are the entries alone. They are told
//! apart by the magic: a version 0 offset index would need a first relative offset of
//! 0x534C4F49 (1.4 billion), a time index a first timestamp in the year 200 million. Either
//! way an index is only used after the sanity check below, and rebuilt when it fails.
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

/// The index format this code writes.
pub(crate) const INDEX_VERSION: u16 = 1;
const HEADER_SIZE: usize = 8;
const OFFSET_MAGIC: &[u8; 4] = b"SLOI";
const TIME_MAGIC: &[u8; 4] = b"SLTI";

fn header(magic: &[u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE);
    out.extend_from_slice(magic);
    out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// The entries of an index file of either version, or why it cannot be read.
fn entries<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Result<&'a [u8], String> {
    if bytes.get(..4) != Some(&magic[..]) {
        return Ok(bytes); // version 0: no header
    }
    let header = bytes
        .get(..HEADER_SIZE)
        .ok_or_else(|| format!("truncated header of {} bytes", bytes.len()))?;
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != INDEX_VERSION || header[6..] != [0, 0] {
        return Err(format!("unknown index version {version}"));
    }
    Ok(&bytes[HEADER_SIZE..])
}

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
        let mut out = header(OFFSET_MAGIC);
        out.reserve(self.entries.len() * OFFSET_ENTRY_SIZE);
        for &(rel, pos) in &self.entries {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    /// Parses an index file (either version), or says why it is not a plausible index of
    /// a log of `log_size` bytes (unknown version, wrong length, entries out of order or past
    /// the end).
    pub fn from_bytes(bytes: &[u8], log_size: u64) -> Result<Self, String> {
        let bytes = entries(bytes, OFFSET_MAGIC)?;
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_SIZE) {
            return Err(format!("{} bytes of entries", bytes.len()));
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_SIZE) {
            let rel = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let pos = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if u64::from(pos) >= log_size {
                return Err(format!("position {pos} past the log's {log_size} bytes"));
            }
            if let Some(&(last_rel, last_pos)) = index.entries.last() {
                if rel <= last_rel || pos <= last_pos {
                    return Err(format!("entry ({rel}, {pos}) out of order"));
                }
            }
            index.entries.push((rel, pos));
        }
        Ok(index)
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
        let mut out = header(TIME_MAGIC);
        out.reserve(self.entries.len() * TIME_ENTRY_SIZE);
        for &(ts, rel) in &self.entries {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Parses a time index (either version), or says why it is implausible for a segment
    /// whose offsets end before relative offset `relative_end`.
    pub fn from_bytes(bytes: &[u8], relative_end: u64) -> Result<Self, String> {
        let bytes = entries(bytes, TIME_MAGIC)?;
        if !bytes.len().is_multiple_of(TIME_ENTRY_SIZE) {
            return Err(format!("{} bytes of entries", bytes.len()));
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_SIZE) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let ts = i64::from_be_bytes(ts);
            let rel = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if u64::from(rel) >= relative_end {
                return Err(format!(
                    "relative offset {rel} past the segment's {relative_end}"
                ));
            }
            if let Some(&(last_ts, last_rel)) = index.entries.last() {
                if ts <= last_ts || rel <= last_rel {
                    return Err(format!("entry ({ts}, {rel}) out of order"));
                }
            }
            index.entries.push((ts, rel));
        }
        Ok(index)
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
        assert_eq!(OffsetIndex::from_bytes(&bytes, 1000), Ok(index.clone()));
        assert!(OffsetIndex::from_bytes(&bytes, 900).is_err());
        assert!(OffsetIndex::from_bytes(&bytes[..bytes.len() - 1], 1000).is_err());
        // Version 0: the entries without a header.
        assert_eq!(OffsetIndex::from_bytes(&bytes[8..], 1000), Ok(index));
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
            Ok(index.clone())
        );
        assert!(TimeIndex::from_bytes(&index.to_bytes(), 5).is_err());
        assert_eq!(TimeIndex::from_bytes(&index.to_bytes()[8..], 6), Ok(index));
    }

    /// A header of a version this code does not know is refused, not read as entries.
    #[test]
    fn an_index_of_an_unknown_version_is_refused() {
        let mut bytes = OffsetIndex::default().to_bytes();
        bytes[5] = 2;
        let err = OffsetIndex::from_bytes(&bytes, 100).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
        let mut bytes = TimeIndex::default().to_bytes();
        bytes[4] = 1;
        assert!(TimeIndex::from_bytes(&bytes, 100).is_err());
    }
}
