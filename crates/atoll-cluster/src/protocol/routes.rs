//! Routing to nodes that may not be connected: where each known node can be reached, and
//! the envelopes that wait, in order, for a connection opened on demand.
//!
//! A send to a connected node goes straight to its connection. A send to a node that is
//! not connected but whose address is known (and that is not down) starts a backlog and
//! asks the shell to dial; later sends join the backlog, so none overtakes another, until
//! the dial ends: the backlog then goes out over the new connection
//! ([`Routes::opened`]) or, if it failed, its links and monitors are answered with
//! `NoConnection` ([`Routes::failed`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use atoll_core::{ExitKind, ExitReason, NodeId, Signal};

/// The most envelopes held for one node while its connection opens.
pub const BACKLOG_LIMIT: usize = 4096;

/// What to do with an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Send it over the node's connection now.
    Direct,
    /// It waits in the node's backlog; with `Some(addr)`, the backlog is new and the shell
    /// opens a connection to `addr`.
    Queued(Option<SocketAddr>),
    /// The node cannot be reached: not connected, and down, unknown or its backlog full.
    Unreachable,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    addr: SocketAddr,
    /// The last connection was lost (not closed on purpose) and none has come up since.
    down: bool,
}

/// Envelopes waiting for a lazily opened connection.
#[derive(Debug, Default)]
struct Backlog {
    frames: Vec<(u64, Vec<u8>)>,
    /// Links and monitors among them, answered locally if the connection cannot be opened.
    signals: Vec<Signal>,
}

/// The routing state of one node.
#[derive(Debug, Default)]
pub struct Routes {
    known: BTreeMap<NodeId, Known>,
    backlogs: BTreeMap<NodeId, Backlog>,
}

impl Routes {
    /// Records where `node` can be reached, unless an address is known already.
    pub fn learn(&mut self, node: NodeId, addr: SocketAddr) {
        self.known
            .entry(node)
            .or_insert(Known { addr, down: false });
    }

    /// `node` announced or proved itself reachable at `addr`: that address is the one to
    /// use, and the node is up.
    pub fn reachable(&mut self, node: NodeId, addr: SocketAddr) {
        self.known.insert(node, Known { addr, down: false });
    }

    /// Marks `node` down (sends fail fast) or up again.
    pub fn mark_down(&mut self, node: NodeId, down: bool) {
        if let Some(known) = self.known.get_mut(&node) {
            known.down = down;
        }
    }

    /// The address to open a connection to `node` on demand, unless it is down.
    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.known.get(&node).filter(|k| !k.down).map(|k| k.addr)
    }

    /// Where `node` was last reachable, down or not.
    pub fn last_address(&self, node: NodeId) -> Option<SocketAddr> {
        self.known.get(&node).map(|k| k.addr)
    }

    /// How many nodes have a backlog.
    pub fn backlogs(&self) -> usize {
        self.backlogs.len()
    }

    /// Routes one envelope (`frame`, already encoded, on stream `key`) to `node`, which is
    /// connected or not. `signal` is the link or monitor it carries, if any.
    pub fn route(
        &mut self,
        node: NodeId,
        connected: bool,
        key: u64,
        frame: impl FnOnce() -> Option<Vec<u8>>,
        signal: Option<Signal>,
    ) -> Route {
        // While a backlog drains, later envelopes join it, so none overtakes another.
        if let Some(backlog) = self.backlogs.get_mut(&node) {
            return push(backlog, key, frame, signal);
        }
        if connected {
            return Route::Direct;
        }
        let Some(addr) = self.address(node) else {
            return Route::Unreachable;
        };
        let mut backlog = Backlog::default();
        match push(&mut backlog, key, frame, signal) {
            Route::Queued(_) => {
                self.backlogs.insert(node, backlog);
                Route::Queued(Some(addr))
            }
            other => other,
        }
    }

    /// The connection to `node` opened: the frames to send over it first, in order.
    pub fn opened(&mut self, node: NodeId) -> Vec<(u64, Vec<u8>)> {
        self.backlogs
            .remove(&node)
            .map(|b| b.frames)
            .unwrap_or_default()
    }

    /// The connection to `node` could not be opened: its backlog is dropped, and the links
    /// and monitors in it are returned, to be answered with `NoConnection`.
    pub fn failed(&mut self, node: NodeId) -> Vec<Signal> {
        self.backlogs
            .remove(&node)
            .map(|b| b.signals)
            .unwrap_or_default()
    }
}

