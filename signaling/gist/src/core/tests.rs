//! Deterministic handshake tests on a virtual clock: nodes exchange datagrams
//! through a tiny simulated path, with loss chosen by the test.
//!
//! ```text
//!   A (10.0.0.1, origin) ── B (10.0.1.1, on path) ── T (10.0.2.2, no GIST)
//! ```

use super::*;
use crate::wire::{Direction, ErrorCode};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::net::Ipv4Addr;

const NSLPID: u16 = 0xf001;
const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
const T: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2));
const A_PORT: u16 = 40_000;

fn sid(n: u8) -> SessionId {
    SessionId([n; 16])
}

fn mri() -> Mri {
    Mri::between(A, T)
}

/// Two GIST nodes on one path, a clock, and a loss rule.
struct Sim {
    now: Instant,
    a: Node,
    b: Node,
    rng: ChaCha8Rng,
    /// Datagrams delivered so far, by kind, for assertions.
    log: Vec<(IpAddr, MessageType)>,
    /// Drop the n-th datagram sent (0-based), once each.
    drop_nth: Vec<usize>,
    sent: usize,
}

impl Sim {
    fn new() -> Self {
        // The simulation's epoch; every later instant is derived from it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let a = Node::new(Config::new(NSLPID, "A"), now, &mut rng);
        let b = Node::new(Config::new(NSLPID, "B"), now, &mut rng);
        Self { now, a, b, rng, log: Vec::new(), drop_nth: Vec::new(), sent: 0 }
    }

    /// Moves every queued datagram one hop; returns whether any moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.a.poll_transmit() {
            moved = true;
            self.deliver(A, t);
        }
        while let Some(t) = self.b.poll_transmit() {
            moved = true;
            self.deliver(B, t);
        }
        moved
    }

    fn deliver(&mut self, from_node: IpAddr, t: Transmit) {
        let n = self.sent;
        self.sent += 1;
        if self.drop_nth.contains(&n) {
            return;
        }
        let kind = wire::decode(&t.payload).map(|(m, _)| m.header.msg_type).expect("nodes send valid GIST");
        let from = SocketAddr::new(t.source_ip, if from_node == A { A_PORT } else { GIST_PORT });
        assert_eq!(t.source_ip, from_node, "sent from the node's own address");
        match (t.encapsulation, t.destination.ip()) {
            // Q-mode towards T crosses B (on path) when A sends it.
            (Encapsulation::QMode, dst) if dst == T && from_node == A => {
                self.log.push((B, kind));
                let d = self.b.handle_datagram(self.now, B, from, &t.payload, true);
                assert_eq!(d, Disposition::Consumed);
            }
            // From B, Q-mode reaches T, which runs no GIST: lost.
            (Encapsulation::QMode, _) => self.log.push((T, kind)),
            (_, dst) if dst == A => {
                self.log.push((A, kind));
                self.a.handle_datagram(self.now, A, from, &t.payload, false);
            }
            (_, dst) if dst == B => {
                self.log.push((B, kind));
                self.b.handle_datagram(self.now, B, from, &t.payload, false);
            }
            _ => self.log.push((t.destination.ip(), kind)),
        }
    }

    /// Runs until nothing moves and no timer is due before `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..10_000 {
            while self.step() {}
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("simulation did not settle");
    }

    fn events(node: &mut Node) -> Vec<Event> {
        std::iter::from_fn(|| node.poll_event()).collect()
    }

    fn a_sends(&mut self, data: &[u8]) {
        let now = self.now;
        self.a.send(now, A, Toward::Target, sid(1), mri(), data.to_vec(), None, &mut self.rng).expect("send");
    }
}

