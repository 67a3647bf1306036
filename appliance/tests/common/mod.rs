//! What the appliance's integration tests share: the built modules and
//! packets to feed them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

/// A module built by `scripts/build.sh` (wasm32-wasip2, release).
pub fn module(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/wasm32-wasip2/release/{name}.wasm"));
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the wasm modules first: scripts/build.sh)", p.display()))
}

pub const PHONE: &str = "198.18.1.10:5061";
pub const SERVER: &str = "198.18.2.20:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

pub fn udp(payload: &[u8]) -> Vec<u8> {
    netserv_appliance::dataplane::packet::build_udp(addr(PHONE), addr(SERVER), 64, payload).expect("packet")
}

pub const NOTIFY: &[u8] =
    b"NOTIFY sip:198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-t-0001;rport\r\n\
From: <sip:phone@198.18.1.10>;tag=t1\r\nTo: <sip:198.18.2.20:5060>\r\nCall-ID: t-0001@198.18.1.10\r\n\
CSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

pub const REGISTER: &[u8] = b"REGISTER sip:198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-t-reg;rport\r\n\
From: <sip:phone@198.18.2.20>;tag=t1\r\nTo: <sip:phone@198.18.2.20>\r\nCall-ID: t-reg@198.18.1.10\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:phone@198.18.1.10:5061>\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
