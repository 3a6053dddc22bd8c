//! atoll's own account of what the Raft core does: one line per leader elected and one if
//! the core stops on a failure, in place of openraft's per-message chatter (which the
//! default log filter of `atoll node` silences).

use openraft::error::Fatal;
use openraft::metrics::RaftMetrics;
use tokio::sync::watch;

use crate::types::{Node, RaftId};

/// What is worth a line in a change of the Raft metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
enum News {
    /// A leader this voter had not reported for this term.
    Leader { term: u64, leader: RaftId },
    /// The core stopped on a failure.
    Failed(String),
    /// The core stopped because it was shut down.
    Stopped,
}

/// The news in metrics showing `term`, `leader` and `fatal`, given the leadership
/// reported last (updated when a new one is reported).
fn news(
    last: &mut Option<(u64, RaftId)>,
    term: u64,
    leader: Option<RaftId>,
    fatal: Option<&Fatal<RaftId>>,
) -> Option<News> {
    match fatal {
        None => {}
        Some(Fatal::Stopped) => return Some(News::Stopped),
        Some(e) => return Some(News::Failed(e.to_string())),
    }
    let leader = leader?;
    if *last == Some((term, leader)) {
        return None;
    }
    *last = Some((term, leader));
    Some(News::Leader { term, leader })
}

/// Logs `raft leader elected` (at INFO, with the term and the leader's Raft id) whenever
/// this voter learns of a new leader or term, and `raft core stopped` (at ERROR) if the
/// core stops on a failure; returns when the core stops.
pub(crate) async fn report(id: RaftId, mut metrics: watch::Receiver<RaftMetrics<RaftId, Node>>) {
    let mut last = None;
    loop {
        let found = {
            let m = metrics.borrow_and_update();
            news(
                &mut last,
                m.current_term,
                m.current_leader,
                m.running_state.as_ref().err(),
            )
        };
        match found {
            None => {}
            Some(News::Leader { term, leader }) => tracing::info!(
                raft_id = id,
                term,
                leader,
                this_node = leader == id,
                "raft leader elected"
            ),
            Some(News::Failed(e)) => {
                tracing::error!(raft_id = id, "raft core stopped: {e}");
                return;
            }
            Some(News::Stopped) => return,
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_leader_and_term_and_none_without_a_leader() {
        let mut last = None;
        assert_eq!(news(&mut last, 1, None, None), None);
        assert_eq!(
            news(&mut last, 2, Some(7), None),
            Some(News::Leader { term: 2, leader: 7 })
        );
        // Other metrics changes (commits, heartbeats) say nothing new.
        assert_eq!(news(&mut last, 2, Some(7), None), None);
        assert_eq!(news(&mut last, 3, None, None), None);
        assert_eq!(
            news(&mut last, 3, Some(9), None),
            Some(News::Leader { term: 3, leader: 9 })
        );
        // The same leader re-elected in a later term is news too.
        assert_eq!(
            news(&mut last, 4, Some(9), None),
            Some(News::Leader { term: 4, leader: 9 })
        );
    }

    #[test]
    fn a_failure_is_told_apart_from_a_shutdown() {
        let mut last = None;
        assert_eq!(
            news(&mut last, 1, Some(1), Some(&Fatal::Stopped)),
            Some(News::Stopped)
        );
        assert_eq!(
            news(&mut last, 1, Some(1), Some(&Fatal::Panicked)),
            Some(News::Failed("panicked".into()))
        );
        assert_eq!(last, None);
    }
}
