//! The `timers` import for packet modules: one-shot timers per instance,
//! which the NFQUEUE worker fires between batches (`dataplane::events`).

use super::HostState;
use super::netserv::module::timers;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Timers one instance may hold at once.
pub const MAX_TIMERS: usize = 64;
/// The longest a timer may be armed for: a day.
const MAX_AFTER: Duration = Duration::from_secs(86_400);

#[derive(Debug, Default)]
pub struct InstanceTimers {
    due: BTreeMap<u32, Instant>,
}

impl InstanceTimers {
    pub fn set(&mut self, id: u32, now: Instant, after: Duration) -> bool {
        if self.due.len() >= MAX_TIMERS && !self.due.contains_key(&id) {
            return false;
        }
        self.due.insert(id, now + after.min(MAX_AFTER));
        true
    }

    pub fn cancel(&mut self, id: u32) {
        self.due.remove(&id);
    }

    /// The earliest due time, if any.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Takes the timers due at `now` into `out` (disarmed: they are one-shot).
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<u32>) {
        out.clear();
        out.extend(self.due.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id));
        for id in out.iter() {
            self.due.remove(id);
        }
    }
}

impl timers::Host for HostState {
    fn set(&mut self, id: u32, after_ms: u64) -> bool {
        self.timers.set(id, Instant::now(), Duration::from_millis(after_ms))
    }

    fn cancel(&mut self, id: u32) {
        self.timers.cancel(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_when_due_and_rearming_moves_them() {
        let mut t = InstanceTimers::default();
        let now = Instant::now();
        assert!(t.set(1, now, Duration::from_millis(10)));
        assert!(t.set(2, now, Duration::from_millis(30)));
        assert!(t.set(1, now, Duration::from_millis(20)), "moved");
        let mut out = Vec::new();
        t.take_due(now + Duration::from_millis(15), &mut out);
        assert!(out.is_empty());
        t.take_due(now + Duration::from_millis(25), &mut out);
        assert_eq!(out, [1]);
        t.take_due(now + Duration::from_millis(25), &mut out);
        assert!(out.is_empty(), "one-shot");
        t.cancel(2);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn timers_are_capped_per_instance() {
        let mut t = InstanceTimers::default();
        let now = Instant::now();
        for id in 0..MAX_TIMERS as u32 {
            assert!(t.set(id, now, Duration::from_secs(1)));
        }
        assert!(!t.set(999, now, Duration::from_secs(1)));
        assert!(t.set(0, now, Duration::from_secs(2)), "an armed id can still move");
    }
}
