//! The NSLP node on a virtual clock: a requester, two appliances and a phone
//! on one path, datagrams moved by the test (quinn-proto's `Pair` style).
//!
//! ```text
//!   R (10.0.0.1, requester: GIST only) ── E1 (10.0.1.1) ── E2 (10.0.2.1) ── UA (10.0.3.2, no GIST)
//! ```
//!
//! A Q-mode Query travels the path towards its target and is intercepted by
//! the first appliance on the way; D-mode goes to the node it is addressed
//! to; what reaches R or UA as a Query is lost (they answer no Queries), so
//! the last appliance learns it is last by GIST's bounded retransmissions —
//! or by ICMP when a test says so.

use super::*;
use crate::sign;
use crate::wire::{Message, Request, RequestKind, Response, Status};
use ed25519_dalek::SigningKey;
use netserv_gist::wire::{self as gwire, Encapsulation, GIST_PORT, MessageType};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::net::Ipv4Addr;

const R: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const E1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
const E2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1));
const UA: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 3, 2));
const PATH: [IpAddr; 4] = [R, E1, E2, UA];
const UNIX_EPOCH_MS: u64 = 1_800_000_000_000;
const TENANT_SECRET: [u8; 32] = [7; 32];
const TENANT_B_SECRET: [u8; 32] = [8; 32];

fn sid(n: u8) -> SessionId {
    SessionId([n; 16])
}

/// One appliance's surroundings: two tenants, and one address (its own).
struct Here {
    me: IpAddr,
    tenant: VerifyingKey,
    tenant_b: VerifyingKey,
}

impl Env for Here {
    fn tenant_key(&self, user: &str) -> Option<VerifyingKey> {
        match user {
            "itsp-a" => Some(self.tenant),
            "itsp-b" => Some(self.tenant_b),
            _ => None,
        }
    }
    fn local_toward(&self, _peer: IpAddr) -> IpAddr {
        self.me
    }
}

struct Appliance {
    node: Node,
    env: Here,
    /// The actions it was asked for, not yet done.
    acts: Vec<(ActionId, Box<Verified<Request>>)>,
    events: Vec<Event>,
}

struct Sim {
    start: Instant,
    now: Instant,
    rng: ChaCha8Rng,
    r: gist::Node,
    e: [Appliance; 2],
    /// What reached R from downstream.
    answers: Vec<Response>,
    /// Queries lost at R or UA, by where they were lost.
    lost: Vec<IpAddr>,
    /// Answer ICMP port unreachable for Queries reaching UA.
    icmp_at_ua: bool,
}

impl Sim {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// A sim whose appliances' config `tune` changes.
    fn with(tune: impl Fn(&mut Config)) -> Self {
        // The simulation's epoch; every later instant is derived from it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let tenant = SigningKey::from_bytes(&TENANT_SECRET).verifying_key();
        let tenant_b = SigningKey::from_bytes(&TENANT_B_SECRET).verifying_key();
        let r = gist::Node::new(gist::Config::new(crate::NSLPID, "R"), now, &mut rng);
        let appliance = |id: &str, me: IpAddr, rng: &mut ChaCha8Rng| Appliance {
            node: Node::new(
                {
                    let mut c = Config::new(id);
                    tune(&mut c);
                    c
                },
                now,
                rng,
            ),
            env: Here { me, tenant, tenant_b },
            acts: Vec::new(),
            events: Vec::new(),
        };
        let e = [appliance("e1", E1, &mut rng), appliance("e2", E2, &mut rng)];
        Self { start: now, now, rng, r, e, answers: Vec::new(), lost: Vec::new(), icmp_at_ua: false }
    }

    fn time(&self) -> Time {
        let ms = u64::try_from(self.now.duration_since(self.start).as_millis()).unwrap_or(0);
        Time { now: self.now, unix_ms: UNIX_EPOCH_MS + ms }
    }

    fn index(ip: IpAddr) -> usize {
        PATH.iter().position(|p| *p == ip).expect("on the path")
    }

