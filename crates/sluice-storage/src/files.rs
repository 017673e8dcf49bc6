//! Files the storage keeps open, counted, so that the broker can keep its connections and new
//! partitions within the process's open-file limit; and the errors that mean the process ran
//! out of descriptors, which are a passing condition, not a disk failure.

use std::io;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};

static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// A segment or index file held open by a log. Counted from creation until the last handle
/// (readers clone the `Arc`) is dropped, which is when the descriptor is closed.
#[derive(Debug)]
pub struct CountedFile(Box<dyn crate::FsFile>);

impl CountedFile {
    pub fn new(file: Box<dyn crate::FsFile>) -> Self {
        OPEN_FILES.fetch_add(1, Ordering::Relaxed);
        Self(file)
    }
}

impl Deref for CountedFile {
    type Target = dyn crate::FsFile;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Drop for CountedFile {
    fn drop(&mut self) {
        OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many files storage holds open in this process (segments and transaction indexes),
/// not counting the short-lived ones it opens to write a checkpoint or sync a directory.
pub fn open_file_count() -> usize {
    OPEN_FILES.load(Ordering::Relaxed)
}

/// Whether `e` says the process (EMFILE) or the system (ENFILE) has no descriptor left. Only
/// an `open` (or `accept`) fails this way, before anything was written.
pub fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
