//! Checkers over a recorded [`History`]: each returns the anomalies it found, typed, with
//! the operations involved. Pure functions of the history, so each is shown catching a
//! constructed bad history in its tests.
//!
//! | checker | guarantee |
//! |---|---|
//! | [`names::check`] | the Consistent registry is linearizable (register, unregister, the final converged view) against a single-owner model, allowing only the releases membership declarations cause; local reads never invent an owner |
//! | [`kv::check`] | the key-value store on grains is linearizable key by key: every read, and every write's answer of the value it replaced, fits one order of the acknowledged writes, so no acknowledged write is lost across kills, pauses and partitions |
//! | [`locks::check`] | a fencing token is granted once and grows with real time; the fenced resource accepts no token older than its newest; no two healthy holders overlap; a lock held by a killed client is granted again, and every lock can be taken after the heal |
//! | [`converge::check`] | after the heal every client's view agrees within a bound; no acknowledged registration or group join of a client no node declared unreachable is lost; no name or group keeps a killed client's process past the grace |
//! | [`bounds::check`] | every operation completes (unless its client process was killed meanwhile: then its outcome is open), within a bound unless its client was stopped, and every failure is typed |

pub mod bounds;
pub mod converge;
pub mod kv;
pub mod locks;
pub mod names;
#[cfg(test)]
mod testkit;
pub mod wgl;

use serde::Serialize;

use crate::history::History;

/// Something a history must never show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "anomaly", rename_all = "snake_case")]
pub enum Anomaly {
    /// No order of the operations on `name` fits its model: the single-owner registry, or
    /// for `kv KEY` a register.
    #[error("name {name:?}: not linearizable; operations {ops:?}")]
    NotLinearizable {
        /// The name.
        name: String,
        /// Its operations (ids), for the excerpt.
        ops: Vec<u64>,
    },
    /// A read resolved a name to a process no registration of that name was for.
    #[error("name {name:?}: read {op} found {pid}, which was never registered under it")]
    PhantomRead {
        /// The name.
        name: String,
        /// The read.
        op: u64,
        /// What it found.
        pid: String,
    },
    /// Two grants of one lock carried the same token.
    #[error("lock {lock:?}: token {token} granted to both {a} and {b}")]
    DuplicateToken {
        /// The lock.
        lock: String,
        /// The token.
        token: u64,
        /// The two lock operations.
        a: u64,
        /// The two lock operations.
        b: u64,
    },
    /// A grant that began after another had completed got a token that is not larger.
    #[error(
        "lock {lock:?}: {later} (token {later_token}) began after {earlier} (token {earlier_token}) was granted"
    )]
    TokenOrder {
        /// The lock.
        lock: String,
        /// The grant that completed first.
        earlier: u64,
        /// Its token.
        earlier_token: u64,
        /// The grant invoked after it.
        later: u64,
        /// Its token.
        later_token: u64,
    },
    /// The fenced resource accepted a token older than the newest it had accepted.
    #[error("lock {lock:?}: write of {op} with token {token} accepted after token {newest}")]
    StaleWriteAccepted {
        /// The lock.
        lock: String,
        /// The writer.
        op: u64,
        /// Its token.
        token: u64,
        /// The newest token accepted before.
        newest: u64,
    },
    /// Two holders held one lock at once while the earlier was not declared unreachable.
    #[error("lock {lock:?}: {b} was granted while {a} still held it")]
    OverlappingHolds {
        /// The lock.
        lock: String,
        /// The holder that was still holding.
        a: u64,
        /// The one granted meanwhile.
        b: u64,
    },
    /// A lock granted to a client process that was then killed was never granted again:
    /// the cluster did not release it (or, for an attempt after the heal, no one could
    /// take the lock).
    #[error("lock {lock:?}: never granted again after {op}")]
    NotReleased {
        /// The lock.
        lock: String,
        /// The killed holder's operation, or the last attempt after the heal.
        op: u64,
    },
    /// After the heal a name or group still counted a process of a killed client, longer
    /// than the release rule allows.
    #[error("{what:?}: {pid}, of a client killed at {killed_ms} ms, still there at {at_ms} ms")]
    DeadOwner {
        /// `name N` or `group G`.
        what: String,
        /// The dead process.
        pid: String,
        /// When its client was killed.
        killed_ms: u64,
        /// When a client's view still showed it.
        at_ms: u64,
    },
    /// An acknowledged registration or join vanished although nothing could release it.
    #[error("{what:?}: acknowledged by {op}, missing after the heal")]
    LostWrite {
        /// `name N` or `group G`.
        what: String,
        /// The acknowledged operation.
        op: u64,
    },
    /// The clients' views did not agree within the bound after the heal.
    #[error("views did not converge within {bound_ms} ms of the heal ({detail})")]
    NotConverged {
        /// The bound.
        bound_ms: u64,
        /// What differed last.
        detail: String,
    },
    /// An operation never completed.
    #[error("operation {op} never completed")]
    NeverCompleted {
        /// The operation.
        op: u64,
    },
    /// An operation took longer than its bound while its client was running.
    #[error("operation {op} took {took_ms} ms (bound {bound_ms} ms)")]
    Unbounded {
        /// The operation.
        op: u64,
        /// How long it took.
        took_ms: u64,
        /// Its bound.
        bound_ms: u64,
    },
    /// A node or client process exited without being told to.
    #[error("{process} exited on its own: {status}")]
    Crashed {
        /// `nI` or `cI`.
        process: String,
        /// How it exited.
        status: String,
    },
    /// An operation failed without a typed error.
    #[error("operation {op} failed untyped: {kind:?}")]
    Untyped {
        /// The operation.
        op: u64,
        /// What it said.
        kind: String,
    },
}

/// The limits the checkers hold a run to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long after a node declared a client unreachable the Raft leader may still
    /// release that client's names and locks.
    pub grace_ms: u64,
    /// The longest a registration, unregistration, read or join may take.
    pub op_bound_ms: u64,
    /// The longest a lock cycle may take beyond its hold.
    pub lock_bound_ms: u64,
    /// The longest the views may take to agree after the heal.
    pub converge_bound_ms: u64,
    /// How long after a failure whose outcome is unknown (a consensus timeout) its command
    /// may still take effect: a proposal left in a leader's log is committed by the next
    /// election or dropped.
    pub indeterminate_ms: u64,
    /// How many search states the linearizability check may visit per name.
    pub search_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            grace_ms: 15_000,
            op_bound_ms: 12_000,
            lock_bound_ms: 20_000,
            converge_bound_ms: 30_000,
            indeterminate_ms: 30_000,
            search_budget: 500_000,
        }
    }
}

/// Everything the checkers found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The violations.
    pub anomalies: Vec<Anomaly>,
    /// Names and `kv KEY`s whose linearizability search ran out of budget (neither passed
    /// nor failed).
    pub inconclusive: Vec<String>,
}

/// Runs every checker.
pub fn check_all(history: &History, limits: &Limits) -> Report {
    let mut report = Report::default();
    let (anomalies, inconclusive) = names::check(history, limits);
    report.anomalies.extend(anomalies);
    report.inconclusive = inconclusive;
    let (anomalies, inconclusive) = kv::check(history, limits);
    report.anomalies.extend(anomalies);
    report.inconclusive.extend(inconclusive);
    report.anomalies.extend(locks::check(history, limits));
    report.anomalies.extend(converge::check(history, limits));
    report.anomalies.extend(bounds::check(history, limits));
    report
}
