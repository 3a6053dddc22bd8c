//! The workload: one driver thread per client sends it operations, one at a time with a
//! short pause between, and one reader thread per client records what it says. Every time
//! is read from one clock, the runner's, so real-time order across clients is meaningful.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cluster::send_line;
use crate::history::{History, Hold, Op, Outcome, Request, Snapshot};
use crate::protocol::{FromClient, ToClient};
use crate::resource::FencedResource;
use crate::rng::Rng;

/// The Consistent names the workload registers.
pub const NAMES: usize = 12;
/// The locks it takes.
pub const LOCKS: usize = 3;
/// The groups it joins.
pub const GROUPS: usize = 3;
/// The keys of the key-value store on grains it writes and reads.
pub const KV_KEYS: usize = 6;

/// The names of the workload's keys.
pub fn names() -> Vec<String> {
    (0..NAMES).map(|i| format!("k{i}")).collect()
}

/// The workload's key-value keys.
pub fn kv_keys() -> Vec<String> {
    (0..KV_KEYS).map(|i| format!("kv{i}")).collect()
}

/// The workload's groups.
pub fn groups() -> Vec<String> {
    (0..GROUPS).map(|i| format!("g{i}")).collect()
}

/// The history and the fenced resource, shared by every thread.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// The same moment, in µs since the Unix epoch (clients stamp events so).
    start_epoch_us: u64,
    history: Mutex<History>,
    resource: Mutex<FencedResource>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        let start = Instant::now();
        let start_epoch_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Arc::new(Recorder {
            start,
            start_epoch_us,
            history: Mutex::default(),
            resource: Mutex::default(),
        })
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Milliseconds from the run's start to a client's stamp `at_us` (µs since the epoch).
    fn ms_at_epoch(&self, at_us: u64) -> u64 {
        at_us.saturating_sub(self.start_epoch_us) / 1000
    }

    /// Milliseconds from the run's start to `at`.
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// The history so far.
    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The history with the resource's writes, at the end of the run.
    pub fn finish(&self) -> History {
        let mut h = self.history().clone();
        h.writes = self
            .resource
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log()
            .to_vec();
        h
    }

    /// Records the invocation of `request` by incarnation `incarnation` of `client`;
    /// returns its id.
    fn invoke(&self, client: usize, incarnation: u32, request: Request) -> u64 {
        let mut h = self.history();
        let id = h.ops.len() as u64 + 1;
        h.ops.push(Op {
            id,
            client,
            incarnation,
            request,
            pid: None,
            invoke_ms: self.now_ms(),
            complete_ms: None,
            outcome: None,
            hold: None,
        });
        id
    }

    fn with_op(&self, id: u64, f: impl FnOnce(&mut Op)) {
        let mut h = self.history();
        if let Some(op) = id.checked_sub(1).and_then(|i| h.ops.get_mut(i as usize)) {
            f(op);
        }
    }

    /// Applies one event from a client; returns the id of a finished operation.
    fn event(
        &self,
        event: FromClient,
        snapshots: &mpsc::Sender<Snapshot>,
        client: usize,
    ) -> Option<u64> {
        let now = self.now_ms();
        match event {
            FromClient::Ready { .. } | FromClient::Migrated { .. } => None,
            FromClient::Spawned { id, pid } => {
                self.with_op(id, |op| op.pid = Some(pid));
                None
            }
            // The hold runs from the client's own stamps: the runner may read one client's
            // lines later than another's, which would make holds seem to overlap.
            FromClient::Granted { id, token, at_us } => {
                self.with_op(id, |op| {
                    op.hold = Some(Hold {
                        token,
                        granted_ms: self.ms_at_epoch(at_us),
                        unlock_ms: None,
                        unlocked: None,
                    })
                });
                None
            }
            FromClient::Write { id, lock, token } => {
                self.resource
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(now, id, &lock, token);
                None
            }
            FromClient::Unlocking { id, at_us } => {
                self.with_op(id, |op| {
                    if let Some(h) = op.hold.as_mut() {
                        h.unlock_ms = Some(self.ms_at_epoch(at_us));
                    }
                });
                None
            }
            FromClient::Done {
                id,
                outcome,
                unlocked,
            } => {
                self.with_op(id, |op| {
                    op.complete_ms = Some(now);
                    op.outcome = Some(outcome);
                    if let Some(h) = op.hold.as_mut() {
                        h.unlocked = unlocked;
                    }
                });
                Some(id)
            }
            FromClient::Snapshot { names, groups } => {
                let _ = snapshots.send(Snapshot {
                    client,
                    at_ms: now,
                    names,
                    groups,
                });
                None
            }
        }
    }

    /// Operations invoked and not completed, but for those of killed client processes
    /// (which never will be).
    pub fn pending(&self) -> usize {
        let h = self.history();
        h.ops
            .iter()
            .filter(|o| o.complete_ms.is_none() && h.killed(o.client, o.incarnation).is_none())
            .count()
    }

    /// A live client holding a lock now, if any.
    pub fn a_holder(&self) -> Option<usize> {
        let h = self.history();
        h.ops
            .iter()
            .rev()
            .find(|o| {
                o.hold.is_some()
                    && o.complete_ms.is_none()
                    && h.killed(o.client, o.incarnation).is_none()
            })
            .map(|o| o.client)
    }

    /// A live client with an operation in flight now, if any.
    pub fn a_busy_client(&self) -> Option<usize> {
        let h = self.history();
        h.ops
            .iter()
            .rev()
            .find(|o| o.complete_ms.is_none() && h.killed(o.client, o.incarnation).is_none())
            .map(|o| o.client)
    }
}

