//! Following the registry from outside the voter set: what a voter sends a member that
//! resolves names from a copy (a delta of applied entries, or a whole snapshot to catch
//! up), and how the member applies it. Pure: no I/O, no clock.
//!
//! A voter remembers the commands of its most recent applied entries ([`RecentEntries`]).
//! For each member it knows the index the member holds; [`plan_push`] decides whether the
//! member needs nothing, the entries after that index ([`Delta`]), or a snapshot (it is
//! behind the retained window, or its index is unknown). The member's copy
//! ([`FollowedRegistry`]) replays a delta's entries through the same deterministic
//! [`Registry::apply`], so it reaches exactly the voter's state at the delta's `upto`; a
//! delta that starts past what it holds is a gap ([`Receipt::Gap`]): it then tells the
//! voter what it holds, and the voter answers with a delta or a snapshot.

use std::collections::VecDeque;

use atoll_core::{NodeId, Pid, Scope};
use serde::{Deserialize, Serialize};

use crate::registry::{Command, Registry};

/// The most commands [`RecentEntries`] retains unless told otherwise.
pub const DEFAULT_WINDOW: usize = 16_384;
/// The most entries one encoded [`Delta`] may carry.
pub const MAX_DELTA_ENTRIES: usize = 1 << 20;

/// The commands of the most recently applied log entries, each entry's batch flattened,
/// bounded by a number of commands. Every entry after [`RecentEntries::floor`] up to the
/// last recorded one is present (entries that change nothing, such as Raft's blank and
/// membership entries, are simply absent).
#[derive(Clone, Debug)]
pub struct RecentEntries {
    floor: u64,
    last: u64,
    entries: VecDeque<(u64, Vec<Command>)>,
    commands: usize,
    capacity: usize,
}

impl Default for RecentEntries {
    fn default() -> Self {
        RecentEntries::new(DEFAULT_WINDOW, 0)
    }
}

impl RecentEntries {
    /// An empty window retaining at most `capacity` commands, complete after `floor`.
    pub fn new(capacity: usize, floor: u64) -> Self {
        RecentEntries {
            floor,
            last: floor,
            entries: VecDeque::new(),
            commands: 0,
            capacity,
        }
    }

    /// Entries after this index are all retained; a member at or past it can be sent a
    /// delta.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Changes how many commands are retained (dropping the oldest entries if needed).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.trim();
    }

    /// Forgets everything: the registry was replaced by a snapshot at `index`.
    pub fn reset(&mut self, index: u64) {
        *self = RecentEntries::new(self.capacity, index);
    }

    /// Records the command applied by the entry at `index` (indexes increase across calls;
    /// an entry at or below the last one recorded is ignored).
    pub fn record(&mut self, index: u64, command: Command) {
        if index <= self.last {
            return;
        }
        self.last = index;
        let mut flat = Vec::new();
        flatten(command, &mut flat);
        self.commands += flat.len();
        self.entries.push_back((index, flat));
        self.trim();
    }

    fn trim(&mut self) {
        while self.commands > self.capacity {
            let Some((index, flat)) = self.entries.pop_front() else {
                break;
            };
            self.commands -= flat.len();
            self.floor = index;
        }
    }

    /// The retained entries after `base`, or `None` if some of them are no longer retained.
    pub fn since(&self, base: u64) -> Option<Vec<(u64, Vec<Command>)>> {
        if base < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(i, _)| *i <= base);
        Some(self.entries.range(start..).cloned().collect())
    }
}

fn flatten(command: Command, out: &mut Vec<Command>) {
    match command {
        Command::Batch(commands) => commands.into_iter().for_each(|c| flatten(c, out)),
        other => out.push(other),
    }
}

/// What a voter sends a member next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// The member holds the voter's latest state (or more).
    Nothing,
    /// The entries after `base` (what the member holds), up to the voter's `upto`.
    Delta {
        /// The index the member holds.
        base: u64,
        /// The voter's applied index.
        upto: u64,
    },
    /// The whole registry: the member's index is unknown or behind the retained window.
    Snapshot,
}

