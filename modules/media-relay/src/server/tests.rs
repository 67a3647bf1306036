//! The control logic against a model of the host's relay block, with
//! requests signed as coturn's `turnutils_uclient` signs them.

use super::*;
use crate::credentials::rest_password;
use netserv_stun_wire::integrity::{long_term_key_md5, long_term_key_sha256};
use netserv_stun_wire::{Builder, Class};
use proptest::prelude::*;
use std::collections::HashMap;

const SECRET: &[u8] = b"north-wind";
const NOW: Now = Now { unix_s: 1_800_000_000 };

/// The host's relay block as a model: it grants ports from 50000 and
/// refuses peers in 10.0.0.0/8 as its policy would.
#[derive(Default)]
struct Model {
    next: u32,
    live: HashMap<u32, u64>,
    permits: Vec<(u32, IpAddr)>,
    channels: Vec<(u32, u16, SocketAddr)>,
    quota: Option<usize>,
    static_users: Vec<(String, String)>,
    /// RFC 6062: connection id -> (relay, peer), and the data streams bound.
    connects: HashMap<u32, (u32, SocketAddr)>,
    bound: Vec<(u32, u32)>,
}

impl Relay for Model {
    fn allocate(&mut self, r: &RelayRequest) -> Result<Grant, RelayError> {
        if self.quota.is_some_and(|q| self.live.len() >= q) {
            return Err(RelayError::QuotaReached);
        }
        self.next += 1;
        self.live.insert(self.next, r.lifetime_ms);
        let port = 50_000 + u16::try_from(self.next * 2).unwrap_or(0);
        Ok(Grant { relay: self.next, relayed: SocketAddr::from(([198, 18, 1, 1], port)), reservation: None })
    }
    fn refresh(&mut self, relay: u32, lifetime_ms: u64) -> bool {
        match lifetime_ms {
            0 => self.live.remove(&relay).is_some(),
            l => self.live.get_mut(&relay).map(|v| *v = l).is_some(),
        }
    }
    fn permit(&mut self, relay: u32, peers: &[IpAddr], _: u64) -> Result<(), PeerRefused> {
        if !self.live.contains_key(&relay) {
            return Err(PeerRefused::NoRelay);
        }
        if peers.iter().any(|p| matches!(p, IpAddr::V4(v4) if v4.octets()[0] == 10)) {
            return Err(PeerRefused::Forbidden("private".into()));
        }
        self.permits.extend(peers.iter().map(|p| (relay, *p)));
        Ok(())
    }
    fn bind_channel(&mut self, relay: u32, channel: u16, peer: SocketAddr, l: u64) -> Result<(), PeerRefused> {
        self.permit(relay, &[peer.ip()], l)?;
        if self.channels.iter().any(|(r, c, p)| *r == relay && (*c == channel) != (*p == peer)) {
            return Err(PeerRefused::Conflict);
        }
        self.channels.push((relay, channel, peer));
        Ok(())
    }
    fn connect(&mut self, relay: u32, peer: SocketAddr) -> Result<u32, PeerRefused> {
        self.permit(relay, &[peer.ip()], 0)?;
        if self.connects.values().any(|c| *c == (relay, peer)) {
            return Err(PeerRefused::Conflict);
        }
        let id = 0x100 + u32::try_from(self.connects.len()).unwrap_or(0);
        self.connects.insert(id, (relay, peer));
        Ok(id)
    }
    fn bind_connection(&mut self, connection: u32, data: u32) -> bool {
        if !self.connects.contains_key(&connection) || self.bound.iter().any(|(c, _)| *c == connection) {
            return false;
        }
        self.bound.push((connection, data));
        true
    }
    fn secret(&mut self, name: &str) -> Option<Vec<u8>> {
        if name == "turn-secret" {
            return Some(SECRET.to_vec());
        }
        let user = name.strip_prefix("user.")?;
        self.static_users.iter().find(|(u, _)| u == user).map(|(_, p)| p.clone().into_bytes())
    }
}

