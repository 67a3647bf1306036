//! Sends reply packets through raw sockets, so they leave with the intercepted
//! destination's address (the SIP server's) as their source.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// IPPROTO_RAW: the packet we write includes its IP header (IP_HDRINCL is
/// implied for IPv4; IPv6 raw sockets of this protocol take the header too).
const IPPROTO_RAW: i32 = 255;

pub struct RawSender {
    v4: Socket,
    v6: Option<Socket>,
}

impl RawSender {
    pub fn new() -> io::Result<Self> {
        let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
        let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_RAW))).ok();
        Ok(Self { v4, v6 })
    }

    pub fn send(&self, packet: &[u8], to: IpAddr) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddr::new(to, 0));
        let sock = match to {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => self.v6.as_ref().ok_or_else(|| io::Error::other("no IPv6 raw socket"))?,
        };
        sock.send_to(packet, &addr).map(drop)
    }
}
