//! The figures of a run: per fault kind, the operations attempted during its faults, how
//! many succeeded, the failures by type, and how long the registry and locks were
//! unavailable; beside it the same for the quiet stretches between faults (the baseline).

use std::collections::{BTreeMap, HashMap};

use crate::history::{Fault, History, Op, Request};
use crate::workload::outcome_counts;

/// How long after a fault's heal its unavailability is still measured.
pub const RECOVERY_MS: u64 = 10_000;

/// How long after a heal the quiet baseline starts.
pub const QUIET_AFTER_MS: u64 = 2000;

/// When consensus operations (registrations, unregistrations, consistent reads, lock
/// cycles) succeeded.
pub fn successes(history: &History) -> Vec<u64> {
    let mut at: Vec<u64> = history
        .ops
        .iter()
        .filter(|op| {
            !matches!(
                op.request,
                Request::Read { .. }
                    | Request::Join { .. }
                    | Request::KvSet { .. }
                    | Request::KvGet { .. }
            )
        })
        .filter(|op| matches!(&op.outcome, Some(o) if o.is_ok()))
        .filter_map(|op| op.complete_ms)
        .collect();
    at.sort_unstable();
    at
}

/// The longest stretch of `[from, to]` in which no consensus operation succeeded.
pub fn longest_gap(successes: &[u64], from: u64, to: u64) -> u64 {
    let mut last = from;
    let mut gap = 0;
    for &t in successes.iter().filter(|&&t| t > from && t <= to) {
        gap = gap.max(t - last);
        last = t;
    }
    gap.max(to.saturating_sub(last))
}

/// The stretch a fault's unavailability is measured over: the fault and its recovery,
/// cut at the next fault's start or the end of the workload (`end_of_run`: after it no
/// operation starts, so none could show the cluster available).
pub fn window(faults: &[Fault], i: usize, end_of_run: u64) -> (u64, u64) {
    let f = &faults[i];
    let next = faults.get(i + 1).map_or(end_of_run, |n| n.start_ms);
    (f.start_ms, (f.end_ms + RECOVERY_MS).min(next).max(f.end_ms))
}

/// The first fault operation `op` ran into: one whose stretch `[start, end]` overlaps the
/// operation's `[invoke, complete]` (a pending operation runs to the end of the run). An
/// operation invoked during a fault meets that one; one invoked before a fault and still
/// running when it began (a lock cycle invoked in a quiet stretch whose unlock came after
/// the next fault started) meets that fault, not the quiet stretch.
pub fn fault_met(op: &Op, faults: &[Fault]) -> Option<usize> {
    let end = op.complete_ms.unwrap_or(u64::MAX);
    faults
        .iter()
        .position(|f| op.invoke_ms <= f.end_ms && end >= f.start_ms)
}

/// One row of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// Faults of this kind.
    pub faults: usize,
    /// Operations that ran into them ([`fault_met`]); for the quiet baseline, operations
    /// that began and ended in a quiet stretch.
    pub attempted: usize,
    /// Of those, succeeded.
    pub succeeded: usize,
    /// Of those, failed, by error type.
    pub failed: HashMap<String, usize>,
    /// The unavailability of each fault, in ms.
    pub unavailable_ms: Vec<u64>,
}

/// The summary per fault kind (each operation counted under the first fault it ran into,
/// [`fault_met`]), and the quiet baseline (operations that began and ended in a stretch
/// between faults, from [`QUIET_AFTER_MS`] after a heal) under the key `none`.
pub fn per_kind(history: &History, end_of_run: u64) -> BTreeMap<String, Row> {
    let ok = successes(history);
    let met: Vec<Option<usize>> = history
        .ops
        .iter()
        .map(|op| fault_met(op, &history.faults))
        .collect();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (i, f) in history.faults.iter().enumerate() {
        let (from, to) = window(&history.faults, i, end_of_run);
        let ops = history
            .ops
            .iter()
            .zip(&met)
            .filter(|(_, met)| **met == Some(i))
            .map(|(op, _)| op);
        let (attempted, succeeded, failed) = outcome_counts(ops);
        let row = rows.entry(f.kind.clone()).or_default();
        row.faults += 1;
        row.attempted += attempted;
        row.succeeded += succeeded;
        for (k, n) in failed {
            *row.failed.entry(k).or_default() += n;
        }
        row.unavailable_ms.push(longest_gap(&ok, from, to));
    }
    // Quiet stretches: from QUIET_AFTER_MS after a heal to the next fault.
    let mut quiet = Row::default();
    let mut from = 0;
    for f in &history.faults {
        if f.start_ms > from + 1000 {
            quiet.faults += 1;
            quiet
                .unavailable_ms
                .push(longest_gap(&ok, from, f.start_ms));
            let ops = history
                .ops
                .iter()
                .zip(&met)
                .filter(|(op, met)| met.is_none() && op.invoke_ms >= from)
                .filter(|(op, _)| op.invoke_ms < f.start_ms)
                .map(|(op, _)| op);
            let (attempted, succeeded, failed) = outcome_counts(ops);
            quiet.attempted += attempted;
            quiet.succeeded += succeeded;
            for (k, n) in failed {
                *quiet.failed.entry(k).or_default() += n;
            }
        }
        from = f.end_ms + QUIET_AFTER_MS;
    }
    rows.insert("none".into(), quiet);
    rows
}