#[test]
fn handshake_installs_state_only_after_the_cookie_returns() {
    let mut s = Sim::new();
    s.a_sends(b"SETP");
    // After the Query and the Response, before the Confirm: B holds nothing.
    s.step();
    assert_eq!(s.b.routing().len(), 0, "no state for a Query");
    assert!(Sim::events(&mut s.b).is_empty());
    let start = s.now;
    s.run_until(start + Duration::from_secs(1));
    let kinds: Vec<_> = s.log.iter().map(|(_, k)| *k).collect();
    assert_eq!(kinds, [MessageType::Query, MessageType::Response, MessageType::Confirm]);
    let ev = Sim::events(&mut s.b);
    assert!(
        matches!(ev.as_slice(), [Event::Received { from: Toward::Origin, data, peer_identity, .. }]
            if data == b"SETP" && peer_identity == b"A"),
        "{ev:?}"
    );
    let key = (sid(1), mri());
    assert_eq!(s.b.routing().get(&key).and_then(|r| r.peer(Toward::Origin)).map(|p| p.address.ip()), Some(A));
    assert_eq!(s.a.routing().get(&key).and_then(|r| r.peer(Toward::Target)).map(|p| p.address.ip()), Some(B));

    // With state in place, data goes straight to the peer, both ways.
    s.log.clear();
    s.a_sends(b"MORE");
    let now = s.now;
    s.b.send(now, B, Toward::Origin, sid(1), mri(), b"RESP".to_vec(), Some(5), &mut s.rng).expect("upstream");
    s.run_until(now + Duration::from_millis(10));
    assert_eq!(s.log.iter().map(|(_, k)| *k).collect::<Vec<_>>(), [MessageType::Data, MessageType::Data]);
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::Received { data, .. }] if data == b"MORE"));
    assert!(
        matches!(Sim::events(&mut s.a).as_slice(), [Event::Received { from: Toward::Target, data, .. }] if data == b"RESP")
    );
}

#[test]
fn a_lost_query_is_retransmitted_after_t1() {
    let mut s = Sim::new();
    s.drop_nth = vec![0];
    s.a_sends(b"SETP");
    let start = s.now;
    s.run_until(start + Duration::from_millis(499));
    assert!(Sim::events(&mut s.b).is_empty(), "nothing before T1");
    s.run_until(start + Duration::from_millis(600));
    assert_eq!(s.a.stats.retransmissions, 1);
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::Received { .. }]));
}

#[test]
fn lost_responses_and_confirms_are_recovered_by_the_query_timer() {
    // Drop the first Response (datagram 1); the Query is retransmitted.
    let mut s = Sim::new();
    s.drop_nth = vec![1];
    s.a_sends(b"SETP");
    let start = s.now;
    s.run_until(start + Duration::from_secs(2));
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::Received { .. }]));
    assert_eq!(s.a.stats.retransmissions, 1);
    assert_eq!(s.a.pending_queries(), 0);
}

#[test]
fn the_last_node_learns_it_after_bounded_retransmissions() {
    let mut s = Sim::new();
    let now = s.now;
    // B queries on towards T, where nothing answers.
    s.b.send(now, B, Toward::Target, sid(2), Mri::between(A, T), b"SETP".to_vec(), Some(9), &mut s.rng).expect("send");
    s.run_until(now + Duration::from_millis(3_499));
    assert!(Sim::events(&mut s.b).is_empty());
    // Sent at 0, 0.5 and 1.5 s; given up at 3.5 s (T1 doubling, 3 attempts).
    s.run_until(now + Duration::from_millis(3_500));
    let ev = Sim::events(&mut s.b);
    assert!(matches!(ev.as_slice(), [Event::NoPeer { data, icmp: false, .. }] if data == b"SETP"), "{ev:?}");
    assert_eq!(s.log.iter().filter(|(to, _)| *to == T).count(), 3);
}

#[test]
fn icmp_unreachable_shortens_the_wait() {
    let mut s = Sim::new();
    let now = s.now;
    s.b.send(now, B, Toward::Target, sid(2), Mri::between(A, T), b"SETP".to_vec(), None, &mut s.rng).expect("send");
    s.step();
    s.b.handle_icmp_unreachable(T);
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::NoPeer { icmp: true, .. }]));
    assert_eq!(s.b.poll_timeout(), None, "no retransmission left");
}

