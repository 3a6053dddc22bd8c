//! Benchmarks of atoll, side by side with other actor libraries.
//!
//! This library holds what the benchmark binaries share: workload sizes
//! ([`Config`]), the measured results ([`Figures`]), small measuring helpers
//! ([`percentile`], [`rss_bytes`], ...), the machine-readable `BENCH` line
//! ([`bench_line`], [`parse_bench_line`]) and the human-readable comparison
//! ([`comparison_report`]). The per-library workloads live in [`local`].

#![deny(missing_docs)]

use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, Instant};

pub mod etcd;
pub mod local;

/// Workload sizes for one benchmark run; identical for every actor system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Whether the reduced sizes of `--quick` are in use.
    pub quick: bool,
    /// Messages per measured send run (N). The warm-up run sends N/10.
    pub send_msgs: u64,
    /// Number of sender tasks in the fan-in (8:1) send test.
    pub fan_in_senders: u64,
    /// Measured sequential request/reply calls (M).
    pub calls: usize,
    /// Unmeasured warm-up calls made before the measured ones (5% of M).
    pub call_warmup: usize,
    /// Actors spawned in the spawn-rate test (K).
    pub spawns: usize,
    /// Idle actors held alive in the memory test (P).
    pub idle_actors: usize,
    /// How long the idle actors are left to settle before RSS is read again.
    pub idle_settle: Duration,
}

impl Config {
    /// The sizes for a full run (`quick == false`) or a quick one (`quick == true`).
    pub fn new(quick: bool) -> Self {
        let (send_msgs, calls, spawns, idle_actors) = if quick {
            (500_000, 50_000, 50_000, 100_000)
        } else {
            (2_000_000, 200_000, 200_000, 1_000_000)
        };
        Self {
            quick,
            send_msgs,
            fan_in_senders: 8,
            calls,
            call_warmup: calls / 20,
            spawns,
            idle_actors,
            idle_settle: Duration::from_millis(200),
        }
    }

    /// Messages sent by the warm-up run that precedes each measured send run (N/10).
    pub fn send_warmup_msgs(&self) -> u64 {
        self.send_msgs / 10
    }
}

/// The figures one actor system achieved; one `BENCH` line's worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Fire-and-forget messages per second, one sender to one receiver.
    pub send_1to1_msgs_per_s: f64,
    /// Fire-and-forget messages per second, eight senders to one receiver.
    pub send_8to1_msgs_per_s: f64,
    /// Median round-trip latency of a request/reply call, in nanoseconds.
    pub call_p50_ns: u64,
    /// 99th-percentile round-trip latency of a request/reply call, in nanoseconds.
    pub call_p99_ns: u64,
    /// Actors spawned per second by one spawning task.
    pub spawn_per_s: f64,
    /// Growth of resident memory per idle actor, in bytes.
    pub bytes_per_idle_process: f64,
}

impl Figures {
    /// A few human-readable lines describing these figures.
    pub fn describe(&self) -> String {
        format!(
            "send 1:1     : {:>14.0} msgs/s\n\
             send 8:1     : {:>14.0} msgs/s\n\
             call p50     : {:>14} ns\n\
             call p99     : {:>14} ns\n\
             spawn        : {:>14.0} actors/s\n\
             idle memory  : {:>14.0} bytes/actor",
            self.send_1to1_msgs_per_s,
            self.send_8to1_msgs_per_s,
            self.call_p50_ns,
            self.call_p99_ns,
            self.spawn_per_s,
            self.bytes_per_idle_process,
        )
    }
}

/// The value at percentile `p` (0 to 100) of `sorted`, which must be sorted
/// ascending, by the nearest-rank method; 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Sorts `samples` and returns their 50th and 99th percentiles.
pub fn p50_p99(mut samples: Vec<u64>) -> (u64, u64) {
    samples.sort_unstable();
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

/// Nanoseconds elapsed since `start`, saturating at `u64::MAX`.
pub fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `count` events over `elapsed`, as events per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    // Guard against a zero duration so the result is always finite.
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Resident set size of this process in bytes, read from `VmRSS` in
/// `/proc/self/status` (Linux only).
///
/// # Panics
///
/// If `/proc/self/status` cannot be read or has no parsable `VmRSS` line.
pub fn rss_bytes() -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status (Linux only)");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("VmRSS:")?;
            let kib = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
            Some(kib * 1024)
        })
        .expect("VmRSS line in /proc/self/status")
}

