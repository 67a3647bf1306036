//! HEP version 3 (the Homer encapsulation protocol Kamailio's `siptrace`
//! mirrors SIP messages with): a borrowing decoder and an encoder.
//!
//! ```text
//! | "HEP3" | total length (16) | chunk … |
//! chunk: | vendor id (16) | type id (16) | chunk length (16, header included) | value |
//! ```
//! Generic chunks (vendor 0): 1 IP family, 2 IP protocol, 3/4 IPv4 source /
//! destination, 5/6 IPv6 source / destination, 7/8 source / destination port,
//! 9/10 timestamp seconds / microseconds, 11 protocol type (1 = SIP),
//! 12 capture agent id, 15 payload. Unknown chunks are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const MAGIC: &[u8; 4] = b"HEP3";
const CHUNK_HEADER: usize = 6;
/// HEP protocol type of SIP.
pub const PROTO_SIP: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    #[error("not HEP3 (bad magic)")]
    Magic,
    #[error("total length disagrees with the datagram")]
    Length,
    #[error("chunk {0} runs past the message or is shorter than its header")]
    Chunk(u16),
    #[error("chunk {0} has a malformed value")]
    Value(u16),
    #[error("required chunk {0} is missing")]
    Missing(u16),
}

/// One mirrored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hep<'a> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// IP protocol (17 UDP, 6 TCP).
    pub ip_protocol: u8,
    /// What the payload is (1 = SIP).
    pub proto_type: u8,
    pub timestamp: Option<(u32, u32)>,
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

pub fn decode(b: &[u8]) -> Result<Hep<'_>, HepError> {
    if b.get(..4) != Some(MAGIC.as_slice()) {
        return Err(HepError::Magic);
    }
    let total = usize::from(u16_at(b, 4).ok_or(HepError::Length)?);
    if total != b.len() {
        return Err(HepError::Length);
    }
    let (mut src4, mut dst4, mut src6, mut dst6) = (None, None, None, None);
    let (mut sport, mut dport, mut ipp, mut ptype, mut secs, mut usecs, mut payload) =
        (None, None, None, None, None, None, None);
    let mut at = 6;
    while at < b.len() {
        let ty = u16_at(b, at + 2).ok_or(HepError::Chunk(0))?;
        let len = usize::from(u16_at(b, at + 4).ok_or(HepError::Chunk(ty))?);
        if len < CHUNK_HEADER {
            return Err(HepError::Chunk(ty));
        }
        let v = b.get(at + CHUNK_HEADER..at + len).ok_or(HepError::Chunk(ty))?;
        let vendor = u16_at(b, at).ok_or(HepError::Chunk(ty))?;
        at += len;
        if vendor != 0 {
            continue;
        }
        let bad = HepError::Value(ty);
        match ty {
            2 => ipp = Some(*v.first().ok_or(bad)?),
            3 => src4 = Some(Ipv4Addr::from(<[u8; 4]>::try_from(v).map_err(|_| bad)?)),
            4 => dst4 = Some(Ipv4Addr::from(<[u8; 4]>::try_from(v).map_err(|_| bad)?)),
            5 => src6 = Some(Ipv6Addr::from(<[u8; 16]>::try_from(v).map_err(|_| bad)?)),
            6 => dst6 = Some(Ipv6Addr::from(<[u8; 16]>::try_from(v).map_err(|_| bad)?)),
            7 => sport = Some(u16::from_be_bytes(v.try_into().map_err(|_| bad)?)),
            8 => dport = Some(u16::from_be_bytes(v.try_into().map_err(|_| bad)?)),
            9 => secs = Some(u32::from_be_bytes(v.try_into().map_err(|_| bad)?)),
            10 => usecs = Some(u32::from_be_bytes(v.try_into().map_err(|_| bad)?)),
            11 => ptype = Some(*v.first().ok_or(bad)?),
            15 => payload = Some(v),
            _ => {}
        }
    }
    let (source, destination): (IpAddr, IpAddr) = match (src4, dst4, src6, dst6) {
        (Some(s), Some(d), _, _) => (s.into(), d.into()),
        (_, _, Some(s), Some(d)) => (s.into(), d.into()),
        _ => return Err(HepError::Missing(3)),
    };
    Ok(Hep {
        source: SocketAddr::new(source, sport.ok_or(HepError::Missing(7))?),
        destination: SocketAddr::new(destination, dport.ok_or(HepError::Missing(8))?),
        ip_protocol: ipp.unwrap_or(17),
        proto_type: ptype.ok_or(HepError::Missing(11))?,
        timestamp: secs.zip(usecs),
        payload: payload.ok_or(HepError::Missing(15))?,
    })
}

