//! The TURN server's control logic (RFC 8656 over RFC 8489), sans-IO: a
//! client's STUN request in, the answer out, with the host's relay building
//! block ([`Relay`]) told what to allocate, permit and bind. Relayed bytes
//! never come here: ChannelData and Send/Data indications are the host's.
//!
//! Time is an argument ([`Now`]); the nonce key is given at construction.
//! What it keeps per allocation: the relay's id and address, the username
//! and key that made it (later requests must be signed by the same user),
//! and the Allocate transaction (a retransmission gets the same answer).

mod auth;
mod keyed;
mod respond;
#[cfg(test)]
mod tests;

pub use auth::UnauthorizedLimiter;

use crate::config::Config;
use crate::credentials::Nonces;
use crate::relay::{AddressFamily, Client, Grant, PeerRefused, Relay, RelayError, RelayRequest};
use auth::{Authenticated, authenticate};
use keyed::{Keyed, Map};
use netserv_stun_wire::turn::{Family, TRANSPORT_TCP, TRANSPORT_UDP, attr as tattr, method};
use netserv_stun_wire::{Class, METHOD_BINDING, Message, attr, framing};
use respond::Answer;
use std::net::{IpAddr, SocketAddr};

/// The time, as the host's clock gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_s: u64,
}

/// What a message was counted as (a metric of the module; `as_str` is its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    Binding,
    Allocated,
    Refreshed,
    Freed,
    Permitted,
    ChannelBound,
    /// 401: no credentials, unknown user or wrong password.
    Unauthorized,
    /// 401: a REST username past its expiry.
    Expired,
    /// Over the per-source rate of 401s: dropped.
    UnauthorizedDropped,
    StaleNonce,
    /// 403: the host's peer policy.
    Forbidden,
    /// 486.
    QuotaReached,
    BadRequest,
    /// 437.
    Mismatch,
    /// 441.
    WrongCredentials,
    /// 442.
    UnsupportedTransport,
    /// 440 / 443.
    FamilyRefused,
    /// 508.
    InsufficientCapacity,
    UnknownAttribute,
    /// Not STUN, or not a request: dropped.
    Malformed,
    Ignored,
    /// RFC 6062: a Connect whose answer waits for the peer.
    Connecting,
    /// A Connect's peer accepted.
    Connected,
    /// 447: a Connect's peer refused or did not answer.
    ConnectFailed,
    ConnectionBound,
    /// A peer connected to a TCP allocation: the client is told.
    ConnectionAttempt,
}

impl Count {
    pub const ALL: [Count; 26] = [
        Count::Binding,
        Count::Allocated,
        Count::Refreshed,
        Count::Freed,
        Count::Permitted,
        Count::ChannelBound,
        Count::Unauthorized,
        Count::Expired,
        Count::UnauthorizedDropped,
        Count::StaleNonce,
        Count::Forbidden,
        Count::QuotaReached,
        Count::BadRequest,
        Count::Mismatch,
        Count::WrongCredentials,
        Count::UnsupportedTransport,
        Count::FamilyRefused,
        Count::InsufficientCapacity,
        Count::UnknownAttribute,
        Count::Malformed,
        Count::Ignored,
        Count::Connecting,
        Count::Connected,
        Count::ConnectFailed,
        Count::ConnectionBound,
        Count::ConnectionAttempt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Count::Binding => "binding_requests",
            Count::Allocated => "allocations",
            Count::Refreshed => "refreshes",
            Count::Freed => "allocations_freed",
            Count::Permitted => "permissions",
            Count::ChannelBound => "channel_bindings",
            Count::Unauthorized => "refused_unauthorized",
            Count::Expired => "refused_expired_username",
            Count::UnauthorizedDropped => "unauthorized_rate_limited",
            Count::StaleNonce => "refused_stale_nonce",
            Count::Forbidden => "refused_forbidden_peer",
            Count::QuotaReached => "refused_quota",
            Count::BadRequest => "refused_bad_request",
            Count::Mismatch => "refused_allocation_mismatch",
            Count::WrongCredentials => "refused_wrong_credentials",
            Count::UnsupportedTransport => "refused_unsupported_transport",
            Count::FamilyRefused => "refused_address_family",
            Count::InsufficientCapacity => "refused_insufficient_capacity",
            Count::UnknownAttribute => "refused_unknown_attribute",
            Count::Malformed => "malformed",
            Count::Ignored => "ignored",
            Count::Connecting => "connect_requests",
            Count::Connected => "connections",
            Count::ConnectFailed => "connect_failures",
            Count::ConnectionBound => "connection_binds",
            Count::ConnectionAttempt => "connection_attempts",
        }
    }
}

