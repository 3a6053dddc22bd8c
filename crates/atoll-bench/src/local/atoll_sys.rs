//! atoll implementation of the `local_actors` workloads.
//!
//! Every actor uses atoll's default (unbounded) mailbox. `spawn` is synchronous and
//! returns before the actor's `started` callback runs, like kameo's.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use atoll::{Actor, ActorRef, ActorResult, Ctx, ExitReason, ReplyTo, Runtime};
use tokio::sync::oneshot;

use super::{ActorSystem, run_workloads};
use crate::{Config, Figures, elapsed_ns, expected_sum, per_second, sender_range};

/// Runs the `local_actors` workloads on atoll.
pub async fn run(cfg: &Config) -> Figures {
    run_workloads::<Atoll>(cfg).await
}

/// The one runtime of this benchmark process.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(Runtime::new)
}

/// atoll as seen by [`run_workloads`].
#[derive(Debug)]
struct Atoll;

/// Counts u64 messages and reports their sum once it has received all it expects.
struct Counter {
    /// Messages still expected.
    remaining: u64,
    /// Sum of the values received so far.
    sum: u64,
    /// Where the sum goes once `remaining` reaches zero.
    done: Option<oneshot::Sender<u64>>,
}

impl Actor for Counter {
    type Msg = u64;

    async fn handle(&mut self, value: u64, _ctx: &mut Ctx<Self>) -> ActorResult {
        self.sum += value;
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(done) = self.done.take()
        {
            // An error only means the benchmark stopped waiting.
            let _ = done.send(self.sum);
        }
        Ok(())
    }
}

/// Replies to each request with its value plus one.
struct Adder;

impl Actor for Adder {
    type Msg = (u64, ReplyTo<u64>);

    async fn handle(&mut self, (value, reply): Self::Msg, _ctx: &mut Ctx<Self>) -> ActorResult {
        reply.reply(value + 1);
        Ok(())
    }
}

/// An actor that does nothing.
struct Noop;

impl Actor for Noop {
    type Msg = ();

    async fn handle(&mut self, _: (), _ctx: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl ActorSystem for Atoll {
    type IdleRef = ActorRef<Noop>;

    async fn send_throughput(total: u64, senders: u64) -> f64 {
        let rt = runtime();
        let (done_tx, done_rx) = oneshot::channel();
        let counter = rt.spawn(Counter {
            remaining: total,
            sum: 0,
            done: Some(done_tx),
        });
        let start = Instant::now();
        let sender_tasks: Vec<_> = (0..senders)
            .map(|index| {
                let counter = counter.clone();
                let values = sender_range(total, senders, index);
                tokio::spawn(async move {
                    for value in values {
                        counter.send(value).expect("send to counter");
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
        let exited = rt.wait_exit(counter.pid());
        rt.exit(counter.pid(), ExitReason::Shutdown);
        exited.await;
        per_second(total, elapsed)
    }

    async fn call_latencies(warmup: usize, calls: usize) -> Vec<u64> {
        let rt = runtime();
        let adder = rt.spawn(Adder);
        for value in 0..warmup as u64 {
            let reply = adder.call(|r| (value, r), CALL_TIMEOUT).await;
            assert_eq!(reply, Ok(value + 1));
        }
        let mut latencies = Vec::with_capacity(calls);
        for value in 0..calls as u64 {
            let start = Instant::now();
            let reply = adder.call(|r| (value, r), CALL_TIMEOUT).await;
            latencies.push(elapsed_ns(start));
            assert_eq!(reply, Ok(value + 1));
        }
        let exited = rt.wait_exit(adder.pid());
        rt.exit(adder.pid(), ExitReason::Shutdown);
        exited.await;
        latencies
    }

    async fn spawn_idle(count: usize) -> Vec<ActorRef<Noop>> {
        let rt = runtime();
        let mut actors = Vec::with_capacity(count);
        for _ in 0..count {
            actors.push(rt.spawn(Noop));
        }
        actors
    }

    async fn stop_idle(actors: Vec<ActorRef<Noop>>) {
        let rt = runtime();
        let exits: Vec<_> = actors.iter().map(|a| rt.wait_exit(a.pid())).collect();
        for actor in &actors {
            rt.exit(actor.pid(), ExitReason::Shutdown);
        }
        for exit in exits {
            exit.await;
        }
    }
}
