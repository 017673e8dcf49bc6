//! Pacing for log lines about a condition that can repeat thousands of times a second (out of
//! descriptors, a full accept queue): one line per interval, saying how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Says when a repeated event is due to be logged again.
#[derive(Debug)]
pub struct EveryInterval {
    interval: Duration,
    /// When the last line was allowed, and how many events were suppressed since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl EveryInterval {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Records one event. `Some(n)` means log it now, mentioning the `n` events suppressed
    /// since the last line; `None` means it is suppressed.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst within one interval gives one line; the next line, an interval later, counts
    /// what the burst left out.
    #[test]
    fn one_line_per_interval_counting_the_suppressed() {
        let pace = EveryInterval::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(pace.due_at(start), Some(0));
        for i in 1..=1000 {
            assert_eq!(pace.due_at(start + Duration::from_millis(i)), None);
        }
        assert_eq!(pace.due_at(start + Duration::from_secs(10)), Some(1000));
        assert_eq!(pace.due_at(start + Duration::from_secs(11)), None);
        assert_eq!(pace.due_at(start + Duration::from_secs(20)), Some(1));
    }
}
