//! What the TURN logic needs from the host's relay building block, as a
//! trait: the guest adapter implements it over the `server` WIT imports,
//! tests over a model. The host owns the relay sockets, the permissions and
//! channels, and the bytes; the logic decides who gets them.

use std::net::{IpAddr, SocketAddr};

/// Where a client's messages come from and its answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A UDP client: the listener it sent to and its address.
    Datagram { listener: u32, from: SocketAddr },
    /// A TCP client's connection.
    Stream(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    V4,
    V6,
}

/// An allocation as asked of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRequest {
    pub client: Client,
    pub family: AddressFamily,
    pub even_port: bool,
    pub reserve_next: bool,
    pub reservation: Option<u64>,
    pub lifetime_ms: u64,
    /// Bytes per second both ways; 0: only the tenant's total applies.
    pub max_bps: u64,
    pub dont_fragment: bool,
    /// A TCP allocation (RFC 6062).
    pub tcp: bool,
}

/// An allocation the host made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub relay: u32,
    pub relayed: SocketAddr,
    pub reservation: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    QuotaReached,
    Exists,
    FamilyUnsupported,
    BadReservation,
    NoPort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRefused {
    /// The host's peer policy refused it; the rule's name.
    Forbidden(String),
    NoRelay,
    QuotaReached,
    Conflict,
}

/// The host's relay building block and the tenant's secrets.
pub trait Relay {
    fn allocate(&mut self, request: &RelayRequest) -> Result<Grant, RelayError>;
    /// The relay's new remaining lifetime; 0 frees it. False: it is gone.
    fn refresh(&mut self, relay: u32, lifetime_ms: u64) -> bool;
    /// All of `peers` or none.
    fn permit(&mut self, relay: u32, peers: &[IpAddr], lifetime_ms: u64) -> Result<(), PeerRefused>;
    fn bind_channel(&mut self, relay: u32, channel: u16, peer: SocketAddr, lifetime_ms: u64)
    -> Result<(), PeerRefused>;
    /// RFC 6062 Connect from a TCP allocation to `peer`; the outcome comes later.
    fn connect(&mut self, relay: u32, peer: SocketAddr) -> Result<u32, PeerRefused>;
    /// Joins TCP client `data` to `connection` (RFC 6062 ConnectionBind).
    fn bind_connection(&mut self, connection: u32, data: u32) -> bool;
    /// A secret the tenant set over its admin API.
    fn secret(&mut self, name: &str) -> Option<Vec<u8>>;
}