fn client() -> (Client, SocketAddr) {
    let from: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
    (Client::Datagram { listener: 0, from }, from)
}

fn server() -> Server {
    Server::new(Config::default(), [7; 32])
}

fn rest_user() -> String {
    format!("{}:phone-0001", NOW.unix_s + 3600)
}

/// A request as a TURN client sends it once it has the nonce.
struct Req {
    method: u16,
    tx: [u8; 12],
    user: String,
    password: String,
    nonce: Vec<u8>,
    extra: Vec<(u16, Vec<u8>)>,
    peers: Vec<SocketAddr>,
    sha256: bool,
    after_integrity: Vec<(u16, Vec<u8>)>,
}

impl Req {
    fn new(method: u16, nonce: &[u8]) -> Self {
        let user = rest_user();
        Self {
            method,
            tx: [method as u8; 12],
            password: rest_password(SECRET, &user),
            user,
            nonce: nonce.to_vec(),
            extra: Vec::new(),
            peers: Vec::new(),
            sha256: false,
            after_integrity: Vec::new(),
        }
    }
    fn udp(mut self) -> Self {
        self.extra.push((tattr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = Builder::new(Class::Request, self.method, &self.tx);
        for (k, v) in &self.extra {
            b = b.attribute(*k, v);
        }
        for p in &self.peers {
            b = b.xor_address(tattr::XOR_PEER_ADDRESS, *p);
        }
        b = b
            .attribute(attr::USERNAME, self.user.as_bytes())
            .attribute(attr::REALM, b"netserv")
            .attribute(attr::NONCE, &self.nonce);
        b = if self.sha256 {
            b.attribute(0x001D, &[0, 2, 0, 0]).message_integrity_sha256(&self.key(), 32)
        } else {
            b.message_integrity(&self.key())
        };
        for (k, v) in &self.after_integrity {
            b = b.attribute(*k, v);
        }
        b.finish_with_fingerprint()
    }
    fn key(&self) -> Vec<u8> {
        if self.sha256 {
            long_term_key_sha256(&self.user, "netserv", &self.password).to_vec()
        } else {
            long_term_key_md5(&self.user, "netserv", &self.password).to_vec()
        }
    }
}

fn send(s: &mut Server, m: &mut Model, bytes: &[u8]) -> Outcome {
    let (c, from) = client();
    s.handle(m, c, from, bytes, NOW)
}

fn error_code(out: &Outcome) -> Option<u16> {
    let raw = out.response.as_ref()?;
    Message::parse(raw).ok()?.error_code().and_then(Result::ok).map(|(c, _)| c)
}

/// The nonce of a 401 to an unsigned Allocate.
fn nonce(s: &mut Server, m: &mut Model) -> Vec<u8> {
    let bare =
        Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).requested_transport(17).finish_with_fingerprint();
    let out = send(s, m, &bare);
    assert_eq!(error_code(&out), Some(401));
    let raw = out.response.expect("a challenge");
    let msg = Message::parse(&raw).expect("parses");
    assert_eq!(msg.attribute(attr::REALM).map(|a| a.value), Some(&b"netserv"[..]));
    msg.attribute(attr::NONCE).expect("a nonce").value.to_vec()
}

fn allocate(s: &mut Server, m: &mut Model) -> (Vec<u8>, SocketAddr) {
    let n = nonce(s, m);
    let req = Req::new(method::ALLOCATE, &n).udp();
    let out = send(s, m, &req.bytes());
    assert_eq!(out.count, Count::Allocated, "{out:?}");
    let raw = out.response.expect("an answer");
    let msg = Message::parse(&raw).expect("parses");
    assert_eq!(msg.class(), Class::Success);
    assert!(msg.verify_integrity(&req.key()).is_ok(), "signed with the requester's key");
    assert_eq!(msg.lifetime(), Some(Ok(600)));
    let relayed = msg.xor_address(tattr::XOR_RELAYED_ADDRESS).expect("relayed").expect("decodes");
    assert_eq!(msg.xor_mapped_address(), Some(client().1));
    (n, relayed)
}

#[test]
fn an_unsigned_allocate_is_challenged_and_a_signed_one_granted() {
    let (mut s, mut m) = (server(), Model::default());
    let (_, relayed) = allocate(&mut s, &mut m);
    assert_eq!(relayed.port(), 50_002);
    assert_eq!(s.allocations(), 1);
    assert_eq!(m.live.get(&1), Some(&600_000), "the host got coturn's default lifetime");
}

#[test]
fn the_whole_life_of_an_allocation() {
    let (mut s, mut m) = (server(), Model::default());
    let (n, _) = allocate(&mut s, &mut m);
    let peer: SocketAddr = "198.18.2.20:3480".parse().expect("peer");

    let mut p = Req::new(method::CREATE_PERMISSION, &n);
    p.peers.push(peer);
    assert_eq!(send(&mut s, &mut m, &p.bytes()).count, Count::Permitted);
    assert_eq!(m.permits, [(1, peer.ip())]);

    let mut c = Req::new(method::CHANNEL_BIND, &n);
    c.extra.push((tattr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]));
    c.peers.push(peer);
    assert_eq!(send(&mut s, &mut m, &c.bytes()).count, Count::ChannelBound);
    assert_eq!(m.channels, [(1, 0x4001, peer)]);

