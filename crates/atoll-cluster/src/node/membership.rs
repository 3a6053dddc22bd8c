//! SWIM membership over the node's own connections: the transport membership sends through,
//! the task that applies membership events to the node, and the graceful leave.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use atoll_core::NodeId;
use atoll_swim::{Identity, MemberEvent, MemberMeta, MemberState, Membership, Swim, Transport};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::connect::dial_within;
use super::{Inner, NodeIdHash};
use crate::config::MembershipConfig;
use crate::error::{ConnectError, StartError};
use crate::protocol::fence::Fence;
use crate::protocol::split_brain::SplitBrainPolicy;

/// Membership datagrams that wait unread before more are dropped.
const INBOUND_CAPACITY: usize = 4096;
/// Datagrams held for a member while a connection to it opens; more are dropped (SWIM
/// tolerates loss).
const PENDING_LIMIT: usize = 4;
/// The least time between two connection attempts to one member.
const ATTEMPT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a graceful leave may take before the node shuts down anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the goodbye datagrams get to leave before the connections close.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(200);
/// Application close code for a connection dropped because membership declared its node
/// unreachable or gone.
const MEMBER_DOWN: u32 = 4;

/// Starts membership on a node that has just bound its endpoint.
pub(super) fn start(
    inner: &Arc<Inner>,
    settings: MembershipConfig,
    meta: MemberMeta,
) -> Result<(), StartError> {
    let addr = settings.advertise.unwrap_or(inner.local_addr);
    if addr.ip().is_unspecified() {
        warn!(
            node = %inner.name,
            %addr,
            "membership announces an unspecified address: set the address to advertise"
        );
    }
    let me = Identity::new(inner.id, generation_of(inner.rt.creation()), addr, meta)?;
    let generation = me.generation;
    let seed = inner.seed ^ generation;
    let probe_interval = settings.swim.probe_interval;
    let mut swim_config = settings.swim;
    let window = match settings.split_brain {
        SplitBrainPolicy::Off => None,
        SplitBrainPolicy::KeepMajority { window } => {
            // The policy decides who is down, not the suspect timeout.
            swim_config.auto_down = false;
            Some(window)
        }
    };
    let membership = Membership::new(me, swim_config, seed);
    let inbound = inner.datagram_receiver(INBOUND_CAPACITY);
    let transport = Arc::new(SwimTransport {
        inner: Arc::downgrade(inner),
        connect_timeout: settings.connect_timeout,
        pending: Arc::default(),
    });
    let swim = Swim::start(membership, settings.seeds, transport, inbound);
    let events = swim.subscribe();
    // Set once, right here: nothing else sets it.
    let _ = inner.swim.set(swim);
    tokio::spawn(apply_events(Arc::downgrade(inner), events));
    tokio::spawn(report_load(Arc::downgrade(inner), probe_interval));
    if let Some(window) = window {
        tokio::spawn(super::split_brain::run(
            Arc::downgrade(inner),
            window,
            probe_interval,
        ));
    }
    info!(node = %inner.name, generation, %addr, "membership started");
    Ok(())
}

/// Once per probe interval, while the node lives: keeps the load summary that every
/// membership packet carries current, and a connection to every active member (one lost
/// without a membership event, e.g. idle during a one-way block, comes back).
async fn report_load(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(swim) = inner.swim.get() else { return };
        let processes = u32::try_from(inner.rt.process_count()).unwrap_or(u32::MAX);
        swim.set_load(atoll_swim::Load { processes });
        for m in swim.members() {
            if m.state == MemberState::Active {
                connect_to_member(&inner, m.identity.node, m.identity.addr);
            }
        }
    }
}

/// Milliseconds since the Unix epoch, at least 1: a restarted node always starts with a
/// larger generation than its previous run (on a clock that does not go back).
/// The member generation a node starts with: its incarnation (one clock for both), with
/// room below the next incarnation's for the generations a rejoin after being declared
/// down adds (one each).
fn generation_of(creation: u32) -> u64 {
    u64::from(creation) << 16
}

