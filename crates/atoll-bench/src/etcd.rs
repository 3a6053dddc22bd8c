//! The established consensus store the naming benchmark runs beside atoll: three etcd
//! members on loopback (the Debian `etcd-server` package), each with its own data directory
//! (etcd fsyncs its write-ahead log before it acknowledges), driven through etcd's JSON
//! gateway over long-lived HTTP/1.1 connections, one per client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Three etcd members on loopback; killed, and their data removed, on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    children: Vec<Child>,
    dir: PathBuf,
    /// Each member's client address (`127.0.0.1:PORT`).
    pub clients: Vec<String>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdCluster {
    /// Starts three members and waits until they elect a leader. `Err` says why not (etcd
    /// not installed, or it did not come up).
    pub fn start() -> Result<EtcdCluster, String> {
        let etcd = std::env::var("ATOLL_ETCD").unwrap_or_else(|_| "etcd".into());
        let version = Command::new(&etcd).arg("--version").output();
        if !version.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "no `{etcd}` to run (apt-get install etcd-server, or set ATOLL_ETCD)"
            ));
        }
        let dir = std::env::temp_dir().join(format!("atoll-etcd-{}", std::process::id()));
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            dir: dir.clone(),
            clients: clients.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        };
        for i in 0..3 {
            let child = Command::new(&etcd)
                .arg(format!("--name=e{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("e{i}")).display()
                ))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{}",
                    clients[i]
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{}",
                    clients[i]
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", peers[i]))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                    peers[i]
                ))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=atoll-bench")
                .arg("--logger=zap")
                .arg("--log-level=error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {etcd}: {e}"))?;
            cluster.children.push(child);
        }
        let until = Instant::now() + Duration::from_secs(30);
        while cluster.leader().is_none() {
            if Instant::now() > until {
                return Err("etcd elected no leader within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// The index of the member that leads, if they agree on one.
    pub fn leader(&self) -> Option<usize> {
        let mut leader = None;
        for (i, addr) in self.clients.iter().enumerate() {
            let status = Client::connect(addr)
                .ok()?
                .post("/v3/maintenance/status", &json!({}))
                .ok()?;
            let me = status["header"]["member_id"].as_str()?.to_string();
            if status["leader"].as_str()? == me {
                leader = Some(i);
            }
        }
        leader
    }
}

/// One long-lived HTTP/1.1 connection to an etcd member's JSON gateway.
#[derive(Debug)]
pub struct Client {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: &str) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            addr: addr.to_string(),
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// POSTs `body` as JSON to `path`; the answer's JSON.
    pub fn post(&mut self, path: &str, body: &Value) -> std::io::Result<Value> {
        let body = body.to_string();
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        self.writer.flush()?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("not an HTTP answer"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.ok_or_else(|| bad("no content length"))?;
            body.resize(length, 0);
            self.reader.read_exact(&mut body)?;
        }
        if status != 200 {
            return Err(bad(&format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| bad(&e.to_string()))
    }

    /// Puts `key` = `value`.
    pub fn put(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        self.post(
            "/v3/kv/put",
            &json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())}),
        )
        .map(drop)
    }
}

/// Standard base64 with padding (what etcd's gateway expects for bytes).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Put latencies in µs, one in flight, against member `at`.
pub fn put_latencies(cluster: &EtcdCluster, at: usize, n: usize) -> Vec<u64> {
    let mut client = Client::connect(&cluster.clients[at]).expect("connect to etcd");
    (0..n)
        .map(|i| {
            let t = Instant::now();
            client.put(&format!("lat-{i}"), "pid").expect("etcd put");
            t.elapsed().as_micros() as u64
        })
        .collect()
}

/// Runs `clients` threads for `run`, each calling `step` (with its client number and
/// connection) over and over; returns completed steps per second.
fn per_second(
    cluster: &EtcdCluster,
    clients: usize,
    run: Duration,
    connect_to: impl Fn(usize) -> usize,
    step: impl Fn(usize, &mut Client, u64) + Send + Sync + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let step = Arc::new(step);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, done, step) = (stop.clone(), done.clone(), step.clone());
            let addr = cluster.clients[connect_to(c)].clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&addr).expect("connect to etcd");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    step(c, &mut client, i);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(run);
    let count = done.load(Ordering::Relaxed);
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    count as f64 / elapsed.as_secs_f64()
}

/// Puts per second with `clients` connections to member `at`, each with one put in flight.
pub fn puts_per_second(cluster: &EtcdCluster, at: usize, clients: usize, run: Duration) -> f64 {
    per_second(
        cluster,
        clients,
        run,
        |_| at,
        |c, client, i| {
            client.put(&format!("tp-{c}-{i}"), "pid").expect("etcd put");
        },
    )
}

/// Lock+unlock cycles per second with `clients` contending for one lock (etcd's lock
/// service: each client holds a lease, locks with it, and unlocks the key it was given).
/// The clients spread over the members.
pub fn lock_cycles(cluster: &EtcdCluster, clients: usize, run: Duration) -> f64 {
    let members = cluster.clients.len();
    let name = base64(b"the-lock");
    // One lease per client, taken on its first cycle.
    let leases: Arc<std::sync::Mutex<Vec<Option<Value>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; clients]));
    per_second(
        cluster,
        clients,
        run,
        move |c| c % members,
        move |c, client, _| {
            let lease = leases.lock().expect("leases")[c].clone();
            let lease = match lease {
                Some(lease) => lease,
                None => {
                    let lease = client
                        .post("/v3/lease/grant", &json!({"TTL": 60}))
                        .expect("etcd lease")["ID"]
                        .clone();
                    leases.lock().expect("leases")[c] = Some(lease.clone());
                    lease
                }
            };
            let locked = client
                .post("/v3/lock/lock", &json!({"name": name, "lease": lease}))
                .expect("etcd lock");
            client
                .post("/v3/lock/unlock", &json!({"key": locked["key"]}))
                .expect("etcd unlock");
        },
    )
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"the-lock"), "dGhlLWxvY2s=");
    }
}
