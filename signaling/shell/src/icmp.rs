//! ICMP destination unreachable for GIST datagrams this host sent: the Query
//! reached a host with nothing on UDP 270, so no GIST peer is further on
//! (RFC 5971 §4.3.1 lets a node stop retransmitting early on that evidence).
//!
//! A raw ICMPv4 socket sees a copy of every ICMP message for this host. One
//! thread per process reads them ([`subscribe`] starts it the first time)
//! and hands each unreachable to the subscriber whose socket sent the
//! quoted datagram: the quoted source address and port must be that
//! socket's and the quoted destination port 270. Anyone can send this host
//! an ICMP error; only one that quotes a datagram of ours, to GIST, counts.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::mpsc;

/// Destination unreachable codes that mean "nobody there": net, host,
/// protocol and port unreachable.
const UNREACHABLE: u8 = 3;

/// The datagram an ICMP unreachable quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// Who sent the ICMP message, and its code (0-3: net, host, protocol,
    /// port unreachable).
    pub reporter: IpAddr,
    pub code: u8,
}

/// Port unreachable.
const PORT_UNREACHABLE: u8 = 3;

/// Parses one ICMPv4 packet (with its IP header, as raw sockets deliver it);
/// returns the datagram it quotes if it reports an unreachable GIST (UDP
/// 270) datagram.
pub fn parse_unreachable(packet: &[u8]) -> Option<Quoted> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let reporter: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let icmp = packet.get(ihl..)?;
    let (&ty, &code) = (icmp.first()?, icmp.get(1)?);
    if ty != UNREACHABLE || code > 3 {
        return None;
    }
    // After the 8-byte ICMP header: the original IP header and 8 bytes of it.
    let orig = icmp.get(8..)?;
    let oihl = usize::from(orig.first()? & 0x0f) * 4;
    if orig.first()? >> 4 != 4 || oihl < 20 || *orig.get(9)? != 17 {
        return None;
    }
    let src: [u8; 4] = orig.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = orig.get(16..20)?.try_into().ok()?;
    let udp = orig.get(oihl..oihl + 4)?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    (dport == netserv_gist::wire::GIST_PORT).then_some(Quoted {
        source: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(src)), sport),
        destination: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(dst)), dport),
        reporter: IpAddr::V4(Ipv4Addr::from(reporter)),
        code,
    })
}

type Subscribers = Mutex<HashMap<u16, Vec<(u64, IpAddr, mpsc::UnboundedSender<IpAddr>)>>>;

struct Watcher {
    /// By the local port the datagrams were sent from: (subscription id,
    /// local address or unspecified for any, where to report the target).
    subs: Subscribers,
    next: AtomicU64,
}

static WATCHER: OnceLock<Option<Watcher>> = OnceLock::new();

/// Unreachables for GIST datagrams sent from `local` (an unspecified address:
/// from any of this host's, on `local`'s port), as the quoted destination
/// address, until dropped. `None` (with a warning, once) when raw sockets are
/// not allowed: the node then relies on retransmission timeouts alone.
pub fn subscribe(local: SocketAddr) -> Option<Subscription> {
    let w = WATCHER.get_or_init(start).as_ref()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let id = w.next.fetch_add(1, Relaxed);
    w.subs.lock().entry(local.port()).or_default().push((id, local.ip(), tx));
    Some(Subscription { rx, port: local.port(), id, watcher: w })
}

/// What [`subscribe`] gives; unsubscribes on drop.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<IpAddr>,
    port: u16,
    id: u64,
    watcher: &'static Watcher,
}

impl Subscription {
    /// The next unreachable GIST target.
    pub async fn recv(&mut self) -> Option<IpAddr> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.watcher.subs.lock();
        if let Some(v) = subs.get_mut(&self.port) {
            v.retain(|(id, ..)| *id != self.id);
            if v.is_empty() {
                subs.remove(&self.port);
            }
        }
    }
}

/// Subscriptions live now (for tests and metrics).
pub fn subscriptions() -> usize {
    WATCHER.get().and_then(Option::as_ref).map_or(0, |w| w.subs.lock().values().map(Vec::len).sum())
}

