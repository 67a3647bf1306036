//! What a server module's host imports act on: the relay engine, the
//! module's sockets, the tenant's secrets, its timers. It lives in the
//! module's wasmtime store, so a host call reaches it without a lock; only
//! the module's own thread ever touches it.

use super::convert::{client_from_wit, ip_from_wit, socket_addr, wit_addr};
use super::streams::Stream;
use super::tcp_relay::{self, PeerConn, State};
use crate::relay::engine::{AllocateError, Client, Engine, PeerError, RelayId};
use crate::relay::ports::PortPool;
use crate::runtime::server_world::{secrets, server, timers};
use crate::secrets::TenantSecrets;
use mio::net::UdpSocket;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Timers a module may hold at once.
pub const MAX_TIMERS: usize = 64;
/// Messages one guest call may queue for clients, and their size.
const MAX_OUTBOX: usize = 256;
const MAX_MESSAGE: usize = 65_535;
/// Peers one permit call may name.
const MAX_PERMIT_PEERS: usize = 32;
/// Ports tried when binding a relay socket fails (a port taken by another process).
const BIND_ATTEMPTS: usize = 8;

/// Mio tokens: the waker, the listeners, the relay sockets.
pub const WAKER: mio::Token = mio::Token(0);
pub const RELAY_TOKEN_BASE: usize = 1 << 20;

pub fn relay_token(id: RelayId) -> mio::Token {
    mio::Token(RELAY_TOKEN_BASE + id as usize)
}

pub enum ListenerSocket {
    Udp(UdpSocket),
    Tcp(mio::net::TcpListener),
}

pub struct Listener {
    pub socket: ListenerSocket,
    pub local: SocketAddr,
}

impl Listener {
    pub fn udp(&self) -> Option<&UdpSocket> {
        match &self.socket {
            ListenerSocket::Udp(s) => Some(s),
            ListenerSocket::Tcp(_) => None,
        }
    }
}

/// Mio tokens of TCP client connections (below the relay sockets').
pub const STREAM_TOKEN_BASE: usize = 1 << 19;

pub fn stream_token(id: u32) -> mio::Token {
    mio::Token(STREAM_TOKEN_BASE + id as usize)
}

/// Mio tokens of TCP allocations' listeners and of their peer connections
/// (RFC 6062), above the UDP relay sockets'.
pub const TCP_RELAY_TOKEN_BASE: usize = 1 << 36;
pub const CONN_TOKEN_BASE: usize = 1 << 40;

pub fn tcp_relay_token(id: RelayId) -> mio::Token {
    mio::Token(TCP_RELAY_TOKEN_BASE + id as usize)
}

pub fn conn_token(id: u32) -> mio::Token {
    mio::Token(CONN_TOKEN_BASE + id as usize)
}

pub struct Ctx {
    pub engine: Engine,
    pub ports: PortPool,
    /// The address relay sockets bind to and allocations announce.
    address: IpAddr,
    registry: mio::Registry,
    pub relays: HashMap<RelayId, UdpSocket>,
    /// TCP allocations' listeners (RFC 6062).
    pub tcp_relays: HashMap<RelayId, mio::net::TcpListener>,
    /// TCP allocations' connections with peers, by CONNECTION-ID.
    pub conns: HashMap<u32, PeerConn>,
    next_conn: u32,
    /// Connections bound during a guest call (the shell pumps them after it),
    /// and Connects that failed at once (it reports them after it).
    pub just_bound: Vec<u32>,
    pub failed_connects: Vec<u32>,
    pub listeners: Vec<Listener>,
    /// TCP clients' connections, by stream id.
    pub streams: HashMap<u32, Stream>,
    /// Connections per client address (bounded: one address cannot take them all).
    streams_per_ip: HashMap<IpAddr, u32>,
    next_stream: u32,
    /// What the guest sent during a call, for the shell to put on the wire.
    pub outbox: Vec<(Client, Vec<u8>)>,
    /// The client whose message the guest is handling now: the one it may
    /// allocate for and answer (besides clients that hold an allocation).
    /// A guest cannot name an address of its choosing as a client.
    pub current: Option<Client>,
    secrets: Arc<TenantSecrets>,
    instance_key: [u8; 32],
    /// Timer id -> due (ms on the shell's clock).
    pub timers: BTreeMap<u32, u64>,
    /// The shell's clock (ms since the module started), set before each call.
    pub now_ms: u64,
    next_token: u64,
}

