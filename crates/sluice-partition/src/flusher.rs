//! Group commit per partition, with the partitions synced in parallel: a small pool of sync
//! threads makes acks=all appends durable for the whole broker.
//!
//! Produce handlers register `(log, end offset)` and await a reply. A partition with waiters
//! and no sync running is queued; a sync thread takes it, syncs it once (up to everything
//! appended when the sync starts, which covers every waiter it took) and answers those
//! waiters at once, without waiting for other partitions. Waiters that arrive while their
//! partition is being synced are covered by its next sync, which starts as soon as this one
//! ends. So one partition is never synced by two threads at once (its syncs are serialised
//! anyway), different partitions are synced side by side, and a busy partition makes few
//! large syncs instead of many small ones. Waiters hold no thread while they wait.
//!
//! Threads are started as they are needed (a partition queued while every thread is busy),
//! up to [`SYNC_THREADS_MAX`], and stop when the last handle is dropped.
//!
//! With [`SyncScope::FileSystem`] one thread instead takes every partition that has waiters
//! at once and makes them all durable with one sync of the file system
//! ([`sluice_storage::sync_together`]): partitions that gain waiters meanwhile are covered by
//! the next one. On the disks we run on that costs a fraction of the CPU and device flushes of
//! a sync per partition, and waits less.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sluice_storage::{sync_together, StorageError, UnifiedLog};
use tokio::sync::oneshot;

/// The most partitions synced at once. Parallel fdatasyncs of different files share the file
/// system's journal commits and the device's cache flushes; more threads than this add
/// contention, not overlap, on the disks we run on.
pub(crate) const SYNC_THREADS_MAX: usize = 8;

type Reply = oneshot::Sender<Result<(), StorageError>>;

/// A partition's log and the waiters (end offset, reply) one sync takes from it.
type Taken = (Arc<UnifiedLog>, Vec<(i64, Reply)>);

/// What one sync covers (the broker's `log.flush.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncScope {
    /// One sync of the whole file system for every partition waiting, where the platform
    /// can (`syncfs(2)`, Linux 5.8 and later); elsewhere each partition alone.
    FileSystem,
    /// Each partition synced on its own (`fdatasync(2)` of its files), several at once.
    File,
}

impl SyncScope {
    /// The scope as configured, narrowed to what the platform supports.
    pub fn effective(self) -> Self {
        match self {
            Self::FileSystem if sluice_storage::syncfs_supported() => Self::FileSystem,
            _ => Self::File,
        }
    }
}

/// A log with waiters, or with a sync running.
struct Partition {
    log: Arc<UnifiedLog>,
    /// Waiters the next sync covers: their end offsets and replies.
    waiters: Vec<(i64, Reply)>,
    /// A thread is syncing this log now (for waiters taken before these).
    syncing: bool,
}

/// Keyed by the log's address, which cannot be reused while the entry holds the `Arc`.
#[derive(Default)]
struct Queue {
    partitions: HashMap<usize, Partition>,
    /// Partitions with waiters and no sync running, oldest first.
    ready: VecDeque<usize>,
    /// Threads started, and those waiting for work.
    threads: usize,
    idle: usize,
    /// Idle threads already signalled, not yet running.
    signalled: usize,
    /// Set when the last handle is dropped: threads finish the queue, then stop.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    threads_max: usize,
    scope: SyncScope,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue's state is updated in single steps; a thread that panicked mid-sync left
        // nothing half-done in it (its waiters see their reply dropped).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last [`Flusher`] handle goes.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_all();
    }
}

/// Handle to the sync threads. They stop when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.shared.lock();
        write!(
            f,
            "Flusher {{ partitions: {}, threads: {}, scope: {:?} }}",
            q.partitions.len(),
            q.threads,
            self.shared.scope
        )
    }
}

impl Flusher {
    /// Starts the first sync thread; with [`SyncScope::File`] more start as partitions queue
    /// up.
    pub fn start(scope: SyncScope) -> std::io::Result<Self> {
        match scope.effective() {
            SyncScope::FileSystem => Self::with_threads(1, SyncScope::FileSystem),
            SyncScope::File => Self::with_threads(SYNC_THREADS_MAX, SyncScope::File),
        }
    }