/// What a voter that applied up to `applied`, retaining every entry after `floor`, sends
/// a member known to hold `known` (`None`: unknown).
pub fn plan_push(known: Option<u64>, applied: u64, floor: u64) -> Push {
    match known {
        None => Push::Snapshot,
        Some(k) if k >= applied => Push::Nothing,
        Some(k) if k < floor => Push::Snapshot,
        Some(k) => Push::Delta {
            base: k,
            upto: applied,
        },
    }
}

/// The registry entries after `base` up to `upto`: what turns a registry at any index in
/// `base..=upto` into the registry at `upto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The index the receiver must hold at least.
    pub base: u64,
    /// The index the receiver holds after applying it.
    pub upto: u64,
    /// Each changing entry in `base+1..=upto`, in order: its index and its commands (a
    /// batch flattened).
    pub entries: Vec<(u64, Vec<Command>)>,
}

/// A delta's entries could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeltaDecodeError {
    /// The body did not decode.
    #[error("corrupt registry delta: {0}")]
    Decode(#[from] postcard::Error),
    /// More entries than [`MAX_DELTA_ENTRIES`].
    #[error("registry delta of {0} entries is too large")]
    TooLarge(usize),
    /// The entries are not in increasing order inside `base+1..=upto`.
    #[error("registry delta entries out of order or outside {base}..={upto}")]
    Order {
        /// The delta's base.
        base: u64,
        /// The delta's upto.
        upto: u64,
    },
}

impl Delta {
    /// Encodes the entries (postcard; `base` and `upto` travel beside them).
    pub fn encode_entries(&self) -> Vec<u8> {
        let flat: Vec<(u64, Vec<FlatRef<'_>>)> = self
            .entries
            .iter()
            .map(|(i, cs)| (*i, cs.iter().filter_map(FlatRef::of).collect()))
            .collect();
        // Encoding plain structs and strings into a Vec cannot fail.
        postcard::to_stdvec(&flat).unwrap_or_default()
    }

    /// Decodes entries written by [`Delta::encode_entries`] and checks them against `base`
    /// and `upto`. Nested batches do not decode (the encoding is flat), so decoding never
    /// recurses; every element takes at least one input byte, so what is allocated is
    /// bounded by the input.
    pub fn decode(base: u64, upto: u64, bytes: &[u8]) -> Result<Delta, DeltaDecodeError> {
        let flat: Vec<(u64, Vec<Flat>)> = postcard::from_bytes(bytes)?;
        if flat.len() > MAX_DELTA_ENTRIES {
            return Err(DeltaDecodeError::TooLarge(flat.len()));
        }
        let mut last = base;
        for (i, _) in &flat {
            if *i <= last || *i > upto {
                return Err(DeltaDecodeError::Order { base, upto });
            }
            last = *i;
        }
        if base > upto {
            return Err(DeltaDecodeError::Order { base, upto });
        }
        let entries = flat
            .into_iter()
            .map(|(i, cs)| (i, cs.into_iter().map(Flat::into_command).collect()))
            .collect();
        Ok(Delta {
            base,
            upto,
            entries,
        })
    }
}

/// A registry command other than a batch, as a delta encodes it (the same variants in the
/// same order as [`Command`], without `Batch`).
#[derive(Deserialize)]
enum Flat {
    Register {
        name: String,
        pid: Pid,
        scope: Scope,
    },
    Unregister {
        name: String,
        pid: Pid,
    },
    ReleaseNode {
        node: NodeId,
        before_creation: Option<u32>,
        up_to_index: Option<u64>,
    },
    Lock {
        name: String,
        holder: Pid,
    },
    LockOrWait {
        name: String,
        holder: Pid,
    },
    Abandon {
        name: String,
        holder: Pid,
    },
    Unlock {
        name: String,
        token: u64,
    },
    SetConfig {
        key: String,
        value: String,
    },
}

impl Flat {
    fn into_command(self) -> Command {
        match self {
            Flat::Register { name, pid, scope } => Command::Register { name, pid, scope },
            Flat::Unregister { name, pid } => Command::Unregister { name, pid },
            Flat::ReleaseNode {
                node,
                before_creation,
                up_to_index,
            } => Command::ReleaseNode {
                node,
                before_creation,
                up_to_index,
            },
            Flat::Lock { name, holder } => Command::Lock { name, holder },
            Flat::LockOrWait { name, holder } => Command::LockOrWait { name, holder },
            Flat::Abandon { name, holder } => Command::Abandon { name, holder },
            Flat::Unlock { name, token } => Command::Unlock { name, token },
            Flat::SetConfig { key, value } => Command::SetConfig { key, value },
        }
    }
}

/// A non-batch command, encoded as [`Flat`] decodes it ([`Command`]'s own encoding: the
/// variant indexes agree).
#[derive(Serialize)]
struct FlatRef<'a>(&'a Command);

