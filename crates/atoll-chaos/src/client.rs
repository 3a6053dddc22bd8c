//! A client process: `atoll-chaos` re-run in a node's namespace as a cluster member (a
//! node of its own, not a voter) that does what the runner asks and says what happened
//! ([`crate::protocol`]). Its processes own the names, hold the locks and join the groups.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_cli::grains::KvShard;
use atoll_cli::kv::{KvError, KvStore};
use atoll_cluster::{NameError, Node};
use atoll_core::{Pid, Scope};
use atoll_grain::{Grain, GrainId, Grains};

use crate::history::{Outcome, Request};
use crate::protocol::{FromClient, ToClient, kind};

/// How long a lock request waits for the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long one migration may take before the client gives up waiting for it.
pub const MIGRATE_WAIT: Duration = Duration::from_secs(15);

/// A process that only exists to own a name, hold a lock or be a group member.
struct Holder;

impl Actor for Holder {
    type Msg = ();

    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

/// Microseconds since the Unix epoch: the clock the runner and every client share.
fn epoch_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn say(event: &FromClient) {
    let line = serde_json::to_string(event).expect("events serialize");
    let mut out = std::io::stdout().lock();
    // The runner gone means the run is over: nothing to say it to.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Runs the client node of configuration `config` until stdin closes.
pub fn run(config: &Path) -> Result<(), String> {
    let file = atoll_cli::config::NodeFile::load(config).map_err(|e| e.to_string())?;
    let loaded = file.node_config().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ToClient>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(msg) => {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("bad request {line:?}: {e}"),
            }
        }
    });
    rt.block_on(async move {
        let node = Node::start(loaded.config).map_err(|e| e.to_string())?;
        let node = Arc::new(node);
        // A caller of the nodes' key-value store on grains; it hosts none itself.
        let grains = atoll_cli::grains::caller(&node);
        let kv = KvStore::new(grains.clone());
        say(&FromClient::Ready {
            name: node.name().to_string(),
        });
        while let Some(msg) = rx.recv().await {
            let (node, kv, grains) = (node.clone(), kv.clone(), grains.clone());
            tokio::spawn(async move {
                match msg {
                    ToClient::Op { id, request } => {
                        let (outcome, unlocked) = perform(&node, &kv, id, request).await;
                        say(&FromClient::Done {
                            id,
                            outcome,
                            unlocked,
                        });
                    }
                    ToClient::Migrate { shards, target } => {
                        let results = migrate(&node, &grains, &shards, &target).await;
                        say(&FromClient::Migrated { results });
                    }
                    ToClient::Snapshot { names, groups } => {
                        let names = names
                            .into_iter()
                            .map(|n| {
                                let pid = node.whereis(&n).map(|p| p.to_string());
                                (n, pid)
                            })
                            .collect();
                        let groups = groups
                            .into_iter()
                            .map(|g| {
                                let members = node
                                    .group_members(&g)
                                    .into_iter()
                                    .map(|p| p.to_string())
                                    .collect();
                                (g, members)
                            })
                            .collect();
                        say(&FromClient::Snapshot { names, groups });
                    }
                }
            });
        }
        node.shutdown(Duration::from_secs(1)).await;
        Ok(())
    })
}

/// Moves each of `shards` to node `to` in turn: `moved`, or why not.
async fn migrate(node: &Node, grains: &Grains, shards: &[usize], to: &str) -> Vec<String> {
    let target = node.membership().and_then(|swim| {
        swim.members()
            .into_iter()
            .find(|m| m.identity.meta.name == to)
            .map(|m| m.identity.node)
    });
    let mut results = Vec::new();
    for shard in shards {
        let Some(target) = target else {
            results.push("UnknownNode".to_string());
            continue;
        };
        let id = GrainId::new(KvShard::TYPE, shard.to_string());
        let moved = tokio::time::timeout(MIGRATE_WAIT, grains.migrate(&id, target)).await;
        results.push(match moved {
            Ok(Ok(_)) => "moved".to_string(),
            Ok(Err(e)) => kind(&e),
            Err(_) => "NoAnswer".to_string(),
        });
    }
    results
}

