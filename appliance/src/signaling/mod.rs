//! On-path signaling on the appliance: the shell around the sans-IO GIST node
//! (`netserv-gist`) and the NetServ NSLP (`netserv-nslp`).
//!
//! GIST Queries for the NetServ NSLP that cross this node towards a phone are
//! taken off the wire by the [`tap`] (NFQUEUE on UDP 270) and answered; D-mode
//! messages for this node arrive on its UDP 270 socket. A request that comes
//! from upstream is checked — the tenant's Ed25519 signature, the timestamp
//! window and nonce cache — and, if good, sent on downstream at once while
//! this node carries it out through the controller (the same path as the
//! admin API). When both this node's result and the rest of the path's
//! answer are in (or GIST finds no appliance further on, or the wait runs
//! out), the response goes upstream with this node's entry in front. A
//! refused request is not sent on: the refusal is answered at once.
//!
//! TRIGGER (reverse-path installs): its forward leg only passes through the
//! appliances; the last appliance on the path installs and sends the same
//! signed request back towards the requester in a new session whose MRI has
//! the upstream direction. Every appliance on that return path — which need
//! not be the forward path — installs as for a SETUP, and the return leg's
//! answer becomes the forward leg's.

mod actions;
pub mod tap;

use crate::config::Config;
use crate::controller::Controller;
use crate::dataplane::worker::QueueStats;
use netserv_gist::core::{self as gist, Event, Node, Toward};
use netserv_gist::wire::{Direction, Mri, SessionId};
use netserv_nslp::replay::{ReplayError, ReplayGuard};
use netserv_nslp::sign::Verified;
use netserv_nslp::wire::{NodeEntry, Request, RequestKind, Response, Status};
use netserv_signal::net::{local_toward, unix_ms};
use rand_core::{OsRng, RngCore as _};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SignalingStats {
    pub tap: Arc<tap::TapStats>,
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub responses_sent: AtomicU64,
    pub routing_states: AtomicU64,
    pub pending: AtomicU64,
    /// Confirms whose responder cookie did not verify (forged or stale).
    pub bad_cookies: AtomicU64,
    /// GIST datagrams that did not decode.
    pub decode_errors: AtomicU64,
}

type Key = (SessionId, Mri);

struct Pending {
    kind: RequestKind,
    /// The verified request, kept while a TRIGGER's forward leg is out: the
    /// last appliance turns it around.
    trigger: Option<(Vec<u8>, Verified<Request>)>,
    id: u32,
    hops: u8,
    /// The upstream peer the answer goes to.
    origin: SocketAddr,
    /// This node's entry: outer `None` while its action runs; inner `None`
    /// when the request names another node.
    local: Option<Option<NodeEntry>>,
    /// What came back from further on (empty: no appliance there).
    downstream: Option<Vec<NodeEntry>>,
    deadline: Instant,
}

struct Done {
    key: Key,
    entry: NodeEntry,
}

/// Packets per second through the dataplane, sampled when asked.
struct LoadMeter {
    queues: Arc<Vec<Arc<QueueStats>>>,
    last: (Instant, u64),
}

impl LoadMeter {
    fn total(&self) -> u64 {
        self.queues.iter().map(|q| q.io.packets.load(Relaxed)).sum()
    }

    fn pps(&mut self) -> u32 {
        let now = Instant::now();
        let total = self.total();
        let secs = now.duration_since(self.last.0).as_secs_f64();
        let rate = if secs > 0.0 { (total.saturating_sub(self.last.1)) as f64 / secs } else { 0.0 };
        if secs >= 1.0 {
            self.last = (now, total);
        }
        rate as u32
    }
}

struct Service {
    node: Node,
    node_id: String,
    controller: Arc<Controller>,
    replay: ReplayGuard,
    /// A TRIGGER's return leg carries the bytes already seen on its forward
    /// leg; it is checked against replays of return legs only.
    replay_return: ReplayGuard,
    pending: HashMap<Key, Pending>,
    /// Return-leg session -> the forward-leg session it answers.
    return_legs: HashMap<Key, Key>,
    done_tx: mpsc::UnboundedSender<Done>,
    response_timeout: Duration,
    load: LoadMeter,
    stats: Arc<SignalingStats>,
}

