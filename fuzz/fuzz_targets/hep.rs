//! HEP datagrams (from Kamailio, or anyone who can reach the plugin's HEP
//! port): decoding and SIP classification never panic, and what decodes
//! re-encodes to bytes that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_sip_plugin::{hep, observe};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = hep::decode(data) {
        let rule = observe::KeepaliveRule {
            server: h.destination.ip(),
            domains: vec!["voip.example".into()],
            notify: true,
            options: true,
        };
        let _ = observe::classify(&h, &rule);
        let again = hep::encode(&h);
        let back = hep::decode(&again).expect("re-encoded HEP decodes");
        assert_eq!(back.payload, h.payload);
        assert_eq!(back.source, h.source);
    }
});
