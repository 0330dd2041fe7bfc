//! The one retry pause of the library (and of the sidecar built on it).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponential backoff with jitter: each pause is drawn uniformly from the upper half of a
/// ceiling that starts at `base` and doubles up to `max`, so retries of many clients spread
/// out instead of arriving together. [`Backoff::reset`] after a success starts over.
///
/// ```
/// use std::time::Duration;
/// let mut b = lockkeeper::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// let first = b.next_pause();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Pauses from `base` doubling up to `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            current: base,
        }
    }

    /// The next pause: between half the current ceiling and the ceiling, which then doubles
    /// (up to the cap).
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
        let low = nanos / 2;
        Duration::from_nanos(low + jitter() % (nanos - low + 1))
    }

    /// Starts over from `base` (after a success).
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

/// A pseudo-random number, good enough to spread retries: SipHash, keyed per thread from the
/// operating system's randomness by std, over a process-wide counter.
fn jitter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_pause();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_pause();
        }
        let capped = b.next_pause();
        assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(100));
    }

    #[test]
    fn pauses_are_spread_out() {
        let pauses: std::collections::BTreeSet<_> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_pause())
            .collect();
        assert!(pauses.len() > 40, "{pauses:?}");
        assert!(pauses
            .iter()
            .all(|p| *p >= Duration::from_millis(500) && *p <= Duration::from_secs(1)));
    }
}
