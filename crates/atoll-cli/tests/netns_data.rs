//! Cluster data with real `atoll node` processes, each in its own network namespace: every
//! node's built-in `echo` is in the process table and offers the service `echo`; a node
//! isolated past failure detection drops out of the others' tables and comes back after
//! the heal; a killed node's entries go everywhere. Skips where namespaces cannot be made
//! (not root), unless `ATOLL_REQUIRE_NETNS` is set.

mod netns;

use netns::Cluster;

/// The nodes whose processes node's table holds, in name order.
fn table_nodes(s: &serde_json::Value) -> Vec<String> {
    s["data"]["per_node"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[0].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The nodes offering `service`, in name order.
fn offers(s: &serde_json::Value, service: &str) -> Vec<String> {
    let mut nodes: Vec<String> = s["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sv| sv["name"] == service)
        .flat_map(|sv| sv["offers"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o["node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn the_process_table_and_services_follow_an_isolated_and_a_killed_node() {
    let Some(mut c) = Cluster::with_voters("data", 21, 4, 3) else {
        return;
    };
    c.start_all();
    let names = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| c.name(i)).collect()
    };
    let (all, three) = (names(1..=4), names(1..=3));
    let sees = |s: &serde_json::Value, nodes: &[String]| {
        table_nodes(s) == nodes && offers(s, "echo") == nodes
    };
    for i in 1..=4 {
        c.wait_status(i, "every node's echo in the table and offered", |s| {
            sees(s, &all)
        });
    }

    // Cut off past failure detection: the others drop its entries; after the heal it is
    // back in every table (as a new generation) and sees every other node again.
    c.isolate(4);
    for i in 1..=3 {
        c.wait_status(i, "the isolated node's entries dropped", |s| {
            sees(s, &three)
        });
    }
    c.heal();
    for i in 1..=4 {
        c.wait_status(i, "every table whole again after the heal", |s| {
            sees(s, &all)
        });
    }

    // Killed: its entries go everywhere.
    c.kill(4, "KILL");
    for i in 1..=3 {
        c.wait_status(i, "the killed node's entries gone", |s| sees(s, &three));
    }
}
