use super::*;
use netserv_stun_wire::Message;

const RELAYED: &str = "198.18.1.1:50000";

fn client() -> Client {
    Client::Udp { listener: 0, from: "198.18.1.10:40000".parse().expect("addr") }
}

fn peer() -> SocketAddr {
    "198.18.2.20:3480".parse().expect("addr")
}

fn engine() -> (Engine, RelayId) {
    let own: [IpAddr; 2] = ["198.18.1.1".parse().expect("ip"), "198.18.2.1".parse().expect("ip")];
    let mut e = Engine::new(PeerPolicy::new(own, []), Limits::default(), 1);
    let id = e.insert(client(), RELAYED.parse().expect("addr"), 600_000, 0, false, 0).expect("fits");
    (e, id)
}

fn send_indication(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    Builder::new(Class::Indication, method::SEND, &[3; 12]).xor_address(tattr::XOR_PEER_ADDRESS, to).data(data).finish()
}

fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    framing::write_channel_data(&mut v, number, data, false).expect("frame");
    v
}

#[test]
fn channel_data_goes_to_the_bound_peer_only() {
    let (mut e, id) = engine();
    let msg = channel_data(0x4001, b"rtp!");
    assert_eq!(e.from_client(&client(), &msg, 1), FromClient::Dropped, "no channel yet");
    e.bind_channel(id, 0x4001, peer(), 600_000, 1).expect("binds");
    match e.from_client(&client(), &msg, 2) {
        FromClient::ToPeer { relay, peer: p, payload } => {
            assert_eq!((relay, p), (id, peer()));
            assert_eq!(msg.get(payload), Some(&b"rtp!"[..]));
        }
        other => panic!("{other:?}"),
    }
    let stranger = Client::Udp { listener: 0, from: "198.18.1.99:1".parse().expect("addr") };
    assert_eq!(e.from_client(&stranger, &msg, 2), FromClient::Dropped, "not its allocation");
    assert_eq!(e.allocation(id).map(|a| a.usage.bytes_to_peers), Some(4));
}

#[test]
fn send_indications_need_a_permission_and_stun_requests_go_to_the_guest() {
    let (mut e, id) = engine();
    let msg = send_indication(peer(), b"hello peer");
    assert_eq!(e.from_client(&client(), &msg, 1), FromClient::Dropped);
    assert_eq!(e.counts.dropped_no_permission, 1);
    e.permit(id, &[peer().ip()], 300_000, 1).expect("permits");
    match e.from_client(&client(), &msg, 2) {
        FromClient::ToPeer { peer: p, payload, .. } => {
            assert_eq!(p, peer());
            assert_eq!(msg.get(payload), Some(&b"hello peer"[..]));
        }
        other => panic!("{other:?}"),
    }
    let request = Builder::new(Class::Request, method::ALLOCATE, &[4; 12]).finish();
    assert_eq!(e.from_client(&client(), &request, 2), FromClient::ToGuest);
    assert_eq!(e.from_client(&client(), b"\xff junk", 2), FromClient::Dropped, "not TURN: no wasm call");
    let response = Builder::new(Class::Success, method::ALLOCATE, &[4; 12]).finish();
    assert_eq!(e.from_client(&client(), &response, 2), FromClient::Dropped, "a stray response");
    assert_eq!(e.counts.dropped_not_turn, 2);
}

#[test]
fn peers_get_data_indications_or_channel_data_and_only_when_permitted() {
    let (mut e, id) = engine();
    let mut out = Vec::new();
    assert_eq!(e.from_peer(id, peer(), b"media", 1, &mut out), None, "no permission");
    e.permit(id, &[peer().ip()], 300_000, 1).expect("permits");
    assert_eq!(e.from_peer(id, peer(), b"media", 2, &mut out), Some(client()));
    let m = Message::parse(&out).expect("a STUN message");
    assert_eq!((m.class(), m.method()), (Class::Indication, method::DATA));
    assert_eq!(m.xor_address(tattr::XOR_PEER_ADDRESS), Some(Ok(peer())));
    assert_eq!(m.data(), Some(&b"media"[..]));
    e.bind_channel(id, 0x4002, peer(), 600_000, 3).expect("binds");
    assert_eq!(e.from_peer(id, peer(), b"media", 4, &mut out), Some(client()));
    assert_eq!(out, channel_data(0x4002, b"media"));
    // Another port of a permitted address: a permission is per IP (§9).
    let other_port = SocketAddr::new(peer().ip(), 9);
    assert_eq!(e.from_peer(id, other_port, b"x", 5, &mut out), Some(client()));
    assert!(Message::parse(&out).is_ok(), "no channel for that port: a Data indication");
    // A permission expires.
    assert_eq!(e.from_peer(id, "198.18.2.21:1".parse().expect("addr"), b"x", 5, &mut out), None);
    let u = e.allocation(id).map(|a| a.usage).expect("live");
    assert_eq!((u.packets_to_client, u.bytes_to_client, u.dropped), (3, 11, 2));
}

