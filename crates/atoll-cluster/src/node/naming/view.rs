//! How members follow the registry: the Raft leader sends every peer that told the voters
//! the index it holds ([`Control::RegistryAt`]) the entries applied since
//! ([`Control::RegistryDelta`]) right after they commit, or the whole registry ([`Control::Registry`]) when the peer is
//! behind the voter's retained window ([`plan_push`] decides). A peer whose copy a delta does
//! not follow on from says again what it holds. With [`RegistryPush::Snapshots`] voters push
//! the whole registry every `push_interval` instead (the former way).

use std::sync::atomic::AtomicU64;

use atoll_raft::{Delta, Push, Receipt, plan_push};
use atoll_wire::{RegistryDelta, encode_frame};

use super::*;
use crate::config::RegistryPush;

/// The least time between two [`Control::RegistryAt`] a member sends one voter after gaps.
const GAP_RESEND: Duration = Duration::from_millis(100);
/// The least time between two rounds of deltas: under a stream of commits, the entries of
/// this long go out together (fewer, larger frames) instead of one round per entry.
const ROUND_GAP: Duration = Duration::from_millis(1);

/// A voter's pushes to the members and a member's copy: what each peer holds as far as this
/// voter knows, and counters.
#[derive(Default)]
pub(in crate::node) struct Feed {
    /// Per peer that said what it holds: the index it holds after what was sent to it.
    known: Mutex<BTreeMap<NodeId, u64>>,
    /// Wakes the pusher (a peer said what it holds).
    wake: Arc<tokio::sync::Notify>,
    /// When this node last told each voter what it holds after a gap.
    gap_sent: Mutex<BTreeMap<NodeId, Instant>>,
    stats: FeedCounters,
}

#[derive(Default)]
struct FeedCounters {
    snapshots_sent: AtomicU64,
    deltas_sent: AtomicU64,
    bytes_sent: AtomicU64,
    snapshots_installed: AtomicU64,
    deltas_applied: AtomicU64,
    gaps: AtomicU64,
}

/// How a node's registry pushes went: as a voter, what it sent its peers; as a follower,
/// what it received. Counted since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RegistryFeedStats {
    /// Whole registries sent to peers.
    pub snapshots_sent: u64,
    /// Deltas sent to peers.
    pub deltas_sent: u64,
    /// Bytes of registry pushes (snapshots and deltas, framed) sent to peers.
    pub bytes_sent: u64,
    /// Whole registries taken from a voter.
    pub snapshots_installed: u64,
    /// Deltas applied from a voter.
    pub deltas_applied: u64,
    /// Deltas that did not follow on from the copy held (it then said what it holds).
    pub gaps: u64,
}

impl Feed {
    pub(in crate::node) fn stats(&self) -> RegistryFeedStats {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RegistryFeedStats {
            snapshots_sent: get(&s.snapshots_sent),
            deltas_sent: get(&s.deltas_sent),
            bytes_sent: get(&s.bytes_sent),
            snapshots_installed: get(&s.snapshots_installed),
            deltas_applied: get(&s.deltas_applied),
            gaps: get(&s.gaps),
        }
    }
}

fn from_voter(inner: &Inner, naming: &Naming, from: NodeId, leader: Option<u64>) -> bool {
    if !naming.directory.voters.contains_key(&raft_id_of(&from)) {
        warn!(node = %inner.name, peer = %from, "ignored a registry pushed by a node that is not a voter");
        return false;
    }
    if let Some(leader) = leader
        && naming.directory.voters.contains_key(&leader)
    {
        naming.leader.store(leader, Ordering::Relaxed);
    }
    true
}