    let mut r = Req::new(method::REFRESH, &n);
    r.extra.push((tattr::LIFETIME, 1200u32.to_be_bytes().to_vec()));
    assert_eq!(send(&mut s, &mut m, &r.bytes()).count, Count::Refreshed);
    assert_eq!(m.live.get(&1), Some(&1_200_000));

    let mut r = Req::new(method::REFRESH, &n);
    r.tx = [9; 12];
    r.extra.push((tattr::LIFETIME, vec![0; 4]));
    let out = send(&mut s, &mut m, &r.bytes());
    assert_eq!(out.count, Count::Freed);
    assert!(m.live.is_empty() && s.allocations() == 0);
    // Gone: a further request is a mismatch.
    assert_eq!(error_code(&send(&mut s, &mut m, &p.bytes())), Some(437));
}

#[test]
fn a_retransmitted_allocate_gets_the_same_answer_and_another_one_a_437() {
    let (mut s, mut m) = (server(), Model::default());
    let (n, relayed) = allocate(&mut s, &mut m);
    let again = send(&mut s, &mut m, &Req::new(method::ALLOCATE, &n).udp().bytes());
    let raw = again.response.expect("answer");
    let msg = Message::parse(&raw).expect("parses");
    assert_eq!(msg.xor_address(tattr::XOR_RELAYED_ADDRESS), Some(Ok(relayed)));
    assert_eq!(m.live.len(), 1, "no second relay");
    let mut other = Req::new(method::ALLOCATE, &n).udp();
    other.tx = [0x77; 12];
    assert_eq!(error_code(&send(&mut s, &mut m, &other.bytes())), Some(437));
}

#[test]
fn credentials_that_do_not_hold_are_refused() {
    let (mut s, mut m) = (server(), Model::default());
    let n = nonce(&mut s, &mut m);
    let mut wrong = Req::new(method::ALLOCATE, &n).udp();
    wrong.password = "guess".into();
    let out = send(&mut s, &mut m, &wrong.bytes());
    assert_eq!((error_code(&out), out.count), (Some(401), Count::Unauthorized));

    let mut expired = Req::new(method::ALLOCATE, &n).udp();
    expired.user = format!("{}:phone-0001", NOW.unix_s - 1);
    expired.password = rest_password(SECRET, &expired.user);
    let out = send(&mut s, &mut m, &expired.bytes());
    assert_eq!((error_code(&out), out.count), (Some(401), Count::Expired));

    let forged = Req::new(method::ALLOCATE, &[b'0'; 40]).udp();
    let out = send(&mut s, &mut m, &forged.bytes());
    assert_eq!((error_code(&out), out.count), (Some(438), Count::StaleNonce));
    assert!(m.live.is_empty());
}

