//! Which of a node's own processes to advertise, re-advertise or withdraw, given what it
//! advertised last and what its processes look like now.

use std::collections::BTreeMap;

use atoll_core::Pid;
use atoll_data::ProcessAdvertisement;

/// What changed in a node's own processes since the last round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AdvertisePlan {
    /// New processes, and ones whose advertisement changed enough to tell the cluster.
    pub advertise: Vec<ProcessAdvertisement>,
    /// Processes that exited.
    pub withdraw: Vec<Pid>,
}

/// What the node last advertised of one process, and when.
#[derive(Debug, Clone)]
pub struct Advertised {
    /// The advertisement.
    pub ad: ProcessAdvertisement,
    /// Wall time it was advertised, in milliseconds.
    pub at_ms: u64,
}

/// Compares the node's processes now (`current`) with what it advertised (`advertised`).
///
/// A new process, an exited one, and a change of type, capabilities or status are told at
/// once; a change only in the counters (mailbox, handled, load) waits until `refresh_ms`
/// after the last advertisement of that process, so a busy process does not turn every
/// round into table churn.
pub fn plan(
    advertised: &BTreeMap<Pid, Advertised>,
    current: &[ProcessAdvertisement],
    now_ms: u64,
    refresh_ms: u64,
) -> AdvertisePlan {
    let mut out = AdvertisePlan::default();
    let mut present = std::collections::BTreeSet::new();
    for ad in current {
        present.insert(ad.pid);
        let tell = match advertised.get(&ad.pid) {
            None => true,
            Some(last) => {
                let l = &last.ad;
                l.agent_type != ad.agent_type
                    || l.capabilities != ad.capabilities
                    || l.status != ad.status
                    || (l.resource_summary != ad.resource_summary
                        && now_ms.saturating_sub(last.at_ms) >= refresh_ms)
            }
        };
        if tell {
            out.advertise.push(ad.clone());
        }
    }
    out.withdraw = advertised
        .keys()
        .filter(|pid| !present.contains(pid))
        .copied()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_core::NodeId;
    use atoll_data::{ProcessStatus, ResourceSummary};

    fn ad(serial: u64, status: ProcessStatus, mailbox: u32) -> ProcessAdvertisement {
        ProcessAdvertisement {
            pid: Pid::new(NodeId::from_bytes([1; 16]), 1, serial),
            agent_type: "Worker".into(),
            capabilities: Default::default(),
            status,
            resource_summary: ResourceSummary {
                mailbox_len: mailbox,
                ..Default::default()
            },
        }
    }

    fn advertised(ads: &[ProcessAdvertisement], at_ms: u64) -> BTreeMap<Pid, Advertised> {
        ads.iter()
            .map(|a| {
                (
                    a.pid,
                    Advertised {
                        ad: a.clone(),
                        at_ms,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn new_and_exited_processes_are_told_at_once() {
        let before = advertised(&[ad(1, ProcessStatus::Running, 0)], 1_000);
        let p = plan(&before, &[ad(2, ProcessStatus::Running, 0)], 1_001, 5_000);
        assert_eq!(p.advertise, [ad(2, ProcessStatus::Running, 0)]);
        assert_eq!(p.withdraw, [ad(1, ProcessStatus::Running, 0).pid]);
    }

    #[test]
    fn a_status_change_is_told_at_once_and_counters_wait_for_the_refresh() {
        let before = advertised(&[ad(1, ProcessStatus::Running, 0)], 1_000);
        let busy = [ad(1, ProcessStatus::Busy, 0)];
        assert_eq!(plan(&before, &busy, 1_001, 5_000).advertise, busy);
        let counters = [ad(1, ProcessStatus::Running, 7)];
        assert!(plan(&before, &counters, 1_001, 5_000).advertise.is_empty());
        assert_eq!(plan(&before, &counters, 6_000, 5_000).advertise, counters);
        // Nothing changed: nothing told, however long ago.
        let same = [ad(1, ProcessStatus::Running, 0)];
        assert_eq!(
            plan(&before, &same, 60_000, 5_000),
            AdvertisePlan::default()
        );
    }
}
