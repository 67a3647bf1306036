//! Measures the keepalive logic natively (no wasm, no host): one NOTIFY
//! keep-alive answered per iteration. `cargo run --release -p netserv-keepalive
//! --example handle_cost [payload-file]`; `N` sets the iteration count.

use netserv_keepalive::{Config, handle};
use std::time::Instant;

const NOTIFY: &[u8] =
    b"NOTIFY sip:198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-bench-0001;rport\r\n\
From: <sip:phone-0001@198.18.1.10>;tag=bench0001\r\nTo: <sip:198.18.2.20:5060>\r\nCall-ID: bench-0001@198.18.1.10\r\n\
CSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn main() {
    let payload = std::env::args().nth(1).map(|p| std::fs::read(p).expect("reading the payload file"));
    let payload = payload.as_deref().unwrap_or(NOTIFY);
    let cfg = Config::from_properties(std::iter::empty()).expect("default config");
    let (from, to) = ("198.18.1.10:5061".parse().expect("addr"), "198.18.2.20:5060".parse().expect("addr"));
    let n: u32 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(handle(&cfg, from, to, std::hint::black_box(payload)));
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n) * 1e9;
    println!("keepalive handle(): {per:.0} ns per packet");
}