#[test]
fn a_stale_nonce_gets_a_438_with_a_fresh_one() {
    let (mut s, mut m) = (server(), Model::default());
    let n = nonce(&mut s, &mut m);
    let later = Now { unix_s: NOW.unix_s + 601 };
    let (c, from) = client();
    let out = s.handle(&mut m, c, from, &Req::new(method::ALLOCATE, &n).udp().bytes(), later);
    assert_eq!(error_code(&out), Some(438));
    let raw = out.response.expect("answer");
    let fresh = Message::parse(&raw).expect("parses").attribute(attr::NONCE).expect("nonce").value.to_vec();
    assert_ne!(fresh, n);
    let out = s.handle(&mut m, c, from, &Req::new(method::ALLOCATE, &fresh).udp().bytes(), later);
    assert_eq!(out.count, Count::Allocated);
}

#[test]
fn sha256_integrity_and_static_users() {
    let cfg = Config::from_properties([("auth", "static")]).expect("config");
    let mut s = Server::new(cfg, [1; 32]);
    let mut m = Model { static_users: vec![("alice".into(), "wonderland".into())], ..Model::default() };
    let n = nonce(&mut s, &mut m);
    let mut r = Req::new(method::ALLOCATE, &n).udp();
    (r.user, r.password, r.sha256) = ("alice".into(), "wonderland".into(), true);
    let out = send(&mut s, &mut m, &r.bytes());
    assert_eq!(out.count, Count::Allocated, "{out:?}");
    let raw = out.response.expect("answer");
    let msg = Message::parse(&raw).expect("parses");
    assert!(msg.attribute(attr::MESSAGE_INTEGRITY_SHA256).is_some(), "answered with the algorithm asked");
    assert!(msg.verify_integrity(&r.key()).is_ok());
    // The REST scheme is off here: a REST user is unknown.
    let rest = Req::new(method::ALLOCATE, &n).udp();
    let (c, _) = client();
    let other: SocketAddr = "198.18.1.10:40002".parse().expect("addr");
    let _ = c;
    let out = s.handle(&mut m, Client::Datagram { listener: 0, from: other }, other, &rest.bytes(), NOW);
    assert_eq!(error_code(&out), Some(438), "that nonce was another address's");
}

#[test]
fn a_forbidden_peer_gets_a_403_and_nothing_is_installed() {
    let (mut s, mut m) = (server(), Model::default());
    let (n, _) = allocate(&mut s, &mut m);
    let mut p = Req::new(method::CREATE_PERMISSION, &n);
    p.peers = vec!["198.18.2.20:1".parse().expect("ok"), "10.1.2.3:1".parse().expect("private")];
    let out = send(&mut s, &mut m, &p.bytes());
    assert_eq!((error_code(&out), out.count), (Some(403), Count::Forbidden));
    assert!(m.permits.is_empty(), "all or nothing");
    let mut c = Req::new(method::CHANNEL_BIND, &n);
    c.extra.push((tattr::CHANNEL_NUMBER, vec![0x40, 0x00, 0, 0]));
    c.peers.push("10.9.9.9:5000".parse().expect("private"));
    assert_eq!(error_code(&send(&mut s, &mut m, &c.bytes())), Some(403));
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let (mut s, mut m) = (server(), Model::default());
    let n = nonce(&mut s, &mut m);
    let mut r = Req::new(method::ALLOCATE, &n).udp();
    // A LIFETIME appended by someone on the path is not the client's.
    r.after_integrity.push((tattr::LIFETIME, 3600u32.to_be_bytes().to_vec()));
    let out = send(&mut s, &mut m, &r.bytes());
    assert_eq!(out.count, Count::Allocated);
    assert_eq!(m.live.get(&1), Some(&600_000));
    // And a REQUESTED-TRANSPORT only after it is no REQUESTED-TRANSPORT.
    let mut t = Req::new(method::ALLOCATE, &n);
    t.tx = [3; 12];
    t.after_integrity.push((tattr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]));
    let other: SocketAddr = "198.18.1.10:40001".parse().expect("addr");
    let n2 = {
        let bare = Builder::new(Class::Request, method::ALLOCATE, &[2; 12]).finish_with_fingerprint();
        let out = s.handle(&mut m, Client::Datagram { listener: 0, from: other }, other, &bare, NOW);
        let raw = out.response.expect("challenge");
        Message::parse(&raw).expect("parses").attribute(attr::NONCE).expect("nonce").value.to_vec()
    };
    t.nonce = n2;
    let out = s.handle(&mut m, Client::Datagram { listener: 0, from: other }, other, &t.bytes(), NOW);
    assert_eq!(error_code(&out), Some(400));
}

