//! Hooks that see messages from other nodes addressed to processes that do not exist here.

use atoll_core::{NodeId, Pid};

use super::Runtime;
use crate::remote;

/// Looks at a message from another node that found no process here: `(runtime, from_node,
/// to, payload)`, run with the runtime as codec context (reply handles in the payload
/// decode). Returns true if it took the message. See [`Runtime::on_undeliverable`].
pub type Undeliverable = fn(&Runtime, NodeId, Pid, &[u8]) -> bool;

impl Runtime {
    /// Adds `hook` (under `key`, replacing an earlier hook of the same key) to the hooks
    /// that see each message from another node addressed to a process that does not exist
    /// here (ended, or of an earlier incarnation of this node). Such a message is still
    /// dropped, as in Erlang; a hook lets a protocol whose messages it recognises tell the
    /// sender at once (answer a call carried in it) instead of leaving it to time out.
    /// Hooks run in turn until one returns true, on the task that read the message: they
    /// must be quick and must not block.
    pub fn on_undeliverable(&self, key: &'static str, hook: Undeliverable) {
        let mut hooks = self
            .inner
            .undeliverable
            .write()
            .unwrap_or_else(|e| e.into_inner());
        hooks.retain(|(k, _)| *k != key);
        hooks.push((key, hook));
    }

    /// Shows a message from `from_node` for the missing process `to` to the hooks, in
    /// turn, until one takes it.
    pub(super) fn show_undeliverable(&self, from_node: NodeId, to: Pid, payload: &[u8]) {
        // Copied out: a hook may send, and sending must not wait on this lock.
        let hooks = self
            .inner
            .undeliverable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        remote::with_codec(self, from_node, || {
            hooks
                .iter()
                .any(|(_, hook)| hook(self, from_node, to, payload))
        });
    }
}