/// Binds the GIST socket and starts the service; Queries from the tap arrive on `intercepted`.
pub async fn spawn(
    cfg: &Config,
    controller: Arc<Controller>,
    queues: Arc<Vec<Arc<QueueStats>>>,
    intercepted: mpsc::Receiver<tap::Intercepted>,
    stats: Arc<SignalingStats>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let s = &cfg.signaling;
    let sock = bind_gist_socket(s.listen)
        .map_err(|e| anyhow::anyhow!("binding the GIST socket on {}: {e} (signaling.listen)", s.listen))?;
    let mut gcfg = gist::Config::new(netserv_nslp::NSLPID, cfg.node_id.as_bytes());
    gcfg.validity = Duration::from_secs(u64::from(s.validity_secs));
    gcfg.query_attempts = s.query_attempts;
    gcfg.t1 = Duration::from_millis(u64::from(s.t1_ms));
    gcfg.max_routing_states = s.max_sessions as usize;
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let total = queues.iter().map(|q| q.io.packets.load(Relaxed)).sum();
    let service = Service {
        node: Node::new(gcfg, Instant::now(), &mut OsRng),
        node_id: cfg.node_id.clone(),
        controller,
        replay: ReplayGuard::new(u64::from(s.replay_window_secs) * 1000, 1_000_000),
        replay_return: ReplayGuard::new(u64::from(s.replay_window_secs) * 1000, 1_000_000),
        pending: HashMap::new(),
        return_legs: HashMap::new(),
        done_tx,
        response_timeout: Duration::from_secs(u64::from(s.response_timeout_secs)),
        load: LoadMeter { queues, last: (Instant::now(), total) },
        stats,
    };
    tracing::info!(listen = %s.listen, queue = s.queue, "on-path signaling running");
    Ok(tokio::spawn(service.run(sock, intercepted, done_rx, netserv_signal::icmp::spawn())))
}

/// The GIST socket, with a receive buffer deep enough for bursts of
/// handshakes (thousands of Confirms arrive together when many sessions start).
fn bind_gist_socket(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(listen), Type::DGRAM, None)?;
    if let Err(e) = sock.set_recv_buffer_size(8 << 20) {
        tracing::debug!(error = %e, "could not enlarge the GIST receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&listen.into())?;
    UdpSocket::from_std(sock.into())
}

fn local_for(peer: IpAddr) -> IpAddr {
    local_toward(peer).unwrap_or(if peer.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() })
}