#[test]
fn allocate_checks_its_attributes() {
    let (mut s, mut m) = (server(), Model::default());
    let n = nonce(&mut s, &mut m);
    let mut tcp = Req::new(method::ALLOCATE, &n);
    tcp.extra.push((tattr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0]));
    assert_eq!(error_code(&send(&mut s, &mut m, &tcp.bytes())), Some(400), "TCP relaying over a UDP client");
    let mut sctp = Req::new(method::ALLOCATE, &n);
    sctp.extra.push((tattr::REQUESTED_TRANSPORT, vec![132, 0, 0, 0]));
    assert_eq!(error_code(&send(&mut s, &mut m, &sctp.bytes())), Some(442));
    let mut both = Req::new(method::ALLOCATE, &n).udp();
    both.extra.push((tattr::EVEN_PORT, vec![0x80]));
    both.extra.push((tattr::RESERVATION_TOKEN, vec![1; 8]));
    assert_eq!(error_code(&send(&mut s, &mut m, &both.bytes())), Some(400));
    let mut unknown = Req::new(method::ALLOCATE, &n).udp();
    unknown.extra.push((0x0031, vec![1, 2, 3, 4]));
    let out = send(&mut s, &mut m, &unknown.bytes());
    assert_eq!(error_code(&out), Some(420));
    assert!(m.live.is_empty());
}

#[test]
fn quotas_give_486() {
    let cfg = Config::from_properties([("user_quota", "1")]).expect("config");
    let mut s = Server::new(cfg, [1; 32]);
    let mut m = Model::default();
    allocate(&mut s, &mut m);
    let other: SocketAddr = "198.18.1.10:40009".parse().expect("addr");
    let c = Client::Datagram { listener: 0, from: other };
    let bare = Builder::new(Class::Request, method::ALLOCATE, &[2; 12]).finish_with_fingerprint();
    let raw = s.handle(&mut m, c, other, &bare, NOW).response.expect("challenge");
    let n = Message::parse(&raw).expect("parses").attribute(attr::NONCE).expect("nonce").value.to_vec();
    let out = s.handle(&mut m, c, other, &Req::new(method::ALLOCATE, &n).udp().bytes(), NOW);
    assert_eq!((error_code(&out), out.count), (Some(486), Count::QuotaReached));
    // When the first one's relay closes, the user may allocate again.
    s.relay_closed(1);
    let out = s.handle(&mut m, c, other, &Req::new(method::ALLOCATE, &n).udp().bytes(), NOW);
    assert_eq!(out.count, Count::Allocated);
    // And the host's own quota gives the same answer.
    let mut host_full = Model { quota: Some(0), ..Model::default() };
    let mut s = server();
    let n = nonce(&mut s, &mut host_full);
    let out = send(&mut s, &mut host_full, &Req::new(method::ALLOCATE, &n).udp().bytes());
    assert_eq!(error_code(&out), Some(486));
}

#[test]
fn unauthorized_answers_are_rate_limited_per_source() {
    let cfg = Config::from_properties([("unauthorized_per_s", "10")]).expect("config");
    let (mut s, mut m) = (Server::new(cfg, [7; 32]), Model::default());
    let bare = Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).finish_with_fingerprint();
    let counts: Vec<Count> = (0..15).map(|_| send(&mut s, &mut m, &bare).count).collect();
    assert_eq!(counts.iter().filter(|c| **c == Count::Unauthorized).count(), 10);
    assert_eq!(counts.iter().filter(|c| **c == Count::UnauthorizedDropped).count(), 5);
}

