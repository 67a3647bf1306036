//! `netserv-echo`: a UDP server that answers every datagram with its own bytes,
//! for a bounded time. The latency and relay benchmarks' far end.
//!
//! It sleeps in `poll` and then drains the socket: under load one wake-up
//! serves every datagram that waits, so the echo (which shares the tester's
//! CPU with the clients) costs little per datagram and is not what limits a
//! benchmark.

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bind = args.get(1).expect("usage: netserv-echo ip:port duration-ms");
    let duration = Duration::from_millis(args.get(2).and_then(|d| d.parse().ok()).unwrap_or(10_000).min(1_800_000));
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let mut buf = [0u8; 65536];
    let wait = Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    while start.elapsed() < duration {
        let mut fds = [PollFd::new(&sock, PollFlags::IN)];
        if poll(&mut fds, Some(&wait)).unwrap_or(0) == 0 {
            continue;
        }
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(buf.get(..n).unwrap_or_default(), from);
        }
    }
}
