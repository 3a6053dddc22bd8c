//! Membership with five real `atoll node` processes, each in its own network namespace:
//! crashes, pauses, cut cables, one-way blocks, packet loss and CPU starvation, judged by
//! the `member ...` lines every node prints. Each test skips where namespaces cannot be
//! made (not root); the tests run one at a time.

mod netns;

use std::time::Duration;

use netns::{Cluster, Event, SUSPECT_MS};

const NODES: usize = 5;
/// The node the faults are done to (not n1, the seed the others joined through).
const VICTIM: usize = 3;

fn suspect_timeouts(k: u32) -> Duration {
    Duration::from_millis(SUSPECT_MS) * k
}

fn others(victim: usize) -> impl Iterator<Item = usize> {
    (1..=NODES).filter(move |&i| i != victim)
}

/// A node reported unreachable, or a node fenced.
fn trouble(line: &str) -> bool {
    Event::parse(line).is_some_and(|e| e.kind == "unreachable" || e.kind == "fenced")
}

/// Waits until every node but `victim` reports it unreachable.
fn wait_unreachable(c: &Cluster, victim: usize) {
    let name = c.name(victim);
    for o in others(victim) {
        c.wait_line(o, &format!("{name} unreachable"), |l| {
            Event::is(l, "unreachable", &name)
        });
    }
}

/// Prints how many `suspect` lines the nodes printed under a fault (none led to
/// `unreachable`, or the test would have failed).
fn report_suspicions(c: &Cluster, what: &str) {
    let suspicions: usize = (1..=NODES)
        .map(|i| {
            c.lines(i)
                .iter()
                .filter(|l| Event::parse(l).is_some_and(|e| e.kind == "suspect"))
                .count()
        })
        .sum();
    eprintln!("{what}: {suspicions} suspect lines, none followed by unreachable");
}

/// No node but `victim` printed `fenced`, and nobody reported a node other than `victim`
/// unreachable (checked on the nodes other than `victim`).
fn assert_only_victim_hit(c: &Cluster, victim: usize) {
    let name = c.name(victim);
    for o in others(victim) {
        for line in c.lines(o) {
            let e = Event::parse(&line);
            let bad = e
                .as_ref()
                .is_some_and(|e| e.kind == "fenced" || (e.kind == "unreachable" && e.name != name));
            assert!(!bad, "n{o} printed {line:?}\n{}", c.dump());
        }
    }
}

#[test]
fn a_killed_node_is_reported_unreachable_by_every_other_node() {
    let Some(mut c) = Cluster::new("kill", 1, NODES) else {
        return;
    };
    let generations = c.start_all();
    c.kill(VICTIM, "KILL");
    let name = c.name(VICTIM);
    for o in others(VICTIM) {
        let line = c.wait_line(o, &format!("{name} unreachable"), |l| {
            Event::is(l, "unreachable", &name)
        });
        assert_eq!(
            Event::parse(&line).unwrap().generation,
            generations[VICTIM - 1]
        );
    }
    // A while longer: the survivors stay live in each other's eyes.
    c.assert_quiet(suspect_timeouts(1), "only the killed node is down", |l| {
        Event::parse(l).is_some_and(|e| e.kind == "unreachable" && e.name != name)
    });
    assert_only_victim_hit(&c, VICTIM);
}

