//! Linearizability of the Consistent registry, name by name (linearizability is local, so
//! each name is checked on its own), with a Wing–Gong–Lowe search: repeatedly pick an
//! operation that may come first (invoked before every pending mandatory operation
//! returned), apply it to the model, backtrack on a refusal, and remember every
//! (operations done, model state) pair already explored.
//!
//! The model is one owner or none. A failure whose error says the command was not applied
//! (`NoLeader`, `Unreachable`) changed nothing; any other failure may or may not have taken
//! effect, within [`Limits::indeterminate_ms`] of the failure, so it is optional. The
//! cluster also releases a name by itself when membership declares its owner's node
//! unreachable: each `member unreachable cI` line a node printed adds an optional "release
//! what this client owns" operation from just before the line to the grace after it.
//! Nothing else may change the owner. The clients' converged view after the heal is a final read.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Anomaly, Limits};
use crate::history::{DECLARATION_LEAD_MS, History, Outcome, Request};

/// Error kinds that say the command was not applied (see `ConsensusError`).
const NOT_APPLIED: &[&str] = &[
    "Consensus::NoLeader",
    "Consensus::Unreachable",
    "Consensus::ClaimantDown",
];

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
    /// Maybe released whatever `client` owned (a failed unregistration, or a declaration).
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
    /// Sorted by invocation.
    entries: &'a [Entry],
    client_of: &'a HashMap<String, usize>,
    seen: HashSet<(Vec<u64>, Option<String>)>,
    budget: usize,
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

impl Search<'_> {
    /// Moves `lo` past every entry that is done, or optional and no longer placeable
    /// (it returned before an operation already placed was invoked).
    fn advance(&self, done: &[u64], mut lo: usize, max_inv: u64) -> usize {
        while lo < self.entries.len()
            && (is_done(done, lo) || (self.entries[lo].optional && self.entries[lo].resp < max_inv))
        {
            lo += 1;
        }
        lo
    }

    fn run(
        &mut self,
        done: &mut Vec<u64>,
        state: &Option<String>,
        lo: usize,
        max_inv: u64,
        mandatory_left: usize,
    ) -> Verdict {
        if mandatory_left == 0 {
            return Verdict::Linearizable;
        }
        if !self.seen.insert((done.clone(), state.clone())) {
            return Verdict::Violation;
        }
        if self.seen.len() > self.budget {
            return Verdict::Inconclusive;
        }
        // Pending mandatory operations bound which operations may come next; entries are
        // sorted by invocation, so the scan stops at the first one invoked after the bound.
        let mut min_resp = u64::MAX;
        let mut hi = lo;
        for (i, e) in self.entries.iter().enumerate().skip(lo) {
            if e.inv > min_resp {
                break;
            }
            hi = i + 1;
            if !is_done(done, i) && !e.optional {
                min_resp = min_resp.min(e.resp);
            }
        }
        let mut inconclusive = false;
        // Mandatory candidates first: they are the ones that must fit.
        for pass_optional in [false, true] {
            for i in lo..hi {
                let e = &self.entries[i];
                if is_done(done, i) || e.optional != pass_optional || e.inv > min_resp {
                    continue;
                }
                // An optional operation placed after one invoked after it returned would
                // break real-time order.
                if e.optional && e.resp < max_inv {
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
                let max_inv = max_inv.max(e.inv);
                let next_lo = self.advance(done, lo, max_inv);
                let left = mandatory_left - usize::from(!e.optional);
                let verdict = self.run(done, &next, next_lo, max_inv, left);
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

fn search(entries: &mut [Entry], client_of: &HashMap<String, usize>, budget: usize) -> Verdict {
    entries.sort_by_key(|e| (e.inv, e.resp));
    let mandatory = entries.iter().filter(|e| !e.optional).count();
    let mut search = Search {
        entries,
        client_of,
        seen: HashSet::new(),
        budget,
    };
    let mut done = vec![0u64; entries.len().div_ceil(64)];
    search.run(&mut done, &None, 0, 0, mandatory)
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
        if let Some(Outcome::Failed { kind }) = outcome
            && NOT_APPLIED.iter().any(|k| kind.ends_with(k))
        {
            // The error says the command never reached the log: it changed nothing (and if
            // it did, no order will fit).
            continue;
        }
        // An outcome left unknown takes effect, if ever, within the bound after the
        // failure (never completed: at any time).
        let maybe_until = match outcome {
            Some(_) => resp.saturating_add(limits.indeterminate_ms),
            None => u64::MAX,
        };
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
            // A linearizable read sees the model's state at one point of its interval.
            (Request::ReadConsistent { .. }, Some(Outcome::Found { pid }), _) => {
                Step::Read { owner: pid.clone() }
            }
            _ => continue,
        };
        by_name
            .entry(op.request.key().to_string())
            .or_default()
            .push(Entry {
                op: op.id,
                inv: op.invoke_ms,
                resp: if failed { maybe_until } else { resp },
                optional: failed,
                step,
            });
    }
    let final_view = super::converge::converged(history);
    for (name, list) in by_name.iter_mut() {
        for d in &history.declarations {
            list.push(Entry {
                op: 0,
                inv: d.at_ms.saturating_sub(DECLARATION_LEAD_MS),
                resp: d.at_ms.saturating_add(limits.grace_ms),
                optional: true,
                step: Step::ReleaseClient { client: d.client },
            });
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

/// The operations just before the shortest prefix (by invocation) of `list` that no order
/// fits: where the violation shows.
fn excerpt(list: &mut [Entry], client_of: &HashMap<String, usize>, budget: usize) -> Vec<u64> {
    list.sort_by_key(|e| (e.inv, e.resp));
    let (mut ok, mut bad) = (0, list.len());
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        let mut prefix = list[..mid].to_vec();
        match search(&mut prefix, client_of, budget) {
            Verdict::Violation => bad = mid,
            _ => ok = mid,
        }
    }
    let ids: Vec<u64> = list[..bad]
        .iter()
        .rev()
        .map(|e| e.op)
        .filter(|&op| op != 0)
        .take(12)
        .collect();
    ids.into_iter().rev().collect()
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
    for (name, mut list) in entries(history, limits) {
        match search(&mut list, &client_of, limits.search_budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive.push(name),
            Verdict::Violation => anomalies.push(Anomaly::NotLinearizable {
                ops: excerpt(&mut list, &client_of, limits.search_budget),
                name,
            }),
        }
    }
    // A local read may lag (only linearizable reads are in the search), but no read invents
    // an owner.
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
        if let (
            Request::Read { name } | Request::ReadConsistent { name },
            Some(Outcome::Found { pid: Some(pid) }),
        ) = (&op.request, &op.outcome)
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
