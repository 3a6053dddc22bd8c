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
//! | [`KvShard`] (`kv`) | Replicated ([`REPLICAS`] copy besides the host's), saved on every change | a shard of [`crate::kv::KvStore`] |

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use atoll_cluster::{Node, WeakNode};
use atoll_core::Pid;
use atoll_grain::{Durability, Grain, GrainCtx, GrainId, Grains, GrainsConfig, RedbStore};
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

/// One shard of the key-value store ([`crate::kv::KvStore`]): its keys and values,
/// `Replicated`: every change is saved in the host's redb store and [`REPLICAS`] other
/// node's before the caller hears of it, so it survives the loss of the host.
///
/// Writes are resent when their host is lost while the caller waits
/// ([`Grain::RESEND_IN_DOUBT`]), so each carries a request id and the shard keeps, with
/// its entries, the answers of its last [`KvState::ANSWERS_KEPT`] writes: a resent write
/// that the lost activation had already saved is answered as before, not applied twice.
///
/// Reads (`Get`, `Range`) first confirm, with a linearizable read of the registry, that
/// this activation still holds the shard's claim ([`confirmed`]): an activation whose node
/// a partition cut off from the majority would otherwise go on answering from its memory
/// after the majority gave the shard to a new activation that took newer writes. A write
/// needs no such check: its save is refused once a newer activation has fenced the copies.
#[derive(Debug, Default)]
pub struct KvShard {
    /// The hosting node, for the confirmation (none in a type registered without a node:
    /// reads are then answered unconfirmed).
    node: Option<WeakNode>,
}

impl KvShard {
    /// Whether this activation still holds the shard, confirmed through consensus: why not
    /// (or why it could not be confirmed) otherwise.
    async fn confirm(&self, ctx: &GrainCtx<Self>) -> Result<(), String> {
        let Some(node) = self.node.as_ref().and_then(WeakNode::upgrade) else {
            return Ok(());
        };
        let holder = node
            .lock_holder_consistent(&ctx.id().lock_name())
            .await
            .map_err(|e| format!("the shard's claim could not be confirmed: {e}"))?;
        if confirmed(ctx.pid(), ctx.epoch(), holder) {
            Ok(())
        } else {
            Err(format!(
                "this activation (epoch {}) no longer holds the shard",
                ctx.epoch()
            ))
        }
    }
}

/// Whether the registry's `holder` of a grain's claim (process and token) is the activation
/// `pid` at `epoch`.
pub fn confirmed(pid: Pid, epoch: u64, holder: Option<(Pid, u64)>) -> bool {
    holder == Some((pid, epoch))
}

/// A [`KvShard`]'s saved state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// The keys and their values.
    pub entries: BTreeMap<String, String>,
    /// The last writes' request ids and the value each replaced, oldest first.
    pub answered: std::collections::VecDeque<(u64, Option<String>)>,
}

impl KvState {
    /// How many writes' answers a shard keeps for resent requests: far more than one
    /// shard takes within a call timeout from one caller.
    pub const ANSWERS_KEPT: usize = 1024;

    /// Applies a write (`value` `None` deletes) once per `request`; the value it replaced.
    pub fn write(&mut self, request: u64, key: String, value: Option<String>) -> Option<String> {
        if let Some((_, before)) = self.answered.iter().find(|(r, _)| *r == request) {
            return before.clone();
        }
        let before = match value {
            Some(value) => self.entries.insert(key, value),
            None => self.entries.remove(&key),
        };
        if self.answered.len() >= Self::ANSWERS_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back((request, before.clone()));
        before
    }
}