    fn with_threads(threads_max: usize, scope: SyncScope) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            threads_max: threads_max.max(1),
            scope,
        });
        spawn(&shared)?;
        shared.lock().threads = 1;
        Ok(Self {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        })
    }

    /// Registers a wait for every offset below `end_offset` in `log` to be durable. The
    /// request is queued now, so several can be registered before any is awaited.
    pub fn flush(&self, log: Arc<UnifiedLog>, end_offset: i64) -> FlushWait {
        if log.recovery_point() >= end_offset {
            return FlushWait::Done(Ok(()));
        }
        let (reply, done) = oneshot::channel();
        let key = Arc::as_ptr(&log) as usize;
        let mut q = self.shared.lock();
        let partition = q.partitions.entry(key).or_insert_with(|| Partition {
            log,
            waiters: Vec::new(),
            syncing: false,
        });
        // Already queued, or being synced (its thread queues it again when done).
        let queued = !partition.waiters.is_empty() || partition.syncing;
        partition.waiters.push((end_offset, reply));
        if !queued {
            q.ready.push_back(key);
            if q.idle > q.signalled {
                q.signalled += 1;
                self.shared.work.notify_one();
            } else if q.threads < self.shared.threads_max {
                // Every thread is busy: one more, so this partition need not wait for them.
                // If it cannot start, the running ones get to it.
                match spawn(&self.shared) {
                    Ok(()) => q.threads += 1,
                    Err(e) => tracing::warn!(error = %e, threads = q.threads,
                        "cannot start another sync thread"),
                }
            }
        }
        FlushWait::Queued(done)
    }
}

fn spawn(shared: &Arc<Shared>) -> std::io::Result<()> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("sluice-flusher".into())
        .spawn(move || run(&shared))
        .map(|_| ())
}

fn stopped() -> StorageError {
    StorageError::Io("the flusher has stopped".into())
}

/// A registered flush.
pub enum FlushWait {
    Done(Result<(), StorageError>),
    Queued(oneshot::Receiver<Result<(), StorageError>>),
}

impl FlushWait {
    pub async fn wait(self) -> Result<(), StorageError> {
        match self {
            Self::Done(result) => result,
            Self::Queued(done) => done.await.unwrap_or_else(|_| Err(stopped())),
        }
    }
}

/// A sync thread: takes the oldest ready partition (with [`SyncScope::FileSystem`], every
/// ready partition), syncs it for every waiter it has, answers them, and queues the
/// partition again if more waiters came meanwhile.
fn run(shared: &Shared) {
    let mut q = shared.lock();
    loop {
        if q.ready.is_empty() {
            if q.closed {
                return;
            }
            q.idle += 1;
            q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
            q.signalled = q.signalled.saturating_sub(1);
            continue;
        }
        let keys: Vec<usize> = match shared.scope {
            SyncScope::FileSystem => q.ready.drain(..).collect(),
            SyncScope::File => q.ready.pop_front().into_iter().collect(),
        };
        let mut taken = Vec::with_capacity(keys.len());
        for &key in &keys {
            let partition = q
                .partitions
                .get_mut(&key)
                .expect("a ready partition is in the map");
            partition.syncing = true;
            taken.push((
                partition.log.clone(),
                std::mem::take(&mut partition.waiters),
            ));
        }
        drop(q);
        // A panic must not leave partitions marked as syncing, which would strand every later
        // waiter: it fails these waiters instead, and the thread goes on.
        let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync(&taken)))
            .unwrap_or_else(|_| vec![Err(StorageError::Io("a sync panicked".into())); taken.len()]);
        for ((_, waiters), outcome) in taken.into_iter().zip(outcomes) {
            for (_, reply) in waiters {
                let _ = reply.send(outcome.clone());
            }
        }
        q = shared.lock();
        for key in keys {
            let partition = q
                .partitions
                .get_mut(&key)
                .expect("a partition being synced stays in the map");
            partition.syncing = false;
            if partition.waiters.is_empty() {
                q.partitions.remove(&key);
            } else {
                q.ready.push_back(key);
            }
        }
    }
}

