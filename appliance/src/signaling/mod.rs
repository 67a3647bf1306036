//! On-path signaling on the appliance: the shell around the sans-IO NetServ
//! NSLP node (`netserv_nslp::core`, itself over the sans-IO GIST node).
//!
//! The node decides everything — which requests pass their checks, what is
//! sent on, when this node answers and with what stack, a TRIGGER's turn
//! around. This shell only moves bytes and time to it: D-mode datagrams from
//! its UDP 270 socket, Queries in transit from the [`tap`] (NFQUEUE on UDP
//! 270), ICMP unreachables, the clock; it sends what the node transmits and
//! carries out what the node asks ([`Event::Act`]) through the controller —
//! the same path as the admin API — handing the outcome back.
//!
//! The node sits behind a mutex shared with the tap's thread: an intercepted
//! datagram is decoded once, by the node, whose disposition is the verdict.
//! The lock is never held across an await; under it the node verifies
//! signatures and asks the routing table for local addresses (a connect on
//! a fresh UDP socket), so the tap waits for it only briefly
//! ([`Shared::TAP_WAIT`]) and otherwise lets the Query go on to the next
//! node, which answers instead.

mod actions;
mod identity;
pub mod tap;

use crate::config::Config;
use crate::controller::Controller;
use crate::dataplane::QueueStats;
use ed25519_dalek::VerifyingKey;
use netserv_nslp::core::{self as nslp, ActionId, Disposition, Env, Event, Time};
use netserv_nslp::wire::NodeEntry;
use netserv_shell::net::{local_toward, unix_ms};
use parking_lot::Mutex;
use rand_core::OsRng;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

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
    /// GIST Errors not sent: over the per-source or total rate.
    pub errors_suppressed: AtomicU64,
    /// Confirms replayed with a cookie already used: not delivered again.
    pub confirms_replayed: AtomicU64,
    /// Q-mode Queries sent to this node for a flow that does not end here.
    pub queries_off_path: AtomicU64,
}

/// What the node asks of this appliance: tenants' keys from the running
/// config, and the routing table's choice of local address.
#[derive(Clone)]
struct Here {
    controller: Arc<Controller>,
}

impl Env for Here {
    fn tenant_key(&self, user: &str) -> Option<VerifyingKey> {
        self.controller.config().tenant(user).map(|t| t.public_key)
    }

    fn local_toward(&self, peer: IpAddr) -> IpAddr {
        local_for(peer)
    }
}

fn now() -> Time {
    Time { now: Instant::now(), unix_ms: unix_ms() }
}

/// The node, shared by the service task and the tap's thread.
pub struct Shared {
    node: Mutex<nslp::Node>,
    env: Here,
    /// Rung after the tap fed the node, so the service sends what it queued.
    wake: Notify,
}

impl Shared {
    /// The longest the tap waits for the node before passing a Query on.
    pub const TAP_WAIT: Duration = Duration::from_millis(5);

    /// A Query taken off the wire in transit: the node's disposition is the
    /// packet's verdict. None: the node was busy for longer than
    /// [`Self::TAP_WAIT`]; the caller lets the Query continue.
    pub fn intercepted(&self, from: SocketAddr, datagram: &[u8]) -> Option<Disposition> {
        let mut node = self.node.try_lock_for(Self::TAP_WAIT)?;
        let d = node.handle_datagram(now(), &self.env, &mut OsRng, from, datagram, true);
        drop(node);
        if d == Disposition::Consumed {
            self.wake.notify_one();
        }
        Some(d)
    }
}

/// The outcome of an action, for the node.
struct Done {
    action: ActionId,
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
    shared: Arc<Shared>,
    node_id: String,
    controller: Arc<Controller>,
    done_tx: mpsc::UnboundedSender<Done>,
    load: LoadMeter,
    stats: Arc<SignalingStats>,
    /// Signs this node's entries, when the config gives it a certified key.
    identity: Option<Arc<identity::Identity>>,
}

