//! The node's HTTP service: a live status page, a JSON API and Prometheus metrics.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the status page (polls `/api/status`) |
//! | `/api/status` | everything below in one object ([`atoll_cluster::NodeStatus`]) |
//! | `/api/cluster` | this node, the members and the Raft core |
//! | `/api/nodes/NAME` | one member, 404 if unknown |
//! | `/api/nodes/NAME/processes` | that node's processes (live attach RPC), 404 if unknown |
//! | `/api/processes` | every process in the cluster, from the replicated process table |
//! | `/api/services`, `/api/services/NAME` | services offered in the cluster and their offers |
//! | `/api/names`, `/api/names/NAME` | names in every scope |
//! | `/api/groups`, `/api/groups/NAME` | process groups |
//! | `/api/locks`, `/api/locks/NAME` | consensus locks |
//! | `/api/grains` | grain activations in the cluster and this node's grain counters ([`crate::grains::GrainsView`]); 404 on a node without grains |
//! | `/api/nodes/NAME/grains` | the activations on one node |
//! | `/metrics` | Prometheus text format ([`atoll_cluster::Node::metrics`], and [`crate::grains::metrics`]) |
//!
//! Unknown paths and unknown names answer 404 with `{"error": "..."}`.

use std::net::SocketAddr;

use atoll_cluster::{MemberStatus, Node, NodeStatus, ProcessInfoWire, RaftView, StatusWire};
use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use atoll_grain::Grains;

use crate::error::Error;
use crate::grains::GrainsView;

/// The status page.
const STATUS_PAGE: &str = include_str!("status.html");

/// Binds `addr` and serves `node` there until the returned task is dropped or aborted.
pub async fn serve(
    node: Node,
    grains: Option<Grains>,
    addr: SocketAddr,
) -> Result<(SocketAddr, ServeTask), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Runtime {
            what: "HTTP listener",
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Runtime {
        what: "HTTP listener",
        source,
    })?;
    let app = router(node, grains);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the HTTP service stopped: {e}");
        }
    });
    Ok((bound, ServeTask(task)))
}

/// The running HTTP service; stops when dropped.
#[derive(Debug)]
pub struct ServeTask(tokio::task::JoinHandle<()>);

impl Drop for ServeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the handlers share: the node and its grain service, if it hosts grains.
#[derive(Clone)]
struct Api {
    node: Node,
    grains: Option<Grains>,
}

impl FromRef<Api> for Node {
    fn from_ref(api: &Api) -> Node {
        api.node.clone()
    }
}

/// The routes, on `node` and its grain service.
pub fn router(node: Node, grains: Option<Grains>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/api/status", get(status))
        .route("/api/cluster", get(cluster))
        .route("/api/nodes/{name}", get(member))
        .route("/api/nodes/{name}/processes", get(node_processes))
        .route("/api/processes", get(table))
        .route("/api/services", get(services))
        .route("/api/services/{name}", get(service))
        .route("/api/names", get(names))
        .route("/api/names/{name}", get(name))
        .route("/api/groups", get(groups))
        .route("/api/groups/{name}", get(group))
        .route("/api/locks", get(locks))
        .route("/api/locks/{name}", get(lock))
        .route("/api/grains", get(all_grains))
        .route("/api/nodes/{name}/grains", get(node_grains))
        .route("/metrics", get(metrics))
        .fallback(|| async { not_found("no such path".into()) })
        .with_state(Api { node, grains })
}

fn not_found(error: String) -> Response {
    (StatusCode::NOT_FOUND, Json(ApiError { error })).into_response()
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

async fn status(State(node): State<Node>) -> Json<NodeStatus> {
    Json(node.status().await)
}

/// `/api/cluster`: this node, the members and the Raft core.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    /// The members, itself included.
    pub members: Vec<MemberStatus>,
    /// The Raft core, if consensus is configured.
    pub raft: Option<RaftView>,
}

async fn cluster(State(node): State<Node>) -> Json<ClusterView> {
    let s = node.status().await;
    Json(ClusterView {
        node: s.name,
        members: s.members,
        raft: s.raft,
    })
}

async fn member(State(node): State<Node>, Path(name): Path<String>) -> Response {
    let s = node.status().await;
    // The newest generation of a member that restarted.
    match s.members.into_iter().rev().find(|m| m.name == name) {
        Some(m) => Json(m).into_response(),
        None => not_found(format!("no member named {name:?}")),
    }
}

/// One process, as the API and `atoll attach` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessView {
    /// Its pid.
    pub pid: String,
    /// Its registered name.
    pub name: Option<String>,
    /// Its actor type.
    pub actor_type: String,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u64,
    /// Messages it has handled.
    pub messages_handled: u64,
    /// Milliseconds since it was spawned.
    pub uptime_ms: u64,
    /// `starting`, `running`, `waiting` or `exiting`.
    pub status: String,
    /// How many processes it is linked to.
    pub links: usize,
    /// How many processes it monitors.
    pub monitors: usize,
    /// Whether it traps exits.
    pub trap_exit: bool,
}

impl From<ProcessInfoWire> for ProcessView {
    fn from(p: ProcessInfoWire) -> Self {
        ProcessView {
            pid: p.pid.to_string(),
            name: p.name,
            actor_type: p.actor_type,
            mailbox_len: p.mailbox_len,
            messages_handled: p.messages_handled,
            uptime_ms: p.uptime_ms,
            status: match p.status {
                StatusWire::Starting => "starting",
                StatusWire::Running => "running",
                StatusWire::Waiting => "waiting",
                StatusWire::Exiting => "exiting",
            }
            .into(),
            links: p.links.len(),
            monitors: p.monitors.len(),
            trap_exit: p.trap_exit,
        }
    }
}

