//! IP packet parsing and building (etherparse). No I/O.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("not a parseable IPv4/IPv6 packet")]
    Malformed,
    #[error("not UDP or TCP")]
    OtherTransport,
    #[error("IP fragment (only the first fragment carries ports)")]
    Fragment,
}

/// A packet's or a filter's transport. The dataplane's own type: the
/// WIT-generated one stays at the guest boundary (`runtime`), so that the
/// parser, the filters and the persisted JSON do not change with the
/// module contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl serde::Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match <std::borrow::Cow<'de, str>>::deserialize(d)?.as_ref() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(serde::de::Error::custom(format!("transport `{other}` is not udp or tcp"))),
        }
    }
}

/// The parts of an intercepted packet a module and a verdict need.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    pub transport: Transport,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: &'a [u8],
    pub hop_limit: u8,
}

pub fn parse(ip: &[u8]) -> Result<Parsed<'_>, PacketError> {
    let sliced = SlicedPacket::from_ip(ip).map_err(|_| PacketError::Malformed)?;
    let (src, dst, hop_limit, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), h.ttl(), v4.is_payload_fragmented())
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), h.hop_limit(), v6.is_payload_fragmented())
        }
        _ => return Err(PacketError::Malformed),
    };
    if fragmented {
        return Err(PacketError::Fragment);
    }
    match &sliced.transport {
        Some(TransportSlice::Udp(u)) => Ok(Parsed {
            transport: Transport::Udp,
            source: SocketAddr::new(src, u.source_port()),
            destination: SocketAddr::new(dst, u.destination_port()),
            payload: u.payload(),
            hop_limit,
        }),
        Some(TransportSlice::Tcp(t)) => Ok(Parsed {
            transport: Transport::Tcp,
            source: SocketAddr::new(src, t.source_port()),
            destination: SocketAddr::new(dst, t.destination_port()),
            payload: t.payload(),
            hop_limit,
        }),
        _ => Err(PacketError::OtherTransport),
    }
}

/// The largest UDP payload an IPv4 datagram carries.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The largest payload a `replace` may carry: the rewritten IP packet
/// (with an IPv6 and a UDP header) must fit one netlink attribute.
pub const MAX_REPLACED_PAYLOAD: usize = netserv_nfqueue::wire::MAX_ATTR_VALUE - 48;

/// Appends a UDP datagram from `src` to `dst`, as a full IP packet with
/// checksums, to `out` (no allocation when `out` has room). False, with
/// `out` unchanged, when the families differ or the payload does not fit.
pub fn write_udp(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, hop_limit: u8, payload: &[u8]) -> bool {
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), hop_limit),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), hop_limit),
        _ => return false,
    };
    let builder = builder.udp(src.port(), dst.port());
    let start = out.len();
    out.reserve(builder.size(payload.len()));
    if builder.write(out, payload).is_err() {
        out.truncate(start);
        return false;
    }
    true
}

/// [`write_udp`] into a new buffer.
pub fn build_udp(src: SocketAddr, dst: SocketAddr, hop_limit: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    write_udp(&mut out, src, dst, hop_limit, payload).then_some(out)
}