impl<'a> FlatRef<'a> {
    fn of(command: &'a Command) -> Option<Self> {
        // Every variant by name: a new command must be added to `Flat` as well (in the
        // same place), or deltas would decode it as another.
        match command {
            Command::Batch(_) => None,
            Command::Register { .. }
            | Command::Unregister { .. }
            | Command::ReleaseNode { .. }
            | Command::Lock { .. }
            | Command::LockOrWait { .. }
            | Command::Abandon { .. }
            | Command::Unlock { .. }
            | Command::SetConfig { .. } => Some(FlatRef(command)),
        }
    }
}

/// What a member's copy did with what a voter sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// The copy moved forward to this index.
    Advanced(u64),
    /// Nothing new: the copy already holds that index or more (a duplicate or old push).
    Stale,
    /// The delta starts after what the copy holds: entries are missing. Tell the voter the
    /// index held (it answers with a delta from there or a snapshot).
    Gap {
        /// The index the copy holds.
        held: u64,
    },
}

/// A member's copy of the registry and the index it reflects (0: nothing yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowedRegistry {
    /// The index of the last entry reflected.
    pub index: u64,
    /// The registry at `index`.
    pub registry: Registry,
}

impl FollowedRegistry {
    /// Takes a snapshot at `index` if it is newer than what is held.
    pub fn install(&mut self, index: u64, registry: Registry) -> Receipt {
        if index <= self.index {
            return Receipt::Stale;
        }
        *self = FollowedRegistry { index, registry };
        Receipt::Advanced(index)
    }

