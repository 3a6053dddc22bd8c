//! The node's protocol decisions as pure state machines: state in, decisions out; no
//! tasks, no locks, no clock reads. The node's shell feeds them what happens and carries
//! out what they decide; the tests here drive them without sockets.
//!
//! - [`backoff`]: the delays between attempts to reach a peer;
//! - [`bulk`]: large frames on their own stream, and merging them back in order;
//! - [`connect`]: checking a peer's introduction and resolving simultaneous connections;
//! - [`data`]: the process table and service registry on one node, and their gossip;
//! - [`routes`]: addresses of known nodes and the backlog of a connection opened on demand;
//! - [`eventual`]: Eventual (global) names and their conflicts;
//! - [`fence`]: what a node stops claiming once it learns it was declared down;
//! - [`incarnation`]: incarnation numbers that grow across restarts;
//! - [`release`]: which consensus names and locks to release when processes exit, nodes
//!   are lost or restart;
//! - [`split_brain`]: which side of a gossip-plane partition downs the other;
//! - process groups live in [`crate::groups`].

pub mod backoff;
pub mod bulk;
pub mod connect;
pub mod data;
pub mod eventual;
pub mod fence;
pub mod incarnation;
pub mod release;
pub mod routes;
pub mod split_brain;