    /// R sends `req`'s bytes towards UA in session `s`.
    fn request(&mut self, s: SessionId, bytes: Vec<u8>) {
        let now = self.now;
        self.r.send(now, R, Toward::Target, s, Mri::between(R, UA), bytes, None, &mut self.rng).expect("R sends");
    }

    fn deliver(&mut self, from: IpAddr, t: Transmit) {
        let time = self.time();
        let src = SocketAddr::new(t.source_ip, GIST_PORT);
        if t.encapsulation == Encapsulation::QMode {
            // Along the path from the sender towards the Query's target; the
            // appliances between them may take it.
            let (at, to) = (Self::index(from), Self::index(t.destination.ip()));
            let between: Vec<usize> = if to > at { (at + 1..to).collect() } else { (to + 1..at).rev().collect() };
            for i in between {
                let a = &mut self.e[i - 1];
                if a.node.handle_datagram(time, &a.env, &mut self.rng, src, &t.payload, true) == Disposition::Consumed {
                    return;
                }
            }
            self.lost.push(t.destination.ip());
            if t.destination.ip() == UA
                && self.icmp_at_ua
                && let Some(a) = Self::index(from).checked_sub(1).and_then(|i| self.e.get_mut(i))
            {
                a.node.handle_icmp_unreachable(time, &a.env, &mut self.rng, UA);
            }
            return;
        }
        match Self::index(t.destination.ip()) {
            0 => {
                self.r.handle_datagram(time.now, R, src, &t.payload, false);
            }
            i @ 1..=2 => {
                let a = &mut self.e[i - 1];
                a.node.handle_datagram(time, &a.env, &mut self.rng, src, &t.payload, false);
            }
            _ => self.lost.push(t.destination.ip()),
        }
    }

    /// Moves every queued datagram and collects events; whether anything moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.r.poll_transmit() {
            moved = true;
            self.deliver(R, t);
        }
        for i in 0..2 {
            while let Some(t) = self.e[i].node.poll_transmit() {
                moved = true;
                self.deliver(PATH[i + 1], t);
            }
            while let Some(ev) = self.e[i].node.poll_event() {
                moved = true;
                if let Event::Act { action, request, .. } = &ev {
                    self.e[i].acts.push((action.clone(), request.clone()));
                }
                self.e[i].events.push(ev);
            }
        }
        while let Some(ev) = self.r.poll_event() {
            moved = true;
            if let gist::Event::Received { from: Toward::Target, data, .. } = ev
                && let Ok(Message::Response(r)) = wire::decode(&data)
            {
                self.answers.push(r);
            }
        }
        moved
    }

    /// Runs until nothing moves and no timer is due before `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..10_000 {
            while self.step() {}
            let next = [self.r.poll_timeout(), self.e[0].node.poll_timeout(), self.e[1].node.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    let time = self.time();
                    self.r.handle_timeout(time.now);
                    for a in &mut self.e {
                        a.node.handle_timeout(time, &a.env, &mut self.rng);
                    }
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("simulation did not settle");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Appliance `i` finishes its oldest action with `status`.
    fn finish(&mut self, i: usize, status: Status) {
        let time = self.time();
        let a = &mut self.e[i];
        let (action, _) = a.acts.remove(0);
        let id = a.node.cfg.node_id.clone();
        a.node.handle_done(time, &a.env, &mut self.rng, action, NodeEntry::new(id, status, "done"));
    }

    fn ids(r: &Response) -> Vec<(&str, Status)> {
        r.stack.iter().map(|e| (e.node_id.as_str(), e.status)).collect()
    }
}

/// A SETUP signed by the tenant (or by `key`), stamped at the sim's clock,
/// for the flow R -> UA.
fn signed(kind: RequestKind, id: u32, unix_ms: u64, nonce: u8, key: &SigningKey) -> Vec<u8> {
    signed_as("itsp-a", &Mri::between(R, UA), kind, id, unix_ms, nonce, key)
}

