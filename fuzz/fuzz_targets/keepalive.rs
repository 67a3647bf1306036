//! The KeepAlive module's logic on arbitrary payloads: never panics, and every
//! SIP answer it produces is itself a valid 200 response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_keepalive::{Action, Config, handle};
use netserv_sip_scan::{EMPTY_HEADER, StartLine, parse_datagram};

fuzz_target!(|data: &[u8]| {
    let cfg = Config::default();
    let src = "198.18.1.10:40000".parse().expect("addr");
    let dst = "198.18.2.20:5060".parse().expect("addr");
    if let (Action::Reply(bytes), kind) = handle(&cfg, src, dst, data) {
        if matches!(kind, netserv_keepalive::Kind::Notify | netserv_keepalive::Kind::Options) {
            let mut h = [EMPTY_HEADER; 64];
            let msg = parse_datagram(&bytes, &mut h).expect("answers parse");
            assert!(matches!(msg.start, StartLine::Response { code: 200, .. }));
        }
    }
});