/// One client as the runner drives it.
#[derive(Debug)]
pub struct ClientLink {
    /// The client's number.
    pub client: usize,
    /// Which process of it this is (0 first, one more after each kill).
    pub incarnation: u32,
    stdin: Arc<Mutex<ChildStdin>>,
    done: Mutex<mpsc::Receiver<u64>>,
    snapshots: Mutex<mpsc::Receiver<Snapshot>>,
    migrated: Mutex<mpsc::Receiver<Vec<String>>>,
    ready: Arc<AtomicBool>,
}

impl ClientLink {
    /// Starts the reader thread of incarnation `incarnation` of client `client`.
    pub fn new(
        client: usize,
        incarnation: u32,
        stdin: ChildStdin,
        stdout: ChildStdout,
        rec: Arc<Recorder>,
    ) -> ClientLink {
        let (done_tx, done_rx) = mpsc::channel();
        let (snap_tx, snap_rx) = mpsc::channel();
        let (moved_tx, moved_rx) = mpsc::channel();
        let ready = Arc::new(AtomicBool::new(false));
        let is_ready = ready.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(event) = serde_json::from_str::<FromClient>(&line) else {
                    continue;
                };
                match &event {
                    FromClient::Ready { .. } => is_ready.store(true, Ordering::SeqCst),
                    FromClient::Migrated { results } => {
                        let _ = moved_tx.send(results.clone());
                    }
                    _ => {}
                }
                if let Some(id) = rec.event(event, &snap_tx, client) {
                    let _ = done_tx.send(id);
                }
            }
        });
        ClientLink {
            client,
            incarnation,
            stdin: Arc::new(Mutex::new(stdin)),
            done: Mutex::new(done_rx),
            snapshots: Mutex::new(snap_rx),
            migrated: Mutex::new(moved_rx),
            ready,
        }
    }

    /// Whether the client's node runs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn send(&self, msg: &ToClient) -> bool {
        let line = serde_json::to_string(msg).expect("requests serialize");
        send_line(
            &mut self.stdin.lock().unwrap_or_else(|e| e.into_inner()),
            &line,
        )
        .is_ok()
    }

    /// Asks for a snapshot and waits up to `within` for it.
    pub fn snapshot(&self, within: Duration) -> Option<Snapshot> {
        let rx = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        while rx.try_recv().is_ok() {}
        let sent = self.send(&ToClient::Snapshot {
            names: names(),
            groups: groups(),
        });
        if !sent {
            return None;
        }
        rx.recv_timeout(within).ok()
    }

    /// Asks the client to migrate the key-value shards `shards` to node `to`, one after
    /// another, and waits up to `within` for the outcome of each (`moved`, or the error).
    pub fn migrate(&self, shards: &[usize], to: &str, within: Duration) -> Option<Vec<String>> {
        let rx = self.migrated.lock().unwrap_or_else(|e| e.into_inner());
        while rx.try_recv().is_ok() {}
        let sent = self.send(&ToClient::Migrate {
            shards: shards.to_vec(),
            target: to.to_string(),
        });
        if !sent {
            return None;
        }
        rx.recv_timeout(within).ok()
    }

    /// Drives the client until `stop`: one operation at a time, chosen by `rng`.
    pub fn drive(&self, rec: &Recorder, mut rng: Rng, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            if self.perform(rec, next_request(&mut rng)).is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(rng.range(20, 120)));
        }
    }

    /// Records and sends one operation and waits for its answer (as long as the client is
    /// stopped, if it is); `None` once the client is gone.
    pub fn perform(&self, rec: &Recorder, request: Request) -> Option<Outcome> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let id = rec.invoke(self.client, self.incarnation, request.clone());
        if !self.send(&ToClient::Op { id, request }) {
            return None;
        }
        loop {
            match done.recv() {
                Ok(d) if d == id => break,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        let mut outcome = None;
        rec.with_op(id, |op| outcome = op.outcome.clone());
        outcome
    }
}

/// The next operation: mostly registrations and unregistrations, then reads, locks,
/// key-value writes and reads, joins.
pub fn next_request(rng: &mut Rng) -> Request {
    let name = format!("k{}", rng.range(0, NAMES as u64));
    let key = format!("kv{}", rng.range(0, KV_KEYS as u64));
    match rng.range(0, 100) {
        0..30 => Request::Register { name },
        30..45 => Request::Unregister { name },
        45..53 => Request::Read { name },
        53..62 => Request::ReadConsistent { name },
        62..76 => Request::Lock {
            name: format!("L{}", rng.range(0, LOCKS as u64)),
            hold_ms: rng.range(50, 300),
        },
        76..86 => Request::KvSet {
            key,
            // Unique in the run (64 random bits), so a read tells which write it saw.
            value: format!("{:016x}", rng.next_u64()),
        },
        86..93 => Request::KvGet { key },
        _ => Request::Join {
            group: format!("g{}", rng.range(0, GROUPS as u64)),
        },
    }
}

/// Counts of outcomes, for summaries.
pub fn outcome_counts<'a>(
    ops: impl Iterator<Item = &'a Op>,
) -> (usize, usize, HashMap<String, usize>) {
    let (mut attempted, mut ok) = (0, 0);
    let mut failed: HashMap<String, usize> = HashMap::new();
    for op in ops {
        attempted += 1;
        match &op.outcome {
            Some(Outcome::Failed { kind }) => *failed.entry(kind.clone()).or_default() += 1,
            Some(_) => ok += 1,
            None => *failed.entry("pending".into()).or_default() += 1,
        }
    }
    (attempted, ok, failed)
}
