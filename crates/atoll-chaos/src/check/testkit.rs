//! Builds histories for the checkers' tests.

use std::collections::BTreeSet;

use crate::history::{Fault, History, Hold, Op, Outcome, Request, Snapshot};

/// A history under construction.
#[derive(Default)]
pub struct H(pub History);

impl H {
    pub fn op(
        &mut self,
        client: usize,
        request: Request,
        pid: Option<&str>,
        span: (u64, u64),
        outcome: Outcome,
    ) -> u64 {
        let id = self.0.ops.len() as u64 + 1;
        self.0.ops.push(Op {
            id,
            client,
            incarnation: 0,
            request,
            pid: pid.map(str::to_string),
            invoke_ms: span.0,
            complete_ms: Some(span.1),
            outcome: Some(outcome),
            hold: None,
        });
        id
    }

    pub fn reg(&mut self, c: usize, name: &str, pid: &str, span: (u64, u64), o: Outcome) -> u64 {
        let r = Request::Register { name: name.into() };
        self.op(c, r, Some(pid), span, o)
    }

    pub fn unreg(&mut self, c: usize, name: &str, span: (u64, u64), o: Outcome) -> u64 {
        self.op(c, Request::Unregister { name: name.into() }, None, span, o)
    }

    /// A lock cycle granted `token` at `granted`, unlocking from `unlock`.
    pub fn lock(
        &mut self,
        c: usize,
        token: u64,
        span: (u64, u64),
        granted: u64,
        unlock: u64,
    ) -> u64 {
        let r = Request::Lock {
            name: "l".into(),
            hold_ms: 0,
        };
        let pid = format!("p{c}-{token}");
        let id = self.op(c, r, Some(&pid), span, Outcome::Locked { token });
        self.0.ops.last_mut().unwrap().hold = Some(Hold {
            token,
            granted_ms: granted,
            unlock_ms: Some(unlock),
            unlocked: Some(true),
        });
        id
    }

    /// A fault on `clients` during `span`, in which a node declared each of them
    /// unreachable at its start.
    pub fn fault(&mut self, clients: &[usize], span: (u64, u64)) {
        for &client in clients {
            self.0.declarations.push(crate::history::Declaration {
                at_ms: span.0,
                by: "n1".into(),
                client,
                incarnation: 0,
            });
        }
        self.0.faults.push(Fault {
            kind: "partition".into(),
            detail: String::new(),
            clients: clients.iter().copied().collect(),
            paused_clients: BTreeSet::new(),
            paused_nodes: BTreeSet::new(),
            start_ms: span.0,
            end_ms: span.1,
        });
    }

    /// One round of snapshots in which every client of `clients` sees `names`.
    pub fn converged(&mut self, at: u64, clients: &[usize], names: &[(&str, Option<&str>)]) {
        let round = clients
            .iter()
            .map(|&client| Snapshot {
                client,
                at_ms: at,
                names: names
                    .iter()
                    .map(|(n, p)| (n.to_string(), p.map(str::to_string)))
                    .collect(),
                groups: Default::default(),
            })
            .collect();
        self.0.snapshots.push(round);
    }
}