/// What a [`KvShard`] understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvMsg {
    /// The value of a key.
    Get(String),
    /// Sets a key's value; `request` is unique per write (a resend carries the same).
    Set {
        /// The write's id.
        request: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes a key; `request` as for `Set`.
    Delete {
        /// The write's id.
        request: u64,
        /// The key.
        key: String,
    },
    /// The keys in `[from, to)` (to the end when `to` is `None`) with their values, at most
    /// `limit`.
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
    Value(Option<String>),
    /// To `Set` and `Delete`: the value before; the change is saved.
    Done(Option<String>),
    /// To `Range`.
    Entries(Vec<(String, String)>),
    /// The change was not saved (too few replicas answered, or a newer activation exists):
    /// it is not acknowledged.
    NotSaved(String),
    /// To a read: this activation could not confirm it still holds the shard (cut off from
    /// the majority, or deposed), so it does not answer from what it holds.
    Unconfirmed(String),
}

impl Grain for KvShard {
    const TYPE: &'static str = "kv";
    const DURABILITY: Durability = Durability::Replicated;
    const REQUIRES: &'static [&'static str] = &[GRAINS_CAPABILITY];
    const RESEND_IN_DOUBT: bool = true;
    type State = KvState;
    type Msg = KvMsg;
    type Reply = KvReply;

    async fn handle(&mut self, msg: KvMsg, ctx: &mut GrainCtx<Self>) -> KvReply {
        if matches!(msg, KvMsg::Get(_) | KvMsg::Range { .. })
            && let Err(reason) = self.confirm(ctx).await
        {
            return KvReply::Unconfirmed(reason);
        }
        let (request, key, value) = match msg {
            KvMsg::Get(key) => return KvReply::Value(ctx.state().entries.get(&key).cloned()),
            KvMsg::Range { from, to, limit } => {
                let entries = ctx
                    .state()
                    .entries
                    .range(from..)
                    .take_while(|(k, _)| to.as_ref().is_none_or(|to| *k < to))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                return KvReply::Entries(entries);
            }
            KvMsg::Set {
                request,
                key,
                value,
            } => (request, key, Some(value)),
            KvMsg::Delete { request, key } => (request, key, None),
        };
        let kept = ctx.state().clone();
        let before = ctx.state_mut().write(request, key, value);
        match ctx.save().await {
            Ok(()) => KvReply::Done(before),
            Err(e) => {
                // Not acknowledged, so not kept: later reads must not see it either.
                *ctx.state_mut() = kept;
                KvReply::NotSaved(e.to_string())
            }
        }
    }
}

/// Copies of each `Replicated` save on nodes other than the host: with one, a save is on
/// two nodes and survives the loss of either, and saving goes on while two of three nodes
/// are up.
pub const REPLICAS: usize = 1;

/// The grain configuration of `atoll node` and of members that call its grains:
/// [`REPLICAS`], and `store` for durable state.
pub fn config(store: Option<RedbStore>) -> GrainsConfig {
    let mut config = GrainsConfig {
        replicas: REPLICAS,
        ..GrainsConfig::default()
    };
    if let Some(store) = store {
        config = config.with_store(store);
    }
    config
}

/// Starts the grain service of an `atoll node` with its store at `data_dir/grains.redb`
/// and the built-in types registered; it sheds activations as `rebalance` says (the
/// `[rebalance]` table), if at all.
pub fn host(
    node: &Node,
    data_dir: &Path,
    rebalance: Option<atoll_grain::Rebalance>,
) -> Result<Grains, Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(STORE_FILE);
    let store = RedbStore::open(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut config = config(Some(store));
    config.rebalance = rebalance;
    let grains = Grains::start(node, config);
    let registered = grains
        .register(|_| Counter)
        .and_then(|()| grains.register(|_| DurableCounter))
        .and_then(|()| {
            let node = node.downgrade();
            grains.register(move |_| KvShard {
                node: Some(node.clone()),
            })
        });
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
    /// Activations that migrated from the answering node to another.
    pub migrations: u64,
    /// Activations that arrived at the answering node by migration.
    pub adoptions: u64,
    /// Activations live on the answering node.
    pub active: usize,
}

