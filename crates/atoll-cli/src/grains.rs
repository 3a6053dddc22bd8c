//! The grains every `atoll node` hosts: a grain service over a redb store in the node's
//! consensus data directory, the built-in grain types, and how the HTTP service, `atoll
//! status` and `atoll attach` show grains.
//!
//! A node hosts grains when it is configured for consensus (activations are consensus
//! claims). It announces the capability [`GRAINS_CAPABILITY`], which every built-in type
//! requires, so a member that only calls grains (an application node, `atoll demo`, a
//! benchmark) never has one placed on it.
//!
//! | type | durability | state |
//! |---|---|---|
//! | [`Counter`] (`counter`) | Volatile | a number |
//! | [`DurableCounter`] (`durable-counter`) | LocalExclusive, saved on every change | a number |
//! | [`KvShard`] (`kv`) | LocalExclusive, saved on every change | one replica of a shard of [`crate::kv::KvStore`] |

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use atoll_cluster::Node;
use atoll_core::NodeId;
use atoll_grain::{
    Durability, Grain, GrainCtx, GrainId, Grains, GrainsConfig, Placement, PlacementView,
    RedbStore, TwoChoices,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The capability a node hosting the built-in grain types announces.
pub const GRAINS_CAPABILITY: &str = "grains";
/// The file of a node's grain store, in its consensus data directory.
pub const STORE_FILE: &str = "grains.redb";

/// A number in memory: lost when the grain deactivates or its node goes.
#[derive(Debug, Default)]
pub struct Counter;

/// What a counter understands; every message answers the value after it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Adds to the value.
    Add(u64),
    /// Reads the value.
    Get,
}

impl Grain for Counter {
    const TYPE: &'static str = "counter";
    const REQUIRES: &'static [&'static str] = &[GRAINS_CAPABILITY];
    type State = u64;
    type Msg = CounterMsg;
    type Reply = u64;

    async fn handle(&mut self, msg: CounterMsg, ctx: &mut GrainCtx<Self>) -> u64 {
        if let CounterMsg::Add(n) = msg {
            *ctx.state_mut() += n;
        }
        *ctx.state()
    }
}

/// A number in the hosting node's redb store, saved (committed durably) before every
/// answer to an `Add`.
#[derive(Debug, Default)]
pub struct DurableCounter;

/// The answer of a [`DurableCounter`]: the value, or why it was not saved.
pub type Saved = Result<u64, String>;

impl Grain for DurableCounter {
    const TYPE: &'static str = "durable-counter";
    const DURABILITY: Durability = Durability::LocalExclusive;
    const REQUIRES: &'static [&'static str] = &[GRAINS_CAPABILITY];
    type State = u64;
    type Msg = CounterMsg;
    type Reply = Saved;

    async fn handle(&mut self, msg: CounterMsg, ctx: &mut GrainCtx<Self>) -> Saved {
        if let CounterMsg::Add(n) = msg {
            *ctx.state_mut() += n;
            ctx.save().await.map_err(|e| e.to_string())?;
        }
        Ok(*ctx.state())
    }
}

/// A value with its version: the larger version wins (a delete is a versioned `None`, so
/// an older write arriving late cannot bring a deleted key back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The write's version.
    pub version: u64,
    /// The value; `None` once deleted.
    pub value: Option<String>,
}

/// One replica of one shard of the key-value store ([`crate::kv::KvStore`]): its keys and
/// their versioned values, in the hosting node's redb store. Its grain key is
/// `SHARD/REPLICA`; [`GrainPlacement`] puts the replicas of a shard on distinct nodes.
#[derive(Debug, Default)]
pub struct KvShard;

/// What a [`KvShard`] understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvMsg {
    /// The versioned value of a key.
    Get(String),
    /// Stores a versioned value unless the key holds a newer one; answers whether it did.
    Put(String, Versioned),
    /// The keys in `[from, to)` (to the end when `to` is `None`) with their versioned values,
    /// deleted ones included, at most `limit`.
    Range {
        /// The first key.
        from: String,
        /// The end, exclusive.
        to: Option<String>,
        /// The most entries answered.
        limit: usize,
    },
}

