//! A tenant's relay ports: the range the operator gave it, handed out one
//! at a time (RFC 8656 EVEN-PORT: an even one, optionally holding the next
//! one for a RESERVATION-TOKEN), and back when the allocation ends.
//!
//! Free ports are taken from the front of a queue and returned to its back,
//! so a port just freed is the last to be reused (a late packet for the old
//! allocation does not reach a new one).

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;

/// A port held for a later Allocate with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reservation {
    port: u16,
    expires_ms: u64,
}

/// How long a reserved port is held (RFC 8656 §7.2 suggests about 30 s).
pub const RESERVATION_MS: u64 = 30_000;

#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    free: VecDeque<u16>,
    /// Whether each port of the range is in `free` (O(1) membership: a
    /// mass expiry returns thousands of ports).
    is_free: Vec<bool>,
    reserved: BTreeMap<u64, Reservation>,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let n = range.clone().count();
        Self { free: range.clone().collect(), is_free: vec![true; n], range, reserved: BTreeMap::new() }
    }

    fn slot(&mut self, port: u16) -> Option<&mut bool> {
        let i = usize::from(port.checked_sub(*self.range.start())?);
        self.is_free.get_mut(i)
    }

    fn free_now(&self, port: u16) -> bool {
        port.checked_sub(*self.range.start()).and_then(|i| self.is_free.get(usize::from(i))).copied().unwrap_or(false)
    }

    fn remove_at(&mut self, at: usize) -> Option<u16> {
        let port = self.free.remove(at)?;
        if let Some(s) = self.slot(port) {
            *s = false;
        }
        Some(port)
    }

    /// No ports at all (a tenant without `relay_ports`: it allocates nothing).
    pub fn empty() -> Self {
        Self { free: VecDeque::new(), is_free: Vec::new(), range: 1..=1, reserved: BTreeMap::new() }
    }

    pub fn capacity(&self) -> usize {
        self.is_free.len()
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// A free port (an even one when asked).
    pub fn take(&mut self, even: bool) -> Option<u16> {
        let at = if even { self.free.iter().position(|p| p % 2 == 0)? } else { 0 };
        self.remove_at(at)
    }

    /// An even port with its odd neighbour free too: the even one to use
    /// now, the odd one held under `token` until `now_ms + RESERVATION_MS`.
    pub fn take_pair(&mut self, token: u64, now_ms: u64) -> Option<u16> {
        let at = self.free.iter().position(|p| p % 2 == 0 && p.checked_add(1).is_some_and(|o| self.free_now(o)))?;
        let even = self.remove_at(at)?;
        let odd = even + 1;
        self.free.retain(|p| *p != odd);
        if let Some(s) = self.slot(odd) {
            *s = false;
        }
        self.reserved.insert(token, Reservation { port: odd, expires_ms: now_ms + RESERVATION_MS });
        Some(even)
    }

    /// The port held under `token`, if it is still held.
    pub fn redeem(&mut self, token: u64, now_ms: u64) -> Option<u16> {
        let r = self.reserved.remove(&token)?;
        if r.expires_ms < now_ms {
            self.give_back(r.port);
            return None;
        }
        Some(r.port)
    }

    pub fn give_back(&mut self, port: u16) {
        if let Some(s) = self.slot(port)
            && !*s
        {
            *s = true;
            self.free.push_back(port);
        }
    }

    /// Frees reservations nobody redeemed in time.
    pub fn expire(&mut self, now_ms: u64) {
        let stale: Vec<u64> = self.reserved.iter().filter(|(_, r)| r.expires_ms < now_ms).map(|(t, _)| *t).collect();
        for t in stale {
            if let Some(r) = self.reserved.remove(&t) {
                self.give_back(r.port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_range_and_a_freed_one_is_reused_last() {
        let mut p = PortPool::new(50_000..=50_002);
        assert_eq!(p.capacity(), 3);
        assert_eq!(p.take(false), Some(50_000));
        assert_eq!(p.take(false), Some(50_001));
        p.give_back(50_000);
        assert_eq!(p.take(false), Some(50_002));
        assert_eq!(p.take(false), Some(50_000));
        assert_eq!(p.take(false), None, "exhausted");
        p.give_back(9);
        assert_eq!(p.available(), 0, "a port outside the range is not taken in");
        let mut none = PortPool::empty();
        assert_eq!((none.capacity(), none.take(false)), (0, None));
        none.give_back(1);
        assert_eq!(none.available(), 0);
    }

    #[test]
    fn even_ports_and_reservations() {
        let mut p = PortPool::new(50_001..=50_005);
        assert_eq!(p.take(true), Some(50_002));
        // 50_004 and 50_005 are a free pair.
        assert_eq!(p.take_pair(7, 0), Some(50_004));
        assert_eq!(p.take(false), Some(50_001));
        assert_eq!(p.take(false), Some(50_003));
        assert_eq!(p.take(false), None, "50_005 is held");
        assert_eq!(p.redeem(8, 0), None, "unknown token");
        assert_eq!(p.redeem(7, 10), Some(50_005));
        // A reservation not redeemed in time goes back.
        let mut p = PortPool::new(50_000..=50_001);
        assert_eq!(p.take_pair(1, 0), Some(50_000));
        p.expire(RESERVATION_MS + 1);
        assert_eq!(p.take(false), Some(50_001));
        assert_eq!(p.redeem(1, RESERVATION_MS + 2), None);
    }
}
