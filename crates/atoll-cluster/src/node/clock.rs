//! The node's wall clock: the operating system's in production, the simulated network's
//! per-machine clock in a simulation (simulated time plus that machine's skew, which the
//! fault plan can shift and jump). Only the cluster data tables' hybrid clocks read it;
//! timeouts and periods run on tokio's monotonic clock, and incarnations do not trust it.

use std::net::SocketAddr;

use crate::transport::MemNetwork;

/// Where a node reads wall time.
pub(super) enum WallClock {
    System,
    Simulated {
        network: MemNetwork,
        addr: SocketAddr,
    },
}

impl WallClock {
    /// Milliseconds since the Unix epoch, as this node's clock says.
    pub(super) fn now_ms(&self) -> u64 {
        match self {
            WallClock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            WallClock::Simulated { network, addr } => network.wall_ms(*addr),
        }
    }
}