/// A Confirm for `sid(1)` carrying `cookie`, as A would send it.
fn confirm(cookie: &[u8]) -> Vec<u8> {
    let mut c = Message::new(MessageType::Confirm, NSLPID, 16);
    c.mri = Some(mri());
    c.session = Some(sid(1));
    c.nli = Some(Nli { ip_ttl: 64, validity_ms: 30_000, peer_identity: b"X".to_vec(), interface: A });
    c.responder_cookie = Some(cookie);
    c.nslp_data = Some(b"EVIL");
    c.encode(Encapsulation::DMode).expect("encodes")
}

/// A sends a Query from `from`; B's Response to it carries this cookie.
fn responder_cookie(s: &mut Sim, from: SocketAddr) -> Vec<u8> {
    s.a_sends(b"SETP");
    let q = s.a.poll_transmit().expect("query");
    s.b.handle_datagram(s.now, B, from, &q.payload, true);
    let r = s.b.poll_transmit().expect("response");
    let (resp, _) = wire::decode(&r.payload).expect("response decodes");
    resp.responder_cookie.expect("cookie").to_vec()
}

#[test]
fn forged_or_replayed_cookies_install_nothing() {
    let mut s = Sim::new();
    let from = SocketAddr::new(A, A_PORT);
    // A made-up cookie.
    s.b.handle_datagram(s.now, B, from, &confirm(&[0u8; COOKIE_LEN]), false);
    let mut sent: Vec<Transmit> = std::iter::from_fn(|| s.b.poll_transmit()).collect();
    // A valid cookie, but brought back from another address.
    let cookie = responder_cookie(&mut s, from);
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), A_PORT);
    s.b.handle_datagram(s.now, B, elsewhere, &confirm(&cookie), false);
    // The same cookie two epochs later.
    let late = s.now + COOKIE_EPOCH * 2 + Duration::from_secs(1);
    s.b.handle_datagram(late, B, from, &confirm(&cookie), false);
    assert_eq!(s.b.routing().len(), 0);
    assert_eq!(s.b.stats.bad_cookies, 3);
    assert!(Sim::events(&mut s.b).is_empty());
    sent.extend(std::iter::from_fn(|| s.b.poll_transmit()));
    let errors: Vec<_> = sent.iter().filter_map(|t| wire::decode(&t.payload).ok().and_then(|(m, _)| m.error)).collect();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.code == ErrorCode::ObjectValue && e.subcode == 4), "{errors:?}");
    // Within its lifetime and from the querier, the cookie works.
    s.b.handle_datagram(s.now + COOKIE_EPOCH, B, from, &confirm(&cookie), false);
    assert_eq!(s.b.routing().len(), 1);
}

/// A Confirm replayed with a cookie that already installed state (it stays
/// valid 10-20 s) delivers nothing again: before, each copy re-delivered the
/// request, and each cost the NSLP another Ed25519 verify.
#[test]
fn a_replayed_confirm_delivers_nothing_again() {
    let mut s = Sim::new();
    let from = SocketAddr::new(A, A_PORT);
    let cookie = responder_cookie(&mut s, from);
    s.b.handle_datagram(s.now, B, from, &confirm(&cookie), false);
    assert_eq!(Sim::events(&mut s.b).len(), 1, "the first Confirm delivers");
    for k in 1..=50u64 {
        s.b.handle_datagram(s.now + Duration::from_millis(100 * k), B, from, &confirm(&cookie), false);
    }
    assert!(Sim::events(&mut s.b).is_empty(), "a replay delivered again");
    assert_eq!(s.b.stats.confirms_replayed, 50);
    assert_eq!(s.b.stats.confirms_accepted, 1);
    assert!(s.b.poll_transmit().is_none(), "a replay gets no answer either");
}

