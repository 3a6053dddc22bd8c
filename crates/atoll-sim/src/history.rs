//! What a simulated run did, as records, and the checkers that judge it.
//!
//! The workload writes records as operations complete (in simulated time); at the end it
//! reads what every node reports. Each checker is a pure function of the history, so a
//! checker can be shown a constructed bad history (see the tests) as well as a real one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_core::{NodeId, Pid};
use atoll_swim::MemberEvent;

mod watches;

pub use watches::{Fired, Watch, WatchFired};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// A lock held: from the grant's return to the start of its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The lock.
    pub lock: String,
    /// The machine of the holder.
    pub node: usize,
    /// The holder.
    pub holder: Pid,
    /// Its fencing token.
    pub token: u64,
    /// When the grant returned.
    pub granted: Duration,
    /// When the release began (or the run ended).
    pub released: Duration,
}

/// A write to a resource guarded by a lock's fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    /// The writer's token.
    pub token: u64,
    /// The writer.
    pub holder: Pid,
    /// Whether the resource took it.
    pub accepted: bool,
}

/// A resource that refuses writes with a token older than the newest it has taken: what a
/// storage service guarded by a lock does with fencing tokens.
#[derive(Debug, Default, Clone)]
pub struct FencedResource {
    log: Arc<Mutex<Vec<FencedWrite>>>,
}

impl FencedResource {
    /// Writes with `token` on behalf of `holder`; false if refused as stale.
    pub fn write(&self, token: u64, holder: Pid) -> bool {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let newest = log.iter().filter(|w| w.accepted).map(|w| w.token).max();
        let accepted = newest.is_none_or(|n| token >= n);
        log.push(FencedWrite {
            token,
            holder,
            accepted,
        });
        accepted
    }

    /// Every write so far, in order.
    pub fn log(&self) -> Vec<FencedWrite> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A stretch of time during which a machine was cut off from the voters' majority,
/// crashed, or behind a one-way block: what it held may legitimately have been released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disturbance {
    /// The machine.
    pub node: usize,
    /// From when.
    pub from: Duration,
    /// Until when (the heal or restart).
    pub to: Duration,
}

/// An acknowledged Consistent registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The name.
    pub name: String,
    /// Its owner.
    pub pid: Pid,
    /// The owner's machine.
    pub node: usize,
    /// When the registration returned.
    pub at: Duration,
}

/// A sighting of a member's generation by an observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// Who saw it.
    pub observer: usize,
    /// The observer's own generation then: a node that rejoins as a new generation (the
    /// side that yields after a healed partition) starts over with fresh verdicts.
    pub observer_generation: u64,
    /// Whose generation.
    pub node: NodeId,
    /// Which generation.
    pub generation: u64,
    /// Seen live (joined, recovered) or down (unreachable, left).
    pub live: bool,
    /// The event, for the report.
    pub event: &'static str,
    /// When.
    pub at: Duration,
}

impl Sighting {
    /// What `event`, seen by `observer` while it runs as `observer_generation`, says about
    /// another member's generation: live for `Joined`, `Recovered` and `Suspect` (a suspect
    /// is still in the member list), down for `Unreachable` and `Left`. `None` for the
    /// events about the observer itself (`Active`, `Fenced`).
    pub fn from_event(
        observer: usize,
        observer_generation: u64,
        event: &MemberEvent,
        at: Duration,
    ) -> Option<Sighting> {
        let (id, live, event) = match event {
            MemberEvent::Joined(id) => (id, true, "joined"),
            MemberEvent::Recovered(id) => (id, true, "recovered"),
            MemberEvent::Suspect(id) => (id, true, "suspect"),
            MemberEvent::Unreachable(id) => (id, false, "unreachable"),
            MemberEvent::Left(id) => (id, false, "left"),
            MemberEvent::Active(_) | MemberEvent::Fenced { .. } => return None,
        };
        Some(Sighting {
            observer,
            observer_generation,
            node: id.node,
            generation: id.generation,
            live,
            event,
            at,
        })
    }