/// Encodes a message as Kamailio's siptrace does (for tests and tools).
pub fn encode(h: &Hep<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + h.payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]);
    let mut chunk = |ty: u16, v: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&u16::try_from(CHUNK_HEADER + v.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(v);
    };
    chunk(1, &[if h.source.is_ipv4() { 2 } else { 10 }]);
    chunk(2, &[h.ip_protocol]);
    match (h.source.ip(), h.destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(3, &s.octets());
            chunk(4, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            chunk(5, &v6(s).octets());
            chunk(6, &v6(d).octets());
        }
    }
    chunk(7, &h.source.port().to_be_bytes());
    chunk(8, &h.destination.port().to_be_bytes());
    if let Some((s, u)) = h.timestamp {
        chunk(9, &s.to_be_bytes());
        chunk(10, &u.to_be_bytes());
    }
    chunk(11, &[h.proto_type]);
    chunk(15, h.payload);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(t) = out.get_mut(4..6) {
        t.copy_from_slice(&total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The head of a datagram Kamailio 5.6 siptrace sent here (HEP3, IPv4/UDP,
    /// 127.0.0.1:55067 -> 127.0.0.1:5070), captured while writing this codec.
    #[rustfmt::skip]
    const KAMAILIO_HEAD: &[u8] = &[
        0x48, 0x45, 0x50, 0x33, 0x01, 0x4e,             // "HEP3", 334 bytes
        0x00, 0x00, 0x00, 0x01, 0x00, 0x07, 0x02,       // family: AF_INET
        0x00, 0x00, 0x00, 0x02, 0x00, 0x07, 0x11,       // protocol: UDP
        0x00, 0x00, 0x00, 0x03, 0x00, 0x0a, 0x7f, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x0a, 0x7f, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x07, 0x00, 0x08, 0xd7, 0x1b, // source port 55067
        0x00, 0x00, 0x00, 0x08, 0x00, 0x08, 0x13, 0xce, // destination port 5070
    ];

    fn sample() -> Vec<u8> {
        encode(&Hep {
            source: "198.18.1.10:5099".parse().expect("addr"),
            destination: "198.18.2.20:5060".parse().expect("addr"),
            ip_protocol: 17,
            proto_type: PROTO_SIP,
            timestamp: Some((1_700_000_000, 5)),
            payload: b"NOTIFY sip:x SIP/2.0\r\n\r\n",
        })
    }

    #[test]
    fn kamailio_chunk_layout_decodes() {
        // The captured head with its length fixed up and a SIP payload chunk added.
        let mut b = KAMAILIO_HEAD.to_vec();
        b.extend_from_slice(&[0, 0, 0, 11, 0, 7, 1]);
        b.extend_from_slice(&[0, 0, 0, 15, 0, 10, b'S', b'I', b'P', b'/']);
        let len = u16::try_from(b.len()).expect("small").to_be_bytes();
        b[4..6].copy_from_slice(&len);
        let h = decode(&b).expect("decodes");
        assert_eq!(h.source, "127.0.0.1:55067".parse().expect("addr"));
        assert_eq!(h.destination.port(), 5070);
        assert_eq!((h.ip_protocol, h.proto_type, h.payload), (17, PROTO_SIP, &b"SIP/"[..]));
    }

    #[test]
    fn round_trip_and_every_truncation() {
        let b = sample();
        let h = decode(&b).expect("decodes");
        assert_eq!(encode(&h), b);
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "{n} bytes decoded");
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(HepError::Magic));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
            if b.len() >= 6 {
                b[..4].copy_from_slice(MAGIC);
                let l = u16::try_from(b.len()).unwrap_or(0).to_be_bytes();
                b[4..6].copy_from_slice(&l);
                let _ = decode(&b);
            }
        }
    }
}
