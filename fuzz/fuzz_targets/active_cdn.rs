//! The ActiveCDN module's inputs from the network: a client's path (its
//! keys, bypass and denials) and an origin's HTML page (the banner). Nothing
//! panics; a page gains exactly the banner, and nothing of it is lost.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_active_cdn::{Config, on_request, on_response, with_banner};

fuzz_target!(|data: &[u8]| {
    let cfg = Config::from_properties([("banner", "<b>edge</b>"), ("bypass", "/api/"), ("key_prefixes", "/")])
        .expect("static properties");
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = on_request(&cfg, path);
    }
    let out = with_banner(data, b"<b>edge</b>");
    assert_eq!(out.len(), data.len() + 11);
    let _ = on_response(&cfg, 200, Some(data));
});
