//! ICMP destination unreachable for GIST datagrams this host sent: the Query
//! reached a host with nothing on UDP 270, so no GIST peer is further on
//! (RFC 5971 §4.3.1 lets a node stop retransmitting early on that evidence).
//!
//! A raw ICMPv4 socket sees a copy of every ICMP message for this host; a
//! thread parses them and reports the original destination of each
//! unreachable UDP datagram to port 270.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr};
use tokio::sync::mpsc;

/// Destination unreachable codes that mean "nobody there": net, host,
/// protocol and port unreachable.
const UNREACHABLE: u8 = 3;

/// Parses one ICMPv4 packet (with its IP header, as raw sockets deliver it);
/// returns the original destination if it reports an unreachable GIST datagram.
pub fn parse_unreachable(packet: &[u8]) -> Option<IpAddr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    let (&ty, &code) = (icmp.first()?, icmp.get(1)?);
    if ty != UNREACHABLE || code > 3 {
        return None;
    }
    // After the 8-byte ICMP header: the original IP header and 8 bytes of it.
    let orig = icmp.get(8..)?;
    let oihl = usize::from(orig.first()? & 0x0f) * 4;
    if orig.first()? >> 4 != 4 || *orig.get(9)? != 17 {
        return None;
    }
    let dst: [u8; 4] = orig.get(16..20)?.try_into().ok()?;
    let udp = orig.get(oihl..oihl + 4)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    (dport == netserv_gist::wire::GIST_PORT).then_some(IpAddr::V4(Ipv4Addr::from(dst)))
}

/// Starts the watcher thread. `None` (with a warning) when raw sockets are
/// not allowed: the node then relies on retransmission timeouts alone.
pub fn spawn() -> Option<mpsc::UnboundedReceiver<IpAddr>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no raw ICMP socket (needs CAP_NET_RAW); unreachable peers are found by timeout only");
            return None;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new().name("gist-icmp".into()).spawn(move || {
        let mut sock = sock;
        let mut buf = [0u8; 1500];
        loop {
            match sock.read(&mut buf) {
                Ok(n) => {
                    if let Some(dst) = buf.get(..n).and_then(parse_unreachable)
                        && tx.send(dst).is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ICMP watcher stopped");
                    return;
                }
            }
        }
    });
    match spawned {
        Ok(_) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the ICMP watcher");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_unreachable_for_udp_270_names_the_target() {
        #[rustfmt::skip]
        let pkt = [
            0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 1, 10, 198, 18, 1, 1, // IP: ua -> edge
            3, 3, 0, 0, 0, 0, 0, 0,                                                   // ICMP port unreachable
            0x45, 0, 0, 40, 0, 0, 0, 0, 63, 17, 0, 0, 198, 18, 1, 1, 198, 18, 1, 10, // original IP, UDP
            0x01, 0x0e, 0x01, 0x0e, 0, 20, 0, 0,                                      // UDP 270 -> 270
        ];
        assert_eq!(parse_unreachable(&pkt), Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))));
        let mut other_port = pkt;
        other_port[51] = 0x0f;
        assert_eq!(parse_unreachable(&other_port), None);
        let mut echo = pkt;
        echo[20] = 0;
        assert_eq!(parse_unreachable(&echo), None);
        for n in 0..pkt.len() {
            let _ = parse_unreachable(&pkt[..n]);
        }
    }
}