fn signed_as(user: &str, flow: &Mri, kind: RequestKind, id: u32, unix_ms: u64, nonce: u8, key: &SigningKey) -> Vec<u8> {
    let mut r = Request::new(kind, id, user, unix_ms, [nonce; 16]);
    r.module = Some("keepalive".into());
    sign::sign(&mut r, flow, key).expect("a flow on the wire");
    r.encode()
}

fn tenant() -> SigningKey {
    SigningKey::from_bytes(&TENANT_SECRET)
}

#[test]
fn the_response_stack_is_built_hop_by_hop_in_path_order() {
    let mut s = Sim::new();
    let unix = s.time().unix_ms;
    s.request(sid(1), signed(RequestKind::Setup, 1, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(50));
    // Both appliances act at once: the request went on before E1 finished.
    assert_eq!((s.e[0].acts.len(), s.e[1].acts.len()), (1, 1));
    assert!(s.answers.is_empty(), "nobody has answered yet");
    // E1 finishes first; it still waits for the rest of the path.
    s.finish(0, Status::Ok);
    s.finish(1, Status::InstallFailed);
    s.run_for(Duration::from_millis(50));
    assert!(s.answers.is_empty(), "E2 does not yet know it is the last node");
    // E2's Queries towards UA run out (0, 0.5, 1.5 s; given up at 3.5 s).
    s.run_for(Duration::from_secs(4));
    assert_eq!(s.lost.iter().filter(|ip| **ip == UA).count(), 3);
    assert!(s.e[1].events.iter().any(|e| matches!(e, Event::LastNode { icmp: false, .. })));
    let [answer] = s.answers.as_slice() else { panic!("one answer: {:?}", s.answers) };
    assert_eq!((answer.kind, answer.id), (RequestKind::Setup, 1));
    assert_eq!(Sim::ids(answer), [("e1", Status::Ok), ("e2", Status::InstallFailed)]);
    assert_eq!((s.e[0].node.pending(), s.e[1].node.pending()), (0, 0));
    assert_eq!(s.e[0].node.stats.responses_sent, 1);
}

#[test]
fn icmp_makes_the_last_node_answer_at_once() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    s.request(sid(1), signed(RequestKind::Probe, 2, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(10));
    s.finish(1, Status::Ok);
    s.finish(0, Status::Ok);
    s.run_for(Duration::from_millis(10));
    let [answer] = s.answers.as_slice() else { panic!("{:?}", s.answers) };
    assert_eq!(Sim::ids(answer), [("e1", Status::Ok), ("e2", Status::Ok)]);
    assert!(s.e[1].events.iter().any(|e| matches!(e, Event::LastNode { icmp: true, .. })));
}

#[test]
fn a_refused_request_is_answered_at_once_and_not_sent_on() {
    let mut s = Sim::new();
    let unix = s.time().unix_ms;
    let stranger = SigningKey::from_bytes(&[9; 32]);
    s.request(sid(1), signed(RequestKind::Setup, 3, unix, 1, &stranger));
    s.run_for(Duration::from_millis(50));
    let [answer] = s.answers.as_slice() else { panic!("{:?}", s.answers) };
    assert_eq!(Sim::ids(answer), [("e1", Status::BadSignature)]);
    assert_eq!(answer.stack[0].address, Some(E1));
    assert!(s.e[0].acts.is_empty() && s.e[1].events.is_empty(), "E2 never heard of it");
    assert_eq!(s.e[0].node.stats.refused, 1);
}

#[test]
fn replays_and_stale_requests_are_refused() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    let bytes = signed(RequestKind::Remove, 4, unix, 5, &tenant());
    s.request(sid(1), bytes.clone());
    s.run_for(Duration::from_millis(10));
    s.finish(0, Status::Ok);
    s.finish(1, Status::Ok);
    // The same signed bytes again, in a new session: E1 refuses the replay.
    s.request(sid(2), bytes);
    // And one stamped outside the window (60 s).
    s.request(sid(3), signed(RequestKind::Remove, 5, unix - 61_000, 6, &tenant()));
    s.run_for(Duration::from_millis(10));
    let statuses: Vec<_> = s.answers.iter().map(Sim::ids).collect();
    assert_eq!(
        statuses,
        [vec![("e1", Status::Ok), ("e2", Status::Ok)], vec![("e1", Status::Replay)], vec![("e1", Status::Stale)]]
    );
}

