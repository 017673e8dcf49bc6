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

/// Segment files a directory's logs keep open at most, by default: as many as there are
/// (the broker sets a bound from the open-file limit at start-up).
pub const DEFAULT_OPEN_SEGMENT_FILES_MAX: usize = usize::MAX;

/// Bounds how many segment files stay open: a segment's file is closed when unused for a
/// while and others need descriptors, and reopened on its next use. Eviction is a clock (a
/// second chance for files used since the hand last passed), so a busy file is not closed
/// for an idle one. Readers holding a file (a fetch streaming it) keep it open until done.
#[derive(Debug)]
pub struct HandleCache {
    capacity: AtomicUsize,
    /// Files open through this cache now.
    open: AtomicUsize,
    ring: std::sync::Mutex<std::collections::VecDeque<std::sync::Weak<SegmentFile>>>,
}

impl Default for HandleCache {
    fn default() -> Self {
        Self::new(DEFAULT_OPEN_SEGMENT_FILES_MAX)
    }
}

impl HandleCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: AtomicUsize::new(capacity.max(1)),
            open: AtomicUsize::new(0),
            ring: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        self.evict();
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Segment files open through this cache.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn admit(&self, file: &std::sync::Arc<SegmentFile>) {
        self.open.fetch_add(1, Ordering::Relaxed);
        {
            let mut ring = self.ring.lock().expect("handle ring");
            ring.push_back(std::sync::Arc::downgrade(file));
            // Entries of dropped segments, and older entries of files reopened since, go
            // once they outnumber the open files: the ring stays O(open files).
            if ring.len() > 2 * self.open().max(32) {
                let mut seen = std::collections::HashSet::new();
                ring.retain(|w| w.strong_count() > 0 && seen.insert(w.as_ptr()));
            }
        }
        self.evict();
    }

    /// Closes files, least recently used first, until at most `capacity` are open. Each
    /// entry gets one pass of grace if it was used since the last; the walk is bounded.
    fn evict(&self) {
        let capacity = self.capacity();
        if self.open() <= capacity {
            return;
        }
        let mut ring = self.ring.lock().expect("handle ring");
        let mut steps = 2 * ring.len();
        while self.open() > capacity && steps > 0 {
            steps -= 1;
            let Some(entry) = ring.pop_front() else { break };
            let Some(file) = entry.upgrade() else {
                continue; // dropped: its count went with it
            };
            if file.referenced.swap(false, Ordering::Relaxed) {
                ring.push_back(entry);
            } else {
                file.close();
            }
        }
    }
}

/// A segment's `.log` file: open while in use, closed by its [`HandleCache`] when others need
/// the descriptor, reopened on the next use. Its identity (not the descriptor) is what tells
/// one segment's file from its replacement.
#[derive(Debug)]
pub struct SegmentFile {
    fs: std::sync::Arc<dyn crate::Fs>,
    cache: std::sync::Arc<HandleCache>,
    path: std::sync::Mutex<std::path::PathBuf>,
    file: std::sync::Mutex<Option<std::sync::Arc<CountedFile>>>,
    referenced: std::sync::atomic::AtomicBool,
}

impl SegmentFile {
    /// A segment file just opened (or created) at `path`.
    pub fn opened(
        fs: std::sync::Arc<dyn crate::Fs>,
        cache: std::sync::Arc<HandleCache>,
        path: std::path::PathBuf,
        file: Box<dyn crate::FsFile>,
    ) -> std::sync::Arc<Self> {
        let slot = std::sync::Arc::new(Self {
            fs,
            cache: cache.clone(),
            path: std::sync::Mutex::new(path),
            file: std::sync::Mutex::new(Some(std::sync::Arc::new(CountedFile::new(file)))),
            referenced: std::sync::atomic::AtomicBool::new(true),
        });
        cache.admit(&slot);
        slot
    }

    /// The open file, reopened if the cache closed it.
    pub fn get(self: &std::sync::Arc<Self>) -> io::Result<std::sync::Arc<CountedFile>> {
        self.referenced.store(true, Ordering::Relaxed);
        let mut slot = self.file.lock().expect("segment file");
        if let Some(file) = slot.as_ref() {
            return Ok(file.clone());
        }
        let path = self.path.lock().expect("segment path").clone();
        let file = std::sync::Arc::new(CountedFile::new(
            self.fs.open(&path, crate::OpenMode::Existing)?,
        ));
        *slot = Some(file.clone());
        drop(slot);
        self.cache.admit(self);
        Ok(file)
    }

    /// The file now lives at `path` (a rename).
    pub fn moved_to(&self, path: std::path::PathBuf) {
        *self.path.lock().expect("segment path") = path;
    }

    fn close(&self) {
        if self.file.lock().expect("segment file").take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the descriptor is open now (for tests).
    pub fn is_open(&self) -> bool {
        self.file.lock().expect("segment file").is_some()
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.file.get_mut().map(|f| f.is_some()).unwrap_or(false) {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
