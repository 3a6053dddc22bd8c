use std::collections::VecDeque;

use super::*;
use atoll_data::{ProcessStatus, ResourceSummary};

fn node(i: usize) -> NodeId {
    NodeId::from_bytes([i as u8 + 1; 16])
}

fn ad(n: NodeId, serial: u64, kind: &str) -> ProcessAdvertisement {
    ProcessAdvertisement {
        pid: Pid::new(n, 1, serial),
        agent_type: kind.into(),
        capabilities: ["cap".to_string()].into(),
        status: ProcessStatus::Running,
        resource_summary: ResourceSummary::default(),
    }
}

/// Members' planes and the messages between them, delivered in order (or dropped).
struct Net {
    planes: Vec<DataPlane>,
    local: Vec<Vec<ProcessAdvertisement>>,
    queue: VecDeque<(usize, usize, DataMessage)>,
    /// `cut[i][j]`: messages from i to j are dropped.
    cut: Vec<Vec<bool>>,
    now: u64,
    rng: u64,
    /// Drop one message in `loss` (0: none).
    loss: u64,
    bytes: usize,
}

impl Net {
    fn new(n: usize, per_node: u64, settings: DataSettings) -> Net {
        Net {
            planes: (0..n)
                .map(|i| DataPlane::new(node(i), settings, i as u64 + 7))
                .collect(),
            local: (0..n)
                .map(|i| (1..=per_node).map(|s| ad(node(i), s, "Worker")).collect())
                .collect(),
            queue: VecDeque::new(),
            cut: vec![vec![false; n]; n],
            now: 1_000,
            rng: 99,
            loss: 0,
            bytes: 0,
        }
    }

    fn index(&self, id: NodeId) -> usize {
        self.planes.iter().position(|p| p.me == id).unwrap()
    }

    fn members(&self) -> Vec<NodeId> {
        (0..self.planes.len()).map(node).collect()
    }

    fn send(&mut self, from: usize, out: Vec<Outgoing>) {
        for (to, msg) in out {
            let to = self.index(to);
            self.queue.push_back((from, to, msg));
        }
    }

    fn deliver(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            self.rng = self.rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            if self.cut[from][to] || (self.loss > 0 && (self.rng >> 33).is_multiple_of(self.loss)) {
                continue;
            }
            // Through the wire form, as the node sends it.
            let bytes = msg.encode();
            self.bytes += bytes.len();
            let msg = DataMessage::decode(&bytes).unwrap();
            let out = self.planes[to].receive(node(from), msg, self.now);
            self.send(to, out);
        }
    }

    fn period(&mut self) {
        self.now += 1_000;
        let members = self.members();
        for i in 0..self.planes.len() {
            let out = self.planes[i].tick(self.now, &members, &self.local[i].clone());
            self.send(i, out);
        }
        self.deliver();
    }

    fn converged(&self) -> bool {
        let first = self.planes[0].state().processes.map().state();
        self.planes.iter().all(|p| {
            p.state().processes.map().state() == first
                && p.state().services.map().state() == self.planes[0].state().services.map().state()
        })
    }

    fn run_until_converged(&mut self, limit: usize) -> usize {
        for periods in 1..=limit {
            self.period();
            if self.converged() {
                return periods;
            }
        }
        panic!("not converged within {limit} periods");
    }
}

#[test]
fn five_members_tables_converge_under_loss() {
    let mut net = Net::new(5, 20, DataSettings::default());
    net.loss = 5;
    net.run_until_converged(40);
    for p in &net.planes {
        assert_eq!(p.state().processes.len(), 100);
        assert_eq!(p.state().processes.find_by_type("Worker").count(), 100);
    }
}

#[test]
fn an_exited_process_is_withdrawn_everywhere_and_its_tombstone_collected() {
    let mut net = Net::new(3, 5, DataSettings::default());
    net.run_until_converged(30);
    net.local[1].retain(|a| a.pid.serial != 3);
    let gone = Pid::new(node(1), 1, 3);
    net.run_until_converged(30);
    assert!(
        net.planes
            .iter()
            .all(|p| p.state().processes.get(&gone).is_none())
    );
    for _ in 0..30 {
        net.period();
    }
    assert!(
        net.planes
            .iter()
            .all(|p| p.state().processes.map().tombstones() == 0)
    );
    assert!(
        net.planes
            .iter()
            .any(|p| p.stats().tombstones_collected > 0)
    );
}

#[test]
fn a_partitioned_member_converges_after_the_heal() {
    let mut net = Net::new(4, 10, DataSettings::default());
    net.run_until_converged(30);
    for other in 0..4 {
        net.cut[3][other] = true;
        net.cut[other][3] = true;
    }
    net.local[0].push(ad(node(0), 100, "Late"));
    net.local[3].push(ad(node(3), 100, "Late"));
    net.local[1].clear();
    for _ in 0..5 {
        net.period();
    }
    assert!(!net.converged());
    net.cut = vec![vec![false; 4]; 4];
    net.run_until_converged(30);
    assert_eq!(
        net.planes[3].state().processes.find_by_type("Late").count(),
        2
    );
    assert_eq!(net.planes[2].state().processes.len(), 32);
}

