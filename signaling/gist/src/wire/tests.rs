//! Codec tests: byte vectors assembled field by field from the RFC 5971
//! Appendix A diagrams, every-length truncation, each unknown-object rule,
//! each header and object error, and round-trip properties.

use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// NetServ's NSLPID in these vectors (experimental range, RFC 5971 §9).
const NSLPID: u16 = 0xf001;

/// A Q-mode Query from 198.18.2.20 about the flow 198.18.2.20 -> 198.18.1.10,
/// UDP to port 5060, carrying 8 bytes of NSLP data.
#[rustfmt::skip]
const QUERY: &[u8] = &[
    0x4e, 0x04, 0xbd, 0xa5,             // Q-mode magic number (§5.3.2)
    0x01, 0x10, 0x00, 0x16,             // version 1, 16 GIST hops, 22 words follow
    0xf0, 0x01, 0x80, 0xc0,             // NSLPID, C=1 type=Query, S=1 R=1
    // MRI (type 0), 5 words
    0x00, 0x00, 0x00, 0x05,
    0x00, 0x00, 0x48, 0x40,             // MRM 0, N=0; IP-Ver 4, P=1; B=1 (dest port), D=0
    198, 18, 2, 20,                     // source address
    198, 18, 1, 10,                     // destination address
    32, 32, 17, 0,                      // prefixes /32 /32, protocol UDP, DS 0
    0x00, 0x00, 0x13, 0xc4,             // source port (wildcard), destination port 5060
    // Session-ID (type 1), 4 words
    0x00, 0x01, 0x00, 0x04,
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    // NLI (type 2), 4 words
    0x00, 0x02, 0x00, 0x04,
    0x04, 64, 0x40, 0x00,               // PI-Length 4, IP-TTL 64, IP-Ver 4
    0x00, 0x00, 0x75, 0x30,             // routing state validity 30000 ms
    b'c', b'o', b'r', b'e',             // peer identity
    198, 18, 2, 20,                     // interface address
    // Query-Cookie (type 5), 2 words
    0x00, 0x05, 0x00, 0x02,
    0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44,
    // NSLP-Data (type 8), 2 words
    0x00, 0x08, 0x00, 0x02,
    1, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef,
];

fn query_message() -> Message<'static> {
    let mut m = Message::new(MessageType::Query, NSLPID, 16);
    let mut mri = Mri::between(IpAddr::V4(Ipv4Addr::new(198, 18, 2, 20)), IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10)));
    mri.protocol = Some(17);
    mri.dest_port = Some(5060);
    m.mri = Some(mri);
    m.session = Some(SessionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]));
    m.nli = Some(Nli {
        ip_ttl: 64,
        validity_ms: 30_000,
        peer_identity: b"core".to_vec(),
        interface: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 20)),
    });
    m.query_cookie = Some(&[0xaa, 0xbb, 0xcc, 0xdd, 0x11, 0x22, 0x33, 0x44]);
    m.nslp_data = Some(&[1, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    m
}

#[test]
fn query_vector_decodes_field_by_field() {
    let (m, enc) = decode(QUERY).expect("valid query");
    assert_eq!(enc, Encapsulation::QMode);
    assert_eq!(m, query_message());
    assert!(m.header.c_flag && m.header.r_flag && m.header.s_flag && !m.header.e_flag);
    assert_eq!(m.mri.as_ref().map(Mri::query_target), Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))));
}

#[test]
fn query_vector_encodes_to_the_same_bytes() {
    assert_eq!(query_message().encode(Encapsulation::QMode).as_deref(), Some(QUERY));
    // D-mode: the same without the magic number.
    assert_eq!(query_message().encode(Encapsulation::DMode).as_deref(), QUERY.get(4..));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for n in 0..QUERY.len() {
        let cut = QUERY.get(..n).expect("in range");
        assert!(decode(cut).is_err(), "{n} bytes decoded");
    }
}