/// Why a request is not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An error response.
    Error { code: u16, reason: &'static str, count: Count },
    /// 401 or 438 with REALM and a fresh NONCE.
    Challenge { code: u16, count: Count },
    /// 420 naming the attributes.
    Unknown(Vec<u16>),
    /// No answer at all.
    Silent(Count),
    /// No answer yet: it comes when the host reports (RFC 6062 Connect
    /// waits for the peer).
    Pending(Count),
}

/// The answer to one message: bytes to send back (if any) and what it counted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub response: Option<Vec<u8>>,
    pub count: Count,
}

#[derive(Debug, Clone)]
struct Allocation {
    relay: u32,
    relayed: SocketAddr,
    family: AddressFamily,
    username: String,
    /// The Allocate that made it, and what it was granted.
    allocate_tx: [u8; 12],
    lifetime_s: u32,
    reservation: Option<u64>,
    /// A TCP allocation (RFC 6062).
    tcp: bool,
}

/// A TCP connection of a TCP allocation, until its data connection is bound.
#[derive(Debug, Clone)]
struct Conn {
    relay: u32,
    /// The Connect still waiting for the peer: whom to answer, and how.
    pending: Option<PendingConnect>,
}

#[derive(Debug, Clone)]
struct PendingConnect {
    client: Client,
    tx: [u8; 12],
    from: SocketAddr,
    who: Authenticated,
}

/// Attributes this server understands in a request (RFC 8489 §14 asks a
/// 420 for other comprehension-required ones).
const KNOWN: [u16; 18] = [
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::REALM,
    attr::NONCE,
    attr::USERHASH,
    attr::XOR_MAPPED_ADDRESS,
    0x001D, // PASSWORD-ALGORITHM
    tattr::CHANNEL_NUMBER,
    tattr::LIFETIME,
    tattr::XOR_PEER_ADDRESS,
    tattr::DATA,
    tattr::REQUESTED_ADDRESS_FAMILY,
    tattr::EVEN_PORT,
    tattr::REQUESTED_TRANSPORT,
    tattr::DONT_FRAGMENT,
    tattr::RESERVATION_TOKEN,
    tattr::CONNECTION_ID,
];

/// The relay's control state.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    nonces: Nonces,
    limiter: UnauthorizedLimiter,
    allocations: Map<Client, Allocation>,
    by_relay: Map<u32, Client>,
    per_user: Map<String, u32>,
    connections: Map<u32, Conn>,
    /// For the transaction ids of ConnectionAttempt indications.
    indications: u64,
    tx_key: u64,
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::V4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => AddressFamily::V4,
        IpAddr::V6(_) => AddressFamily::V6,
    }
}

