//! NSLP codec, signature and replay tests.

use super::wire::*;
use crate::replay::{ReplayError, ReplayGuard};
use crate::sign::{self, VerifyError};
use ed25519_dalek::{Signer as _, SigningKey};
use netserv_gist::wire::Mri;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

/// RFC 8032 §7.1, TEST 1.
const SECRET_1: [u8; 32] = hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
const PUBLIC_1: [u8; 32] = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
/// RFC 8032 §7.1, TEST 2's secret key (another tenant).
const SECRET_2: [u8; 32] = hex32("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nib(b[2 * i]) << 4) | nib(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nib(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

#[test]
fn ed25519_reproduces_rfc8032_test_1() {
    let key = SigningKey::from_bytes(&SECRET_1);
    assert_eq!(key.verifying_key().to_bytes(), PUBLIC_1);
    let sig = key.sign(b"").to_bytes();
    assert_eq!(
        sig.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}

fn setup() -> Request {
    let mut r = Request::new(RequestKind::Setup, 7, "itsp-a", 1_700_000_000_000, [9; 16]);
    r.module = Some("keepalive".into());
    r.module_url = Some("http://198.18.2.20:8080/keepalive.wasm".into());
    r.sha256 = Some([0xab; 32]);
    r.version = Some("1.0.0".into());
    r.filter_proto = Some(17);
    r.filter_ports = vec![5060, 5061];
    r.filter_addr = Some((IpAddr::V4(Ipv4Addr::new(198, 18, 2, 20)), 32));
    r.properties = vec![("domains".into(), "example.com".into()), ("allow".into(), "INVITE".into())];
    r.ttl_secs = Some(300);
    r.dependencies = vec!["stun".into()];
    r.notification = Some("udp:198.18.2.20:9999".into());
    r
}

/// The smallest request, assembled field by field: PROBE, id 1, user "a",
/// timestamp 2, nonce 16×0x11.
#[rustfmt::skip]
const PROBE_BYTES: &[u8] = &[
    1, 3, 0, 0,                 // version 1, PROBE, flags
    0, 0, 0, 1,                 // request id
    0x00, 0x01, 0x00, 0x01,     // USER, 1 byte
    b'a', 0, 0, 0,              //   padded to a word
    0x00, 0x0f, 0x00, 0x08,     // TIMESTAMP, 8 bytes
    0, 0, 0, 0, 0, 0, 0, 2,
    0x00, 0x10, 0x00, 0x10,     // NONCE, 16 bytes
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
];

#[test]
fn the_smallest_request_matches_its_byte_vector() {
    let r = Request::new(RequestKind::Probe, 1, "a", 2, [0x11; 16]);
    assert_eq!(r.encode(), PROBE_BYTES);
    assert_eq!(decode(PROBE_BYTES), Ok(Message::Request(Box::new(r))));
}

#[test]
fn a_signed_setup_round_trips_and_verifies() {
    let key = SigningKey::from_bytes(&SECRET_1);
    let mut r = setup();
    sign::sign(&mut r, &flow(), &key).expect("sign");
    let bytes = r.encode();
    assert_eq!(bytes.len() % 4, 0, "whole words, as GIST NSLP-Data");
    let v = sign::verify(&bytes, &flow(), &key.verifying_key()).expect("verifies");
    // Properties come back in canonical (sorted) order.
    let mut want = r.clone();
    want.properties.sort();
    assert_eq!(*v, want);
    assert_eq!(sign::user_of(&bytes).as_deref(), Ok("itsp-a"));
}

/// The flow the tests' requests travel on (server -> phone).
fn flow() -> Mri {
    Mri::between([198, 18, 2, 20].into(), [198, 18, 10, 20].into())
}

#[test]
fn a_request_verifies_only_on_the_flow_it_was_signed_for() {
    let key = SigningKey::from_bytes(&SECRET_1);
    let mut r = setup();
    sign::sign(&mut r, &flow(), &key).expect("sign");
    let bytes = r.encode();
    // A SETUP sent upstream along the same flow does not verify; a TRIGGER,
    // whose return leg is that, does.
    assert_eq!(
        sign::verify(&bytes, &flow().reversed_direction(), &key.verifying_key()),
        Err(VerifyError::BadSignature)
    );
    let mut trigger = setup();
    trigger.kind = RequestKind::Trigger;
    sign::sign(&mut trigger, &flow(), &key).expect("sign");
    assert!(sign::verify(&trigger.encode(), &flow().reversed_direction(), &key.verifying_key()).is_ok());
    // Captured and sent towards another phone, or from another source.
    let other_phone = Mri::between([198, 18, 2, 20].into(), [198, 18, 10, 21].into());
    let other_source = Mri::between([198, 18, 2, 21].into(), [198, 18, 10, 20].into());
    let mut ported = flow();
    ported.protocol = Some(17);
    ported.dest_port = Some(5060);
    for other in [other_phone, other_source, ported] {
        assert_eq!(sign::verify(&bytes, &other, &key.verifying_key()), Err(VerifyError::BadSignature), "{other:?}");
    }
    // A flow that cannot be put on the wire signs nothing.
    let mixed = Mri::between([198, 18, 2, 20].into(), std::net::Ipv6Addr::LOCALHOST.into());
    assert_eq!(sign::sign(&mut setup(), &mixed, &key), Err(VerifyError::BadFlow));
}

#[test]
fn tampering_wrong_keys_and_missing_signatures_are_refused() {
    let key = SigningKey::from_bytes(&SECRET_1);
    let other = SigningKey::from_bytes(&SECRET_2);
    let mut r = setup();
    sign::sign(&mut r, &flow(), &key).expect("sign");
    let bytes = r.encode();
    assert_eq!(sign::verify(&bytes, &flow(), &other.verifying_key()), Err(VerifyError::BadSignature));
    // Change the TTL (300 -> 301) after signing.
    let ttl_at = bytes.windows(4).position(|w| w == [0, 0, 1, 44]).expect("ttl value");
    let mut t = bytes.clone();
    *t.get_mut(ttl_at + 3).expect("in range") = 45;
    assert_eq!(sign::verify(&t, &flow(), &key.verifying_key()), Err(VerifyError::BadSignature));
    let unsigned = setup().encode();
    assert_eq!(sign::verify(&unsigned, &flow(), &key.verifying_key()), Err(VerifyError::Unsigned));
    // Bytes after the signature.
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0, 0x0b, 0, 4, 0, 0, 0, 1]);
    assert_eq!(
        sign::verify(&trailing, &flow(), &key.verifying_key()),
        Err(VerifyError::Malformed(DecodeError::TrailingBytes))
    );
}

