//! The one I/O seam tests need to break: making bytes durable.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes written data durable. The production implementation calls fdatasync/fsync; tests
/// substitute one that fails to prove a failed sync takes the log directory offline.
pub trait Durability: Send + Sync + std::fmt::Debug {
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// Makes a directory's entries durable. The caller opens the directory first, so that
    /// running out of descriptors shows up before anything was renamed or created.
    fn sync_dir(&self, dir: &File) -> io::Result<()>;
}

/// fdatasync for files, fsync of the opened directory for directory entries.
#[derive(Debug, Default)]
pub struct Fsync;

impl Durability for Fsync {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        dir.sync_all()
    }
}

/// Syncs for real until `ok_syncs` syncs have happened, then fails every sync.
#[derive(Debug)]
pub struct FailAfter {
    remaining: AtomicU64,
}

impl FailAfter {
    pub fn new(ok_syncs: u64) -> Self {
        Self {
            remaining: AtomicU64::new(ok_syncs),
        }
    }

    fn step(&self) -> io::Result<()> {
        let ok = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("injected fsync failure"))
        }
    }
}

impl Durability for FailAfter {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.step()?;
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        self.step()?;
        Fsync.sync_dir(dir)
    }
}