/// Garbage sent to the node from one address gets it a burst of Errors and
/// then a trickle; from forged addresses, all together, no more than the
/// node's total. Before, every datagram got its Error.
#[test]
fn errors_for_garbage_are_rate_limited_per_source_and_in_total() {
    use super::error_limit::{PER_SOURCE_BURST, PER_SOURCE_RATE, TOTAL_BURST};
    let mut s = Sim::new();
    let garbage = [0x01u8, 0x00, 0x00, 0x00, 0xff];
    let from = SocketAddr::new(A, A_PORT);
    for _ in 0..1_000 {
        s.b.handle_datagram(s.now, B, from, &garbage, false);
    }
    assert_eq!(std::iter::from_fn(|| s.b.poll_transmit()).count(), PER_SOURCE_BURST as usize);
    assert_eq!(s.b.stats.decode_errors, 1_000);
    assert_eq!(s.b.stats.errors_suppressed, 1_000 - u64::from(PER_SOURCE_BURST));
    let later = s.now + Duration::from_secs(2);
    for _ in 0..1_000 {
        s.b.handle_datagram(later, B, from, &garbage, false);
    }
    assert_eq!(std::iter::from_fn(|| s.b.poll_transmit()).count(), 2 * PER_SOURCE_RATE as usize);
    // A flood from 10,000 forged sources.
    let t = s.now + Duration::from_secs(60);
    for i in 0..10_000u32 {
        let forged = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc613_0000 + i)), 270);
        s.b.handle_datagram(t, B, forged, &garbage, false);
    }
    assert_eq!(std::iter::from_fn(|| s.b.poll_transmit()).count(), TOTAL_BURST as usize);
}

#[test]
fn data_without_routing_state_is_refused() {
    let mut s = Sim::new();
    let mut d = Message::new(MessageType::Data, NSLPID, 5);
    d.mri = Some(mri());
    d.session = Some(sid(1));
    d.nslp_data = Some(b"DATA");
    let bytes = d.encode(Encapsulation::DMode).expect("encodes");
    s.b.handle_datagram(s.now, B, SocketAddr::new(A, A_PORT), &bytes, false);
    assert!(Sim::events(&mut s.b).is_empty());
    let t = s.b.poll_transmit().expect("error sent");
    let (m, _) = wire::decode(&t.payload).expect("decodes");
    assert_eq!(m.error.map(|e| e.code), Some(ErrorCode::NoRoutingState));
    assert_eq!(
        s.b.send(s.now, B, Toward::Origin, sid(1), mri(), b"RESP".to_vec(), None, &mut s.rng),
        Err(SendError::NoRoutingState)
    );
}

#[test]
fn routing_state_expires_unless_refreshed() {
    let mut s = Sim::new();
    s.a_sends(b"SETP");
    let start = s.now;
    s.run_until(start + Duration::from_secs(1));
    Sim::events(&mut s.b);
    // Past half the validity, a send refreshes by a new handshake.
    s.run_until(start + Duration::from_secs(20));
    s.log.clear();
    s.a_sends(b"RFSH");
    s.run_until(start + Duration::from_secs(21));
    assert_eq!(s.log.first().map(|(_, k)| *k), Some(MessageType::Query));
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::Received { data, .. }] if data == b"RFSH"));
    // 30 s after the refresh, both sides drop the state on their own.
    s.run_until(start + Duration::from_secs(52));
    assert_eq!(s.b.routing().len(), 0);
    assert_eq!(s.a.routing().len(), 0);
    assert!(matches!(Sim::events(&mut s.b).as_slice(), [Event::RoutingStateExpired { .. }]));
}

