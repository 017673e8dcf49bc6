//! Group commit across partitions: one thread makes acks=all appends durable for the whole
//! broker.
//!
//! Produce handlers register `(log, end offset)` and await a reply. The flusher thread takes
//! every request queued so far, syncs each partition involved once (up to everything appended
//! when the pass started), and answers every request that pass covered; requests that arrive
//! during a pass are covered by the next one. Waiters hold no thread while they wait, and a
//! busy broker makes few large syncs instead of many small ones.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;

use sluice_storage::{StorageError, UnifiedLog};
use tokio::sync::oneshot;

struct Request {
    log: Arc<UnifiedLog>,
    end_offset: i64,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// Handle to the flusher thread. The thread stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Flusher {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flush to {}", self.end_offset)
    }
}

impl Flusher {
    pub fn start() -> std::io::Result<Self> {
        let (requests, queue) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("sluice-flusher".into())
            .spawn(move || run(queue))?;
        Ok(Self { requests })
    }

    /// Registers a wait for every offset below `end_offset` in `log` to be durable. The
    /// request is queued now, so several can be registered before any is awaited.
    pub fn flush(&self, log: Arc<UnifiedLog>, end_offset: i64) -> FlushWait {
        if log.recovery_point() >= end_offset {
            return FlushWait::Done(Ok(()));
        }
        let (reply, done) = oneshot::channel();
        match self.requests.send(Request {
            log,
            end_offset,
            reply,
        }) {
            Ok(()) => FlushWait::Queued(done),
            Err(_) => FlushWait::Done(Err(stopped())),
        }
    }
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

fn run(queue: mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut pass = vec![first];
        pass.extend(queue.try_iter());
        // One sync per partition: to the highest offset anyone in this pass waits for (the
        // sync covers everything appended when it starts, which includes all of them).
        let mut targets: HashMap<*const UnifiedLog, (Arc<UnifiedLog>, i64)> = HashMap::new();
        for r in &pass {
            let entry = targets
                .entry(Arc::as_ptr(&r.log))
                .or_insert((r.log.clone(), r.end_offset));
            entry.1 = entry.1.max(r.end_offset);
        }
        let outcomes: HashMap<*const UnifiedLog, Result<(), StorageError>> = targets
            .into_iter()
            .map(|(key, (log, target))| (key, log.flush_to(target)))
            .collect();
        for r in pass {
            let outcome = outcomes[&Arc::as_ptr(&r.log)].clone();
            let _ = r.reply.send(outcome);
        }
    }
}