#[test]
fn malformed_input_gets_a_400_or_nothing() {
    let (mut s, mut m) = (server(), Model::default());
    // A request header with an attribute running past the end.
    let mut broken =
        Builder::new(Class::Request, method::ALLOCATE, &[4; 12]).attribute(attr::USERNAME, b"abcd").finish();
    broken[23] = 40;
    let out = send(&mut s, &mut m, &broken);
    assert_eq!((error_code(&out), out.count), (Some(400), Count::BadRequest));
    assert_eq!(send(&mut s, &mut m, b"hello").count, Count::Malformed);
    let ind = Builder::new(Class::Indication, method::SEND, &[5; 12]).finish();
    assert_eq!(send(&mut s, &mut m, &ind), Outcome { response: None, count: Count::Ignored });
    let binding = Builder::new(Class::Request, METHOD_BINDING, &[6; 12]).finish();
    let out = send(&mut s, &mut m, &binding);
    assert_eq!(out.count, Count::Binding);
}

proptest! {
    #[test]
    fn any_bytes_are_answered_or_dropped_never_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (mut s, mut m) = (server(), Model::default());
        let _ = send(&mut s, &mut m, &data);
    }

    #[test]
    fn mutated_requests_never_panic(flip in 0usize..400, bit in 0u8..8) {
        let (mut s, mut m) = (server(), Model::default());
        let mut raw = Req::new(method::ALLOCATE, &[b'a'; 40]).udp().bytes();
        let i = flip % raw.len();
        raw[i] ^= 1 << bit;
        let _ = send(&mut s, &mut m, &raw);
    }
}

#[test]
fn channel_numbers_of_rfc5766_unless_strict() {
    for (strict, want) in [("false", Count::ChannelBound), ("true", Count::BadRequest)] {
        let cfg = Config::from_properties([("strict_channels", strict)]).expect("config");
        let mut s = Server::new(cfg, [1; 32]);
        let mut m = Model::default();
        let (n, _) = allocate(&mut s, &mut m);
        let mut c = Req::new(method::CHANNEL_BIND, &n);
        c.extra.push((tattr::CHANNEL_NUMBER, vec![0x5a, 0x00, 0, 0]));
        c.peers.push("198.18.2.20:3480".parse().expect("peer"));
        assert_eq!(send(&mut s, &mut m, &c.bytes()).count, want, "strict_channels = {strict}");
    }
}

