//! Grain references made straight from a node: `node.grain::<Account>("alice")`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use atoll_actor::ActorRef;
use atoll_cluster::Node;
use atoll_core::NodeId;

use crate::core::GrainId;
use crate::router::GrainRouter;
use crate::shared::Shared;
use crate::{Grain, GrainError, GrainRef, Grains};

/// The grain service started last on each node of this process, without keeping it alive.
type Services = HashMap<NodeId, (Weak<Shared>, ActorRef<GrainRouter>)>;

fn services() -> &'static Mutex<Services> {
    static SERVICES: std::sync::OnceLock<Mutex<Services>> = std::sync::OnceLock::new();
    SERVICES.get_or_init(Default::default)
}

/// Records `grains` as the service of `node`.
pub(crate) fn publish(node: &Node, grains: &Grains) {
    let mut all = services().lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|_, (shared, _)| shared.strong_count() > 0);
    all.insert(
        node.id(),
        (Arc::downgrade(&grains.shared), grains.router.clone()),
    );
}

/// Grains from a [`Node`]: the service started on it with [`Grains::start`], and
/// references to grains through it.
///
/// ```no_run
/// # use atoll_grain::{Grain, GrainCtx, NodeGrainsExt};
/// # struct Account;
/// # impl Grain for Account {
/// #     const TYPE: &'static str = "account";
/// #     type State = u64; type Msg = u64; type Reply = u64;
/// #     async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
/// #         *ctx.state_mut() += n; *ctx.state()
/// #     }
/// # }
/// # async fn demo(node: atoll_cluster::Node) -> Result<(), atoll_grain::GrainError> {
/// let balance = node.grain::<Account>("alice").call(100).await?;
/// # Ok(()) }
/// ```
pub trait NodeGrainsExt {
    /// The grain service running on this node, if one was started.
    fn grains(&self) -> Option<Grains>;

    /// A reference to the grain `key` of type `G`, through this node's grain service. A
    /// node without one, or a key that is too long, gives a reference whose calls fail
    /// with [`GrainError::NoService`] or [`GrainError::KeyTooLong`].
    fn grain<G: Grain>(&self, key: &str) -> GrainRef<G>;
}

impl NodeGrainsExt for Node {
    fn grains(&self) -> Option<Grains> {
        let all = services().lock().unwrap_or_else(|e| e.into_inner());
        let (shared, router) = all.get(&self.id())?;
        Some(Grains {
            shared: shared.upgrade()?,
            router: router.clone(),
        })
    }

    fn grain<G: Grain>(&self, key: &str) -> GrainRef<G> {
        match self.grains() {
            Some(grains) => grains
                .get(key)
                .unwrap_or_else(|e| GrainRef::unavailable(GrainId::new(G::TYPE, key), e)),
            None => GrainRef::unavailable(GrainId::new(G::TYPE, key), GrainError::NoService),
        }
    }
}
