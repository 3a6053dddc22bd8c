//! Linearizability of the Consistent registry, name by name (linearizability is local, so
//! each name is checked on its own), with a Wing–Gong–Lowe search: repeatedly pick an
//! operation that may come first (invoked before every pending mandatory operation
//! returned), apply it to the model, backtrack on a refusal, and remember every
//! (operations done, model state) pair already explored.
//!
//! The model is one owner or none. Failed operations may or may not have taken effect, so
//! they are optional. The cluster also releases a name by itself when its owner's node is
//! declared unreachable: each fault that touched a client adds an optional "release what
//! this client owns" operation spanning the fault and the grace after it. Nothing else may
//! change the owner. The clients' converged view after the heal is a final read.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Anomaly, Limits};
use crate::history::{History, Outcome, Request};

/// What one operation does to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Registered `pid`: the name was free.
    Register { pid: String },
    /// Answered `Taken`: `owner` held it.
    Taken { owner: String },
    /// Maybe registered `pid` (failed): if free, `pid` takes it.
    MaybeRegister { pid: String },
    /// Unregistered `pid`, which held it.
    Unregister { pid: String },
    /// Maybe released whatever `client` owned (a failed unregistration, or a fault).
    ReleaseClient { client: usize },
    /// Read the state.
    Read { owner: Option<String> },
}

#[derive(Debug, Clone)]
struct Entry {
    op: u64,
    inv: u64,
    /// `u64::MAX` when it may take effect at any time after `inv`.
    resp: u64,
    optional: bool,
    step: Step,
}

/// Applies `step` to `state`: the next state, or `None` if the model refuses it.
fn apply(
    state: &Option<String>,
    step: &Step,
    client_of: &HashMap<String, usize>,
) -> Option<Option<String>> {
    match step {
        Step::Register { pid } => state.is_none().then(|| Some(pid.clone())),
        Step::Taken { owner } => (state.as_ref() == Some(owner)).then(|| state.clone()),
        Step::MaybeRegister { pid } => Some(state.clone().or_else(|| Some(pid.clone()))),
        Step::Unregister { pid } => (state.as_ref() == Some(pid)).then_some(None),
        Step::ReleaseClient { client } => match state {
            Some(owner) if client_of.get(owner) == Some(client) => Some(None),
            _ => Some(state.clone()),
        },
        Step::Read { owner } => (owner == state).then(|| state.clone()),
    }
}

/// The result of one name's search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Some order fits the model.
    Linearizable,
    /// No order fits.
    Violation,
    /// The search ran out of budget.
    Inconclusive,
}

struct Search<'a> {
    entries: &'a [Entry],
    client_of: &'a HashMap<String, usize>,
    seen: HashSet<(Vec<u64>, Option<String>)>,
    budget: usize,
}

impl Search<'_> {
    fn run(&mut self, done: &mut Vec<u64>, state: &Option<String>) -> Verdict {
        let n = self.entries.len();
        let is_done = |done: &Vec<u64>, i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // Pending mandatory operations bound which operations may come next.
        let mut min_resp = u64::MAX;
        let mut all_mandatory_done = true;
        let mut max_inv_done = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if is_done(done, i) {
                max_inv_done = max_inv_done.max(e.inv);
            } else if !e.optional {
                all_mandatory_done = false;
                min_resp = min_resp.min(e.resp);
            }
        }
        if all_mandatory_done {
            return Verdict::Linearizable;
        }
        if !self.seen.insert((done.clone(), state.clone())) {
            return Verdict::Violation;
        }
        if self.seen.len() > self.budget {
            return Verdict::Inconclusive;
        }
        let mut inconclusive = false;
        // Mandatory candidates first: they are the ones that must fit.
        for pass_optional in [false, true] {
            for i in 0..n {
                let e = &self.entries[i];
                if is_done(done, i) || e.optional != pass_optional || e.inv > min_resp {
                    continue;
                }
                // An optional operation placed after one invoked after it returned would
                // break real-time order.
                if e.optional && e.resp < max_inv_done {
                    continue;
                }
                let Some(next) = apply(state, &e.step, self.client_of) else {
                    continue;
                };
                // An optional operation that changes nothing never helps: leaving it out
                // constrains nothing.
                if e.optional && next == *state {
                    continue;
                }
                done[i / 64] |= 1 << (i % 64);
                let verdict = self.run(done, &next);
                done[i / 64] &= !(1 << (i % 64));
                match verdict {
                    Verdict::Linearizable => return Verdict::Linearizable,
                    Verdict::Inconclusive => inconclusive = true,
                    Verdict::Violation => {}
                }
            }
        }
        if inconclusive {
            Verdict::Inconclusive
        } else {
            Verdict::Violation
        }
    }
}