#[test]
fn non_canonical_encodings_are_refused() {
    // TIMESTAMP before USER.
    let mut swapped = PROBE_BYTES.get(..8).expect("header").to_vec();
    swapped.extend_from_slice(PROBE_BYTES.get(16..28).expect("timestamp"));
    swapped.extend_from_slice(PROBE_BYTES.get(8..16).expect("user"));
    swapped.extend_from_slice(PROBE_BYTES.get(28..).expect("nonce"));
    assert_eq!(decode(&swapped), Err(DecodeError::NotCanonical(field::USER)));
    // USER twice.
    let mut twice = PROBE_BYTES.get(..16).expect("to user").to_vec();
    twice.extend_from_slice(PROBE_BYTES.get(8..).expect("rest"));
    assert_eq!(decode(&twice), Err(DecodeError::NotCanonical(field::USER)));
    // Properties out of order.
    let mut r = setup();
    r.properties.sort();
    let mut b = r.encode();
    let a = b.windows(5).position(|w| w == b"allow").expect("first property");
    b.splice(a..a + 5, *b"zllow");
    assert_eq!(decode(&b), Err(DecodeError::NotCanonical(field::PROPERTY)));
}

#[test]
fn malformed_requests_name_their_field() {
    let edit = |i: usize, v: u8| {
        let mut b = PROBE_BYTES.to_vec();
        *b.get_mut(i).expect("in range") = v;
        decode(&b)
    };
    assert_eq!(edit(0, 2), Err(DecodeError::Version));
    assert_eq!(edit(1, 9), Err(DecodeError::UnknownType));
    assert_eq!(edit(9, 0x77), Err(DecodeError::UnknownField(0x77)));
    assert_eq!(edit(19, 0xff), Err(DecodeError::FieldOverrun(field::TIMESTAMP)));
    assert_eq!(edit(19, 4), Err(DecodeError::BadValue(field::TIMESTAMP)));
    assert_eq!(edit(12, 0xff), Err(DecodeError::BadValue(field::USER)), "not UTF-8");
    let no_user: Vec<u8> = [PROBE_BYTES.get(..8).expect("h"), PROBE_BYTES.get(16..).expect("r")].concat();
    assert_eq!(decode(&no_user), Err(DecodeError::Missing(field::USER)));
    for n in 0..PROBE_BYTES.len() {
        // Cutting a whole field off the end leaves a shorter valid message
        // only if the cut field was optional; these three are required.
        assert!(decode(PROBE_BYTES.get(..n).expect("in range")).is_err(), "{n} bytes decoded");
    }
}