impl Service {
    async fn run(
        mut self,
        sock: UdpSocket,
        mut intercepted: mpsc::Receiver<tap::Intercepted>,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
        mut icmp: Option<mpsc::UnboundedReceiver<IpAddr>>,
    ) {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush(&sock).await;
            let next = [self.node.poll_timeout(), self.pending.values().map(|p| p.deadline).min()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let local = local_for(from.ip());
                        self.node.handle_datagram(Instant::now(), local, from, buf.get(..n).unwrap_or_default(), false);
                    }
                    Err(e) => tracing::debug!(error = %e, "GIST socket receive error"),
                },
                Some(it) = intercepted.recv() => {
                    let local = local_for(it.from.ip());
                    tracing::debug!(from = %it.from, to = %it.to, "GIST query intercepted");
                    self.node.handle_datagram(Instant::now(), local, it.from, &it.datagram, true);
                }
                Some(dst) = async { match icmp.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    self.node.handle_icmp_unreachable(dst);
                }
                Some(d) = done_rx.recv() => {
                    if let Some(p) = self.pending.get_mut(&d.key) {
                        p.local = Some(Some(d.entry));
                    }
                    self.maybe_complete(d.key);
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    self.node.handle_timeout(now);
                    let late: Vec<Key> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
                    for key in late {
                        if let Some(p) = self.pending.get_mut(&key) {
                            tracing::warn!(session = %key.0, "no answer from further on the path in time; answering with this node's part");
                            p.downstream.get_or_insert_with(Vec::new);
                            p.local.get_or_insert(None);
                        }
                        self.maybe_complete(key);
                    }
                }
            }
            self.drain_events();
            self.stats.routing_states.store(self.node.routing().len() as u64, Relaxed);
            self.stats.pending.store(self.pending.len() as u64, Relaxed);
            self.stats.bad_cookies.store(self.node.stats.bad_cookies, Relaxed);
            self.stats.decode_errors.store(self.node.stats.decode_errors, Relaxed);
        }
    }

    async fn flush(&mut self, sock: &UdpSocket) {
        while let Some(t) = self.node.poll_transmit() {
            if let Err(e) = sock.send_to(&t.payload, t.destination).await {
                tracing::debug!(to = %t.destination, error = %e, "GIST send failed");
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.node.poll_event() {
            match ev {
                Event::Received { session, mri, from: Toward::Origin, peer, hops, data, .. } => {
                    self.on_request((session, mri), peer, hops, data);
                }
                Event::Received { session, mri, from: Toward::Target, data, .. } => {
                    let key = (session, mri);
                    // A return leg's answer is the answer of its forward leg.
                    let key = self.return_legs.remove(&key).unwrap_or(key);
                    match netserv_nslp::wire::decode(&data) {
                        Ok(netserv_nslp::wire::Message::Response(r)) => {
                            if let Some(p) = self.pending.get_mut(&key).filter(|p| p.id == r.id) {
                                p.downstream = Some(r.stack);
                                self.maybe_complete(key);
                            }
                        }
                        _ => tracing::debug!("ignoring NSLP data from downstream that is not a response"),
                    }
                }
                Event::NoPeer { session, mri, icmp, .. } => {
                    let key = (session, mri);
                    tracing::debug!(session = %key.0, icmp, "no appliance further on: this node answers for the path");
                    let trigger = self.pending.get_mut(&key).and_then(|p| p.trigger.take());
                    match trigger {
                        Some((data, req)) => self.turn_around(key, data, req),
                        None => {
                            if let Some(p) = self.pending.get_mut(&key) {
                                p.downstream.get_or_insert_with(Vec::new);
                            }
                            self.maybe_complete(key);
                        }
                    }
                }
                Event::PeerError { peer, error, .. } => {
                    tracing::info!(%peer, code = ?error.code, subcode = error.subcode, "GIST error from a peer");
                }
                Event::RoutingStateExpired { .. } => {}
            }
        }
    }

    /// A request from upstream: refuse it at once, or send it on and act.
    fn on_request(&mut self, key: Key, origin: SocketAddr, hops: u8, data: Vec<u8>) {
        self.stats.requests.fetch_add(1, Relaxed);
        let Some((kind, id)) = netserv_nslp::wire::peek_request(&data) else {
            tracing::debug!("ignoring NSLP data from upstream that is not a request");
            return;
        };
        let mut pending = Pending {
            kind,
            trigger: None,
            id,
            hops,
            origin,
            local: None,
            downstream: None,
            deadline: Instant::now() + self.response_timeout,
        };
        let me = self.node_id.clone();
        let refuse = |status: Status, reason: String| {
            let mut e = NodeEntry::new(me.clone(), status, reason);
            e.address = Some(local_for(origin.ip()));
            e
        };
        let cfg = self.controller.config();
        let verified = match netserv_nslp::sign::user_of(&data) {
            Err(e) => Err(refuse(Status::Malformed, e.to_string())),
            Ok(user) => match cfg.tenant(&user) {
                None => Err(refuse(Status::UnknownTenant, format!("tenant `{user}` is not configured on this node"))),
                Some(t) => match netserv_nslp::sign::verify(&data, &t.public_key) {
                    Err(netserv_nslp::sign::VerifyError::Malformed(e)) => Err(refuse(Status::Malformed, e.to_string())),
                    Err(e) => Err(refuse(Status::BadSignature, e.to_string())),
                    Ok(v) => match self.replay_guard(v.kind, &key.1).check(unix_ms(), v.timestamp_ms, v.nonce) {
                        Err(e @ ReplayError::Stale { .. }) => Err(refuse(Status::Stale, e.to_string())),
                        Err(e @ ReplayError::Replayed) => Err(refuse(Status::Replay, e.to_string())),
                        Err(e @ ReplayError::Full) => Err(refuse(Status::LimitExceeded, e.to_string())),
                        Ok(()) => Ok(v),
                    },
                },
            },
        };
        let req = match verified {
            Ok(v) => v,
            Err(entry) => {
                self.stats.refused.fetch_add(1, Relaxed);
                tracing::warn!(session = %key.0, status = entry.status.as_str(), reason = %entry.reason, "NSLP request refused");
                pending.local = Some(Some(entry));
                pending.downstream = Some(Vec::new());
                self.pending.insert(key.clone(), pending);
                self.maybe_complete(key);
                return;
            }
        };
        tracing::info!(session = %key.0, request = kind.as_str(), id, user = %req.user, module = ?req.module, "NSLP request verified");
        let data_copy = if kind == RequestKind::Trigger { data.clone() } else { Vec::new() };
        // On down the path at once, in parallel with acting here.
        let local_t = local_for(key.1.query_target());
        if let Err(e) =
            self.node.send(Instant::now(), local_t, Toward::Target, key.0, key.1.clone(), data, Some(hops), &mut OsRng)
        {
            tracing::debug!(error = %e, "not sending the request further on; this node answers for the path");
            pending.downstream = Some(Vec::new());
        }
        if kind == RequestKind::Trigger && key.1.direction == Direction::Downstream {
            // Passes through; if this turns out to be the last appliance,
            // NoPeer turns it around.
            pending.local = Some(None);
            pending.trigger = Some((data_copy, req));
        } else if req.node_id.as_deref().is_none_or(|n| n == self.node_id) {
            self.act(key.clone(), local_for(origin.ip()), req);
        } else {
            pending.local = Some(None);
        }
        self.pending.insert(key.clone(), pending);
        self.maybe_complete(key);
    }

    /// Carries out `req` here, off the event loop; its entry arrives as a
    /// [`Done`] for `key`.
    fn act(&mut self, key: Key, address: IpAddr, req: Verified<Request>) {
        let (controller, node_id, done) = (self.controller.clone(), self.node_id.clone(), self.done_tx.clone());
        let load = self.load.pps();
        tokio::spawn(async move {
            let entry = actions::perform(&controller, &node_id, address, load, &req).await;
            let _ = done.send(Done { key, entry });
        });
    }

    fn replay_guard(&mut self, kind: RequestKind, mri: &Mri) -> &mut ReplayGuard {
        if kind == RequestKind::Trigger && mri.direction == Direction::Upstream {
            &mut self.replay_return
        } else {
            &mut self.replay
        }
    }

    /// This node is the last appliance a TRIGGER reached: install here, and
    /// send the request back towards its origin as a new session.
    fn turn_around(&mut self, forward: Key, data: Vec<u8>, req: Verified<Request>) {
        let mut sid = [0u8; 16];
        OsRng.fill_bytes(&mut sid);
        let back = (SessionId(sid), forward.1.reversed_direction());
        tracing::info!(session = %forward.0, return_session = %back.0, "TRIGGER reached the end of the path; signaling back");
        let origin = self.pending.get(&forward).map(|p| p.origin);
        let hops = self.pending.get(&forward).map_or(self.node.config().initial_hops, |p| p.hops);
        let local_t = local_for(back.1.query_target());
        match self.node.send(
            Instant::now(),
            local_t,
            Toward::Target,
            back.0,
            back.1.clone(),
            data,
            Some(hops),
            &mut OsRng,
        ) {
            Ok(()) => {
                self.return_legs.insert(back.clone(), forward.clone());
            }
            Err(e) => {
                tracing::debug!(error = %e, "no return leg; this node answers alone");
                if let Some(p) = self.pending.get_mut(&forward) {
                    p.downstream = Some(Vec::new());
                }
            }
        }
        // This node is on the return path too: it installs, as a SETUP would.
        if let Some(p) = self.pending.get_mut(&forward) {
            p.local = None;
        }
        let address = local_for(origin.map_or(back.1.query_target(), |o| o.ip()));
        self.act(forward, address, req);
    }

    /// Answers upstream once this node and the rest of the path are done.
    fn maybe_complete(&mut self, key: Key) {
        let ready = self.pending.get(&key).is_some_and(|p| p.local.is_some() && p.downstream.is_some());
        if !ready {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let mut stack: Vec<NodeEntry> = p.local.flatten().into_iter().collect();
        stack.extend(p.downstream.unwrap_or_default());
        let resp = Response { kind: p.kind, id: p.id, stack }.encode();
        let local = local_for(p.origin.ip());
        match self.node.send(Instant::now(), local, Toward::Origin, key.0, key.1, resp, Some(p.hops.max(1)), &mut OsRng)
        {
            Ok(()) => {
                self.stats.responses_sent.fetch_add(1, Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "could not send the NSLP response upstream"),
        }
    }
}
