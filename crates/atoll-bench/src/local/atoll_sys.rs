//! atoll implementation of the `local_actors` workloads.

use crate::{Config, Figures};

/// Runs the `local_actors` workloads on atoll.
#[allow(
    clippy::unimplemented,
    reason = "placeholder until the atoll workloads are written"
)]
pub async fn run(_cfg: &Config) -> Figures {
    unimplemented!("atoll part written separately")
}
