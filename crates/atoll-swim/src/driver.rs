//! The thin tokio shell around [`Membership`]: it feeds datagrams and timers in, hands
//! datagrams to a [`Transport`], and publishes events. The transport is the only thing a
//! simulation swaps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use atoll_core::NodeId;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::identity::Identity;
use crate::membership::{Member, MemberEvent, MemberState, Membership, SwimStats};
use crate::packet::Load;

/// How membership reaches other nodes. Every datagram a transport delivers inbound must come
/// with the node id its connection proved.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram to a member, best effort and without waiting (connecting first if
    /// needed; dropping it is allowed).
    fn send(&self, to: &Identity, payload: Vec<u8>);

    /// Reaches `addr` and reports the node id that answered, or `None`.
    fn dial(&self, addr: SocketAddr) -> impl Future<Output = Option<NodeId>> + Send + 'static;
}

/// Events kept for the first subscriber.
const EARLY_EVENTS: usize = 1024;

enum Command {
    Leave(oneshot::Sender<()>),
    Stop,
    DeclareDown(NodeId),
    FenceSelf,
}

struct Shared {
    membership: Mutex<Membership>,
    subscribers: Mutex<Subscribers>,
}

/// Event subscribers, and the events emitted before the first one subscribed (the first
/// subscriber gets those too, so a founder's `Active` is never missed).
#[derive(Default)]
struct Subscribers {
    senders: Vec<mpsc::UnboundedSender<MemberEvent>>,
    early: Option<Vec<MemberEvent>>,
}

/// A running membership: cheap to clone, queried without waiting.
#[derive(Clone)]
pub struct Swim {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Swim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swim")
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl Swim {
    /// Starts driving `membership`: joins through `seeds`, reads `inbound` (datagrams with
    /// their authenticated sender) and sends through `transport`. Stops when every handle is
    /// dropped, when `inbound` closes, or after [`leave`](Self::leave).
    pub fn start<T: Transport>(
        membership: Membership,
        seeds: Vec<SocketAddr>,
        transport: Arc<T>,
        inbound: mpsc::Receiver<(NodeId, Bytes)>,
    ) -> Swim {
        let shared = Arc::new(Shared {
            membership: Mutex::new(membership),
            subscribers: Mutex::new(Subscribers {
                senders: Vec::new(),
                early: Some(Vec::new()),
            }),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: shared.clone(),
            transport,
            inbound,
            commands: rx,
            dialed: mpsc::unbounded_channel(),
        };
        tokio::spawn(driver.run(seeds));
        Swim { shared, commands }
    }

    fn lock(&self) -> MutexGuard<'_, Membership> {
        self.shared
            .membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// This node's identity (the generation changes after a rejoin).
    pub fn identity(&self) -> Identity {
        self.lock().identity().clone()
    }

    /// This node's lifecycle state.
    pub fn state(&self) -> MemberState {
        self.lock().state()
    }

    /// The other members, live or recently down, ordered by node id.
    pub fn members(&self) -> Vec<Member> {
        self.lock().members().cloned().collect()
    }

    /// One member by node id.
    pub fn member(&self, node: NodeId) -> Option<Member> {
        self.lock().member(node).cloned()
    }

    /// The live member with this name, if any.
    pub fn member_named(&self, name: &str) -> Option<Member> {
        self.lock()
            .members()
            .filter(|m| m.state.is_live() && m.identity.name() == name)
            .max_by_key(|m| m.identity.generation)
            .cloned()
    }

    /// Counters since start.
    pub fn stats(&self) -> SwimStats {
        self.lock().stats()
    }

    /// Sets the load summary sent with every membership packet.
    pub fn set_load(&self, load: Load) {
        self.lock().set_load(load);
    }

    /// Membership events from now on (the first subscriber also gets the events since
    /// start). Nothing is dropped: a subscriber that does not read keeps its events queued.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<MemberEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for e in subs.early.take().unwrap_or_default() {
            let _ = tx.send(e);
        }
        subs.senders.push(tx);
        rx
    }

    /// Declares `node` down now (see [`Membership::declare_down`]).
    pub fn declare_down(&self, node: NodeId) {
        let _ = self.commands.send(Command::DeclareDown(node));
    }

