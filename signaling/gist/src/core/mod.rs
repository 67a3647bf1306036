//! The sans-IO GIST node (RFC 5971 §4, §6), datagram mode only.
//!
//! # Run loop
//!
//! The shell owns the socket(s) and the clock. It calls:
//! 1. [`Node::handle_datagram`] for every GIST datagram it receives (addressed
//!    to the node, or intercepted in transit — a Q-mode Query for the flow's
//!    destination); its [`Disposition`] is the NFQUEUE verdict for an
//!    intercepted one;
//! 2. [`Node::send`] when its NSLP has data for a peer;
//! 3. [`Node::handle_icmp_unreachable`] when an ICMP port unreachable says a
//!    Query's target runs no GIST;
//! 4. [`Node::handle_timeout`] once [`Node::poll_timeout`] has passed;
//!
//! and after each call drains [`Node::poll_transmit`] (datagrams to send) and
//! [`Node::poll_event`] (what the NSLP must hear), then sleeps until
//! `poll_timeout`.
//!
//! # The handshake
//!
//! ```text
//! querying node                         responding node
//!   Query (Q-mode, to the flow target, Query-Cookie) ─▶   no state kept
//!   ◀─ Response (D-mode, echoes Query-Cookie, Responder-Cookie, R=1)
//!   Confirm (D-mode, Responder-Cookie, NSLP-Data) ─▶   cookie checked,
//!                                                       routing state installed,
//!                                                       NSLP-Data delivered
//! ```
//!
//! The NSLP data rides in the Confirm, so a responding node acts on nothing
//! before its cookie has come back from the querier's address. Queries are
//! retransmitted from T1 doubling to T2 for a bounded number of attempts;
//! when they run out (or ICMP says so) the node reports [`Event::NoPeer`]:
//! it is the last GIST node on the path. With routing state in place,
//! NSLP data goes straight to the peer in a Data message.

mod cookie;
mod error_limit;
mod errors;
mod querier;
mod responder;
mod routing;
#[cfg(test)]
mod tests;

pub use cookie::{COOKIE_EPOCH, COOKIE_LEN};
pub use routing::{Peer, RoutingState, RoutingTable, Toward};

use crate::wire::{
    self, COMMON_HEADER_LEN, DecodeError, Encapsulation, ErrorClass, ErrorCode, ErrorObject, GIST_PORT, Message,
    MessageType, Mri, Nli, SessionId,
};
use cookie::CookieJar;
use rand_core::RngCore;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Config {
    pub nslpid: u16,
    /// Sent as the NLI Peer-Identity (NetServ: the node id).
    pub peer_identity: Vec<u8>,
    /// Routing state validity offered to peers (NLI).
    pub validity: Duration,
    /// First Query retransmission interval (RFC 5971 §4.4.1: 500 ms).
    pub t1: Duration,
    /// Largest retransmission interval (RFC 5971: 64 × T1).
    pub t2: Duration,
    /// Query transmissions before the node concludes no peer is further on.
    pub query_attempts: u32,
    /// GIST hop count on messages this node originates.
    pub initial_hops: u8,
    /// Bound on routing state entries; Confirms beyond it are refused.
    pub max_routing_states: usize,
    /// Bound on Queries waiting for a Response.
    pub max_pending_queries: usize,
}

impl Config {
    pub fn new(nslpid: u16, peer_identity: impl Into<Vec<u8>>) -> Self {
        Self {
            nslpid,
            peer_identity: peer_identity.into(),
            validity: Duration::from_secs(30),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(32),
            query_attempts: 3,
            initial_hops: 16,
            max_routing_states: 200_000,
            max_pending_queries: 10_000,
        }
    }
}

/// A datagram the shell must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    /// The local address to send from (the one the NLI names).
    pub source_ip: IpAddr,
    pub encapsulation: Encapsulation,
    pub payload: Vec<u8>,
}

