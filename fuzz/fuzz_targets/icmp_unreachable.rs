//! ICMP messages any host can send this one: parsing never panics, and
//! whatever it takes for an unreachable GIST datagram quotes UDP port 270.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = netserv_shell::icmp::parse_unreachable(data) {
        assert_eq!(q.destination.port(), 270);
    }
});