#[test]
fn over_tcp_channel_data_is_padded() {
    let own: IpAddr = "198.18.1.1".parse().expect("ip");
    let mut e = Engine::new(PeerPolicy::new([own], []), Limits::default(), 1);
    let id = e.insert(Client::Tcp(7), RELAYED.parse().expect("addr"), 600_000, 0, false, 0).expect("fits");
    e.bind_channel(id, 0x4000, peer(), 600_000, 0).expect("binds");
    let mut out = Vec::new();
    e.from_peer(id, peer(), b"abcde", 1, &mut out).expect("relayed");
    assert_eq!(out.len(), 4 + 8);
}

#[test]
fn every_path_refuses_what_the_policy_denies_and_counts_it() {
    let (mut e, id) = engine();
    let cases: [(&str, Denied); 8] = [
        ("127.0.0.1", Denied::Loopback),
        ("10.1.2.3", Denied::Private),
        ("::ffff:192.168.1.1", Denied::Private),
        ("64:ff9b::a9fe:a9fe", Denied::LinkLocal),
        ("2002:7f00:1::", Denied::Loopback),
        ("0.0.0.0", Denied::Unspecified),
        ("224.0.0.1", Denied::Multicast),
        ("198.18.2.1", Denied::ThisNode),
    ];
    for (ip, why) in cases {
        let ip: IpAddr = ip.parse().expect("ip");
        let addr = SocketAddr::new(ip, 5000);
        assert_eq!(e.permit(id, &[peer().ip(), ip], 300_000, 0), Err(PeerError::Forbidden(why)), "{ip}");
        assert_eq!(e.bind_channel(id, 0x4000, addr, 600_000, 0), Err(PeerError::Forbidden(why)), "{ip}");
        assert_eq!(e.from_client(&client(), &send_indication(addr, b"x"), 0), FromClient::Dropped, "{ip}");
        for path in [PeerPath::CreatePermission, PeerPath::ChannelBind, PeerPath::Send] {
            assert!(e.counts.refused.get(&(path, why)).copied().unwrap_or(0) >= 1, "{ip} on {path:?}");
        }
    }
    // All or nothing: the good peer of each refused request got no permission.
    let mut out = Vec::new();
    assert_eq!(e.from_peer(id, peer(), b"x", 1, &mut out), None);
    // The operator's allow list opens what it names.
    let mut open = Engine::new(PeerPolicy::new([], ["10.0.0.0/8".parse().expect("net")]), Limits::default(), 1);
    let id = open.insert(client(), RELAYED.parse().expect("addr"), 1000, 0, false, 0).expect("fits");
    assert_eq!(open.permit(id, &["10.1.2.3".parse().expect("ip")], 1000, 0), Ok(()));
}

#[test]
fn channel_conflicts_and_limits() {
    let (mut e, id) = engine();
    e.bind_channel(id, 0x4000, peer(), 600_000, 0).expect("binds");
    assert_eq!(e.bind_channel(id, 0x4000, peer(), 600_000, 1), Ok(()), "a refresh");
    let other: SocketAddr = "198.18.2.21:1".parse().expect("addr");
    assert_eq!(e.bind_channel(id, 0x4000, other, 600_000, 1), Err(PeerError::Conflict), "number taken");
    assert_eq!(e.bind_channel(id, 0x4001, peer(), 600_000, 1), Err(PeerError::Conflict), "peer taken");
    assert_eq!(e.bind_channel(id, 0x3fff, other, 600_000, 1), Err(PeerError::Conflict), "out of range");
    assert_eq!(e.bind_channel(99, 0x4001, other, 600_000, 1), Err(PeerError::NoRelay));
    // After it expires the number may go to another peer.
    assert_eq!(e.bind_channel(id, 0x4000, other, 600_000, 600_001), Ok(()));
    assert_eq!(e.insert(client(), RELAYED.parse().expect("addr"), 1, 0, false, 0), Err(AllocateError::Exists));
    let mut tiny = Engine::new(PeerPolicy::default(), Limits { max_allocations: 0, ..Limits::default() }, 1);
    assert_eq!(tiny.insert(client(), RELAYED.parse().expect("addr"), 1, 0, false, 0), Err(AllocateError::QuotaReached));
}

