//! A GIST node driven as a state machine by datagrams from the network: each
//! chunk of the input is one datagram (from one of a few sources, addressed
//! or intercepted, a little later than the last), with timeouts and ICMP in
//! between. Nothing panics, and the node's bounds hold whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_gist::core::{Config, Node};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Deterministic bytes for the node's secret and session ids.
struct Counter(u64);

impl rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut cfg = Config::new(0xf001, "fuzz");
    cfg.max_routing_states = 8;
    cfg.max_pending_queries = 8;
    let mut node = Node::new(cfg, start, &mut Counter(7));
    let local = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
    let mut now = start;
    let mut rest = data;
    // Each datagram: [control, length, bytes...].
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(n);
        rest = after;
        now += Duration::from_millis(u64::from(control & 0x0f) * 700);
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, control >> 6)), 270);
        match (control >> 4) & 0x03 {
            0 => {
                let _ = node.handle_datagram(now, local, from, datagram, false);
            }
            1 => {
                let _ = node.handle_datagram(now, local, from, datagram, true);
            }
            2 => node.handle_timeout(now),
            _ => node.handle_icmp_unreachable(from.ip()),
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        assert!(node.routing().len() <= 8, "routing state past its bound");
        assert!(node.pending_queries() <= 8, "pending queries past their bound");
    }
});