/// Keeps a whole registry pushed by a voter, if it is newer than the copy held.
pub(in crate::node) fn learn_view(inner: &Inner, from: NodeId, view: RegistryView) {
    let Some(naming) = &inner.naming else { return };
    if !from_voter(inner, naming, from, view.leader) {
        return;
    }
    if view.applied <= naming.view.read().unwrap_or_else(|e| e.into_inner()).index {
        return;
    }
    // Decoded outside the lock: readers keep resolving meanwhile.
    let registry = match Registry::from_bytes(&view.snapshot) {
        Ok(registry) => registry,
        Err(e) => {
            warn!(node = %inner.name, peer = %from, "ignored a registry that does not decode: {e}");
            return;
        }
    };
    let mut held = naming.view.write().unwrap_or_else(|e| e.into_inner());
    if let Receipt::Advanced(index) = held.install(view.applied, registry) {
        drop(held);
        naming.index.set_view(index);
        naming
            .feed
            .stats
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        naming.view_changed.send_replace(index);
    }
}

/// Applies a delta pushed by a voter; after a gap, tells the voter what is held.
pub(in crate::node) fn learn_delta(inner: &Inner, peer: &Peer, delta: RegistryDelta) {
    let Some(naming) = &inner.naming else { return };
    if !from_voter(inner, naming, peer.id, delta.leader) {
        return;
    }
    let delta = match Delta::decode(delta.base, delta.upto, &delta.entries) {
        Ok(d) => d,
        Err(e) => {
            warn!(node = %inner.name, peer = %peer.name, "ignored a registry delta: {e}");
            return;
        }
    };
    let mut held = naming.view.write().unwrap_or_else(|e| e.into_inner());
    match held.apply(&delta) {
        Receipt::Advanced(index) => {
            drop(held);
            naming.index.set_view(index);
            naming
                .feed
                .stats
                .deltas_applied
                .fetch_add(1, Ordering::Relaxed);
            naming.view_changed.send_replace(index);
        }
        Receipt::Stale => {}
        Receipt::Gap { held: index } => {
            drop(held);
            naming.feed.stats.gaps.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let mut sent = naming
                .feed
                .gap_sent
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if sent
                .get(&peer.id)
                .is_none_or(|at| now.duration_since(*at) >= GAP_RESEND)
            {
                sent.insert(peer.id, now);
                drop(sent);
                debug!(node = %inner.name, peer = %peer.name, held = index, "registry delta after a gap");
                let _ = peer.send_control(&Control::RegistryAt { applied: index });
            }
        }
    }
}

/// A peer said which registry index it holds: push it what it lacks from there.
pub(in crate::node) fn peer_holds(inner: &Inner, from: NodeId, applied: u64) {
    let Some(naming) = &inner.naming else { return };
    if !naming.is_voter() {
        return;
    }
    naming
        .feed
        .known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(from, applied);
    naming.feed.wake.notify_one();
}

/// On a new connection: a non-voter tells a voter peer which registry index it holds, so
/// it is sent what it lacks (voters resolve from their own replica).
pub(in crate::node) fn greet(inner: &Inner, peer: &Peer) {
    let Some(naming) = &inner.naming else { return };
    if !naming.is_voter() && naming.directory.voters.contains_key(&raft_id_of(&peer.id)) {
        let applied = naming.view.read().unwrap_or_else(|e| e.into_inner()).index;
        let _ = peer.send_control(&Control::RegistryAt { applied });
    }
    if naming.config.push == RegistryPush::Snapshots
        && let Some(frame) = naming
            .ready()
            .and_then(|c| snapshot_frame(inner, &c).map(|f| f.1))
    {
        let _ = peer.send_control_frame(&frame);
        naming.feed.count_snapshot(frame.len());
    }
}

