//! The SIP scanner on arbitrary bytes: never panics; whatever parses as a
//! datagram also parses as a complete stream message of the same length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_sip_scan::{EMPTY_HEADER, Status, first_via, name_addr_tag, parse_datagram, parse_stream, unfold};

fuzz_target!(|data: &[u8]| {
    let mut headers = [EMPTY_HEADER; 32];
    if let Ok(msg) = parse_datagram(data, &mut headers) {
        let _ = msg.check_semantics();
        let mut out = Vec::new();
        for h in msg.headers {
            unfold(h.value, &mut out);
            let _ = first_via(h.value);
            let _ = name_addr_tag(h.value);
        }
    }
    let mut headers = [EMPTY_HEADER; 32];
    if let Ok(Status::Complete(_, used)) = parse_stream(data, &mut headers) {
        assert!(used <= data.len());
    }
});
