//! The `limiter` and `recent` imports: leaky buckets and a set of recent
//! keys, shared by all instances of one module (building blocks). The
//! kernel spreads a module's packets over several NFQUEUE workers, each
//! with its own instance; a rate the module enforces (RFC 7415's) must hold
//! for the module as a whole, and a response must be recognised whichever
//! worker saw its request — so both live here, behind one lock per module,
//! not in any instance.
//!
//! Written here rather than taken from `governor`: RFC 7415 §7.2 asks for
//! two priorities draining one bucket with two tolerances, which a
//! `governor` limiter (one quota per limiter) cannot express.

use super::HostState;
use super::netserv::module::{limiter, recent};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// Keys one module may use.
pub const MAX_BUCKETS: usize = 64;

/// RFC 7415 §7.2's state: the counter X and the last conformance time, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    x: u64,
    lct: u64,
}

impl Bucket {
    /// One arrival at `ta` (ns).
    fn conform(&mut self, ta: u64, interval: u64, tolerance: u64) -> bool {
        // X' = X - (ta - LCT), at least 0.
        let drained = self.x.saturating_sub(ta.saturating_sub(self.lct));
        if drained > tolerance {
            return false;
        }
        self.x = drained.saturating_add(interval);
        self.lct = ta;
        true
    }
}

/// Keys one module's `recent` set holds (oldest out first): the overload
/// module keeps a few per request it judges, and must still recall a passed
/// INVITE when its last retransmission comes, 32 s on, under a surge of
/// some 1,500 requests a second. About 2 MiB of host memory at most.
pub const MAX_RECENT: usize = 65_536;

/// A module's buckets and recent keys; one `Arc` of it is shared by its instances.
#[derive(Debug)]
pub struct Buckets {
    origin: Instant,
    map: Mutex<HashMap<u32, Bucket>>,
    recent: Mutex<(VecDeque<u64>, HashSet<u64>)>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self { origin: Instant::now(), map: Mutex::new(HashMap::new()), recent: Mutex::default() }
    }
}

impl Buckets {
    /// Whether one request conforms to bucket `key` now.
    pub fn conform(&self, key: u32, interval_ns: u64, tolerance_ns: u64) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.conform_at(key, now, interval_ns, tolerance_ns)
    }

    fn conform_at(&self, key: u32, now_ns: u64, interval_ns: u64, tolerance_ns: u64) -> bool {
        let mut map = self.map.lock();
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            return false;
        }
        map.entry(key).or_default().conform(now_ns, interval_ns, tolerance_ns)
    }

    pub fn reset(&self, key: u32) {
        self.map.lock().remove(&key);
    }

    pub fn remember(&self, key: u64) {
        let mut guard = self.recent.lock();
        let (order, set) = &mut *guard;
        if !set.insert(key) {
            return;
        }
        if order.len() >= MAX_RECENT
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        order.push_back(key);
    }

    pub fn recalls(&self, key: u64) -> bool {
        self.recent.lock().1.contains(&key)
    }
}

impl recent::Host for HostState {
    fn remember(&mut self, key: u64) {
        self.buckets.remember(key);
    }

    fn contains(&mut self, key: u64) -> bool {
        self.buckets.recalls(key)
    }
}

impl limiter::Host for HostState {
    fn conform(&mut self, key: u32, interval_ns: u64, tolerance_ns: u64) -> bool {
        self.buckets.conform(key, interval_ns, tolerance_ns)
    }

    fn reset(&mut self, key: u32) {
        self.buckets.reset(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_rate_with_no_tolerance_admits_one_request_per_interval() {
        let b = Buckets::default();
        // 100 requests a second: T = 10 ms. Arrivals every 1 ms for 1 s.
        let admitted = (0..1000u64).filter(|i| b.conform_at(1, i * MS, 10 * MS, 0)).count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn tolerance_admits_a_burst_then_the_rate() {
        let b = Buckets::default();
        // T = 10 ms, tau = 40 ms: five at once (X' = 0, 10, 20, 30, 40), then no more.
        let burst = (0..10).filter(|_| b.conform_at(1, 0, 10 * MS, 40 * MS)).count();
        assert_eq!(burst, 5);
        assert!(!b.conform_at(1, 5 * MS, 10 * MS, 40 * MS));
        assert!(b.conform_at(1, 10 * MS, 10 * MS, 40 * MS), "10 ms later one fits again");
    }

    #[test]
    fn two_priorities_share_a_bucket_with_two_tolerances() {
        let b = Buckets::default();
        let (t, low, high) = (10 * MS, 20 * MS, 60 * MS);
        let mut low_ok = 0;
        let mut high_ok = 0;
        // 1,000 low- and 1,000 high-priority requests over 1 s; 100/s fit.
        for i in 0..1000u64 {
            low_ok += usize::from(b.conform_at(1, i * MS, t, low));
            high_ok += usize::from(b.conform_at(1, i * MS, t, high));
        }
        assert!(low_ok + high_ok <= 100 + 7, "the rate holds for both: {low_ok} + {high_ok}");
        assert!(high_ok > low_ok * 5, "high priority gets most when both press: {high_ok} vs {low_ok}");
    }

    #[test]
    fn recent_keys_are_shared_and_the_oldest_goes() {
        let b = Buckets::default();
        for k in 0..MAX_RECENT as u64 {
            b.remember(k);
        }
        assert!(b.recalls(0) && b.recalls(MAX_RECENT as u64 - 1));
        b.remember(0);
        b.remember(u64::MAX);
        assert!(!b.recalls(0), "the oldest went (remembering it again did not refresh it)");
        assert!(b.recalls(1) && b.recalls(u64::MAX));
    }

    #[test]
    fn keys_are_bounded_and_reset_empties_one() {
        let b = Buckets::default();
        for k in 0..MAX_BUCKETS as u32 {
            assert!(b.conform_at(k, 0, MS, 0));
        }
        assert!(!b.conform_at(999, 0, MS, 0), "a key past the cap never conforms");
        assert!(!b.conform_at(0, 0, MS, 0), "full");
        b.reset(0);
        assert!(b.conform_at(0, 0, MS, 0), "empty again");
    }
}