impl Ctx {
    pub fn new(
        engine: Engine,
        ports: PortPool,
        address: IpAddr,
        registry: mio::Registry,
        listeners: Vec<Listener>,
        secrets: Arc<TenantSecrets>,
        instance_key: [u8; 32],
    ) -> Self {
        let next_token = u64::from_le_bytes(instance_key[..8].try_into().unwrap_or([1; 8]));
        Self {
            engine,
            ports,
            address,
            registry,
            relays: HashMap::new(),
            tcp_relays: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            just_bound: Vec::new(),
            failed_connects: Vec::new(),
            listeners,
            streams: HashMap::new(),
            streams_per_ip: HashMap::new(),
            next_stream: 0,
            outbox: Vec::new(),
            current: None,
            secrets,
            instance_key,
            timers: BTreeMap::new(),
            now_ms: 0,
            next_token,
        }
    }

    /// Closes a relay socket the engine no longer has, and frees its port.
    pub fn close_relay(&mut self, relay: RelayId, relayed: SocketAddr) {
        if let Some(mut s) = self.relays.remove(&relay) {
            let _ = self.registry.deregister(&mut s);
        }
        if let Some(mut l) = self.tcp_relays.remove(&relay) {
            let _ = self.registry.deregister(&mut l);
            // Its connections and their data connections end with it.
            let ids: Vec<u32> = self.conns.iter().filter(|(_, c)| c.relay == relay).map(|(id, _)| *id).collect();
            for id in ids {
                self.close_conn(id);
            }
        }
        self.ports.give_back(relayed.port());
    }

    /// Closes a peer connection and the data connection bound to it; the
    /// data connection's id, if it had one.
    pub fn close_conn(&mut self, id: u32) -> Option<u32> {
        let mut c = self.conns.remove(&id)?;
        let _ = self.registry.deregister(&mut c.socket);
        let State::Bound(stream) = c.state else { return None };
        self.remove_stream(stream);
        Some(stream)
    }

    /// A permitted peer connected to a TCP allocation: its id (None when
    /// refused: no permission, or too many connections).
    pub fn accept_conn(&mut self, relay: RelayId, mut socket: mio::net::TcpStream, peer: SocketAddr) -> Option<u32> {
        if !self.engine.permitted(relay, peer.ip(), self.now_ms) || !self.conn_room(relay) {
            return None;
        }
        let id = self.new_conn_id();
        if !self.register_conn(id, &mut socket) {
            return None;
        }
        let _ = socket.set_nodelay(true);
        let deadline = self.now_ms + tcp_relay::BIND_TIMEOUT_MS;
        self.conns.insert(id, PeerConn::new(relay, peer, socket, State::Unbound, deadline));
        Some(id)
    }

    fn conn_room(&self, relay: RelayId) -> bool {
        self.conns.len() < tcp_relay::MAX_CONNECTIONS
            && self.conns.values().filter(|c| c.relay == relay).count() < tcp_relay::MAX_PER_RELAY
    }

    fn new_conn_id(&mut self) -> u32 {
        loop {
            self.next_conn = self.next_conn.wrapping_add(1);
            if self.next_conn != 0 && !self.conns.contains_key(&self.next_conn) {
                return self.next_conn;
            }
        }
    }

    /// Registers a new TCP client; None when the module holds as many as it may.
    pub fn add_stream(&mut self, mut socket: mio::net::TcpStream, peer: SocketAddr) -> Option<u32> {
        if self.streams.len() >= super::streams::MAX_STREAMS
            || self.streams_per_ip.get(&peer.ip()).copied().unwrap_or(0) >= super::streams::MAX_STREAMS_PER_IP
        {
            return None;
        }
        let span = u32::try_from(RELAY_TOKEN_BASE - STREAM_TOKEN_BASE).unwrap_or(u32::MAX);
        let id = loop {
            self.next_stream = (self.next_stream + 1) % span;
            if !self.streams.contains_key(&self.next_stream) {
                break self.next_stream;
            }
        };
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        self.registry.register(&mut socket, stream_token(id), interest).ok()?;
        self.streams.insert(id, Stream::new(socket, peer, self.now_ms));
        *self.streams_per_ip.entry(peer.ip()).or_default() += 1;
        Some(id)
    }