/// Leaves the membership gracefully and gives the goodbye datagrams a moment to go out.
pub(super) async fn leave(inner: &Arc<Inner>) {
    let Some(swim) = inner.swim.get() else { return };
    if tokio::time::timeout(LEAVE_TIMEOUT, swim.leave())
        .await
        .is_err()
    {
        warn!(node = %inner.name, "leaving the membership timed out");
    }
    let flushed = async {
        loop {
            let peers: Vec<_> = inner
                .peers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            let sent = peers.iter().all(|p| {
                p.conn.close_reason().is_some()
                    || p.conn.datagram_send_buffer_space() >= inner.datagram_send_buffer
            });
            if sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, flushed).await;
}

/// Membership's way to other nodes: QUIC datagrams over the node's connections, opening a
/// connection when there is none.
struct SwimTransport {
    inner: Weak<Inner>,
    connect_timeout: Duration,
    pending: Arc<Mutex<HashMap<NodeId, Pending, NodeIdHash>>>,
}

/// A member being connected to for membership traffic.
#[derive(Default)]
struct Pending {
    /// Datagrams to send once the connection is up.
    queued: VecDeque<Bytes>,
    /// An attempt is under way.
    dialing: bool,
    /// When the last attempt started.
    last_attempt: Option<Instant>,
}

impl Transport for SwimTransport {
    fn send(&self, to: &Identity, payload: Vec<u8>) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if to.node == inner.id || inner.closing.load(Ordering::SeqCst) {
            return;
        }
        if let Some(peer) = inner.peer(to.node) {
            if let Err(e) = peer.conn.send_datagram(Bytes::from(payload)) {
                trace!(peer = %peer.name, "membership datagram not sent: {e}");
            }
            return;
        }
        inner.routes().learn(to.node, to.addr);
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() > 1024 {
            // Members that stopped answering long ago.
            pending.retain(|_, p| {
                p.dialing
                    || p.last_attempt
                        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
            });
        }
        let entry = pending.entry(to.node).or_default();
        if entry.dialing {
            if entry.queued.len() < PENDING_LIMIT {
                entry.queued.push_back(Bytes::from(payload));
            }
            return;
        }
        if entry
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < ATTEMPT_INTERVAL)
        {
            // The last attempt failed moments ago: dropped.
            return;
        }
        entry.queued.push_back(Bytes::from(payload));
        entry.dialing = true;
        entry.last_attempt = Some(now);
        drop(pending);
        tokio::spawn(connect_for_membership(
            self.inner.clone(),
            self.pending.clone(),
            to.node,
            to.addr,
            self.connect_timeout,
        ));
    }

    fn dial(&self, addr: SocketAddr) -> impl Future<Output = Option<NodeId>> + Send + 'static {
        let weak = self.inner.clone();
        let timeout = self.connect_timeout;
        async move {
            let inner = weak.upgrade()?;
            if inner.closing.load(Ordering::SeqCst) {
                return None;
            }
            match dial_within(&inner, addr, timeout).await {
                Ok(peer) => Some(peer.id),
                // A seed that is this node: membership makes it the founder.
                Err(ConnectError::ToItself) => Some(inner.id),
                Err(e) => {
                    debug!(node = %inner.name, %addr, "membership could not reach a seed: {e}");
                    None
                }
            }
        }
    }
}

/// Opens a connection to `node` at `addr` and sends what waited for it, if the node that
/// answers there is `node`.
async fn connect_for_membership(
    weak: Weak<Inner>,
    pending: Arc<Mutex<HashMap<NodeId, Pending, NodeIdHash>>>,
    node: NodeId,
    addr: SocketAddr,
    timeout: Duration,
) {
    let outcome = match weak.upgrade() {
        Some(inner) => dial_within(&inner, addr, timeout).await,
        None => return,
    };
    let queued = {
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&node) {
            Some(entry) => {
                entry.dialing = false;
                std::mem::take(&mut entry.queued)
            }
            None => VecDeque::new(),
        }
    };
    match outcome {
        Ok(peer) if peer.id == node => {
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&node);
            for datagram in queued {
                if let Err(e) = peer.conn.send_datagram(datagram) {
                    trace!(peer = %peer.name, "membership datagram not sent: {e}");
                }
            }
        }
        Ok(peer) => {
            debug!(%addr, expected = %node, answered = %peer.id, "another node answered for a member; its datagrams are dropped");
        }
        Err(e) => debug!(%addr, member = %node, "membership could not connect: {e}"),
    }
}

/// Who hears about membership events through the node, and which `Active` of this node
/// they have heard.
#[derive(Default)]
pub(super) struct EventHub {
    subscribers: Vec<mpsc::UnboundedSender<MemberEvent>>,
    /// This node's identity while it is active.
    active: Option<Identity>,
    /// The highest generation of this node announced active.
    announced: u64,
    /// Members a connection is being opened to.
    dialing: std::collections::BTreeSet<NodeId>,
}

