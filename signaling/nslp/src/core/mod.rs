//! The sans-IO NetServ NSLP node of an appliance, over the sans-IO GIST node.
//!
//! # Run loop
//!
//! The shell owns the sockets, the NFQUEUE tap, the clock and the module
//! controller. It calls:
//! 1. [`Node::handle_datagram`] for every GIST datagram: addressed to this
//!    node, or intercepted in transit (its [`Disposition`] is the verdict);
//! 2. [`Node::handle_icmp_unreachable`] when ICMP says a Query's target runs
//!    no GIST;
//! 3. [`Node::handle_done`] when an action it was asked for ([`Event::Act`])
//!    has its result;
//! 4. [`Node::handle_timeout`] once [`Node::poll_timeout`] has passed;
//!
//! and after each call drains [`Node::poll_transmit`] and
//! [`Node::poll_event`]. Time ([`Time`]: the monotonic instant and the wall
//! clock, which the replay window needs), randomness and what the node asks
//! of its surroundings ([`Env`]: tenants' keys, the local address towards a
//! peer) are arguments.
//!
//! # What a request does here
//!
//! A request from upstream is checked — the tenant's Ed25519 signature, the
//! timestamp window and nonce cache. A refused one is answered at once and
//! not sent on. A good one is sent on downstream at once while this node
//! carries it out ([`Event::Act`]). When both this node's result and the rest
//! of the path's answer are in — or GIST finds no NetServ node further on
//! (this is the last node on the path), or the wait runs out — the response
//! goes upstream, hop by hop, with this node's entry in front of the stack.
//!
//! TRIGGER (reverse-path installs): its forward leg only passes through the
//! appliances; the last one on the path acts and sends the same signed
//! request back towards the requester in a new session whose MRI has the
//! upstream direction. Every appliance on that return path — which need not
//! be the forward path — acts as for a SETUP, and the return leg's answer
//! becomes the forward leg's.

#[cfg(test)]
mod tests;

use crate::replay::{ReplayError, ReplayGuard};
use crate::sign::{self, Verified, VerifyError};
use crate::wire::{self, NodeEntry, Request, RequestKind, Response, Status};
use ed25519_dalek::VerifyingKey;
use netserv_gist::core::{self as gist, SendError, Toward};
pub use netserv_gist::core::{Disposition, Transmit};
use netserv_gist::wire::{Direction, ErrorObject, Mri, SessionId};
use rand_core::RngCore;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A request's session on one leg: GIST's session and message routing.
pub type Key = (SessionId, Mri);

#[derive(Debug, Clone)]
pub struct Config {
    pub gist: gist::Config,
    /// This node's id: its entries carry it, and a request naming another
    /// node passes through.
    pub node_id: String,
    /// How long a request waits for this node's action and the rest of the
    /// path before this node answers with what it has.
    pub response_timeout: Duration,
    /// Accepted timestamp skew of signed requests, each way.
    pub replay_window: Duration,
    /// Nonces remembered within the window per tenant, at most (then that
    /// tenant's requests are refused: full). Per tenant, so a tenant that
    /// fills its guard locks out only itself.
    pub replay_capacity: usize,
}

impl Config {
    pub fn new(node_id: impl Into<String>) -> Self {
        let node_id = node_id.into();
        Self {
            gist: gist::Config::new(crate::NSLPID, node_id.as_bytes()),
            node_id,
            response_timeout: Duration::from_secs(10),
            replay_window: Duration::from_secs(60),
            replay_capacity: 100_000,
        }
    }
}

/// One action the node asked for: its result goes back with it, so that a
/// late result for a request that has since been answered (or replaced by
/// a newer one in the same session) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionId {
    key: Key,
    seq: u64,
}

/// The two clocks: `now` for timers, `unix_ms` for signed timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub now: Instant,
    pub unix_ms: u64,
}

/// What the node asks of where it runs.
pub trait Env {
    /// The tenant's configured public key, if it is configured.
    fn tenant_key(&self, user: &str) -> Option<VerifyingKey>;
    /// This node's address towards `peer` (the one its messages name).
    fn local_toward(&self, peer: IpAddr) -> IpAddr;
}