/// Binds the GIST socket and starts the service; the returned [`Shared`]
/// node is what the tap feeds.
pub async fn spawn(
    cfg: &Config,
    controller: Arc<Controller>,
    queues: Arc<Vec<Arc<QueueStats>>>,
    stats: Arc<SignalingStats>,
) -> anyhow::Result<(Arc<Shared>, tokio::task::JoinHandle<()>)> {
    let s = &cfg.signaling;
    let sock = bind_gist_socket(s.listen)
        .map_err(|e| anyhow::anyhow!("binding the GIST socket on {}: {e} (signaling.listen)", s.listen))?;
    let identity = match (&s.node_key_file, &s.node_certificate_file) {
        (Some(k), Some(c)) => Some(Arc::new(identity::Identity::load(&cfg.node_id, k, c)?)),
        _ => {
            tracing::warn!(
                "no signaling.node_key_file: this node's answers are unsigned, and plugins will not count them"
            );
            None
        }
    };
    let mut ncfg = nslp::Config::new(cfg.node_id.clone());
    ncfg.gist.validity = Duration::from_secs(u64::from(s.validity_secs));
    ncfg.gist.query_attempts = s.query_attempts;
    ncfg.gist.t1 = Duration::from_millis(u64::from(s.t1_ms));
    ncfg.gist.max_routing_states = s.max_sessions as usize;
    ncfg.response_timeout = Duration::from_secs(u64::from(s.response_timeout_secs));
    ncfg.replay_window = Duration::from_secs(u64::from(s.replay_window_secs));
    ncfg.replay_capacity = s.replay_capacity_per_tenant as usize;
    let shared = Arc::new(Shared {
        node: Mutex::new(nslp::Node::new(ncfg, Instant::now(), &mut OsRng)),
        env: Here { controller: controller.clone() },
        wake: Notify::new(),
    });
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let total = queues.iter().map(|q| q.io.packets.load(Relaxed)).sum();
    let service = Service {
        shared: shared.clone(),
        node_id: cfg.node_id.clone(),
        controller,
        done_tx,
        load: LoadMeter { queues, last: (Instant::now(), total) },
        stats,
        identity,
    };
    tracing::info!(listen = %s.listen, queue = s.queue, "on-path signaling running");
    Ok((shared, tokio::spawn(service.run(sock, done_rx))))
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
    async fn run(mut self, sock: UdpSocket, mut done_rx: mpsc::UnboundedReceiver<Done>) {
        // Unreachables that quote a datagram this socket sent, to GIST.
        let mut icmp = sock.local_addr().ok().and_then(netserv_shell::icmp::subscribe);
        let mut buf = vec![0u8; 65_536];
        let shared = self.shared.clone();
        let env = &shared.env;
        loop {
            self.flush(&sock).await;
            self.drain_events();
            let next = self.publish().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let datagram = buf.get(..n).unwrap_or_default();
                        shared.node.lock().handle_datagram(now(), env, &mut OsRng, from, datagram, false);
                    }
                    Err(e) => tracing::debug!(error = %e, "GIST socket receive error"),
                },
                // The tap fed the node: what it queued goes out at the top.
                () = shared.wake.notified() => {}
                Some(dst) = async { match icmp.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    shared.node.lock().handle_icmp_unreachable(now(), env, &mut OsRng, dst);
                }
                Some(d) = done_rx.recv() => {
                    shared.node.lock().handle_done(now(), env, &mut OsRng, d.action, d.entry);
                }
                () = tokio::time::sleep_until(next.into()) => {
                    shared.node.lock().handle_timeout(now(), env, &mut OsRng);
                }
            }
        }
    }

    /// Sends what the node queued (taken out under the lock, sent outside it).
    async fn flush(&mut self, sock: &UdpSocket) {
        let out: Vec<nslp::Transmit> = {
            let mut node = self.shared.node.lock();
            std::iter::from_fn(|| node.poll_transmit()).collect()
        };
        for t in out {
            if let Err(e) = sock.send_to(&t.payload, t.destination).await {
                tracing::debug!(to = %t.destination, error = %e, "GIST send failed");
            }
        }
    }

    /// Copies the node's counters out; its next deadline.
    fn publish(&self) -> Option<Instant> {
        let node = self.shared.node.lock();
        let (gist, nslp) = (node.gist(), node.stats);
        self.stats.requests.store(nslp.requests, Relaxed);
        self.stats.refused.store(nslp.refused, Relaxed);
        self.stats.responses_sent.store(nslp.responses_sent, Relaxed);
        self.stats.routing_states.store(gist.routing().len() as u64, Relaxed);
        self.stats.pending.store(node.pending() as u64, Relaxed);
        self.stats.bad_cookies.store(gist.stats.bad_cookies, Relaxed);
        self.stats.decode_errors.store(gist.stats.decode_errors, Relaxed);
        self.stats.errors_suppressed.store(gist.stats.errors_suppressed, Relaxed);
        self.stats.confirms_replayed.store(gist.stats.confirms_replayed, Relaxed);
        self.stats.queries_off_path.store(gist.stats.queries_off_path, Relaxed);
        node.poll_timeout()
    }

    fn drain_events(&mut self) {
        let events: Vec<Event> = {
            let mut node = self.shared.node.lock();
            std::iter::from_fn(|| node.poll_event()).collect()
        };
        for ev in events {
            match ev {
                Event::Act { action, address, upstream, downstream, request } => {
                    self.act(action, address, (upstream, downstream), *request)
                }
                Event::Accepted { session, kind, id, user, module } => {
                    tracing::info!(%session, request = kind.as_str(), id, %user, ?module, "NSLP request verified");
                }
                Event::Refused { session, status, reason } => {
                    tracing::warn!(%session, status = status.as_str(), %reason, "NSLP request refused");
                }
                Event::TimedOut { session } => {
                    tracing::warn!(%session, "no answer from further on the path in time; answering with this node's part");
                }
                Event::LastNode { session, icmp } => {
                    tracing::debug!(%session, icmp, "no appliance further on: this node answers for the path");
                }
                Event::TurnedAround { session, return_session } => {
                    tracing::info!(%session, %return_session, "TRIGGER reached the end of the path; signaling back");
                }
                Event::NotSentOn { session, error } => {
                    tracing::debug!(%session, %error, "not sending the request further on; this node answers for the path");
                }
                Event::Answered { session, entries } => {
                    tracing::debug!(%session, entries, "NSLP response sent upstream")
                }
                Event::AnswerFailed { session, error } => {
                    tracing::warn!(%session, %error, "could not send the NSLP response upstream");
                }
                Event::Ignored { session, why } => tracing::debug!(%session, why, "ignoring NSLP data"),
                Event::PeerError { peer, error } => {
                    tracing::info!(%peer, code = ?error.code, subcode = error.subcode, "GIST error from a peer");
                }
            }
        }
    }

    /// Carries out `req` here, off the event loop; its entry goes back to
    /// the node as a [`Done`] for `action`.
    fn act(
        &mut self,
        action: ActionId,
        address: IpAddr,
        hops: (IpAddr, IpAddr),
        req: netserv_nslp::sign::Verified<netserv_nslp::wire::Request>,
    ) {
        let (controller, node_id, done) = (self.controller.clone(), self.node_id.clone(), self.done_tx.clone());
        let load = self.load.pps();
        let identity = self.identity.clone();
        tokio::spawn(async move {
            let mut entry = actions::perform(&controller, &node_id, address, load, &req).await;
            (entry.upstream, entry.downstream) = (Some(hops.0), Some(hops.1));
            if let Some(id) = &identity {
                id.sign(&mut entry, &req.nonce);
            }
            let _ = done.send(Done { action, entry });
        });
    }
}