/// What the NSLP hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// NSLP data from the adjacent peer on side `from`.
    Received {
        session: SessionId,
        mri: Mri,
        from: Toward,
        peer: SocketAddr,
        peer_identity: Vec<u8>,
        /// Hops left, for any message the NSLP sends on as a result.
        hops: u8,
        data: Vec<u8>,
    },
    /// No GIST node for this NSLP further towards the target: the Queries
    /// ran out or ICMP said so. The data they would have delivered is handed back.
    NoPeer { session: SessionId, mri: Mri, data: Vec<u8>, icmp: bool },
    /// A peer answered with a GIST Error.
    PeerError { session: Option<SessionId>, peer: SocketAddr, error: ErrorObject },
    /// Routing state ran out without a refresh.
    RoutingStateExpired { session: SessionId, mri: Mri },
}

/// What the shell does with an intercepted datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The node took it (a Query it answers): do not forward it.
    Consumed,
    /// Not for this node (another NSLP, not GIST): let it continue.
    PassOn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no routing state towards the origin for this session")]
    NoRoutingState,
    #[error("the GIST hop count is exhausted")]
    HopLimit,
    #[error("too many queries outstanding")]
    Overloaded,
    #[error("the message cannot be encoded (NSLP data too large or not whole words)")]
    Encoding,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub queries_sent: u64,
    pub retransmissions: u64,
    pub responses_sent: u64,
    pub confirms_accepted: u64,
    pub bad_cookies: u64,
    pub decode_errors: u64,
    pub errors_sent: u64,
    pub data_sent: u64,
    pub data_received: u64,
    pub refused_full: u64,
    /// Errors not sent: over the per-source or total rate (reflection).
    pub errors_suppressed: u64,
    /// Confirms whose cookie had already been used: not delivered again.
    pub confirms_replayed: u64,
    /// Q-mode Queries addressed to this node for a flow that does not end
    /// here: relayed to it off their path, dropped.
    pub queries_off_path: u64,
}

struct PendingQuery {
    cookie: [u8; 16],
    data: Vec<u8>,
    source_ip: IpAddr,
    hops: u8,
    attempts: u32,
    interval: Duration,
    next_at: Instant,
    payload: Vec<u8>,
}

pub struct Node {
    cfg: Config,
    epoch_base: Instant,
    cookies: CookieJar,
    routing: RoutingTable,
    pending: HashMap<(SessionId, Mri), PendingQuery>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    error_limit: error_limit::ErrorLimiter,
    /// Responder cookies that installed state, with their epoch: a Confirm
    /// that brings one back again is a replay (or a duplicate), and is not
    /// delivered again. Forgotten once the cookie could no longer be valid.
    used_cookies: HashMap<[u8; cookie::COOKIE_LEN], u64>,
    /// The epoch `used_cookies` was last swept in.
    used_cookies_swept: u64,
    pub stats: Stats,
}