    /// The generation an observer runs as after `event`, which it saw running as
    /// `current`: a `Fenced` event moves it to the new generation it rejoins as, an
    /// `Active` event names the generation that was acknowledged.
    pub fn observer_generation_after(current: u64, event: &MemberEvent) -> u64 {
        match event {
            MemberEvent::Active(me) => me.generation,
            MemberEvent::Fenced { new, .. } => new.generation,
            _ => current,
        }
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Lock holds.
    pub holds: Vec<Hold>,
    /// Writes to the fenced resource, in order.
    pub writes: Vec<FencedWrite>,
    /// When machines were cut off or down.
    pub disturbances: Vec<Disturbance>,
    /// Acknowledged Consistent registrations.
    pub registrations: Vec<Registration>,
    /// Processes that exited or names given up (their registrations may go), by pid.
    pub released: BTreeSet<Pid>,
    /// At the end: each up machine's view of the Consistent names.
    pub final_names: BTreeMap<usize, BTreeMap<String, Pid>>,
    /// At the end: each up machine's view of the Eventual names.
    pub final_eventual: BTreeMap<usize, BTreeMap<String, Pid>>,
    /// Eventual claims that were acknowledged, by name, with the owner's machine.
    pub eventual_claims: Vec<(String, Pid, usize)>,
    /// Processes told they lost an Eventual name.
    pub told_lost: BTreeSet<Pid>,
    /// At the end: each up machine's view of the group's members.
    pub final_groups: BTreeMap<usize, BTreeSet<Pid>>,
    /// At the end: the group members that are alive on up machines.
    pub expected_group: BTreeSet<Pid>,
    /// How many times each call (by id) was handled.
    pub calls_handled: BTreeMap<u64, u32>,
    /// Membership sightings.
    pub sightings: Vec<Sighting>,
    /// Processes alive at the end.
    pub alive: BTreeSet<Pid>,
    /// Calls answered: (call id, the id the answer carried).
    pub answers: Vec<(u64, u64)>,
    /// Links and monitors across machines.
    pub watches: Vec<Watch>,
    /// How they fired.
    pub watch_fired: Vec<WatchFired>,
}

impl History {
    fn disturbed(&self, node: usize, from: Duration, to: Duration) -> bool {
        self.disturbances
            .iter()
            .any(|d| d.node == node && d.from <= to && from <= d.to)
    }

    /// Every checker's violations.
    pub fn check(&self) -> Vec<Violation> {
        let mut all = self.check_locks();
        all.extend(self.check_names());
        all.extend(self.check_eventual());
        all.extend(self.check_groups());
        all.extend(self.check_calls());
        all.extend(self.check_generations());
        all.extend(self.check_links_and_monitors());
        all
    }

    /// Fencing tokens grow with every grant; two holds never overlap unless the earlier
    /// holder was cut off meanwhile; the resource never took a stale token.
    pub fn check_locks(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut by_lock: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
        for h in &self.holds {
            by_lock.entry(&h.lock).or_default().push(h);
        }
        for (lock, mut holds) in by_lock {
            holds.sort_by_key(|h| (h.granted, h.token));
            for pair in holds.windows(2) {
                if pair[1].token <= pair[0].token {
                    out.push(violation(
                        "fencing tokens increase",
                        format!(
                            "{lock}: token {} granted at {:?} after token {} at {:?}",
                            pair[1].token, pair[1].granted, pair[0].token, pair[0].granted
                        ),
                    ));
                }
            }
            for (i, a) in holds.iter().enumerate() {
                for b in &holds[i + 1..] {
                    let overlap = b.granted < a.released;
                    if overlap && !self.disturbed(a.node, a.granted, a.released) {
                        out.push(violation(
                            "one holder at a time",
                            format!(
                                "{lock}: {} (token {}) held {:?}..{:?} while {} (token {}) was granted at {:?}",
                                a.holder, a.token, a.granted, a.released, b.holder, b.token, b.granted
                            ),
                        ));
                    }
                }
            }
        }
        let mut newest: Option<u64> = None;
        for w in &self.writes {
            if w.accepted {
                if newest.is_some_and(|n| w.token < n) {
                    out.push(violation(
                        "the fenced resource refuses stale tokens",
                        format!("took token {} after {:?}", w.token, newest),
                    ));
                }
                newest = newest.max(Some(w.token));
            }
        }
        out
    }

    /// Every machine agrees on each Consistent name's owner, and every acknowledged
    /// registration of an undisturbed machine whose process lives on is still there.
    pub fn check_names(&self) -> Vec<Violation> {
        let mut out = agreement("one owner per name", &self.final_names);
        let end = Duration::MAX;
        for r in &self.registrations {
            if self.released.contains(&r.pid)
                || !self.alive.contains(&r.pid)
                || self.disturbed(r.node, r.at, end)
            {
                continue;
            }
            for (machine, view) in &self.final_names {
                if view.get(&r.name) != Some(&r.pid) {
                    out.push(violation(
                        "acknowledged registrations survive",
                        format!(
                            "{} -> {} acknowledged at {:?}, machine {machine} has {:?}",
                            r.name,
                            r.pid,
                            r.at,
                            view.get(&r.name)
                        ),
                    ));
                }
            }
        }
        out
    }

