//! An in-process [`RaftTransport`] for tests: nodes in one process, links that can be cut.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::network::{RaftTransport, TransportError};
use crate::types::RaftId;

type BoxFuture = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
type Handler = Arc<dyn Fn(Vec<u8>) -> BoxFuture + Send + Sync>;

#[derive(Default)]
struct Inner {
    handlers: HashMap<RaftId, Handler>,
    isolated: HashSet<RaftId>,
    cut: HashSet<(RaftId, RaftId)>,
}

/// Connects Raft nodes inside one process. Each node gets its [`MemTransport`] from
/// [`MemRouter::transport`] and registers how it answers with [`MemRouter::serve`].
///
/// A request to a node that is not served, isolated, or across a cut link fails at once
/// with [`TransportError::Unreachable`]. Requests run as their own task at the receiver, as
/// they would across a network: a caller that gives up does not cancel the handling.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for MemRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemRouter")
            .field("nodes", &inner.handlers.keys().collect::<Vec<_>>())
            .field("isolated", &inner.isolated)
            .finish_non_exhaustive()
    }
}

impl MemRouter {
    /// An empty router.
    pub fn new() -> Self {
        MemRouter::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport node `from` sends with.
    pub fn transport(&self, from: RaftId) -> MemTransport {
        MemTransport {
            from,
            router: self.clone(),
        }
    }

    /// Makes node `id` reachable, answering request bodies with `handler`.
    pub fn serve<F, Fut>(&self, id: RaftId, handler: F)
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |body| Box::pin(handler(body)));
        self.lock().handlers.insert(id, handler);
    }

    /// Makes node `id` unreachable, as if it stopped.
    pub fn remove(&self, id: RaftId) {
        self.lock().handlers.remove(&id);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: RaftId) {
        self.lock().isolated.insert(id);
    }

    /// Restores the links of an isolated node.
    pub fn rejoin(&self, id: RaftId) {
        self.lock().isolated.remove(&id);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: RaftId, b: RaftId) {
        let mut inner = self.lock();
        inner.cut.insert((a, b));
        inner.cut.insert((b, a));
    }

    /// Restores the link between `a` and `b`.
    pub fn mend(&self, a: RaftId, b: RaftId) {
        let mut inner = self.lock();
        inner.cut.remove(&(a, b));
        inner.cut.remove(&(b, a));
    }

    fn route(&self, from: RaftId, to: RaftId) -> Option<Handler> {
        let inner = self.lock();
        let blocked = inner.isolated.contains(&from)
            || inner.isolated.contains(&to)
            || inner.cut.contains(&(from, to));
        if blocked {
            return None;
        }
        inner.handlers.get(&to).cloned()
    }
}

/// One node's side of a [`MemRouter`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    from: RaftId,
    router: MemRouter,
}

impl RaftTransport for MemTransport {
    async fn call(&self, target: RaftId, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let handler = self
            .router
            .route(self.from, target)
            .ok_or(TransportError::Unreachable(target))?;
        let response = tokio::spawn(handler(body))
            .await
            .map_err(|e| TransportError::Failed {
                target,
                reason: e.to_string(),
            })?;
        // The link may have been cut while the request was handled: the answer is lost, and
        // the caller cannot know whether the request took effect.
        if self.router.route(self.from, target).is_none() {
            return Err(TransportError::Failed {
                target,
                reason: "link cut before the response".into(),
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_and_cuts() {
        let router = MemRouter::new();
        router.serve(2, |body: Vec<u8>| async move {
            body.into_iter().rev().collect()
        });
        let t = router.transport(1);
        assert_eq!(t.call(2, vec![1, 2, 3]).await, Ok(vec![3, 2, 1]));
        assert_eq!(t.call(3, vec![]).await, Err(TransportError::Unreachable(3)));
        router.cut(1, 2);
        assert_eq!(t.call(2, vec![]).await, Err(TransportError::Unreachable(2)));
        router.mend(1, 2);
        router.isolate(1);
        assert_eq!(t.call(2, vec![]).await, Err(TransportError::Unreachable(2)));
        router.rejoin(1);
        assert!(t.call(2, vec![]).await.is_ok());
        router.remove(2);
        assert_eq!(t.call(2, vec![]).await, Err(TransportError::Unreachable(2)));
    }

    #[tokio::test]
    async fn a_cut_while_handling_loses_the_answer_as_undecided() {
        let router = MemRouter::new();
        let cutter = router.clone();
        router.serve(2, move |body: Vec<u8>| {
            cutter.cut(1, 2);
            async move { body }
        });
        let reply = router.transport(1).call(2, vec![1]).await;
        assert!(matches!(
            reply,
            Err(TransportError::Failed { target: 2, .. })
        ));
    }
}