/// The `p`th percentile (0..=100) of `values`, nearest rank; 0 when empty.
pub fn percentile(values: &[u64], p: u64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (p as usize * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// The text table.
pub fn render(rows: &BTreeMap<String, Row>) -> String {
    let mut out = format!(
        "{:<26} {:>6} {:>9} {:>9} {:>8} {:>12} {:>12}  failures by type\n",
        "fault kind", "faults", "attempted", "succeeded", "failed", "unavail p50", "unavail max"
    );
    for (kind, row) in rows {
        let failed: usize = row.failed.values().sum();
        let mut kinds: Vec<(&String, &usize)> = row.failed.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let label = if kind == "none" {
            "none (quiet baseline)"
        } else {
            kind
        };
        out.push_str(&format!(
            "{:<26} {:>6} {:>9} {:>9} {:>8} {:>10}ms {:>10}ms  {}\n",
            label,
            row.faults,
            row.attempted,
            row.succeeded,
            failed,
            percentile(&row.unavailable_ms, 50),
            row.unavailable_ms.iter().max().copied().unwrap_or(0),
            kinds.join(" ")
        ));
    }
    out
}

/// How often nodes declared a client unreachable, and how many of those declarations came
/// while no fault touched that client (its node or process) nor the node that declared it.
/// Client `cK` sits beside node `nK`, on the same side of every partition, so a fault that
/// cut off `nK`'s side (its `clients` hold K) explains what `nK` declared about the clients
/// on the other side. A node stopped by a fault may print, once it runs again, what the
/// others declared while it was stopped: the fault explains those lines too.
pub fn declarations(history: &History) -> (usize, usize) {
    let unexplained = history
        .declarations
        .iter()
        .filter(|d| {
            let declarer = side_of(&d.by);
            !history.faults.iter().any(|f| {
                let touched = f.clients.contains(&d.client)
                    || declarer
                        .is_some_and(|k| f.clients.contains(&k) || f.paused_nodes.contains(&k));
                touched && f.start_ms <= d.at_ms && d.at_ms <= f.end_ms + RECOVERY_MS
            })
        })
        .count();
    (history.declarations.len(), unexplained)
}

/// The index K of node `nK` or client `cK` (any incarnation): the side of partitions both
/// are on.
fn side_of(name: &str) -> Option<usize> {
    match name.strip_prefix('n') {
        Some(k) => k.parse().ok(),
        None => crate::history::parse_client_name(name).map(|(k, _)| k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    #[test]
    fn the_longest_gap_counts_the_edges() {
        assert_eq!(longest_gap(&[], 100, 400), 300);
        assert_eq!(longest_gap(&[150, 160, 390], 100, 400), 230);
        assert_eq!(longest_gap(&[50, 500], 100, 400), 300);
        assert_eq!(longest_gap(&[120, 400], 100, 400), 280);
    }

    fn op(id: u64, span: (u64, Option<u64>), outcome: Outcome) -> Op {
        Op {
            id,
            client: 1,
            incarnation: 0,
            request: Request::Lock {
                name: "l".into(),
                hold_ms: 100,
            },
            pid: None,
            invoke_ms: span.0,
            complete_ms: span.1,
            outcome: span.1.map(|_| outcome),
            hold: None,
        }
    }

    fn fault(span: (u64, u64)) -> Fault {
        Fault {
            kind: "pause-leader".into(),
            detail: String::new(),
            clients: Default::default(),
            paused_clients: Default::default(),
            paused_nodes: Default::default(),
            start_ms: span.0,
            end_ms: span.1,
        }
    }

    #[test]
    fn the_last_faults_unavailability_ends_with_the_workload() {
        // The cluster answered 300 ms into the fault; then the workload stopped at 5,000 ms
        // and only the final heal's snapshots ran, at 14,000 ms.
        let history = History {
            ops: vec![op(1, (1000, Some(1300)), Outcome::Locked { token: 1 })],
            faults: vec![fault((1000, 4900))],
            stopped_ms: 5000,
            healed_ms: 14_000,
            ..History::default()
        };
        let rows = per_kind(&history, history.workload_end_ms());
        assert_eq!(rows["pause-leader"].unavailable_ms, [3700]);
        // Measured to the heal instead, the idle end would read as 12.7 s unavailable.
        let rows = per_kind(&history, history.healed_ms);
        assert_eq!(rows["pause-leader"].unavailable_ms, [12_700]);
        // A history saved before the stop was recorded ends at its heal.
        let old = History {
            stopped_ms: 0,
            ..history
        };
        assert_eq!(old.workload_end_ms(), 14_000);
    }

    #[test]
    fn an_operation_that_runs_into_a_fault_counts_under_it_not_the_quiet_baseline() {
        let unlock_timeout = Outcome::Failed {
            kind: "Unlock::Consensus::Timeout".into(),
        };
        let history = History {
            ops: vec![
                // Invoked and done in the quiet stretch before the first fault.
                op(1, (100, Some(900)), Outcome::Locked { token: 1 }),
                // Invoked in that quiet stretch, its unlock answered after the fault began.
                op(2, (800, Some(4500)), unlock_timeout.clone()),
                // Invoked during the fault.
                op(3, (2000, Some(2100)), Outcome::Locked { token: 3 }),
                // Invoked in the 2 s after the heal: neither a fault's nor quiet.
                op(4, (6500, Some(6600)), Outcome::Locked { token: 4 }),
                // Quiet again, but still pending when the run ended: it met the last fault.
                op(5, (9000, None), Outcome::Locked { token: 5 }),
            ],
            faults: vec![fault((1500, 6000)), fault((10_000, 12_000))],
            ..History::default()
        };
        assert_eq!(fault_met(&history.ops[0], &history.faults), None);
        assert_eq!(fault_met(&history.ops[1], &history.faults), Some(0));
        assert_eq!(fault_met(&history.ops[2], &history.faults), Some(0));
        assert_eq!(fault_met(&history.ops[3], &history.faults), None);
        assert_eq!(fault_met(&history.ops[4], &history.faults), Some(1));
        let rows = per_kind(&history, 20_000);
        let quiet = &rows["none"];
        assert_eq!((quiet.attempted, quiet.succeeded), (1, 1));
        assert!(quiet.failed.is_empty(), "{:?}", quiet.failed);
        let paused = &rows["pause-leader"];
        assert_eq!(
            (paused.faults, paused.attempted, paused.succeeded),
            (2, 3, 1)
        );
        assert_eq!(paused.failed["Unlock::Consensus::Timeout"], 1);
        assert_eq!(paused.failed["pending"], 1);
    }

    #[test]
    fn a_declaration_by_a_cut_off_or_stopped_node_is_explained_by_its_fault() {
        let declared = |by: &str, client, at_ms| crate::history::Declaration {
            at_ms,
            by: by.into(),
            client,
            incarnation: 0,
        };
        let history = History {
            // n3 and n4 (with c3 and c4) cut off from the rest from 1 s to 5 s.
            faults: vec![
                Fault {
                    clients: [3, 4].into(),
                    ..fault((1000, 5000))
                },
                // n1 stopped from 20 s to 26 s.
                Fault {
                    paused_nodes: [1].into(),
                    ..fault((20_000, 26_000))
                },
            ],
            declarations: vec![
                // The minority declares the majority's client: explained by the partition.
                declared("n4", 2, 3000),
                // The majority declares the minority's client: explained.
                declared("n1", 3, 3000),
                // The majority declares its own client during the partition: not explained.
                declared("n1", 2, 3000),
                // A minority node, long after the heal: not explained.
                declared("n4", 2, 5000 + RECOVERY_MS + 1),
                // The stopped node, just after it runs again: explained by its pause.
                declared("n1", 3, 26_008),
                // Another node during that pause: not explained.
                declared("n2", 3, 23_000),
            ],
            ..History::default()
        };
        assert_eq!(declarations(&history), (6, 3));
        assert_eq!(side_of("n4"), Some(4));
        assert_eq!(side_of("c2-1"), Some(2));
        assert_eq!(side_of("x"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 99), 0);
        assert_eq!(percentile(&[5], 99), 5);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v, 50), 50);
    }
}