    /// After the heal every machine agrees on each Eventual name's owner, and a live
    /// process that lost a name it had claimed was told.
    pub fn check_eventual(&self) -> Vec<Violation> {
        let mut out = agreement("Eventual names converge", &self.final_eventual);
        let Some(view) = self.final_eventual.values().next() else {
            return out;
        };
        for (name, pid, _) in &self.eventual_claims {
            let lost = view.get(name).is_some_and(|owner| owner != pid);
            if lost && self.alive.contains(pid) && !self.told_lost.contains(pid) {
                out.push(violation(
                    "the loser of an Eventual name is told",
                    format!("{pid} lost {name} to {:?} and was not told", view.get(name)),
                ));
            }
        }
        out
    }

    /// After the heal every machine sees the group as the live members on up machines.
    pub fn check_groups(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for (machine, members) in &self.final_groups {
            if *members != self.expected_group {
                out.push(violation(
                    "groups converge",
                    format!(
                        "machine {machine} sees {} members, {} expected (missing {:?}, extra {:?})",
                        members.len(),
                        self.expected_group.len(),
                        self.expected_group.difference(members).collect::<Vec<_>>(),
                        members.difference(&self.expected_group).collect::<Vec<_>>()
                    ),
                ));
            }
        }
        out
    }

    /// Nobody declared down comes back under its old generation: once an observer
    /// (running as one generation) saw a member's generation declared down, it never sees
    /// that member live again under that generation or an older one; only a newer
    /// generation (a restart, or a rejoin after being fenced) may come back.
    pub fn check_generations(&self) -> Vec<Violation> {
        type Key = (usize, u64, NodeId);
        // Per observer generation and member: the newest generation declared down.
        let mut down: BTreeMap<Key, (u64, Duration, &'static str)> = BTreeMap::new();
        let mut out = Vec::new();
        let mut sightings = self.sightings.clone();
        sightings.sort_by_key(|s| s.at);
        for s in sightings {
            let key = (s.observer, s.observer_generation, s.node);
            if !s.live {
                let entry = down.entry(key).or_insert((s.generation, s.at, s.event));
                if s.generation > entry.0 {
                    *entry = (s.generation, s.at, s.event);
                }
            } else if let Some(&(generation, at, how)) = down.get(&key)
                && s.generation <= generation
            {
                out.push(violation(
                    "a generation declared down never comes back",
                    format!(
                        "machine {} saw {} generation {generation} {how} at {at:?} and generation {} {} at {:?}",
                        s.observer, s.node, s.generation, s.event, s.at
                    ),
                ));
            }
        }
        out
    }
}

/// Violations of "every machine reports the same map".
fn agreement<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    invariant: &'static str,
    views: &BTreeMap<usize, BTreeMap<K, V>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut iter = views.iter();
    let Some((first, reference)) = iter.next() else {
        return out;
    };
    for (machine, view) in iter {
        for (k, v) in view {
            if reference.get(k) != Some(v) {
                out.push(violation(
                    invariant,
                    format!(
                        "{k:?}: machine {machine} has {v:?}, machine {first} {:?}",
                        reference.get(k)
                    ),
                ));
            }
        }
        for (k, v) in reference {
            if !view.contains_key(k) {
                out.push(violation(
                    invariant,
                    format!("{k:?}: machine {first} has {v:?}, machine {machine} nothing"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(serial: u64) -> Pid {
        Pid {
            node: NodeId::from_bytes([1; 16]),
            creation: 1,
            serial,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn hold(node: usize, serial: u64, token: u64, from: u64, to: u64) -> Hold {
        Hold {
            lock: "l".into(),
            node,
            holder: pid(serial),
            token,
            granted: ms(from),
            released: ms(to),
        }
    }

    #[test]
    fn overlapping_holds_are_caught_unless_the_first_holder_was_cut_off() {
        let mut h = History {
            holds: vec![hold(0, 1, 5, 0, 100), hold(1, 2, 6, 50, 120)],
            ..History::default()
        };
        let v = h.check_locks();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "one holder at a time");
        h.disturbances.push(Disturbance {
            node: 0,
            from: ms(20),
            to: ms(60),
        });
        assert!(h.check_locks().is_empty());
    }

    #[test]
    fn tokens_that_do_not_grow_are_caught() {
        let h = History {
            holds: vec![hold(0, 1, 7, 0, 10), hold(1, 2, 7, 20, 30)],
            ..History::default()
        };
        assert_eq!(h.check_locks()[0].invariant, "fencing tokens increase");
    }

    #[test]
    fn the_fenced_resource_refuses_stale_tokens_and_the_checker_catches_a_log_that_did_not() {
        let r = FencedResource::default();
        assert!(r.write(3, pid(1)));
        assert!(r.write(4, pid(2)));
        assert!(!r.write(3, pid(1)));
        let good = History {
            writes: r.log(),
            ..History::default()
        };
        assert!(good.check_locks().is_empty());
        let mut bad = good.clone();
        bad.writes[2].accepted = true;
        assert_eq!(
            bad.check_locks()[0].invariant,
            "the fenced resource refuses stale tokens"
        );
    }

    #[test]
    fn a_lost_registration_and_disagreeing_views_are_caught() {
        let mut h = History {
            registrations: vec![Registration {
                name: "a".into(),
                pid: pid(1),
                node: 0,
                at: ms(5),
            }],
            alive: [pid(1)].into(),
            ..History::default()
        };
        h.final_names.insert(0, [("a".to_string(), pid(1))].into());
        h.final_names.insert(1, BTreeMap::new());
        let v = h.check_names();
        assert!(v.iter().any(|v| v.invariant == "one owner per name"));
        assert!(
            v.iter()
                .any(|v| v.invariant == "acknowledged registrations survive")
        );
        h.final_names.insert(1, [("a".to_string(), pid(1))].into());
        assert!(h.check_names().is_empty());
    }

    #[test]
    fn an_untold_loser_and_a_diverged_group_are_caught() {
        let mut h = History {
            eventual_claims: vec![("e".into(), pid(1), 0), ("e".into(), pid(2), 1)],
            alive: [pid(1), pid(2)].into(),
            expected_group: [pid(1)].into(),
            ..History::default()
        };
        h.final_eventual
            .insert(0, [("e".to_string(), pid(1))].into());
        h.final_eventual
            .insert(1, [("e".to_string(), pid(1))].into());
        assert_eq!(h.check_eventual().len(), 1);
        h.told_lost.insert(pid(2));
        assert!(h.check_eventual().is_empty());
        h.final_groups.insert(0, [pid(1), pid(2)].into());
        assert_eq!(h.check_groups().len(), 1);
    }

    #[test]
    fn a_generation_back_from_the_dead_and_a_twice_handled_call_are_caught() {
        let node = NodeId::from_bytes([2; 16]);
        let s = |live, at| Sighting {
            observer: 0,
            observer_generation: 1,
            node,
            generation: 9,
            live,
            event: if live { "joined" } else { "unreachable" },
            at: ms(at),
        };
        let h = History {
            sightings: vec![s(true, 1), s(false, 5), s(true, 9)],
            calls_handled: [(1, 1), (2, 2)].into(),
            ..History::default()
        };
        assert_eq!(h.check_generations().len(), 1);
        assert_eq!(h.check_calls().len(), 1);
        // An older generation than the one declared down is caught too; a newer one is
        // a restart and fine.
        let older = Sighting {
            generation: 8,
            ..s(true, 10)
        };
        let newer = Sighting {
            generation: 10,
            ..s(true, 11)
        };
        let h = History {
            sightings: vec![s(false, 5), newer, older],
            ..History::default()
        };
        let v = h.check_generations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("generation 8"), "{v:?}");
    }

    #[test]
    fn an_observers_events_become_sightings_keyed_by_the_generation_it_ran_as() {
        use atoll_swim::{Identity, MemberMeta};

        let id = |byte, generation| {
            Identity::new(
                NodeId::from_bytes([byte; 16]),
                generation,
                "10.0.0.1:7000".parse().unwrap(),
                MemberMeta::named("n"),
            )
            .unwrap()
        };
        let (me, other) = (1, 2);
        let log = [
            MemberEvent::Active(id(me, 1)),
            MemberEvent::Joined(id(other, 4)),
            MemberEvent::Unreachable(id(other, 4)),
            // Declared down itself, the observer rejoins as generation 3 and may see the
            // other node's generation 4 live again: its verdicts start over.
            MemberEvent::Fenced {
                old: id(me, 1),
                new: id(me, 3),
            },
            MemberEvent::Joined(id(other, 4)),
            MemberEvent::Unreachable(id(other, 4)),
            // But not once more while it runs as generation 3, not even as a suspect.
            MemberEvent::Suspect(id(other, 4)),
        ];
        let mut mine = 0;
        let mut sightings = Vec::new();
        for (at, event) in log.iter().enumerate() {
            mine = Sighting::observer_generation_after(mine, event);
            sightings.extend(Sighting::from_event(0, mine, event, ms(at as u64)));
        }
        let generations: Vec<(u64, bool)> = sightings
            .iter()
            .map(|s| (s.observer_generation, s.live))
            .collect();
        assert_eq!(
            generations,
            [(1, true), (1, false), (3, true), (3, false), (3, true)]
        );
        let v = History {
            sightings,
            ..History::default()
        }
        .check_generations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("suspect"), "{v:?}");
    }
}