impl EventHub {
    pub(super) fn subscribe(&mut self, swim: &Swim) -> mpsc::UnboundedReceiver<MemberEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(me) = &self.active
            && swim.state() == MemberState::Active
        {
            let _ = tx.send(MemberEvent::Active(me.clone()));
        }
        self.subscribers.push(tx);
        rx
    }

    fn publish(&mut self, event: MemberEvent) {
        match &event {
            // Once per generation, however it was learned.
            MemberEvent::Active(me) if me.generation <= self.announced => return,
            MemberEvent::Active(me) => {
                self.announced = me.generation;
                self.active = Some(me.clone());
            }
            MemberEvent::Fenced { .. } => self.active = None,
            _ => {}
        }
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

/// Applies membership events to the node, then passes them on to its subscribers.
async fn apply_events(weak: Weak<Inner>, mut events: mpsc::UnboundedReceiver<MemberEvent>) {
    // The driver may have made this node active (a founder) before the subscription above
    // was taken: announce it from the state, once.
    if let Some(inner) = weak.upgrade()
        && let Some(swim) = inner.swim.get()
        && swim.state() == MemberState::Active
    {
        let me = swim.identity();
        inner
            .member_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(MemberEvent::Active(me));
    }
    let mut fence = match weak.upgrade() {
        Some(inner) => Fence::new(inner.id, inner.rt.creation()),
        None => return,
    };
    while let Some(event) = events.recv().await {
        let Some(inner) = weak.upgrade() else { return };
        apply(&inner, &event);
        super::data::member_event(&inner, &event);
        if let MemberEvent::Joined(m) | MemberEvent::Recovered(m) = &event {
            connect_to_member(&inner, m.node, m.addr);
        }
        if let MemberEvent::Fenced { old, new } = &event {
            // Before anyone hears of the rejoin, this node stops claiming what it held.
            super::fence::fence(&inner, &mut fence, old.generation, new.generation);
        }
        inner
            .member_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(event);
    }
}

/// Opens a connection to a member, unless there is one or an attempt is under way: what
/// spreads over connections (Eventual names, group members, the registry pushed to
/// members) then reaches every member, as each side tells the other its state when they
/// connect.
fn connect_to_member(inner: &Arc<Inner>, node: NodeId, addr: SocketAddr) {
    if node == inner.id || inner.peer(node).is_some() || inner.closing.load(Ordering::SeqCst) {
        return;
    }
    let fresh = inner
        .member_events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .dialing
        .insert(node);
    if !fresh {
        return;
    }
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let Some(inner) = weak.upgrade() else { return };
        let timeout = inner.connect_timeout;
        if let Err(e) = dial_within(&inner, addr, timeout).await {
            debug!(node = %inner.name, member = %node, %addr, "no connection to a member: {e}");
        }
        inner
            .member_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dialing
            .remove(&node);
    });
}

fn apply(inner: &Inner, event: &MemberEvent) {
    match event {
        MemberEvent::Joined(member) => {
            info!(node = %inner.name, member = member.name(), id = %member.node, generation = member.generation, addr = %member.addr, "member joined");
            // A verified self-announcement: its address is the one to use, and the node is
            // up, whatever an earlier connection loss said.
            inner.routes().reachable(member.node, member.addr);
            super::naming::note_back(inner, member.node);
        }
        MemberEvent::Unreachable(member) | MemberEvent::Left(member) => {
            let left = matches!(event, MemberEvent::Left(_));
            info!(node = %inner.name, member = member.name(), id = %member.node, generation = member.generation, "member {}", if left { "left" } else { "unreachable" });
            if inner.closing.load(Ordering::SeqCst) {
                return;
            }
            let newer_live = inner
                .swim
                .get()
                .and_then(|s| s.member(member.node))
                .is_some_and(|m| m.identity.generation > member.generation && m.state.is_live());
            if newer_live {
                // A restart replaced that generation; its connection is the new one's.
                return;
            }
            super::naming::note_lost(inner, member.node);
            // Sends fail fast until the node is back (a new generation joins, or a
            // connection to it succeeds); the connection closes as lost, so links and
            // monitors across it break with NoConnection.
            inner.routes().mark_down(member.node, true);
            if let Some(peer) = inner.peer(member.node) {
                peer.conn.close(
                    MEMBER_DOWN,
                    if left {
                        b"member left"
                    } else {
                        b"member unreachable"
                    },
                );
            }
        }
        MemberEvent::Suspect(member) => {
            debug!(node = %inner.name, member = member.name(), id = %member.node, "member suspect")
        }
        MemberEvent::Recovered(member) => {
            debug!(node = %inner.name, member = member.name(), id = %member.node, "member recovered")
        }
        MemberEvent::Active(me) => {
            info!(node = %inner.name, generation = me.generation, "active in the membership")
        }
        MemberEvent::Fenced { old, new } => warn!(
            node = %inner.name,
            old = old.generation,
            new = new.generation,
            "the cluster declared this node down; rejoining as a new generation"
        ),
    }
}
