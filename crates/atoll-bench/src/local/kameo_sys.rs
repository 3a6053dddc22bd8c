//! kameo implementation of the `local_actors` workloads.
//!
//! kameo's default `Spawn::spawn` gives an actor a *bounded* mailbox (capacity
//! 64) and makes `tell` wait for room in it. The two send-throughput tests
//! therefore spawn their counting actor with the library's unbounded mailbox
//! (`mailbox::unbounded()`); every other actor uses the default. `spawn` itself
//! is synchronous: the actor's `on_start` runs later, in its own task.

use std::time::Instant;

use kameo::Actor;
use kameo::actor::{ActorRef, Spawn};
use kameo::mailbox;
use kameo::message::{Context, Message};
use tokio::sync::oneshot;

use super::{ActorSystem, run_workloads};
use crate::{Config, Figures, elapsed_ns, expected_sum, per_second, sender_range};

/// Runs the `local_actors` workloads on kameo.
pub async fn run(cfg: &Config) -> Figures {
    run_workloads::<Kameo>(cfg).await
}

/// kameo as seen by [`run_workloads`].
#[derive(Debug)]
struct Kameo;

/// Counts u64 messages and reports their sum once it has received all it expects.
#[derive(Actor)]
struct Counter {
    /// Messages still expected.
    remaining: u64,
    /// Sum of the values received so far.
    sum: u64,
    /// Where the sum goes once `remaining` reaches zero.
    done: Option<oneshot::Sender<u64>>,
}

impl Message<u64> for Counter {
    type Reply = ();

    async fn handle(&mut self, value: u64, _ctx: &mut Context<Self, Self::Reply>) {
        self.sum += value;
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(done) = self.done.take()
        {
            // An error only means the benchmark stopped waiting.
            let _ = done.send(self.sum);
        }
    }
}

/// Replies to each [`Increment`] with its value plus one.
#[derive(Actor)]
struct Adder;

/// Request to an [`Adder`].
struct Increment(u64);

impl Message<Increment> for Adder {
    type Reply = u64;

    async fn handle(
        &mut self,
        Increment(value): Increment,
        _ctx: &mut Context<Self, Self::Reply>,
    ) -> u64 {
        value + 1
    }
}

/// An actor that does nothing.
#[derive(Actor)]
struct Noop;

impl ActorSystem for Kameo {
    type IdleRef = ActorRef<Noop>;

    async fn send_throughput(total: u64, senders: u64) -> f64 {
        let (done_tx, done_rx) = oneshot::channel();
        let counter = Counter {
            remaining: total,
            sum: 0,
            done: Some(done_tx),
        };
        // Unbounded rather than the default bounded mailbox: see the module docs.
        let counter = Counter::spawn_with_mailbox(counter, mailbox::unbounded());
        let start = Instant::now();
        let sender_tasks: Vec<_> = (0..senders)
            .map(|index| {
                let counter = counter.clone();
                let values = sender_range(total, senders, index);
                tokio::spawn(async move {
                    for value in values {
                        counter.tell(value).await.expect("tell counter");
                    }
                })
            })
            .collect();
        let sum = done_rx.await.expect("counter reports completion");
        let elapsed = start.elapsed();
        for task in sender_tasks {
            task.await.expect("sender task");
        }
        assert_eq!(sum, expected_sum(total), "counter saw every message once");
        counter.stop_gracefully().await.expect("stop counter");
        counter.wait_for_shutdown().await;
        per_second(total, elapsed)
    }

    async fn call_latencies(warmup: usize, calls: usize) -> Vec<u64> {
        let adder = Adder::spawn(Adder);
        for value in 0..warmup as u64 {
            let reply = adder.ask(Increment(value)).await.expect("warm-up ask");
            assert_eq!(reply, value + 1);
        }
        let mut latencies = Vec::with_capacity(calls);
        for value in 0..calls as u64 {
            let start = Instant::now();
            let reply = adder.ask(Increment(value)).await.expect("ask adder");
            latencies.push(elapsed_ns(start));
            assert_eq!(reply, value + 1);
        }
        adder.stop_gracefully().await.expect("stop adder");
        adder.wait_for_shutdown().await;
        latencies
    }

    async fn spawn_idle(count: usize) -> Vec<ActorRef<Noop>> {
        let mut actors = Vec::with_capacity(count);
        for _ in 0..count {
            actors.push(Noop::spawn(Noop));
        }
        actors
    }

    async fn stop_idle(actors: Vec<ActorRef<Noop>>) {
        for actor in &actors {
            actor.stop_gracefully().await.expect("stop no-op actor");
        }
        for actor in &actors {
            actor.wait_for_shutdown().await;
        }
    }
}