/// What the shell must hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Carry out `request` here; give its outcome to [`Node::handle_done`]
    /// with `action`. `address`: this node's address towards the requester,
    /// for its entry; `upstream` / `downstream`: the peer the request came
    /// from and this node's address it went on from (`NodeEntry::upstream`).
    Act { action: ActionId, address: IpAddr, upstream: IpAddr, downstream: IpAddr, request: Box<Verified<Request>> },
    /// A request passed its checks.
    Accepted { session: SessionId, kind: RequestKind, id: u32, user: String, module: Option<String> },
    /// A request was refused here (and is not sent on).
    Refused { session: SessionId, status: Status, reason: String },
    /// Nothing came back from further on in time: this node answered with its part.
    TimedOut { session: SessionId },
    /// No NetServ node further on: this node answers for the rest of the path.
    LastNode { session: SessionId, icmp: bool },
    /// A TRIGGER reached the end of the path and goes back as `return_session`.
    TurnedAround { session: SessionId, return_session: SessionId },
    /// A request could not be sent further on; this node answers alone.
    NotSentOn { session: SessionId, error: SendError },
    /// The response went upstream.
    Answered { session: SessionId, entries: usize },
    /// The response could not be sent upstream.
    AnswerFailed { session: SessionId, error: SendError },
    /// NSLP data that is neither a request from upstream nor a response from downstream.
    Ignored { session: SessionId, why: &'static str },
    /// A GIST peer answered with an Error.
    PeerError { peer: SocketAddr, error: ErrorObject },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub refused: u64,
    pub responses_sent: u64,
}

struct Pending {
    kind: RequestKind,
    /// The action this node's entry waits for (0: none asked).
    action: u64,
    /// The verified request, kept while a TRIGGER's forward leg is out: the
    /// last appliance turns it around.
    trigger: Option<(Vec<u8>, Verified<Request>)>,
    id: u32,
    hops: u8,
    /// The upstream peer the answer goes to.
    origin: SocketAddr,
    /// This node's entry: outer `None` while its action runs; inner `None`
    /// when this node has no entry of its own (the request names another
    /// node, or only passes through).
    local: Option<Option<NodeEntry>>,
    /// What came back from further on (empty: no NetServ node there).
    downstream: Option<Vec<NodeEntry>>,
    deadline: Instant,
}

/// One tenant's nonces. A TRIGGER's return leg carries the bytes already
/// seen on its forward leg; it is checked against replays of return legs
/// only.
struct TenantGuards {
    forward: ReplayGuard,
    return_leg: ReplayGuard,
}

pub struct Node {
    gist: gist::Node,
    cfg: Config,
    /// Each tenant's guards, made at its first verified request: only a
    /// configured tenant's validly signed request reaches them.
    replay: HashMap<String, TenantGuards>,
    pending: HashMap<Key, Pending>,
    /// Return-leg session -> the forward-leg session it answers.
    return_legs: HashMap<Key, Key>,
    events: VecDeque<Event>,
    next_action: u64,
    pub stats: Stats,
}

impl Node {
    pub fn new(cfg: Config, now: Instant, rng: &mut impl RngCore) -> Self {
        Self {
            gist: gist::Node::new(cfg.gist.clone(), now, rng),
            replay: HashMap::new(),
            cfg,
            pending: HashMap::new(),
            return_legs: HashMap::new(),
            events: VecDeque::new(),
            next_action: 0,
            stats: Stats::default(),
        }
    }

    /// The GIST node underneath (routing state, its counters).
    pub fn gist(&self) -> &gist::Node {
        &self.gist
    }