/// Makes each log durable up to the highest offset its waiters wait for: together when
/// there are several and their file system allows, else one by one. Each sync covers
/// everything appended when it starts, which includes every waiter taken. A failure fails
/// exactly these waiters (and takes the directory offline, so later ones fail too).
fn sync(taken: &[Taken]) -> Vec<Result<(), StorageError>> {
    if taken.len() > 1 {
        let logs: Vec<Arc<UnifiedLog>> = taken.iter().map(|(log, _)| log.clone()).collect();
        if let Some(outcomes) = sync_together(&logs) {
            return outcomes;
        }
    }
    taken
        .iter()
        .map(|(log, waiters)| {
            let target = waiters.iter().map(|(end, _)| *end).max().unwrap_or(0);
            log.flush_to(target)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sluice_records::{BatchBuilder, NewRecord};
    use sluice_storage::{DirState, Durability, LogConfig};

    /// What the gate's file-system syncs do.
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    enum FsSync {
        #[default]
        Works,
        Fails,
        Unsupported,
        /// Waits until released, then works.
        Held,
    }

    /// Once armed, syncs of files in a log directory named "slow" wait until released, and
    /// syncs in a directory named "bad" fail. File-system syncs are counted and do what
    /// `fs` says; every sync is recorded in `events` ("file PATH", "dir PATH").
    #[derive(Debug, Default)]
    struct Gate {
        armed: AtomicBool,
        released: Mutex<bool>,
        opened: Condvar,
        /// A sync is waiting for the release.
        held: AtomicBool,
        fs_syncs: std::sync::atomic::AtomicUsize,
        fs: Mutex<FsSync>,
        events: Mutex<Vec<String>>,
    }

    impl Gate {
        fn release(&self) {
            *self.released.lock().unwrap() = true;
            self.opened.notify_all();
        }

        fn hold(&self) {
            let mut released = self.released.lock().unwrap();
            self.held.store(true, Ordering::SeqCst);
            while !*released {
                released = self.opened.wait(released).unwrap();
            }
        }
    }

    fn path_of(file: &File) -> String {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        std::fs::read_link(link)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    impl Durability for Gate {
        fn sync_file(&self, file: &File) -> std::io::Result<()> {
            if !self.armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let path = path_of(file);
            self.events.lock().unwrap().push(format!("file {path}"));
            if path.contains("/slow/") {
                self.hold();
            }
            if path.contains("/bad/") {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            Ok(())
        }
        fn sync_dir(&self, dir: &File) -> std::io::Result<()> {
            let path = path_of(dir);
            self.events.lock().unwrap().push(format!("dir {path}"));
            Ok(())
        }
        fn sync_filesystem(&self, _: &File) -> std::io::Result<()> {
            self.fs_syncs.fetch_add(1, Ordering::SeqCst);
            let mode = *self.fs.lock().unwrap();
            match mode {
                FsSync::Works => Ok(()),
                FsSync::Fails => Err(std::io::Error::other("injected syncfs failure")),
                FsSync::Unsupported => Err(std::io::ErrorKind::Unsupported.into()),
                FsSync::Held => {
                    self.hold();
                    Ok(())
                }
            }
        }
    }

    fn log_in(root: &std::path::Path, name: &str, gate: &Arc<Gate>) -> Arc<UnifiedLog> {
        log_with(root, name, &Arc::new(DirState::new(gate.clone())))
    }

    fn log_with(root: &std::path::Path, name: &str, state: &Arc<DirState>) -> Arc<UnifiedLog> {
        let state = state.clone();
        let log = UnifiedLog::open(&root.join(name), LogConfig::default(), None, state, 0)
            .expect("open log");
        let batch = BatchBuilder::new(0)
            .push(NewRecord {
                value: Some(b"v".to_vec()),
                ..NewRecord::default()
            })
            .build();
        log.append(&batch, 0).expect("append");
        Arc::new(log)
    }

    /// A partition's waiters are answered when its own sync ends: a partition whose sync
    /// hangs holds up nobody else, and its waiters are answered once it finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_partition_does_not_hold_up_the_others() {
        let root = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let slow = log_in(root.path(), "slow", &gate);
        let fast = log_in(root.path(), "fast", &gate);
        gate.armed.store(true, Ordering::SeqCst);
        let flusher = Flusher::with_threads(SYNC_THREADS_MAX, SyncScope::File).unwrap();
        let slow_wait = flusher.flush(slow.clone(), 1);
        let fast_wait = flusher.flush(fast.clone(), 1);
        fast_wait.wait().await.expect("the fast partition syncs");
        assert!(slow.recovery_point() < 1, "the slow sync is still held");
        gate.release();
        slow_wait.wait().await.expect("the slow partition syncs");
        assert_eq!(slow.recovery_point(), 1);
    }

    /// A failed sync fails exactly the waiters it covered, each with the storage error;
    /// another directory's partition is answered normally.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_its_waiters() {
        let root = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        gate.release();
        let bad = log_in(root.path(), "bad", &gate);
        let good = log_in(root.path(), "good", &gate);
        gate.armed.store(true, Ordering::SeqCst);
        let flusher = Flusher::with_threads(SYNC_THREADS_MAX, SyncScope::File).unwrap();
        let waits = [
            flusher.flush(bad.clone(), 1),
            flusher.flush(bad.clone(), 1),
            flusher.flush(good.clone(), 1),
        ];
        let mut outcomes = Vec::new();
        for w in waits {
            outcomes.push(w.wait().await);
        }
        assert!(outcomes[0].is_err(), "{:?}", outcomes[0]);
        assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
        assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
        assert!(bad.recovery_point() < 1);
    }

    /// With one thread, many partitions are still all synced and answered (they queue).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_thread_serves_every_partition() {
        let root = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        gate.release();
        let logs: Vec<_> = (0..20)
            .map(|i| log_in(root.path(), &format!("p{i}"), &gate))
            .collect();
        let flusher = Flusher::with_threads(1, SyncScope::File).unwrap();
        let waits: Vec<_> = logs.iter().map(|l| flusher.flush(l.clone(), 1)).collect();
        for w in waits {
            w.wait().await.expect("synced");
        }
        assert!(logs.iter().all(|l| l.recovery_point() == 1));
        assert_eq!(flusher.shared.lock().threads, 1);
    }

    /// Twenty partitions of one directory, under a file-system-scoped flusher whose one
    /// thread is held syncing another partition alone while all twenty register a waiter;
    /// then the hold is released. File-system syncs do what `fs` says. Returns the gate, the
    /// directory state, the twenty logs and their waiters' outcomes.
    async fn twenty_waiting_behind_a_held_sync(
        fs: FsSync,
    ) -> (
        Arc<Gate>,
        Arc<DirState>,
        Vec<Arc<UnifiedLog>>,
        Vec<Result<(), StorageError>>,
    ) {
        let root = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let state = Arc::new(DirState::new(gate.clone()));
        let slow = log_with(root.path(), "slow", &state);
        let logs: Vec<_> = (0..20)
            .map(|i| log_with(root.path(), &format!("p{i}"), &state))
            .collect();
        gate.armed.store(true, Ordering::SeqCst);
        *gate.fs.lock().unwrap() = fs;
        let flusher = Flusher::with_threads(1, SyncScope::FileSystem).unwrap();
        // The only partition waiting is synced alone, and holds the one sync thread.
        let first = flusher.flush(slow.clone(), 1);
        while !gate.held.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let waits: Vec<_> = logs.iter().map(|l| flusher.flush(l.clone(), 1)).collect();
        gate.release();
        first.wait().await.expect("the first partition syncs alone");
        let mut outcomes = Vec::new();
        for w in waits {
            outcomes.push(w.wait().await);
        }
        (gate, state, logs, outcomes)
    }

    /// Partitions that gain waiters while a sync runs are all covered by one sync of the file
    /// system when it ends, not one sync each; each gets the recovery point it waited for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_partitions_share_one_file_system_sync() {
        let (gate, _, logs, outcomes) = twenty_waiting_behind_a_held_sync(FsSync::Works).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert!(logs.iter().all(|l| l.recovery_point() == 1));
        let syncs = gate.fs_syncs.load(Ordering::SeqCst);
        assert_eq!(syncs, 1, "one sync for all 20");
    }

    /// A failed file-system sync fails every waiter it covered and takes the directory
    /// offline; nothing it covered counts as durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_file_system_sync_fails_all_it_covered() {
        let (gate, state, logs, outcomes) = twenty_waiting_behind_a_held_sync(FsSync::Fails).await;
        assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
        assert!(logs.iter().all(|l| l.recovery_point() < 1));
        assert!(state.is_offline());
        assert_eq!(gate.fs_syncs.load(Ordering::SeqCst), 1);
    }

    /// Where the file system cannot be synced as a whole, each partition is synced alone,
    /// and the file system is not asked again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_file_system_syncs_each_partition_syncs_alone() {
        let (gate, state, logs, outcomes) =
            twenty_waiting_behind_a_held_sync(FsSync::Unsupported).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert!(logs.iter().all(|l| l.recovery_point() == 1));
        assert!(!state.is_offline());
        assert_eq!(gate.fs_syncs.load(Ordering::SeqCst), 1, "asked once");
    }

    /// A checkpoint of a log while a file-system sync covering it is in progress syncs the
    /// log's directory itself (a new log's first sync must) before its recovery point moves:
    /// the sync in progress does not count until it has ended. The recovery point moves
    /// before the checkpoint syncs its index files, so the directory sync must come first.
    #[test]
    fn a_checkpoint_during_a_file_system_sync_still_syncs_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let state = Arc::new(DirState::new(gate.clone()));
        let logs = vec![
            log_with(root.path(), "p0", &state),
            log_with(root.path(), "p1", &state),
        ];
        gate.armed.store(true, Ordering::SeqCst);
        *gate.fs.lock().unwrap() = FsSync::Held;
        let together = {
            let logs = logs.clone();
            std::thread::spawn(move || sync_together(&logs))
        };
        while !gate.held.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        logs[0].flush_all(0).expect("checkpoint");
        let events = gate.events.lock().unwrap().clone();
        let p0 = root.path().join("p0").display().to_string();
        let dir_sync = events.iter().position(|e| *e == format!("dir {p0}"));
        let index_sync = events
            .iter()
            .position(|e| e.starts_with(&format!("file {p0}/")) && e.ends_with("index"));
        assert!(
            matches!((dir_sync, index_sync), (Some(d), Some(i)) if d < i),
            "the directory was not synced before the recovery point moved: {events:?}"
        );
        gate.release();
        let outcomes = together.join().unwrap().expect("syncs as a whole");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    }
}
