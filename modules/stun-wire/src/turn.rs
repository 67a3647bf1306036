//! TURN's methods and attributes (RFC 8656 §17–§18; TCP relaying RFC 6062),
//! read from and written to STUN messages. Each reader checks the value's
//! length and range and says what is wrong, so a relay answers 400 to a
//! malformed attribute instead of guessing. Reserved (RFFU) bits are
//! written as zero and ignored when read, as the RFCs require.

use crate::{Builder, Message, decode_xor_address};
use std::net::SocketAddr;

/// TURN methods (RFC 8656 §17, RFC 6062 §6.1).
pub mod method {
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00a;
    pub const CONNECTION_BIND: u16 = 0x00b;
    pub const CONNECTION_ATTEMPT: u16 = 0x00c;
}

/// TURN attribute types (RFC 8656 §18, RFC 6062 §6.2).
pub mod attr {
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const ICMP: u16 = 0x8004;
}

/// IANA protocol numbers REQUESTED-TRANSPORT names.
pub const TRANSPORT_UDP: u8 = 17;
pub const TRANSPORT_TCP: u8 = 6;

/// An address family as REQUESTED- / ADDITIONAL-ADDRESS-FAMILY carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("attribute {0:#06x} has the wrong length")]
    Length(u16),
    #[error("attribute {0:#06x} has a value outside its range")]
    Value(u16),
}

/// A value of exactly `N` bytes.
fn exact<const N: usize>(kind: u16, v: &[u8]) -> Result<[u8; N], AttrError> {
    v.try_into().map_err(|_| AttrError::Length(kind))
}

fn family(kind: u16, v: &[u8]) -> Result<Family, AttrError> {
    match exact::<4>(kind, v)? {
        [0x01, ..] => Ok(Family::V4),
        [0x02, ..] => Ok(Family::V6),
        _ => Err(AttrError::Value(kind)),
    }
}