/// RFC 6062: a TCP allocation over a TCP control connection, a Connect
/// answered once the host has connected, the data connection bound by the
/// allocation's user only, and a peer's own connection offered.
#[test]
fn tcp_allocations_connect_and_bind_connections() {
    let (mut s, mut m) = (server(), Model::default());
    let n = nonce(&mut s, &mut m);
    let from = client().1;
    let control = Client::Stream(1);
    let at = |s: &mut Server, m: &mut Model, c: Client, r: &Req| s.handle(m, c, from, &r.bytes(), NOW);
    let mut alloc = Req::new(method::ALLOCATE, &n);
    alloc.extra.push((tattr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0]));
    assert_eq!(at(&mut s, &mut m, control, &alloc).count, Count::Allocated);
    let mut even = Req::new(method::ALLOCATE, &n);
    even.extra.push((tattr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0]));
    even.extra.push((tattr::EVEN_PORT, vec![0]));
    assert_eq!(error_code(&at(&mut s, &mut m, Client::Stream(5), &even)), Some(400), "EVEN-PORT is for UDP");

    let peer: SocketAddr = "198.18.2.20:3480".parse().expect("peer");
    let mut chan = Req::new(method::CHANNEL_BIND, &n);
    chan.extra.push((tattr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]));
    chan.peers.push(peer);
    assert_eq!(error_code(&at(&mut s, &mut m, control, &chan)), Some(400), "no channels on a TCP allocation");

    let mut connect = Req::new(method::CONNECT, &n);
    connect.tx = [0x21; 12];
    connect.peers.push(peer);
    let out = at(&mut s, &mut m, control, &connect);
    assert_eq!((out.count, out.response.is_none()), (Count::Connecting, true), "answered when the host has connected");
    connect.tx = [0x22; 12];
    assert_eq!(error_code(&at(&mut s, &mut m, control, &connect)), Some(446));
    let mut forbidden = Req::new(method::CONNECT, &n);
    forbidden.peers.push("10.1.1.1:80".parse().expect("peer"));
    assert_eq!(error_code(&at(&mut s, &mut m, control, &forbidden)), Some(403));

    let (to, out) = s.connect_result(0x100, true).expect("the Connect's answer");
    assert_eq!((to, out.count), (control, Count::Connected));
    let raw = out.response.expect("bytes");
    let msg = Message::parse(&raw).expect("parses");
    assert_eq!((msg.class(), msg.method(), *msg.transaction_id()), (Class::Success, method::CONNECT, [0x21; 12]));
    assert_eq!(msg.connection_id(), Some(Ok(0x100)));
    assert!(msg.verify_integrity(&connect.key()).is_ok());

    // The data connection: by another user, on the control connection, or
    // for an unknown id, refused; then bound, once.
    let mut bind = Req::new(method::CONNECTION_BIND, &n);
    bind.extra.push((tattr::CONNECTION_ID, 0x100u32.to_be_bytes().to_vec()));
    let mut stranger = Req::new(method::CONNECTION_BIND, &n);
    stranger.user = format!("{}:phone-0002", NOW.unix_s + 3600);
    stranger.password = rest_password(SECRET, &stranger.user);
    stranger.extra = bind.extra.clone();
    assert_eq!(error_code(&at(&mut s, &mut m, Client::Stream(2), &stranger)), Some(441));
    assert_eq!(error_code(&at(&mut s, &mut m, control, &bind)), Some(400));
    let mut unknown = Req::new(method::CONNECTION_BIND, &n);
    unknown.extra.push((tattr::CONNECTION_ID, 0x999u32.to_be_bytes().to_vec()));
    assert_eq!(error_code(&at(&mut s, &mut m, Client::Stream(2), &unknown)), Some(400));
    let out = at(&mut s, &mut m, Client::Stream(2), &bind);
    assert_eq!(out.count, Count::ConnectionBound, "{out:?}");
    assert_eq!(m.bound, [(0x100, 2)]);
    assert_eq!(error_code(&at(&mut s, &mut m, Client::Stream(3), &bind)), Some(400), "bound already");

    // A peer's connection is offered to the allocation's client.
    let (to, out) = s.connection_attempt(1, 0x200, peer).expect("an indication");
    assert_eq!((to, out.count), (control, Count::ConnectionAttempt));
    let raw = out.response.expect("bytes");
    let msg = Message::parse(&raw).expect("parses");
    assert_eq!((msg.class(), msg.method()), (Class::Indication, method::CONNECTION_ATTEMPT));
    assert_eq!(msg.connection_id(), Some(Ok(0x200)));
    assert_eq!(msg.xor_address(tattr::XOR_PEER_ADDRESS), Some(Ok(peer)));

    // A Connect the peer refuses: 447, signed.
    let mut other = Req::new(method::CONNECT, &n);
    other.tx = [0x23; 12];
    other.peers.push("198.18.2.21:3480".parse().expect("peer"));
    assert_eq!(at(&mut s, &mut m, control, &other).count, Count::Connecting);
    let (_, out) = s.connect_result(0x101, false).expect("answer");
    assert_eq!((error_code(&out), out.count), (Some(447), Count::ConnectFailed));
    assert!(s.connect_result(0x101, true).is_none(), "answered once");

    // A Connect on a UDP allocation is a 400.
    let (mut s, mut m) = (server(), Model::default());
    let (n, _) = allocate(&mut s, &mut m);
    let mut c = Req::new(method::CONNECT, &n);
    c.peers.push(peer);
    assert_eq!(error_code(&send(&mut s, &mut m, &c.bytes())), Some(400));
}