/// What a [`KvShard`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// To `Get`.
    Value(Option<Versioned>),
    /// To `Put`: stored (or already newer), and saved.
    Put(bool),
    /// To `Range`.
    Entries(Vec<(String, Versioned)>),
    /// The change was not saved; it may be lost with the node.
    NotSaved(String),
}

impl Grain for KvShard {
    const TYPE: &'static str = "kv";
    const DURABILITY: Durability = Durability::LocalExclusive;
    const REQUIRES: &'static [&'static str] = &[GRAINS_CAPABILITY];
    type State = BTreeMap<String, Versioned>;
    type Msg = KvMsg;
    type Reply = KvReply;

    async fn handle(&mut self, msg: KvMsg, ctx: &mut GrainCtx<Self>) -> KvReply {
        match msg {
            KvMsg::Get(key) => KvReply::Value(ctx.state().get(&key).cloned()),
            KvMsg::Put(key, value) => {
                let newer = ctx
                    .state()
                    .get(&key)
                    .is_none_or(|old| old.version < value.version);
                if newer {
                    ctx.state_mut().insert(key, value);
                    if let Err(e) = ctx.save().await {
                        return KvReply::NotSaved(e.to_string());
                    }
                }
                KvReply::Put(newer)
            }
            KvMsg::Range { from, to, limit } => {
                let entries = ctx
                    .state()
                    .range(from..)
                    .take_while(|(k, _)| to.as_ref().is_none_or(|to| *k < to))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                KvReply::Entries(entries)
            }
        }
    }
}

/// Placement for the built-in types: the replicas `SHARD/0`, `SHARD/1`, … of a [`KvShard`]
/// go to the first, second, … eligible node in the ring order of `SHARD`, so they land on
/// distinct nodes while there are enough; everything else is placed by [`TwoChoices`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrainPlacement;

impl Placement for GrainPlacement {
    fn place(&self, view: &PlacementView<'_>) -> Option<NodeId> {
        if view.id.grain_type == KvShard::TYPE
            && let Some((shard, replica)) = view.id.key.rsplit_once('/')
            && let Ok(replica) = replica.parse::<usize>()
        {
            let shard_id = GrainId::new(KvShard::TYPE, shard);
            let shard_view = PlacementView {
                id: &shard_id,
                requires: view.requires,
                ring: view.ring,
                load: view.load,
                durability: view.durability,
            };
            let candidates = shard_view.candidates();
            return (!candidates.is_empty()).then(|| candidates[replica % candidates.len()]);
        }
        TwoChoices.place(view)
    }
}

/// The grain configuration every participant uses (hosts and callers alike, so they place
/// new activations the same way): [`GrainPlacement`], and `store` for durable state.
pub fn config(store: Option<RedbStore>) -> GrainsConfig {
    let mut config = GrainsConfig {
        placement: Arc::new(GrainPlacement),
        ..GrainsConfig::default()
    };
    if let Some(store) = store {
        config = config.with_store(store);
    }
    config
}

/// Starts the grain service of an `atoll node` with its store at `data_dir/grains.redb`
/// and the built-in types registered.
pub fn host(node: &Node, data_dir: &Path) -> Result<Grains, Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(STORE_FILE);
    let store = RedbStore::open(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let grains = Grains::start(node, config(Some(store)));
    let registered = grains
        .register(|_| Counter)
        .and_then(|()| grains.register(|_| DurableCounter))
        .and_then(|()| grains.register(|_| KvShard));
    registered.map_err(|e| Error::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(grains)
}

/// Starts a grain service that calls grains but hosts none (no types registered, and no
/// [`GRAINS_CAPABILITY`] announced).
pub fn caller(node: &Node) -> Grains {
    Grains::start(node, config(None))
}

/// One activation, as `/api/grains`, `atoll status` and `atoll attach` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainView {
    /// The grain type.
    pub grain_type: String,
    /// Its key.
    pub key: String,
    /// The hosting node's name (or id, when it is not a known member).
    pub node: String,
    /// The hosting process.
    pub pid: String,
    /// The activation's epoch.
    pub epoch: u64,
    /// The type's durability class (`Volatile`, `LocalExclusive`, …), `-` when the type is
    /// not registered on the answering node.
    pub durability: String,
}

