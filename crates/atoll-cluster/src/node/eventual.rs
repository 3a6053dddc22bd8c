//! The shell of Eventual (global) names: the node's API over
//! [`EventualNames`](crate::protocol::eventual::EventualNames), carrying its gossip to the
//! peers and its verdicts to local processes.

use std::sync::Arc;

use atoll_actor::{Actor, SendError};
use atoll_core::{NodeId, Pid};
use atoll_wire::{Control, RegistryGossip};
use serde::Serialize;
use tracing::{info, warn};

use super::{Inner, Node};
use crate::error::{ClusterSendError, GlobalError, NameError};
use crate::protocol::eventual::Learned;

/// Tells one local process that it lost an Eventual name.
pub(super) type NameLostSink = Arc<dyn Fn(NameLost) + Send + Sync>;

/// The message a process gets when it loses an Eventual name to a conflicting claim.
///
/// Two nodes that were not connected can each bind one Eventual (global) name; when they
/// meet, the smaller pid keeps it on every node and the other process loses it. The loser
/// is not stopped: its node removes the binding and, if the process asked for it with
/// [`Node::notify_name_lost`], sends it this value as an ordinary message (converted with
/// `From<NameLost>` into the actor's message type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NameLost {
    /// The name that was lost.
    pub name: String,
    /// The process that holds it now.
    pub winner: Pid,
}

impl Node {
    /// Registers the local process `pid` under a cluster-wide `name`: every peer learns it
    /// now, peers that connect later learn it on connect, and it is released when the
    /// process exits.
    pub fn register_global(&self, name: &str, pid: Pid) -> Result<(), GlobalError> {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(GlobalError::NotLocal(pid));
        }
        let gossip = inner
            .globals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, pid)
            .map_err(|owner| GlobalError::NameTaken {
                name: name.to_string(),
                owner,
            })?;
        inner.broadcast(&Control::Gossip(gossip));
        let exited = inner.rt.wait_exit(pid);
        let weak = Arc::downgrade(inner);
        let name = name.to_string();
        tokio::spawn(async move {
            exited.await;
            if let Some(inner) = weak.upgrade() {
                inner.release_global(&name, pid);
            }
        });
        Ok(())
    }

    /// Asks that the local process `pid`, an `A`, be sent a [`NameLost`] message whenever it
    /// loses an Eventual (global) name to a conflicting claim from another node. Without
    /// this the loser only loses the binding (and the node logs it). The request lasts as
    /// long as the process; asking again replaces it.
    pub fn notify_name_lost<A: Actor>(&self, pid: Pid) -> Result<(), NameError>
    where
        A::Msg: From<NameLost>,
    {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(NameError::NotLocal(pid));
        }
        let target = inner.rt.actor_ref::<A>(pid).map_err(NameError::Lookup)?;
        let sink: NameLostSink = Arc::new(move |lost| {
            let _ = target.send(A::Msg::from(lost));
        });
        let fresh = inner
            .name_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, sink)
            .is_none();
        if fresh {
            let exited = inner.rt.wait_exit(pid);
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                exited.await;
                if let Some(inner) = weak.upgrade() {
                    inner
                        .name_lost
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&pid);
                }
            });
        }
        Ok(())
    }

    /// Releases a global name held by a local process.
    pub fn unregister_global(&self, name: &str) -> Option<Pid> {
        let pid = self.whereis_global(name)?;
        if pid.node != self.inner.id {
            return None;
        }
        self.inner.release_global(name, pid);
        Some(pid)
    }

    /// The process holding a global name, on whichever node.
    pub fn whereis_global(&self, name: &str) -> Option<Pid> {
        self.inner
            .globals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .whereis(name)
    }

    /// Every global name this node knows, sorted.
    pub fn globals(&self) -> Vec<(String, Pid)> {
        self.inner
            .globals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all()
    }

    /// Sends `msg` to the process holding the global `name`, wherever it runs.
    pub fn send_global<A: Actor>(
        &self,
        name: &str,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        self.send_resolved::<A>(name, self.whereis_global(name), msg)
    }

    /// Sends `msg` to the process `name` resolved to, if it did.
    pub(super) fn send_resolved<A: Actor>(
        &self,
        name: &str,
        pid: Option<Pid>,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        let Some(pid) = pid else {
            return Err(ClusterSendError::NotRegistered {
                name: name.to_string(),
                msg,
            });
        };
        match self.actor_ref::<A>(pid) {
            Ok(r) => Ok(r.send(msg)?),
            Err(_) => Err(ClusterSendError::Send(SendError::NoProc(msg))),
        }
    }
}

impl Inner {
    fn release_global(&self, name: &str, pid: Pid) {
        let gossip = self
            .globals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .release(name, pid);
        if let Some(gossip) = gossip {
            self.broadcast(&Control::Gossip(gossip));
        }
    }

    /// What a peer that just connected is told of this node's global names.
    pub(super) fn globals_snapshot(&self) -> Control {
        Control::Gossip(
            self.globals
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot(),
        )
    }

    /// Applies a peer's gossip about global names; a local process that lost a name is
    /// told so ([`NameLost`]), and the peers learn that it no longer holds the name.
    pub(super) fn learn_globals(&self, from: NodeId, gossip: RegistryGossip) {
        let learned = self
            .globals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(from, gossip);
        for outcome in learned {
            match outcome {
                Learned::Nothing | Learned::Taken => {}
                Learned::Foreign => {
                    warn!(peer = %from, "ignored a global name claimed for another node's process")
                }
                Learned::Rebut { gossip } => {
                    if let Some(peer) = self.peer(from) {
                        let _ = peer.send_control(&Control::Gossip(gossip));
                    }
                }
                Learned::LocalLost {
                    name,
                    loser,
                    winner,
                    gossip,
                } => {
                    self.broadcast(&Control::Gossip(gossip));
                    self.tell_name_lost(name, loser, winner);
                }
            }
        }
    }

    /// A local process lost the global `name` to `winner`: it is told if it asked to be
    /// (outside any lock: the sink is the user's).
    fn tell_name_lost(&self, name: String, loser: Pid, winner: Pid) {
        let sink = self
            .name_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&loser)
            .cloned();
        match sink {
            Some(sink) => {
                info!(node = %self.name, %name, %loser, %winner, "a local process lost a global name; telling it");
                sink(NameLost { name, winner });
            }
            None => {
                warn!(node = %self.name, %name, %loser, %winner, "a local process lost a global name (it asked for no notification)")
            }
        }
    }
}
