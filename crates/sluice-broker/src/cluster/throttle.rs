//! Kafka's replication quotas (KIP-73): while a replica is out of sync (catching up after a
//! reassignment, say), its leader sends it at most `leader.replication.throttled.rate` and
//! it fetches at most `follower.replication.throttled.rate` bytes per second, for the
//! replicas its topic lists in `leader.replication.throttled.replicas` /
//! `follower.replication.throttled.replicas`. In-sync replicas are never throttled, so a
//! throttle cannot slow acks=all.
//!
//! The rates are dynamic broker configs (this broker's own, else every broker's, else no
//! limit), refreshed from the metadata image by the publisher. Each direction has one meter
//! over the last [`WINDOW_NUM`] windows of [`WINDOW_SECONDS`] (Kafka's
//! `replication.quota.window.num` and `replication.quota.window.size.seconds` defaults):
//! a throttled partition is left out of a fetch (or answered without records) while the
//! meter is above the rate, and is read in pieces of a tenth of a second's worth, so the
//! rate holds within one window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sluice_metadata::MetadataImage;

/// Kafka's `replication.quota.window.num` and `replication.quota.window.size.seconds`.
const WINDOW_NUM: u64 = 11;
const WINDOW_SECONDS: u64 = 1;
/// The least a throttled partition may read at once (one small batch fits).
const PIECE_MIN_BYTES: usize = 16 << 10;

/// One direction's rate and meter.
#[derive(Debug)]
pub(crate) struct Meter {
    /// Bytes per second; `u64::MAX` for no limit.
    limit: AtomicU64,
    /// Bytes per window, oldest first: (window number since `origin`, bytes).
    windows: Mutex<VecDeque<(u64, u64)>>,
    origin: Instant,
}

impl Meter {
    fn new() -> Self {
        Self {
            limit: AtomicU64::new(u64::MAX),
            windows: Mutex::new(VecDeque::new()),
            origin: Instant::now(),
        }
    }

    fn window_now(&self) -> u64 {
        self.origin.elapsed().as_secs() / WINDOW_SECONDS
    }

    /// The rate limit, if any.
    pub(crate) fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l != u64::MAX)
    }

    /// Bytes per second over the windows kept, counting at least one whole window.
    fn rate(&self) -> u64 {
        let now = self.window_now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        while windows.front().is_some_and(|&(w, _)| w + WINDOW_NUM <= now) {
            windows.pop_front();
        }
        let Some(&(first, _)) = windows.front() else {
            return 0;
        };
        let bytes: u64 = windows.iter().map(|&(_, b)| b).sum();
        let elapsed_ms = ((now - first) * WINDOW_SECONDS * 1000
            + self.origin.elapsed().as_millis() as u64 % (WINDOW_SECONDS * 1000))
            .max(WINDOW_SECONDS * 1000);
        bytes.saturating_mul(1000) / elapsed_ms
    }

    /// Whether throttled replicas must wait: the meter is above the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.limit().is_some_and(|limit| self.rate() > limit)
    }

    /// Counts `bytes` moved for throttled replicas.
    pub(crate) fn record(&self, bytes: usize) {
        if bytes == 0 || self.limit().is_none() {
            return;
        }
        let now = self.window_now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.back_mut() {
            Some((w, b)) if *w == now => *b += bytes as u64,
            _ => windows.push_back((now, bytes as u64)),
        }
        while windows.len() as u64 > WINDOW_NUM {
            windows.pop_front();
        }
    }

    /// The most a throttled partition reads in one fetch: a tenth of a second's worth (at
    /// least [`PIECE_MIN_BYTES`]), never more than `max`.
    pub(crate) fn piece(&self, max: usize) -> usize {
        match self.limit() {
            None => max,
            Some(limit) => usize::try_from(limit / 10)
                .unwrap_or(usize::MAX)
                .max(PIECE_MIN_BYTES)
                .min(max),
        }
    }
}

/// This broker's two replication meters.
#[derive(Debug)]
pub(crate) struct ReplicationThrottle {
    pub(crate) leader: Meter,
    pub(crate) follower: Meter,
}

impl Default for ReplicationThrottle {
    fn default() -> Self {
        Self {
            leader: Meter::new(),
            follower: Meter::new(),
        }
    }
}

impl ReplicationThrottle {
    /// Takes the rates from the metadata image: this broker's own dynamic config, else the
    /// one for every broker, else no limit.
    pub(crate) fn refresh(&self, image: &MetadataImage, node_id: i32) {
        let me = node_id.to_string();
        let rate = |key: &str| {
            [me.as_str(), ""]
                .iter()
                .find_map(|name| {
                    image
                        .configs(sluice_metadata::records::RESOURCE_BROKER, name)?
                        .get(key)?
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
                .map_or(u64::MAX, |v| v.max(0) as u64)
        };
        self.leader
            .limit
            .store(rate("leader.replication.throttled.rate"), Ordering::Relaxed);
        self.follower.limit.store(
            rate("follower.replication.throttled.rate"),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a limit nothing is throttled or metered; with one, the meter says exceeded
    /// once a window's worth is recorded, and a piece is a tenth of a second's worth.
    #[test]
    fn a_meter_is_exceeded_once_the_rate_passes_its_limit() {
        let m = Meter::new();
        m.record(1 << 30);
        assert!(!m.exceeded());
        assert_eq!(m.piece(4 << 20), 4 << 20);
        m.limit.store(1_000_000, Ordering::Relaxed);
        assert!(!m.exceeded());
        assert_eq!(m.piece(4 << 20), 100_000);
        m.record(900_000);
        assert!(!m.exceeded(), "below one second's worth");
        m.record(200_000);
        assert!(m.exceeded(), "past one second's worth");
        m.limit.store(1, Ordering::Relaxed);
        assert_eq!(m.piece(4 << 20), PIECE_MIN_BYTES);
        // A response with no room left: nothing, never a panic.
        assert_eq!(m.piece(0), 0);
        m.limit.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(m.piece(1000), 1000);
    }
}
