//! The STUN codec on arbitrary bytes: never panics; a parsed message's
//! XOR-MAPPED-ADDRESS re-encodes to a message that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_stun_wire::{Builder, Class, METHOD_BINDING, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = (m.class(), m.method(), m.attributes().count());
        if let Some(addr) = m.xor_mapped_address() {
            let out = Builder::new(Class::Success, METHOD_BINDING, m.transaction_id()).xor_mapped_address(addr).finish_with_fingerprint();
            let back = Message::parse(&out).expect("own encoding parses");
            assert_eq!(back.xor_mapped_address(), Some(addr));
        }
    }
});
