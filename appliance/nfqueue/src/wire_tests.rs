use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Captured on this project's test machines (Linux 6.18, x86_64) with
/// `examples/capture.rs`: queue 77 in the OUTPUT hook, a 4-byte UDP
/// datagram (a CRLFCRLF keep-alive) from 127.0.0.1:40000 to 127.0.0.1:9.
/// Attributes: PACKET_HDR (id 1, IPv4, hook 3), OUTDEV 1, SKB_INFO
/// (checksum not ready: loopback), PAYLOAD (the IP packet).
const CRLF_PACKET: &str = "540000000003000000000000000000000200004d0b0001000000000108000300080006000000000108000e000000000124000a00450000204f5140004011ed797f0000017f0000019c400009000cfe1f0d0a0d0a";
/// The next packet of the same capture: `OPTIONS sip:x SIP/2.0\r\n\r\n`, id 2.
const OPTIONS_PACKET: &str = "690000000003000000000000000000000200004d0b0001000000000208000300080006000000000108000e000000000139000a00450000354f5240004011ed637f0000017f0000019c4000090021fe344f5054494f4e53207369703a78205349502f322e300d0a0d0a";

/// The same datagram forwarded: queue 77 in the FORWARD hook of a router
/// namespace, from 198.18.1.10:40000 (a host whose link address is
/// e2:b4:70:d1:1e:8b) to 198.18.2.20:9. Attributes: PACKET_HDR (id 1, hook
/// 2), INDEV 2, OUTDEV 3, HWADDR (the sender's MAC), SKB_INFO, PAYLOAD (TTL
/// already decremented to 63).
const FORWARDED_PACKET: &str = "6c0000000003000000000000000000000200004d0b0001000000000108000200080005000000000208000600000000031000090000060000e2b470d11e8b000008000e000000000124000a0045000020dcbc40003f11cfcdc612010ac61202149c400009000c8f600d0a0d0a";

fn only_packet(bytes: &[u8]) -> Packet<'_> {
    let msgs: Vec<_> = messages(bytes).collect();
    assert_eq!(msgs.len(), 1);
    let m = msgs[0].expect("message");
    match event(&m).expect("event") {
        Event::Packet(p) => p,
        other => panic!("not a packet: {other:?}"),
    }
}

