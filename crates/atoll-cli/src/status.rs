//! `atoll status`: what a running node says about itself and the cluster, fetched from its
//! HTTP service (`http` in the node's configuration).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use atoll_cluster::NodeStatus;

use crate::error::Error;
use crate::grains::GrainsView;

/// How long `atoll status` waits to connect and for each read.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a status of a very large cluster still fits).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// `GET path` from the node's HTTP service at `addr` (`HOST:PORT`); returns the status code
/// and body. Fails with [`Error::Unreachable`] when nothing answers within [`TIMEOUT`].
pub fn get(addr: &str, path: &str) -> Result<(u16, String), Error> {
    let unreachable = |reason: String| Error::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let targets: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve it: {e}")))?
        .collect();
    let mut last = "it resolves to no address".to_string();
    for target in targets {
        match fetch(target, addr, path) {
            Ok(answer) => return Ok(answer),
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

fn fetch(target: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // HTTP/1.0: the server closes after one answer and never chunks it. The request goes
    // out in one write: `write!` on the stream would send each piece of the format string
    // as its own segment, and a server that answers after its first read would close with
    // the rest unread, which resets the connection under its answer.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}

/// Fetches `/api/status` from the node at `addr`.
pub fn fetch_status(addr: &str) -> Result<NodeStatus, Error> {
    let (code, body) = get(addr, "/api/status")?;
    if code != 200 {
        return Err(Error::BadAnswer {
            addr: addr.to_string(),
            reason: format!("HTTP {code}: {}", body.trim()),
        });
    }
    serde_json::from_str(&body).map_err(|e| Error::BadAnswer {
        addr: addr.to_string(),
        reason: format!("not a node status: {e}"),
    })
}

/// Fetches `/api/grains` from the node at `addr`: `None` if the node hosts no grains.
pub fn fetch_grains(addr: &str) -> Result<Option<GrainsView>, Error> {
    let (code, body) = get(addr, "/api/grains")?;
    match code {
        200 => serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| Error::BadAnswer {
                addr: addr.to_string(),
                reason: format!("not a grains view: {e}"),
            }),
        404 => Ok(None),
        _ => Err(Error::BadAnswer {
            addr: addr.to_string(),
            reason: format!("HTTP {code}: {}", body.trim()),
        }),
    }
}

/// The GRAINS section of `atoll status`: this node's counters and every activation.
pub fn render_grains(view: Option<&GrainsView>) -> String {
    let mut out = String::from("\nGRAINS\n");
    let Some(view) = view else {
        out.push_str("  (this node hosts no grains)\n");
        return out;
    };
    out.push_str(&format!(
        "  here: active={} activations={} deactivations={} migrations={} adoptions={}\n",
        view.active, view.activations, view.deactivations, view.migrations, view.adoptions
    ));
    table(
        &mut out,
        &crate::grains::HEADER,
        crate::grains::rows(view, None),
    );
    out
}

/// The human-readable report `atoll status` prints.
pub fn render(s: &NodeStatus) -> String {
    let mut out = format!(
        "node {} id={} creation={} addr={} processes={}\n",
        s.name, s.id, s.creation, s.addr, s.processes
    );
    if let Some(b) = s.udp_buffer.filter(|b| b.capped) {
        out.push_str(&format!(
            "  warning: UDP receive buffer capped by the kernel at {} bytes (asked {}): large messages may see drops; raise net.core.rmem_max and net.core.wmem_max\n",
            b.granted, b.asked
        ));
    }
    out.push_str("\nMEMBERS\n");
    if s.members.is_empty() {
        out.push_str("  (membership is not enabled on this node)\n");
    }
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.name, if m.this_node { "*" } else { "" }),
                m.state.clone(),
                m.generation.to_string(),
                m.addr.clone(),
                m.roles.join(","),
                m.processes.map_or("-".into(), |p| p.to_string()),
            ]
        })
        .collect();
    table(
        &mut out,
        &["NAME", "STATE", "GEN", "ADDR", "ROLES", "PROCS"],
        rows,
    );
    if let Some(last) = &s.fencing.last {
        out.push_str(&format!(
            "  fenced {} time(s); last: generation {} -> {} ({}), released {} name(s), {} lock(s), left {} group(s)\n",
            s.fencing.times,
            last.old_generation,
            last.new_generation,
            if last.by_itself { "downed itself" } else { "declared down" },
            last.names,
            last.locks,
            last.groups
        ));
    }
    if s.fencing.self_downed {
        out.push_str("  downed itself (split brain): cut off from a majority of the membership\n");
    }

    out.push_str("\nRAFT\n");
    match &s.raft {
        None => out.push_str("  (consensus is not configured on this node)\n"),
        Some(r) => {
            let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            out.push_str(&format!(
                "  role={} leader={} term={} commit={} applied={} registry={}\n  voters: {}\n",
                r.role,
                r.leader.as_deref().unwrap_or("unknown"),
                opt(r.term),
                opt(r.commit_index),
                opt(r.last_applied),
                r.registry_index,
                r.voters.join(", ")
            ));
        }
    }

    out.push_str("\nNAMES\n");
    let rows = s
        .names
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.scope.clone(),
                n.pid.clone(),
                n.node.clone(),
            ]
        })
        .collect();
    table(&mut out, &["NAME", "SCOPE", "PID", "NODE"], rows);

    out.push_str("\nGROUPS\n");
    let rows = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.members.len().to_string(),
                g.local.to_string(),
            ]
        })
        .collect();
    table(&mut out, &["GROUP", "MEMBERS", "HERE"], rows);

    out.push_str("\nSERVICES\n");
    let rows = s
        .services
        .iter()
        .flat_map(|sv| {
            sv.offers.iter().map(|o| {
                vec![
                    sv.name.clone(),
                    o.node.clone(),
                    o.pid.clone(),
                    o.load.to_string(),
                ]
            })
        })
        .collect();
    table(&mut out, &["SERVICE", "NODE", "PID", "LOAD"], rows);

    out.push_str(&format!(
        "\nPROCESS TABLE ({} processes)\n",
        s.data.table_size
    ));
    let rows = s
        .data
        .per_node
        .iter()
        .map(|(node, n)| vec![node.clone(), n.to_string()])
        .collect();
    table(&mut out, &["NODE", "PROCESSES"], rows);

    out.push_str("\nLOCKS\n");
    let rows = s
        .locks
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.holder.clone(),
                l.node.clone(),
                l.token.to_string(),
            ]
        })
        .collect();
    table(&mut out, &["LOCK", "HOLDER", "NODE", "TOKEN"], rows);
    out
}

/// Appends an aligned table (two-space indent), or `(none)` when `rows` is empty.
fn table(out: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    out.push_str(&aligned("  ", header, &rows));
}

/// `header` and `rows` as lines of columns padded to their widest cell, each line after
/// `indent`.
pub(crate) fn aligned(indent: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        format!("{indent}{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_nobody_listens_on_is_a_clear_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = fetch_status(&addr).unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains(&addr), "{e}");
    }

    #[test]
    fn a_server_that_is_not_a_node_is_a_bad_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request, up to its blank line, before answering: closing with
            // request bytes unread would reset the connection rather than end the answer.
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed mid-request: {request:?}");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(request.starts_with(b"GET /api/status HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\n{\"hello\": 1}")
                .unwrap();
        });
        let e = fetch_status(&addr).unwrap_err();
        server.join().unwrap();
        assert!(matches!(e, Error::BadAnswer { .. }), "{e:?}");
    }
}