#[test]
fn a_request_signed_for_another_flow_is_refused_on_this_one() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    // Captured on its way to another phone, sent here towards UA.
    let other_phone = Mri::between(R, IpAddr::V4(Ipv4Addr::new(10, 0, 3, 3)));
    s.request(sid(1), signed_as("itsp-a", &other_phone, RequestKind::Setup, 1, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(10));
    assert!(s.e[0].acts.is_empty() && s.e[1].acts.is_empty(), "nothing acts");
    let statuses: Vec<_> = s.answers.iter().map(Sim::ids).collect();
    assert_eq!(statuses, [vec![("e1", Status::BadSignature)]]);
}

#[test]
fn a_tenant_that_fills_its_replay_guard_locks_out_only_itself() {
    let mut s = Sim::with(|c| c.replay_capacity = 2);
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    let flow = Mri::between(R, UA);
    let b = SigningKey::from_bytes(&TENANT_B_SECRET);
    for n in 1..=3u8 {
        s.request(sid(n), signed_as("itsp-a", &flow, RequestKind::Probe, u32::from(n), unix, n, &tenant()));
    }
    s.request(sid(4), signed_as("itsp-b", &flow, RequestKind::Probe, 4, unix, 4, &b));
    s.run_for(Duration::from_millis(10));
    for i in 0..2 {
        while !s.e[i].acts.is_empty() {
            s.finish(i, Status::Ok);
        }
    }
    s.run_for(Duration::from_millis(10));
    let mut statuses: Vec<_> = s.answers.iter().map(|r| (r.id, Sim::ids(r))).collect();
    statuses.sort_by_key(|(id, _)| *id);
    let ok = vec![("e1", Status::Ok), ("e2", Status::Ok)];
    assert_eq!(
        statuses,
        [(1, ok.clone()), (2, ok.clone()), (3, vec![("e1", Status::LimitExceeded)]), (4, ok)],
        "tenant B is served while tenant A's guard is full"
    );
}

#[test]
fn a_request_for_another_node_passes_through() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    let mut r = Request::new(RequestKind::Setup, 6, "itsp-a", unix, [1; 16]);
    r.node_id = Some("e2".into());
    sign::sign(&mut r, &Mri::between(R, UA), &tenant()).expect("sign");
    s.request(sid(1), r.encode());
    s.run_for(Duration::from_millis(10));
    assert!(s.e[0].acts.is_empty(), "E1 is not the node named");
    s.finish(1, Status::Ok);
    s.run_for(Duration::from_millis(10));
    let [answer] = s.answers.as_slice() else { panic!("{:?}", s.answers) };
    assert_eq!(Sim::ids(answer), [("e2", Status::Ok)]);
}

