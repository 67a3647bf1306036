//! What a TURN client controls of its credentials: the USERNAME (a REST
//! username's expiry is read from it) and the NONCE it echoes. Neither may
//! panic, and no nonce the relay did not issue for that client verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_media_relay::credentials::{Nonces, rest_expiry, rest_keys};

fuzz_target!(|data: &[u8]| {
    let client = "198.18.1.10:40000".parse().expect("addr");
    let nonces = Nonces::new([3; 32], 600);
    assert!(
        nonces.check(data, client, 1_700_000_000).is_err()
            || data == nonces.issue(client, 1_700_000_000 - 600).as_bytes()
    );
    if let Ok(user) = std::str::from_utf8(data) {
        let _ = rest_expiry(user, ':');
        let _ = rest_keys(&[b"secret"], user, "realm", ':', 1_700_000_000);
    }
});