    /// Requests waiting for this node's action or the rest of the path.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.gist.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let waits = self.pending.values().map(|p| p.deadline).min();
        [self.gist.poll_timeout(), waits].into_iter().flatten().min()
    }

    /// One GIST datagram from `from`; `intercepted`: taken off the wire in
    /// transit (the disposition is then its verdict) rather than addressed here.
    pub fn handle_datagram(
        &mut self,
        t: Time,
        env: &impl Env,
        rng: &mut impl RngCore,
        from: SocketAddr,
        datagram: &[u8],
        intercepted: bool,
    ) -> Disposition {
        let local = env.local_toward(from.ip());
        let d = self.gist.handle_datagram(t.now, local, from, datagram, intercepted);
        self.drive(t, env, rng);
        d
    }

    pub fn handle_icmp_unreachable(&mut self, t: Time, env: &impl Env, rng: &mut impl RngCore, target: IpAddr) {
        self.gist.handle_icmp_unreachable(target);
        self.drive(t, env, rng);
    }

    /// The outcome of an [`Event::Act`].
    pub fn handle_done(&mut self, t: Time, env: &impl Env, rng: &mut impl RngCore, action: ActionId, entry: NodeEntry) {
        let Some(p) = self.pending.get_mut(&action.key).filter(|p| p.action == action.seq) else {
            return;
        };
        p.local = Some(Some(entry));
        self.maybe_complete(t, env, rng, action.key);
    }

    fn act(&mut self, key: Key, address: IpAddr, hops: (IpAddr, IpAddr), request: Verified<Request>) -> u64 {
        self.next_action += 1;
        let seq = self.next_action;
        let (upstream, downstream) = hops;
        let action = ActionId { key, seq };
        self.events.push_back(Event::Act { action, address, upstream, downstream, request: Box::new(request) });
        seq
    }

    pub fn handle_timeout(&mut self, t: Time, env: &impl Env, rng: &mut impl RngCore) {
        self.gist.handle_timeout(t.now);
        let late: Vec<Key> = self.pending.iter().filter(|(_, p)| p.deadline <= t.now).map(|(k, _)| k.clone()).collect();
        for key in late {
            if let Some(p) = self.pending.get_mut(&key) {
                self.events.push_back(Event::TimedOut { session: key.0 });
                p.downstream.get_or_insert_with(Vec::new);
                p.local.get_or_insert(None);
            }
            self.maybe_complete(t, env, rng, key);
        }
        self.drive(t, env, rng);
    }

    /// Acts on what GIST reported.
    fn drive(&mut self, t: Time, env: &impl Env, rng: &mut impl RngCore) {
        while let Some(ev) = self.gist.poll_event() {
            match ev {
                gist::Event::Received { session, mri, from: Toward::Origin, peer, hops, data, .. } => {
                    self.on_request(t, env, rng, (session, mri), peer, hops, data);
                }
                gist::Event::Received { session, mri, from: Toward::Target, data, .. } => {
                    // A return leg's answer is the answer of its forward leg.
                    let key = (session, mri);
                    let key = self.return_legs.remove(&key).unwrap_or(key);
                    match wire::decode(&data) {
                        Ok(wire::Message::Response(r)) => {
                            if let Some(p) = self.pending.get_mut(&key).filter(|p| p.id == r.id) {
                                p.downstream = Some(r.stack);
                                self.maybe_complete(t, env, rng, key);
                            }
                        }
                        _ => self.events.push_back(Event::Ignored { session, why: "not a response from downstream" }),
                    }
                }
                gist::Event::NoPeer { session, mri, icmp, .. } => {
                    let key = (session, mri);
                    self.events.push_back(Event::LastNode { session, icmp });
                    match self.pending.get_mut(&key).and_then(|p| p.trigger.take()) {
                        Some((data, req)) => self.turn_around(t, env, rng, key, data, req),
                        None => {
                            if let Some(p) = self.pending.get_mut(&key) {
                                p.downstream.get_or_insert_with(Vec::new);
                            }
                            self.maybe_complete(t, env, rng, key);
                        }
                    }
                }
                gist::Event::PeerError { peer, error, .. } => self.events.push_back(Event::PeerError { peer, error }),
                gist::Event::RoutingStateExpired { .. } => {}
            }
        }
    }

    /// The checks a request from upstream must pass here.
    fn check(
        &mut self,
        t: Time,
        env: &impl Env,
        key: &Key,
        data: &[u8],
    ) -> Result<Verified<Request>, (Status, String)> {
        let user = sign::user_of(data).map_err(|e| (Status::Malformed, e.to_string()))?;
        let Some(public_key) = env.tenant_key(&user) else {
            return Err((Status::UnknownTenant, format!("tenant `{user}` is not configured on this node")));
        };
        let v = sign::verify(data, &key.1, &public_key).map_err(|e| match e {
            VerifyError::Malformed(e) => (Status::Malformed, e.to_string()),
            e => (Status::BadSignature, e.to_string()),
        })?;
        let window = u64::try_from(self.cfg.replay_window.as_millis()).unwrap_or(u64::MAX);
        let capacity = self.cfg.replay_capacity;
        let guards = self.replay.entry(v.user.clone()).or_insert_with(|| TenantGuards {
            forward: ReplayGuard::new(window, capacity),
            return_leg: ReplayGuard::new(window, capacity),
        });
        let guard = if v.kind == RequestKind::Trigger && key.1.direction == Direction::Upstream {
            &mut guards.return_leg
        } else {
            &mut guards.forward
        };
        guard.check(t.unix_ms, v.timestamp_ms, v.nonce).map_err(|e| match e {
            ReplayError::Stale { .. } => (Status::Stale, e.to_string()),
            ReplayError::Replayed => (Status::Replay, e.to_string()),
            ReplayError::Full => (Status::LimitExceeded, e.to_string()),
        })?;
        Ok(v)
    }

    /// A request from upstream: refuse it at once, or send it on and act.
    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        t: Time,
        env: &impl Env,
        rng: &mut impl RngCore,
        key: Key,
        origin: SocketAddr,
        hops: u8,
        data: Vec<u8>,
    ) {
        self.stats.requests += 1;
        let Some((kind, id)) = wire::peek_request(&data) else {
            self.events.push_back(Event::Ignored { session: key.0, why: "not a request from upstream" });
            return;
        };
        let mut pending = Pending {
            kind,
            action: 0,
            trigger: None,
            id,
            hops,
            origin,
            local: None,
            downstream: None,
            deadline: t.now + self.cfg.response_timeout,
        };
        // This node's address towards the requester: its entry names it.
        let toward_origin = env.local_toward(origin.ip());
        let req = match self.check(t, env, &key, &data) {
            Ok(v) => v,
            Err((status, reason)) => {
                self.stats.refused += 1;
                self.events.push_back(Event::Refused { session: key.0, status, reason: reason.clone() });
                let mut entry = NodeEntry::new(self.cfg.node_id.clone(), status, reason);
                entry.address = Some(toward_origin);
                pending.local = Some(Some(entry));
                pending.downstream = Some(Vec::new());
                self.pending.insert(key.clone(), pending);
                self.maybe_complete(t, env, rng, key);
                return;
            }
        };
        self.events.push_back(Event::Accepted {
            session: key.0,
            kind,
            id,
            user: req.user.clone(),
            module: req.module.clone(),
        });
        let forward_copy = if kind == RequestKind::Trigger { data.clone() } else { Vec::new() };
        // On down the path at once, in parallel with acting here.
        let local = env.local_toward(key.1.query_target());
        if let Err(error) = self.gist.send(t.now, local, Toward::Target, key.0, key.1.clone(), data, Some(hops), rng) {
            self.events.push_back(Event::NotSentOn { session: key.0, error });
            pending.downstream = Some(Vec::new());
        }
        if kind == RequestKind::Trigger && key.1.direction == Direction::Downstream {
            // Passes through; if this turns out to be the last appliance,
            // NoPeer turns it around.
            pending.local = Some(None);
            pending.trigger = Some((forward_copy, req));
        } else if req.node_id.as_deref().is_none_or(|n| n == self.cfg.node_id) {
            pending.action = self.act(key.clone(), toward_origin, (origin.ip(), local), req);
        } else {
            pending.local = Some(None);
        }
        self.pending.insert(key.clone(), pending);
        self.maybe_complete(t, env, rng, key);
    }

    /// This node is the last appliance a TRIGGER reached: act here, and send
    /// the request back towards its origin as a new session.
    fn turn_around(
        &mut self,
        t: Time,
        env: &impl Env,
        rng: &mut impl RngCore,
        forward: Key,
        data: Vec<u8>,
        req: Verified<Request>,
    ) {
        let mut sid = [0u8; 16];
        rng.fill_bytes(&mut sid);
        let back = (SessionId(sid), forward.1.reversed_direction());
        self.events.push_back(Event::TurnedAround { session: forward.0, return_session: back.0 });
        let origin = self.pending.get(&forward).map(|p| p.origin);
        let hops = self.pending.get(&forward).map_or(self.cfg.gist.initial_hops, |p| p.hops);
        let local = env.local_toward(back.1.query_target());
        match self.gist.send(t.now, local, Toward::Target, back.0, back.1.clone(), data, Some(hops), rng) {
            Ok(()) => {
                self.return_legs.insert(back.clone(), forward.clone());
            }
            Err(error) => {
                self.events.push_back(Event::NotSentOn { session: back.0, error });
                if let Some(p) = self.pending.get_mut(&forward) {
                    p.downstream = Some(Vec::new());
                }
            }
        }
        // This node is on the return path too: it acts, as for a SETUP.
        let address = env.local_toward(origin.map_or(back.1.query_target(), |o| o.ip()));
        let upstream = origin.map_or(address, |o| o.ip());
        let seq = self.act(forward.clone(), address, (upstream, local), req);
        if let Some(p) = self.pending.get_mut(&forward) {
            p.local = None;
            p.action = seq;
        }
    }

    /// Answers upstream once this node and the rest of the path are done.
    fn maybe_complete(&mut self, t: Time, env: &impl Env, rng: &mut impl RngCore, key: Key) {
        let ready = self.pending.get(&key).is_some_and(|p| p.local.is_some() && p.downstream.is_some());
        if !ready {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        // A return leg still out for it answers nothing now.
        self.return_legs.retain(|_, forward| *forward != key);
        let mut stack: Vec<NodeEntry> = p.local.flatten().into_iter().collect();
        stack.extend(p.downstream.unwrap_or_default());
        let entries = stack.len();
        let resp = Response { kind: p.kind, id: p.id, stack }.encode();
        let local = env.local_toward(p.origin.ip());
        let session = key.0;
        match self.gist.send(t.now, local, Toward::Origin, key.0, key.1, resp, Some(p.hops.max(1)), rng) {
            Ok(()) => {
                self.stats.responses_sent += 1;
                self.events.push_back(Event::Answered { session, entries });
            }
            Err(error) => self.events.push_back(Event::AnswerFailed { session, error }),
        }
    }
}