impl Node {
    pub fn new(cfg: Config, now: Instant, rng: &mut impl RngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self {
            cfg,
            epoch_base: now,
            cookies: CookieJar::new(secret),
            routing: RoutingTable::default(),
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            error_limit: error_limit::ErrorLimiter::new(),
            used_cookies: HashMap::new(),
            used_cookies_swept: 0,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    pub fn pending_queries(&self) -> usize {
        self.pending.len()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant [`Node::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let q = self.pending.values().map(|p| p.next_at).min();
        match (q, self.routing.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch_base).as_secs()) / COOKIE_EPOCH.as_secs()
    }

    fn nli(&self, local: IpAddr) -> Nli {
        Nli {
            ip_ttl: 64,
            validity_ms: u32::try_from(self.cfg.validity.as_millis()).unwrap_or(u32::MAX).max(1),
            peer_identity: self.cfg.peer_identity.clone(),
            interface: local,
        }
    }

    /// One received GIST datagram. `local` is the address it arrived on (for
    /// an intercepted Query: this node's address towards `from`).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: IpAddr,
        from: SocketAddr,
        datagram: &[u8],
        intercepted: bool,
    ) -> Disposition {
        let (msg, encapsulation) = match wire::decode(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.decode_errors += 1;
                // In transit and not parseable: not ours to judge, pass it on.
                if intercepted {
                    return Disposition::PassOn;
                }
                self.send_error(now, local, from, datagram, e.catalogue(), None, None);
                return Disposition::Consumed;
            }
        };
        if msg.header.nslpid != self.cfg.nslpid {
            // Another signalling application: a Query in transit continues
            // (RFC 5971 §4.3.4); anything addressed to us is an error.
            if !intercepted {
                self.send_error(
                    now,
                    local,
                    from,
                    datagram,
                    (ErrorClass::PermanentFailure, ErrorCode::UnknownNslpid, 0),
                    msg.session,
                    msg.mri.clone(),
                );
                return Disposition::Consumed;
            }
            return Disposition::PassOn;
        }
        match (msg.header.msg_type, encapsulation) {
            (MessageType::Query, Encapsulation::QMode) => {
                // A Query travels to its flow's end: one addressed to us is
                // for a flow that ends here, or was sent to us off its path
                // (to have this node answer a request meant for another
                // path). No Error back: it would reflect.
                if !intercepted && msg.mri.as_ref().is_some_and(|m| m.query_target() != local) {
                    self.stats.queries_off_path += 1;
                    return Disposition::Consumed;
                }
                self.on_query(now, local, from, datagram, &msg)
            }
            (MessageType::Query, Encapsulation::DMode) | (_, Encapsulation::QMode) => {
                if intercepted {
                    return Disposition::PassOn;
                }
                let e = (ErrorClass::ProtocolError, ErrorCode::IncorrectEncapsulation, 0);
                self.send_error(now, local, from, datagram, e, msg.session, msg.mri.clone());
            }
            (MessageType::Response, _) => self.on_response(now, local, from, &msg),
            (MessageType::Confirm, _) => self.on_confirm(now, local, from, datagram, &msg),
            (MessageType::Data, _) => self.on_data(now, local, from, datagram, &msg),
            (MessageType::Error, _) => self.on_error(from, msg),
            (MessageType::MaHello, _) => {
                let e = (ErrorClass::ProtocolError, ErrorCode::IncorrectEncapsulation, 0);
                self.send_error(now, local, from, datagram, e, None, None);
            }
        }
        Disposition::Consumed
    }

    /// An ICMP destination/port unreachable for a datagram this node sent to
    /// `target`:`270`: no GIST listens there, so Queries towards it end now.
    pub fn handle_icmp_unreachable(&mut self, target: IpAddr) {
        let keys: Vec<_> = self.pending.keys().filter(|(_, mri)| mri.query_target() == target).cloned().collect();
        for key in keys {
            if let Some(p) = self.pending.remove(&key) {
                self.events.push_back(Event::NoPeer { session: key.0, mri: key.1, data: p.data, icmp: true });
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<_> = self.pending.iter().filter(|(_, p)| p.next_at <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            if p.attempts >= self.cfg.query_attempts {
                if let Some(p) = self.pending.remove(&key) {
                    self.events.push_back(Event::NoPeer { session: key.0, mri: key.1, data: p.data, icmp: false });
                }
                continue;
            }
            p.attempts += 1;
            p.interval = (p.interval * 2).min(self.cfg.t2);
            p.next_at = now + p.interval;
            self.stats.retransmissions += 1;
            self.transmits.push_back(Transmit {
                destination: SocketAddr::new(key.1.query_target(), GIST_PORT),
                source_ip: p.source_ip,
                encapsulation: Encapsulation::QMode,
                payload: p.payload.clone(),
            });
        }
        for (session, mri) in self.routing.expire(now) {
            self.events.push_back(Event::RoutingStateExpired { session, mri });
        }
    }

    fn push(&mut self, destination: SocketAddr, source_ip: IpAddr, encapsulation: Encapsulation, payload: Vec<u8>) {
        self.transmits.push_back(Transmit { destination, source_ip, encapsulation, payload });
    }
}