    /// Forgets a TCP client (its socket closes); the allocation it held, if any.
    pub fn remove_stream(&mut self, id: u32) -> Option<(RelayId, crate::relay::engine::Allocation)> {
        if let Some(mut s) = self.streams.remove(&id) {
            let _ = self.registry.deregister(&mut s.socket);
            if let Some(conn) = s.bound {
                self.close_conn(conn);
            }
            if let Some(n) = self.streams_per_ip.get_mut(&s.peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.streams_per_ip.remove(&s.peer.ip());
                }
            }
        }
        let relay = self.engine.relay_of(&Client::Tcp(id))?;
        let a = self.engine.remove(relay)?;
        self.close_relay(relay, a.relayed);
        Some((relay, a))
    }

    /// Connections that hold no allocation and sent nothing for a while.
    pub fn idle_streams(&self, now_ms: u64) -> Vec<u32> {
        self.streams
            .iter()
            .filter(|(id, s)| {
                now_ms.saturating_sub(s.last_active_ms) > super::streams::IDLE_WITHOUT_ALLOCATION_MS
                    && s.bound.is_none()
                    && self.engine.relay_of(&Client::Tcp(**id)).is_none()
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Puts `bytes` on the wire to `client` (one message).
    pub fn deliver(&mut self, client: Client, bytes: &[u8]) {
        match client {
            Client::Udp { listener, from } => {
                if let Some(s) = self.listeners.get(listener as usize).and_then(Listener::udp) {
                    let _ = s.send_to(bytes, from);
                }
            }
            Client::Tcp(id) => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.write(bytes);
                }
            }
        }
    }

    /// Gives back the capacity the tables grew under load; whether any did.
    pub fn shrink(&mut self) -> bool {
        let before = self.relays.capacity() + self.streams_per_ip.capacity();
        self.relays.shrink_to_fit();
        self.streams.shrink_to_fit();
        self.streams_per_ip.shrink_to_fit();
        let engine = self.engine.shrink();
        engine || before > self.relays.capacity() + self.streams_per_ip.capacity()
    }

    /// Ends every allocation (after the guest lost its state in a fault).
    pub fn clear(&mut self) {
        let ids: Vec<RelayId> = self.relays.keys().chain(self.tcp_relays.keys()).copied().collect();
        for id in ids {
            if let Some(a) = self.engine.remove(id) {
                self.close_relay(id, a.relayed);
            }
        }
        self.timers.clear();
        self.outbox.clear();
        let streams: Vec<u32> = self.streams.keys().copied().collect();
        for id in streams {
            self.remove_stream(id);
        }
        let conns: Vec<u32> = self.conns.keys().copied().collect();
        for id in conns {
            self.close_conn(id);
        }
        self.just_bound.clear();
        self.failed_connects.clear();
    }

    fn bind(&mut self, port: u16, dont_fragment: bool) -> std::io::Result<UdpSocket> {
        let addr = SocketAddr::new(self.address, port);
        let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_nonblocking(true)?;
        if dont_fragment && addr.is_ipv4() {
            // IP_MTU_DISCOVER = IP_PMTUDISC_DO: the DF bit on every datagram.
            rustix::net::sockopt::set_ip_mtu_discover(&s, rustix::net::sockopt::Ipv4PathMtuDiscovery::DO)?;
        }
        s.bind(&addr.into())?;
        Ok(UdpSocket::from_std(s.into()))
    }

    fn allocate(&mut self, r: &server::RelayRequest) -> Result<server::RelayGrant, server::RelayError> {
        use server::RelayError as E;
        let wants_v6 = matches!(r.family, server::AddressFamily::Ipv6);
        if wants_v6 != self.address.is_ipv6() {
            return Err(E::FamilyUnsupported);
        }
        let client = client_from_wit(&r.client);
        if self.current != Some(client) {
            // Only for the client whose request is being handled.
            return Err(E::Exists);
        }
        self.engine.check_new(&client).map_err(|e| match e {
            AllocateError::Exists => E::Exists,
            AllocateError::QuotaReached => E::QuotaReached,
        })?;
        // A TCP allocation (RFC 6062) is made over a TCP control connection.
        if r.tcp && !matches!(client, Client::Tcp(_)) {
            return Err(E::NoPort);
        }
        let mut reservation = None;
        let mut port = match r.reservation {
            Some(token) => Some(self.ports.redeem(token, self.now_ms).ok_or(E::BadReservation)?),
            None if r.even_port && r.reserve_next => {
                self.next_token = self.next_token.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                reservation = Some(self.next_token);
                self.ports.take_pair(self.next_token, self.now_ms)
            }
            None => self.ports.take(r.even_port),
        };
        for _ in 0..BIND_ATTEMPTS {
            let Some(p) = port else { break };
            let relayed = SocketAddr::new(self.address, p);
            // A UDP socket, or a TCP allocation's listener (RFC 6062 §5.1).
            let bound = if r.tcp {
                tcp_relay::listen(relayed).map(RelaySocket::Tcp)
            } else {
                self.bind(p, r.dont_fragment).map(RelaySocket::Udp)
            };
            match bound {
                Ok(RelaySocket::Udp(mut socket)) => {
                    let id = self.insert_relay(client, relayed, r, &mut socket, relay_token)?;
                    self.relays.insert(id, socket);
                    return Ok(server::RelayGrant { id, relayed: wit_addr(relayed), reservation });
                }
                Ok(RelaySocket::Tcp(mut listener)) => {
                    let id = self.insert_relay(client, relayed, r, &mut listener, tcp_relay_token)?;
                    self.tcp_relays.insert(id, listener);
                    return Ok(server::RelayGrant { id, relayed: wit_addr(relayed), reservation });
                }
                Err(e) => {
                    tracing::debug!(port = p, error = %e, "relay port not bindable; trying another");
                    // To the back of the pool: busy elsewhere now, maybe not later.
                    let next = if r.reservation.is_some() { None } else { self.ports.take(r.even_port) };
                    self.ports.give_back(p);
                    port = next;
                }
            }
        }
        Err(if self.ports.available() == 0 { E::QuotaReached } else { E::NoPort })
    }

    /// The engine's allocation for a socket just bound on `relayed`, and the
    /// socket on the loop under `token(id)`; undone (port back) on failure.
    fn insert_relay(
        &mut self,
        client: Client,
        relayed: SocketAddr,
        r: &server::RelayRequest,
        socket: &mut impl mio::event::Source,
        token: fn(RelayId) -> mio::Token,
    ) -> Result<RelayId, server::RelayError> {
        // DONT-FRAGMENT is for UDP datagrams only.
        let dont_fragment = r.dont_fragment && !r.tcp;
        let id = self
            .engine
            .insert(client, relayed, r.lifetime_ms, r.max_bps, dont_fragment, self.now_ms)
            .map_err(|_| server::RelayError::QuotaReached)?;
        if self.registry.register(socket, token(id), mio::Interest::READABLE).is_err() {
            self.engine.remove(id);
            self.ports.give_back(relayed.port());
            return Err(server::RelayError::NoPort);
        }
        Ok(id)
    }

    /// Puts a TCP allocation's connection with a peer on the loop.
    fn register_conn(&mut self, id: u32, socket: &mut mio::net::TcpStream) -> bool {
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        self.registry.register(socket, conn_token(id), interest).is_ok()
    }
}

