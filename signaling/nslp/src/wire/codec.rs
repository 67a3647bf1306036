//! The field codec both messages share: (type, length, value) fields padded
//! to 32 bits, in ascending type order, with bounded strings and lists.

use super::{DecodeError, MAX_LIST, MAX_STRING, VERSION};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) fn order(last: &mut u16, t: u16, repeatable: bool) -> Result<(), DecodeError> {
    if t < *last || (t == *last && !repeatable) {
        return Err(DecodeError::NotCanonical(t));
    }
    *last = t;
    Ok(())
}

pub(super) fn push_bounded<T>(t: u16, v: &mut Vec<T>, x: T) -> Result<(), DecodeError> {
    if v.len() >= MAX_LIST {
        return Err(DecodeError::TooLarge(t));
    }
    v.push(x);
    Ok(())
}

pub(super) fn string(t: u16, v: &[u8]) -> Result<String, DecodeError> {
    if v.len() > MAX_STRING {
        return Err(DecodeError::TooLarge(t));
    }
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::BadValue(t))
}

pub(super) fn u16_of(t: u16, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_be_bytes).map_err(|_| DecodeError::BadValue(t))
}

pub(super) fn u32_of(t: u16, v: &[u8]) -> Result<u32, DecodeError> {
    v.try_into().map(u32::from_be_bytes).map_err(|_| DecodeError::BadValue(t))
}

/// `version (4|6), prefix length, address`.
pub(super) fn encode_prefix(ip: IpAddr, len: u8) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => [&[4, len][..], &a.octets()].concat(),
        IpAddr::V6(a) => [&[6, len][..], &a.octets()].concat(),
    }
}

pub(super) fn decode_prefix(t: u16, v: &[u8]) -> Result<(IpAddr, u8), DecodeError> {
    let bad = DecodeError::BadValue(t);
    match v {
        [4, len, rest @ ..] if *len <= 32 => {
            let a: [u8; 4] = rest.try_into().map_err(|_| bad)?;
            Ok((IpAddr::V4(Ipv4Addr::from(a)), *len))
        }
        [6, len, rest @ ..] if *len <= 128 => {
            let a: [u8; 16] = rest.try_into().map_err(|_| bad)?;
            Ok((IpAddr::V6(Ipv6Addr::from(a)), *len))
        }
        _ => Err(bad),
    }
}

pub(super) struct Writer {
    pub(super) out: Vec<u8>,
}

impl Writer {
    pub(super) fn new(ty: u8, id: u32) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[VERSION, ty, 0, 0]);
        out.extend_from_slice(&id.to_be_bytes());
        Self { out }
    }

    pub(super) fn field(&mut self, t: u16, v: &[u8]) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.out.extend_from_slice(&t.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(v.get(..usize::from(len)).unwrap_or(v));
        self.out.resize(self.out.len() + (4 - v.len() % 4) % 4, 0);
    }

    pub(super) fn str(&mut self, t: u16, s: &str) {
        self.field(t, s.as_bytes());
    }

    pub(super) fn opt_str(&mut self, t: u16, s: Option<&str>) {
        if let Some(s) = s {
            self.str(t, s);
        }
    }
}

/// Iterates (type, value) over fields; zero padding after the last is allowed.
pub(super) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of the field last returned, within `buf`.
    pub(super) field_start: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0, field_start: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < 4 {
            return if rest.iter().all(|&b| b == 0) { None } else { Some(Err(DecodeError::Truncated)) };
        }
        let (hdr, body) = rest.split_at(4);
        let t = u16::from_be_bytes([hdr.first().copied()?, hdr.get(1).copied()?]);
        if t == 0 && rest.iter().all(|&b| b == 0) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([hdr.get(2).copied()?, hdr.get(3).copied()?]));
        let padded = len + (4 - len % 4) % 4;
        let Some(v) = body.get(..len) else {
            self.pos = self.buf.len();
            return Some(Err(DecodeError::FieldOverrun(t)));
        };
        if body.len() < padded {
            self.pos = self.buf.len();
            return Some(Err(DecodeError::FieldOverrun(t)));
        }
        self.field_start = self.pos;
        self.pos += 4 + padded;
        Some(Ok((t, v)))
    }
}
