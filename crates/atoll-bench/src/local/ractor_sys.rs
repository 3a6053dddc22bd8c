//! ractor implementation of the `local_actors` workloads.
//!
//! ractor's mailbox (its message port) is always unbounded, so every actor
//! here uses the library's default. `Actor::spawn` is async: it runs the
//! actor's `pre_start` in the spawning task and returns once the actor has
//! started.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, call};
use tokio::sync::oneshot;

use super::{ActorSystem, run_workloads};
use crate::{Config, Figures, elapsed_ns, expected_sum, per_second, sender_range};

/// Runs the `local_actors` workloads on ractor.
pub async fn run(cfg: &Config) -> Figures {
    run_workloads::<Ractor>(cfg).await
}

/// ractor as seen by [`run_workloads`].
#[derive(Debug)]
struct Ractor;

/// Counts u64 messages and reports their sum once it has received all it expects.
struct Counter;

/// State of a [`Counter`].
struct CounterState {
    /// Messages still expected.
    remaining: u64,
    /// Sum of the values received so far.
    sum: u64,
    /// Where the sum goes once `remaining` reaches zero.
    done: Option<oneshot::Sender<u64>>,
}

impl Actor for Counter {
    type Msg = u64;
    type State = CounterState;
    type Arguments = (u64, oneshot::Sender<u64>);

    async fn pre_start(
        &self,
        _myself: ActorRef<u64>,
        (expected, done): Self::Arguments,
    ) -> Result<CounterState, ActorProcessingErr> {
        Ok(CounterState {
            remaining: expected,
            sum: 0,
            done: Some(done),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<u64>,
        value: u64,
        state: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        state.sum += value;
        state.remaining -= 1;
        if state.remaining == 0
            && let Some(done) = state.done.take()
        {
            // An error only means the benchmark stopped waiting.
            let _ = done.send(state.sum);
        }
        Ok(())
    }
}

/// Messages of an [`Adder`].
enum AdderMsg {
    /// Reply with the value plus one.
    Increment(u64, RpcReplyPort<u64>),
}

/// Replies to each request with its value plus one.
struct Adder;

impl Actor for Adder {
    type Msg = AdderMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<AdderMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AdderMsg>,
        message: AdderMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AdderMsg::Increment(value, reply) => reply.send(value + 1)?,
        }
        Ok(())
    }
}

/// An actor that does nothing.
struct Noop;

impl Actor for Noop {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

impl ActorSystem for Ractor {
    type IdleRef = ActorRef<()>;

    async fn send_throughput(total: u64, senders: u64) -> f64 {
        let (done_tx, done_rx) = oneshot::channel();
        let (counter, counter_task) = Actor::spawn(None, Counter, (total, done_tx))
            .await
            .expect("spawn counter");
        let start = Instant::now();
        let sender_tasks: Vec<_> = (0..senders)
            .map(|index| {
                let counter = counter.clone();
                let values = sender_range(total, senders, index);
                tokio::spawn(async move {
                    for value in values {
                        counter.cast(value).expect("cast to counter");
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
        counter.stop(None);
        counter_task.await.expect("counter stops");
        per_second(total, elapsed)
    }

    async fn call_latencies(warmup: usize, calls: usize) -> Vec<u64> {
        let (adder, adder_task) = Actor::spawn(None, Adder, ()).await.expect("spawn adder");
        for value in 0..warmup as u64 {
            let reply = call!(adder, AdderMsg::Increment, value).expect("warm-up call");
            assert_eq!(reply, value + 1);
        }
        let mut latencies = Vec::with_capacity(calls);
        for value in 0..calls as u64 {
            let start = Instant::now();
            let reply = call!(adder, AdderMsg::Increment, value).expect("call adder");
            latencies.push(elapsed_ns(start));
            assert_eq!(reply, value + 1);
        }
        adder.stop(None);
        adder_task.await.expect("adder stops");
        latencies
    }

    async fn spawn_idle(count: usize) -> Vec<ActorRef<()>> {
        let mut actors = Vec::with_capacity(count);
        for _ in 0..count {
            // Dropping the join handle detaches the actor's task; it keeps running.
            let (actor, _) = Actor::spawn(None, Noop, ())
                .await
                .expect("spawn no-op actor");
            actors.push(actor);
        }
        actors
    }

    async fn stop_idle(actors: Vec<ActorRef<()>>) {
        for actor in &actors {
            actor.stop(None);
        }
        for actor in &actors {
            actor
                .wait(None)
                .await
                .expect("waiting without a timeout cannot time out");
        }
    }
}
