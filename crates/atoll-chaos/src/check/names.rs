//! Linearizability of the Consistent registry, name by name (linearizability is local, so
//! each name is checked on its own), with the search of [`super::wgl`].
//!
//! The model is one owner or none. A failure whose error says the command was not applied
//! (`NoLeader`, `Unreachable`) changed nothing; any other failure may or may not have taken
//! effect, within [`Limits::indeterminate_ms`] of the failure, so it is optional. The
//! cluster also releases a name by itself when membership declares its owner's node
//! unreachable: each `member unreachable cI` line a node printed adds an optional "release
//! what this client owns" operation from just before the line to the grace after it.
//! Nothing else may change the owner. The clients' converged view after the heal is a final read.

use std::collections::{BTreeMap, HashMap};

use super::wgl::{Entry, Model, Verdict, excerpt, search};
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
    ReleaseClient { client: (usize, u32) },
    /// Read the state.
    Read { owner: Option<String> },
}

/// The single-owner registry model; `client_of` maps each process to its client process
/// (client, incarnation), for the releases a declaration causes.
struct Registry<'a> {
    client_of: &'a HashMap<String, (usize, u32)>,
}

impl Model for Registry<'_> {
    type State = Option<String>;
    type Step = Step;

    fn apply(&self, state: &Option<String>, step: &Step) -> Option<Option<String>> {
        match step {
            Step::Register { pid } => state.is_none().then(|| Some(pid.clone())),
            Step::Taken { owner } => (state.as_ref() == Some(owner)).then(|| state.clone()),
            Step::MaybeRegister { pid } => Some(state.clone().or_else(|| Some(pid.clone()))),
            Step::Unregister { pid } => (state.as_ref() == Some(pid)).then_some(None),
            Step::ReleaseClient { client } => match state {
                Some(owner) if self.client_of.get(owner) == Some(client) => Some(None),
                _ => Some(state.clone()),
            },
            Step::Read { owner } => (owner == state).then(|| state.clone()),
        }
    }
}

/// Each name's operations as model steps.
fn entries(history: &History, limits: &Limits) -> BTreeMap<String, Vec<Entry<Step>>> {
    let mut by_name: BTreeMap<String, Vec<Entry<Step>>> = BTreeMap::new();
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
            (Request::Unregister { .. }, _, _) => Step::ReleaseClient {
                client: (op.client, op.incarnation),
            },
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
                step: Step::ReleaseClient {
                    client: (d.client, d.incarnation),
                },
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

/// Checks every name; returns the anomalies and the names whose search ran out of budget.
pub fn check(history: &History, limits: &Limits) -> (Vec<Anomaly>, Vec<String>) {
    let client_of: HashMap<String, (usize, u32)> = history
        .ops
        .iter()
        .filter_map(|op| Some((op.pid.clone()?, (op.client, op.incarnation))))
        .collect();
    let model = Registry {
        client_of: &client_of,
    };
    let mut anomalies = Vec::new();
    let mut inconclusive = Vec::new();
    for (name, mut list) in entries(history, limits) {
        match search(&model, &None, &mut list, limits.search_budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive.push(name),
            Verdict::Violation => anomalies.push(Anomaly::NotLinearizable {
                ops: excerpt(&model, &None, &mut list, limits.search_budget),
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
