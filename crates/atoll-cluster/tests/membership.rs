//! SWIM membership in real nodes: QUIC and TLS on loopback, every node on a tokio runtime of
//! its own so that one can die without a word (its runtime is dropped under it).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_cluster::{MemberEvent, MemberState, MembershipConfig, Node, NodeConfig, SwimConfig};
use atoll_core::NodeId;
use atoll_net::NodeIdentity;
use common::host::{Host as NodeHost, fast_swim, serial, wait_until};
use common::*;

/// One node on a runtime of its own, and every membership event it reported.
struct Host {
    host: NodeHost,
    events: Arc<Mutex<Vec<(Instant, MemberEvent)>>>,
}

impl Host {
    fn start(config: NodeConfig) -> Host {
        let host = NodeHost::start(config);
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut rx = host
            .node()
            .member_events()
            .expect("membership is configured");
        let log = events.clone();
        host.rt().spawn(async move {
            while let Some(e) = rx.recv().await {
                log.lock().unwrap().push((Instant::now(), e));
            }
        });
        Host { host, events }
    }

    fn node(&self) -> &Node {
        self.host.node()
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.host.rt()
    }

    fn id(&self) -> NodeId {
        self.node().id()
    }

    fn addr(&self) -> SocketAddr {
        self.node().local_addr()
    }

    fn generation(&self) -> u64 {
        self.node().membership().unwrap().identity().generation
    }

    fn state(&self) -> MemberState {
        self.node().membership().unwrap().state()
    }

    /// The state this node holds `of` in, if it knows it.
    fn view_of(&self, of: NodeId) -> Option<(MemberState, u64)> {
        let m = self.node().membership().unwrap().member(of)?;
        Some((m.state, m.identity.generation))
    }

    /// When this node first reported an event about `about` matching `kind`.
    fn first(&self, about: NodeId, kind: fn(&MemberEvent) -> bool) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| kind(e) && subject(e) == about)
            .map(|(at, _)| *at)
    }

    /// Runs `f` inside this node's runtime (sends may open connections on it).
    fn within<R>(&self, f: impl FnOnce(&Node) -> R) -> R {
        self.host.within(f)
    }

    /// Stops the node gracefully: it leaves the membership first.
    fn stop(self) {
        self.host.stop()
    }

    /// Kills the node without a word: its runtime, with every task and the endpoint driver,
    /// is dropped in the background.
    fn kill(self) {
        self.host.kill()
    }
}

fn subject(e: &MemberEvent) -> NodeId {
    match e {
        MemberEvent::Joined(i)
        | MemberEvent::Suspect(i)
        | MemberEvent::Recovered(i)
        | MemberEvent::Unreachable(i)
        | MemberEvent::Left(i)
        | MemberEvent::Active(i) => i.node,
        MemberEvent::Fenced { new, .. } => new.node,
    }
}

fn member_config(cluster: &Cluster, name: &str, seeds: &[SocketAddr]) -> NodeConfig {
    member_config_with_key(cluster, name, NodeIdentity::generate().unwrap(), seeds)
}

fn member_config_with_key(
    cluster: &Cluster,
    name: &str,
    key: NodeIdentity,
    seeds: &[SocketAddr],
) -> NodeConfig {
    cluster.config_with_key(name, key).with_membership(
        MembershipConfig::new(seeds.iter().copied())
            .with_swim(fast_swim())
            .with_roles([format!("role-{name}")])
            .with_capabilities(["echo"]),
    )
}

/// Starts a founder and `others` nodes joining through it.
fn cluster_of(cluster: &Cluster, names: &[&str]) -> Vec<Host> {
    let first = Host::start(member_config(cluster, names[0], &[]));
    let seed = first.addr();
    let mut hosts = vec![first];
    for name in &names[1..] {
        hosts.push(Host::start(member_config(cluster, name, &[seed])));
    }
    hosts
}

/// Every host active and seeing every other one active.
fn all_active(hosts: &[Host]) -> bool {
    hosts.iter().all(|h| {
        h.state() == MemberState::Active
            && hosts
                .iter()
                .filter(|o| o.id() != h.id())
                .all(|o| matches!(h.view_of(o.id()), Some((MemberState::Active, _))))
    })
}

