//! The mixed mode: small-message round trips while a bulk transfer of 1 MiB messages flows
//! on the same connection, from another sender.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atoll_bench::{elapsed_ns, p50_p99};

use crate::systems::{Client, Tripper};

/// The small messages' size.
pub const SMALL: usize = 64;
/// The bulk messages' size.
pub const BULK: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Mixed {
    pub idle_p50_us: f64,
    pub idle_p99_us: f64,
    pub small_p50_us: f64,
    pub small_p99_us: f64,
    /// Bulk bytes moved per second, both directions, while the small messages ran.
    pub bulk_mb_per_s: f64,
    pub small_trips: usize,
}

/// Small round trips to the first worker's echo, alone and then while `bulk_senders`
/// senders each keep a 1 MiB round trip in flight to another echo on the same worker.
pub async fn measure(client: &Client, bulk_senders: usize, run: Duration) -> Mixed {
    let mut small = client.tripper(0, SMALL, false).await;
    let _ = sample(&mut small, Instant::now() + run / 10).await;
    let (idle_p50, idle_p99) = p50_p99(sample(&mut small, Instant::now() + run / 2).await);

    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..bulk_senders {
        let mut trip = client.tripper(0, BULK, true).await;
        let (bytes, stop) = (bytes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                trip().await;
                bytes.fetch_add(2 * BULK as u64, Ordering::Relaxed);
            }
        }));
    }
    // Let the bulk transfer reach its pace before sampling.
    tokio::time::sleep(run / 10).await;
    let before = bytes.load(Ordering::Relaxed);
    let start = Instant::now();
    let rtts = sample(&mut small, start + run).await;
    let moved = bytes.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let small_trips = rtts.len();
    let (p50, p99) = p50_p99(rtts);
    Mixed {
        idle_p50_us: idle_p50 as f64 / 1000.0,
        idle_p99_us: idle_p99 as f64 / 1000.0,
        small_p50_us: p50 as f64 / 1000.0,
        small_p99_us: p99 as f64 / 1000.0,
        bulk_mb_per_s: moved as f64 / elapsed.as_secs_f64() / 1e6,
        small_trips,
    }
}

/// Sequential round trips until `until`, each one's time in nanoseconds.
async fn sample(trip: &mut Tripper, until: Instant) -> Vec<u64> {
    let mut rtts = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        trip().await;
        rtts.push(elapsed_ns(start));
    }
    rtts
}

/// Each figure's median over the rounds.
pub fn median(rounds: &[Mixed]) -> Mixed {
    let pick = |f: fn(&Mixed) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Mixed {
        idle_p50_us: pick(|r| r.idle_p50_us),
        idle_p99_us: pick(|r| r.idle_p99_us),
        small_p50_us: pick(|r| r.small_p50_us),
        small_p99_us: pick(|r| r.small_p99_us),
        bulk_mb_per_s: pick(|r| r.bulk_mb_per_s),
        small_trips: rounds.iter().map(|r| r.small_trips).sum(),
    }
}

pub fn report(system: &str, r: &Mixed, threads: usize) {
    println!(
        "{system:<16} small rtt idle p50 {:>7.1} us p99 {:>7.1} us | under bulk p50 {:>8.1} us p99 {:>8.1} us ({} trips) | bulk {:>7.1} MB/s ({threads} thread(s))",
        r.idle_p50_us,
        r.idle_p99_us,
        r.small_p50_us,
        r.small_p99_us,
        r.small_trips,
        r.bulk_mb_per_s
    );
}

pub fn bench_line(system: &str, r: &Mixed, threads: usize) -> String {
    format!(
        "BENCH {{\"bench\":\"cluster_fanout_mixed\",\"system\":\"{system}\",\"small_p50_us\":{:.1},\"small_p99_us\":{:.1},\"idle_p50_us\":{:.1},\"idle_p99_us\":{:.1},\"bulk_mb_per_s\":{:.1},\"small_bytes\":{SMALL},\"bulk_bytes\":{BULK},\"runtime_threads\":{threads}}}",
        r.small_p50_us, r.small_p99_us, r.idle_p50_us, r.idle_p99_us, r.bulk_mb_per_s
    )
}