/// The grains view of `node`, whose grain service is `grains`.
pub async fn view(node: &Node, grains: &Grains) -> GrainsView {
    // From the registry's grain claims directly: the whole node status is much more work,
    // and status pages poll this.
    let mut list: Vec<GrainView> = node
        .locks_with_prefix("grain:")
        .into_iter()
        .filter_map(|(name, holder, token)| {
            let id = GrainId::from_lock_name(&name)?;
            Some(GrainView {
                durability: grains
                    .durability(&id.grain_type)
                    .map_or("-".into(), |d| format!("{d:?}")),
                grain_type: id.grain_type,
                key: id.key,
                node: node_name(node, holder.node),
                pid: holder.to_string(),
                epoch: token,
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
        migrations: stats.migrations,
        adoptions: stats.adoptions,
        active: stats.active,
    }
}

/// The grain metrics in the Prometheus text format, appended to a node's `/metrics`:
///
/// | metric | type | what |
/// |---|---|---|
/// | `atoll_grain_activations_total` | counter | activations started on this node |
/// | `atoll_grain_deactivations_total` | counter | activations ended on this node |
/// | `atoll_grain_migrations_total` | counter | activations migrated from this node to another |
/// | `atoll_grain_adoptions_total` | counter | activations that arrived here by migration |
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
         # HELP atoll_grain_migrations_total Grain activations migrated from this node to another.\n\
         # TYPE atoll_grain_migrations_total counter\n\
         atoll_grain_migrations_total {}\n\
         # HELP atoll_grain_adoptions_total Grain activations that arrived here by migration.\n\
         # TYPE atoll_grain_adoptions_total counter\n\
         atoll_grain_adoptions_total {}\n\
         # HELP atoll_grains_active Grain activations live on this node.\n\
         # TYPE atoll_grains_active gauge\n\
         atoll_grains_active {}\n\
         # HELP atoll_grains_cluster Grain activations in the cluster, by type.\n\
         # TYPE atoll_grains_cluster gauge\n",
        view.activations, view.deactivations, view.migrations, view.adoptions, view.active
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

/// The name of `id` as this node knows it: itself, a peer, or a member; else the id.
fn node_name(node: &Node, id: atoll_core::NodeId) -> String {
    if id == node.id() {
        return node.name().to_string();
    }
    if let Some(p) = node.peers().into_iter().find(|p| p.id == id) {
        return p.name;
    }
    node.membership()
        .and_then(|swim| {
            swim.members()
                .into_iter()
                .find(|m| m.identity.node == id)
                .map(|m| m.identity.name().to_string())
        })
        .unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::{KvState, confirmed};
    use atoll_core::{NodeId, Pid};

    #[test]
    fn a_read_is_confirmed_only_by_this_activations_own_grant() {
        let me = Pid::new(NodeId::from_bytes([4; 16]), 1, 7);
        let successor = Pid::new(NodeId::from_bytes([2; 16]), 1, 9);
        assert!(confirmed(me, 5, Some((me, 5))));
        // The majority gave the shard to a new activation while this one was cut off.
        assert!(!confirmed(me, 5, Some((successor, 6))));
        // The same process under an older or newer grant, or no grant at all.
        assert!(!confirmed(me, 5, Some((me, 6))));
        assert!(!confirmed(me, 5, None));
    }

    #[test]
    fn a_resent_write_is_answered_as_before_and_not_applied_again() {
        let mut s = KvState::default();
        assert_eq!(s.write(1, "a".into(), Some("x".into())), None);
        assert_eq!(s.write(2, "a".into(), Some("y".into())), Some("x".into()));
        // Write 1 resent after write 2: the same answer, and "y" stays.
        assert_eq!(s.write(1, "a".into(), Some("x".into())), None);
        assert_eq!(s.entries.get("a").map(String::as_str), Some("y"));
        assert_eq!(s.write(3, "a".into(), None), Some("y".into()));
        assert!(s.entries.is_empty());
    }

    #[test]
    fn only_the_last_answers_are_kept() {
        let mut s = KvState::default();
        for r in 0..(KvState::ANSWERS_KEPT as u64 + 10) {
            s.write(r, format!("k{r}"), Some("v".into()));
        }
        assert_eq!(s.answered.len(), KvState::ANSWERS_KEPT);
        assert_eq!(s.answered.front().map(|a| a.0), Some(10));
    }
}