#[test]
fn captured_packet_messages_parse() {
    let bytes = hex(CRLF_PACKET);
    let p = only_packet(&bytes);
    assert_eq!((p.queue, p.id, p.hw_protocol, p.hook), (77, 1, 0x0800, 3));
    assert_eq!(p.skb_info, skb_info::CSUM_NOT_READY);
    assert!(!p.is_gso());
    assert!(p.is_complete());
    assert_eq!(p.payload.len(), 32, "20 bytes IPv4 + 8 UDP + 4 data");
    assert_eq!(&p.payload[28..], b"\r\n\r\n");
    assert_eq!(p.payload[0] >> 4, 4);

    let bytes = hex(OPTIONS_PACKET);
    let p = only_packet(&bytes);
    assert_eq!(p.id, 2);
    assert!(p.payload.ends_with(b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
}

#[test]
fn a_forwarded_packet_carries_its_ingress_interface_and_link_source() {
    let bytes = hex(FORWARDED_PACKET);
    let p = only_packet(&bytes);
    assert_eq!((p.id, p.hook, p.indev), (1, 2, Some(2)));
    assert_eq!(p.hw_source, Some([0xe2, 0xb4, 0x70, 0xd1, 0x1e, 0x8b]));
    assert!(!p.vlan);
    assert_eq!(p.payload[8], 63, "forwarded: TTL decremented");
    // The locally sent one has neither.
    let local = hex(CRLF_PACKET);
    let p = only_packet(&local);
    assert_eq!((p.indev, p.hw_source), (None, None));
}

#[test]
fn several_messages_in_one_datagram_are_walked_in_order() {
    let mut both = hex(CRLF_PACKET);
    both.extend(hex(OPTIONS_PACKET));
    let ids: Vec<u32> = messages(&both)
        .map(|m| match event(&m.expect("message")).expect("event") {
            Event::Packet(p) => p.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_message_never_a_panic() {
    let bytes = hex(OPTIONS_PACKET);
    for cut in 0..bytes.len() {
        let short = &bytes[..cut];
        let got: Vec<_> = messages(short).collect();
        if cut == 0 {
            assert!(got.is_empty());
            continue;
        }
        // The nlmsghdr length now runs past the datagram.
        assert_eq!(got.len(), 1, "cut at {cut}");
        assert!(got[0].is_err(), "cut at {cut}: {:?}", got[0]);
    }
}

#[test]
fn a_cut_attribute_inside_a_whole_message_is_malformed() {
    let mut bytes = hex(CRLF_PACKET);
    // Claim the payload attribute (at offset 48) is longer than the message.
    bytes[48] = 0xff;
    let m = messages(&bytes).next().expect("one").expect("header intact");
    assert_eq!(event(&m), Err(WireError::BadAttribute(0xff)));
    assert_eq!(packet_id(&m), Some(1), "the id still comes out, so the packet gets a verdict");
}

#[test]
fn a_packet_message_without_its_header_is_refused() {
    let mut b = Builder::default();
    let at = b.begin(msg::PACKET, 0, 0, 5);
    b.attr(attr::PAYLOAD, &[0x45; 20]);
    b.finish(at);
    let m = messages(&b.buf).next().expect("one").expect("ok");
    assert_eq!(event(&m), Err(WireError::MissingPacketHeader));
    assert_eq!(packet_id(&m), None);
}

#[test]
fn netlink_errors_and_acks_carry_errno_and_sequence() {
    // struct nlmsghdr { len 36, NLMSG_ERROR, 0, seq 9, pid 0 } then
    // struct nlmsgerr { error -16 (EBUSY), the request's header (seq 7) }.
    let mut bytes = Vec::new();
    bytes.extend(36u32.to_ne_bytes());
    bytes.extend(nlmsg::ERROR.to_ne_bytes());
    bytes.extend(0u16.to_ne_bytes());
    bytes.extend(9u32.to_ne_bytes());
    bytes.extend(0u32.to_ne_bytes());
    bytes.extend((-16i32).to_ne_bytes());
    bytes.extend(20u32.to_ne_bytes());
    bytes.extend((NFNL_SUBSYS_QUEUE << 8 | msg::CONFIG).to_ne_bytes());
    bytes.extend(5u16.to_ne_bytes());
    bytes.extend(7u32.to_ne_bytes());
    bytes.extend(0u32.to_ne_bytes());
    let m = messages(&bytes).next().expect("one").expect("ok");
    assert_eq!(event(&m), Ok(Event::Ack { errno: 16, seq: 7 }));
    // Cut inside the embedded header.
    let m = NlMsg { body: &m.body[..10], ..m };
    assert!(event(&m).is_err());
}

#[test]
fn verdicts_are_encoded_as_the_kernel_reads_them() {
    let mut b = Builder::default();
    assert!(b.verdict(77, 2, Verdict::Drop, None));
    // nlmsghdr: len 32, type 0x0301, flags REQUEST, seq 0, pid 0;
    // nfgenmsg: AF_UNSPEC, v0, queue 77 (big-endian);
    // NFQA_VERDICT_HDR: len 12, type 2, verdict 0 (big-endian), id 2 (big-endian).
    let mut want = Vec::new();
    want.extend(32u32.to_ne_bytes());
    want.extend(0x0301u16.to_ne_bytes());
    want.extend(1u16.to_ne_bytes());
    want.extend([0; 8]);
    want.extend([0, 0, 0, 77]);
    want.extend(12u16.to_ne_bytes());
    want.extend(2u16.to_ne_bytes());
    want.extend([0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(b.buf, want);

    b.clear();
    assert!(b.verdict(1, 9, Verdict::Accept, Some(&[1, 2, 3])));
    let m = messages(&b.buf).next().expect("one").expect("ok");
    let attrs: Vec<_> = attrs(&m.body[NFGEN_HDRLEN..]).map(|a| a.expect("attr")).collect();
    assert_eq!(attrs, vec![(attr::VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 9][..]), (attr::PAYLOAD, &[1, 2, 3][..])]);
    assert_eq!(b.buf.len() % 4, 0, "padded to 4 bytes");
}

#[test]
fn a_payload_too_large_for_one_attribute_is_not_sent() {
    let mut b = Builder::default();
    let huge = vec![0u8; MAX_ATTR_VALUE + 1];
    assert!(!b.verdict(1, 5, Verdict::Accept, Some(&huge)));
    let m = messages(&b.buf).next().expect("one").expect("ok");
    let kinds: Vec<u16> = attrs(&m.body[NFGEN_HDRLEN..]).map(|a| a.expect("attr").0).collect();
    assert_eq!(kinds, vec![attr::VERDICT_HDR], "the plain verdict, no payload");
    b.clear();
    assert!(b.verdict(1, 5, Verdict::Accept, Some(&huge[..MAX_ATTR_VALUE])));
}

#[test]
fn config_requests_ask_for_an_ack() {
    let mut b = Builder::default();
    b.config_cmd(300, 5, cmd::BIND);
    b.config_params(300, 6, 0xffff, 1024, cfg_flags::FAIL_OPEN, cfg_flags::FAIL_OPEN);
    let ms: Vec<NlMsg<'_>> = messages(&b.buf).map(|m| m.expect("ok")).collect();
    assert_eq!(ms.len(), 2);
    assert!(ms.iter().all(|m| m.flags == flags::REQUEST | flags::ACK && m.kind == 0x0302));
    assert_eq!((ms[0].seq, ms[1].seq), (5, 6));
    let params: Vec<_> = attrs(&ms[1].body[NFGEN_HDRLEN..]).map(|a| a.expect("attr")).collect();
    assert_eq!(params[0], (attr::CFG_PARAMS, &[0, 0, 0xff, 0xff, COPY_PACKET][..]));
    assert_eq!(params[1], (attr::CFG_QUEUE_MAXLEN, &1024u32.to_be_bytes()[..]));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        for m in messages(&bytes).flatten() {
            let _ = event(&m);
            let _ = packet_id(&m);
        }
    }

    #[test]
    fn built_verdicts_parse_back(queue: u16, id: u32, payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let mut b = Builder::default();
        proptest::prop_assert!(b.verdict(queue, id, Verdict::Accept, Some(&payload)));
        let m = messages(&b.buf).next().expect("one").expect("ok");
        let got: Vec<_> = attrs(&m.body[NFGEN_HDRLEN..]).map(|a| a.expect("attr")).collect();
        proptest::prop_assert_eq!(got[1], (attr::PAYLOAD, &payload[..]));
        proptest::prop_assert_eq!(m.body[2..4].to_vec(), queue.to_be_bytes().to_vec());
    }
}