impl Server {
    /// `nonce_key`: 32 random bytes of this instance (nonces need not
    /// outlive it: a client whose nonce is unknown gets a 438 and retries).
    pub fn new(cfg: Config, nonce_key: [u8; 32]) -> Self {
        let nonces = Nonces::new(nonce_key, cfg.nonce_lifetime_s);
        let hash = Keyed::from_instance_key(&nonce_key);
        Self {
            cfg,
            nonces,
            limiter: UnauthorizedLimiter::new(hash),
            allocations: Map::with_hasher(hash),
            by_relay: Map::with_hasher(hash),
            per_user: Map::with_hasher(hash),
            connections: Map::with_hasher(hash),
            indications: 0,
            tx_key: u64::from_le_bytes(nonce_key[8..16].try_into().unwrap_or([3; 8])),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Allocations held now.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// One message from a client at `from`.
    pub fn handle(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        from: SocketAddr,
        data: &[u8],
        now: Now,
    ) -> Outcome {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(_) => {
                // A request whose header we can read gets a 400; anything
                // else is not for us.
                return match respond::bad_request_to_malformed(data, &self.cfg) {
                    Some(r) => Outcome { response: Some(r), count: Count::BadRequest },
                    None => Outcome { response: None, count: Count::Malformed },
                };
            }
        };
        if msg.class() != Class::Request {
            // Send indications the host did not relay (no permission) and
            // stray responses: RFC 8656 §11.2 drops them silently.
            return Outcome { response: None, count: Count::Ignored };
        }
        let answer = Answer::new(&msg, from);
        match msg.method() {
            METHOD_BINDING => answer.binding(&self.cfg),
            method::ALLOCATE
            | method::REFRESH
            | method::CREATE_PERMISSION
            | method::CHANNEL_BIND
            | method::CONNECT
            | method::CONNECTION_BIND => {
                match authenticate(&self.cfg, &self.nonces, &mut self.limiter, relay, &msg, from, now) {
                    Err(r) => answer.refuse(&self.cfg, &self.nonces, now, r, None),
                    Ok(who) => match self.authenticated(relay, client, from, &msg, &who) {
                        Ok((attrs, count)) => answer.success(&self.cfg, attrs, &who, count),
                        Err(r) => answer.refuse(&self.cfg, &self.nonces, now, r, Some(&who)),
                    },
                }
            }
            _ => {
                let r = Refusal::Error { code: 400, reason: "unsupported method", count: Count::BadRequest };
                answer.refuse(&self.cfg, &self.nonces, now, r, None)
            }
        }
    }

    /// The relay ended (its lifetime ran out, or it was freed).
    pub fn relay_closed(&mut self, relay: u32) {
        self.connections.retain(|_, c| c.relay != relay);
        if let Some(client) = self.by_relay.remove(&relay)
            && let Some(a) = self.allocations.remove(&client)
        {
            self.release_user(&a.username);
        }
    }

    /// The host's word on a Connect (RFC 6062 §5.2): the success answer
    /// with CONNECTION-ID, or a 447; for the client that asked.
    pub fn connect_result(&mut self, connection: u32, ok: bool) -> Option<(Client, Outcome)> {
        let c = self.connections.get_mut(&connection)?;
        let p = c.pending.take()?;
        let answer = Answer::later(method::CONNECT, p.tx, p.from);
        if ok {
            let attrs = vec![respond::Attr::ConnectionId(connection)];
            return Some((p.client, answer.success(&self.cfg, attrs, &p.who, Count::Connected)));
        }
        self.connections.remove(&connection);
        let out = answer.error_signed(&self.cfg, 447, "the peer did not accept", Count::ConnectFailed, &p.who);
        Some((p.client, out))
    }

    /// A peer connected to `relay`'s relayed address (the host checked its
    /// permission): a ConnectionAttempt indication for the allocation's client.
    pub fn connection_attempt(&mut self, relay: u32, connection: u32, peer: SocketAddr) -> Option<(Client, Outcome)> {
        let client = *self.by_relay.get(&relay)?;
        self.connections.insert(connection, Conn { relay, pending: None });
        self.indications += 1;
        let tx = respond::transaction_id(self.tx_key, self.indications);
        let bytes = respond::connection_attempt(&self.cfg, tx, connection, peer);
        Some((client, Outcome { response: Some(bytes), count: Count::ConnectionAttempt }))
    }

    /// The host closed a connection.
    pub fn connection_closed(&mut self, connection: u32) {
        self.connections.remove(&connection);
    }

    fn release_user(&mut self, username: &str) {
        if let Some(n) = self.per_user.get_mut(username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(username);
            }
        }
    }

