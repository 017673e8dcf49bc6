//! Byte budgets that bound what connections hold in memory.
//!
//! - Request bytes across the broker (`queued.max.request.bytes`): a frame's size is reserved
//!   before its body is read and released when its response is ready, so many connections
//!   sending large requests at once wait instead of each buffering its own.
//! - Unsent response bytes, per connection (`queued.max.response.bytes.per.connection`) and
//!   across the broker (`queued.max.response.bytes`): a connection stops reading requests
//!   while its encoded responses wait for a client that does not read them. Fetch records are
//!   not held: they are sent from the segment files in pieces.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Frames up to this size are admitted whatever the request budget says, so that small
/// requests (heartbeats, metadata, fetch requests) keep flowing while large ones wait. What
/// they can hold is bounded by the connection limit.
pub(crate) const SMALL_FRAME_BYTES: usize = 64 << 10;

/// A count of bytes against a limit, with waiters for room.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: Mutex<usize>,
    freed: Notify,
}

/// Bytes counted against a [`Budget`] until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut used = self.budget.used.lock().expect("budget lock");
            *used -= self.bytes;
            drop(used);
            self.budget.freed.notify_waiters();
        }
    }
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    pub fn used(&self) -> usize {
        *self.used.lock().expect("budget lock")
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Notified whenever counted bytes are released.
    pub fn freed(&self) -> &Notify {
        &self.freed
    }

    /// Counts `bytes` without waiting (for bytes that already exist).
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        *self.used.lock().expect("budget lock") += bytes;
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    /// Counts `bytes` once they fit: when the total stays within the limit, when nothing else
    /// is counted (so one request larger than the limit still gets through, alone), or when
    /// `bytes` is at most `always`.
    pub async fn reserve(self: &Arc<Self>, bytes: usize, always: usize) -> Charge {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut used = self.used.lock().expect("budget lock");
                if bytes <= always || *used == 0 || used.saturating_add(bytes) <= self.limit {
                    *used += bytes;
                    return Charge {
                        budget: self.clone(),
                        bytes,
                    };
                }
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A reservation that does not fit waits until enough is released, and then fits.
    #[tokio::test]
    async fn reservations_wait_for_room() {
        let budget = Budget::new(100);
        let first = budget.reserve(80, 0).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(50, 0).await }
        });
        // A small one gets through regardless.
        let small = budget.reserve(10, 10).await;
        assert_eq!(budget.used(), 90);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter is woken")
            .expect("task");
        assert_eq!(budget.used(), 60);
        drop((small, second));
        assert_eq!(budget.used(), 0);
    }

    /// One request larger than the whole budget is admitted when nothing else is counted.
    #[tokio::test]
    async fn an_oversized_request_gets_through_alone() {
        let budget = Budget::new(100);
        let big = budget.reserve(500, 0).await;
        assert_eq!(budget.used(), 500);
        drop(big);
        let charge = budget.charge(30);
        assert_eq!(budget.used(), 30);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }
}
