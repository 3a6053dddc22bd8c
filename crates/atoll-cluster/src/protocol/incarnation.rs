//! Incarnation numbers: every start of a node gets a larger one than any start before it,
//! so pids of an earlier run are never taken for pids of this one and the names and locks
//! of older incarnations can be released.
//!
//! The wall clock alone could step back (or be wrong after a reboot); the last number
//! recorded on disk alone would not survive losing the disk. The next number is the larger
//! of both: the clock's quarter-seconds since 2024-01-01 UTC, and one more than the last
//! one recorded. The number is recorded (synced) before the node uses it, so a crash
//! between the two can only skip numbers, never hand one out twice.
//!
//! A node with nowhere to record (no data directory) has the clock alone, and within one
//! process the last number handed out there: restarted in a new process after its wall
//! clock stepped back, it can get a number an earlier run already used.

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

/// The file (in a data directory, or on a simulated disk) that records the last
/// incarnation.
pub const RECORD_FILE: &str = "incarnation";

/// The last incarnation from a record's bytes (decimal digits, surrounding whitespace
/// allowed); `None` for anything else, so a damaged record counts as none (the clock
/// still bounds the number from below).
pub fn decode_record(bytes: &[u8]) -> Option<u32> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// A record of `incarnation`, as [`decode_record`] reads it.
pub fn encode_record(incarnation: u32) -> Vec<u8> {
    incarnation.to_string().into_bytes()
}

/// The incarnation a start gets: the next after the record (if it decodes) at clock
/// reading `unix_millis`, with `floor` (the last handed out in this process, if that
/// counts) as a further lower bound. Returns it with the record to write before using it.
pub fn start(unix_millis: u128, record: Option<&[u8]>, floor: Option<u32>) -> (u32, Vec<u8>) {
    let recorded = record.and_then(decode_record);
    let last = recorded.max(floor);
    let next = next_incarnation(quarters_since_2024(unix_millis), last);
    (next, encode_record(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten restarts, the clock jumping a minute back before every other one: each start
    /// gets a larger number than every start before it.
    #[test]
    fn grows_across_restarts_through_clock_jumps() {
        let mut clock: u128 = u128::from(EPOCH_2024 + 86_400) * 1000;
        let mut record: Option<Vec<u8>> = None;
        let mut seen = Vec::new();
        for i in 0..10 {
            clock = if i % 2 == 0 {
                clock - 60_000
            } else {
                clock + 10
            };
            let (n, written) = start(clock, record.as_deref(), None);
            assert!(seen.iter().all(|&s| s < n), "{n} after {seen:?}");
            assert_eq!(decode_record(&written), Some(n));
            seen.push(n);
            record = Some(written);
        }
    }

    #[test]
    fn a_damaged_record_leaves_the_clock_and_the_floor() {
        let clock = u128::from(EPOCH_2024) * 1000 + 2_500;
        assert_eq!(start(clock, Some(b"not a number"), None).0, 10);
        assert_eq!(start(clock, Some(b"\xff\xfe"), Some(40)).0, 41);
        assert_eq!(start(clock, Some(b" 99\n"), Some(40)).0, 100);
        assert_eq!(decode_record(b"-1"), None);
        assert_eq!(decode_record(b"4294967296"), None);
    }

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
