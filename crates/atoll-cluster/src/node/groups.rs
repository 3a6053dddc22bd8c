//! The node's process-group API over the [`Groups`](crate::groups::Groups) state machine.

use std::sync::Arc;

use atoll_actor::Actor;
use atoll_core::Pid;
use atoll_wire::Control;
use serde::Serialize;

use super::Node;
use crate::error::GroupJoinError;
use crate::groups::MAX_GROUP_NAME;

impl Node {
    /// Adds the local process `pid` to the process group `group` (a process may be in many
    /// groups; joining twice is a no-op). Every peer learns it; it leaves every group when it
    /// exits, and other nodes forget it when this node is lost to them.
    pub fn join_group(&self, group: &str, pid: Pid) -> Result<(), GroupJoinError> {
        let inner = &self.inner;
        if group.is_empty() || group.len() > MAX_GROUP_NAME {
            return Err(GroupJoinError::BadName(group.len()));
        }
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(GroupJoinError::NotLocal(pid));
        }
        let joined = inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(group, pid);
        if let Some(message) = joined {
            inner.broadcast(&Control::Groups(message));
            let exited = inner.rt.wait_exit(pid);
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                exited.await;
                if let Some(inner) = weak.upgrade() {
                    let left = inner
                        .groups
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .exited(pid);
                    for message in left {
                        inner.broadcast(&Control::Groups(message));
                    }
                }
            });
        }
        Ok(())
    }

    /// Takes the local process `pid` out of `group`; false if it was not in it.
    pub fn leave_group(&self, group: &str, pid: Pid) -> bool {
        let left = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leave(group, pid);
        match left {
            Some(message) => {
                self.inner.broadcast(&Control::Groups(message));
                true
            }
            None => false,
        }
    }

    /// Every member of `group` this node knows of, on every node, in pid order. Answered
    /// locally.
    pub fn group_members(&self, group: &str) -> Vec<Pid> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .members(group)
    }

    /// The members of `group` on this node, in pid order.
    pub fn local_group_members(&self, group: &str) -> Vec<Pid> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .local_members(group)
    }

    /// Every group with a member anywhere, in name order.
    pub fn groups(&self) -> Vec<String> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .groups()
    }

    /// Sends `msg` to every member of `group` (typed as `A`); returns how many sends were
    /// accepted for delivery (delivery itself is as for any send).
    pub fn broadcast_group<A: Actor>(&self, group: &str, msg: A::Msg) -> usize
    where
        A::Msg: Clone + Serialize,
    {
        self.group_members(group)
            .into_iter()
            .filter_map(|pid| self.actor_ref::<A>(pid).ok())
            .filter(|r| r.send(msg.clone()).is_ok())
            .count()
    }
}
