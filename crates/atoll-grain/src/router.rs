//! A node's grain router: takes deliveries from callers (here or on other nodes) and
//! hands them to the local activation, starting one when the grain has none; also takes
//! adoptions of migrating grains and replica reads and writes of `Replicated` state.

use std::sync::Arc;

use atoll_actor::{Actor, ActorResult, Ctx, Decoder, ReplyTo, serde_decoder};
use atoll_core::Pid;
use serde::{Deserialize, Serialize};

use crate::core::{self, Answer, Arrival, GrainId, Refusal};
use crate::replica::{self, ReplicaAnswer};
use crate::shared::{Activator, Delivery, Handed, Request, Shared};

/// What a node's router answers an adoption with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AdoptAnswer {
    /// A host was started here and is queueing for the claim.
    Started(Pid),
    /// The grain is already active here, or this node cannot host it.
    Refused(Refusal),
    /// This node has no factory for the grain type.
    UnknownType,
}

/// What a node's router takes: deliveries from callers, adoptions of migrating grains,
/// and replica reads and writes of `Replicated` state.
#[derive(Serialize, Deserialize)]
pub(crate) enum RouterMsg {
    Deliver {
        grain_type: String,
        key: String,
        request: Request,
        reply: ReplyTo<Answer>,
    },
    /// Start an activation here with this (encoded) state, to take over the claim from
    /// the activation at `from_epoch`.
    Adopt {
        grain_type: String,
        key: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        from_epoch: u64,
        reply: ReplyTo<AdoptAnswer>,
    },
    /// Read this node's copy of a `Replicated` grain for the activation at `epoch`.
    ReplicaLoad {
        grain_type: String,
        key: String,
        epoch: u64,
        reply: ReplyTo<ReplicaAnswer>,
    },
    /// Store a copy of a `Replicated` grain's state for the activation at `epoch`.
    ReplicaSave {
        grain_type: String,
        key: String,
        epoch: u64,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        reply: ReplyTo<ReplicaAnswer>,
    },
}

/// Takes deliveries for grains and hands them to the local activation, starting one if
/// the grain has none anywhere (as far as this node's registry shows).
pub(crate) struct GrainRouter {
    pub(crate) shared: Arc<Shared>,
}

impl Actor for GrainRouter {
    type Msg = RouterMsg;

    fn remote_decoder() -> Option<Decoder<RouterMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: RouterMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            RouterMsg::Deliver {
                grain_type,
                key,
                request,
                reply,
            } => self.deliver(
                GrainId::new(grain_type, key),
                Delivery {
                    request,
                    reply,
                    direct: false,
                },
                ctx,
            ),
            RouterMsg::Adopt {
                grain_type,
                key,
                state,
                from_epoch,
                reply,
            } => {
                let handed = Handed { state, from_epoch };
                reply.reply(self.adopt(GrainId::new(grain_type, key), handed, ctx));
            }
            RouterMsg::ReplicaLoad {
                grain_type,
                key,
                epoch,
                reply,
            } => {
                let id = GrainId::new(grain_type, key);
                reply.reply(replica::serve_load(
                    self.shared.store.as_deref(),
                    &id,
                    epoch,
                ));
            }
            RouterMsg::ReplicaSave {
                grain_type,
                key,
                epoch,
                state,
                reply,
            } => {
                let id = GrainId::new(grain_type, key);
                let store = self.shared.store.as_deref();
                reply.reply(replica::serve_save(store, &id, epoch, &state));
            }
        }
        Ok(())
    }
}

impl GrainRouter {
    fn activator(&self, id: &GrainId) -> Option<Arc<dyn Activator>> {
        self.shared
            .types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.grain_type)
            .cloned()
    }

    fn deliver(&mut self, id: GrainId, delivery: Delivery, ctx: &Ctx<Self>) {
        let shared = self.shared.clone();
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        let delivery = match active.get(&id) {
            Some(host) => match host.deliver(delivery) {
                Ok(()) => return,
                Err(d) => {
                    active.remove(&id);
                    d
                }
            },
            None => delivery,
        };
        let Some(node) = shared.node.upgrade() else {
            delivery.reply.reply(Answer::Retry);
            return;
        };
        let arrival = core::arrival(shared.me, Shared::registry(&node, &id));
        // The type matters only to activate: a node without it still redirects to the
        // grain's host, and tells a migration that nothing is active.
        match (arrival, &delivery.request) {
            // Only a message activates a grain; a migration needs a live activation.
            (Arrival::Activate, Request::Migrate { .. }) => {
                delivery.reply.reply(Answer::NotActive);
            }
            (Arrival::Activate, Request::Msg { .. }) => {
                let Some(activator) = self.activator(&id) else {
                    delivery.reply.reply(Answer::UnknownType);
                    return;
                };
                let host = activator.start(&shared, ctx.runtime(), id.clone(), None);
                match host.deliver(delivery) {
                    Ok(()) => {
                        active.insert(id, host);
                    }
                    Err(d) => {
                        d.reply.reply(Answer::Retry);
                    }
                }
            }
            (Arrival::Redirect(a), _) => {
                delivery.reply.reply(Answer::Redirect(a));
            }
            (Arrival::Retry, _) => {
                delivery.reply.reply(Answer::Retry);
            }
        }
    }

    /// Starts a host for a migrating grain, which queues for the claim: deliveries that
    /// arrive meanwhile wait in its mailbox until it holds the claim.
    fn adopt(&mut self, id: GrainId, handed: Handed, ctx: &Ctx<Self>) -> AdoptAnswer {
        let Some(activator) = self.activator(&id) else {
            return AdoptAnswer::UnknownType;
        };
        let shared = self.shared.clone();
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.contains_key(&id) {
            return AdoptAnswer::Refused(Refusal::AlreadyThere);
        }
        let host = activator.start(&shared, ctx.runtime(), id.clone(), Some(handed));
        let pid = host.pid();
        active.insert(id, host);
        AdoptAnswer::Started(pid)
    }
}