/// Replaces the header's length field to match a body edited by a test.
fn with_body(header: &[u8], objects: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = objects.concat();
    let mut out = header.to_vec();
    let words = u16::try_from(body.len() / 4).expect("small");
    out.get_mut(2..4).expect("header").copy_from_slice(&words.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

const DATA_HEADER: &[u8] = &[0x01, 0x05, 0x00, 0x00, 0xf0, 0x01, 0x03, 0x80];
const MRI_V4: &[u8] = &[0x00, 0x00, 0x00, 0x04, 0, 0, 0x40, 0, 10, 0, 0, 1, 10, 0, 0, 2, 32, 32, 0, 0];
const SID: &[u8] = &[0x00, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const NSLP: &[u8] = &[0x00, 0x08, 0x00, 0x01, 1, 2, 3, 4];

#[test]
fn data_message_round_trips() {
    let bytes = with_body(DATA_HEADER, &[MRI_V4, SID, NSLP]);
    let (m, enc) = decode(&bytes).expect("valid data");
    assert_eq!(enc, Encapsulation::DMode);
    assert_eq!(m.header.msg_type, MessageType::Data);
    assert_eq!(m.nslp_data, Some(&[1u8, 2, 3, 4][..]));
    assert_eq!(m.encode(Encapsulation::DMode), Some(bytes));
}

#[test]
fn unknown_objects_follow_the_extensibility_flags() {
    let unknown = |ab: u8| -> Vec<u8> { vec![ab << 6, 0x77, 0x00, 0x01, 9, 9, 9, 9] };
    // AB=00 mandatory: the whole message is rejected.
    let b = with_body(DATA_HEADER, &[MRI_V4, SID, &unknown(0b00), NSLP]);
    assert_eq!(
        decode(&b).map(drop),
        Err(DecodeError::ObjectType { object_type: 0x77, kind: ObjectTypeError::Unrecognised })
    );
    // AB=01 ignore: deleted, the rest processed.
    let b = with_body(DATA_HEADER, &[MRI_V4, SID, &unknown(0b01), NSLP]);
    let (m, _) = decode(&b).expect("ignored");
    assert!(m.forward.is_empty());
    assert_eq!(m.encode(Encapsulation::DMode), Some(with_body(DATA_HEADER, &[MRI_V4, SID, NSLP])));
    // AB=10 forward: retained unchanged in what is forwarded.
    let fwd = unknown(0b10);
    let b = with_body(DATA_HEADER, &[MRI_V4, SID, &fwd, NSLP]);
    let (m, _) = decode(&b).expect("forwarded");
    assert_eq!(m.forward, vec![&fwd[..]]);
    assert_eq!(m.encode(Encapsulation::DMode), Some(with_body(DATA_HEADER, &[MRI_V4, SID, NSLP, &fwd])));
    // AB=11 reserved: rejected, on unknown and known types alike.
    for t in [0x77u8, 0x08] {
        let b = with_body(DATA_HEADER, &[MRI_V4, SID, &[0xc0, t, 0, 1, 1, 2, 3, 4]]);
        assert_eq!(
            decode(&b).map(drop),
            Err(DecodeError::ObjectType {
                object_type: u16::from(t),
                kind: ObjectTypeError::InvalidExtensibilityFlags
            })
        );
    }
}

#[test]
fn object_rules_per_message_type() {
    let dup = with_body(DATA_HEADER, &[MRI_V4, SID, SID, NSLP]);
    assert_eq!(
        decode(&dup).map(drop),
        Err(DecodeError::ObjectType { object_type: 1, kind: ObjectTypeError::Duplicate })
    );
    let missing = with_body(DATA_HEADER, &[MRI_V4, NSLP]);
    assert_eq!(
        decode(&missing).map(drop),
        Err(DecodeError::ObjectType { object_type: 1, kind: ObjectTypeError::Missing })
    );
    let no_data = with_body(DATA_HEADER, &[MRI_V4, SID]);
    assert_eq!(
        decode(&no_data).map(drop),
        Err(DecodeError::ObjectType { object_type: 8, kind: ObjectTypeError::Missing })
    );
    let cookie: &[u8] = &[0x00, 0x05, 0x00, 0x01, 1, 1, 1, 1];
    let with_cookie = with_body(DATA_HEADER, &[MRI_V4, SID, cookie, NSLP]);
    assert_eq!(
        decode(&with_cookie).map(drop),
        Err(DecodeError::ObjectType { object_type: 5, kind: ObjectTypeError::InvalidForMessage })
    );
}

#[test]
fn header_errors_carry_their_subcodes() {
    let body = [MRI_V4, SID, NSLP];
    let edit = |i: usize, v: u8| {
        let mut h = DATA_HEADER.to_vec();
        *h.get_mut(i).expect("in header") = v;
        with_body(&h, &body)
    };
    let e = |b: Vec<u8>| decode(&b).map(drop).err();
    assert_eq!(e(edit(0, 2)), Some(DecodeError::CommonHeader(HeaderError::UnknownVersion)));
    assert_eq!(e(edit(6, 0x09)), Some(DecodeError::CommonHeader(HeaderError::UnknownType)));
    assert_eq!(e(edit(7, 0xc0)), Some(DecodeError::CommonHeader(HeaderError::InvalidRFlag)));
    assert_eq!(e(edit(6, 0x00)), Some(DecodeError::CommonHeader(HeaderError::InvalidRFlag)), "Query without R");
    assert_eq!(e(edit(6, 0x81)), Some(DecodeError::CommonHeader(HeaderError::InvalidCFlag)), "Response with C");
    let mut e_on_query = QUERY.to_vec();
    *e_on_query.get_mut(11).expect("flags") |= 0x20;
    assert_eq!(decode(&e_on_query).map(drop), Err(DecodeError::CommonHeader(HeaderError::InvalidEFlag)));
    // The length field disagrees with the bytes present, both ways.
    let mut long = with_body(DATA_HEADER, &body);
    long.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(e(long), Some(DecodeError::CommonHeader(HeaderError::IncorrectLength)));
    // An object whose length runs past the message.
    let overrun = with_body(DATA_HEADER, &[MRI_V4, SID, &[0x00, 0x08, 0x00, 0x09, 1, 2, 3, 4]]);
    assert_eq!(e(overrun), Some(DecodeError::CommonHeader(HeaderError::IncorrectLength)));
}

#[test]
fn object_value_errors() {
    let with_mri = |mri: &[u8]| with_body(DATA_HEADER, &[mri, SID, NSLP]);
    // F-flag on IPv4, and A without P: invalid flag-field combinations.
    let mut f_on_v4 = MRI_V4.to_vec();
    *f_on_v4.get_mut(6).expect("flags") |= 0x02;
    *f_on_v4.get_mut(3).expect("length") = 5;
    f_on_v4.extend_from_slice(&[0, 0, 0, 1]);
    assert_eq!(
        decode(&with_mri(&f_on_v4)).map(drop),
        Err(DecodeError::value(object_type::MRI, ObjectValueError::InvalidFlagFieldCombination))
    );
    let mut a_without_p = MRI_V4.to_vec();
    *a_without_p.get_mut(7).expect("flags") |= 0x80;
    assert_eq!(
        decode(&with_mri(&a_without_p)).map(drop),
        Err(DecodeError::value(object_type::MRI, ObjectValueError::InvalidFlagFieldCombination))
    );
    // An MRI one word longer than its contents.
    let mut long = MRI_V4.to_vec();
    *long.get_mut(3).expect("length") = 5;
    long.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(decode(&with_mri(&long)).map(drop), Err(DecodeError::length(object_type::MRI)));
    // Loose-end MRM: not implemented here.
    let mut loose = MRI_V4.to_vec();
    *loose.get_mut(4).expect("mrm") = 1;
    assert_eq!(
        decode(&with_mri(&loose)).map(drop),
        Err(DecodeError::value(object_type::MRI, ObjectValueError::ValueNotSupported))
    );
    // A session id of the wrong size.
    let short_sid: &[u8] = &[0x00, 0x01, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let b = with_body(DATA_HEADER, &[MRI_V4, short_sid, NSLP]);
    assert_eq!(decode(&b).map(drop), Err(DecodeError::length(object_type::SESSION_ID)));
}

#[test]
fn nli_and_stack_objects() {
    assert_eq!(
        Nli::decode(&[0, 64, 0x40, 0, 0, 0, 0, 0, 10, 0, 0, 1]),
        Err(DecodeError::value(object_type::NLI, ObjectValueError::ValueNotSupported)),
        "validity 0 is reserved"
    );
    let v6 = Nli { ip_ttl: 255, validity_ms: 1, peer_identity: vec![7; 5], interface: IpAddr::V6(Ipv6Addr::LOCALHOST) };
    let mut b = Vec::new();
    v6.encode(&mut b).expect("encodes");
    assert_eq!(b.len(), 8 + 8 + 16, "identity padded to a word");
    assert_eq!(Nli::decode(&b), Ok(v6));

    assert_eq!(
        StackProposal::decode(&[0, 0, 0, 0]),
        Err(DecodeError::value(object_type::STACK_PROPOSAL, ObjectValueError::ValueNotSupported))
    );
    assert_eq!(
        StackProposal::decode(&[1, 0, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::value(object_type::STACK_PROPOSAL, ObjectValueError::EmptyList))
    );
    let sp = StackProposal { profiles: vec![vec![1], vec![2, 3, 4]] };
    let mut b = Vec::new();
    sp.encode(&mut b).expect("encodes");
    assert_eq!(b, [2, 0, 0, 0, 1, 1, 0, 0, 3, 2, 3, 4]);
    assert_eq!(StackProposal::decode(&b), Ok(sp));

    let sc = StackConfig {
        ma_hold_time_ms: 30_000,
        options: vec![MaProtocolOptions { protocol: 1, profile: 0, do_not_use: true, data: vec![0, 5] }],
    };
    let mut b = Vec::new();
    sc.encode(&mut b).expect("encodes");
    assert_eq!(b, [1, 0, 0, 0, 0, 0, 0x75, 0x30, 1, 0, 2, 0x80, 0, 5, 0, 0]);
    assert_eq!(StackConfig::decode(&b), Ok(sc));
}

#[test]
fn error_message_round_trips() {
    let mut m = Message::new(MessageType::Error, NSLPID, 1);
    m.header.s_flag = true;
    m.error = Some(ErrorObject {
        class: ErrorClass::PermanentFailure,
        code: ErrorCode::HopLimitExceeded,
        subcode: 0,
        d_mode: true,
        q_mode: true,
        original_header: [1, 0, 0, 29, 0xf0, 0x01, 0x80, 0xc0],
        session: Some(SessionId([5; 16])),
        mri: Some(Mri::between(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::BROADCAST))),
        info: vec![(3, vec![0, 8, 0, 0])],
        comment: Some("hop limit".into()),
    });
    let b = m.encode(Encapsulation::DMode).expect("encodes");
    let (back, _) = decode(&b).expect("decodes");
    assert_eq!(back, m);
}

/// Found by the fuzzer: an Error object with Q=1 and D=0 decoded, but could
/// not re-encode to the same message.
#[test]
fn error_q_flag_without_d_is_refused() {
    let mut b = [0u8; 16];
    b[0] = 2;
    b[2] = 5;
    b[4] = 0x08; // Q without D
    assert_eq!(
        ErrorObject::decode(&b),
        Err(DecodeError::value(object_type::ERROR, ObjectValueError::InvalidFlagFieldCombination))
    );
    b[4] = 0x18;
    assert!(ErrorObject::decode(&b).is_ok());
}

#[test]
fn encoder_refuses_what_cannot_be_carried() {
    let mut m = query_message();
    m.nslp_data = Some(&[1, 2, 3]);
    assert_eq!(m.encode(Encapsulation::QMode), None, "NSLP data not whole words");
    let big = vec![0u8; MAX_OBJECT_LEN_FOR_TEST + 4];
    m.nslp_data = Some(&big);
    assert_eq!(m.encode(Encapsulation::QMode), None, "object over 4095 words");
    let mut m = query_message();
    if let Some(mri) = m.mri.as_mut() {
        mri.destination = IpAddr::V6(Ipv6Addr::LOCALHOST);
    }
    assert_eq!(m.encode(Encapsulation::QMode), None, "mixed address families");
}

const MAX_OBJECT_LEN_FOR_TEST: usize = 0xfff * 4;

fn arb_ip() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
}

prop_compose! {
    fn arb_mri()((source, destination) in arb_ip(), proto in proptest::option::of(any::<u8>()),
                 ds in proptest::option::of(0u8..64), fl in proptest::option::of(0u32..0x10_0000),
                 spi in any::<Option<u32>>(), sp in any::<Option<u16>>(), dp in any::<Option<u16>>(),
                 up in any::<bool>(), sprefix in 0u8..=32, dprefix in 0u8..=32) -> Mri {
        let has_p = proto.is_some();
        Mri {
            source, destination, source_prefix: sprefix, dest_prefix: dprefix,
            protocol: proto, ds_field: ds,
            flow_label: fl.filter(|_| destination.is_ipv6()),
            spi: spi.filter(|_| has_p), source_port: sp.filter(|_| has_p), dest_port: dp.filter(|_| has_p),
            direction: if up { Direction::Upstream } else { Direction::Downstream },
        }
    }
}

proptest! {
    #[test]
    fn mri_round_trips(mri in arb_mri()) {
        let mut b = Vec::new();
        prop_assert!(mri.encode(&mut b).is_some());
        prop_assert_eq!(Mri::decode(&b), Ok(mri));
    }

    #[test]
    fn messages_round_trip(mri in arb_mri(), sid in any::<[u8; 16]>(), hops in any::<u8>(),
                           cookie in proptest::collection::vec(any::<u8>(), 0..16),
                           data in proptest::collection::vec(any::<u8>(), 0..64), q in any::<bool>()) {
        let cookie: Vec<u8> = cookie.iter().copied().take(cookie.len() / 4 * 4).collect();
        let data: Vec<u8> = data.iter().copied().take(data.len() / 4 * 4).collect();
        let mut m = Message::new(MessageType::Response, NSLPID, hops);
        m.mri = Some(mri);
        m.session = Some(SessionId(sid));
        m.nli = Some(Nli { ip_ttl: 1, validity_ms: 5, peer_identity: vec![1, 2, 3], interface: IpAddr::V4(Ipv4Addr::LOCALHOST) });
        m.query_cookie = Some(&cookie);
        m.responder_cookie = Some(&cookie);
        m.header.r_flag = true;
        m.nslp_data = Some(&data);
        let enc = if q { Encapsulation::QMode } else { Encapsulation::DMode };
        let b = m.encode(enc).expect("encodes");
        let (back, e) = decode(&b).expect("decodes");
        prop_assert_eq!(e, enc);
        prop_assert_eq!(back, m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&b);
    }

    #[test]
    fn mutated_query_never_panics(i in 0usize..QUERY.len(), v in any::<u8>()) {
        let mut b = QUERY.to_vec();
        if let Some(x) = b.get_mut(i) { *x = v; }
        if let Ok((m, e)) = decode(&b) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = m.encode(e).expect("re-encodes");
            prop_assert_eq!(decode(&again).map(|(m, _)| m), Ok(m));
        }
    }
}
