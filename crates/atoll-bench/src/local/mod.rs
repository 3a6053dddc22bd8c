//! The `local_actors` workloads: in-process fire-and-forget messaging,
//! request/reply, spawning, and idle memory, run the same way for each
//! actor system.
//!
//! Each system module exposes `run(&Config) -> Figures`; the ractor and kameo
//! ones implement [`ActorSystem`] and hand it to [`run_workloads`], which owns
//! the order, warm-ups and timing of the workloads.

use std::future::Future;
use std::time::Instant;

use crate::{Config, Figures, bytes_per_item, p50_p99, per_second, rss_bytes};

pub mod atoll_sys;
pub mod kameo_sys;
pub mod ractor_sys;

/// The operations an actor library provides to [`run_workloads`].
pub trait ActorSystem {
    /// What is kept of each spawned no-op actor (its reference).
    type IdleRef: Send + 'static;

    /// Spawns one counting actor, then sends it the `total` u64 values `0..total`
    /// fire-and-forget, split with [`crate::sender_range`] between `senders`
    /// spawned tasks. The actor signals completion once it has received
    /// `total` messages. Returns messages per second, timed from the first send
    /// to that signal.
    ///
    /// # Panics
    ///
    /// If the values the actor received do not add up to
    /// [`crate::expected_sum`], or the library reports an error.
    fn send_throughput(total: u64, senders: u64) -> impl Future<Output = f64> + Send;

    /// Spawns one actor replying to a request carrying a u64 with that value
    /// plus one, makes `warmup` unmeasured and then `calls` measured sequential
    /// calls from the current task, and returns the latency of each measured
    /// call in nanoseconds.
    fn call_latencies(warmup: usize, calls: usize) -> impl Future<Output = Vec<u64>> + Send;

    /// Spawns `count` no-op actors one after the other with the library's
    /// normal spawn API, returning once every spawn call has returned.
    fn spawn_idle(count: usize) -> impl Future<Output = Vec<Self::IdleRef>> + Send;

    /// Stops `actors` and waits until every one of them has stopped.
    fn stop_idle(actors: Vec<Self::IdleRef>) -> impl Future<Output = ()> + Send;
}

/// Runs every workload of the benchmark against `S`, sized by `cfg`.
///
/// Idle memory is measured first, while no other workload has grown the heap
/// yet: memory the allocator kept after an earlier workload would otherwise be
/// reused by the idle actors and hide part of their cost. The RSS growth also
/// includes the vector holding the actors' references.
pub async fn run_workloads<S: ActorSystem>(cfg: &Config) -> Figures {
    let rss_before = rss_bytes();
    let idle = S::spawn_idle(cfg.idle_actors).await;
    tokio::time::sleep(cfg.idle_settle).await;
    let rss_after = rss_bytes();
    S::stop_idle(idle).await;
    let bytes_per_idle_process = bytes_per_item(rss_before, rss_after, cfg.idle_actors);

    S::send_throughput(cfg.send_warmup_msgs(), 1).await;
    let send_1to1_msgs_per_s = S::send_throughput(cfg.send_msgs, 1).await;
    S::send_throughput(cfg.send_warmup_msgs(), cfg.fan_in_senders).await;
    let send_8to1_msgs_per_s = S::send_throughput(cfg.send_msgs, cfg.fan_in_senders).await;

    let latencies = S::call_latencies(cfg.call_warmup, cfg.calls).await;
    let (call_p50_ns, call_p99_ns) = p50_p99(latencies);

    // Spawn rate swings with where the allocator finds memory: best of three rounds.
    let mut spawn_per_s = 0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let spawned = S::spawn_idle(cfg.spawns).await;
        let spawn_elapsed = start.elapsed();
        S::stop_idle(spawned).await;
        spawn_per_s = spawn_per_s.max(per_second(cfg.spawns as u64, spawn_elapsed));
    }

    Figures {
        send_1to1_msgs_per_s,
        send_8to1_msgs_per_s,
        call_p50_ns,
        call_p99_ns,
        spawn_per_s,
        bytes_per_idle_process,
    }
}