    /// Downs this node itself: it is fenced and rejoins as a new generation (see
    /// [`Membership::fence_self`]).
    pub fn fence_self(&self) {
        let _ = self.commands.send(Command::FenceSelf);
    }

    /// Leaves gracefully (every live member is told directly) and stops the driver.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the driver at once, telling nobody: what a crashed process does. The
    /// membership's last state stays readable.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

struct Driver<T> {
    shared: Arc<Shared>,
    transport: Arc<T>,
    inbound: mpsc::Receiver<(NodeId, Bytes)>,
    commands: mpsc::UnboundedReceiver<Command>,
    dialed: (
        mpsc::UnboundedSender<Dialed>,
        mpsc::UnboundedReceiver<Dialed>,
    ),
}

/// A seed address and who answered there.
type Dialed = (SocketAddr, Option<NodeId>);

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl<T: Transport> Driver<T> {
    async fn run(mut self, seeds: Vec<SocketAddr>) {
        self.step(|m| m.join(now(), &seeds));
        loop {
            let deadline = self.lock().poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(done)) => {
                        self.step(|m| m.leave(now()));
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::DeclareDown(node)) => self.step(|m| m.declare_down(now(), node)),
                    Some(Command::FenceSelf) => self.step(|m| m.fence_self(now())),
                    Some(Command::Stop) | None => return,
                },
                datagram = self.inbound.recv() => match datagram {
                    Some((from, bytes)) => self.step(|m| {
                        if let Err(e) = m.handle_datagram(now(), from, &bytes) {
                            tracing::debug!(peer = %from, error = %e, "membership datagram refused");
                        }
                    }),
                    None => return,
                },
                Some((addr, node)) = self.dialed.1.recv() => {
                    self.step(|m| m.dial_result(now(), addr, node));
                }
                () = sleep => self.step(|m| m.handle_timeout(now())),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Membership> {
        self.shared
            .membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one input through the state machine and carries out what it asks for.
    fn step(&self, input: impl FnOnce(&mut Membership)) {
        let mut events = Vec::new();
        let mut dials = Vec::new();
        {
            let mut m = self.lock();
            input(&mut m);
            while let Some(t) = m.poll_transmit() {
                self.transport.send(&t.to, t.payload);
            }
            while let Some(e) = m.poll_event() {
                events.push(e);
            }
            while let Some(addr) = m.poll_dial() {
                dials.push(addr);
            }
        }
        for addr in dials {
            let done = self.dialed.0.clone();
            let dial = self.transport.dial(addr);
            tokio::spawn(async move {
                let _ = done.send((addr, dial.await));
            });
        }
        if !events.is_empty() {
            let mut subs = self
                .shared
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(early) = &mut subs.early {
                // Bounded: a membership nobody listens to must not grow without end.
                let room = EARLY_EVENTS.saturating_sub(early.len());
                early.extend(events.iter().take(room).cloned());
            }
            subs.senders
                .retain(|s| events.iter().all(|e| s.send(e.clone()).is_ok()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SwimConfig;
    use crate::identity::MemberMeta;

    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&self, _to: &Identity, _payload: Vec<u8>) {}
        fn dial(&self, _addr: SocketAddr) -> impl Future<Output = Option<NodeId>> + Send + 'static {
            std::future::ready(None)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_first_subscriber_still_hears_the_founder_become_active() {
        let me = Identity::new(
            NodeId::from_bytes([3; 16]),
            1,
            "127.0.0.1:9".parse().unwrap(),
            MemberMeta::named("founder"),
        )
        .unwrap();
        let (_tx, inbound) = mpsc::channel(8);
        let swim = Swim::start(
            Membership::new(me.clone(), SwimConfig::default(), 1),
            vec![],
            Arc::new(Nowhere),
            inbound,
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(swim.state(), MemberState::Active);
        let mut events = swim.subscribe();
        assert_eq!(events.recv().await, Some(MemberEvent::Active(me)));
        swim.leave().await;
        assert_eq!(swim.state(), MemberState::Left);
    }
}
