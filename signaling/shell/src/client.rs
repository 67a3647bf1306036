//! A signaling client: sends one NetServ NSLP request towards an address and
//! waits for the response stack. It is a GIST querying node that never
//! responds (the CLI, the SIP server plugin).

use crate::net::local_toward;
use netserv_gist::core::{Config, Event, Node, Toward};
use netserv_gist::wire::{Mri, SessionId};
use netserv_nslp::wire::{self as nslp, Response};
use rand_core::{OsRng, RngCore};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Our NLI peer identity.
    pub node_id: String,
    /// Query transmissions before concluding no appliance is on the path.
    pub query_attempts: u32,
    pub t1: Duration,
    /// Overall wait for the response.
    pub timeout: Duration,
    /// The flow's source in the MRI (default: our address towards the target).
    pub flow_source: Option<IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            node_id: "netserv-signal".into(),
            query_attempts: 3,
            t1: Duration::from_millis(500),
            timeout: Duration::from_secs(20),
            flow_source: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The appliances' answer, nearest first.
    Response(Response),
    /// No GIST node for the NetServ NSLP answered on the path.
    NoAppliance { icmp: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the request cannot be sent: {0}")]
    Send(#[from] netserv_gist::core::SendError),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// The flow a request towards `target` is signed for and sent on: from
/// `opts.flow_source` (default: our address towards the target) to `target`.
pub fn flow_toward(target: IpAddr, opts: &ClientOptions) -> std::io::Result<Mri> {
    let source = match opts.flow_source {
        Some(s) => s,
        None => local_toward(target)?,
    };
    Ok(Mri::between(source, target))
}

/// Sends `request` (encoded NSLP bytes with request id `id`, signed for
/// `flow`) towards the flow's destination and waits for its response.
pub async fn request(flow: &Mri, id: u32, request: Vec<u8>, opts: &ClientOptions) -> Result<Outcome, ClientError> {
    let target = flow.query_target();
    let local = local_toward(target)?;
    let bind = SocketAddr::new(if target.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() }, 0);
    let sock = UdpSocket::bind(bind).await?;
    // Unreachables quoting a Query of this socket's (its own port, from `local`).
    let mut icmp = sock.local_addr().ok().and_then(|a| crate::icmp::subscribe(SocketAddr::new(local, a.port())));
    let mut rng = OsRng;
    let start = Instant::now();
    let mut cfg = Config::new(netserv_nslp::NSLPID, opts.node_id.as_bytes());
    cfg.query_attempts = opts.query_attempts.max(1);
    cfg.t1 = opts.t1;
    let mut node = Node::new(cfg, start, &mut rng);
    let mut sid = [0u8; 16];
    rng.fill_bytes(&mut sid);
    node.send(start, local, Toward::Target, SessionId(sid), flow.clone(), request, None, &mut rng)?;
    let deadline = start + opts.timeout;
    let mut buf = vec![0u8; 65_536];
    loop {
        while let Some(t) = node.poll_transmit() {
            sock.send_to(&t.payload, t.destination).await?;
        }
        while let Some(ev) = node.poll_event() {
            match ev {
                Event::Received { from: Toward::Target, data, .. } => match nslp::decode(&data) {
                    Ok(nslp::Message::Response(r)) if r.id == id => return Ok(Outcome::Response(r)),
                    Ok(_) => tracing::debug!("ignoring an NSLP message that is not our response"),
                    Err(e) => tracing::warn!(error = %e, "undecodable NSLP data from the path"),
                },
                Event::NoPeer { icmp, .. } => return Ok(Outcome::NoAppliance { icmp }),
                Event::PeerError { peer, error, .. } => {
                    tracing::warn!(%peer, code = ?error.code, subcode = error.subcode, "GIST error from the path");
                }
                _ => {}
            }
        }
        let wake = node.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                node.handle_datagram(Instant::now(), local, from, buf.get(..n).unwrap_or_default(), false);
            }
            Some(dst) = async { match icmp.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                node.handle_icmp_unreachable(dst);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ClientError::Timeout(opts.timeout));
                }
                node.handle_timeout(now);
            }
        }
    }
}

/// The entries of a response stack that count: those certified appliances
/// signed for this request (`nonce`), each having taken the request from the
/// one before it — the first from us (`first_upstream`, our address toward
/// the target). An entry that is not a certified appliance's, or one made
/// off the path the request took, is dropped with everything after it
/// (logged; how many is the second value): it can neither stand for an
/// appliance nor fail a deployment the certified ones carried out.
pub fn verified_path(
    stack: Vec<nslp::NodeEntry>,
    nonce: &[u8; 16],
    trusted: &[ed25519_dalek::VerifyingKey],
    now_unix: u64,
    first_upstream: Option<IpAddr>,
) -> (Vec<nslp::NodeEntry>, u64) {
    let total = stack.len();
    let mut expected = first_upstream;
    let kept: Vec<nslp::NodeEntry> = stack
        .into_iter()
        .filter(|e| match netserv_nslp::proof::verify_entry(e, nonce, trusted, now_unix) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(node = %e.node_id, status = e.status.as_str(), %why, "an answer that is not a certified appliance's: a hint, not counted");
                false
            }
        })
        .take_while(|e| {
            let follows = expected.is_some() && e.upstream == expected;
            if follows {
                expected = e.downstream;
            } else {
                tracing::warn!(node = %e.node_id, upstream = ?e.upstream, ?expected, "a certified answer off the path the request took: not counted, nor any after it");
            }
            follows
        })
        .collect();
    let dropped = (total - kept.len()) as u64;
    (kept, dropped)
}

/// The address an appliance's server modules listen on, from its
/// capabilities (`server-address=<ip>`).
pub fn server_address(capabilities: &[String]) -> Option<IpAddr> {
    capabilities.iter().find_map(|c| c.strip_prefix("server-address=")?.parse().ok())
}
