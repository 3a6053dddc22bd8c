//! Incarnation numbers: every start of a node gets a larger one than any start before it,
//! so pids of an earlier run are never taken for pids of this one and the names and locks
//! of older incarnations can be released.
//!
//! The wall clock alone could step back (or be wrong after a reboot); the last number
//! recorded on disk alone would not survive losing the disk. The next number is the larger
//! of both: the clock's quarter-seconds since 2024-01-01 UTC, and one more than the last
//! one recorded.

/// 2024-01-01T00:00:00Z in seconds since the Unix epoch.
pub const EPOCH_2024: u64 = 1_704_067_200;

/// Quarter-seconds since 2024-01-01 UTC for a time of `unix_millis` (valid until about
/// 2058 in 32 bits).
pub fn quarters_since_2024(unix_millis: u128) -> u64 {
    u64::try_from(unix_millis / 250)
        .unwrap_or(u64::MAX)
        .saturating_sub(EPOCH_2024 * 4)
}

/// The next incarnation after `last` (the largest recorded, if any) at clock reading
/// `clock_quarters`: never 0, always larger than `last`.
pub fn next_incarnation(clock_quarters: u64, last: Option<u32>) -> u32 {
    let floor = last.map_or(1, |l| l.saturating_add(1));
    u32::try_from(clock_quarters).unwrap_or(u32::MAX).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_when_the_clock_steps_back() {
        let first = next_incarnation(1_000, None);
        assert_eq!(first, 1_000);
        let after_step_back = next_incarnation(10, Some(first));
        assert_eq!(after_step_back, 1_001);
        assert_eq!(next_incarnation(5_000, Some(after_step_back)), 5_000);
    }

    #[test]
    fn is_never_zero() {
        assert_eq!(next_incarnation(0, None), 1);
        assert_eq!(quarters_since_2024(0), 0);
        assert_eq!(quarters_since_2024(u128::from(EPOCH_2024) * 1000 + 500), 2);
    }
}
