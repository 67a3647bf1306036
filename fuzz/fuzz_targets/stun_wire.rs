//! The STUN codec on arbitrary bytes: never panics; a parsed message's
//! XOR-MAPPED-ADDRESS re-encodes to a message that parses back to it; its
//! integrity check never panics and vouches for no more attributes than
//! the message has; integrity written over it verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_stun_wire::integrity::{Integrity, long_term_key_md5};
use netserv_stun_wire::turn::attr as turn;
use netserv_stun_wire::{Builder, Class, METHOD_BINDING, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = (m.class(), m.method(), m.attributes().count());
        // TURN's readers: a value or a named error, never a panic.
        let _ = (m.lifetime(), m.requested_transport(), m.channel_number(), m.data(), m.even_port());
        let _ =
            (m.reservation_token(), m.dont_fragment(), m.requested_address_family(), m.connection_id(), m.error_code());
        let _ = m.xor_addresses(turn::XOR_PEER_ADDRESS).count();
        let key = long_term_key_md5("user", "realm", "pass");
        let _ = m.verify_integrity(&key);
        assert!(m.authenticated_attributes().count() <= m.attributes().count());
        let signed =
            Builder::new(Class::Request, m.method() & 0x0fff, m.transaction_id()).message_integrity(&key).finish();
        assert_eq!(Message::parse(&signed).expect("own encoding parses").verify_integrity(&key), Ok(Integrity::Sha1));
        if let Some(addr) = m.xor_mapped_address() {
            let out = Builder::new(Class::Success, METHOD_BINDING, m.transaction_id())
                .xor_mapped_address(addr)
                .finish_with_fingerprint();
            let back = Message::parse(&out).expect("own encoding parses");
            assert_eq!(back.xor_mapped_address(), Some(addr));
        }
    }
});
