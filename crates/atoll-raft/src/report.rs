//! atoll's own account of what the Raft core does: one line per leader elected and one if
//! the core stops on a failure, in place of openraft's per-message chatter (which the
//! default log filter of `atoll node` silences).

use openraft::error::Fatal;
use openraft::metrics::RaftMetrics;
use tokio::sync::watch;

use crate::types::{Node, RaftId};

/// Logs `raft leader elected` (at INFO, with the term and the leader's Raft id) whenever a
/// voter learns of a new leader or term, and `raft core stopped` (at ERROR) if the core
/// stops on a failure; returns when the core stops.
pub(crate) async fn report(id: RaftId, mut metrics: watch::Receiver<RaftMetrics<RaftId, Node>>) {
    let mut last = None;
    loop {
        let (term, leader, stopped) = {
            let m = metrics.borrow_and_update();
            (
                m.current_term,
                m.current_leader,
                m.running_state.as_ref().err().cloned(),
            )
        };
        match stopped {
            None => {}
            Some(Fatal::Stopped) => return,
            Some(e) => {
                tracing::error!(raft_id = id, "raft core stopped: {e}");
                return;
            }
        }
        if let Some(leader) = leader
            && last != Some((term, leader))
        {
            last = Some((term, leader));
            tracing::info!(
                raft_id = id,
                term,
                leader,
                this_node = leader == id,
                "raft leader elected"
            );
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