impl<'a> Message<'a> {
    fn value(&self, kind: u16) -> Option<&'a [u8]> {
        self.attribute(kind).map(|a| a.value)
    }

    /// Every address of an XOR attribute `kind`, in order (CreatePermission
    /// may carry several XOR-PEER-ADDRESS); a malformed one is an error.
    pub fn xor_addresses(&self, kind: u16) -> impl Iterator<Item = Result<SocketAddr, AttrError>> + 'a {
        let tx = *self.transaction_id();
        self.attributes().filter_map(Result::ok).filter(move |a| a.kind == kind).map(move |a| {
            let want = match a.value.get(1) {
                Some(0x01) => 8,
                Some(0x02) => 20,
                _ => return Err(AttrError::Value(kind)),
            };
            if a.value.len() != want {
                return Err(AttrError::Length(kind));
            }
            decode_xor_address(a.value, &tx).ok_or(AttrError::Value(kind))
        })
    }

    /// The first address of an XOR attribute `kind`.
    pub fn xor_address(&self, kind: u16) -> Option<Result<SocketAddr, AttrError>> {
        self.xor_addresses(kind).next()
    }

    /// LIFETIME, seconds.
    pub fn lifetime(&self) -> Option<Result<u32, AttrError>> {
        self.value(attr::LIFETIME).map(|v| exact::<4>(attr::LIFETIME, v).map(u32::from_be_bytes))
    }

    /// REQUESTED-TRANSPORT's protocol number (17 UDP, 6 TCP).
    pub fn requested_transport(&self) -> Option<Result<u8, AttrError>> {
        self.value(attr::REQUESTED_TRANSPORT).map(|v| exact::<4>(attr::REQUESTED_TRANSPORT, v).map(|[p, ..]| p))
    }

    /// CHANNEL-NUMBER (the range is the relay's to check: `framing::CHANNEL_MIN..=CHANNEL_MAX`).
    pub fn channel_number(&self) -> Option<Result<u16, AttrError>> {
        self.value(attr::CHANNEL_NUMBER)
            .map(|v| exact::<4>(attr::CHANNEL_NUMBER, v).map(|[a, b, ..]| u16::from_be_bytes([a, b])))
    }

    /// DATA: the application bytes of a Send or Data indication.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.value(attr::DATA)
    }

    /// EVEN-PORT's R bit: whether the next port up is to be reserved too.
    pub fn even_port(&self) -> Option<Result<bool, AttrError>> {
        self.value(attr::EVEN_PORT).map(|v| exact::<1>(attr::EVEN_PORT, v).map(|[b]| b & 0x80 != 0))
    }

    pub fn reservation_token(&self) -> Option<Result<[u8; 8], AttrError>> {
        self.value(attr::RESERVATION_TOKEN).map(|v| exact::<8>(attr::RESERVATION_TOKEN, v))
    }

    pub fn dont_fragment(&self) -> bool {
        self.attribute(attr::DONT_FRAGMENT).is_some()
    }

    pub fn requested_address_family(&self) -> Option<Result<Family, AttrError>> {
        self.value(attr::REQUESTED_ADDRESS_FAMILY).map(|v| family(attr::REQUESTED_ADDRESS_FAMILY, v))
    }

    pub fn additional_address_family(&self) -> Option<Result<Family, AttrError>> {
        self.value(attr::ADDITIONAL_ADDRESS_FAMILY).map(|v| family(attr::ADDITIONAL_ADDRESS_FAMILY, v))
    }

    /// CONNECTION-ID (RFC 6062).
    pub fn connection_id(&self) -> Option<Result<u32, AttrError>> {
        self.value(attr::CONNECTION_ID).map(|v| exact::<4>(attr::CONNECTION_ID, v).map(u32::from_be_bytes))
    }

    /// ERROR-CODE (RFC 8489 §14.8): the code (300–699) and its reason phrase.
    pub fn error_code(&self) -> Option<Result<(u16, &'a str), AttrError>> {
        let kind = crate::attr::ERROR_CODE;
        self.value(kind).map(|v| {
            // The first 21 bits are reserved: ignored.
            let (&[_, _, class, number], reason) = v.split_first_chunk::<4>().ok_or(AttrError::Length(kind))?;
            let class = class & 0x07;
            if !(3..=6).contains(&class) || number > 99 {
                return Err(AttrError::Value(kind));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| AttrError::Value(kind))?;
            Ok((u16::from(class) * 100 + u16::from(number), reason))
        })
    }
}

impl Builder {
    pub fn lifetime(self, seconds: u32) -> Self {
        self.attribute(attr::LIFETIME, &seconds.to_be_bytes())
    }

