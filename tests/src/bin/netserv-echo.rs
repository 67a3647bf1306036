//! `netserv-echo`: a UDP server that answers every datagram with its own bytes,
//! for a bounded time. The latency benchmark's far end.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bind = args.get(1).expect("usage: netserv-echo ip:port duration-ms");
    let duration = Duration::from_millis(args.get(2).and_then(|d| d.parse().ok()).unwrap_or(10_000).min(600_000));
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 65536];
    while start.elapsed() < duration {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(buf.get(..n).unwrap_or_default(), from);
        }
    }
}
