//! The registry view voters push to every member.

use super::*;

/// Keeps a registry view pushed by a voter, if it is newer than the one held.
pub(in crate::node) fn learn_view(inner: &Inner, from: NodeId, view: RegistryView) {
    let Some(naming) = &inner.naming else { return };
    if !naming.directory.voters.contains_key(&raft_id_of(&from)) {
        warn!(node = %inner.name, peer = %from, "ignored a registry pushed by a node that is not a voter");
        return;
    }
    if let Some(leader) = view.leader
        && naming.directory.voters.contains_key(&leader)
    {
        naming.leader.store(leader, Ordering::Relaxed);
    }
    let mut held = naming.view.write().unwrap_or_else(|e| e.into_inner());
    if view.applied <= held.0 {
        return;
    }
    match Registry::from_bytes(&view.snapshot) {
        Ok(registry) => {
            *held = (view.applied, registry);
            drop(held);
            naming.view_changed.send_replace(view.applied);
        }
        Err(e) => {
            warn!(node = %inner.name, peer = %from, "ignored a registry that does not decode: {e}")
        }
    }
}

/// The registry view this node would push, if it is a running voter and the view fits a
/// frame.
pub(in crate::node) fn own_view(inner: &Inner) -> Option<(u64, Control)> {
    let c = inner.naming.as_ref()?.ready()?;
    let (applied, snapshot) = c.read_registry(|applied, r| Some((applied?, r.to_bytes())))?;
    // Leave room for the envelope around it; the receiver refuses larger frames.
    if snapshot.len() + 64 > inner.max_frame_len {
        warn!(node = %inner.name, size = snapshot.len(), "the registry is too large to push");
        return None;
    }
    let control = Control::Registry(RegistryView {
        applied,
        leader: c.leader_hint(),
        snapshot,
    });
    Some((applied, control))
}

/// Sends the current registry to a newly connected peer.
pub(in crate::node) fn greet(inner: &Inner, peer: &Peer) {
    if let Some((_, view)) = own_view(inner) {
        let _ = peer.send_control(&view);
    }
}

/// On a voter: pushes the registry to every connected peer whenever it changed, at most
/// every `every`.
pub(in crate::node) async fn push_registry(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pushed = None;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some((applied, view)) = own_view(&inner) else {
            continue;
        };
        if pushed != Some(applied) {
            inner.broadcast(&view);
            pushed = Some(applied);
        }
    }
}
