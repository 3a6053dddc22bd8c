//! Backoff between connection attempts: the delay starts small, doubles after every failed
//! attempt up to a limit, and starts over once an attempt succeeds.

use std::time::Duration;

/// The delays between attempts to reach one peer.
///
/// ```
/// use std::time::Duration;
/// use atoll_cluster::protocol::backoff::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(100));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(200));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(300));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(300));
/// backoff.reset();
/// assert_eq!(backoff.next_delay(), Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `initial`, doubling up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; the one after it is twice as long, up to the
    /// limit.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts over from the initial delay (after an attempt succeeded).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_the_start_is_the_start() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(1));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn doubling_never_overflows() {
        let mut backoff = Backoff::new(Duration::MAX / 2 + Duration::from_secs(1), Duration::MAX);
        backoff.next_delay();
        assert_eq!(backoff.next_delay(), Duration::MAX);
    }
}