#[test]
fn five_nodes_joined_through_one_seed_all_see_each_other_active() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let hosts = cluster_of(&cluster, &["n0", "n1", "n2", "n3", "n4"]);
    wait_until("five active members that see each other", || {
        all_active(&hosts)
    });
    for h in &hosts {
        let swim = h.node().membership().unwrap();
        let members = swim.members();
        assert_eq!(members.len(), 4, "{}: {members:?}", h.node().name());
        for o in hosts.iter().filter(|o| o.id() != h.id()) {
            let m = swim.member(o.id()).unwrap();
            assert_eq!(m.state, MemberState::Active);
            assert_eq!(m.identity.name(), o.node().name());
            assert_eq!(m.identity.generation, o.generation());
            assert_eq!(m.identity.addr, o.addr());
            assert_eq!(m.identity.meta.roles, [format!("role-{}", o.node().name())]);
            assert_eq!(m.identity.meta.capabilities, ["echo"]);
        }
        // Membership datagrams of the default size fit every connection.
        for peer in h.node().peers() {
            let fits = h.node().max_datagram_size(peer.id).unwrap_or(0);
            assert!(
                fits >= SwimConfig::default().max_datagram,
                "connections carry datagrams of {fits} bytes"
            );
        }
        // The node reported itself active, and every other member joined (the events reach
        // the log just after the member list changes).
        wait_until("the events of the joins", || {
            h.first(h.id(), |e| matches!(e, MemberEvent::Active(_)))
                .is_some()
                && hosts.iter().filter(|o| o.id() != h.id()).all(|o| {
                    h.first(o.id(), |e| matches!(e, MemberEvent::Joined(_)))
                        .is_some()
                })
        });
    }
    // Every member's load summary arrives with its own packets and counts its processes.
    for h in &hosts {
        atoll_cluster::builtin::install(h.node());
    }
    wait_until("load summaries from every member", || {
        hosts.iter().all(|h| {
            h.node().membership().unwrap().members().iter().all(|m| {
                let owner = hosts.iter().find(|o| o.id() == m.identity.node).unwrap();
                let processes = owner.node().runtime().process_count() as u32;
                assert!(processes > 0, "every node runs its built-in services");
                m.load.is_some_and(|l| l.processes == processes)
            })
        })
    });
    for h in hosts {
        h.stop();
    }
}

#[test]
fn a_node_that_dies_silently_is_suspected_then_declared_unreachable_and_disconnected() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let mut hosts = cluster_of(&cluster, &["a", "b", "c", "d"]);
    wait_until("four active members", || all_active(&hosts));

    // A process on the victim, monitored from a: the monitor must fire when membership
    // gives up on the victim.
    let victim = hosts.pop().unwrap();
    let dead = victim.id();
    let (on_victim, _) = victim.within(probe);
    let (watcher, mut seen) = hosts[0].within(trapping_probe);
    watcher.send(ProbeMsg::Monitor(on_victim.pid())).unwrap();
    wait_until("a is connected to the victim", || {
        hosts[0].node().peers().iter().any(|p| p.id == dead)
    });

    let killed = Instant::now();
    victim.kill();
    wait_until("every survivor declares the victim unreachable", || {
        hosts.iter().all(|h| {
            h.first(dead, |e| matches!(e, MemberEvent::Unreachable(_)))
                .is_some()
        })
    });
    let swim = fast_swim();
    let mut declared = Vec::new();
    for h in &hosts {
        let unreachable = h
            .first(dead, |e| matches!(e, MemberEvent::Unreachable(_)))
            .unwrap();
        let suspect = h.first(dead, |e| matches!(e, MemberEvent::Suspect(_)));
        // Membership learns nothing from the dropped runtime (no close frame reaches the
        // survivors; the QUIC idle timeout is 10 s): the victim is suspected first, then
        // declared unreachable once the suspect timeout has run out.
        let suspect = suspect.unwrap_or_else(|| {
            panic!(
                "{} declared the victim unreachable without suspecting it",
                h.node().name()
            )
        });
        assert!(suspect <= unreachable);
        assert!(
            unreachable - suspect >= swim.suspect_timeout - swim.probe_interval,
            "{}: suspect {:?}, unreachable {:?} after the kill",
            h.node().name(),
            suspect - killed,
            unreachable - killed
        );
        eprintln!(
            "{}: suspect {:?}, unreachable {:?} after the kill",
            h.node().name(),
            suspect - killed,
            unreachable - killed
        );
        declared.push(unreachable);
        assert_eq!(h.view_of(dead).map(|v| v.0), Some(MemberState::Unreachable));
    }
    let spread = *declared.iter().max().unwrap() - *declared.iter().min().unwrap();
    assert!(
        spread <= swim.suspect_timeout + swim.probe_interval,
        "declared unreachable {spread:?} apart"
    );

    // The node acted on it before passing it on: the connection closes at once (not at
    // the QUIC idle timeout, 10 s after the kill) and the monitor fires with NoConnection.
    wait_until("the survivors drop their connections to the victim", || {
        hosts
            .iter()
            .all(|h| h.node().peers().iter().all(|p| p.id != dead))
    });
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "connections dropped only {:?} after the kill",
        killed.elapsed()
    );
    match hosts[0].rt().block_on(next(&mut seen, "Down")) {
        Seen::Down(down) => {
            assert_eq!(down.pid, on_victim.pid());
            assert_eq!(down.reason, atoll_actor::ExitReason::NoConnection);
        }
        other => panic!("expected a Down, got {other:?}"),
    }
    // The survivors stay active with each other.
    assert!(all_active(&hosts));
    for h in hosts {
        h.stop();
    }
}