#[test]
fn responses_carry_the_stack_in_path_order() {
    let mut e1 = NodeEntry::new("edge1", Status::Ok, "installed");
    e1.address = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 3, 1)));
    e1.capabilities = vec!["wasm-packet-module".into(), "nfqueue".into()];
    e1.modules = vec!["itsp-a/keepalive@1.0.0".into()];
    e1.active_modules = 1;
    e1.load_pps = 1234;
    e1.answered = 1 << 40;
    let e2 = NodeEntry::new("edge2", Status::HashMismatch, "sha256 differs");
    let r = Response { kind: RequestKind::Setup, id: 7, stack: vec![e1, e2] };
    let b = r.encode();
    assert_eq!(b.len() % 4, 0);
    assert_eq!(decode(&b), Ok(Message::Response(r.clone())));
    assert!(!r.all_ok());
    // A field a newer appliance adds to its entry is skipped, not fatal.
    let mut one =
        Response { kind: RequestKind::Probe, id: 1, stack: vec![NodeEntry::new("n", Status::Ok, "")] }.encode();
    let entry_len = u16::from_be_bytes([one[10], one[11]]);
    one[10..12].copy_from_slice(&(entry_len + 8).to_be_bytes());
    one.extend_from_slice(&[0x00, 0x7f, 0x00, 0x04, 1, 2, 3, 4]);
    assert!(matches!(decode(&one), Ok(Message::Response(r)) if r.stack.len() == 1));
}

#[test]
fn replay_guard_forgets_out_of_order_nonces_each_at_its_own_time() {
    let mut g = ReplayGuard::new(1_000, 100);
    let now = 1_000_000;
    // Stamped 900, 0 and 500 ms ago: forgettable 100, 1000 and 500 ms from now.
    for (ago, n) in [(900, 1u8), (0, 2), (500, 3)] {
        assert_eq!(g.check(now, now - ago, [n; 16]), Ok(()));
    }
    assert_eq!(g.check(now + 101, now + 101, [9; 16]), Ok(()));
    assert_eq!(g.len(), 3, "the oldest went, the others stay");
    assert_eq!(g.check(now + 501, now + 501, [10; 16]), Ok(()));
    assert_eq!(g.len(), 3, "the 500 ms one went");
    // A nonce not yet forgotten is still a replay, whatever came after it.
    assert_eq!(g.check(now + 501, now, [2; 16]), Err(ReplayError::Replayed));
}

#[test]
fn replay_guard_accepts_once_within_the_window() {
    let mut g = ReplayGuard::new(30_000, 3);
    let now = 1_000_000;
    assert_eq!(g.check(now, now, [1; 16]), Ok(()));
    assert_eq!(g.check(now + 5, now, [1; 16]), Err(ReplayError::Replayed));
    assert_eq!(g.check(now, now - 30_001, [2; 16]), Err(ReplayError::Stale { skew_ms: -30_001 }));
    assert_eq!(g.check(now, now + 30_001, [2; 16]), Err(ReplayError::Stale { skew_ms: 30_001 }));
    assert_eq!(g.check(now, now + 100, [2; 16]), Ok(()));
    assert_eq!(g.check(now, now - 100, [3; 16]), Ok(()));
    assert_eq!(g.check(now, now, [4; 16]), Err(ReplayError::Full));
    // Once a nonce's timestamp has left the window, the nonce is forgotten,
    // and the old request is stale anyway.
    let later = now + 30_001;
    assert_eq!(g.check(later, now, [1; 16]), Err(ReplayError::Stale { skew_ms: -30_001 }));
    assert_eq!(g.check(later, later, [4; 16]), Ok(()));
    assert!(g.len() <= 3);
}

prop_compose! {
    fn arb_request()(kind in 1u8..=4, id in any::<u32>(), user in "[a-z]{1,12}", ts in any::<u64>(),
                     nonce in any::<[u8; 16]>(), module in proptest::option::of("[a-z-]{1,16}"),
                     ports in proptest::collection::vec(any::<u16>(), 0..4),
                     props in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,16}"), 0..4),
                     ttl in any::<Option<u32>>(), sha in any::<Option<[u8; 32]>>()) -> Request {
        let kind = match kind { 1 => RequestKind::Setup, 2 => RequestKind::Remove, 3 => RequestKind::Probe, _ => RequestKind::Trigger };
        let mut r = Request::new(kind, id, user, ts, nonce);
        r.module = module;
        r.filter_ports = ports;
        r.properties = props;
        r.properties.sort();
        r.properties.dedup();
        r.ttl_secs = ttl;
        r.sha256 = sha;
        r
    }
}

