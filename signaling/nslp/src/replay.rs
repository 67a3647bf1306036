//! Replay protection for signed requests: a timestamp window and a cache of
//! the nonces seen within it. Time is passed in (ms since the Unix epoch).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("timestamp {skew_ms} ms outside the accepted window")]
    Stale { skew_ms: i64 },
    #[error("nonce already used")]
    Replayed,
    #[error("too many requests in the window to remember them all")]
    Full,
}

/// Accepts a (timestamp, nonce) once, while the timestamp is within `window`
/// of now. A nonce is remembered until its timestamp leaves the window, so
/// it can never be accepted twice. Bounded: when `max` nonces are live, new
/// requests are refused rather than old nonces forgotten.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    max: usize,
    seen: HashMap<[u8; 16], u64>,
    /// Nonces by the time they may be forgotten, soonest first: O(log n)
    /// whatever order the timestamps come in.
    order: BinaryHeap<Reverse<(u64, [u8; 16])>>,
}

impl ReplayGuard {
    pub fn new(window_ms: u64, max: usize) -> Self {
        Self { window_ms, max, seen: HashMap::new(), order: BinaryHeap::new() }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn check(&mut self, now_ms: u64, timestamp_ms: u64, nonce: [u8; 16]) -> Result<(), ReplayError> {
        let skew = i64::try_from(timestamp_ms).unwrap_or(i64::MAX) - i64::try_from(now_ms).unwrap_or(i64::MAX);
        if skew.unsigned_abs() > self.window_ms {
            return Err(ReplayError::Stale { skew_ms: skew });
        }
        self.evict(now_ms);
        if self.seen.contains_key(&nonce) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.max {
            return Err(ReplayError::Full);
        }
        let forget_at = timestamp_ms.saturating_add(self.window_ms);
        self.seen.insert(nonce, forget_at);
        self.order.push(Reverse((forget_at, nonce)));
        Ok(())
    }

    fn evict(&mut self, now_ms: u64) {
        while let Some(&Reverse((t, n))) = self.order.peek() {
            if t >= now_ms {
                break;
            }
            self.order.pop();
            self.seen.remove(&n);
        }
    }
}
