//! Chaos across real processes: `atoll node` processes in network namespaces, a nemesis
//! driven by a seed, a workload whose every operation is recorded as a [`history`], and
//! [`check`]ers that read the history for anomalies.
//!
//! The binary `atoll-chaos` runs it (`--minutes N --seed S`, as root); see RELIABILITY.md.
#![deny(missing_docs)]

pub mod check;
pub mod client;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod protocol;
pub mod resource;
pub mod rng;
pub mod run;
pub mod summary;
pub mod workload;