impl Feed {
    fn count_snapshot(&self, bytes: usize) {
        self.stats.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn count_delta(&self, bytes: usize) {
        self.stats.deltas_sent.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The whole registry of a running voter as a control frame, if it fits one: its index and
/// the frame.
fn snapshot_frame(inner: &Inner, c: &Consensus<NodeTransport>) -> Option<(u64, Vec<u8>)> {
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
    encode_frame(&control).ok().map(|f| (applied, f))
}

/// The entries after `base` as a control frame, if they are still retained and fit one.
fn delta_frame(inner: &Inner, c: &Consensus<NodeTransport>, base: u64) -> Option<Vec<u8>> {
    let delta = c.read_feed(|applied, _, recent| {
        let upto = applied?;
        Some(Delta {
            base,
            upto,
            entries: recent.since(base)?,
        })
    })?;
    let entries = delta.encode_entries();
    if entries.len() + 64 > inner.max_frame_len {
        return None;
    }
    let control = Control::RegistryDelta(RegistryDelta {
        base,
        upto: delta.upto,
        leader: c.leader_hint(),
        entries,
    });
    encode_frame(&control).ok()
}

/// One round of pushes from the leader: each peer that said what it holds gets what it
/// lacks. Followers send nothing (every member would get each change once per voter); the
/// index a peer said it holds stays with them, so a follower that becomes leader catches
/// each peer up from there (by a delta, or a snapshot if that is behind its window).
fn push_round(inner: &Inner, naming: &Naming, c: &Consensus<NodeTransport>) {
    if c.leader_hint() != Some(c.id()) {
        return;
    }
    let (applied, floor) = c.read_feed(|applied, _, recent| (applied, recent.floor()));
    let Some(applied) = applied else { return };
    let mut known = naming.feed.known.lock().unwrap_or_else(|e| e.into_inner());
    // Encoded once per round and shared by every peer that needs the same.
    let mut snapshot: Option<Option<(u64, Vec<u8>)>> = None;
    let mut deltas: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    known.retain(|id, _| inner.peer(*id).is_some());
    for (id, held) in known.iter_mut() {
        let Some(peer) = inner.peer(*id) else {
            continue;
        };
        let plan = plan_push(Some(*held), applied, floor);
        let delta = match plan {
            Push::Nothing => continue,
            Push::Delta { base, .. } => deltas
                .entry(base)
                .or_insert_with(|| delta_frame(inner, c, base))
                .as_ref(),
            Push::Snapshot => None,
        };
        if let Some(frame) = delta {
            if peer.send_control_frame(frame).is_ok() {
                naming.feed.count_delta(frame.len());
                *held = applied;
            }
            continue;
        }
        // Behind the window (or the delta would not fit a frame): the whole registry.
        if let Some((index, frame)) = snapshot
            .get_or_insert_with(|| snapshot_frame(inner, c))
            .as_ref()
            && peer.send_control_frame(frame).is_ok()
        {
            naming.feed.count_snapshot(frame.len());
            *held = *index;
        }
    }
}

/// On a voter: pushes registry changes to its peers. With deltas (from the leader), right
/// after each applied change (changes that arrive while a round runs or within
/// [`ROUND_GAP`] of the last go together in the next), and every `every` anyway; with snapshots, the whole registry at most every `every`.
pub(in crate::node) async fn push_registry(weak: Weak<Inner>, every: Duration) {
    let every = every.max(Duration::from_millis(1));
    let mut pushed = None;
    let mut applied: Option<watch::Receiver<u64>> = None;
    let mut last_round = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(naming) = &inner.naming else { return };
        let ready = naming.ready();
        match (&ready, naming.config.push) {
            (Some(c), RegistryPush::Deltas) => {
                let changes = applied.get_or_insert_with(|| c.watch_applied());
                changes.borrow_and_update();
                push_round(&inner, naming, c);
                last_round = Instant::now();
            }
            (Some(c), RegistryPush::Snapshots) => {
                if let Some((index, frame)) = snapshot_frame(&inner, c)
                    && pushed != Some(index)
                {
                    for peer in inner.connected_peers() {
                        if peer.send_control_frame(&frame).is_ok() {
                            naming.feed.count_snapshot(frame.len());
                        }
                    }
                    pushed = Some(index);
                }
            }
            (None, _) => {}
        }
        let deltas = naming.config.push == RegistryPush::Deltas && ready.is_some();
        let wake = naming.feed.wake.clone();
        let changes = applied.clone().filter(|_| deltas);
        drop(inner);
        match changes {
            Some(mut changes) => {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The voter stopped: no change will be announced.
                            tokio::time::sleep(every).await;
                        }
                    }
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
                tokio::time::sleep_until(last_round + ROUND_GAP).await;
            }
            None => tokio::time::sleep(every).await,
        }
    }
}