#[test]
fn trigger_turns_around_at_the_last_node_and_installs_on_the_way_back() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    s.request(sid(1), signed(RequestKind::Trigger, 7, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(10));
    // The forward leg passed E1 without acting; E2, the last, turned it
    // around and acts; the return leg (upstream) reached E1, which acts.
    let back = s.e[1].events.iter().find_map(|e| match e {
        Event::TurnedAround { session, return_session } if *session == sid(1) => Some(*return_session),
        _ => None,
    });
    let back = back.expect("E2 turned the TRIGGER around");
    assert_eq!(s.e[1].acts.len(), 1);
    let [(action, _)] = s.e[0].acts.as_slice() else { panic!("E1 acts once, on the return leg") };
    let key = &action.key;
    assert_eq!((key.0, key.1.direction), (back, Direction::Upstream));
    assert_eq!(key.1.query_target(), R);
    // The return leg's Queries towards R are lost (R answers none): E1 is
    // the last node on the return path and answers it after GIST gives up.
    s.finish(0, Status::Ok);
    s.finish(1, Status::Ok);
    s.run_for(Duration::from_secs(4));
    assert!(s.lost.contains(&R));
    let [answer] = s.answers.as_slice() else { panic!("{:?}", s.answers) };
    assert_eq!((answer.kind, answer.id), (RequestKind::Trigger, 7));
    // The forward leg's answer: E2's entry, then the return path's (E1's).
    assert_eq!(Sim::ids(answer), [("e2", Status::Ok), ("e1", Status::Ok)]);
    assert_eq!((s.e[0].node.pending(), s.e[1].node.pending()), (0, 0));
    assert!(s.e[1].node.return_legs.is_empty(), "the return leg is forgotten with its answer");
}

#[test]
fn a_trigger_answered_by_timeout_forgets_its_return_leg() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    s.request(sid(1), signed(RequestKind::Trigger, 9, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(10));
    assert_eq!(s.e[1].node.return_legs.len(), 1);
    // Nobody finishes: the forward leg is answered at its deadline, and
    // what the return leg would have answered has nowhere to go.
    s.run_for(Duration::from_secs(11));
    assert_eq!(s.answers.len(), 1);
    assert!(s.e[1].node.return_legs.is_empty());
    // The late results change nothing.
    s.finish(1, Status::Ok);
    s.finish(0, Status::Ok);
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.answers.len(), 1);
    assert_eq!((s.e[0].node.pending(), s.e[1].node.pending()), (0, 0));
}

#[test]
fn a_node_that_never_finishes_is_answered_for_after_the_timeout() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    let unix = s.time().unix_ms;
    s.request(sid(1), signed(RequestKind::Setup, 8, unix, 1, &tenant()));
    s.run_for(Duration::from_millis(10));
    s.finish(0, Status::Ok);
    // E2's action never ends: at its deadline (10 s) it answers without an
    // entry of its own, and E1's answer goes up with E1's alone.
    s.run_for(Duration::from_millis(9_900));
    assert!(s.answers.is_empty());
    s.run_for(Duration::from_millis(200));
    let [answer] = s.answers.as_slice() else { panic!("{:?}", s.answers) };
    assert_eq!(Sim::ids(answer), [("e1", Status::Ok)]);
    assert!(s.e[1].events.iter().any(|e| matches!(e, Event::TimedOut { .. })));
    // A late result changes nothing and costs nothing.
    s.finish(1, Status::Ok);
    s.run_for(Duration::from_millis(10));
    assert_eq!(s.answers.len(), 1);
    assert_eq!(s.e[1].node.pending(), 0);
}

#[test]
fn data_that_is_not_nslp_is_ignored() {
    let mut s = Sim::new();
    s.icmp_at_ua = true;
    s.request(sid(1), vec![0xde, 0xad, 0xbe, 0xef]);
    s.run_for(Duration::from_millis(10));
    assert!(s.answers.is_empty());
    assert!(s.e[0].events.iter().any(|e| matches!(e, Event::Ignored { .. })));
    assert_eq!(s.e[0].node.pending(), 0);
    // And GIST that is not a Query of ours passes on untouched.
    let time = s.time();
    let a = &mut s.e[0];
    let other = gwire::Message::new(MessageType::Query, 0x1234, 8).encode(Encapsulation::QMode);
    if let Some(bytes) = other {
        let d = a.node.handle_datagram(time, &a.env, &mut s.rng, SocketAddr::new(R, GIST_PORT), &bytes, true);
        assert_eq!(d, Disposition::PassOn);
    }
    let d = a.node.handle_datagram(time, &a.env, &mut s.rng, SocketAddr::new(R, GIST_PORT), b"not gist", true);
    assert_eq!(d, Disposition::PassOn);
}