    pub fn requested_transport(self, protocol: u8) -> Self {
        self.attribute(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    pub fn channel_number(self, channel: u16) -> Self {
        let [a, b] = channel.to_be_bytes();
        self.attribute(attr::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    pub fn data(self, bytes: &[u8]) -> Self {
        self.attribute(attr::DATA, bytes)
    }

    pub fn even_port(self, reserve_next: bool) -> Self {
        self.attribute(attr::EVEN_PORT, &[if reserve_next { 0x80 } else { 0 }])
    }

    pub fn reservation_token(self, token: &[u8; 8]) -> Self {
        self.attribute(attr::RESERVATION_TOKEN, token)
    }

    pub fn dont_fragment(self) -> Self {
        self.attribute(attr::DONT_FRAGMENT, &[])
    }

    pub fn requested_address_family(self, f: Family) -> Self {
        self.attribute(attr::REQUESTED_ADDRESS_FAMILY, &[family_byte(f), 0, 0, 0])
    }

    pub fn additional_address_family(self, f: Family) -> Self {
        self.attribute(attr::ADDITIONAL_ADDRESS_FAMILY, &[family_byte(f), 0, 0, 0])
    }

    pub fn connection_id(self, id: u32) -> Self {
        self.attribute(attr::CONNECTION_ID, &id.to_be_bytes())
    }

    /// ERROR-CODE with `code` (300–699; out of range: 500) and `reason`.
    pub fn error_code(self, code: u16, reason: &str) -> Self {
        let code = if (300..700).contains(&code) { code } else { 500 };
        let mut v = vec![0, 0, u8::try_from(code / 100).unwrap_or(5), u8::try_from(code % 100).unwrap_or(0)];
        v.extend_from_slice(reason.as_bytes());
        self.attribute(crate::attr::ERROR_CODE, &v)
    }
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::V4 => 0x01,
        Family::V6 => 0x02,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;

    const TX: [u8; 12] = [0x5a; 12];

    fn parse(raw: &[u8]) -> Message<'_> {
        Message::parse(raw).expect("parses")
    }

    #[test]
    fn an_allocate_request_round_trips() {
        let raw = Builder::new(Class::Request, method::ALLOCATE, &TX)
            .requested_transport(TRANSPORT_UDP)
            .lifetime(600)
            .even_port(true)
            .dont_fragment()
            .requested_address_family(Family::V6)
            .additional_address_family(Family::V4)
            .finish_with_fingerprint();
        let m = parse(&raw);
        assert_eq!((m.class(), m.method()), (Class::Request, method::ALLOCATE));
        assert_eq!(m.requested_transport(), Some(Ok(17)));
        assert_eq!(m.lifetime(), Some(Ok(600)));
        assert_eq!(m.even_port(), Some(Ok(true)));
        assert!(m.dont_fragment());
        assert_eq!(m.requested_address_family(), Some(Ok(Family::V6)));
        assert_eq!(m.additional_address_family(), Some(Ok(Family::V4)));
        assert_eq!(m.reservation_token(), None);
    }

    #[test]
    fn peers_relayed_addresses_channels_and_data() {
        let peers: [SocketAddr; 2] = ["192.0.2.1:32853".parse().expect("v4"), "[2001:db8::7]:9".parse().expect("v6")];
        let raw = Builder::new(Class::Request, method::CREATE_PERMISSION, &TX)
            .xor_address(attr::XOR_PEER_ADDRESS, peers[0])
            .xor_address(attr::XOR_PEER_ADDRESS, peers[1])
            .finish();
        let m = parse(&raw);
        assert_eq!(m.xor_addresses(attr::XOR_PEER_ADDRESS).collect::<Vec<_>>(), [Ok(peers[0]), Ok(peers[1])]);
        // RFC 8489 §14.2's XOR: the port and address are not in the clear.
        assert!(!raw.windows(2).any(|w| w == 32853u16.to_be_bytes()));

        let raw = Builder::new(Class::Request, method::CHANNEL_BIND, &TX)
            .channel_number(0x4001)
            .xor_address(attr::XOR_PEER_ADDRESS, peers[0])
            .finish();
        assert_eq!(parse(&raw).channel_number(), Some(Ok(0x4001)));

        let raw = Builder::new(Class::Indication, method::SEND, &TX)
            .xor_address(attr::XOR_PEER_ADDRESS, peers[1])
            .data(b"rtp!")
            .dont_fragment()
            .finish();
        let m = parse(&raw);
        assert_eq!(m.data(), Some(&b"rtp!"[..]));
        assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peers[1])));

        let raw = Builder::new(Class::Success, method::ALLOCATE, &TX)
            .xor_address(attr::XOR_RELAYED_ADDRESS, "198.18.1.1:49152".parse().expect("relay"))
            .reservation_token(&[1, 2, 3, 4, 5, 6, 7, 8])
            .lifetime(600)
            .finish();
        let m = parse(&raw);
        assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS), Some(Ok("198.18.1.1:49152".parse().expect("relay"))));
        assert_eq!(m.reservation_token(), Some(Ok([1, 2, 3, 4, 5, 6, 7, 8])));
        let raw = Builder::new(Class::Success, method::CONNECT, &TX).connection_id(0xdead_beef).finish();
        assert_eq!(parse(&raw).connection_id(), Some(Ok(0xdead_beef)));
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        let raw = Builder::new(Class::Request, method::ALLOCATE, &TX)
            .attribute(attr::REQUESTED_TRANSPORT, &[17, 0xff, 0xff, 0xff])
            .attribute(attr::CHANNEL_NUMBER, &[0x40, 0x02, 0xab, 0xcd])
            .attribute(attr::EVEN_PORT, &[0x81])
            .attribute(attr::REQUESTED_ADDRESS_FAMILY, &[0x01, 9, 9, 9])
            .finish();
        let m = parse(&raw);
        assert_eq!(m.requested_transport(), Some(Ok(17)));
        assert_eq!(m.channel_number(), Some(Ok(0x4002)));
        assert_eq!(m.even_port(), Some(Ok(true)));
        assert_eq!(m.requested_address_family(), Some(Ok(Family::V4)));
    }

    #[test]
    fn error_codes() {
        let raw = Builder::new(Class::Error, method::ALLOCATE, &TX).error_code(437, "Allocation Mismatch").finish();
        assert_eq!(parse(&raw).error_code(), Some(Ok((437, "Allocation Mismatch"))));
        let raw = Builder::new(Class::Error, method::REFRESH, &TX).error_code(999, "x").finish();
        assert_eq!(parse(&raw).error_code(), Some(Ok((500, "x"))), "out of range is written as 500");
        // Reserved bits are ignored.
        let raw = Builder::new(Class::Error, method::ALLOCATE, &TX)
            .attribute(crate::attr::ERROR_CODE, &[0xff, 0xff, 0xfc, 1, b'x'])
            .finish();
        assert_eq!(parse(&raw).error_code(), Some(Ok((401, "x"))));
        for bad in [&[0u8, 0, 2, 0][..], &[0, 0, 4, 100], &[0, 0, 7, 0], &[0, 0, 4], &[0, 0, 4, 0, 0xff]] {
            let raw =
                Builder::new(Class::Error, method::ALLOCATE, &TX).attribute(crate::attr::ERROR_CODE, bad).finish();
            assert!(parse(&raw).error_code().is_some_and(|r| r.is_err()), "{bad:?}");
        }
    }

    #[test]
    fn malformed_values_are_named_not_guessed() {
        let cases: [(u16, &[u8]); 8] = [
            (attr::LIFETIME, &[0, 0, 2]),
            (attr::REQUESTED_TRANSPORT, &[17]),
            (attr::CHANNEL_NUMBER, &[0x40, 0x00, 0]),
            (attr::EVEN_PORT, &[0x80, 0]),
            (attr::RESERVATION_TOKEN, &[1, 2, 3]),
            (attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]),
            (attr::CONNECTION_ID, &[1, 2, 3, 4, 5]),
            (attr::LIFETIME, &[0, 0, 0, 0, 1]),
        ];
        for (kind, value) in cases {
            let raw = Builder::new(Class::Request, method::ALLOCATE, &TX).attribute(kind, value).finish();
            let m = parse(&raw);
            let err = match kind {
                attr::LIFETIME => m.lifetime().and_then(Result::err),
                attr::REQUESTED_TRANSPORT => m.requested_transport().and_then(Result::err),
                attr::CHANNEL_NUMBER => m.channel_number().and_then(Result::err),
                attr::EVEN_PORT => m.even_port().and_then(Result::err),
                attr::RESERVATION_TOKEN => m.reservation_token().and_then(Result::err),
                attr::REQUESTED_ADDRESS_FAMILY => m.requested_address_family().and_then(Result::err),
                _ => m.connection_id().and_then(Result::err),
            };
            assert!(
                matches!(err, Some(AttrError::Length(k) | AttrError::Value(k)) if k == kind),
                "{kind:#06x} {value:?}"
            );
        }
        // An XOR address of an unknown family, or the wrong length for its family.
        for v in [&[0u8, 0x03, 0, 0, 1, 2, 3, 4][..], &[0, 0x01, 0, 0, 1, 2, 3], &[0, 0x02, 0, 0, 1, 2, 3, 4]] {
            let raw = Builder::new(Class::Request, method::SEND, &TX).attribute(attr::XOR_PEER_ADDRESS, v).finish();
            assert!(parse(&raw).xor_address(attr::XOR_PEER_ADDRESS).is_some_and(|r| r.is_err()), "{v:?}");
        }
    }
}
