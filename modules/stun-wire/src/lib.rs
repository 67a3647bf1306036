//! STUN message codec (RFC 8489): a borrowing parser and a small encoder.
//!
//! Contains no networking code and keeps no state; TURN (RFC 8656) builds on
//! it, and [`framing`] tells STUN from ChannelData on a relay's sockets. Parsing goes through bounded reads only: peer bytes never panic.
//! [`integrity`] checks and writes MESSAGE-INTEGRITY(-SHA256) with a key the
//! caller derives from its credentials. Not done here: RFC 3489 "classic"
//! STUN without the magic cookie.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod framing;
pub mod integrity;
#[cfg(test)]
mod tests;
pub mod turn;

/// RFC 8489 §5: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
/// RFC 8489 §14.7: FINGERPRINT is CRC-32 XOR this value.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

pub mod attr {
    //! Attribute types (RFC 8489 §18.2, RFC 8656 §18).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;

    /// RFC 8489 §14: types below 0x8000 are comprehension-required.
    pub const fn comprehension_required(t: u16) -> bool {
        t < 0x8000
    }
}

/// RFC 8489 §5 message classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Binding method (RFC 8489 §18.1).
pub const METHOD_BINDING: u16 = 0x001;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("shorter than the 20-byte STUN header")]
    TooShort,
    #[error("the two most significant bits are not zero")]
    NotStun,
    #[error("magic cookie missing (RFC 3489 classic STUN is not supported)")]
    NoMagicCookie,
    #[error("message length is not a multiple of 4 or disagrees with the datagram")]
    BadLength,
    #[error("attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
}

/// A parsed STUN message borrowing the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    msg_type: u16,
    transaction_id: [u8; 12],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Cheap check for demultiplexing (RFC 7983 §7 / RFC 8489 §5): could these
/// bytes be STUN with the magic cookie?
pub fn looks_like_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b.first().is_some_and(|&x| x & 0xC0 == 0) && be32(b, 4) == Some(MAGIC_COOKIE)
}

impl<'a> Message<'a> {
    /// Parses a whole datagram as one STUN message: the header length must
    /// cover exactly the attribute bytes, every attribute must fit, and a
    /// FINGERPRINT, if present, must be last and correct.
    pub fn parse(raw: &'a [u8]) -> Result<Self, Error> {
        if raw.len() < HEADER_LEN {
            return Err(Error::TooShort);
        }
        let msg_type = be16(raw, 0).ok_or(Error::TooShort)?;
        if msg_type & 0xC000 != 0 {
            return Err(Error::NotStun);
        }
        let len = usize::from(be16(raw, 2).ok_or(Error::TooShort)?);
        if be32(raw, 4) != Some(MAGIC_COOKIE) {
            return Err(Error::NoMagicCookie);
        }
        if len % 4 != 0 || HEADER_LEN + len != raw.len() {
            return Err(Error::BadLength);
        }
        let transaction_id: [u8; 12] = raw.get(8..20).and_then(|t| t.try_into().ok()).ok_or(Error::TooShort)?;
        let msg = Message { raw, msg_type, transaction_id };
        // Walk once so that iteration later cannot fail.
        for a in msg.attributes() {
            let a = a?;
            if a.kind == attr::FINGERPRINT {
                if a.offset + 8 != raw.len() {
                    return Err(Error::FingerprintNotLast);
                }
                let want = be32(a.value, 0).ok_or(Error::BadLength)?;
                let covered = raw.get(..a.offset).ok_or(Error::AttributeOverrun)?;
                if fingerprint(covered, a.offset) != want {
                    return Err(Error::BadFingerprint);
                }
            }
        }
        Ok(msg)
    }

    pub fn method(&self) -> u16 {
        // RFC 8489 §5: M11..M0 interleaved with the class bits C1, C0.
        let t = self.msg_type;
        (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    }

    pub fn class(&self) -> Class {
        match ((self.msg_type >> 7) & 0b10) | ((self.msg_type >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }

    pub fn transaction_id(&self) -> &[u8; 12] {
        &self.transaction_id
    }

    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { raw: self.raw, offset: HEADER_LEN }
    }

    /// The first attribute of this type.
    pub fn attribute(&self, kind: u16) -> Option<Attribute<'a>> {
        self.attributes().filter_map(Result::ok).find(|a| a.kind == kind)
    }

    /// XOR-MAPPED-ADDRESS, decoded (RFC 8489 §14.2).
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let a = self.attribute(attr::XOR_MAPPED_ADDRESS)?;
        decode_xor_address(a.value, &self.transaction_id)
    }
}