/// What `/api/grains` answers: the activations in the cluster (from this node's registry
/// replica of their claims, so a moment behind at most) and this node's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainsView {
    /// Every activation, by node, type and key.
    pub grains: Vec<GrainView>,
    /// Activations per node.
    pub per_node: BTreeMap<String, usize>,
    /// Activations started on the answering node.
    pub activations: u64,
    /// Activations that ended on the answering node.
    pub deactivations: u64,
    /// Activations live on the answering node.
    pub active: usize,
}

/// The grains view of `node`, whose grain service is `grains`.
pub async fn view(node: &Node, grains: &Grains) -> GrainsView {
    let status = node.status().await;
    let mut list: Vec<GrainView> = status
        .locks
        .iter()
        .filter_map(|lock| {
            let id = GrainId::from_lock_name(&lock.name)?;
            Some(GrainView {
                durability: grains
                    .durability(&id.grain_type)
                    .map_or("-".into(), |d| format!("{d:?}")),
                grain_type: id.grain_type,
                key: id.key,
                node: lock.node.clone(),
                pid: lock.holder.clone(),
                epoch: lock.token,
            })
        })
        .collect();
    list.sort_by(|a, b| (&a.node, &a.grain_type, &a.key).cmp(&(&b.node, &b.grain_type, &b.key)));
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for g in &list {
        *per_node.entry(g.node.clone()).or_default() += 1;
    }
    let stats = grains.stats();
    GrainsView {
        grains: list,
        per_node,
        activations: stats.activations,
        deactivations: stats.deactivations,
        active: stats.active,
    }
}

/// The grain metrics in the Prometheus text format, appended to a node's `/metrics`:
///
/// | metric | type | what |
/// |---|---|---|
/// | `atoll_grain_activations_total` | counter | activations started on this node |
/// | `atoll_grain_deactivations_total` | counter | activations ended on this node |
/// | `atoll_grains_active` | gauge | activations live on this node |
/// | `atoll_grains_cluster` | gauge | activations in the cluster, by `type` |
pub fn metrics(view: &GrainsView) -> String {
    let mut by_type: HashMap<&str, usize> = HashMap::new();
    for g in &view.grains {
        *by_type.entry(g.grain_type.as_str()).or_default() += 1;
    }
    let mut by_type: Vec<_> = by_type.into_iter().collect();
    by_type.sort();
    let mut out = format!(
        "# HELP atoll_grain_activations_total Grain activations started on this node.\n\
         # TYPE atoll_grain_activations_total counter\n\
         atoll_grain_activations_total {}\n\
         # HELP atoll_grain_deactivations_total Grain activations that ended on this node.\n\
         # TYPE atoll_grain_deactivations_total counter\n\
         atoll_grain_deactivations_total {}\n\
         # HELP atoll_grains_active Grain activations live on this node.\n\
         # TYPE atoll_grains_active gauge\n\
         atoll_grains_active {}\n\
         # HELP atoll_grains_cluster Grain activations in the cluster, by type.\n\
         # TYPE atoll_grains_cluster gauge\n",
        view.activations, view.deactivations, view.active
    );
    for (t, n) in by_type {
        let t = t.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("atoll_grains_cluster{{type=\"{t}\"}} {n}\n"));
    }
    out
}

/// Rows of the grains table (`NODE TYPE KEY EPOCH DURABILITY`), for `node` only if given.
pub fn rows(view: &GrainsView, node: Option<&str>) -> Vec<Vec<String>> {
    view.grains
        .iter()
        .filter(|g| node.is_none_or(|n| g.node == n))
        .map(|g| {
            vec![
                g.node.clone(),
                g.grain_type.clone(),
                g.key.clone(),
                g.epoch.to_string(),
                g.durability.clone(),
            ]
        })
        .collect()
}

/// The header of [`rows`].
pub const HEADER: [&str; 5] = ["NODE", "TYPE", "KEY", "EPOCH", "DURABILITY"];
