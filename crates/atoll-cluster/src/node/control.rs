//! A peer's read loops: its control stream, its message streams and its datagrams.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use atoll_wire::{Control, DataRef, Request, decode, decode_ref};
use tracing::{debug, warn};

use super::connect::watch_connection;
use super::{Inner, naming};
use crate::peer::{FrameReader, Peer, ReadError};
use crate::protocol::bulk::{self, Admit};

pub(super) fn start_peer_tasks(inner: &Arc<Inner>, peer: &Arc<Peer>, control: FrameReader) {
    tokio::spawn(control_loop(Arc::downgrade(inner), peer.clone(), control));
    tokio::spawn(accept_message_streams(Arc::downgrade(inner), peer.clone()));
    tokio::spawn(watch_connection(Arc::downgrade(inner), peer.clone()));
    tokio::spawn(datagram_loop(Arc::downgrade(inner), peer.clone()));
}

async fn datagram_loop(weak: Weak<Inner>, peer: Arc<Peer>) {
    while let Ok(datagram) = peer.conn.read_datagram().await {
        let Some(inner) = weak.upgrade() else { return };
        let sink = inner
            .datagrams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Datagrams are unreliable by nature: with no reader, or a full queue, drop them.
        if let Some(sink) = sink {
            let _ = sink.try_send((peer.id, datagram));
        }
    }
}

async fn control_loop(weak: Weak<Inner>, peer: Arc<Peer>, mut reader: FrameReader) {
    loop {
        let body = match reader.next().await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            // The connection went away: the connection watcher takes it from here.
            Err(ReadError::Stream(_)) => return,
            Err(e) => {
                warn!(peer = %peer.name, "control stream failed: {e}");
                peer.conn.close(3, b"bad control frame");
                return;
            }
        };
        peer.frames_received.fetch_add(1, Ordering::Relaxed);
        let Some(inner) = weak.upgrade() else { return };
        let msg = match decode::<Control>(&body) {
            Ok(m) => m,
            Err(e) => {
                warn!(peer = %peer.name, "malformed control frame: {e}");
                peer.conn.close(3, b"bad control frame");
                return;
            }
        };
        match msg {
            Control::Hello(_) | Control::Kept => {
                warn!(peer = %peer.name, "ignored a repeated introduction")
            }
            Control::Gossip(gossip) => inner.learn_globals(peer.id, gossip),
            Control::Request { id, body } => {
                // Served off this loop, so a slow request never holds up gossip.
                let peer = peer.clone();
                tokio::spawn(async move {
                    let body = match body {
                        Request::Raft(raft) => naming::serve(&inner, raft).await,
                        Request::AwaitName { name, pid, wait_ms } => {
                            naming::serve_await_name(&inner, &name, pid, wait_ms).await
                        }
                        Request::AwaitLock {
                            name,
                            holder,
                            after,
                            wait_ms,
                        } => naming::serve_await_lock(&inner, &name, holder, after, wait_ms).await,
                        other => inner.serve(peer.id, other),
                    };
                    let _ = peer.send_control(&Control::Response { id, body });
                });
            }
            Control::Registry(view) => naming::learn_view(&inner, peer.id, view),
            Control::RegistryDelta(delta) => naming::learn_delta(&inner, &peer, delta),
            Control::RegistryAt { applied } => naming::peer_holds(&inner, peer.id, applied),
            Control::Data(bytes) => super::data::receive(&inner, peer.id, &bytes),
            Control::Groups(message) => {
                let applied = inner
                    .groups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(peer.id, message);
                if let Err(e) = applied {
                    warn!(peer = %peer.name, "refused a process-group message: {e}");
                }
            }
            Control::Response { id, body } => {
                let waiter = peer
                    .requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(body);
                }
            }
        }
    }
}

async fn accept_message_streams(weak: Weak<Inner>, peer: Arc<Peer>) {
    while let Ok(recv) = peer.conn.accept_uni().await {
        let Some(inner) = weak.upgrade() else { return };
        let reader = FrameReader::new(recv, inner.max_frame_len);
        tokio::spawn(message_loop(weak.clone(), peer.clone(), reader));
    }
}

/// How many bytes of a key's frames may wait behind a large frame before the message
/// stream stops being read until they are released.
const MAX_HELD: usize = 4 << 20;