/// One attribute: type, value (without padding), and its offset in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    pub offset: usize,
}

pub struct Attributes<'a> {
    raw: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<Attribute<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.raw.len() {
            return None;
        }
        let at = self.offset;
        let (Some(kind), Some(len)) = (be16(self.raw, at), be16(self.raw, at + 2)) else {
            self.offset = self.raw.len();
            return Some(Err(Error::AttributeOverrun));
        };
        let len = usize::from(len);
        let Some(value) = self.raw.get(at + 4..at + 4 + len) else {
            self.offset = self.raw.len();
            return Some(Err(Error::AttributeOverrun));
        };
        // Values are padded to 4 bytes (RFC 8489 §14).
        self.offset = at + 4 + len.div_ceil(4) * 4;
        if self.offset > self.raw.len() {
            return Some(Err(Error::AttributeOverrun));
        }
        Some(Ok(Attribute { kind, value, offset: at }))
    }
}

/// CRC-32 of the message up to (not including) the FINGERPRINT attribute at
/// `fp_offset`, with the header length set as if FINGERPRINT were the end.
fn fingerprint(covered: &[u8], fp_offset: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = u16::try_from(fp_offset + 8 - HEADER_LEN).unwrap_or(u16::MAX);
    h.update(covered.get(..2).unwrap_or_default());
    h.update(&len.to_be_bytes());
    h.update(covered.get(4..).unwrap_or_default());
    h.finalize() ^ FINGERPRINT_XOR
}

pub(crate) fn decode_xor_address(v: &[u8], tx: &[u8; 12]) -> Option<SocketAddr> {
    let family = *v.get(1)?;
    let port = be16(v, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match family {
        0x01 => IpAddr::V4(Ipv4Addr::from(be32(v, 4)? ^ MAGIC_COOKIE)),
        0x02 => {
            let mut b: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            let key = MAGIC_COOKIE.to_be_bytes().into_iter().chain(tx.iter().copied());
            for (x, k) in b.iter_mut().zip(key) {
                *x ^= k;
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Builds a message attribute by attribute; lengths are patched as it goes.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// Starts a message of `class` and `method` with this transaction id.
    pub fn new(class: Class, method: u16, transaction_id: &[u8; 12]) -> Self {
        let c = match class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        let t = (method & 0x000F)
            | ((method & 0x0070) << 1)
            | ((method & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&t.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(transaction_id);
        Self { buf }
    }

    fn set_len(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX).to_be_bytes();
        self.buf.splice(2..4, len);
    }

    /// Appends an attribute, padding its value to 4 bytes with zeros.
    pub fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = value.len().div_ceil(4) * 4 - value.len();
        self.buf.extend(std::iter::repeat_n(0, pad));
        self.set_len();
        self
    }

    /// XOR-MAPPED-ADDRESS for `addr` (RFC 8489 §14.2).
    pub fn xor_mapped_address(self, addr: SocketAddr) -> Self {
        self.xor_address(attr::XOR_MAPPED_ADDRESS, addr)
    }

    /// An address attribute of the XOR kind (`kind`: XOR-MAPPED-ADDRESS,
    /// or TURN's XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS), encoded as §14.2 says.
    pub fn xor_address(self, kind: u16, addr: SocketAddr) -> Self {
        let mut v = Vec::with_capacity(20);
        v.push(0);
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(0x01);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.push(0x02);
                v.extend_from_slice(&port.to_be_bytes());
                let tx = self.buf.get(8..20).unwrap_or_default();
                let key = MAGIC_COOKIE.to_be_bytes().into_iter().chain(tx.iter().copied());
                v.extend(ip.octets().iter().zip(key).map(|(b, k)| b ^ k));
            }
        }
        self.attribute(kind, &v)
    }

    /// Appends FINGERPRINT (must be last) and returns the bytes.
    pub fn finish_with_fingerprint(mut self) -> Vec<u8> {
        let offset = self.buf.len();
        self.buf.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.set_len();
        let fp = fingerprint(self.buf.get(..offset).unwrap_or_default(), offset);
        self.buf.truncate(offset + 4);
        self.buf.extend_from_slice(&fp.to_be_bytes());
        self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}
