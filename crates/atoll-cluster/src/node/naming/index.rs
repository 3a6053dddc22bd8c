//! The index of the registry a node resolves from, readable without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The index of the registry a node resolves from (its voter's replica while that runs,
/// the pushed view otherwise), as [`crate::Node::registry_index`] gives it, readable with
/// no lock and no node handle: for callers that look up the registry only when it changed
/// (the registry changes only with its index). Cloning shares it.
///
/// Each source stores its index after the registry it describes, so a caller that reads
/// the index and then the registry sees that index or a later one.
///
/// ```
/// # fn demo(node: &atoll_cluster::Node) {
/// let index = node.registry_index_handle();
/// assert_eq!(index.get(), node.registry_index());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct RegistryIndex(Arc<Sources>);

#[derive(Default)]
struct Sources {
    /// The pushed view's index.
    view: AtomicU64,
    /// The voter's applied index, once it runs.
    voter: OnceLock<Arc<AtomicU64>>,
    /// Whether the voter runs (false again once it shut down).
    voter_live: AtomicBool,
}

impl RegistryIndex {
    /// The index now (0: nothing applied, or no consensus).
    pub fn get(&self) -> u64 {
        let s = &self.0;
        if s.voter_live.load(Ordering::Acquire)
            && let Some(voter) = s.voter.get()
        {
            return voter.load(Ordering::Acquire);
        }
        s.view.load(Ordering::Acquire)
    }

    /// The pushed view reached `index` (stored after the view was).
    pub(in crate::node) fn set_view(&self, index: u64) {
        self.0.view.store(index, Ordering::Release);
    }

    /// The voter runs, and `applied` is its index from now on. Called after the voter is
    /// published, so that a reader finds the voter's registry no older than its index.
    pub(in crate::node) fn voter_started(&self, applied: Arc<AtomicU64>) {
        let _ = self.0.voter.set(applied);
        self.0.voter_live.store(true, Ordering::Release);
    }

    /// The voter stopped: the view is what the node resolves from again.
    pub(in crate::node) fn voter_stopped(&self) {
        self.0.voter_live.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for RegistryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryIndex({})", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_the_view_then_the_running_voter_then_the_view_again() {
        let index = RegistryIndex::default();
        assert_eq!(index.get(), 0);
        index.set_view(4);
        assert_eq!(index.get(), 4);
        let voter = Arc::new(AtomicU64::new(9));
        index.voter_started(voter.clone());
        assert_eq!(index.get(), 9);
        voter.store(12, Ordering::Release);
        assert_eq!(index.clone().get(), 12, "clones share it");
        index.voter_stopped();
        assert_eq!(index.get(), 4);
    }
}
