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
//!
//! Memory: the active segment's indexes live in memory. Once a segment is closed and its
//! index files are written, [`OffsetIndex::seal`] and [`TimeIndex::seal`] keep only the first
//! entry of every block of [`DEFAULT_INDEX_BLOCK_ENTRIES`] (a two-level index, 1/512 of the
//! entries) and a
//! lookup reads the one block it needs from the file (one `pread` of at most 4 KiB, usually
//! from the page cache). Every entry is a valid hint, so when that read fails the lookup
//! answers with the block's first entry: the read that follows scans further, nothing is
//! wrong. 100 GB of 1 KB records keep about 1 MB of index in memory instead of 500 MB.

use std::path::PathBuf;
use std::sync::Arc;

use crate::fs::{Fs, OpenMode};

/// Entries per block of a sealed index, by default: the in-memory summary keeps one per
/// block. (Tests use small blocks, so that small segments exercise sealed indexes too.)
pub const DEFAULT_INDEX_BLOCK_ENTRIES: usize = 512;
#[cfg(test)]
const BLOCK_ENTRIES: usize = DEFAULT_INDEX_BLOCK_ENTRIES;

/// Where a sealed index's entries are, and one entry per block of them.
#[derive(Debug, Clone)]
struct Sealed<E> {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    /// Bytes before the first entry (the header; 0 for a version 0 file).
    skip: usize,
    /// Entries in the file.
    len: usize,
    /// Entries per block.
    block: usize,
    /// The first entry of each block.
    summary: Vec<E>,
    last: Option<E>,
}

impl<E: Copy + PartialEq> Sealed<E> {
    /// The entries of block `block`, read from the file; `None` if the read fails or the
    /// block does not start with the entry the summary holds for it (the file changed).
    fn block(&self, block: usize, size: usize, parse: impl Fn(&[u8]) -> E) -> Option<Vec<E>> {
        let first = block * self.block;
        let count = self.block.min(self.len.checked_sub(first)?);
        let read = self
            .fs
            .open(&self.path, OpenMode::Existing)
            .and_then(|file| file.read_vec_at(count * size, (self.skip + first * size) as u64));
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e,
                    "index block unreadable: answering with its first entry");
                return None;
            }
        };
        let entries: Vec<E> = bytes.chunks_exact(size).map(parse).collect();
        (entries.first() == self.summary.get(block)).then_some(entries)
    }

    /// The entry with the largest key ≤ `key` (keys increase), from the summary and one block.
    fn floor<K: PartialOrd>(
        &self,
        key: K,
        key_of: impl Fn(&E) -> K,
        size: usize,
        parse: impl Fn(&[u8]) -> E,
    ) -> Option<E> {
        let blocks = self.summary.partition_point(|e| key_of(e) <= key);
        let block = blocks.checked_sub(1)?;
        let hint = self.summary[block];
        let Some(entries) = self.block(block, size, parse) else {
            return Some(hint);
        };
        let i = entries.partition_point(|e| key_of(e) <= key);
        Some(entries[i.max(1) - 1])
    }

    /// Moves `entries` (those of the file at `path`) out of memory but for one per `block`;
    /// `None` (and `entries` kept) for a block or less.
    fn seal(
        entries: &mut Vec<E>,
        fs: &Arc<dyn Fs>,
        path: PathBuf,
        block: usize,
        headerless: bool,
    ) -> Option<Self> {
        let block = block.max(1);
        if entries.len() <= block {
            return None;
        }
        let entries = std::mem::take(entries);
        Some(Self {
            fs: fs.clone(),
            path,
            skip: if headerless { 0 } else { HEADER_SIZE },
            len: entries.len(),
            block,
            summary: entries.iter().step_by(block).copied().collect(),
            last: entries.last().copied(),
        })
    }

    /// Every entry back in memory; if the file cannot be read, the summary, every entry of
    /// which is valid.
    fn unseal(self, size: usize, parse: impl Fn(&[u8]) -> E) -> Vec<E> {
        self.load(size, parse).unwrap_or_else(|e| {
            tracing::warn!(path = %self.path.display(), error = %e,
                "index unreadable: keeping one entry per block");
            self.summary
        })
    }

    /// Every entry, read back from the file (to append to or truncate the index again).
    fn load(&self, size: usize, parse: impl Fn(&[u8]) -> E) -> std::io::Result<Vec<E>> {
        let file = self.fs.open(&self.path, OpenMode::Existing)?;
        let bytes = file.read_vec_at(self.len * size, self.skip as u64)?;
        let entries: Vec<E> = bytes.chunks_exact(size).map(parse).collect();
        let consistent =
            entries.len() == self.len && entries.iter().step_by(self.block).eq(self.summary.iter());
        if consistent {
            Ok(entries)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "index file changed since it was sealed",
            ))
        }
    }
}

fn offset_entry(chunk: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
        u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
    )
}

fn time_entry(chunk: &[u8]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&chunk[..8]);
    (
        i64::from_be_bytes(ts),
        u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
    )
}