#[test]
fn merkle_repair_alone_converges_two_members_with_less_than_the_full_state() {
    let settings = DataSettings {
        repair_every: 1,
        ..DataSettings::default()
    };
    let mut net = Net::new(2, 2_000, settings);
    net.run_until_converged(30);
    // A few entries appear on each side, then only repair traffic flows.
    net.local[0].extend((5_000..5_010).map(|s| ad(node(0), s, "New")));
    net.local[1].extend((5_000..5_010).map(|s| ad(node(1), s, "New")));
    let full: usize = net.planes[0]
        .state()
        .processes
        .map()
        .select(&[atoll_data::KeyRange::ALL])
        .encode()
        .len();
    net.bytes = 0;
    for _ in 0..3 {
        net.now += 1_000;
        let members = net.members();
        for i in 0..2 {
            let out = net.planes[i].tick(net.now, &members, &net.local[i].clone());
            let repairs = out
                .into_iter()
                .filter(|(_, m)| matches!(m, DataMessage::Repair { .. }))
                .collect();
            net.send(i, repairs);
        }
        net.deliver();
        if net.converged() {
            break;
        }
    }
    assert!(net.converged(), "repair converged the two tables");
    assert!(net.planes.iter().all(|p| p.stats().entries_repaired >= 10));
    // Both members open a comparison in the same period here, so the differences are found
    // twice; still a fraction of sending the state.
    assert!(
        net.bytes * 5 < full,
        "repair sent {} bytes, the full state is {full}",
        net.bytes
    );
}

#[test]
fn a_lost_members_entries_go_and_come_back_when_it_rejoins() {
    let mut net = Net::new(3, 4, DataSettings::default());
    net.run_until_converged(30);
    for i in [0, 1] {
        net.planes[i].node_lost(node(2));
        assert_eq!(net.planes[i].state().processes.len(), 8);
    }
    // Its old entries stay refused however often they are offered...
    for _ in 0..5 {
        net.period();
    }
    assert_eq!(net.planes[0].state().processes.len(), 8);
    // ...until it is back.
    for i in [0, 1] {
        net.planes[i].node_back(node(2));
    }
    net.run_until_converged(30);
    assert_eq!(net.planes[0].state().processes.len(), 12);
}

#[test]
fn deltas_stay_within_the_period_budget() {
    let settings = DataSettings {
        budget_bytes: 4 << 10,
        ..DataSettings::default()
    };
    let mut net = Net::new(3, 2_000, settings);
    net.period();
    for p in &net.planes {
        // One entry may go over (an entry is never split).
        assert!(
            p.stats().delta_bytes_sent <= (4 << 10) + 512,
            "{:?}",
            p.stats()
        );
    }
    net.run_until_converged(400);
}

#[test]
fn services_resolve_and_follow_their_process() {
    let mut net = Net::new(2, 1, DataSettings::default());
    let offer = |n: NodeId| ServiceAdvertisement {
        service: "db".into(),
        pid: Pid::new(n, 1, 1),
        load: 0,
        metadata: Default::default(),
    };
    let now = net.now;
    net.planes[0]
        .advertise_service(offer(node(0)), now)
        .unwrap();
    net.planes[1]
        .advertise_service(offer(node(1)), now)
        .unwrap();
    assert!(
        net.planes[0]
            .advertise_service(offer(node(1)), now)
            .is_err()
    );
    net.run_until_converged(20);
    let order: Vec<NodeId> = net.planes[0]
        .state()
        .services
        .resolve_preferred("db", node(1))
        .iter()
        .map(|s| s.node())
        .collect();
    assert_eq!(order, [node(1), node(0)]);
    let now = net.now;
    assert_eq!(
        net.planes[1].process_exited(Pid::new(node(1), 1, 1), now),
        ["db"]
    );
    net.run_until_converged(20);
    assert_eq!(net.planes[0].state().services.resolve("db").len(), 1);
}

#[test]
fn malformed_messages_get_no_answer_and_change_nothing() {
    let mut plane = DataPlane::new(node(0), DataSettings::default(), 1);
    let bad = [
        RepairStep::Root(atoll_data::TreeRoot {
            depth: 200,
            hash: [0; 32],
        }),
        RepairStep::Children {
            depth: 3,
            nodes: vec![atoll_data::NodeRef {
                level: 9,
                index: 1 << 40,
            }],
        },
        RepairStep::Hashes {
            depth: 3,
            nodes: vec![atoll_data::NodeRef::ROOT],
            digests: vec![],
        },
        RepairStep::Pull(vec![0; repair::MAX_PULL_PER_STEP + 1]),
    ];
    for step in bad {
        let msg = DataMessage::Repair {
            table: Table::Processes,
            step,
        };
        assert!(plane.receive(node(1), msg, 1_000).is_empty());
    }
    // A delta with an entry that is not its origin's is refused whole.
    let mut foreign = DataPlane::new(node(1), DataSettings::default(), 2);
    foreign.tick(1_000, &[node(1)], &[ad(node(1), 1, "Worker")]);
    let mut delta = foreign.state().delta_for(&GossipDigest::default(), 1 << 20);
    delta.processes.origins[0].origin = node(2);
    plane.receive(node(1), DataMessage::Delta(delta), 1_001);
    assert!(plane.state().processes.is_empty());
    assert!(DataMessage::decode(&[0xff, 0xff, 0xff]).is_err());
}
