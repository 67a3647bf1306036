use super::*;

/// RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY, FINGERPRINT).
pub(crate) const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf,
    0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65,
    0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51,
    0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2,
    0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: sample IPv4 response (SOFTWARE, XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY, FINGERPRINT).
pub(crate) const RFC5769_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf,
    0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20,
    0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd,
    0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04,
    0xc0, 0x7d, 0x4c, 0x96,
];

const TX: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

#[test]
fn rfc5769_request_parses_with_valid_fingerprint() {
    let m = Message::parse(&RFC5769_REQUEST).expect("parses");
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), METHOD_BINDING);
    assert_eq!(m.transaction_id(), &TX);
    let kinds: Vec<u16> = m.attributes().map(|a| a.expect("attr").kind).collect();
    assert_eq!(kinds, [attr::SOFTWARE, 0x0024, 0x8029, attr::USERNAME, attr::MESSAGE_INTEGRITY, attr::FINGERPRINT]);
    assert_eq!(m.attribute(attr::SOFTWARE).expect("software").value, b"STUN test client");
    assert_eq!(m.attribute(attr::USERNAME).expect("username").value, b"evtj:h6vY");
}

#[test]
fn rfc5769_ipv4_response_decodes_mapped_address() {
    let m = Message::parse(&RFC5769_IPV4_RESPONSE).expect("parses");
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.xor_mapped_address(), Some("192.0.2.1:32853".parse().expect("addr")));
}

#[test]
fn encoder_reproduces_rfc5769_xor_mapped_address_bytes() {
    let out = Builder::new(Class::Success, METHOD_BINDING, &TX)
        .xor_mapped_address("192.0.2.1:32853".parse().expect("addr"))
        .finish();
    assert_eq!(out.get(..2), Some(&[0x01, 0x01][..]));
    assert_eq!(out.get(20..32), RFC5769_IPV4_RESPONSE.get(36..48));
}

#[test]
fn fingerprint_round_trips_and_detects_corruption() {
    for addr in ["192.0.2.1:32853", "[2001:db8:1234:5678:11:2233:4455:6677]:32853"] {
        let addr: SocketAddr = addr.parse().expect("addr");
        let out = Builder::new(Class::Success, METHOD_BINDING, &TX).xor_mapped_address(addr).finish_with_fingerprint();
        let m = Message::parse(&out).expect("own output parses");
        assert_eq!(m.xor_mapped_address(), Some(addr));
        let mut bad = out.clone();
        if let Some(b) = bad.get_mut(25) {
            *b ^= 1;
        }
        assert_eq!(Message::parse(&bad).err(), Some(Error::BadFingerprint));
    }
}

#[test]
fn corrupted_fingerprint_in_rfc_vector_is_rejected() {
    let mut v = RFC5769_REQUEST;
    if let Some(b) = v.last_mut() {
        *b ^= 0xff;
    }
    assert_eq!(Message::parse(&v).err(), Some(Error::BadFingerprint));
}

#[test]
fn negative_cases() {
    assert_eq!(Message::parse(&[]).err(), Some(Error::TooShort));
    let mut v = RFC5769_REQUEST;
    v[0] = 0xC0;
    assert_eq!(Message::parse(&v).err(), Some(Error::NotStun));
    let mut v = RFC5769_REQUEST;
    v[4] = 0;
    assert_eq!(Message::parse(&v).err(), Some(Error::NoMagicCookie));
    assert_eq!(Message::parse(&RFC5769_REQUEST[..100]).err(), Some(Error::BadLength));
    // An attribute whose length runs past the message.
    let mut v = RFC5769_REQUEST;
    v[23] = 0xff;
    assert_eq!(Message::parse(&v).err(), Some(Error::AttributeOverrun));
}

#[test]
fn every_truncation_and_length_is_handled() {
    for cut in 0..RFC5769_REQUEST.len() {
        let _ = Message::parse(&RFC5769_REQUEST[..cut]);
    }
    for i in 0..RFC5769_REQUEST.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut v = RFC5769_REQUEST;
            v[i] ^= x;
            if let Ok(m) = Message::parse(&v) {
                let _ = m.attributes().count();
                let _ = m.xor_mapped_address();
            }
        }
    }
}
