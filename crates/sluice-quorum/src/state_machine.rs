//! The metadata quorum's state machine: the [`MetadataImage`] built by applying committed
//! entries, and its snapshots.
//!
//! ```text
//! <dir>/quorum.snapshot   frame(JSON snapshot meta: last log id, membership, id)
//!                         frame(sluice_metadata snapshot bytes, themselves checksummed)
//! ```
//!
//! The image is not written on every apply: it is rebuilt at open from the last snapshot, and
//! openraft applies the committed entries after it again. Every snapshot is written (atomically)
//! before it is reported built or installed, so that the log can be purged behind it.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use sluice_metadata::records::decode_batch;
use sluice_metadata::{decode_snapshot, encode_snapshot, MetadataImage};
use sluice_storage::{create_dir_all_durably, write_file_atomically, Fs};
use tokio::sync::watch;

use crate::types::{
    put_frame, take_frame, Entry, Frame, LogId, Membership, QuorumTypes, SnapshotMeta,
    StorageError, FRAME_BYTES_MAX, SNAPSHOT_BYTES_MAX,
};

const SNAPSHOT_FILE: &str = "quorum.snapshot";

/// What readers of the metadata see: the image as of `last_applied`. Shared with the broker
/// and the controller shell; `changes` wakes whoever waits for a newer entry.
#[derive(Debug, Clone)]
pub struct MetadataView {
    image: Arc<RwLock<MetadataImage>>,
    applied: watch::Receiver<Option<LogId>>,
}

impl MetadataView {
    /// Reads the image.
    pub fn read<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(&self.image.read().expect("metadata image lock"))
    }

    /// The last entry applied to the image.
    pub fn last_applied(&self) -> Option<LogId> {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever an entry is applied or a snapshot installed.
    pub fn changes(&self) -> watch::Receiver<Option<LogId>> {
        self.applied.clone()
    }
}

/// The state machine. Cloning shares it (the snapshot builder is a clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    image: Arc<RwLock<MetadataImage>>,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: Membership,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
    snapshots_installed: u64,
    applied: watch::Sender<Option<LogId>>,
    /// The last log id the snapshot on disk covers, followed by the log store.
    durable_snapshot: watch::Sender<Option<LogId>>,
}

fn io_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl StateMachine {
    /// Opens the state machine in `dir`: the last snapshot if there is one, else empty.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path) -> io::Result<Self> {
        create_dir_all_durably(&*fs, dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        let (image, last_applied, membership, snapshot) = if fs.exists(&path) {
            let bytes = fs.read(&path)?;
            let (meta, data) = parse_snapshot_file(&bytes)
                .map_err(|why| io_error(format!("{}: {why}", path.display())))?;
            let image =
                decode_snapshot(&data).map_err(|e| io_error(format!("{}: {e}", path.display())))?;
            (
                image,
                meta.last_log_id,
                meta.last_membership.clone(),
                Some((meta, data)),
            )
        } else {
            (MetadataImage::default(), None, Membership::default(), None)
        };
        let (durable_snapshot, _) = watch::channel(last_applied);
        let (applied, _) = watch::channel(last_applied);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                fs,
                dir: dir.to_owned(),
                last_applied,
                membership,
                snapshot,
                snapshots_built: 0,
                snapshots_installed: 0,
                applied,
                durable_snapshot,
            })),
            image: Arc::new(RwLock::new(image)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("quorum state machine lock")
    }

    /// A view of the image for readers.
    pub fn view(&self) -> MetadataView {
        MetadataView {
            image: self.image.clone(),
            applied: self.lock().applied.subscribe(),
        }
    }

    /// Follows the last log id the snapshot on disk covers.
    pub fn durable_snapshot(&self) -> watch::Receiver<Option<LogId>> {
        self.lock().durable_snapshot.subscribe()
    }

    /// Snapshots built here and snapshots received from a leader, since open.
    pub fn snapshot_counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.snapshots_built, inner.snapshots_installed)
    }
}

fn parse_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), String> {
    let Frame::Whole(meta, rest) = take_frame(bytes, FRAME_BYTES_MAX) else {
        return Err("damaged snapshot header".into());
    };
    let meta: SnapshotMeta = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    let Frame::Whole(data, rest) = take_frame(rest, SNAPSHOT_BYTES_MAX) else {
        return Err("damaged snapshot body".into());
    };
    if !rest.is_empty() {
        return Err("bytes after the snapshot".into());
    }
    Ok((meta, data.to_vec()))
}

fn write_snapshot(inner: &Inner, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(data.len() + 256);
    let meta_bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    put_frame(&mut bytes, &meta_bytes, FRAME_BYTES_MAX)?;
    put_frame(&mut bytes, data, SNAPSHOT_BYTES_MAX)?;
    write_file_atomically(&*inner.fs, &inner.dir, SNAPSHOT_FILE, &bytes)?;
    inner.durable_snapshot.send_replace(meta.last_log_id);
    Ok(())
}

impl RaftSnapshotBuilder<QuorumTypes> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QuorumTypes>, StorageError> {
        // The image and the last applied entry are read under the same lock apply holds, so
        // that the snapshot is exactly the state after `last_applied`.
        let mut inner = self.lock();
        let data = encode_snapshot(&self.image.read().expect("metadata image lock")).to_vec();
        inner.snapshots_built += 1;
        let id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, inner.snapshots_built),
            None => format!("empty-{}", inner.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: id,
        };
        write_snapshot(&inner, &meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<QuorumTypes> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let mut image = self.image.write().expect("metadata image lock");
        let mut answers = Vec::new();
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    let applied = decode_batch(&batch.0)
                        .map_err(|e| e.to_string())
                        .and_then(|records| image.apply_all(&records).map_err(|e| e.to_string()));
                    if let Err(why) = applied {
                        // The leader applied this batch to its own image before proposing it:
                        // a batch that does not apply here means the logs differ. Stop.
                        tracing::error!(index = entry.log_id.index, %why, "metadata entry does not apply");
                        return Err(StorageIOError::apply(entry.log_id, &io_error(why)).into());
                    }
                }
                EntryPayload::Membership(m) => {
                    inner.membership = Membership::new(Some(entry.log_id), m.clone());
                }
            }
            inner.last_applied = Some(entry.log_id);
            answers.push(());
        }
        drop(image);
        let last = inner.last_applied;
        inner.applied.send_replace(last);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let loaded = decode_snapshot(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io_error(e.to_string()))
        })?;
        let mut inner = self.lock();
        write_snapshot(&inner, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.image.write().expect("metadata image lock") = loaded;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        inner.snapshots_installed += 1;
        let last = inner.last_applied;
        inner.applied.send_replace(last);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QuorumTypes>>, StorageError> {
        Ok(self.lock().snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
