//! Topic metadata on disk: a snapshot (`topics.json`) plus a journal of the changes made since
//! (`topics.journal`), so that creating, altering or deleting a topic costs one appended line
//! and one fsync, whatever the number of topics.
//!
//! ```text
//! topics.json     {"version": 1, "topics": [{"name", "id", "partitions", "configs"}, ...]}
//!                 replaced atomically (version 0: the bare array, still read)
//! topics.journal  one change per line:
//!                 <crc32c of the JSON, 8 hex digits> <space> <JSON> <newline>
//!                 JSON: {"upsert": {"name", "id", "partitions", "configs"}}
//!                     | {"delete": "<name>"}
//! ```
//!
//! Loading reads the snapshot and applies the journal in order. An incomplete or damaged last
//! stretch (a torn append, never acknowledged) is cut off; damage with an intact change after
//! it, or a line whose checksum holds but whose change does not parse, is not a torn append,
//! and loading refuses rather than drop the topics after it. Once the journal holds more lines than there are topics (and at least
//! [`COMPACT_MIN_RECORDS`]), the snapshot is rewritten and the journal emptied: a crash
//! between the two leaves a new snapshot with the old journal, whose replay changes nothing,
//! since every change in it is already in the snapshot and the last change per name wins.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fs::write_file_atomically;
use crate::{Fs, FsFile, OpenMode};

pub(crate) const SNAPSHOT_FILE: &str = "topics.json";
pub(crate) const JOURNAL_FILE: &str = "topics.journal";

/// The journal is folded into the snapshot only past this many lines, so that a broker with
/// few topics does not rewrite its snapshot on every other change.
pub(crate) const COMPACT_MIN_RECORDS: usize = 1000;

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredTopic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// The `topics.json` format this code writes: `{"version": 1, "topics": [...]}`. Version 0
/// was the bare array.
const SNAPSHOT_VERSION: u16 = 1;

#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u16,
    topics: Vec<&'a StoredTopic>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SnapshotIn {
    Versioned {
        version: u16,
        topics: Vec<StoredTopic>,
    },
    V0(Vec<StoredTopic>),
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Change {
    /// The topic as it now is: created, grown, or with new config overrides.
    Upsert(StoredTopic),
    /// The topic of this name is gone.
    Delete(String),
}

/// The open journal: appends go to its end.
#[derive(Debug)]
pub(crate) struct TopicJournal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    file: Box<dyn FsFile>,
    /// Bytes of valid lines: where the next one goes.
    len: u64,
    records: usize,
}