async fn message_loop(weak: Weak<Inner>, peer: Arc<Peer>, mut reader: FrameReader) {
    // Set once the stream's first frame says it is one of the peer's bulk streams.
    let mut bulk_lane = None;
    loop {
        let released = peer.merge_released.notified();
        if peer.merging.load(Ordering::Acquire) && held_bytes(&peer) > MAX_HELD {
            released.await;
            continue;
        }
        let Some(inner) = weak.upgrade() else { return };
        let handled = reader
            .next_with(|body| {
                peer.frames_received.fetch_add(1, Ordering::Relaxed);
                if let Some(lane) = bulk_lane {
                    return receive_bulk(&inner, &peer, lane, body);
                }
                match decode_ref::<DataRef<'_>>(body).map_err(|e| e.to_string())? {
                    DataRef::BulkLane { lane } => bulk_lane = Some(lane),
                    DataRef::BulkMark { lane, seq, key } => {
                        let mut merge = peer.merge.lock().unwrap_or_else(|e| e.into_inner());
                        let released = merge.mark(lane, seq, key).map_err(|e| e.to_string())?;
                        for frame in &released {
                            dispatch_owned(&inner, &peer, frame)?;
                        }
                        peer.merging.store(!merge.is_idle(), Ordering::Release);
                        if !released.is_empty() {
                            peer.merge_released.notify_waiters();
                        }
                    }
                    data if peer.merging.load(Ordering::Acquire) => {
                        let key = bulk::data_key(&data).unwrap_or_default();
                        let mut merge = peer.merge.lock().unwrap_or_else(|e| e.into_inner());
                        if merge.frame(key, body) == Admit::Now {
                            dispatch(&inner, &peer, data);
                        }
                    }
                    data => dispatch(&inner, &peer, data),
                }
                Ok::<(), String>(())
            })
            .await;
        drop(inner);
        match handled {
            Ok(Some(Ok(()))) => {}
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                warn!(peer = %peer.name, "message stream refused: {e}");
                reader.refuse();
                return;
            }
            Err(ReadError::Stream(_)) => return,
            Err(e) => {
                warn!(peer = %peer.name, "message stream refused: {e}");
                reader.refuse();
                return;
            }
        }
    }
}

fn held_bytes(peer: &Peer) -> usize {
    peer.merge
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .held_bytes()
}

/// A frame from the peer's bulk stream: delivered in its key's order, with whatever waited
/// behind it. Delivery happens under the merge's lock, so nothing of the same key read
/// meanwhile on a message stream can overtake it.
fn receive_bulk(inner: &Inner, peer: &Peer, lane: u32, body: &[u8]) -> Result<(), String> {
    let mut merge = peer.merge.lock().unwrap_or_else(|e| e.into_inner());
    let release = merge.bulk(lane, body).map_err(|e| e.to_string())?;
    let result = (|| {
        if release.arrived_now {
            dispatch_owned(inner, peer, body)?;
        }
        for frame in &release.then {
            dispatch_owned(inner, peer, frame)?;
        }
        Ok(())
    })();
    peer.merging.store(!merge.is_idle(), Ordering::Release);
    drop(merge);
    if !release.then.is_empty() {
        peer.merge_released.notify_waiters();
    }
    result
}

/// Decodes and delivers a frame body taken out of order (held, or from the bulk stream).
fn dispatch_owned(inner: &Inner, peer: &Peer, body: &[u8]) -> Result<(), String> {
    match decode_ref::<DataRef<'_>>(body).map_err(|e| e.to_string())? {
        DataRef::BulkLane { .. } | DataRef::BulkMark { .. } => {
            Err("a bulk stream frame out of place".to_string())
        }
        data => {
            dispatch(inner, peer, data);
            Ok(())
        }
    }
}

fn dispatch(inner: &Inner, peer: &Peer, data: DataRef<'_>) {
    match data {
        DataRef::Send { to, payload } => {
            if let Err(e) = inner.rt.deliver_encoded(peer.id, to, payload) {
                debug!(peer = %peer.name, "dropped a message: {e}");
            }
        }
        DataRef::SendNamed { name, payload } => match inner.rt.whereis(name) {
            Some(to) => {
                if let Err(e) = inner.rt.deliver_encoded(peer.id, to, payload) {
                    debug!(peer = %peer.name, %name, "dropped a message: {e}");
                }
            }
            None => debug!(peer = %peer.name, %name, "dropped a message for an unknown name"),
        },
        DataRef::Reply { call, payload } => {
            inner.rt.deliver_reply(call, payload);
        }
        DataRef::Signal(signal) => {
            let sender = signal.sender();
            if sender.node != peer.id {
                warn!(peer = %peer.name, %sender, "ignored a signal sent on behalf of another node");
                return;
            }
            inner.rt.deliver_signal(signal);
        }
        // Handled by the message loop before dispatching.
        DataRef::BulkLane { .. } | DataRef::BulkMark { .. } => {}
    }
}