fn search(entries: &[Entry], client_of: &HashMap<String, usize>, budget: usize) -> Verdict {
    let mut search = Search {
        entries,
        client_of,
        seen: HashSet::new(),
        budget,
    };
    let mut done = vec![0u64; entries.len().div_ceil(64)];
    search.run(&mut done, &None)
}

/// Each name's operations as model steps.
fn entries(history: &History, limits: &Limits) -> BTreeMap<String, Vec<Entry>> {
    let mut by_name: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for op in &history.ops {
        let (resp, outcome) = match (op.complete_ms, &op.outcome) {
            (Some(at), Some(outcome)) => (at, Some(outcome)),
            _ => (u64::MAX, None),
        };
        let failed = !matches!(outcome, Some(o) if o.is_ok());
        let step = match (&op.request, outcome, &op.pid) {
            (Request::Register { .. }, Some(Outcome::Registered), Some(pid)) => {
                Step::Register { pid: pid.clone() }
            }
            (Request::Register { .. }, Some(Outcome::Taken { owner }), _) => Step::Taken {
                owner: owner.clone(),
            },
            (Request::Register { .. }, _, Some(pid)) => Step::MaybeRegister { pid: pid.clone() },
            (Request::Unregister { .. }, Some(Outcome::Unregistered { pid: Some(pid) }), _) => {
                Step::Unregister { pid: pid.clone() }
            }
            // Decided from the client's own view (which may lag): changes nothing.
            (Request::Unregister { .. }, Some(Outcome::Unregistered { pid: None }), _) => continue,
            (Request::Unregister { .. }, _, _) => Step::ReleaseClient { client: op.client },
            _ => continue,
        };
        by_name
            .entry(op.request.key().to_string())
            .or_default()
            .push(Entry {
                op: op.id,
                inv: op.invoke_ms,
                resp: if failed { u64::MAX } else { resp },
                optional: failed,
                step,
            });
    }
    let final_view = super::converge::converged(history);
    for (name, list) in by_name.iter_mut() {
        for fault in &history.faults {
            for &client in &fault.clients {
                list.push(Entry {
                    op: 0,
                    inv: fault.start_ms,
                    resp: fault.end_ms.saturating_add(limits.grace_ms),
                    optional: true,
                    step: Step::ReleaseClient { client },
                });
            }
        }
        if let Some(round) = final_view
            && let Some(owner) = round.first().and_then(|s| s.names.get(name))
        {
            let at = round.iter().map(|s| s.at_ms).max().unwrap_or(0);
            list.push(Entry {
                op: 0,
                inv: at,
                resp: at,
                optional: false,
                step: Step::Read {
                    owner: owner.clone(),
                },
            });
        }
    }
    by_name
}

/// Checks every name; returns the anomalies and the names whose search ran out of budget.
pub fn check(history: &History, limits: &Limits) -> (Vec<Anomaly>, Vec<String>) {
    let client_of: HashMap<String, usize> = history
        .ops
        .iter()
        .filter_map(|op| Some((op.pid.clone()?, op.client)))
        .collect();
    let mut anomalies = Vec::new();
    let mut inconclusive = Vec::new();
    for (name, list) in entries(history, limits) {
        match search(&list, &client_of, limits.search_budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive.push(name),
            Verdict::Violation => anomalies.push(Anomaly::NotLinearizable {
                ops: list.iter().map(|e| e.op).filter(|&op| op != 0).collect(),
                name,
            }),
        }
    }
    // A local read may lag, but never invents an owner.
    let mut registered: HashMap<(&str, &str), u64> = HashMap::new();
    for op in &history.ops {
        if let (Request::Register { name }, Some(pid)) = (&op.request, &op.pid) {
            registered
                .entry((name.as_str(), pid.as_str()))
                .and_modify(|t| *t = (*t).min(op.invoke_ms))
                .or_insert(op.invoke_ms);
        }
    }
    for op in &history.ops {
        if let (Request::Read { name }, Some(Outcome::Found { pid: Some(pid) })) =
            (&op.request, &op.outcome)
        {
            let before = op.complete_ms.unwrap_or(u64::MAX);
            if registered
                .get(&(name.as_str(), pid.as_str()))
                .is_none_or(|&t| t > before)
            {
                anomalies.push(Anomaly::PhantomRead {
                    name: name.clone(),
                    op: op.id,
                    pid: pid.clone(),
                });
            }
        }
    }
    (anomalies, inconclusive)
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