fn encode_line(change: &Change) -> Vec<u8> {
    let json = serde_json::to_vec(change).expect("a change serialises");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// Whether `line` (without its newline) carries a checksum that matches its JSON, whether or
/// not the JSON parses.
fn checksum_holds(line: &[u8]) -> bool {
    let (Some(crc), Some(json)) = (line.get(..8), line.get(9..)) else {
        return false;
    };
    line.get(8) == Some(&b' ')
        && std::str::from_utf8(crc)
            .ok()
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            == Some(crc32c::crc32c(json))
}

/// Parses one line (without its newline); `None` if it is damaged.
fn decode_line(line: &[u8]) -> Option<Change> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc != crc32c::crc32c(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn apply(topics: &mut BTreeMap<String, StoredTopic>, change: Change) {
    match change {
        Change::Upsert(t) => {
            topics.insert(t.name.clone(), t);
        }
        Change::Delete(name) => {
            topics.remove(&name);
        }
    }
}

impl TopicJournal {
    /// Loads the stored topics, cutting a torn tail off the journal, and opens the journal
    /// for appending.
    pub fn open(dir: &Path, fs: Arc<dyn Fs>) -> io::Result<(Self, BTreeMap<String, StoredTopic>)> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut topics = BTreeMap::new();
        if fs.exists(&snapshot_path) {
            let invalid = |e: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", snapshot_path.display()),
                )
            };
            let stored = match serde_json::from_slice(&fs.read(&snapshot_path)?)
                .map_err(|e| invalid(e.to_string()))?
            {
                SnapshotIn::V0(topics) => topics,
                SnapshotIn::Versioned { version, topics } if version <= SNAPSHOT_VERSION => topics,
                SnapshotIn::Versioned { version, .. } => {
                    return Err(invalid(format!("unknown version {version}")))
                }
            };
            for t in stored {
                topics.insert(t.name.clone(), t);
            }
        }
        let path = dir.join(JOURNAL_FILE);
        let file = fs.open(&path, OpenMode::Create)?;
        let bytes = fs.read(&path)?;
        let mut len = 0usize;
        let mut records = 0;
        while let Some(end) = bytes[len..].iter().position(|&b| b == b'\n') {
            let line = &bytes[len..len + end];
            let Some(change) = decode_line(line) else {
                if checksum_holds(line)
                    || bytes[len + end + 1..]
                        .split(|&b| b == b'\n')
                        .any(checksum_holds)
                {
                    // Not a torn append: a line that checks out but does not parse, or damage
                    // with intact changes after it. Cutting here would drop those topics (and
                    // start-up would then remove their data as orphans): refuse instead.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: damaged change at byte {len} with intact changes after it; \
                             refusing to start rather than lose topics",
                            path.display()
                        ),
                    ));
                }
                break;
            };
            apply(&mut topics, change);
            len += end + 1;
            records += 1;
        }
        if len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = len,
                dropped_bytes = bytes.len() - len,
                "cutting a torn or damaged tail off the topic journal"
            );
            file.set_len(len as u64)?;
            file.sync_data()?;
        }
        let journal = Self {
            fs,
            dir: dir.to_path_buf(),
            file,
            len: len as u64,
            records,
        };
        Ok((journal, topics))
    }

    /// Appends `changes` and makes them durable: one write and one fsync for all of them.
    /// On an error nothing counts as written: a partial line is overwritten by the next
    /// append, or cut off at the next load.
    pub fn append(&mut self, changes: &[Change]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = changes.iter().flat_map(encode_line).collect();
        self.file.write_all_at(&bytes, self.len)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        self.records += changes.len();
        Ok(())
    }

    /// Whether the journal has grown enough to be folded into the snapshot.
    pub fn wants_compaction(&self, topic_count: usize) -> bool {
        self.records >= COMPACT_MIN_RECORDS.max(topic_count)
    }

    /// Rewrites the snapshot with `topics` (the state the journal leads to) and empties the
    /// journal. Linear in the topics, and run once per that many changes.
    pub fn compact<'a>(&mut self, topics: impl Iterator<Item = &'a StoredTopic>) -> io::Result<()> {
        let snapshot = SnapshotOut {
            version: SNAPSHOT_VERSION,
            topics: topics.collect(),
        };
        let bytes = serde_json::to_vec_pretty(&snapshot).expect("topics serialise");
        write_file_atomically(self.fs.as_ref(), &self.dir, SNAPSHOT_FILE, &bytes)?;
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real syncs: these tests write a handful of lines.
    use crate::{Fsync, RealFs};
    use std::fs;

    fn real() -> Arc<dyn Fs> {
        Arc::new(RealFs::new(Arc::new(Fsync)))
    }

    fn topic(name: &str, partitions: i32) -> StoredTopic {
        StoredTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    /// A `topics.json` from before the version (a bare array) still loads; one of an
    /// unknown version is refused.
    #[test]
    fn topic_snapshots_of_both_versions_load_and_unknown_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = topic("a", 2);
        fs::write(
            dir.path().join(SNAPSHOT_FILE),
            serde_json::to_vec(&vec![&a]).unwrap(),
        )
        .unwrap();
        let (_, topics) = TopicJournal::open(dir.path(), real()).unwrap();
        assert_eq!(topics.values().collect::<Vec<_>>(), vec![&a]);
        let future = serde_json::json!({"version": 2, "topics": [&a]});
        fs::write(dir.path().join(SNAPSHOT_FILE), future.to_string()).unwrap();
        let err = TopicJournal::open(dir.path(), real()).unwrap_err();
        assert!(err.to_string().contains("unknown version 2"), "{err}");
    }

    /// Changes read back in order, whether still in the journal or folded into the snapshot;
    /// a compaction that crashed before emptying the journal changes nothing on replay.
    #[test]
    fn changes_survive_reopening_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, topics) = TopicJournal::open(dir.path(), real()).unwrap();
        assert!(topics.is_empty());
        let a = topic("a", 1);
        let b = topic("b", 2);
        let a3 = StoredTopic {
            partitions: 3,
            ..a.clone()
        };
        j.append(&[Change::Upsert(a.clone()), Change::Upsert(b.clone())])
            .unwrap();
        j.append(&[Change::Upsert(a3.clone()), Change::Delete("b".into())])
            .unwrap();
        drop(j);
        let (mut j, topics) = TopicJournal::open(dir.path(), real()).unwrap();
        assert_eq!(topics.values().collect::<Vec<_>>(), vec![&a3]);
        let journal = fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        // Compact, then put the old journal back, as a crash before the truncation would.
        j.compact(topics.values()).unwrap();
        drop(j);
        fs::write(dir.path().join(JOURNAL_FILE), &journal).unwrap();
        let (_, replayed) = TopicJournal::open(dir.path(), real()).unwrap();
        assert_eq!(replayed, topics);
    }

    /// A torn or corrupted last line is cut off, and what came before it is kept.
    #[test]
    fn a_torn_or_damaged_tail_is_cut_off() {
        for damage in ["torn", "flipped"] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = TopicJournal::open(dir.path(), real()).unwrap();
            let a = topic("a", 1);
            j.append(&[Change::Upsert(a.clone())]).unwrap();
            j.append(&[Change::Upsert(topic("b", 1))]).unwrap();
            drop(j);
            let path = dir.path().join(JOURNAL_FILE);
            let mut bytes = fs::read(&path).unwrap();
            let first_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            match damage {
                "torn" => bytes.truncate(bytes.len() - 3),
                _ => {
                    let at = bytes.len() - 5;
                    bytes[at] ^= 0x01;
                }
            }
            fs::write(&path, &bytes).unwrap();
            let (mut j, topics) = TopicJournal::open(dir.path(), real()).unwrap();
            assert_eq!(topics.values().collect::<Vec<_>>(), vec![&a], "{damage}");
            assert_eq!(fs::metadata(&path).unwrap().len(), first_len as u64);
            // The next append goes where the damage was.
            let c = topic("c", 1);
            j.append(&[Change::Upsert(c.clone())]).unwrap();
            drop(j);
            let (_, topics) = TopicJournal::open(dir.path(), real()).unwrap();
            assert_eq!(topics.len(), 2, "{damage}");
            assert_eq!(topics["c"], c);
        }
    }

    /// Damage followed by an intact change is not a torn append: loading fails rather than
    /// drop the later topic (whose data start-up would then remove as an orphan).
    #[test]
    fn damage_before_an_intact_change_refuses_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = TopicJournal::open(dir.path(), real()).unwrap();
        j.append(&[Change::Upsert(topic("a", 1))]).unwrap();
        j.append(&[Change::Upsert(topic("b", 1))]).unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 0x01; // inside the first line's JSON
        fs::write(&path, &bytes).unwrap();
        let err = TopicJournal::open(dir.path(), real()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    /// Compaction is due once the journal outgrows the topic count (and the minimum).
    #[test]
    fn compaction_is_due_past_the_topic_count() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = TopicJournal::open(dir.path(), real()).unwrap();
        let changes: Vec<Change> = (0..COMPACT_MIN_RECORDS)
            .map(|i| Change::Upsert(topic(&format!("t{i}"), 1)))
            .collect();
        j.append(&changes[..COMPACT_MIN_RECORDS - 1]).unwrap();
        assert!(!j.wants_compaction(10));
        j.append(&changes[COMPACT_MIN_RECORDS - 1..]).unwrap();
        assert!(j.wants_compaction(10));
        assert!(!j.wants_compaction(COMPACT_MIN_RECORDS + 1));
    }
}
