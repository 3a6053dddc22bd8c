//! The grain part of `atoll demo`: a grain activated by its first call and migrated, the
//! replicated key-value store on grains, and, after the node is killed, its grains
//! answering again from the survivors with every key still there.

use std::time::{Duration, Instant};

use atoll_core::NodeId;
use atoll_grain::{Grain, GrainId, Grains};

use super::{NODES, VICTIM, fail, say};
use crate::error::Error;
use crate::grains::{Counter, CounterMsg};
use crate::kv::KvStore;

/// What the narration before the kill leaves for after it.
pub(super) struct GrainScene {
    kv: KvStore,
    pairs: Vec<(&'static str, &'static str)>,
    /// The key-value shard grains on the node that will be killed, with their epochs.
    victim: Vec<(GrainId, u64)>,
}

fn name_of(ids: &[NodeId], node: NodeId) -> &'static str {
    ids.iter()
        .position(|n| *n == node)
        .map_or("?", |i| NODES[i])
}

fn grain_err(what: &str) -> impl Fn(atoll_grain::GrainError) -> Error + '_ {
    move |e| fail(format!("{what}: {e}"))
}

fn kv_err(what: &str) -> impl Fn(crate::kv::KvError) -> Error + '_ {
    move |e| fail(format!("{what}: {e}"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Activates counters (one on the node to be killed) and fills the key-value store.
pub(super) async fn before_kill(grains: &Grains, ids: &[NodeId]) -> Result<GrainScene, Error> {
    say("\n== grains: virtual actors, activated by their first call wherever placement puts them");
    let visits = grains
        .get::<Counter>("visits")
        .map_err(grain_err("visits"))?;
    let started = Instant::now();
    visits
        .call(CounterMsg::Add(1))
        .await
        .map_err(grain_err("counter/visits"))?;
    let first = started.elapsed();
    let started = Instant::now();
    let value = visits
        .call(CounterMsg::Add(1))
        .await
        .map_err(grain_err("counter/visits"))?;
    let next = started.elapsed();
    let at = grains
        .cached(visits.id())
        .ok_or_else(|| fail("counter/visits answered but is not cached"))?;
    say(&format!(
        "  counter/visits activated on {} by its first call (epoch {}, {}); the next call {}; value {value}",
        name_of(ids, at.pid.node),
        at.epoch,
        ms(first),
        ms(next)
    ));
    // A migration: to the next node (not the one that will be killed, if it can help it).
    let from = ids.iter().position(|n| *n == at.pid.node).unwrap_or(0);
    let to = (0..NODES.len())
        .map(|d| (from + 1 + d) % NODES.len())
        .find(|i| *i != from && *i != VICTIM)
        .unwrap_or((from + 1) % NODES.len());
    let started = Instant::now();
    let moved = grains
        .migrate(visits.id(), ids[to])
        .await
        .map_err(grain_err("migrating counter/visits"))?;
    let took = started.elapsed();
    let value = visits
        .call(CounterMsg::Get)
        .await
        .map_err(grain_err("counter/visits"))?;
    say(&format!(
        "  counter/visits migrated from {} to {} in {} (epoch {} -> {}); its state moved with it: value {value}",
        NODES[from],
        name_of(ids, moved.pid.node),
        ms(took),
        at.epoch,
        moved.epoch
    ));

    let kv = KvStore::new(grains.clone());
    let pairs = vec![
        ("apple", "red"),
        ("banana", "yellow"),
        ("cherry", "dark red"),
        ("lime", "green"),
        ("plum", "purple"),
    ];
    for (k, v) in &pairs {
        kv.set(k, v).await.map_err(kv_err("kv set"))?;
    }
    kv.delete("banana").await.map_err(kv_err("kv delete"))?;
    let listed = kv.range("", None, 100).await.map_err(kv_err("kv range"))?;
    say(&format!(
        "  kv: {} keys set in {} Replicated shard grains (each change saved on two nodes before it is acknowledged); banana deleted; range: {}",
        pairs.len(),
        crate::kv::SHARDS,
        listed
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    // The shards of two keys go to the node that will be killed, if they are elsewhere: a
    // Replicated grain's state moves with it.
    for key in ["apple", "lime"] {
        let id = GrainId::new(
            crate::grains::KvShard::TYPE,
            crate::kv::shard_of(key).to_string(),
        );
        if let Some(a) = grains.cached(&id)
            && a.pid.node != ids[VICTIM]
        {
            let started = Instant::now();
            let moved = grains
                .migrate(&id, ids[VICTIM])
                .await
                .map_err(grain_err("migrating a shard"))?;
            say(&format!(
                "  kv/{} (holding {key}) migrated from {} to {} in {} (epoch {} -> {})",
                id.key,
                name_of(ids, a.pid.node),
                name_of(ids, moved.pid.node),
                ms(started.elapsed()),
                a.epoch,
                moved.epoch
            ));
        }
    }
    let mut per_node = [0usize; NODES.len()];
    let mut victim = Vec::new();
    for shard in 0..crate::kv::SHARDS {
        let id = GrainId::new(crate::grains::KvShard::TYPE, shard.to_string());
        if let Some(a) = grains.cached(&id)
            && let Some(i) = ids.iter().position(|n| *n == a.pid.node)
        {
            per_node[i] += 1;
            if i == VICTIM {
                victim.push((id, a.epoch));
            }
        }
    }
    say(&format!(
        "  kv shard grains per node: {}",
        NODES
            .iter()
            .zip(per_node)
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(GrainScene {
        kv,
        pairs: pairs.into_iter().filter(|(k, _)| *k != "banana").collect(),
        victim,
    })
}

/// After the kill: the victim's counter answers again elsewhere, every key reads back.
pub(super) async fn after_kill(
    grains: &Grains,
    ids: &[NodeId],
    scene: &GrainScene,
    killed: Instant,
) -> Result<(), Error> {
    // Each shard of the lost node is asked until it answers: reactivated on a survivor,
    // with the freshest copy of its state.
    let mut moved = Vec::new();
    for (id, epoch) in &scene.victim {
        let replica = grains
            .get::<crate::grains::KvShard>(&id.key)
            .map_err(grain_err("kv shard"))?;
        let until = Instant::now() + super::STEP;
        let probe = crate::grains::KvMsg::Range {
            from: String::new(),
            to: None,
            limit: 0,
        };
        loop {
            match replica.call(probe.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() > until => {
                    return Err(fail(format!("{id} after the kill: {e}")));
                }
                Err(e) => eprintln!("{id}: {e}"),
            }
        }
        // Where the answer came from (this node's registry replica may lag a moment).
        let at = grains
            .cached(id)
            .ok_or_else(|| fail(format!("{id} answered but is not cached")))?;
        if at.pid.node == ids[VICTIM] || at.epoch <= *epoch {
            return Err(fail(format!("{id} did not move: {at:?}")));
        }
        moved.push(format!("kv/{} on {}", id.key, name_of(ids, at.pid.node)));
    }
    say(&format!(
        "  {:.1} s: the {} kv shard grains of {} answer again from the survivors under new epochs ({})",
        killed.elapsed().as_secs_f64(),
        scene.victim.len(),
        NODES[VICTIM],
        moved.join(", ")
    ));
    let mut seen = Vec::new();
    for (k, v) in &scene.pairs {
        let got = scene.kv.get(k).await.map_err(kv_err("kv get"))?;
        if got.as_deref() != Some(*v) {
            return Err(fail(format!(
                "kv: {k} is {got:?} after the kill, not {v:?}"
            )));
        }
        seen.push(format!("{k}={v}"));
    }
    say(&format!(
        "  {:.1} s: kv: every key read back after {}'s loss: {}",
        killed.elapsed().as_secs_f64(),
        NODES[VICTIM],
        seen.join(" ")
    ));
    Ok(())
}