fn holder(node: &Node, id: u64) -> Pid {
    let pid = node.runtime().spawn(Holder).pid();
    say(&FromClient::Spawned {
        id,
        pid: pid.to_string(),
    });
    pid
}

fn failed(e: &impl std::fmt::Debug) -> Outcome {
    Outcome::Failed { kind: kind(e) }
}

/// A key-value failure's kind: the grain error inside it when there is one.
fn kv_failed(e: &KvError) -> Outcome {
    let inner = match e {
        KvError::Grain { source, .. } => kind(source),
        other => kind(other),
    };
    Outcome::Failed {
        kind: format!("Kv::{inner}"),
    }
}

async fn perform(node: &Node, kv: &KvStore, id: u64, request: Request) -> (Outcome, Option<bool>) {
    let outcome = match request {
        Request::Register { name } => {
            // The process stays alive whatever the answer: a registration that failed may
            // still have committed, and its owner must not vanish behind the model's back.
            let pid = holder(node, id);
            match node.register(&name, pid, Scope::Consistent).await {
                Ok(()) => Outcome::Registered,
                Err(NameError::Taken { owner, .. }) => Outcome::Taken {
                    owner: owner.to_string(),
                },
                Err(e) => failed(&e),
            }
        }
        Request::Unregister { name } => match node.unregister(&name).await {
            Ok(pid) => {
                if let Some(pid) = pid {
                    node.runtime().kill(pid);
                }
                Outcome::Unregistered {
                    pid: pid.map(|p| p.to_string()),
                }
            }
            Err(e) => failed(&e),
        },
        Request::Read { name } => Outcome::Found {
            pid: node.whereis(&name).map(|p| p.to_string()),
        },
        Request::ReadConsistent { name } => match node.whereis_consistent(&name).await {
            Ok(pid) => Outcome::Found {
                pid: pid.map(|p| p.to_string()),
            },
            Err(e) => failed(&e),
        },
        Request::Join { group } => {
            let pid = holder(node, id);
            match node.join_group(&group, pid) {
                Ok(()) => Outcome::Joined,
                Err(e) => failed(&e),
            }
        }
        Request::Lock { name, hold_ms } => return lock(node, id, &name, hold_ms).await,
        Request::KvSet { key, value } => match kv.set(&key, &value).await {
            Ok(previous) => Outcome::Stored { previous },
            Err(e) => kv_failed(&e),
        },
        Request::KvGet { key } => match kv.get(&key).await {
            Ok(value) => Outcome::Value { value },
            Err(e) => kv_failed(&e),
        },
    };
    (outcome, None)
}

/// Takes the lock, writes with its token, holds it, writes again, unlocks. The second
/// write is what a holder that was stopped meanwhile sends late, with a token the cluster
/// may have superseded: the resource must refuse it then.
async fn lock(node: &Node, id: u64, name: &str, hold_ms: u64) -> (Outcome, Option<bool>) {
    let pid = holder(node, id);
    let guard = match node.lock(name, pid, LOCK_WAIT).await {
        Ok(guard) => guard,
        Err(e) => {
            // If it was granted after all, the holder's exit releases it.
            node.runtime().kill(pid);
            return (failed(&e), None);
        }
    };
    let token = guard.token();
    say(&FromClient::Granted {
        id,
        token,
        at_us: epoch_us(),
    });
    let write = || FromClient::Write {
        id,
        lock: name.to_string(),
        token,
    };
    say(&write());
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    say(&write());
    say(&FromClient::Unlocking {
        id,
        at_us: epoch_us(),
    });
    let result = guard.unlock().await;
    node.runtime().kill(pid);
    match result {
        Ok(()) => (Outcome::Locked { token }, Some(true)),
        Err(e) => (
            Outcome::Failed {
                kind: format!("Unlock::{}", kind(&e)),
            },
            Some(false),
        ),
    }
}
