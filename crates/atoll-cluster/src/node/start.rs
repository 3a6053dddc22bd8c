//! Starting a node: on QUIC (`Node::start`) or on a simulated network
//! (`Node::start_simulated`), both ending in the same node.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use atoll_actor::Runtime;

use super::clock::WallClock;
use atoll_raft::{Disk, SimDisk};
use atoll_swim::MemberMeta;
use tracing::info;

use super::connect::accept_loop;
use super::routing::Link;
use super::{Inner, Node, data, fence, incarnation, membership, naming, status};
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::groups::Groups;
use crate::protocol::eventual::EventualNames;
use crate::transport::{Endpoint, MemNetwork};

impl Node {
    /// Starts a node: binds its QUIC endpoint and accepts peers.
    ///
    /// Must run inside a tokio runtime. The node's incarnation (`creation`) is new on every
    /// start, so pids of an earlier run are never taken for pids of this one: the larger of
    /// the wall clock's quarter-seconds and one more than the number recorded in
    /// [`NodeConfig::state_dir`] (or a voter's data directory), recorded there (synced)
    /// before use. A node with no such directory has the wall clock alone: restarted after
    /// its clock stepped back, it can repeat an earlier run's incarnation.
    ///
    /// With [`NodeConfig::membership`] set, the node also joins the cluster through the
    /// configured seeds (see [`Node::membership`]).
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        let member_meta = member_meta(&config)?;
        let server = atoll_net::server_config(
            &config.tls.key,
            &config.tls.cert,
            &config.tls.trust,
            &config.transport,
        )
        .map_err(|e| StartError::Tls(e.to_string()))?;
        let client = atoll_net::client_config(
            &config.tls.key,
            &config.tls.cert,
            &config.tls.trust,
            &config.transport,
        )
        .map_err(|e| StartError::Tls(e.to_string()))?;
        let bound =
            atoll_net::bind(config.listen, server, client, &config.transport).map_err(|e| {
                StartError::Bind {
                    addr: config.listen,
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        let id = config.identity.node_id();
        // Only a voter owns its data directory; a member's stays uncreated.
        let record_dir = config.state_dir.clone().or_else(|| {
            config
                .consensus
                .as_ref()
                .filter(|c| c.is_voter(id))
                .map(|c| c.data_dir.clone())
        });
        let creation = incarnation::next(record_dir.as_deref()).map_err(StartError::Incarnation)?;
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), (id, creation));
        let started = Started {
            endpoint: Endpoint::Quic(bound.endpoint),
            udp_buffer: Some(bound.udp_buffer),
            creation,
            seed,
            clock: WallClock::System,
            member_meta,
            disk: Disk::Files,
        };
        Self::start_on(config, started)
    }

    /// Starts a node on a simulated network instead of QUIC: the same node, its
    /// connections in memory (see [`MemNetwork`]), its randomness from the network, its
    /// incarnation from the machine's simulated wall clock and the record on `disk` (the
    /// same rule as [`Node::start`]), and a Raft voter's store on the simulated `disk` (which loses unsynced
    /// writes when it crashes). TLS settings are not used; node ids still come from
    /// `config.identity`. Must run inside a tokio runtime (a current-thread one on a paused
    /// clock makes the run repeatable).
    pub fn start_simulated(
        config: NodeConfig,
        network: &MemNetwork,
        disk: SimDisk,
    ) -> Result<Node, StartError> {
        let member_meta = member_meta(&config)?;
        let id = config.identity.node_id();
        let endpoint = network
            .bind(config.listen, id)
            .map_err(|e| StartError::Bind {
                addr: config.listen,
                source: std::io::Error::other(e),
            })?;
        let started = Started {
            endpoint: Endpoint::Mem(endpoint),
            udp_buffer: None,
            creation: incarnation::next_simulated(network.wall_ms(config.listen), &disk),
            seed: network.next_seed(),
            clock: WallClock::Simulated {
                network: network.clone(),
                addr: config.listen,
            },
            member_meta,
            disk: Disk::Simulated(disk),
        };
        Self::start_on(config, started)
    }

    fn start_on(config: NodeConfig, started: Started) -> Result<Node, StartError> {
        let Started {
            endpoint,
            udp_buffer,
            creation,
            seed,
            clock,
            member_meta,
            disk,
        } = started;
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let id = config.identity.node_id();
        let naming = config.consensus.map(|c| naming::Naming::new(c, id, disk));
        let rt = Runtime::with_identity(id, creation);
        let inner = Arc::new(Inner {
            name: config.name,
            id,
            rt: rt.clone(),
            identity: config.identity,
            certificate_proves_id: config.tls.proves_node_id,
            endpoint: Arc::new(endpoint),
            local_addr,
            udp_buffer,
            seed,
            clock,
            max_frame_len: config.max_frame_len,
            message_streams: config.message_streams.max(1),
            reconnect: (config.reconnect_initial, config.reconnect_max),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            peers: RwLock::default(),
            wanted: Mutex::default(),
            globals: RwLock::new(EventualNames::new(id)),
            name_lost: Mutex::default(),
            groups: Mutex::new(Groups::new(id)),
            spawnables: RwLock::default(),
            next_request: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            datagrams: Mutex::default(),
            datagram_send_buffer: config.transport.datagram_send_buffer,
            swim: OnceLock::new(),
            member_events: Mutex::default(),
            routes: Mutex::default(),
            backlog_count: std::sync::atomic::AtomicUsize::new(0),
            naming,
            fence_sinks: fence::FenceSinks::default(),
            request_rtt: status::RttHistogram::default(),
            data: data::DataShell::new(id, &config.data, seed),
        });
        // A fresh runtime: nothing connected it before.
        let _ = rt.set_remote(Arc::new(Link(Arc::downgrade(&inner))));
        tokio::spawn(accept_loop(Arc::downgrade(&inner), inner.endpoint.clone()));
        info!(node = %inner.name, id = %id, addr = %local_addr, creation, "node started");
        if let (Some(settings), Some(meta)) = (config.membership, member_meta) {
            membership::start(&inner, settings, meta)?;
        }
        naming::start(&inner);
        data::start(&inner);
        Ok(Node { inner })
    }
}

/// What starting a node needs besides its configuration.
struct Started {
    endpoint: Endpoint,
    /// The UDP socket's receive buffer (none on a simulated network).
    udp_buffer: Option<atoll_net::UdpBuffer>,
    creation: u32,
    seed: u64,
    clock: WallClock,
    member_meta: Option<MemberMeta>,
    disk: Disk,
}

/// Checks the configuration before anything is bound; returns the membership metadata it
/// asks for.
fn member_meta(config: &NodeConfig) -> Result<Option<MemberMeta>, StartError> {
    config.validate()?;
    Ok(match &config.membership {
        Some(m) => {
            let meta = MemberMeta {
                name: config.name.clone(),
                roles: m.roles.clone(),
                capabilities: m.capabilities.clone(),
            };
            meta.validate()?;
            Some(meta)
        }
        None => None,
    })
}
