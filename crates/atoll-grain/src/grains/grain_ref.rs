//! The typed reference callers use to reach one grain.

use std::marker::PhantomData;

use super::{GrainError, Grains};
use atoll_core::NodeId;

use crate::Grain;
use crate::core::{Activation, GrainId};
use crate::shared::Request;

/// A reference to one grain, addressed by its type and key; any node can make one with
/// [`Grains::get`] without knowing where (or whether) the grain is active.
pub struct GrainRef<G: Grain> {
    /// The service calls go through, or why there is none (reported by the first call).
    grains: Result<Grains, GrainError>,
    id: GrainId,
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> Clone for GrainRef<G> {
    fn clone(&self) -> Self {
        GrainRef {
            grains: self.grains.clone(),
            id: self.id.clone(),
            _grain: PhantomData,
        }
    }
}

impl<G: Grain> std::fmt::Debug for GrainRef<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrainRef({})", self.id)
    }
}

impl<G: Grain> GrainRef<G> {
    /// The grain's identity.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// Sends `msg` and waits for the grain's reply, activating the grain if it is not
    /// active. A message the grain surely did not take (redirected, its activation
    /// ending, its node unreachable, its state not restorable yet) is sent again until the
    /// call timeout. So is one whose host was lost while the call waited (its node declared
    /// dead and the claim released), when the type allows it ([`Grain::RESEND_IN_DOUBT`]):
    /// the next activation answers it and the caller sees the failover only as a slower
    /// call. Any other message that may have been taken is not sent again
    /// ([`GrainError::Timeout`]).
    pub async fn call(&self, msg: G::Msg) -> Result<G::Reply, GrainError> {
        let reply = self
            .deliver(msg, true)
            .await?
            .ok_or_else(|| GrainError::Codec("a call answered without a reply".into()))?;
        postcard::from_bytes(&reply).map_err(|e| GrainError::Codec(e.to_string()))
    }

    /// Sends `msg` without waiting for it to be handled: returns once the activation has
    /// taken it (activating the grain if needed). Awaiting each send before the next keeps
    /// one sender's messages in order.
    pub async fn send(&self, msg: G::Msg) -> Result<(), GrainError> {
        self.deliver(msg, false).await.map(|_| ())
    }

    /// Encodes `msg` and delivers it (`Grains::deliver`): the encoded reply, if asked for.
    async fn deliver(&self, msg: G::Msg, want_reply: bool) -> Result<Option<Vec<u8>>, GrainError> {
        let grains = self.grains.as_ref().map_err(Clone::clone)?;
        let payload = postcard::to_allocvec(&msg).map_err(|e| GrainError::Codec(e.to_string()))?;
        let request = Request::Msg {
            payload,
            want_reply,
        };
        let (_, reply) = grains
            .deliver(
                &self.id,
                G::REQUIRES,
                Some(G::DURABILITY),
                G::RESEND_IN_DOUBT,
                request,
            )
            .await?;
        Ok(reply)
    }

    /// Moves this grain's activation to `target` ([`Grains::migrate`]).
    pub async fn migrate(&self, target: NodeId) -> Result<Activation, GrainError> {
        let grains = self.grains.as_ref().map_err(Clone::clone)?;
        grains.migrate(&self.id, target).await
    }

    pub(super) fn new(grains: Result<Grains, GrainError>, id: GrainId) -> Self {
        GrainRef {
            grains,
            id,
            _grain: PhantomData,
        }
    }

    pub(crate) fn unavailable(id: GrainId, why: GrainError) -> Self {
        Self::new(Err(why), id)
    }
}
