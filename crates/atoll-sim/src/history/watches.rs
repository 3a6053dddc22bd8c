//! Records and checkers for links, monitors and call answers: a process linked to and
//! monitoring a process on another machine hears `NoConnection` on both once its machine
//! declared the other one down; a call is answered at most once, with its own answer.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_core::{ExitReason, NodeId, Pid};

use super::{History, Sighting, Violation, violation};

/// A watcher process linked to and monitoring a target on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Which watch (the workload's count).
    pub id: u64,
    /// The watcher.
    pub watcher: Pid,
    /// The watcher's machine.
    pub watcher_machine: usize,
    /// The watched process.
    pub target: Pid,
    /// The target machine's node id.
    pub target_node: NodeId,
    /// When the watcher was spawned (it links and monitors as it starts).
    pub since: Duration,
}

/// How a watch fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The monitor's `Down`.
    Down,
    /// The link's exit signal (the watcher traps exits).
    Exit,
}

/// A watch that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchFired {
    /// Which watch.
    pub id: u64,
    /// Monitor or link.
    pub how: Fired,
    /// With what reason.
    pub reason: ExitReason,
    /// When.
    pub at: Duration,
}

impl History {
    /// Links and monitors fire `NoConnection` on a partition: a live watcher whose machine
    /// declared the target's machine down (unreachable or left) after the watch began hears
    /// `NoConnection` from both its monitor and its link; and while the target lives, no
    /// watch fires with any other reason. A declaration about a generation its machine had
    /// already seen replaced by a newer live one (before or at the same instant) does not
    /// count: the target's node rejoined without its processes going anywhere, and the
    /// node keeps the newer generation's connection.
    pub fn check_links_and_monitors(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut fired: BTreeMap<(u64, bool), &WatchFired> = BTreeMap::new();
        for f in &self.watch_fired {
            fired.entry((f.id, f.how == Fired::Down)).or_insert(f);
        }
        let mut sightings = self.sightings.clone();
        sightings.sort_by_key(|s| s.at);
        for w in &self.watches {
            let target_lives = self.alive.contains(&w.target);
            if target_lives {
                for f in self.watch_fired.iter().filter(|f| f.id == w.id) {
                    if f.reason != ExitReason::NoConnection {
                        out.push(violation(
                            "links and monitors fire NoConnection on a partition",
                            format!(
                                "watch {} of live {} fired {:?} with {:?} at {:?}",
                                w.id, w.target, f.how, f.reason, f.at
                            ),
                        ));
                    }
                }
            }
            if !self.alive.contains(&w.watcher) {
                continue;
            }
            let seen: Vec<&Sighting> = sightings
                .iter()
                .filter(|s| s.observer == w.watcher_machine && s.node == w.target_node)
                .collect();
            // A newer generation seen live at the same instant or before replaced the
            // declared one (the node heard both in one go and kept the connection).
            let replaced = |d: &Sighting| {
                seen.iter()
                    .any(|s| s.live && s.generation > d.generation && s.at <= d.at)
            };
            let declared = seen
                .iter()
                .find(|s| !s.live && s.at > w.since && !replaced(s));
            let Some(down) = declared else { continue };
            for (how, monitor) in [(Fired::Down, true), (Fired::Exit, false)] {
                if !fired.contains_key(&(w.id, monitor)) {
                    out.push(violation(
                        "links and monitors fire NoConnection on a partition",
                        format!(
                            "watch {} ({} on machine {} of {}): machine {} declared {} generation {} {} at {:?}, and no {how:?} came",
                            w.id,
                            w.watcher,
                            w.watcher_machine,
                            w.target,
                            w.watcher_machine,
                            w.target_node,
                            down.generation,
                            down.event,
                            down.at
                        ),
                    ));
                }
            }
        }
        out
    }