/// What an allocation relays through.
enum RelaySocket {
    Udp(UdpSocket),
    Tcp(mio::net::TcpListener),
}

fn refusal(e: PeerError) -> server::PeerRefused {
    match e {
        PeerError::Forbidden(why) => server::PeerRefused::Forbidden(why.as_str().to_owned()),
        PeerError::NoRelay => server::PeerRefused::NoRelay,
        PeerError::QuotaReached => server::PeerRefused::QuotaReached,
        PeerError::Conflict => server::PeerRefused::Conflict,
    }
}

impl server::Host for Ctx {
    fn send(&mut self, to: server::Client, data: Vec<u8>) -> bool {
        if self.outbox.len() >= MAX_OUTBOX || data.len() > MAX_MESSAGE {
            return false;
        }
        let client = client_from_wit(&to);
        // The client being answered, or one holding an allocation: never an
        // address the guest picked (that would be a way around the peer policy).
        let seen = self.current == Some(client) || self.engine.has_client(&client);
        let known = seen
            && match client {
                Client::Udp { listener, .. } => {
                    self.listeners.get(listener as usize).is_some_and(|l| l.udp().is_some())
                }
                Client::Tcp(id) => self.streams.contains_key(&id),
            };
        if !known {
            return false;
        }
        self.outbox.push((client, data));
        true
    }

