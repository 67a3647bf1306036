//! The monitor's I/O: Kamailio's JSON-RPC over its datagram socket, the
//! kernel's socket table, and the appliances' feedback API over HTTP. Each
//! exchange runs on a task of its own and reports back on a channel: the
//! daemon's loop never waits.

use super::monitor::EdgeCounts;
use super::rpc;
use super::socket::{SocketSample, parse_table};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the exchanges report back.
#[derive(Debug)]
pub enum Sample {
    /// The server's processed-requests counter.
    Server(u64),
    /// The server's UDP socket: its receive queue and drops.
    Socket(SocketSample),
    /// An entity's counters so far.
    Edge(String, EdgeCounts),
}

const SAMPLES_PER_TICK: u32 = 5;

/// Reads the server's UDP socket from the kernel's tables 5 times every `interval`,
/// until `tx` closes. A server not found there (the plugin runs in another
/// network namespace, or the server is down) is logged once a minute at
/// most: overload control then has only `capacity` to go by.
pub async fn poll_socket(server: SocketAddr, interval: Duration, tx: mpsc::Sender<Sample>) {
    // An IPv4 server may listen on a dual-stack IPv6 socket: both tables.
    let tables: &[&str] = if server.is_ipv4() { &["/proc/net/udp", "/proc/net/udp6"] } else { &["/proc/net/udp6"] };
    // Several samples a tick: the monitor averages them (one sample may
    // fall just after a burst arrived, or just after it was taken).
    let mut tick = tokio::time::interval(interval / SAMPLES_PER_TICK);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let mut sample: Option<SocketSample> = None;
        for table in tables {
            if let Some(s) = tokio::fs::read_to_string(table).await.ok().and_then(|t| parse_table(&t, server)) {
                let total = sample.get_or_insert_with(SocketSample::default);
                total.rx_queue = total.rx_queue.saturating_add(s.rx_queue);
                total.drops = total.drops.saturating_add(s.drops);
            }
        }
        match sample {
            Some(s) => {
                if tx.send(Sample::Socket(s)).await.is_err() {
                    return;
                }
            }
            None => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(tokio::time::Instant::now());
                    tracing::warn!(%server, "overload control: the server's socket is not in this network namespace's tables; only `capacity` can show overload (/status: queue_visible)");
                }
            }
        }
    }
}

/// Asks Kamailio for its counter every `interval`, until `tx` closes. A
/// server that does not answer within the interval is logged (once a
/// minute at most) and asked again.
pub async fn poll_server(socket: PathBuf, interval: Duration, tx: mpsc::Sender<Sample>) {
    let client = match bind_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "overload control: cannot open a datagram socket for Kamailio's RPC");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut id = 0u64;
    loop {
        tick.tick().await;
        id += 1;
        let asked = async {
            client.send_to(&rpc::request(id), &socket).await?;
            loop {
                let n = client.recv(&mut buf).await?;
                // A late answer to an earlier request is skipped.
                match rpc::parse(buf.get(..n).unwrap_or_default(), id) {
                    Err(rpc::RpcError::WrongId { .. }) => continue,
                    other => return Ok::<_, std::io::Error>(other),
                }
            }
        };
        let outcome = match tokio::time::timeout(interval, asked).await {
            Ok(Ok(Ok(n))) => {
                if tx.send(Sample::Server(n)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_warning = Some(tokio::time::Instant::now());
            tracing::warn!(socket = %socket.display(), error = %outcome, "overload control: Kamailio's statistics are not readable");
        }
    }
}

/// A datagram socket with an abstract address of its own, for Kamailio's answers.
fn bind_client() -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("netserv-plugin-rpc-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    std.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(std)
}

/// Where an entity is reached, and as whom.
#[derive(Debug, Clone)]
pub struct Feedback {
    pub http: reqwest::Client,
    pub tenant: String,
    pub module: String,
    pub token: String,
    pub server: SocketAddr,
}

impl Feedback {
    fn url(&self, api: SocketAddr, tail: &str) -> String {
        format!("http://{api}/api/v1/modules/{}/{}{tail}", self.tenant, self.module)
    }

    /// Posts one report; failures are logged (the next tick sends another).
    pub fn report(
        &self,
        node_id: String,
        api: SocketAddr,
        algorithm: &'static str,
        oc: u32,
        validity_ms: u32,
        seq: u64,
    ) {
        // `seq` is in `oc-seq` units (10^-5 s): sent in its decimal form.
        let body = serde_json::json!({
            "server": self.server.to_string(), "algorithm": algorithm, "oc": oc,
            "validity_ms": validity_ms, "seq": format!("{}.{:05}", seq / 100_000, seq % 100_000),
        });
        let req = self.http.post(self.url(api, "/feedback")).bearer_auth(&self.token).json(&body);
        tokio::spawn(async move {
            match req.send().await {
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::warn!(node = %node_id, %api, %status, answer = %text, "overload control: a report was refused");
                }
                Err(e) => {
                    tracing::warn!(node = %node_id, %api, error = %e, "overload control: a report did not reach the appliance")
                }
            }
        });
    }

    /// Reads an entity's counters and sends them to `tx`.
    pub fn poll(&self, node_id: String, api: SocketAddr, tx: mpsc::Sender<Sample>) {
        let req = self.http.get(self.url(api, "")).bearer_auth(&self.token);
        tokio::spawn(async move {
            let v: serde_json::Value = match req.send().await {
                Ok(r) if r.status().is_success() => match r.json().await {
                    Ok(v) => v,
                    Err(e) => {
                        return tracing::debug!(node = %node_id, error = %e, "overload control: unreadable counters");
                    }
                },
                Ok(r) => {
                    return tracing::debug!(node = %node_id, status = %r.status(), "overload control: counters refused");
                }
                Err(e) => return tracing::debug!(node = %node_id, error = %e, "overload control: counters unreachable"),
            };
            let c = &v["module_counters"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            let counts = EdgeCounts {
                admitted: n("admitted_initial") + n("admitted_priority"),
                retransmitted: n("passed_retransmission"),
                never_shed: n("passed_never_shed"),
                shed: n("shed_initial") + n("shed_priority"),
            };
            let _ = tx.send(Sample::Edge(node_id, counts)).await;
        });
    }
}
