//! The node's status API, metrics and status page, read from real `atoll node` processes
//! (the page in headless Chromium).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn status_api_and_metrics_show_members_raft_names_and_a_node_going_down() {
    let tmp = TempDir::new("status");
    let dir = tmp.path();
    let (mut nodes, http) = start_voters_with_http(dir);

    // Every member active and a leader known, as v1 sees it.
    let s = wait_status(dir, &http[0], "3 active members and a leader", |s| {
        ["v1", "v2", "v3"]
            .iter()
            .all(|n| member_state(s, n).as_deref() == Some("active"))
            && s["raft"]["leader"].is_string()
    });
    assert_eq!(s["name"], "v1");
    assert_eq!(s["raft"]["voter"], true);
    assert_eq!(s["raft"]["voters"].as_array().unwrap().len(), 3);
    let leader = s["raft"]["leader"].as_str().unwrap().to_string();
    let leader_status = status_json(
        dir,
        &http[["v1", "v2", "v3"]
            .iter()
            .position(|n| *n == leader)
            .unwrap()],
    );
    assert_eq!(leader_status["raft"]["role"], "leader");
    assert!(leader_status["raft"]["term"].as_u64().unwrap() >= 1);
    // The built-in `echo` process is a Local name on every node.
    let echo: Vec<_> = s["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] == "echo")
        .collect();
    assert_eq!(echo.len(), 1, "{s:#}");
    assert_eq!(echo[0]["scope"], "local");
    assert_eq!(echo[0]["node"], "v1");

    // The tables, once v2 has heard from the leader too.
    wait_status(dir, &http[1], "v2 knows the leader", |s| {
        s["raft"]["leader"] == leader.as_str()
    });
    let text = ok(dir, &["status", "--http", &http[1]]);
    assert!(text.starts_with("node v2 id="), "{text}");
    // The socket's buffer as granted; a cap below the ask is called out.
    let buffer = &status_json(dir, &http[1])["udp_buffer"];
    let (asked, granted) = (buffer["asked"].as_u64(), buffer["granted"].as_u64());
    assert!(granted.is_some_and(|g| g > 0), "{buffer}");
    assert_eq!(
        buffer["capped"].as_bool(),
        Some(granted < asked),
        "{buffer}"
    );
    assert_eq!(
        text.contains("UDP receive buffer capped"),
        granted < asked,
        "{text}"
    );
    for needle in [
        "MEMBERS",
        "v1 ",
        "v2*",
        "v3 ",
        "active",
        "RAFT",
        "role=",
        &format!("leader={leader}"),
        "NAMES",
        "echo",
        "local",
        "GROUPS",
        "SERVICES",
        "PROCESS TABLE",
        "LOCKS",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }

    // The JSON API: known things answer, unknown ones are 404 with a JSON error.
    let get = |path: &str| atoll_cli::status::get(&http[0], path).unwrap();
    let (code, body) = get("/api/nodes/v2");
    assert_eq!(code, 200, "{body}");
    let v2: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2["state"], "active");
    let (code, body) = get("/api/nodes/v2/processes");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"echo\""), "{body}");
    for path in [
        "/api/nodes/nowhere",
        "/api/nodes/nowhere/processes",
        "/api/names/nobody",
        "/api/groups/none",
        "/api/locks/none",
        "/no/such/path",
    ] {
        let (code, body) = get(path);
        assert_eq!(code, 404, "{path}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(e["error"].is_string(), "{path}: {body}");
    }
    let (code, body) = get("/api/names/echo");
    assert_eq!(code, 200, "{body}");
    // Cluster data: every node's echo in the process table and offering the echo service.
    let echoes = |body: &str| -> Vec<String> {
        let all: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut nodes: Vec<String> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["agent_type"] == "Echo")
            .map(|p| p["node"].as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        nodes
    };
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    wait_status(
        dir,
        &http[0],
        "every node's echo in the table and its service",
        |s| {
            len(&s["data"]["per_node"]) == 3
                && len(&s["services"]) == 1
                && len(&s["services"][0]["offers"]) == 3
        },
    );
    assert_eq!(echoes(&get("/api/processes").1), ["v1", "v2", "v3"]);
    let (code, body) = get("/api/services/echo");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.matches("\"pid\"").count(), 3, "{body}");
    assert_eq!(get("/api/services/none").0, 404);
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    for needle in [
        "atoll_members{state=\"active\"} 3",
        "# TYPE atoll_request_rtt_seconds histogram",
        "atoll_request_rtt_seconds_bucket{le=\"+Inf\"}",
        "atoll_raft_term ",
        "atoll_raft_commit_index ",
        // `echo` and the grain router, `atoll.grains`.
        "atoll_names{scope=\"local\"} 2",
        "atoll_peer_frames_sent_total{peer=\"v2\"}",
        "atoll_peer_rtt_seconds{peer=\"v3\"}",
        "atoll_udp_receive_buffer_bytes ",
        "atoll_udp_receive_buffer_requested_bytes ",
        "atoll_processes ",
        "atoll_mailbox_longest ",
        "atoll_process_table_entries ",
        "atoll_services 1",
        "atoll_data_deltas_sent_total ",
    ] {
        assert!(metrics.contains(needle), "no {needle:?} in:\n{metrics}");
    }
    // Grains: two activated from a member in this process, placed on the nodes (never on
    // the caller, which hosts none), shown by every node's API, status, metrics and attach.
    let client = GrainClient::start(dir, &nodes);
    use atoll_cli::grains::{Counter, CounterMsg, DurableCounter};
    assert_eq!(client.call::<Counter>("c1", CounterMsg::Add(2)), 2);
    assert_eq!(client.call::<Counter>("c1", CounterMsg::Add(3)), 5);
    assert_eq!(
        client.call::<DurableCounter>("d1", CounterMsg::Add(7)),
        Ok(7)
    );
    let grains_of = |addr: &str| -> serde_json::Value {
        let (code, body) = atoll_cli::status::get(addr, "/api/grains").unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let until = Instant::now() + DEADLINE;
    let view = loop {
        let view = grains_of(&http[2]);
        if len(&view["grains"]) == 2 {
            break view;
        }
        assert!(Instant::now() < until, "{view:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let grain = |view: &serde_json::Value, key: &str| {
        view["grains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {key}: {view:#}"))
    };
    let c1 = grain(&view, "c1");
    assert_eq!(c1["grain_type"], "counter");
    assert_eq!(c1["durability"], "Volatile");
    assert!(c1["epoch"].as_u64().unwrap() > 0, "{c1}");
    let c1_node = c1["node"].as_str().unwrap().to_string();
    assert!(["v1", "v2", "v3"].contains(&c1_node.as_str()), "{c1}");
    let d1 = grain(&view, "d1");
    assert_eq!(d1["grain_type"], "durable-counter");
    assert_eq!(d1["durability"], "LocalExclusive");
    // The hosting node counts the activation.
    let host_http = &http[["v1", "v2", "v3"]
        .iter()
        .position(|n| *n == c1_node)
        .unwrap()];
    let host_view = grains_of(host_http);
    assert!(
        host_view["activations"].as_u64().unwrap() >= 1,
        "{host_view}"
    );
    assert!(host_view["active"].as_u64().unwrap() >= 1, "{host_view}");
    let (code, body) = get(&format!("/api/nodes/{c1_node}/grains"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"c1\""), "{body}");
    assert_eq!(get("/api/nodes/nowhere/grains").0, 404);
    let text = ok(dir, &["status", "--http", &http[1]]);
    let section = text
        .split("\nGRAINS\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        section.contains("NODE") && section.contains("DURABILITY"),
        "{text}"
    );
    let row = section
        .lines()
        .find(|l| l.contains(" c1 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains(&c1_node) && row.contains("counter") && row.contains("Volatile"),
        "{text}"
    );
    let json = status_json(dir, &http[1]);
    assert_eq!(len(&json["grains"]["grains"]), 2, "{json:#}");
    let listing = ok(dir, &["attach", &c1_node, "--http", &http[0], "--once"]);
    let grain_part = listing
        .split(&format!("node {c1_node}: "))
        .nth(2)
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        grain_part.contains("grains") && grain_part.contains("c1"),
        "{listing}"
    );
    let (_, host_metrics) = atoll_cli::status::get(host_http, "/metrics").unwrap();
    for needle in [
        "# TYPE atoll_grain_activations_total counter",
        "atoll_grain_deactivations_total ",
        "atoll_grains_active ",
        "atoll_grains_cluster{type=\"counter\"} 1",
        "atoll_grains_cluster{type=\"durable-counter\"} 1",
    ] {
        assert!(
            host_metrics.contains(needle),
            "no {needle:?} in:\n{host_metrics}"
        );
    }
    assert!(
        !host_metrics.contains("atoll_grain_activations_total 0"),
        "{host_metrics}"
    );
    drop(client);

    let (code, page) = get("/");
    assert_eq!(code, 200);
    assert!(page.contains("/api/status"), "{page}");

    // Live attach, through v1, to v2's processes; an unknown node is a clear error.
    let listing = ok(
        dir,
        &[
            "attach", "v2", "--http", &http[0], "--once", "--sort", "handled",
        ],
    );
    assert!(
        listing.starts_with("node v2: ") && listing.contains("sorted by handled"),
        "{listing}"
    );
    let echo_row = listing
        .lines()
        .find(|l| l.contains(" echo "))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(echo_row.contains("Echo"), "{listing}");
    let out = atoll(dir, &["attach", "nowhere", "--http", &http[0], "--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no reachable node named \"nowhere\""),
        "{}",
        stderr(&out)
    );

    // v3 dies: v1 reports it unreachable, and asking v3 is a clear error, not a hang.
    nodes[2].child.kill().unwrap();
    nodes[2].wait();
    wait_status(dir, &http[0], "v3 unreachable", |s| {
        member_state(s, "v3").as_deref() == Some("unreachable")
    });
    let started = Instant::now();
    let out = atoll(dir, &["status", "--http", &http[2]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach the node at {}", http[2])),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    for node in &nodes[..2] {
        node.signal("-TERM");
    }
    for node in &mut nodes[..2] {
        assert_eq!(node.wait().code(), Some(0));
    }
}

/// The browser to check the status page with, if this machine has one.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The status page at `url` as headless Chromium renders it (the DOM after its script ran).
fn rendered_page(browser: &str, url: &str) -> String {
    let profile = TempDir::new("chromium");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{browser}: {}", stderr(&out));
    stdout(&out)
}

/// Renders the page until `done` accepts it.
fn wait_page(browser: &str, url: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let page = rendered_page(browser, url);
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < until,
            "not within {DEADLINE:?}: {what}\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_status_page_shows_the_cluster_in_a_browser_and_a_node_going_down() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("ATOLL_REQUIRE_BROWSER").is_none(),
            "ATOLL_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipping: no chromium (apt-get install chromium chromium-driver)");
        return;
    };
    let tmp = TempDir::new("page");
    let dir = tmp.path();
    let (mut nodes, http) = start_voters_with_http(dir);
    let url = format!("http://{}/", http[0]);
    let row = |name: &str, state: &str| format!("data-node=\"{name}\" data-state=\"{state}\"");

    let page = wait_page(browser, &url, "three active nodes and a leader", |p| {
        ["v1", "v2", "v3"]
            .iter()
            .all(|n| p.contains(&row(n, "active")))
            && p.contains("data-key=\"leader\"")
            && !p.contains("<td>unknown</td>")
            && p.contains("data-service=\"echo\" data-node=\"v3\"")
    });
    assert!(page.contains("data-ready=\"1\""), "{page}");
    let capped = status_json(dir, &http[0])["udp_buffer"]["capped"] == true;
    assert!(
        page.contains(&format!("data-udp-capped=\"{capped}\"")),
        "{page}"
    );
    assert!(page.contains("v1 (this node)"), "{page}");
    assert!(page.contains("data-name=\"echo\""), "{page}");
    assert!(
        page.contains("<circle"),
        "the cluster picture is drawn: {page}"
    );
    let client = GrainClient::start(dir, &nodes);
    client.call::<atoll_cli::grains::Counter>("page", atoll_cli::grains::CounterMsg::Add(1));
    let page = wait_page(browser, &url, "the grain on the page", |p| {
        p.contains("data-grain=\"counter/page\"")
    });
    assert!(page.contains("Volatile"), "{page}");
    assert!(page.contains("this node:"), "{page}");
    drop(client);

    nodes[2].child.kill().unwrap();
    nodes[2].wait();
    wait_page(browser, &url, "v3 shown unreachable", |p| {
        p.contains(&row("v3", "unreachable")) && p.contains(&row("v2", "active"))
    });
    for node in &nodes[..2] {
        node.signal("-TERM");
    }
    for node in &mut nodes[..2] {
        assert_eq!(node.wait().code(), Some(0));
    }
}
