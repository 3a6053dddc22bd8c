//! The split-brain policy in the node: reads the membership view now and then, feeds it
//! to [`SplitBrain`](crate::protocol::split_brain::SplitBrain) and carries out what it
//! decides (membership declares members down, or this node fences itself and rejoins).

use std::sync::Weak;
use std::time::Duration;

use atoll_swim::MemberState;
use tracing::{info, warn};

use super::Inner;
use crate::protocol::split_brain::{Decision, Observation, SplitBrain};

/// Runs the keep-majority policy with `window` while the node lives; SWIM probes one
/// member every `probe_interval`.
pub(super) async fn run(weak: Weak<Inner>, window: Duration, probe_interval: Duration) {
    // Often enough that acting comes soon after the window; never busy.
    let every = (window / 8).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = match weak.upgrade() {
        Some(inner) => SplitBrain::new(inner.id, window),
        None => return,
    };
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(swim) = inner.swim.get() else { return };
        if swim.state() == MemberState::Left {
            return;
        }
        let mut seen = Observation::default();
        for m in swim.members() {
            match m.state {
                MemberState::Active => {
                    seen.reachable.insert(m.identity.node);
                }
                MemberState::Suspect => {
                    seen.unreachable.insert(m.identity.node);
                }
                MemberState::Left => {
                    seen.left.insert(m.identity.node);
                }
                // Declared down: out of the membership until a new generation joins.
                MemberState::Unreachable | MemberState::Joining => {}
            }
        }
        if let Some(naming) = &inner.naming {
            seen.voters = naming.voter_nodes();
        }
        // Probed in a shuffled round robin: two probes of one member are at most about two
        // rounds apart.
        let others = seen.reachable.len() + seen.unreachable.len();
        let rounds = u32::try_from(others).unwrap_or(u32::MAX).saturating_mul(2);
        seen.detection = probe_interval.saturating_mul(rounds);
        let now = tokio::time::Instant::now().into_std();
        let decision = policy.step(now, &seen);
        if !policy.is_fenced() && super::fence::status(&inner).self_downed {
            info!(node = %inner.name, "split brain: this node reaches a majority of the membership again");
            super::fence::set_self_downed(&inner, false);
        }
        match decision {
            Decision::Wait => {}
            Decision::Down(members) => {
                info!(node = %inner.name, down = members.len(), "split brain: this side keeps the majority; downing the unreachable members");
                for node in members {
                    swim.declare_down(node);
                }
            }
            Decision::DownMyself => {
                warn!(node = %inner.name, "split brain: this side lost the majority; fencing this node until it reaches the others again");
                super::fence::set_self_downed(&inner, true);
                swim.fence_self();
            }
        }
    }
}