/// Resident memory grown per item: `(after - before) / count`, 0 if memory shrank.
pub fn bytes_per_item(before: u64, after: u64, count: usize) -> f64 {
    after.saturating_sub(before) as f64 / count.max(1) as f64
}

/// The values sender `index` of `senders` sends when `total` messages are
/// split between them; the ranges of all senders cover `0..total` exactly once.
pub fn sender_range(total: u64, senders: u64, index: u64) -> Range<u64> {
    (total * index / senders)..(total * (index + 1) / senders)
}

/// Sum of all values in `0..n`: what a counting actor must have added up
/// after receiving each of them once (`n` must stay below 2^32).
pub fn expected_sum(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// The machine-readable result line of the `local_actors` benchmark for
/// `system`, e.g. `BENCH {"bench":"local_actors","system":"ractor",...}`.
///
/// The JSON is written by hand: `system` is emitted verbatim and must not
/// need escaping; floating-point figures are rounded to integers.
pub fn bench_line(system: &str, f: &Figures) -> String {
    debug_assert!(
        !system.contains(['"', '\\']),
        "system name needs no JSON escaping"
    );
    format!(
        "BENCH {{\"bench\":\"local_actors\",\"system\":\"{system}\",\
         \"send_1to1_msgs_per_s\":{:.0},\"send_8to1_msgs_per_s\":{:.0},\
         \"call_p50_ns\":{},\"call_p99_ns\":{},\"spawn_per_s\":{:.0},\
         \"bytes_per_idle_process\":{:.0}}}",
        f.send_1to1_msgs_per_s,
        f.send_8to1_msgs_per_s,
        f.call_p50_ns,
        f.call_p99_ns,
        f.spawn_per_s,
        f.bytes_per_idle_process,
    )
}

/// Reads back a line written by [`bench_line`]: the system name and its
/// figures, or `None` if `line` is not such a line.
pub fn parse_bench_line(line: &str) -> Option<(String, Figures)> {
    let body = line
        .trim()
        .strip_prefix("BENCH ")?
        .strip_prefix('{')?
        .strip_suffix('}')?;
    const KEYS: [&str; 6] = [
        "send_1to1_msgs_per_s",
        "send_8to1_msgs_per_s",
        "call_p50_ns",
        "call_p99_ns",
        "spawn_per_s",
        "bytes_per_idle_process",
    ];
    let mut bench = None;
    let mut system = None;
    let mut numbers = [None; 6];
    for field in body.split(',') {
        let (key, value) = field.split_once(':')?;
        let key = key.trim().strip_prefix('"')?.strip_suffix('"')?;
        let value = value.trim();
        match key {
            "bench" => bench = Some(value.strip_prefix('"')?.strip_suffix('"')?),
            "system" => system = Some(value.strip_prefix('"')?.strip_suffix('"')?),
            _ => {
                let slot = KEYS.iter().position(|k| *k == key)?;
                numbers[slot] = Some(value.parse::<f64>().ok()?);
            }
        }
    }
    if bench? != "local_actors" {
        return None;
    }
    let [s1, s8, p50, p99, spawn, bytes] = numbers;
    let figures = Figures {
        send_1to1_msgs_per_s: s1?,
        send_8to1_msgs_per_s: s8?,
        call_p50_ns: p50? as u64,
        call_p99_ns: p99? as u64,
        spawn_per_s: spawn?,
        bytes_per_idle_process: bytes?,
    };
    Some((system?.to_owned(), figures))
}

/// A side-by-side table of `results` (rows are metrics, columns systems),
/// followed by the ratios `subject / best` for send throughput (1:1 and 8:1),
/// call p50 and spawn rate, where `best` is the better of the other systems'
/// figures (the higher throughput or rate, the lower latency).
///
/// The ratios are left out if `subject` is not among `results` or it is alone.
pub fn comparison_report(results: &[(String, Figures)], subject: &str) -> String {
    type Metric = (&'static str, fn(&Figures) -> f64);
    let rows: [Metric; 6] = [
        ("send 1:1 (msgs/s)", |f| f.send_1to1_msgs_per_s),
        ("send 8:1 (msgs/s)", |f| f.send_8to1_msgs_per_s),
        ("call p50 (ns)", |f| f.call_p50_ns as f64),
        ("call p99 (ns)", |f| f.call_p99_ns as f64),
        ("spawn (actors/s)", |f| f.spawn_per_s),
        ("idle memory (B/actor)", |f| f.bytes_per_idle_process),
    ];
    let header = "metric";
    let mut out = String::new();
    let _ = write!(out, "{header:<24}");
    for (system, _) in results {
        let _ = write!(out, "{system:>16}");
    }
    out.push('\n');
    for (label, value) in rows {
        let _ = write!(out, "{label:<24}");
        for (_, figures) in results {
            let _ = write!(out, "{:>16.0}", value(figures));
        }
        out.push('\n');
    }

    let Some((_, mine)) = results.iter().find(|(s, _)| s == subject) else {
        return out;
    };
    let others: Vec<_> = results.iter().filter(|(s, _)| s != subject).collect();
    if others.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n{subject} / the better of the others:");
    let ratios: [(&str, Metric, bool); 4] = [
        ("send 1:1 throughput", rows[0], true),
        ("send 8:1 throughput", rows[1], true),
        ("call p50 latency", rows[2], false),
        ("spawn rate", rows[4], true),
    ];
    for (label, (_, value), higher_is_better) in ratios {
        let better = |a: &&(String, Figures), b: &&(String, Figures)| {
            let (a, b) = (value(&a.1), value(&b.1));
            if higher_is_better {
                a.total_cmp(&b)
            } else {
                b.total_cmp(&a)
            }
        };
        let Some((best_system, best)) = others.iter().copied().max_by(better) else {
            continue;
        };
        let (mine, best) = (value(mine), value(best));
        let _ = writeln!(
            out,
            "  {label:<20} {:>6.2}x  ({subject} {mine:.0} vs {best_system} {best:.0}; {} is better)",
            mine / best,
            if higher_is_better { "higher" } else { "lower" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Figures {
        Figures {
            send_1to1_msgs_per_s: 1_234_567.4,
            send_8to1_msgs_per_s: 2_000_000.6,
            call_p50_ns: 4_100,
            call_p99_ns: 9_900,
            spawn_per_s: 300_000.0,
            bytes_per_idle_process: 812.3,
        }
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn bench_line_format_and_round_trip() {
        let line = bench_line("ractor", &sample());
        assert_eq!(
            line,
            "BENCH {\"bench\":\"local_actors\",\"system\":\"ractor\",\
             \"send_1to1_msgs_per_s\":1234567,\"send_8to1_msgs_per_s\":2000001,\
             \"call_p50_ns\":4100,\"call_p99_ns\":9900,\"spawn_per_s\":300000,\
             \"bytes_per_idle_process\":812}"
        );
        let (system, f) = parse_bench_line(&line).expect("parses");
        assert_eq!(system, "ractor");
        assert_eq!(f.call_p50_ns, 4_100);
        assert!((f.send_8to1_msgs_per_s - 2_000_001.0).abs() < 0.5);
        assert!(parse_bench_line("tokio runtime: 2 worker threads").is_none());
    }

    #[test]
    fn sender_ranges_cover_everything_once() {
        let total = 1_000_003;
        let mut next = 0;
        for i in 0..8 {
            let r = sender_range(total, 8, i);
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, total);
        assert_eq!(expected_sum(5), 10);
    }

    #[test]
    fn report_divides_subject_by_the_better_other() {
        let mut slow = sample();
        slow.send_1to1_msgs_per_s /= 2.0;
        slow.call_p50_ns *= 2;
        let mut slower = slow;
        slower.send_1to1_msgs_per_s /= 2.0;
        slower.call_p50_ns *= 2;
        let results = vec![
            ("atoll".to_owned(), sample()),
            ("ractor".to_owned(), slower),
            ("kameo".to_owned(), slow),
        ];
        let report = comparison_report(&results, "atoll");
        let ratio = |label: &str| {
            let line = report
                .lines()
                .map(str::trim_start)
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label} line in {report}"));
            line[label.len()..].trim_start().to_owned()
        };
        assert!(
            ratio("send 1:1 throughput").starts_with("2.00x"),
            "{report}"
        );
        assert!(ratio("call p50 latency").starts_with("0.50x"), "{report}");
        assert!(ratio("call p50 latency").contains("vs kameo"), "{report}");
        assert!(ratio("spawn rate").starts_with("1.00x"), "{report}");
    }
}
