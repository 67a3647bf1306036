//! GIST datagrams from the network: decoding never panics, and whatever
//! decodes re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_gist::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok((m, enc)) = wire::decode(data) {
        let again = m.encode(enc).expect("a decoded message re-encodes");
        let (back, _) = wire::decode(&again).expect("re-encoded bytes decode");
        assert_eq!(back, m);
    }
});
