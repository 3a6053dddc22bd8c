//! A Wing–Gong–Lowe linearizability search over one object's operations: repeatedly pick
//! an operation that may come first (invoked before every pending mandatory operation
//! returned), apply it to the model, backtrack on a refusal, and remember every
//! (operations done, model state) pair already explored. The registry and key-value
//! checkers each bring their model.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential model of one object.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// What one operation does.
    type Step;
    /// Applies `step` to `state`: the next state, or `None` if the model refuses it.
    fn apply(&self, state: &Self::State, step: &Self::Step) -> Option<Self::State>;
}

/// One operation as the search sees it.
#[derive(Debug, Clone)]
pub struct Entry<S> {
    /// The operation's id in the history (0 for one the checker added).
    pub op: u64,
    /// When it was invoked.
    pub inv: u64,
    /// When it returned; `u64::MAX` when it may take effect at any time after `inv`.
    pub resp: u64,
    /// Whether it may be left out (its outcome is unknown).
    pub optional: bool,
    /// What it does.
    pub step: S,
}

/// The result of one object's search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Some order fits the model.
    Linearizable,
    /// No order fits.
    Violation,
    /// The search ran out of budget.
    Inconclusive,
}

struct Search<'a, M: Model> {
    model: &'a M,
    /// Sorted by invocation.
    entries: &'a [Entry<M::Step>],
    seen: HashSet<(Vec<u64>, M::State)>,
    budget: usize,
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

impl<M: Model> Search<'_, M> {
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
        state: &M::State,
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
                let Some(next) = self.model.apply(state, &e.step) else {
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

/// Whether some order of `entries`, starting from `initial`, fits `model`, visiting at
/// most `budget` states.
pub fn search<M: Model>(
    model: &M,
    initial: &M::State,
    entries: &mut [Entry<M::Step>],
    budget: usize,
) -> Verdict {
    entries.sort_by_key(|e| (e.inv, e.resp));
    let mandatory = entries.iter().filter(|e| !e.optional).count();
    let mut search = Search {
        model,
        entries,
        seen: HashSet::new(),
        budget,
    };
    let mut done = vec![0u64; entries.len().div_ceil(64)];
    search.run(&mut done, initial, 0, 0, mandatory)
}

/// The operations just before the shortest prefix (by invocation) of `list` that no order
/// fits: where the violation shows.
pub fn excerpt<M: Model>(
    model: &M,
    initial: &M::State,
    list: &mut [Entry<M::Step>],
    budget: usize,
) -> Vec<u64>
where
    M::Step: Clone,
{
    list.sort_by_key(|e| (e.inv, e.resp));
    let (mut ok, mut bad) = (0, list.len());
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        let mut prefix = list[..mid].to_vec();
        match search(model, initial, &mut prefix, budget) {
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