    fn allocate(&mut self, request: server::RelayRequest) -> Result<server::RelayGrant, server::RelayError> {
        Ctx::allocate(self, &request)
    }

    fn refresh(&mut self, relay: u32, lifetime_ms: u64) -> bool {
        match self.engine.refresh(relay, lifetime_ms, self.now_ms) {
            None => false,
            Some(None) => true,
            Some(Some(ended)) => {
                self.close_relay(relay, ended.relayed);
                true
            }
        }
    }

    fn permit(
        &mut self,
        relay: u32,
        peers: Vec<server::IpAddress>,
        lifetime_ms: u64,
    ) -> Result<(), server::PeerRefused> {
        if peers.len() > MAX_PERMIT_PEERS {
            return Err(server::PeerRefused::QuotaReached);
        }
        let peers: Vec<IpAddr> = peers.iter().map(ip_from_wit).collect();
        self.engine.permit(relay, &peers, lifetime_ms, self.now_ms).map_err(refusal)
    }

    fn bind_channel(
        &mut self,
        relay: u32,
        channel: u16,
        peer: server::SocketAddress,
        lifetime_ms: u64,
    ) -> Result<(), server::PeerRefused> {
        self.engine.bind_channel(relay, channel, socket_addr(&peer), lifetime_ms, self.now_ms).map_err(refusal)
    }

    fn usage(&mut self, relay: u32) -> Option<server::RelayUsage> {
        self.engine.allocation(relay).map(|a| super::convert::wit_usage(&a.usage))
    }

    fn connect(&mut self, relay: u32, peer: server::SocketAddress) -> Result<u32, server::PeerRefused> {
        let owner = self.engine.allocation(relay).map(|a| (a.client, a.relayed));
        // Only a TCP allocation's own client, while its request is handled.
        let Some((client, relayed)) = owner.filter(|(c, _)| self.current == Some(*c)) else {
            return Err(server::PeerRefused::NoRelay);
        };
        if !self.tcp_relays.contains_key(&relay) || !matches!(client, Client::Tcp(_)) {
            return Err(server::PeerRefused::NoRelay);
        }
        let peer = self.engine.check_connect(relay, socket_addr(&peer)).map_err(refusal)?;
        if self.conns.values().any(|c| c.relay == relay && c.peer == peer) {
            return Err(server::PeerRefused::Conflict);
        }
        if !self.conn_room(relay) {
            return Err(server::PeerRefused::QuotaReached);
        }
        let id = self.new_conn_id();
        match tcp_relay::connect(relayed, peer) {
            Ok(mut socket) => {
                if !self.register_conn(id, &mut socket) {
                    return Err(server::PeerRefused::QuotaReached);
                }
                let deadline = self.now_ms + tcp_relay::CONNECT_TIMEOUT_MS;
                self.conns.insert(id, PeerConn::new(relay, peer, socket, State::Connecting, deadline));
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "RFC 6062 connect failed at once");
                self.failed_connects.push(id);
            }
        }
        Ok(id)
    }

    fn bind_connection(&mut self, connection: u32, data: u32) -> bool {
        if self.current != Some(Client::Tcp(data)) || self.engine.has_client(&Client::Tcp(data)) {
            return false;
        }
        let (Some(c), Some(s)) = (self.conns.get_mut(&connection), self.streams.get_mut(&data)) else {
            return false;
        };
        if c.state != State::Unbound || s.bound.is_some() {
            return false;
        }
        c.state = State::Bound(data);
        s.bound = Some(connection);
        let early = s.take_unframed();
        c.queue_to_peer(&early);
        self.just_bound.push(connection);
        true
    }
}

impl secrets::Host for Ctx {
    fn get(&mut self, name: String) -> Option<Vec<u8>> {
        self.secrets.get(&name)
    }

    fn instance_key(&mut self) -> Vec<u8> {
        self.instance_key.to_vec()
    }
}

impl timers::Host for Ctx {
    fn set(&mut self, id: u32, after_ms: u64) -> bool {
        if self.timers.len() >= MAX_TIMERS && !self.timers.contains_key(&id) {
            return false;
        }
        self.timers.insert(id, self.now_ms.saturating_add(after_ms));
        true
    }

    fn cancel(&mut self, id: u32) {
        self.timers.remove(&id);
    }
}