    /// A call is handled at most once, and answered at most once, with its own answer (a
    /// reply never reaches another call).
    pub fn check_calls(&self) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .calls_handled
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| {
                violation(
                    "a call is handled once",
                    format!("call {id} handled {n} times"),
                )
            })
            .collect();
        let mut answered: BTreeMap<u64, u32> = BTreeMap::new();
        for &(call, answer) in &self.answers {
            *answered.entry(call).or_default() += 1;
            if answer != call {
                out.push(violation(
                    "a call is answered once",
                    format!("call {call} got the answer of call {answer}"),
                ));
            }
        }
        for (call, n) in answered.into_iter().filter(|(_, n)| *n > 1) {
            out.push(violation(
                "a call is answered once",
                format!("call {call} answered {n} times"),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: u8, serial: u64) -> Pid {
        Pid {
            node: NodeId::from_bytes([node; 16]),
            creation: 1,
            serial,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sighting(generation: u64, live: bool, at: u64) -> Sighting {
        Sighting {
            observer: 0,
            observer_generation: 1,
            node: NodeId::from_bytes([2; 16]),
            generation,
            live,
            event: if live { "joined" } else { "unreachable" },
            at: ms(at),
        }
    }

    fn watched() -> History {
        History {
            watches: vec![Watch {
                id: 1,
                watcher: pid(1, 1),
                watcher_machine: 0,
                target: pid(2, 1),
                target_node: NodeId::from_bytes([2; 16]),
                since: ms(10),
            }],
            alive: [pid(1, 1), pid(2, 1)].into(),
            sightings: vec![sighting(4, true, 5), sighting(4, false, 50)],
            ..History::default()
        }
    }

    fn fired(how: Fired, reason: ExitReason) -> WatchFired {
        WatchFired {
            id: 1,
            how,
            reason,
            at: ms(50),
        }
    }

    #[test]
    fn a_watch_silent_after_its_target_was_declared_down_is_caught() {
        let mut h = watched();
        let v = h.check_links_and_monitors();
        assert_eq!(v.len(), 2, "neither the monitor nor the link fired: {v:?}");
        h.watch_fired
            .push(fired(Fired::Down, ExitReason::NoConnection));
        let v = h.check_links_and_monitors();
        assert_eq!(v.len(), 1, "the link did not fire: {v:?}");
        assert!(v[0].detail.contains("Exit"), "{v:?}");
        h.watch_fired
            .push(fired(Fired::Exit, ExitReason::NoConnection));
        assert!(h.check_links_and_monitors().is_empty());
    }

    #[test]
    fn a_watch_of_a_live_target_firing_another_reason_is_caught() {
        let mut h = watched();
        h.watch_fired
            .push(fired(Fired::Down, ExitReason::NoConnection));
        h.watch_fired.push(fired(Fired::Exit, ExitReason::Killed));
        let v = h.check_links_and_monitors();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("killed"), "{v:?}");
    }

    #[test]
    fn a_declaration_before_the_watch_or_about_a_replaced_generation_needs_no_firing() {
        let mut h = watched();
        h.sightings = vec![sighting(4, false, 5)];
        assert!(
            h.check_links_and_monitors().is_empty(),
            "down before the watch"
        );
        h.sightings = vec![sighting(5, true, 20), sighting(4, false, 30)];
        assert!(
            h.check_links_and_monitors().is_empty(),
            "a newer generation lives"
        );
        h.sightings = vec![sighting(4, false, 30), sighting(5, true, 30)];
        assert!(
            h.check_links_and_monitors().is_empty(),
            "replaced in one go"
        );
        h.sightings = vec![sighting(4, false, 30), sighting(5, true, 31)];
        assert_eq!(h.check_links_and_monitors().len(), 2, "replaced later");
        h.alive.remove(&pid(1, 1));
        h.sightings = vec![sighting(4, false, 30)];
        assert!(
            h.check_links_and_monitors().is_empty(),
            "the watcher is gone"
        );
    }

    #[test]
    fn a_call_answered_twice_or_with_another_calls_answer_is_caught() {
        let mut h = History {
            answers: vec![(1, 1), (2, 2)],
            calls_handled: [(1, 1), (2, 1)].into(),
            ..History::default()
        };
        assert!(h.check_calls().is_empty());
        h.answers.push((2, 2));
        assert_eq!(h.check_calls()[0].detail, "call 2 answered 2 times");
        h.answers = vec![(1, 1), (3, 2)];
        assert_eq!(h.check_calls()[0].detail, "call 3 got the answer of call 2");
        h.answers.clear();
        h.calls_handled.insert(4, 2);
        assert_eq!(h.check_calls()[0].invariant, "a call is handled once");
    }
}