    /// Applies the entries of `delta` the copy lacks, if it holds at least `delta.base`.
    pub fn apply(&mut self, delta: &Delta) -> Receipt {
        if delta.upto <= self.index {
            return Receipt::Stale;
        }
        if delta.base > self.index {
            return Receipt::Gap { held: self.index };
        }
        for (index, commands) in &delta.entries {
            if *index <= self.index {
                continue;
            }
            match commands.as_slice() {
                [one] => self.registry.apply(*index, one),
                _ => self
                    .registry
                    .apply(*index, &Command::Batch(commands.clone())),
            };
        }
        self.index = delta.upto;
        Receipt::Advanced(delta.upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(serial: u64) -> Pid {
        Pid::new(NodeId::from_bytes([3; 16]), 1, serial)
    }

    fn register(name: &str, serial: u64) -> Command {
        Command::Register {
            name: name.into(),
            pid: pid(serial),
            scope: Scope::Consistent,
        }
    }

    /// A voter's registry and window after applying `commands` at indexes 1, 2, ...
    /// (index 3 is a blank entry: nothing recorded).
    fn voter(commands: Vec<Command>, capacity: usize) -> (u64, Registry, RecentEntries) {
        let mut registry = Registry::new();
        let mut recent = RecentEntries::new(capacity, 0);
        let mut index = 0;
        for c in commands {
            index += 1;
            if index == 3 {
                index += 1;
            }
            registry.apply(index, &c);
            recent.record(index, c);
        }
        (index, registry, recent)
    }

    fn delta_for(known: u64, applied: u64, recent: &RecentEntries) -> Delta {
        let d = Delta {
            base: known,
            upto: applied,
            entries: recent
                .since(known)
                .expect("inside the window")
                .into_iter()
                .filter(|(i, _)| *i <= applied)
                .collect(),
        };
        // Every delta goes through the wire encoding.
        Delta::decode(d.base, d.upto, &d.encode_entries()).expect("decodes")
    }

    #[test]
    fn deltas_in_order_reach_the_voters_state() {
        let mut member = FollowedRegistry::default();
        let (mut registry, mut recent) = (Registry::new(), RecentEntries::new(100, 0));
        let mut known = Some(0);
        let lock = |name: &str, serial| Command::LockOrWait {
            name: name.into(),
            holder: pid(serial),
        };
        let steps = vec![
            register("a", 1),
            Command::Batch(vec![register("b", 2), lock("l", 1), lock("l", 2)]),
            Command::Unlock {
                name: "l".into(),
                token: 2,
            },
            Command::Batch(vec![Command::Batch(vec![register("c", 3)]), lock("l", 3)]),
        ];
        for (i, c) in steps.into_iter().enumerate() {
            let index = 2 * i as u64 + 1;
            registry.apply(index, &c);
            recent.record(index, c);
            let Push::Delta { base, upto } = plan_push(known, index, recent.floor()) else {
                panic!("a delta expected");
            };
            let receipt = member.apply(&delta_for(base, upto, &recent));
            assert_eq!(receipt, Receipt::Advanced(index));
            known = Some(index);
            assert_eq!(member.registry, registry, "after entry {index}");
        }
        assert_eq!(plan_push(known, 7, recent.floor()), Push::Nothing);
    }

    #[test]
    fn a_gap_is_reported_and_a_snapshot_closes_it() {
        let (applied, registry, recent) =
            voter((0..6).map(|i| register(&i.to_string(), i)).collect(), 100);
        let mut member = FollowedRegistry::default();
        member.apply(&delta_for(0, 2, &{
            let mut r = RecentEntries::new(100, 0);
            r.record(1, register("0", 0));
            r.record(2, register("1", 1));
            r
        }));
        assert_eq!(member.index, 2);
        // A delta from 4 on while the member holds 2: entries 3 and 4 are missing.
        let late = delta_for(4, applied, &recent);
        assert_eq!(member.apply(&late), Receipt::Gap { held: 2 });
        assert_eq!(member.index, 2, "a gap changes nothing");
        // The member says it holds 2: still inside the window, so a delta from there.
        assert_eq!(
            plan_push(Some(2), applied, recent.floor()),
            Push::Delta {
                base: 2,
                upto: applied
            }
        );
        // A snapshot closes any gap.
        assert_eq!(
            member.install(applied, registry.clone()),
            Receipt::Advanced(applied)
        );
        assert_eq!(member.registry, registry);
    }

    #[test]
    fn duplicate_and_old_pushes_are_ignored() {
        let (applied, registry, recent) =
            voter((0..5).map(|i| register(&i.to_string(), i)).collect(), 100);
        let mut member = FollowedRegistry::default();
        let all = delta_for(0, applied, &recent);
        assert_eq!(member.apply(&all), Receipt::Advanced(applied));
        assert_eq!(member.apply(&all), Receipt::Stale);
        assert_eq!(member.apply(&delta_for(2, 4, &recent)), Receipt::Stale);
        assert_eq!(member.install(4, Registry::new()), Receipt::Stale);
        assert_eq!(member.install(applied, Registry::new()), Receipt::Stale);
        assert_eq!(member.registry, registry, "nothing older replaced the copy");
    }

    #[test]
    fn an_overlapping_delta_applies_only_what_is_missing() {
        // Register then unregister "x": replaying the register twice would bring it back.
        let unregister = Command::Unregister {
            name: "x".into(),
            pid: pid(9),
        };
        let (applied, registry, recent) = voter(
            vec![
                register("x", 9),
                unregister,
                register("y", 1),
                register("z", 2),
            ],
            100,
        );
        let mut member = FollowedRegistry::default();
        assert_eq!(
            member.apply(&delta_for(0, 2, &recent)),
            Receipt::Advanced(2)
        );
        assert_eq!(
            member.apply(&delta_for(1, applied, &recent)),
            Receipt::Advanced(applied)
        );
        assert_eq!(member.registry, registry);
        assert!(member.registry.whereis("x").is_none());
    }

    #[test]
    fn behind_the_window_or_unknown_gets_a_snapshot() {
        let (applied, _, recent) = voter((0..10).map(|i| register(&i.to_string(), i)).collect(), 4);
        assert!(recent.floor() > 0, "old entries were dropped");
        assert!(recent.since(recent.floor() - 1).is_none());
        assert_eq!(plan_push(Some(0), applied, recent.floor()), Push::Snapshot);
        assert_eq!(plan_push(None, applied, recent.floor()), Push::Snapshot);
        let at_floor = plan_push(Some(recent.floor()), applied, recent.floor());
        assert_eq!(
            at_floor,
            Push::Delta {
                base: recent.floor(),
                upto: applied
            }
        );
        assert_eq!(recent.since(recent.floor()).map(|e| e.len()), Some(4));
    }

    #[test]
    fn a_restarted_member_starts_over_from_a_snapshot_then_deltas() {
        let (applied, registry, mut recent) =
            voter((0..10).map(|i| register(&i.to_string(), i)).collect(), 4);
        // A restarted member holds nothing: outside the window, a snapshot.
        let mut member = FollowedRegistry::default();
        assert_eq!(
            plan_push(Some(member.index), applied, recent.floor()),
            Push::Snapshot
        );
        member.install(applied, registry.clone());
        // Then deltas again.
        let mut registry = registry;
        registry.apply(applied + 1, &register("new", 99));
        recent.record(applied + 1, register("new", 99));
        let Push::Delta { base, upto } = plan_push(Some(member.index), applied + 1, recent.floor())
        else {
            panic!("a delta expected");
        };
        assert_eq!(
            member.apply(&delta_for(base, upto, &recent)),
            Receipt::Advanced(applied + 1)
        );
        assert_eq!(member.registry, registry);
        // A voter that restarted resets its window at the snapshot it recovered.
        recent.reset(applied + 1);
        assert_eq!(
            plan_push(Some(applied), applied + 1, recent.floor()),
            Push::Snapshot
        );
        assert_eq!(
            plan_push(Some(applied + 1), applied + 1, recent.floor()),
            Push::Nothing
        );
    }

    #[test]
    fn every_command_round_trips_through_a_delta() {
        let holder = pid(4);
        let commands = [
            register("a", 1),
            Command::Unregister {
                name: "a".into(),
                pid: pid(1),
            },
            Command::ReleaseNode {
                node: NodeId::from_bytes([5; 16]),
                before_creation: Some(3),
                up_to_index: Some(9),
            },
            Command::Lock {
                name: "l".into(),
                holder,
            },
            Command::LockOrWait {
                name: "l".into(),
                holder,
            },
            Command::Abandon {
                name: "l".into(),
                holder,
            },
            Command::Unlock {
                name: "l".into(),
                token: 7,
            },
            Command::SetConfig {
                key: "k".into(),
                value: "v".into(),
            },
        ];
        let delta = Delta {
            base: 0,
            upto: 2,
            entries: vec![(1, commands[..4].to_vec()), (2, commands[4..].to_vec())],
        };
        let again = Delta::decode(0, 2, &delta.encode_entries()).expect("decodes");
        assert_eq!(again, delta);
    }

    #[test]
    fn bad_deltas_are_typed_errors() {
        let (applied, _, recent) =
            voter((0..3).map(|i| register(&i.to_string(), i)).collect(), 100);
        let bytes = delta_for(0, applied, &recent).encode_entries();
        assert!(matches!(
            Delta::decode(1, applied, &bytes),
            Err(DeltaDecodeError::Order { .. })
        ));
        assert!(matches!(
            Delta::decode(0, 1, &bytes),
            Err(DeltaDecodeError::Order { .. })
        ));
        assert!(matches!(
            Delta::decode(5, 4, &postcard::to_stdvec(&Vec::<u8>::new()).unwrap()),
            Err(DeltaDecodeError::Order { .. })
        ));
        assert!(matches!(
            Delta::decode(0, applied, &bytes[..bytes.len() - 1]),
            Err(DeltaDecodeError::Decode(_))
        ));
        // A nested batch (variant 8) does not decode.
        let nested = postcard::to_stdvec(&vec![(1u64, vec![Command::Batch(vec![])])]).unwrap();
        assert!(matches!(
            Delta::decode(0, 1, &nested),
            Err(DeltaDecodeError::Decode(_))
        ));
    }
}
