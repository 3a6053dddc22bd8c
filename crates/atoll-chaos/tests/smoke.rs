//! A short chaos pass: the real binary, real `atoll node` processes in network namespaces,
//! one seed, about 25 s of faults. Needs root; skips without it unless
//! `ATOLL_REQUIRE_NETNS` is set (as in CI), then fails instead.

use std::process::Command;

const REQUIRE: &str = "ATOLL_REQUIRE_NETNS";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            == Some("0")
    })
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Says why the pass cannot run here; panics if it must run.
fn skip(why: &str) {
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set, but the chaos pass cannot run here: {why}"
    );
    eprintln!("skipping: {why} (set {REQUIRE}=1 to make this a failure)");
}

#[test]
fn a_short_chaos_pass_finds_no_anomaly() {
    if !is_root() {
        return skip("needs root for network namespaces (uid is not 0)");
    }
    for tool in ["ip", "nft", "tc"] {
        if !have(tool) {
            return skip(&format!("needs `{tool}`"));
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_atoll-chaos"))
        .args(["--minutes", "0.4", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "atoll-chaos failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let json = last
        .strip_prefix("BENCH ")
        .unwrap_or_else(|| panic!("the last line is not a BENCH line: {last:?}\n{stdout}"));
    let bench: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(bench["bench"], "chaos");
    assert_eq!(bench["anomalies"], 0, "{stdout}");
    assert!(bench["ops"].as_u64().unwrap() > 50, "{stdout}");
    assert!(bench["faults"].as_u64().unwrap() >= 1, "{stdout}");
    assert!(
        stdout.contains("none (quiet baseline)"),
        "no summary table:\n{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("BENCH ")).count(),
        1,
        "{stdout}"
    );
}

#[test]
fn without_root_it_says_so_and_exits_2() {
    if is_root() {
        // As root, run it as another user when `setpriv` exists; else nothing to see here.
        if !have("setpriv") {
            return;
        }
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_atoll-chaos"))
            .args(["--minutes", "0.1"])
            .output()
            .unwrap();
        check_refusal(&out);
    } else {
        let out = Command::new(env!("CARGO_BIN_EXE_atoll-chaos"))
            .args(["--minutes", "0.1"])
            .output()
            .unwrap();
        check_refusal(&out);
    }
}

fn check_refusal(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