/// The local answer to a link or monitor that could not reach its target's node: the
/// linking process gets an exit signal, the monitoring one a down message, both with
/// `NoConnection`. Other signals need none.
pub fn no_connection(signal: Signal) -> Option<Signal> {
    match signal {
        Signal::Link { from, to } => Some(Signal::Exit {
            from: to,
            to: from,
            reason: ExitReason::NoConnection,
            kind: ExitKind::Link,
        }),
        Signal::Monitor { from, to, monitor } => Some(Signal::Down {
            to: from,
            monitor,
            pid: to,
            reason: ExitReason::NoConnection,
        }),
        _ => None,
    }
}

fn push(
    backlog: &mut Backlog,
    key: u64,
    frame: impl FnOnce() -> Option<Vec<u8>>,
    signal: Option<Signal>,
) -> Route {
    if backlog.frames.len() >= BACKLOG_LIMIT {
        return Route::Unreachable;
    }
    let Some(frame) = frame() else {
        return Route::Unreachable;
    };
    backlog.frames.push((key, frame));
    backlog.signals.extend(signal);
    Route::Queued(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_core::Pid;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn frame(b: u8) -> impl FnOnce() -> Option<Vec<u8>> {
        move || Some(vec![b])
    }

    #[test]
    fn connected_nodes_are_sent_to_directly() {
        let mut routes = Routes::default();
        assert_eq!(
            routes.route(node(2), true, 0, frame(1), None),
            Route::Direct
        );
        assert_eq!(routes.backlogs(), 0);
    }

    #[test]
    fn unknown_and_down_nodes_are_unreachable() {
        let mut routes = Routes::default();
        assert_eq!(
            routes.route(node(2), false, 0, frame(1), None),
            Route::Unreachable
        );
        routes.learn(node(2), addr(1));
        routes.mark_down(node(2), true);
        assert_eq!(
            routes.route(node(2), false, 0, frame(1), None),
            Route::Unreachable
        );
        routes.reachable(node(2), addr(2));
        assert_eq!(routes.address(node(2)), Some(addr(2)));
    }

    #[test]
    fn the_first_queued_envelope_dials_and_the_backlog_drains_in_order() {
        let mut routes = Routes::default();
        routes.learn(node(2), addr(7));
        assert_eq!(
            routes.route(node(2), false, 0, frame(1), None),
            Route::Queued(Some(addr(7)))
        );
        // Connected meanwhile, yet still behind the backlog.
        assert_eq!(
            routes.route(node(2), true, 1, frame(2), None),
            Route::Queued(None)
        );
        assert_eq!(routes.opened(node(2)), vec![(0, vec![1]), (1, vec![2])]);
        assert_eq!(
            routes.route(node(2), true, 0, frame(3), None),
            Route::Direct
        );
    }

    #[test]
    fn a_failed_dial_answers_the_links_and_monitors_it_held() {
        let mut routes = Routes::default();
        routes.learn(node(2), addr(7));
        let pid = |n| Pid {
            node: node(n),
            creation: 1,
            serial: 1,
        };
        let link = Signal::Link {
            from: pid(1),
            to: pid(2),
        };
        routes.route(node(2), false, 0, frame(1), Some(link.clone()));
        routes.route(node(2), false, 0, frame(2), None);
        assert_eq!(routes.failed(node(2)), vec![link.clone()]);
        assert!(routes.opened(node(2)).is_empty());
        assert_eq!(
            no_connection(link),
            Some(Signal::Exit {
                from: pid(2),
                to: pid(1),
                reason: ExitReason::NoConnection,
                kind: ExitKind::Link,
            })
        );
    }

    #[test]
    fn a_full_backlog_refuses_more() {
        let mut routes = Routes::default();
        routes.learn(node(2), addr(7));
        for _ in 0..BACKLOG_LIMIT {
            assert_ne!(
                routes.route(node(2), false, 0, frame(0), None),
                Route::Unreachable
            );
        }
        assert_eq!(
            routes.route(node(2), false, 0, frame(0), None),
            Route::Unreachable
        );
    }
}
