//! Between the WIT contract's types and std's / the engine's.

use crate::relay::engine::{Client, Usage};
use crate::runtime::server_world::server;
use crate::runtime::{IpAddress, SocketAddress};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub fn ip_from_wit(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    }
}

pub fn socket_addr(a: &SocketAddress) -> SocketAddr {
    SocketAddr::new(ip_from_wit(&a.address), a.port)
}

pub use crate::dataplane::pipeline::wit_addr;

pub fn client_from_wit(c: &server::Client) -> Client {
    match c {
        server::Client::Udp((listener, from)) => Client::Udp { listener: *listener, from: socket_addr(from) },
        server::Client::Tcp(id) => Client::Tcp(*id),
    }
}

pub fn wit_client(c: Client) -> server::Client {
    match c {
        Client::Udp { listener, from } => server::Client::Udp((listener, wit_addr(from))),
        Client::Tcp(id) => server::Client::Tcp(id),
    }
}

pub fn wit_usage(u: &Usage) -> server::RelayUsage {
    server::RelayUsage {
        packets_to_peers: u.packets_to_peers,
        bytes_to_peers: u.bytes_to_peers,
        packets_to_client: u.packets_to_client,
        bytes_to_client: u.bytes_to_client,
        dropped: u.dropped,
    }
}
