//! How many GIST Errors the node sends: a token bucket per source address
//! and one for all sources together. An Error answers a datagram anyone can
//! forge, from any address, so unthrottled it would make the node a
//! reflector towards whoever's address the forger wrote in (and its own
//! uplink a victim of its own answers).
//!
//! Hand-written, not `governor`: the node is sans-IO and takes the time as an
//! argument; governor's limiters read a clock of their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Errors per second, and the burst, towards one source address.
pub const PER_SOURCE_RATE: u32 = 5;
pub const PER_SOURCE_BURST: u32 = 10;
/// Errors per second, and the burst, towards all sources together.
pub const TOTAL_RATE: u32 = 200;
pub const TOTAL_BURST: u32 = 400;
/// Sources tracked at once; past it, idle ones are forgotten, and a source
/// that finds no room is held to what the total bucket gives a new one: none
/// until room is made.
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst), at: now }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(rate)).min(f64::from(burst));
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct ErrorLimiter {
    sources: HashMap<IpAddr, Bucket>,
    total: Option<Bucket>,
}

impl ErrorLimiter {
    pub(crate) fn new() -> Self {
        Self { sources: HashMap::new(), total: None }
    }

    /// Whether an Error may go to `to` now; takes a token from both buckets if so.
    pub(crate) fn allow(&mut self, to: IpAddr, now: Instant) -> bool {
        let total = self.total.get_or_insert_with(|| Bucket::full(TOTAL_BURST, now));
        total.refill(TOTAL_RATE, TOTAL_BURST, now);
        if total.tokens < 1.0 {
            return false;
        }
        if !self.sources.contains_key(&to) && self.sources.len() >= MAX_SOURCES {
            // A bucket refilled to its burst says nothing a new one would not.
            let idle = Duration::from_secs_f64(f64::from(PER_SOURCE_BURST) / f64::from(PER_SOURCE_RATE));
            self.sources.retain(|_, b| now.saturating_duration_since(b.at) < idle);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let source = self.sources.entry(to).or_insert_with(|| Bucket::full(PER_SOURCE_BURST, now));
        source.refill(PER_SOURCE_RATE, PER_SOURCE_BURST, now);
        if !source.take() {
            return false;
        }
        total.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The tests' epoch; every later instant is derived from it.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i))
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let (mut l, t0) = (ErrorLimiter::new(), t0());
        let sent = (0..100).filter(|_| l.allow(ip(1), t0)).count();
        assert_eq!(sent, PER_SOURCE_BURST as usize);
        // One second later: the rate's worth, no more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| l.allow(ip(1), t1)).count(), PER_SOURCE_RATE as usize);
        // Another source is not held back by the first.
        assert!(l.allow(ip(2), t1));
    }

    #[test]
    fn many_sources_together_get_the_total_only() {
        let (mut l, t0) = (ErrorLimiter::new(), t0());
        let sent = (0..2_000).filter(|i| l.allow(ip(*i), t0)).count();
        assert_eq!(sent, TOTAL_BURST as usize);
        let t1 = t0 + Duration::from_secs(1);
        let sent = (2_000..4_000).filter(|i| l.allow(ip(*i), t1)).count();
        assert_eq!(sent, TOTAL_RATE as usize);
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let (mut l, t0) = (ErrorLimiter::new(), t0());
        for i in 0..50_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            let _ = l.allow(ip(i), now);
            assert!(l.sources.len() <= MAX_SOURCES);
        }
    }
}