proptest! {
    #[test]
    fn requests_round_trip_and_verify(r in arb_request()) {
        let key = SigningKey::from_bytes(&SECRET_1);
        let mut r = r;
        sign::sign(&mut r, &flow(), &key).expect("sign");
        let b = r.encode();
        prop_assert_eq!(decode(&b), Ok(Message::Request(Box::new(r.clone()))));
        prop_assert_eq!(sign::verify(&b, &flow(), &key.verifying_key()).map(|v| v.into_inner()), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&b);
        let _ = sign::verify(&b, &flow(), &SigningKey::from_bytes(&SECRET_1).verifying_key());
    }
}

/// An entry as the plugin reads it: encoded in a response, decoded again.
fn round_trip(e: &NodeEntry) -> NodeEntry {
    let r = Response { kind: RequestKind::Setup, id: 3, stack: vec![e.clone()] };
    match decode(&r.encode()) {
        Ok(Message::Response(mut r)) => r.stack.remove(0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn signed_entries_verify_only_for_their_request_node_and_isp() {
    use crate::proof::{self, EntryError};
    let isp = SigningKey::from_bytes(&SECRET_1);
    let node = SigningKey::from_bytes(&SECRET_2);
    let trusted = [isp.verifying_key()];
    let (nonce, now) = ([5u8; 16], 1_800_000_000u64);
    let cert = proof::certify(&isp, "edge-1", &node.verifying_key(), now + 3600);
    let mut e = NodeEntry::new("edge-1", Status::Ok, "installed itsp-a/keepalive");
    e.address = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)));
    e.capabilities = vec!["keepalive".into()];
    e.answered = 42;
    proof::sign_entry(&mut e, &cert, &node, &nonce);
    let got = round_trip(&e);
    assert_eq!(got, e, "a signed entry travels byte for byte");
    assert_eq!(proof::verify_entry(&got, &nonce, &trusted, now), Ok(()));
    // Another request's answer, an unknown ISP, an expired certificate.
    assert_eq!(proof::verify_entry(&got, &[6; 16], &trusted, now), Err(EntryError::BadSignature));
    let other_isp = [node.verifying_key()];
    assert_eq!(proof::verify_entry(&got, &nonce, &other_isp, now), Err(EntryError::UntrustedCertificate));
    assert_eq!(proof::verify_entry(&got, &nonce, &trusted, now + 3601), Err(EntryError::Expired));
    // The certificate names edge-1: the entry cannot claim another node.
    let mut renamed = NodeEntry::new("edge-2", Status::Ok, "installed itsp-a/keepalive");
    proof::sign_entry(&mut renamed, &cert, &node, &nonce);
    assert_eq!(
        proof::verify_entry(&round_trip(&renamed), &nonce, &trusted, now),
        Err(EntryError::UntrustedCertificate)
    );
    // What the phone at the end of the path can make: no signature, or one
    // with a key no ISP certified.
    let forged = NodeEntry::new("edge-1", Status::Ok, "installed");
    assert_eq!(proof::verify_entry(&round_trip(&forged), &nonce, &trusted, now), Err(EntryError::Unsigned));
    let mut self_made = forged.clone();
    let phone = SigningKey::from_bytes(&[3; 32]);
    let own_cert = proof::certify(&phone, "edge-1", &phone.verifying_key(), now + 3600);
    proof::sign_entry(&mut self_made, &own_cert, &phone, &nonce);
    assert_eq!(
        proof::verify_entry(&round_trip(&self_made), &nonce, &trusted, now),
        Err(EntryError::UntrustedCertificate)
    );
    // A changed count, byte for byte on the wire.
    let mut wire = Response { kind: RequestKind::Setup, id: 3, stack: vec![e.clone()] }.encode();
    let at = wire.windows(8).position(|w| w == 42u64.to_be_bytes()).expect("answered");
    *wire.get_mut(at + 7).expect("in range") = 43;
    let Ok(Message::Response(r)) = decode(&wire) else { panic!("decodes") };
    assert_eq!(r.stack.first().map(|e| e.answered), Some(43));
    assert_eq!(proof::verify_entry(&r.stack[0], &nonce, &trusted, now), Err(EntryError::BadSignature));
    // Nothing may follow the signature.
    let mut trailing = Response { kind: RequestKind::Setup, id: 3, stack: vec![] }.encode();
    let mut entry = e.encode_unsigned();
    entry.extend_from_slice(&[0, 0xff, 0, 64]);
    entry.extend_from_slice(&[0; 64]);
    entry.extend_from_slice(&[0, 0x04, 0, 4, b'm', b'o', b'r', b'e']);
    trailing.extend_from_slice(&[0, 0x40]);
    trailing.extend_from_slice(&u16::try_from(entry.len()).expect("short").to_be_bytes());
    trailing.extend_from_slice(&entry);
    assert!(decode(&trailing).is_err(), "a field after the signature");
}
