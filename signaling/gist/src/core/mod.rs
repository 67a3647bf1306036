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

    /// Sends NSLP data towards `side` for (session, mri): as Data over fresh
    /// routing state, else (towards the target) through a Query handshake.
    /// `hops` is the count left from the message that caused this one, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Instant,
        local: IpAddr,
        side: Toward,
        session: SessionId,
        mri: Mri,
        data: Vec<u8>,
        hops: Option<u8>,
        rng: &mut impl RngCore,
    ) -> Result<(), SendError> {
        let hops = match hops {
            Some(0) => return Err(SendError::HopLimit),
            Some(h) => h,
            None => self.cfg.initial_hops,
        };
        let key = (session, mri);
        let fresh = self.routing.get(&key).and_then(|s| s.peer(side)).filter(|p| {
            // Over half its validity left: use it; otherwise refresh it by a
            // new handshake (towards the target) so both sides renew.
            side == Toward::Origin || p.expires.saturating_duration_since(now) > self.cfg.validity / 2
        });
        if let Some(peer) = fresh {
            let to = peer.address;
            let mut m = Message::new(MessageType::Data, self.cfg.nslpid, hops);
            m.mri = Some(key.1.clone());
            m.session = Some(session);
            m.nli = Some(self.nli(local));
            m.nslp_data = Some(&data);
            let payload = m.encode(Encapsulation::DMode).ok_or(SendError::Encoding)?;
            self.stats.data_sent += 1;
            self.push(to, local, Encapsulation::DMode, payload);
            return Ok(());
        }
        if side == Toward::Origin {
            return Err(SendError::NoRoutingState);
        }
        if self.pending.len() >= self.cfg.max_pending_queries && !self.pending.contains_key(&key) {
            return Err(SendError::Overloaded);
        }
        let mut cookie = [0u8; 16];
        rng.fill_bytes(&mut cookie);
        let mut q = Message::new(MessageType::Query, self.cfg.nslpid, hops);
        q.mri = Some(key.1.clone());
        q.session = Some(session);
        q.nli = Some(self.nli(local));
        q.query_cookie = Some(&cookie);
        let payload = q.encode(Encapsulation::QMode).ok_or(SendError::Encoding)?;
        // The data must also fit the Confirm that will carry it.
        if !data.len().is_multiple_of(4) || data.len() > wire::object_type::MAX_NSLP_DATA {
            return Err(SendError::Encoding);
        }
        let target = SocketAddr::new(key.1.query_target(), GIST_PORT);
        self.stats.queries_sent += 1;
        self.push(target, local, Encapsulation::QMode, payload.clone());
        self.pending.insert(
            key,
            PendingQuery {
                cookie,
                data,
                source_ip: local,
                hops,
                attempts: 1,
                interval: self.cfg.t1,
                next_at: now + self.cfg.t1,
                payload,
            },
        );
        Ok(())
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
                self.send_error(local, from, datagram, e.catalogue(), None, None);
                return Disposition::Consumed;
            }
        };
        if msg.header.nslpid != self.cfg.nslpid {
            // Another signalling application: a Query in transit continues
            // (RFC 5971 §4.3.4); anything addressed to us is an error.
            if !intercepted {
                self.send_error(
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
            (MessageType::Query, Encapsulation::QMode) => self.on_query(now, local, from, datagram, &msg),
            (MessageType::Query, Encapsulation::DMode) | (_, Encapsulation::QMode) => {
                if intercepted {
                    return Disposition::PassOn;
                }
                let e = (ErrorClass::ProtocolError, ErrorCode::IncorrectEncapsulation, 0);
                self.send_error(local, from, datagram, e, msg.session, msg.mri.clone());
            }
            (MessageType::Response, _) => self.on_response(now, local, from, &msg),
            (MessageType::Confirm, _) => self.on_confirm(now, local, from, datagram, &msg),
            (MessageType::Data, _) => self.on_data(local, from, datagram, &msg),
            (MessageType::Error, _) => self.on_error(from, msg),
            (MessageType::MaHello, _) => {
                let e = (ErrorClass::ProtocolError, ErrorCode::IncorrectEncapsulation, 0);
                self.send_error(local, from, datagram, e, None, None);
            }
        }
        Disposition::Consumed
    }

    fn on_query(&mut self, now: Instant, local: IpAddr, from: SocketAddr, raw: &[u8], q: &Message<'_>) {
        let (Some(mri), Some(sid), Some(qc)) = (q.mri.clone(), q.session, q.query_cookie) else {
            return; // the decoder guarantees these for a Query
        };
        if q.header.hops == 0 {
            let e = (ErrorClass::PermanentFailure, ErrorCode::HopLimitExceeded, 0);
            self.send_error(local, from, raw, e, Some(sid), Some(mri));
            return;
        }
        let cookie = self.cookies.make(self.epoch(now), from, &sid, &mri);
        let mut r = Message::new(MessageType::Response, self.cfg.nslpid, self.cfg.initial_hops);
        r.header.r_flag = true;
        r.mri = Some(mri);
        r.session = Some(sid);
        r.nli = Some(self.nli(local));
        r.query_cookie = Some(qc);
        r.responder_cookie = Some(&cookie);
        r.forward = q.forward.clone();
        if let Some(payload) = r.encode(Encapsulation::DMode) {
            self.stats.responses_sent += 1;
            self.push(from, local, Encapsulation::DMode, payload);
        }
    }

    fn on_response(&mut self, now: Instant, local: IpAddr, from: SocketAddr, r: &Message<'_>) {
        let (Some(mri), Some(sid), Some(nli)) = (r.mri.clone(), r.session, r.nli.as_ref()) else {
            return;
        };
        let key = (sid, mri);
        // Only the Response to our own Query counts (its cookie echoed).
        let matches = self.pending.get(&key).is_some_and(|p| r.query_cookie == Some(&p.cookie[..]));
        if !matches {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let mut c = Message::new(MessageType::Confirm, self.cfg.nslpid, p.hops);
        c.mri = Some(key.1.clone());
        c.session = Some(sid);
        c.nli = Some(self.nli(local));
        c.responder_cookie = r.responder_cookie;
        if !p.data.is_empty() {
            c.nslp_data = Some(&p.data);
        }
        if let Some(payload) = c.encode(Encapsulation::DMode) {
            self.push(from, p.source_ip, Encapsulation::DMode, payload);
        }
        let validity = Duration::from_millis(u64::from(nli.validity_ms)).min(self.cfg.validity * 4);
        let peer = Peer { address: from, identity: nli.peer_identity.clone(), expires: now + validity };
        if self.routing.len() < self.cfg.max_routing_states || self.routing.contains(&key) {
            self.routing.set_peer(key, Toward::Target, peer);
        } else {
            self.stats.refused_full += 1;
        }
    }

    fn on_confirm(&mut self, now: Instant, local: IpAddr, from: SocketAddr, raw: &[u8], c: &Message<'_>) {
        let (Some(mri), Some(sid), Some(nli)) = (c.mri.clone(), c.session, c.nli.as_ref()) else {
            return;
        };
        let valid = c.responder_cookie.is_some_and(|rc| self.cookies.check(self.epoch(now), rc, from, &sid, &mri));
        if !valid {
            self.stats.bad_cookies += 1;
            let e = (ErrorClass::ProtocolError, ErrorCode::ObjectValue, wire::ObjectValueError::InvalidCookie as u8);
            self.send_error(local, from, raw, e, Some(sid), Some(mri));
            return;
        }
        let key = (sid, mri);
        if self.routing.len() >= self.cfg.max_routing_states && !self.routing.contains(&key) {
            self.stats.refused_full += 1;
            return;
        }
        self.stats.confirms_accepted += 1;
        let validity = Duration::from_millis(u64::from(nli.validity_ms)).min(self.cfg.validity * 4);
        let peer = Peer { address: from, identity: nli.peer_identity.clone(), expires: now + validity };
        self.routing.set_peer(key.clone(), Toward::Origin, peer);
        if let Some(data) = c.nslp_data {
            self.events.push_back(Event::Received {
                session: sid,
                mri: key.1,
                from: Toward::Origin,
                peer: from,
                peer_identity: nli.peer_identity.clone(),
                hops: c.header.hops.saturating_sub(1),
                data: data.to_vec(),
            });
        }
    }

    fn on_data(&mut self, local: IpAddr, from: SocketAddr, raw: &[u8], d: &Message<'_>) {
        let (Some(mri), Some(sid), Some(data)) = (d.mri.clone(), d.session, d.nslp_data) else {
            return;
        };
        let key = (sid, mri);
        let side = self.routing.get(&key).and_then(|s| {
            [Toward::Origin, Toward::Target]
                .into_iter()
                .find(|&side| s.peer(side).is_some_and(|p| p.address == from))
                .map(|side| (side, s.peer(side).map(|p| p.identity.clone()).unwrap_or_default()))
        });
        let Some((side, identity)) = side else {
            let e = (ErrorClass::ProtocolError, ErrorCode::NoRoutingState, 0);
            self.send_error(local, from, raw, e, Some(sid), Some(key.1));
            return;
        };
        self.stats.data_received += 1;
        self.events.push_back(Event::Received {
            session: sid,
            mri: key.1,
            from: side,
            peer: from,
            peer_identity: identity,
            hops: d.header.hops.saturating_sub(1),
            data: data.to_vec(),
        });
    }

    fn on_error(&mut self, from: SocketAddr, m: Message<'_>) {
        let Some(error) = m.error else {
            return;
        };
        let session = error.session;
        // An Error about one of our Queries ends it: whoever sent it is no
        // peer of ours for this NSLP (Endpoint Found, Hop Limit, ...).
        if let (Some(sid), Some(mri)) = (error.session, error.mri.clone())
            && let Some(p) = self.pending.remove(&(sid, mri.clone()))
        {
            self.events.push_back(Event::NoPeer { session: sid, mri, data: p.data, icmp: false });
        }
        self.events.push_back(Event::PeerError { session, peer: from, error });
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

    /// Answers a message with a GIST Error (never an Error with an Error).
    fn send_error(
        &mut self,
        local: IpAddr,
        to: SocketAddr,
        original: &[u8],
        (class, code, subcode): (ErrorClass, ErrorCode, u8),
        session: Option<SessionId>,
        mri: Option<Mri>,
    ) {
        let q_mode = original.starts_with(&wire::Q_MODE_MAGIC.to_be_bytes());
        let header_bytes = if q_mode { original.get(4..) } else { Some(original) };
        let mut original_header = [0u8; COMMON_HEADER_LEN];
        if let Some(h) = header_bytes.and_then(|b| b.get(..COMMON_HEADER_LEN)) {
            original_header.copy_from_slice(h);
        }
        if original_header.get(6).is_some_and(|t| t & 0x7f == MessageType::Error as u8) {
            return;
        }
        let mut m = Message::new(MessageType::Error, self.cfg.nslpid, self.cfg.initial_hops);
        m.nli = Some(self.nli(local));
        m.error = Some(ErrorObject {
            class,
            code,
            subcode,
            d_mode: true,
            q_mode,
            original_header,
            // §A.4.4.1: no MRI or Session ID with a header parse error.
            session: session.filter(|_| code != ErrorCode::CommonHeaderParse),
            mri: mri.filter(|_| code != ErrorCode::CommonHeaderParse),
            info: Vec::new(),
            comment: None,
        });
        if let Some(payload) = m.encode(Encapsulation::DMode) {
            self.stats.errors_sent += 1;
            self.push(to, local, Encapsulation::DMode, payload);
        }
    }
}

impl From<DecodeError> for SendError {
    fn from(_: DecodeError) -> Self {
        SendError::Encoding
    }
}
