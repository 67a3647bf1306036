//! The overload-control module's logic on arbitrary payloads, as requests to
//! the server and as responses from it, under loss and rate control: never
//! panics; every answer it sends is a valid 503 response, and every request
//! it rewrites is still a valid SIP message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_overload_se::{Action, Algorithm, Config, Report, Se, Shared};
use netserv_sip_scan::{EMPTY_HEADER, StartLine, parse_datagram};

/// A bucket that admits every other request (both answers get exercised),
/// and a set that remembers everything.
struct Alternate(bool, std::collections::HashSet<u64>);

impl Shared for Alternate {
    fn conform(&mut self, _key: u32, _interval: u64, _tolerance: u64) -> bool {
        self.0 = !self.0;
        self.0
    }
    fn reset(&mut self, _key: u32) {}
    fn remember(&mut self, key: u64) {
        self.1.insert(key);
    }
    fn contains(&mut self, key: u64) -> bool {
        self.1.contains(&key)
    }
}

fuzz_target!(|data: &[u8]| {
    let phone = "198.18.1.10:40000".parse().expect("addr");
    let server = "198.18.2.20:5060".parse().expect("addr");
    for algorithm in [Algorithm::Loss, Algorithm::Rate] {
        let mut se =
            Se::new(Config { retry_after: Some(1), ..Config::default() }, Alternate(false, Default::default()));
        se.report(0, server, Report { algorithm, oc: 50, validity_ms: 10_000, seq: 1 });
        for now in [1_000_000, 2_000_000] {
            match se.packet(now, phone, server, data).0 {
                Action::Reply(bytes) => {
                    let mut h = [EMPTY_HEADER; 64];
                    let msg = parse_datagram(&bytes, &mut h).expect("answers parse");
                    assert!(matches!(msg.start, StartLine::Response { code: 503, .. }));
                }
                Action::Replace(bytes) => {
                    let mut h = [EMPTY_HEADER; 64];
                    parse_datagram(&bytes, &mut h).expect("a rewritten request still parses");
                }
                Action::Pass | Action::Absorb => {}
            }
            let _ = se.packet(now, server, phone, data);
        }
    }
});
