//! The fixed-format GIST objects (RFC 5971 §A.3.2–§A.3.5).

use super::reader::{Reader, pad4};
use super::{DecodeError, ObjectValueError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Object types (RFC 5971 §9, "GIST Object Types").
pub mod object_type {
    pub const MRI: u16 = 0x0;
    pub const SESSION_ID: u16 = 0x1;
    pub const NLI: u16 = 0x2;
    pub const STACK_PROPOSAL: u16 = 0x3;
    pub const STACK_CONFIG: u16 = 0x4;
    pub const QUERY_COOKIE: u16 = 0x5;
    pub const RESPONDER_COOKIE: u16 = 0x6;
    pub const NAT_TRAVERSAL: u16 = 0x7;
    pub const NSLP_DATA: u16 = 0x8;
    pub const ERROR: u16 = 0x9;
    pub const HELLO_ID: u16 = 0xA;

    /// Largest NSLP-Data value: the TLV length is 12 bits of 32-bit words.
    pub const MAX_NSLP_DATA: usize = 0xfff * 4;
}

/// A 128-bit session identifier, opaque to GIST (§A.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        value.try_into().map(Self).map_err(|_| DecodeError::length(object_type::SESSION_ID))
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Network-Layer-Information (§A.3.3): who the sending peer is and how long
/// the routing state it offers stays valid.
///
/// ```text
/// |   PI-Length   |    IP-TTL     |IP-Ver |        Reserved       |
/// |                  Routing State Validity Time                  |
/// //                       Peer Identity                         //
/// //                     Interface Address                       //
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nli {
    pub ip_ttl: u8,
    /// Milliseconds; never 0.
    pub validity_ms: u32,
    /// Opaque, at most 255 bytes.
    pub peer_identity: Vec<u8>,
    pub interface: IpAddr,
}

impl Nli {
    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let len = DecodeError::length(object_type::NLI);
        let mut r = Reader::new(value);
        let pi_len = usize::from(r.u8(len)?);
        let ip_ttl = r.u8(len)?;
        let version = r.u8(len)? >> 4;
        let _ = r.u8(len)?;
        let validity_ms = r.u32(len)?;
        if validity_ms == 0 {
            return Err(DecodeError::value(object_type::NLI, ObjectValueError::ValueNotSupported));
        }
        let peer_identity = r.take(pi_len, len)?.to_vec();
        r.take(pad4(pi_len), len)?;
        let interface = match version {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>(len)?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>(len)?)),
            _ => return Err(DecodeError::value(object_type::NLI, ObjectValueError::ValueNotSupported)),
        };
        if !r.is_empty() {
            return Err(len);
        }
        Ok(Self { ip_ttl, validity_ms, peer_identity, interface })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        let pi_len = u8::try_from(self.peer_identity.len()).ok()?;
        if self.validity_ms == 0 {
            return None;
        }
        let version = if self.interface.is_ipv4() { 4u8 } else { 6 };
        out.extend_from_slice(&[pi_len, self.ip_ttl, version << 4, 0]);
        out.extend_from_slice(&self.validity_ms.to_be_bytes());
        out.extend_from_slice(&self.peer_identity);
        out.resize(out.len() + pad4(self.peer_identity.len()), 0);
        match self.interface {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
        Some(())
    }
}

/// Stack-Proposal (§A.3.4): profiles of MA protocol ids, most preferred first.
/// Only needed to set up connection-mode messaging associations; a
/// datagram-mode node parses and can echo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackProposal {
    pub profiles: Vec<Vec<u8>>,
}

impl StackProposal {
    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        const T: u16 = object_type::STACK_PROPOSAL;
        let len = DecodeError::length(T);
        let mut r = Reader::new(value);
        let count = r.u8(len)?;
        r.take(3, len)?;
        if count == 0 {
            return Err(DecodeError::value(T, ObjectValueError::ValueNotSupported));
        }
        let mut profiles = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let layers = usize::from(r.u8(len)?);
            if layers == 0 {
                return Err(DecodeError::value(T, ObjectValueError::EmptyList));
            }
            profiles.push(r.take(layers, len)?.to_vec());
            r.take(pad4(layers + 1), len)?;
        }
        if !r.is_empty() {
            return Err(len);
        }
        Ok(Self { profiles })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        let count = u8::try_from(self.profiles.len()).ok().filter(|&c| c > 0)?;
        out.extend_from_slice(&[count, 0, 0, 0]);
        for p in &self.profiles {
            let layers = u8::try_from(p.len()).ok().filter(|&l| l > 0)?;
            out.push(layers);
            out.extend_from_slice(p);
            out.resize(out.len() + pad4(p.len() + 1), 0);
        }
        Some(())
    }
}

/// One MA-protocol-options field of a Stack-Configuration-Data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaProtocolOptions {
    pub protocol: u8,
    pub profile: u8,
    /// D: this protocol must not be used for a messaging association.
    pub do_not_use: bool,
    pub data: Vec<u8>,
}

/// Stack-Configuration-Data (§A.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// Milliseconds; never 0.
    pub ma_hold_time_ms: u32,
    pub options: Vec<MaProtocolOptions>,
}

impl StackConfig {
    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        const T: u16 = object_type::STACK_CONFIG;
        let len = DecodeError::length(T);
        let mut r = Reader::new(value);
        let count = r.u8(len)?;
        r.take(3, len)?;
        let ma_hold_time_ms = r.u32(len)?;
        if ma_hold_time_ms == 0 {
            return Err(DecodeError::value(T, ObjectValueError::ValueNotSupported));
        }
        let mut options = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let protocol = r.u8(len)?;
            let profile = r.u8(len)?;
            let data_len = usize::from(r.u8(len)?);
            let flags = r.u8(len)?;
            let data = r.take(data_len, len)?.to_vec();
            r.take(pad4(data_len), len)?;
            options.push(MaProtocolOptions { protocol, profile, do_not_use: flags & 0x80 != 0, data });
        }
        if !r.is_empty() {
            return Err(len);
        }
        Ok(Self { ma_hold_time_ms, options })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        let count = u8::try_from(self.options.len()).ok()?;
        if self.ma_hold_time_ms == 0 {
            return None;
        }
        out.extend_from_slice(&[count, 0, 0, 0]);
        out.extend_from_slice(&self.ma_hold_time_ms.to_be_bytes());
        for o in &self.options {
            let l = u8::try_from(o.data.len()).ok()?;
            out.extend_from_slice(&[o.protocol, o.profile, l, if o.do_not_use { 0x80 } else { 0 }]);
            out.extend_from_slice(&o.data);
            out.resize(out.len() + pad4(o.data.len()), 0);
        }
        Some(())
    }
}