/// Maps relative offsets to file positions.
#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
    /// Set once the entries live in the index file only.
    sealed: Option<Sealed<(u32, u32)>>,
    /// Set when read from a version 0 file (no header): where its entries start.
    headerless: bool,
}

impl PartialEq for OffsetIndex {
    fn eq(&self, other: &Self) -> bool {
        self.sealed.is_none() && other.sealed.is_none() && self.entries == other.entries
    }
}

pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

/// The index format this code writes.
pub(crate) const INDEX_VERSION: u16 = 1;
const HEADER_SIZE: usize = 8;
const OFFSET_MAGIC: &[u8; 4] = b"SLOI";
const TIME_MAGIC: &[u8; 4] = b"SLTI";

fn is_headerless(bytes: &[u8], magic: &[u8; 4]) -> bool {
    bytes.get(..4) != Some(&magic[..])
}

fn header(magic: &[u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE);
    out.extend_from_slice(magic);
    out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// The entries of an index file of either version, or why it cannot be read.
fn entries<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Result<&'a [u8], String> {
    if is_headerless(bytes, magic) {
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
    /// Entries held in memory (all of them, unless sealed).
    pub fn resident_entries(&self) -> usize {
        self.entries.len() + self.sealed.as_ref().map_or(0, |s| s.summary.len())
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.sealed.as_ref().map_or(self.entries.len(), |s| s.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Keeps only the first entry of every `block` entries in memory; lookups read the rest
    /// from `path`, which must hold exactly these entries (the caller has just written or
    /// checked it). Indexes of a block or less stay as they are.
    pub(crate) fn seal(&mut self, fs: &Arc<dyn Fs>, path: PathBuf, block: usize) {
        if self.sealed.is_none() {
            self.sealed = Sealed::seal(&mut self.entries, fs, path, block, self.headerless);
        }
    }

    /// Brings a sealed index back into memory, to append to or truncate it. If the file
    /// cannot be read the index keeps what it can: the summary, every entry of which is valid.
    pub(crate) fn unseal(&mut self) {
        if let Some(sealed) = self.sealed.take() {
            self.entries = sealed.unseal(OFFSET_ENTRY_SIZE, offset_entry);
        }
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self.sealed.is_none(), "append to a sealed index");
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            if relative_offset <= last_rel || position <= last_pos {
                return;
            }
        }
        self.entries.push((relative_offset, position));
    }

    /// The entry with the largest relative offset ≤ `relative_offset`, or `(0, 0)`.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        if let Some(sealed) = &self.sealed {
            return sealed
                .floor(relative_offset, |e| e.0, OFFSET_ENTRY_SIZE, offset_entry)
                .unwrap_or((0, 0));
        }
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
        if let Some(sealed) = &self.sealed {
            return sealed
                .floor(position, |e| e.1, OFFSET_ENTRY_SIZE, offset_entry)
                .map_or(0, |e| e.1);
        }
        let i = self.entries.partition_point(|&(_, pos)| pos <= position);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        match &self.sealed {
            Some(sealed) => sealed.last,
            None => self.entries.last().copied(),
        }
    }

    /// Drops entries at or past `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        self.unseal();
        let keep = self.entries.partition_point(|&(_, pos)| pos < position);
        self.entries.truncate(keep);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        debug_assert!(self.sealed.is_none(), "a sealed index is already on disk");
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
        let headerless = is_headerless(bytes, OFFSET_MAGIC);
        let bytes = entries(bytes, OFFSET_MAGIC)?;
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_SIZE) {
            return Err(format!("{} bytes of entries", bytes.len()));
        }
        let mut index = Self {
            headerless,
            ..Self::default()
        };
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
#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
    /// Set once the entries live in the index file only.
    sealed: Option<Sealed<(i64, u32)>>,
    /// Set when read from a version 0 file (no header): where its entries start.
    headerless: bool,
}

impl PartialEq for TimeIndex {
    fn eq(&self, other: &Self) -> bool {
        self.sealed.is_none() && other.sealed.is_none() && self.entries == other.entries
    }
}