#[test]
fn a_node_paused_past_the_suspect_timeout_comes_back_as_a_new_generation() {
    let Some(mut c) = Cluster::new("stop", 2, NODES) else {
        return;
    };
    let generations = c.start_all();
    let old = generations[VICTIM - 1];
    let name = c.name(VICTIM);
    c.kill(VICTIM, "STOP");
    wait_unreachable(&c, VICTIM);
    c.kill(VICTIM, "CONT");

    let fenced = c.wait_line(VICTIM, "fenced", |l| Event::is(l, "fenced", &name));
    let fenced = Event::parse(&fenced).unwrap();
    assert_eq!(fenced.old_generation, Some(old), "{fenced:?}");
    let new = fenced.generation;
    assert!(new > old, "{fenced:?}");
    for o in others(VICTIM) {
        c.wait_line(o, &format!("{name} joined with gen={new}"), |l| {
            Event::parse(l)
                .is_some_and(|e| e.kind == "joined" && e.name == name && e.generation == new)
        });
    }
    // The old generation is refused: nobody takes it back, however its old packets come.
    c.assert_quiet(suspect_timeouts(1), "the old generation back", |l| {
        Event::parse(l).is_some_and(|e| {
            e.name == name && e.generation == old && matches!(e.kind.as_str(), "recovered")
        })
    });
    for o in others(VICTIM) {
        let rejoined_old = c
            .lines(o)
            .iter()
            .filter(|l| {
                Event::parse(l)
                    .is_some_and(|e| e.kind == "joined" && e.name == name && e.generation == old)
            })
            .count();
        assert_eq!(
            rejoined_old,
            1,
            "n{o} reported generation {old} of {name} joined again\n{}",
            c.dump()
        );
    }
    assert_only_victim_hit(&c, VICTIM);
}

#[test]
fn an_isolated_node_rejoins_as_a_new_generation_and_fences_nobody_else() {
    let Some(mut c) = Cluster::new("isolate", 3, NODES) else {
        return;
    };
    let generations = c.start_all();
    let old = generations[VICTIM - 1];
    let name = c.name(VICTIM);
    c.isolate(VICTIM);
    wait_unreachable(&c, VICTIM);
    c.heal();

    let fenced = c.wait_line(VICTIM, "fenced", |l| Event::is(l, "fenced", &name));
    let new = Event::parse(&fenced).unwrap().generation;
    assert!(new > old, "{fenced}");
    for o in others(VICTIM) {
        c.wait_line(o, &format!("{name} joined with gen={new}"), |l| {
            Event::parse(l)
                .is_some_and(|e| e.kind == "joined" && e.name == name && e.generation == new)
        });
    }
    // The isolated node, which declared the others unreachable while it was cut off, sees
    // each of them live again.
    c.wait_for("n3 sees every other node live again", |c| {
        let lines = c.lines(VICTIM);
        others(VICTIM).all(|o| {
            let other = c.name(o);
            lines
                .iter()
                .filter_map(|l| Event::parse(l).filter(|e| e.name == other))
                .next_back()
                .is_some_and(|e| e.kind == "joined" || e.kind == "recovered")
        })
    });
    assert_only_victim_hit(&c, VICTIM);
}

#[test]
fn a_one_way_block_is_bridged_by_indirect_probes() {
    let Some(mut c) = Cluster::new("oneway", 4, NODES) else {
        return;
    };
    if !netns::have("nft") {
        netns::skip("needs nft (nftables) for a one-way block");
        return;
    }
    c.start_all();
    c.block_one_way(2, 4);
    c.assert_quiet(
        suspect_timeouts(3),
        "n2 -> n4 blocked, n4 -> n2 open",
        trouble,
    );
    report_suspicions(&c, "n2 -> n4 blocked");
    c.heal();
}

#[test]
fn twenty_percent_loss_everywhere_makes_nobody_unreachable() {
    let Some(mut c) = Cluster::new("loss", 5, NODES) else {
        return;
    };
    c.start_all();
    match c.loss(20) {
        Ok(how) => eprintln!("20% loss on every node's link, by {how}"),
        Err(why) => {
            netns::skip(&format!("cannot drop packets at random here: {why}"));
            return;
        }
    }
    c.assert_quiet(suspect_timeouts(4), "20% loss", trouble);
    report_suspicions(&c, "20% loss");
    c.heal();
}

#[test]
fn a_cpu_starved_node_is_not_reported_unreachable() {
    let Some(mut c) = Cluster::new("starve", 6, NODES) else {
        return;
    };
    c.start_all();
    c.starve(
        VICTIM,
        Duration::from_millis(150),
        Duration::from_millis(50),
    );
    c.assert_quiet(
        suspect_timeouts(4),
        "n3 stopped 150 ms of every 200 ms",
        trouble,
    );
    c.stop_starving();
    report_suspicions(&c, "n3 starved");
}