#[test]
fn hop_count_runs_out_with_an_error() {
    let mut s = Sim::new();
    assert_eq!(
        s.a.send(s.now, A, Toward::Target, sid(1), mri(), vec![], Some(0), &mut s.rng),
        Err(SendError::HopLimit)
    );
    s.a.send(s.now, A, Toward::Target, sid(1), mri(), vec![], Some(1), &mut s.rng).expect("send");
    let mut q = s.a.poll_transmit().expect("query").payload;
    *q.get_mut(5).expect("hops") = 0;
    s.b.handle_datagram(s.now, B, SocketAddr::new(A, A_PORT), &q, true);
    let t = s.b.poll_transmit().expect("error");
    let (m, _) = wire::decode(&t.payload).expect("decodes");
    assert_eq!(m.error.as_ref().map(|e| e.code), Some(ErrorCode::HopLimitExceeded));
    // The querier hears it and stops querying.
    s.a.handle_datagram(s.now, A, SocketAddr::new(B, GIST_PORT), &t.payload, false);
    let ev = Sim::events(&mut s.a);
    assert!(matches!(ev.as_slice(), [Event::NoPeer { .. }, Event::PeerError { .. }]), "{ev:?}");
}

#[test]
fn other_nslps_and_garbage_in_transit_pass_on() {
    let mut s = Sim::new();
    let mut q = Message::new(MessageType::Query, 0x0001, 16);
    q.mri = Some(mri());
    q.session = Some(sid(3));
    q.nli = Some(Nli { ip_ttl: 64, validity_ms: 1, peer_identity: vec![], interface: A });
    q.query_cookie = Some(&[1, 2, 3, 4]);
    let other = q.encode(Encapsulation::QMode).expect("encodes");
    let from = SocketAddr::new(A, A_PORT);
    assert_eq!(s.b.handle_datagram(s.now, B, from, &other, true), Disposition::PassOn);
    assert_eq!(s.b.handle_datagram(s.now, B, from, b"\x4e\x04\xbd\xa5junk", true), Disposition::PassOn);
    assert!(s.b.poll_transmit().is_none(), "nothing answered for traffic in transit");
    // Addressed to us, garbage gets a header parse error.
    assert_eq!(s.b.handle_datagram(s.now, B, from, &[1, 0, 0, 9], false), Disposition::Consumed);
    let t = s.b.poll_transmit().expect("error");
    let (m, _) = wire::decode(&t.payload).expect("decodes");
    assert_eq!(m.error.map(|e| e.code), Some(ErrorCode::CommonHeaderParse));
}

#[test]
fn upstream_mris_query_the_flow_source() {
    let up = Mri::between(T, A).reversed_direction();
    assert_eq!(up.direction, Direction::Upstream);
    assert_eq!(up.query_target(), T);
}

/// A Q-mode Query sent straight to a node for a flow that ends elsewhere —
/// a request relayed to an appliance off its path, to have it answer — is
/// dropped without an answer (an Error would reflect); intercepted on the
/// path, or for a flow that ends at the node, the same Query is answered.
#[test]
fn a_query_sent_to_this_node_for_a_flow_ending_elsewhere_is_dropped() {
    let mut s = Sim::new();
    let from = SocketAddr::new(A, A_PORT);
    s.a_sends(b"SETP");
    let q = s.a.poll_transmit().expect("query");
    assert_eq!(s.b.handle_datagram(s.now, B, from, &q.payload, false), Disposition::Consumed);
    assert!(s.b.poll_transmit().is_none(), "no Response, no Error");
    assert_eq!(s.b.stats.queries_off_path, 1);
    // On the path, it is answered.
    s.b.handle_datagram(s.now, B, from, &q.payload, true);
    assert!(s.b.poll_transmit().is_some(), "a Response");
    // Addressed to T, the flow's end, T would answer it.
    let mut t = Node::new(Config::new(NSLPID, "T"), s.now, &mut s.rng);
    t.handle_datagram(s.now, T, from, &q.payload, false);
    assert!(t.poll_transmit().is_some(), "the flow's end answers");
    assert_eq!(t.stats.queries_off_path, 0);
}