impl TimeIndex {
    /// Entries held in memory (all of them, unless sealed).
    pub fn resident_entries(&self) -> usize {
        self.entries.len() + self.sealed.as_ref().map_or(0, |s| s.summary.len())
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.sealed.as_ref().map_or(self.entries.len(), |s| s.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As [`OffsetIndex::seal`].
    pub(crate) fn seal(&mut self, fs: &Arc<dyn Fs>, path: PathBuf, block: usize) {
        if self.sealed.is_none() {
            self.sealed = Sealed::seal(&mut self.entries, fs, path, block, self.headerless);
        }
    }

    /// As [`OffsetIndex::unseal`].
    pub(crate) fn unseal(&mut self) {
        if let Some(sealed) = self.sealed.take() {
            self.entries = sealed.unseal(TIME_ENTRY_SIZE, time_entry);
        }
    }

    pub fn append(&mut self, timestamp: i64, relative_offset: u32) {
        debug_assert!(self.sealed.is_none(), "append to a sealed index");
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
        if let Some(sealed) = &self.sealed {
            // The last entry with timestamp < target is the floor of target - 1.
            return sealed
                .floor(
                    target.saturating_sub(1),
                    |e| e.0,
                    TIME_ENTRY_SIZE,
                    time_entry,
                )
                .map(|e| e.1);
        }
        let i = self.entries.partition_point(|&(ts, _)| ts < target);
        (i > 0).then(|| self.entries[i - 1].1)
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        match &self.sealed {
            Some(sealed) => sealed.last.map(|(ts, _)| ts),
            None => self.entries.last().map(|&(ts, _)| ts),
        }
    }

    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) {
        self.unseal();
        let keep = self
            .entries
            .partition_point(|&(_, rel)| rel < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        debug_assert!(self.sealed.is_none(), "a sealed index is already on disk");
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
        let headerless = is_headerless(bytes, TIME_MAGIC);
        let bytes = entries(bytes, TIME_MAGIC)?;
        if !bytes.len().is_multiple_of(TIME_ENTRY_SIZE) {
            return Err(format!("{} bytes of entries", bytes.len()));
        }
        let mut index = Self {
            headerless,
            ..Self::default()
        };
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
    use crate::fs::SimFs;

    /// Writes `bytes` to `path` on `fs` (the sealed index's file).
    fn put(fs: &Arc<dyn Fs>, path: &std::path::Path, bytes: &[u8]) {
        fs.open(path, OpenMode::Truncate)
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
    }

    /// A sealed index answers every lookup exactly as the whole index in memory does, while
    /// holding one entry in 512; unsealing brings back every entry.
    #[test]
    fn a_sealed_index_answers_as_the_resident_one() {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new(1));
        fs.create_dir_all(std::path::Path::new("/d")).unwrap();
        let (mut offsets, mut times) = (OffsetIndex::default(), TimeIndex::default());
        for i in 0..3000u32 {
            offsets.append(3 * i + 1, 100 * i + 7);
            times.append(1000 + 5 * i64::from(i), 3 * i + 2);
        }
        let (offset_path, time_path) = (PathBuf::from("/d/0.index"), PathBuf::from("/d/0.ti"));
        put(&fs, &offset_path, &offsets.to_bytes());
        put(&fs, &time_path, &times.to_bytes());
        let (resident_offsets, resident_times) = (offsets.clone(), times.clone());
        offsets.seal(&fs, offset_path, BLOCK_ENTRIES);
        times.seal(&fs, time_path, BLOCK_ENTRIES);
        assert!(offsets.is_sealed());
        assert_eq!(
            offsets.resident_entries(),
            3000usize.div_ceil(BLOCK_ENTRIES)
        );
        assert_eq!(times.resident_entries(), 3000usize.div_ceil(BLOCK_ENTRIES));
        assert_eq!(
            (offsets.len(), offsets.last()),
            (3000, resident_offsets.last())
        );
        assert_eq!(times.max_timestamp(), resident_times.max_timestamp());
        for key in (0..9100u32).step_by(7) {
            assert_eq!(offsets.lookup(key), resident_offsets.lookup(key), "{key}");
        }
        for pos in (0..310_000u32).step_by(97) {
            assert_eq!(
                offsets.floor_position(pos),
                resident_offsets.floor_position(pos),
                "{pos}"
            );
        }
        for ts in (0..17_000i64).step_by(3) {
            assert_eq!(times.last_below(ts), resident_times.last_below(ts), "{ts}");
        }
        offsets.unseal();
        times.unseal();
        assert_eq!(offsets, resident_offsets);
        assert_eq!(times, resident_times);
    }

    /// When the file cannot be read (gone, or changed underneath) a sealed index still answers
    /// with a valid hint: an entry at or below the exact one, never past it.
    #[test]
    fn a_sealed_index_without_its_file_answers_with_a_lower_valid_entry() {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new(2));
        fs.create_dir_all(std::path::Path::new("/d")).unwrap();
        let mut offsets = OffsetIndex::default();
        for i in 0..2000u32 {
            offsets.append(2 * i, 64 * i);
        }
        let path = PathBuf::from("/d/0.index");
        put(&fs, &path, &offsets.to_bytes());
        let resident = offsets.clone();
        offsets.seal(&fs, path.clone(), BLOCK_ENTRIES);
        for damage in ["changed", "removed"] {
            if damage == "changed" {
                let mut other = OffsetIndex::default();
                for i in 0..2000u32 {
                    other.append(2 * i + 1, 64 * i + 1);
                }
                put(&fs, &path, &other.to_bytes());
            } else {
                fs.remove_file(&path).unwrap();
            }
            for key in (0..4100u32).step_by(13) {
                let (exact, hint) = (resident.lookup(key), offsets.lookup(key));
                assert!(hint.0 <= exact.0 && hint.1 <= exact.1, "{damage} {key}");
                assert!(resident.entries.contains(&hint), "{damage} {key}");
            }
        }
        // Unsealing keeps the summary, whose entries are all valid.
        offsets.unseal();
        assert_eq!(offsets.len(), 2000usize.div_ceil(BLOCK_ENTRIES));
    }

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
