//! The service registry: `service name → [ServiceAdvertisement]`, last-writer-wins per
//! (service, node), each entry written only by its node.

use std::collections::BTreeMap;

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::hlc::HlcTimestamp;
use crate::lww::{Delta, Digest, LwwMap, MergeError, MergeReport};
use crate::process::MAX_NAME_LEN;

/// Most metadata pairs one advertisement may carry.
pub const MAX_METADATA: usize = 32;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 1024;

/// The key of an entry: one service on one node.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The service name.
    pub service: String,
    /// The node offering it.
    pub node: NodeId,
}

/// One node's offer of a service.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ServiceAdvertisement {
    /// The service name.
    pub service: String,
    /// The process serving it (on the advertising node).
    pub pid: Pid,
    /// The replica's load; lower is preferred when falling back.
    pub load: u32,
    /// Free-form attributes (version, zone, ...).
    pub metadata: BTreeMap<String, String>,
}

impl ServiceAdvertisement {
    /// The node offering the service.
    pub fn node(&self) -> NodeId {
        self.pid.node
    }

    /// Checks the advertisement against the registry's limits.
    pub fn validate(&self) -> Result<(), MergeError> {
        let bad = |what: &str| Err(MergeError::Invalid(format!("service {what}")));
        if self.service.is_empty() || self.service.len() > MAX_NAME_LEN {
            return bad("name empty or too long");
        }
        if self.metadata.len() > MAX_METADATA {
            return bad("metadata has too many pairs");
        }
        if self
            .metadata
            .iter()
            .any(|(k, v)| k.len() > MAX_NAME_LEN || v.len() > MAX_METADATA_VALUE)
        {
            return bad("metadata pair too long");
        }
        Ok(())
    }
}

/// The service registry.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_data::{ServiceAdvertisement, ServiceRegistry};
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let offer = |node, load| ServiceAdvertisement {
///     service: "db".into(),
///     pid: Pid::new(node, 1, 9),
///     load,
///     metadata: Default::default(),
/// };
/// let mut on_a = ServiceRegistry::new(a);
/// let mut on_b = ServiceRegistry::new(b);
/// on_a.advertise(offer(a, 90), 10).unwrap();
/// on_b.advertise(offer(b, 10), 10).unwrap();
/// on_a.merge(&on_b, 11);
/// // Prefer the local replica, then fall back to the others, least loaded first.
/// let order: Vec<NodeId> = on_a.resolve_preferred("db", a).iter().map(|s| s.node()).collect();
/// assert_eq!(order, [a, b]);
/// assert_eq!(on_a.resolve("db")[0].node(), b);
/// ```
#[derive(Clone, Debug)]
pub struct ServiceRegistry {
    map: LwwMap<ServiceKey, ServiceAdvertisement>,
}

impl ServiceRegistry {
    /// An empty registry owned by `node`.
    pub fn new(node: NodeId) -> Self {
        ServiceRegistry {
            map: LwwMap::new(node),
        }
    }

    /// The underlying map.
    pub fn map(&self) -> &LwwMap<ServiceKey, ServiceAdvertisement> {
        &self.map
    }

    /// Offers (or updates the offer of) a service from this node at wall time `now_ms`.
    pub fn advertise(
        &mut self,
        ad: ServiceAdvertisement,
        now_ms: u64,
    ) -> Result<HlcTimestamp, MergeError> {
        let me = self.map.node();
        if ad.node() != me {
            return Err(MergeError::ForeignWriter {
                origin: me,
                owner: ad.node(),
            });
        }
        ad.validate()?;
        let key = ServiceKey {
            service: ad.service.clone(),
            node: me,
        };
        Ok(self.map.insert(key, ad, now_ms))
    }

    /// Withdraws this node's offer of `service`. Returns the tombstone's timestamp, or
    /// `None` if it was not offered.
    pub fn withdraw(&mut self, service: &str, now_ms: u64) -> Option<HlcTimestamp> {
        let key = ServiceKey {
            service: service.to_string(),
            node: self.map.node(),
        };
        self.map.remove(&key, now_ms)
    }

    /// Every replica of `service`, in node order.
    pub fn replicas<'a>(
        &'a self,
        service: &str,
    ) -> impl Iterator<Item = &'a ServiceAdvertisement> + 'a {
        let lo = ServiceKey {
            service: service.to_string(),
            node: NodeId::from_bytes([0; 16]),
        };
        let hi = ServiceKey {
            service: service.to_string(),
            node: NodeId::from_bytes([0xff; 16]),
        };
        self.map
            .entries()
            .range(lo..=hi)
            .filter_map(|(_, e)| e.value.as_ref())
    }

    /// Every replica of `service`, least loaded first (ties by node id).
    pub fn resolve(&self, service: &str) -> Vec<&ServiceAdvertisement> {
        let mut all: Vec<_> = self.replicas(service).collect();
        all.sort_by_key(|s| (s.load, s.node()));
        all
    }

    /// The replicas of `service` in the order to try them: the one on `node` first if
    /// there is one, then the others, least loaded first.
    pub fn resolve_preferred(&self, service: &str, node: NodeId) -> Vec<&ServiceAdvertisement> {
        let mut all = self.resolve(service);
        if let Some(i) = all.iter().position(|s| s.node() == node) {
            let preferred = all.remove(i);
            all.insert(0, preferred);
        }
        all
    }

    /// Every service with at least one replica, in name order.
    pub fn services(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.map.iter().map(|(k, _)| k.service.as_str()).collect();
        names.dedup();
        names
    }

    /// Checks that every entry of `delta` was written by the node it is filed under and
    /// is within limits.
    pub fn check_delta(delta: &Delta<ServiceKey, ServiceAdvertisement>) -> Result<(), MergeError> {
        for part in &delta.origins {
            for (key, _, ad) in &part.entries {
                if key.node != part.origin {
                    return Err(MergeError::ForeignWriter {
                        origin: part.origin,
                        owner: key.node,
                    });
                }
                if let Some(ad) = ad {
                    if ad.service != key.service || ad.node() != key.node {
                        return Err(MergeError::Invalid(format!(
                            "offer of {} on {} filed under {} on {}",
                            ad.service,
                            ad.node(),
                            key.service,
                            key.node
                        )));
                    }
                    ad.validate()?;
                }
            }
        }
        LwwMap::check_delta(delta)
    }

    /// Merges a delta from a peer at wall time `now_ms`; a refused delta changes nothing.
    pub fn merge_delta(
        &mut self,
        delta: Delta<ServiceKey, ServiceAdvertisement>,
        now_ms: u64,
    ) -> Result<MergeReport, MergeError> {
        Self::check_delta(&delta)?;
        self.map.merge_delta(delta, now_ms)
    }

    /// Merges another replica's whole state.
    pub fn merge(&mut self, other: &ServiceRegistry, now_ms: u64) -> MergeReport {
        self.map.merge(&other.map, now_ms)
    }

    /// See [`LwwMap::digest`].
    pub fn digest(&mut self, now_ms: u64) -> Digest {
        self.map.digest(now_ms)
    }

    /// See [`LwwMap::collect_tombstones`].
    pub fn collect_tombstones(&mut self, live: &BTreeMap<NodeId, Digest>) -> usize {
        self.map.collect_tombstones(live)
    }

    /// A node declared lost is back: its offers are taken again.
    pub fn readmit_node(&mut self, node: NodeId) {
        self.map.readmit_origin(node);
    }

    /// A node was lost for good: its offers are gone.
    pub fn forget_node(&mut self, node: NodeId) -> Vec<ServiceKey> {
        self.map
            .forget_origin(node)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}