/// One entry of the cluster's process table, as `/api/processes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    /// Its pid.
    pub pid: String,
    /// Its node's name (or id, when it is not a known member).
    pub node: String,
    /// Its actor type's name.
    pub agent_type: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// `starting`, `running`, `busy` or `stopping`.
    pub status: String,
    /// Its load.
    pub load: u32,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u32,
    /// Messages it has handled.
    pub messages_handled: u64,
}

async fn table(State(node): State<Node>) -> Json<Vec<TableEntry>> {
    let s = node.status().await;
    let name_of = |id: atoll_core::NodeId| {
        s.members
            .iter()
            .rev()
            .find(|m| m.id == id.to_string())
            .map_or_else(|| id.to_string(), |m| m.name.clone())
    };
    let mut entries: Vec<TableEntry> = node
        .cluster_processes()
        .into_iter()
        .map(|ad| TableEntry {
            pid: ad.pid.to_string(),
            node: if ad.pid.node == node.id() {
                node.name().to_string()
            } else {
                name_of(ad.pid.node)
            },
            agent_type: ad.agent_type,
            capabilities: ad.capabilities.into_iter().collect(),
            status: format!("{:?}", ad.status).to_lowercase(),
            load: ad.resource_summary.load,
            mailbox_len: ad.resource_summary.mailbox_len,
            messages_handled: ad.resource_summary.messages_handled,
        })
        .collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node).then(a.pid.cmp(&b.pid)));
    Json(entries)
}

async fn services(State(node): State<Node>) -> Json<Vec<atoll_cluster::ServiceStatus>> {
    Json(node.status().await.services)
}

async fn service(State(node): State<Node>, Path(name): Path<String>) -> Response {
    match node
        .status()
        .await
        .services
        .into_iter()
        .find(|s| s.name == name)
    {
        Some(s) => Json(s).into_response(),
        None => not_found(format!("no service named {name:?}")),
    }
}

async fn processes(State(node): State<Node>) -> Json<Vec<ProcessView>> {
    Json(node.processes().into_iter().map(Into::into).collect())
}

async fn node_processes(State(node): State<Node>, Path(name): Path<String>) -> Response {
    if name == node.name() {
        return processes(State(node)).await.into_response();
    }
    let Some(remote) = node.remote(&name) else {
        return not_found(format!("no reachable node named {name:?}"));
    };
    match remote.processes().await {
        Ok(list) => {
            Json(list.into_iter().map(ProcessView::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(ApiError {
                error: format!("node {name:?} did not answer: {e}"),
            }),
        )
            .into_response(),
    }
}

async fn names(State(node): State<Node>) -> Response {
    Json(node.status().await.names).into_response()
}

async fn name(State(node): State<Node>, Path(name): Path<String>) -> Response {
    let found: Vec<_> = node
        .status()
        .await
        .names
        .into_iter()
        .filter(|n| n.name == name)
        .collect();
    if found.is_empty() {
        return not_found(format!("no process is registered as {name:?}"));
    }
    Json(found).into_response()
}

async fn groups(State(node): State<Node>) -> Response {
    Json(node.status().await.groups).into_response()
}

async fn group(State(node): State<Node>, Path(name): Path<String>) -> Response {
    match node
        .status()
        .await
        .groups
        .into_iter()
        .find(|g| g.name == name)
    {
        Some(g) => Json(g).into_response(),
        None => not_found(format!("no group named {name:?} has members")),
    }
}

async fn locks(State(node): State<Node>) -> Response {
    Json(node.status().await.locks).into_response()
}

async fn lock(State(node): State<Node>, Path(name): Path<String>) -> Response {
    match node
        .status()
        .await
        .locks
        .into_iter()
        .find(|l| l.name == name)
    {
        Some(l) => Json(l).into_response(),
        None => not_found(format!("no lock named {name:?} is held")),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let mut body = api.node.metrics().await;
    if let Some(grains) = &api.grains {
        body.push_str(&crate::grains::metrics(
            &crate::grains::view(&api.node, grains).await,
        ));
    }
    (
        [(header::CONTENT_TYPE, atoll_cluster::METRICS_CONTENT_TYPE)],
        body,
    )
        .into_response()
}

async fn grains_view(api: &Api) -> Result<GrainsView, Response> {
    match &api.grains {
        Some(grains) => Ok(crate::grains::view(&api.node, grains).await),
        None => Err(not_found(
            "this node hosts no grains (its configuration does not set grains = true)".into(),
        )),
    }
}

async fn all_grains(State(api): State<Api>) -> Response {
    match grains_view(&api).await {
        Ok(view) => Json(view).into_response(),
        Err(answer) => answer,
    }
}

async fn node_grains(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let mut view = match grains_view(&api).await {
        Ok(view) => view,
        Err(answer) => return answer,
    };
    if name != api.node.name() && api.node.remote(&name).is_none() {
        return not_found(format!("no reachable node named {name:?}"));
    }
    view.grains.retain(|g| g.node == name);
    view.per_node.retain(|n, _| *n == name);
    Json(view.grains).into_response()
}
