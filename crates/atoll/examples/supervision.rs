//! A supervisor recovering crashed workers.
//!
//! A `one_for_one` supervisor runs a `bank` (keeps balances, registered by name) and a
//! `flaky` worker that fails on bad input and panics on worse. The example breaks the
//! worker both ways, shows the supervisor restarting it while the bank keeps its state,
//! then lists the live processes and shuts down in order.
//!
//! Run: `cargo run --release --example supervision`

use std::time::Duration;

use atoll::{
    Actor, ActorError, ActorResult, Backoff, ChildSpec, Ctx, ExitReason, Pid, ReplyTo, Runtime,
    Strategy, Supervisor, SupervisorSpec,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps a running total; registered as "bank".
struct Bank {
    total: i64,
}

enum BankMsg {
    Deposit(i64),
    Total(ReplyTo<i64>),
}

impl Actor for Bank {
    type Msg = BankMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.register("bank")?;
        Ok(())
    }

    async fn handle(&mut self, msg: BankMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            BankMsg::Deposit(n) => self.total += n,
            BankMsg::Total(reply) => {
                reply.reply(self.total);
            }
        }
        Ok(())
    }
}

/// Parses amounts and deposits them; registered as "flaky".
struct Flaky;

enum FlakyMsg {
    Amount(String),
    Handled(ReplyTo<()>),
}

impl Actor for Flaky {
    type Msg = FlakyMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.register("flaky")?;
        println!("  flaky worker started as {}", ctx.pid());
        Ok(())
    }

    async fn handle(&mut self, msg: FlakyMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            FlakyMsg::Amount(text) if text == "boom" => panic!("asked to explode"),
            FlakyMsg::Amount(text) => {
                let n: i64 = text
                    .parse()
                    .map_err(|e| ActorError::msg(format!("bad amount {text:?}: {e}")))?;
                let bank = ctx.runtime().whereis_ref::<Bank>("bank")?;
                bank.send(BankMsg::Deposit(n))
                    .map_err(|_| ActorError::msg("bank is down"))?;
            }
            FlakyMsg::Handled(reply) => {
                reply.reply(());
            }
        }
        Ok(())
    }
}

/// Sends one amount to whoever is "flaky" now and reports how it went.
async fn feed(rt: &Runtime, amount: &str) -> Pid {
    let flaky = rt
        .whereis_ref::<Flaky>("flaky")
        .expect("flaky is registered");
    let exited = rt.wait_exit(flaky.pid());
    flaky
        .send(FlakyMsg::Amount(amount.to_string()))
        .expect("flaky is alive");
    match flaky.call(FlakyMsg::Handled, TIMEOUT).await {
        Ok(()) => println!("  {amount:>5} -> deposited"),
        Err(_) => {
            let reason = tokio::time::timeout(TIMEOUT, exited)
                .await
                .expect("flaky exits after failing");
            println!("  {amount:>5} -> flaky exited: {reason}");
        }
    }
    flaky.pid()
}

/// Waits until the supervisor has registered a new "flaky" (not `old`).
async fn restarted(rt: &Runtime, old: Pid) -> Pid {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match rt.whereis("flaky") {
            Some(pid) if pid != old => return pid,
            _ if tokio::time::Instant::now() > deadline => panic!("flaky was not restarted"),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let rt = Runtime::new();
    println!("atoll supervision example (node {})", rt.node().short());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(500),
            multiplier: 2.0,
            jitter: 0.1,
        })
        .child(ChildSpec::worker("bank", || Bank { total: 0 }))
        .child(ChildSpec::worker("flaky", || Flaky));
    let sup = Supervisor::start(&rt, spec);
    rt.wait_started(sup.pid()).await.expect("supervisor starts");
    let bank = rt.whereis_ref::<Bank>("bank").expect("bank is registered");

    println!("feeding amounts to the flaky worker:");
    feed(&rt, "100").await;
    let old = feed(&rt, "12x").await;
    let new = restarted(&rt, old).await;
    println!("  supervisor restarted flaky: {old} -> {new}");
    feed(&rt, "20").await;
    let old = feed(&rt, "boom").await;
    let new = restarted(&rt, old).await;
    println!("  supervisor restarted flaky after a panic: {old} -> {new}");
    feed(&rt, "3").await;

    let total = bank
        .call(BankMsg::Total, TIMEOUT)
        .await
        .expect("bank answers");
    println!("bank total: {total} (the bank was never restarted, so nothing was lost)");
    assert_eq!(total, 123);

    let children = Supervisor::which_children(&sup)
        .await
        .expect("supervisor answers");
    for c in &children {
        println!("  child {:<6} restarts={}", c.id, c.restarts);
    }
    assert_eq!(children[1].restarts, 2);

    println!("live processes:");
    for p in rt.processes() {
        println!(
            "  {:<22} {:<8} {:<38} handled={} links={}",
            p.pid.to_string(),
            p.name.as_deref().unwrap_or("-"),
            p.actor_type,
            p.messages_handled,
            p.links.len()
        );
    }

    let sup_exit = rt.wait_exit(sup.pid());
    rt.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sup_exit.await, ExitReason::Shutdown);
    println!("shut down: {} processes left", rt.process_count());
}
