//! Small socket helpers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::SystemTime;

/// The local address the kernel would use to reach `peer` (a connected UDP
/// socket sends nothing; it only asks the routing table).
pub fn local_toward(peer: IpAddr) -> io::Result<IpAddr> {
    let any: IpAddr = if peer.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(SocketAddr::new(peer, netserv_gist::wire::GIST_PORT))?;
    Ok(s.local_addr()?.ip())
}

/// Milliseconds since the Unix epoch (NSLP timestamps).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}