fn start() -> Option<Watcher> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no raw ICMP socket (needs CAP_NET_RAW); unreachable peers are found by timeout only");
            return None;
        }
    };
    // The thread reads through the static once it is set; it waits for it.
    let spawned = std::thread::Builder::new().name("gist-icmp".into()).spawn(move || {
        let mut sock = sock;
        let mut buf = [0u8; 1500];
        let w = loop {
            match WATCHER.get() {
                Some(Some(w)) => break w,
                Some(None) => return,
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        };
        loop {
            match sock.read(&mut buf) {
                Ok(n) => {
                    if let Some(q) = buf.get(..n).and_then(parse_unreachable) {
                        w.deliver(q);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ICMP watcher stopped");
                    return;
                }
            }
        }
    });
    match spawned {
        Ok(_) => Some(Watcher { subs: Mutex::new(HashMap::new()), next: AtomicU64::new(0) }),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the ICMP watcher");
            None
        }
    }
}

impl Watcher {
    fn deliver(&self, q: Quoted) {
        // "Nobody listens on UDP 270" is the target host's to say: a port
        // unreachable from anyone else is forged. (Net, host and protocol
        // unreachables come from routers on the way, whoever they are.)
        if q.code == PORT_UNREACHABLE && q.reporter != q.destination.ip() {
            return;
        }
        let subs = self.subs.lock();
        for (_, ip, tx) in subs.get(&q.source.port()).into_iter().flatten() {
            if ip.is_unspecified() || *ip == q.source.ip() {
                let _ = tx.send(q.destination.ip());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const PKT: [u8; 56] = [
        0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 1, 10, 198, 18, 1, 1, // IP: ua -> edge
        3, 3, 0, 0, 0, 0, 0, 0,                                                   // ICMP port unreachable
        0x45, 0, 0, 40, 0, 0, 0, 0, 63, 17, 0, 0, 198, 18, 1, 1, 198, 18, 1, 10, // original IP, UDP
        0xa0, 0x00, 0x01, 0x0e, 0, 20, 0, 0,                                      // UDP 40960 -> 270
    ];

    #[test]
    fn port_unreachable_for_udp_270_quotes_our_datagram() {
        let q = parse_unreachable(&PKT).expect("an unreachable GIST datagram");
        assert_eq!(q.source, "198.18.1.1:40960".parse().expect("addr"));
        assert_eq!(q.destination, "198.18.1.10:270".parse().expect("addr"));
        let mut other_port = PKT;
        other_port[51] = 0x0f;
        assert_eq!(parse_unreachable(&other_port), None);
        let mut echo = PKT;
        echo[20] = 0;
        assert_eq!(parse_unreachable(&echo), None);
        for n in 0..PKT.len() {
            let _ = parse_unreachable(&PKT[..n]);
        }
    }

    /// Only the subscriber whose socket sent the quoted datagram hears of it.
    #[test]
    fn an_unreachable_reaches_only_the_socket_that_sent_the_datagram() {
        let w = Watcher { subs: Mutex::new(HashMap::new()), next: AtomicU64::new(0) };
        let (ours, mut ours_rx) = mpsc::unbounded_channel();
        let (other, mut other_rx) = mpsc::unbounded_channel();
        let (any, mut any_rx) = mpsc::unbounded_channel();
        w.subs.lock().entry(40960).or_default().push((0, "198.18.1.1".parse().expect("ip"), ours));
        w.subs.lock().entry(40961).or_default().push((1, "198.18.1.1".parse().expect("ip"), other));
        w.subs.lock().entry(40960).or_default().push((2, "0.0.0.0".parse().expect("ip"), any));
        w.deliver(parse_unreachable(&PKT).expect("parsed"));
        assert_eq!(ours_rx.try_recv().ok(), Some("198.18.1.10".parse().expect("ip")));
        assert_eq!(any_rx.try_recv().ok(), Some("198.18.1.10".parse().expect("ip")));
        assert!(other_rx.try_recv().is_err(), "another socket's port");
        // A port unreachable not from the host it names: forged.
        let mut elsewhere = PKT;
        elsewhere[15] = 77;
        w.deliver(parse_unreachable(&elsewhere).expect("parsed"));
        assert!(ours_rx.try_recv().is_err() && any_rx.try_recv().is_err(), "a port unreachable from a third host");
        // Quoting another of our addresses on the same port: not ours.
        let mut forged = PKT;
        forged[43] = 99;
        w.deliver(parse_unreachable(&forged).expect("parsed"));
        assert!(ours_rx.try_recv().is_err(), "another source address");
    }
}