#[test]
fn allocations_expire_unless_refreshed() {
    let (mut e, id) = engine();
    let second = Client::Udp { listener: 0, from: "198.18.1.11:1".parse().expect("addr") };
    let id2 = e.insert(second, "198.18.1.1:50001".parse().expect("addr"), 1000, 0, false, 0).expect("fits");
    assert_eq!(e.poll_timeout(), Some(1000));
    assert!(matches!(e.refresh(id2, 700_000, 500), Some(None)));
    assert_eq!(e.poll_timeout(), Some(600_000), "the stale entry is skipped");
    let mut gone = Vec::new();
    e.expire(600_000, &mut gone);
    assert_eq!(gone.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [id]);
    assert!(!e.has_client(&client()));
    assert!(matches!(e.refresh(id2, 0, 1), Some(Some(_))), "lifetime 0 ends it");
    assert!(e.is_empty() && e.poll_timeout().is_none());
    assert!(e.refresh(id2, 1, 1).is_none());
}

#[test]
fn rates_drop_what_exceeds_them() {
    let mut e = Engine::new(PeerPolicy::default(), Limits::default(), 1);
    let id = e.insert(client(), RELAYED.parse().expect("addr"), 600_000, 100, false, 0).expect("fits");
    e.bind_channel(id, 0x4000, peer(), 600_000, 0).expect("binds");
    let msg = channel_data(0x4000, &[0; 60]);
    assert!(matches!(e.from_client(&client(), &msg, 0), FromClient::ToPeer { .. }));
    assert_eq!(e.from_client(&client(), &msg, 0), FromClient::Dropped, "100 B/s");
    assert!(matches!(e.from_client(&client(), &msg, 1000), FromClient::ToPeer { .. }));
    assert_eq!(e.counts.dropped_over_rate, 1);
}

#[test]
fn on_the_nodes_own_address_only_live_relayed_addresses_are_peers() {
    let (mut e, a) = engine();
    let phone_b = Client::Udp { listener: 0, from: "198.18.1.11:40000".parse().expect("addr") };
    let b_relayed: SocketAddr = "198.18.1.1:50002".parse().expect("addr");
    e.insert(phone_b, b_relayed, 600_000, 0, false, 0).expect("fits");
    // Client to client through the same relay: allowed, exactly that address.
    assert_eq!(e.permit(a, &[b_relayed.ip()], 300_000, 0), Ok(()));
    assert_eq!(e.bind_channel(a, 0x4000, b_relayed, 600_000, 0), Ok(()));
    // Any other port of the node is its services, never a peer.
    for port in [22, 8270, 50004] {
        let node: SocketAddr = SocketAddr::new(b_relayed.ip(), port);
        assert_eq!(e.bind_channel(a, 0x4001, node, 600_000, 0), Err(PeerError::Forbidden(Denied::ThisNode)), "{port}");
        assert_eq!(e.from_client(&client(), &send_indication(node, b"x"), 0), FromClient::Dropped, "{port}");
    }
    // Another of the node's addresses: not this relay's, so no permission either.
    let own2: IpAddr = "198.18.2.1".parse().expect("ip");
    let mut two = Engine::new(PeerPolicy::new([own2, "198.18.1.1".parse().expect("ip")], []), Limits::default(), 1);
    let id = two.insert(client(), RELAYED.parse().expect("addr"), 1000, 0, false, 0).expect("fits");
    assert_eq!(two.permit(id, &[own2], 1000, 0), Err(PeerError::Forbidden(Denied::ThisNode)));
}