#[test]
fn a_node_that_shuts_down_is_seen_left_by_every_other() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let mut hosts = cluster_of(&cluster, &["a", "b", "c"]);
    wait_until("three active members", || all_active(&hosts));
    let leaving = hosts.pop().unwrap();
    let gone = leaving.id();
    leaving.stop();
    wait_until("every other node sees it left", || {
        hosts
            .iter()
            .all(|h| h.view_of(gone).map(|v| v.0) == Some(MemberState::Left))
    });
    for h in &hosts {
        assert!(
            h.first(gone, |e| matches!(e, MemberEvent::Left(_)))
                .is_some()
        );
        assert!(
            h.first(gone, |e| matches!(e, MemberEvent::Unreachable(_)))
                .is_none(),
            "{} saw the node unreachable instead of left",
            h.node().name()
        );
    }
    for h in hosts {
        h.stop();
    }
}

#[test]
fn a_member_found_only_through_gossip_is_reachable_by_name() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    // a founds the cluster, b joins through a, c through b: a and c are never told about
    // each other.
    let a = Host::start(member_config(&cluster, "a", &[]));
    let b = Host::start(member_config(&cluster, "b", &[a.addr()]));
    let c = Host::start(member_config(&cluster, "c", &[b.addr()]));
    let hosts = [a, b, c];
    wait_until("three active members", || all_active(&hosts));
    let [a, b, c] = hosts;

    let (greeter, mut seen) = c.within(probe);
    c.node()
        .runtime()
        .register("greeter", greeter.pid())
        .unwrap();

    // By node name, through the node.
    a.within(|n| n.send::<Probe>("c", "greeter", ProbeMsg::Text("by name".into())))
        .unwrap();
    let rt = c.rt();
    assert_eq!(
        rt.block_on(next(&mut seen, "a send by name")),
        Seen::Text("by name".into())
    );

    // Through a handle on the member.
    let remote = a.node().remote("c").expect("c is a member");
    assert_eq!(remote.id(), c.id());
    assert_eq!(remote.name(), "c");
    a.within(|_| remote.send::<Probe>("greeter", ProbeMsg::Text("by handle".into())))
        .unwrap();
    assert_eq!(
        rt.block_on(next(&mut seen, "a send by handle")),
        Seen::Text("by handle".into())
    );

    // Requests reach it too.
    let processes = a.rt().block_on(a.node().remote_processes(c.id())).unwrap();
    assert!(processes.iter().any(|p| p.pid == greeter.pid()));

    // A name nobody has is still an error.
    assert!(a.node().remote("nobody").is_none());
    assert!(
        a.within(|n| n.send::<Probe>("nobody", "greeter", ProbeMsg::Text("x".into())))
            .is_err()
    );
    for h in [a, b, c] {
        h.stop();
    }
}

#[test]
fn a_restarted_node_comes_back_as_one_member_with_a_larger_generation() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let a = Host::start(member_config(&cluster, "a", &[]));
    let key = NodeIdentity::generate().unwrap();
    let key_der = key.to_pkcs8_der();
    let b = Host::start(member_config_with_key(&cluster, "b", key, &[a.addr()]));
    let c = Host::start(member_config(&cluster, "c", &[a.addr()]));
    let hosts = vec![a, b, c];
    wait_until("three active members", || all_active(&hosts));
    let mut hosts = hosts;
    let c = hosts.pop().unwrap();
    let b = hosts.pop().unwrap();
    let a = hosts.pop().unwrap();

    // b crashes and comes straight back on the same address with the same key.
    let (id, addr, old) = (b.id(), b.addr(), b.generation());
    b.kill();
    let key = NodeIdentity::from_pkcs8_der(key_der.secret_pkcs8_der()).unwrap();
    let mut config = member_config_with_key(&cluster, "b", key, &[a.addr()]);
    config.listen = addr;
    let b = Host::start(config);
    assert_eq!(b.id(), id);
    let new = b.generation();
    assert!(new > old, "generation {new} after {old}");

    let hosts = [a, b, c];
    wait_until("everyone sees the new generation active", || {
        all_active(&hosts)
            && hosts
                .iter()
                .filter(|h| h.id() != id)
                .all(|h| h.view_of(id) == Some((MemberState::Active, new)))
    });
    for h in hosts.iter().filter(|h| h.id() != id) {
        let members = h.node().membership().unwrap().members();
        let of_b: Vec<_> = members.iter().filter(|m| m.identity.node == id).collect();
        assert_eq!(of_b.len(), 1, "{members:?}");
        assert_eq!(of_b[0].identity.generation, new);
        assert_eq!(of_b[0].state, MemberState::Active);
        assert_eq!(members.len(), 2);
    }
    for h in hosts {
        h.stop();
    }
}

#[test]
fn a_seed_that_is_the_node_itself_makes_it_the_founder() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    // The founder listens on every interface and lists itself by its loopback address, as
    // a shared seed list would: only the connection tells it that the seed is itself.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Nothing is advertised, so the node announces 0.0.0.0:PORT, which differs from the
    // seed: it dials the seed and finds itself there.
    let mut config = member_config(&cluster, "a", &[seed]);
    config.listen = format!("0.0.0.0:{port}").parse().unwrap();
    let a = Host::start(config);
    wait_until("the founder is active", || a.state() == MemberState::Active);
    let b = Host::start(member_config(&cluster, "b", &[seed]));
    let hosts = [a, b];
    wait_until("two active members", || all_active(&hosts));
    for h in hosts {
        h.stop();
    }
}