    /// The request's own work, once its signature holds: the attributes of
    /// the success answer (beyond MESSAGE-INTEGRITY and FINGERPRINT) and
    /// what it counts as.
    fn authenticated(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        from: SocketAddr,
        msg: &Message<'_>,
        who: &Authenticated,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let signed = msg.authenticated();
        let unknown: Vec<u16> = signed
            .attributes()
            .filter_map(Result::ok)
            .map(|a| a.kind)
            .filter(|k| attr::comprehension_required(*k) && !KNOWN.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Refusal::Unknown(unknown));
        }
        if signed.method() == method::ALLOCATE {
            return self.allocate(relay, client, from, &signed, who);
        }
        if signed.method() == method::CONNECTION_BIND {
            // On a new data connection, which holds no allocation.
            return self.connection_bind(relay, client, &signed, who);
        }
        let Some(a) = self.allocations.get(&client).cloned() else {
            return Err(Refusal::Error { code: 437, reason: "no allocation for this 5-tuple", count: Count::Mismatch });
        };
        if a.username != who.username {
            return Err(Refusal::Error {
                code: 441,
                reason: "not the allocation's user",
                count: Count::WrongCredentials,
            });
        }
        match signed.method() {
            method::REFRESH => self.refresh(relay, client, &signed, &a),
            method::CREATE_PERMISSION => self.create_permission(relay, &signed, &a),
            method::CONNECT => self.connect(relay, client, from, &signed, &a, who),
            _ if a.tcp => {
                Err(Refusal::Error { code: 400, reason: "no channels on a TCP allocation", count: Count::BadRequest })
            }
            _ => self.channel_bind(relay, &signed, &a),
        }
    }

    fn allocate(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        from: SocketAddr,
        m: &Message<'_>,
        who: &Authenticated,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let bad = |reason| Refusal::Error { code: 400, reason, count: Count::BadRequest };
        if let Some(a) = self.allocations.get(&client) {
            // A retransmission of the Allocate that made it gets its answer again.
            if a.allocate_tx == *m.transaction_id() && a.username == who.username {
                return Ok((respond::allocated(a.relayed, a.lifetime_s, a.reservation, from), Count::Allocated));
            }
            return Err(Refusal::Error { code: 437, reason: "allocation exists", count: Count::Mismatch });
        }
        let tcp = match m.requested_transport() {
            None => return Err(bad("REQUESTED-TRANSPORT is required")),
            Some(Err(_)) => return Err(bad("malformed REQUESTED-TRANSPORT")),
            Some(Ok(TRANSPORT_UDP)) => false,
            // RFC 6062 §5.1: a TCP allocation is made over a TCP connection.
            Some(Ok(TRANSPORT_TCP)) if matches!(client, Client::Stream(_)) => true,
            Some(Ok(TRANSPORT_TCP)) => return Err(bad("a TCP allocation needs a TCP control connection")),
            Some(Ok(_)) => {
                return Err(Refusal::Error {
                    code: 442,
                    reason: "only UDP and TCP relaying",
                    count: Count::UnsupportedTransport,
                });
            }
        };
        let even = m.even_port().transpose().map_err(|_| bad("malformed EVEN-PORT"))?;
        let token = m.reservation_token().transpose().map_err(|_| bad("malformed RESERVATION-TOKEN"))?;
        if tcp && (even.is_some() || token.is_some() || m.dont_fragment()) {
            return Err(bad("EVEN-PORT, RESERVATION-TOKEN and DONT-FRAGMENT are for UDP allocations"));
        }
        let requested =
            m.requested_address_family().transpose().map_err(|_| bad("malformed REQUESTED-ADDRESS-FAMILY"))?;
        let additional =
            m.additional_address_family().transpose().map_err(|_| bad("malformed ADDITIONAL-ADDRESS-FAMILY"))?;
        if even.is_some() && token.is_some() {
            return Err(bad("EVEN-PORT with RESERVATION-TOKEN"));
        }
        if token.is_some() && (requested.is_some() || additional.is_some()) {
            return Err(bad("RESERVATION-TOKEN with an address family"));
        }
        if requested.is_some() && additional.is_some() {
            return Err(bad("REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together"));
        }
        if additional == Some(Family::V4) {
            return Err(bad("ADDITIONAL-ADDRESS-FAMILY must be IPv6"));
        }
        let family = match requested {
            Some(Family::V6) => AddressFamily::V6,
            _ => AddressFamily::V4,
        };
        if self.cfg.user_quota > 0 && self.per_user.get(&who.username).copied().unwrap_or(0) >= self.cfg.user_quota {
            return Err(Refusal::Error { code: 486, reason: "allocation quota reached", count: Count::QuotaReached });
        }
        let lifetime_s = self.cfg.grant_lifetime(m.lifetime().and_then(Result::ok));
        let request = RelayRequest {
            client,
            family,
            even_port: even.is_some(),
            reserve_next: even == Some(true),
            reservation: token.map(u64::from_be_bytes),
            lifetime_ms: u64::from(lifetime_s) * 1000,
            max_bps: self.cfg.max_bps,
            dont_fragment: m.dont_fragment(),
            tcp,
        };
        let Grant { relay: id, relayed, reservation } = relay.allocate(&request).map_err(|e| match e {
            RelayError::QuotaReached => {
                Refusal::Error { code: 486, reason: "allocation quota reached", count: Count::QuotaReached }
            }
            RelayError::Exists => Refusal::Error { code: 437, reason: "allocation exists", count: Count::Mismatch },
            RelayError::FamilyUnsupported => {
                Refusal::Error { code: 440, reason: "address family not supported", count: Count::FamilyRefused }
            }
            RelayError::BadReservation | RelayError::NoPort => {
                Refusal::Error { code: 508, reason: "insufficient capacity", count: Count::InsufficientCapacity }
            }
        })?;
        self.allocations.insert(
            client,
            Allocation {
                relay: id,
                relayed,
                family,
                username: who.username.clone(),
                allocate_tx: *m.transaction_id(),
                lifetime_s,
                reservation,
                tcp,
            },
        );
        self.by_relay.insert(id, client);
        *self.per_user.entry(who.username.clone()).or_default() += 1;
        let mut attrs = respond::allocated(relayed, lifetime_s, reservation, from);
        if additional == Some(Family::V6) {
            // One family per allocation here: the IPv4 one is granted, the
            // IPv6 one refused in the answer (RFC 8656 §7.2, 440).
            attrs.push(respond::Attr::AddressError { family: Family::V6, code: 440 });
        }
        Ok((attrs, Count::Allocated))
    }

    fn refresh(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        m: &Message<'_>,
        a: &Allocation,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let requested = m.requested_address_family().transpose().map_err(|_| Refusal::Error {
            code: 400,
            reason: "malformed REQUESTED-ADDRESS-FAMILY",
            count: Count::BadRequest,
        })?;
        let family = requested.map(|f| if f == Family::V6 { AddressFamily::V6 } else { AddressFamily::V4 });
        if family.is_some_and(|f| f != a.family) {
            return Err(Refusal::Error {
                code: 443,
                reason: "peer address family mismatch",
                count: Count::FamilyRefused,
            });
        }
        let requested_lifetime = m.lifetime().and_then(Result::ok);
        if requested_lifetime == Some(0) {
            relay.refresh(a.relay, 0);
            self.relay_closed(a.relay);
            let _ = client;
            return Ok((vec![respond::Attr::Lifetime(0)], Count::Freed));
        }
        let lifetime_s = self.cfg.grant_lifetime(requested_lifetime);
        if !relay.refresh(a.relay, u64::from(lifetime_s) * 1000) {
            self.relay_closed(a.relay);
            return Err(Refusal::Error { code: 437, reason: "allocation expired", count: Count::Mismatch });
        }
        Ok((vec![respond::Attr::Lifetime(lifetime_s)], Count::Refreshed))
    }

    fn peers(m: &Message<'_>, a: &Allocation) -> Result<Vec<SocketAddr>, Refusal> {
        let bad = |reason| Refusal::Error { code: 400, reason, count: Count::BadRequest };
        let peers: Vec<SocketAddr> = m
            .xor_addresses(tattr::XOR_PEER_ADDRESS)
            .collect::<Result<_, _>>()
            .map_err(|_| bad("malformed XOR-PEER-ADDRESS"))?;
        if peers.is_empty() {
            return Err(bad("XOR-PEER-ADDRESS is required"));
        }
        if peers.iter().any(|p| family_of(p.ip()) != a.family) {
            return Err(Refusal::Error {
                code: 443,
                reason: "peer address family mismatch",
                count: Count::FamilyRefused,
            });
        }
        Ok(peers)
    }

    fn create_permission(
        &mut self,
        relay: &mut impl Relay,
        m: &Message<'_>,
        a: &Allocation,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let peers: Vec<IpAddr> = Self::peers(m, a)?.into_iter().map(|p| p.ip()).collect();
        let lifetime_ms = u64::from(self.cfg.permission_lifetime_s) * 1000;
        relay.permit(a.relay, &peers, lifetime_ms).map_err(|e| self.peer_refusal(e, a))?;
        Ok((Vec::new(), Count::Permitted))
    }

    fn channel_bind(
        &mut self,
        relay: &mut impl Relay,
        m: &Message<'_>,
        a: &Allocation,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let bad = |reason| Refusal::Error { code: 400, reason, count: Count::BadRequest };
        let max = if self.cfg.strict_channels { framing::CHANNEL_MAX_RFC8656 } else { framing::CHANNEL_MAX };
        let channel = match m.channel_number() {
            Some(Ok(c)) if (framing::CHANNEL_MIN..=max).contains(&c) => c,
            Some(_) => return Err(bad("channel number outside the range this relay binds")),
            None => return Err(bad("CHANNEL-NUMBER is required")),
        };
        let peers = Self::peers(m, a)?;
        let [peer] = peers[..] else { return Err(bad("exactly one XOR-PEER-ADDRESS")) };
        let lifetime_ms = u64::from(self.cfg.channel_lifetime_s) * 1000;
        relay.bind_channel(a.relay, channel, peer, lifetime_ms).map_err(|e| self.peer_refusal(e, a))?;
        Ok((Vec::new(), Count::ChannelBound))
    }

    /// RFC 6062 §5.2: the answer waits until the host has connected.
    fn connect(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        from: SocketAddr,
        m: &Message<'_>,
        a: &Allocation,
        who: &Authenticated,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        if !a.tcp {
            return Err(Refusal::Error {
                code: 400,
                reason: "Connect needs a TCP allocation",
                count: Count::BadRequest,
            });
        }
        let peers = Self::peers(m, a)?;
        let [peer] = peers[..] else {
            return Err(Refusal::Error { code: 400, reason: "exactly one XOR-PEER-ADDRESS", count: Count::BadRequest });
        };
        let id = relay.connect(a.relay, peer).map_err(|e| match e {
            PeerRefused::Conflict => {
                Refusal::Error { code: 446, reason: "a connection to that peer exists", count: Count::BadRequest }
            }
            e => self.peer_refusal(e, a),
        })?;
        let pending = PendingConnect { client, tx: *m.transaction_id(), from, who: who.clone() };
        self.connections.insert(id, Conn { relay: a.relay, pending: Some(pending) });
        Err(Refusal::Pending(Count::Connecting))
    }

    /// RFC 6062 §5.4: a new connection from the client joins a connection
    /// the allocation made or was offered; signed by the allocation's user.
    fn connection_bind(
        &mut self,
        relay: &mut impl Relay,
        client: Client,
        m: &Message<'_>,
        who: &Authenticated,
    ) -> Result<(Vec<respond::Attr>, Count), Refusal> {
        let bad = |reason| Refusal::Error { code: 400, reason, count: Count::BadRequest };
        let Client::Stream(stream) = client else { return Err(bad("ConnectionBind is for TCP connections")) };
        if self.allocations.contains_key(&client) {
            return Err(bad("a control connection cannot be a data connection"));
        }
        let id = match m.connection_id() {
            Some(Ok(id)) => id,
            Some(Err(_)) => return Err(bad("malformed CONNECTION-ID")),
            None => return Err(bad("CONNECTION-ID is required")),
        };
        let Some(conn) = self.connections.get(&id).filter(|c| c.pending.is_none()) else {
            return Err(bad("no such connection waiting"));
        };
        let owner = self.by_relay.get(&conn.relay).and_then(|c| self.allocations.get(c));
        if owner.is_none_or(|a| a.username != who.username) {
            return Err(Refusal::Error {
                code: 441,
                reason: "not the allocation's user",
                count: Count::WrongCredentials,
            });
        }
        if !relay.bind_connection(id, stream) {
            return Err(bad("the connection cannot be bound"));
        }
        self.connections.remove(&id);
        Ok((Vec::new(), Count::ConnectionBound))
    }

    fn peer_refusal(&mut self, e: PeerRefused, a: &Allocation) -> Refusal {
        match e {
            PeerRefused::Forbidden(_) => {
                Refusal::Error { code: 403, reason: "peer address forbidden", count: Count::Forbidden }
            }
            PeerRefused::NoRelay => {
                self.relay_closed(a.relay);
                Refusal::Error { code: 437, reason: "allocation expired", count: Count::Mismatch }
            }
            PeerRefused::QuotaReached => Refusal::Error {
                code: 508,
                reason: "too many permissions or channels",
                count: Count::InsufficientCapacity,
            },
            PeerRefused::Conflict => Refusal::Error {
                code: 400,
                reason: "channel bound to another peer, or peer to another channel",
                count: Count::BadRequest,
            },
        }
    }
}
