//! Control per receiving entity (the server's address and port): the
//! report in force, and the decision for each request under it.
//!
//! - **Loss** (RFC 7339): `oc` percent of the controllable requests are
//!   shed, initial ones first. The share is worked out from how many of each
//!   category arrived lately (counts decaying over ~1 s): initial requests
//!   lose up to all of theirs, and a priority request (in-dialog, emergency)
//!   is shed only once no initial request arrives any more — not here, and
//!   not at another instance, which marks its initial arrivals in the shared
//!   set (the host's workers each see some of the flows). So an emergency
//!   call passes whenever there is an ordinary one to shed instead, however
//!   high `oc` is. Which request goes is decided by error diffusion (a
//!   credit per category), not by a random draw: a guest has no randomness, and
//!   the shed fraction is then exact over any dozen requests.
//! - **Rate** (RFC 7415 §7.2): the host's shared leaky bucket, one per
//!   server, drained at `oc` requests a second; initial requests conform up
//!   to `burst` requests' worth of content, priority ones up to
//!   `burst_priority`, so they pass while initial ones are refused.

use crate::classify::Category;

/// What the host keeps for all instances of the module: leaky buckets
/// (`limiter`) and recent transactions (`recent`).
pub trait Shared {
    fn conform(&mut self, key: u32, interval_ns: u64, tolerance_ns: u64) -> bool;
    fn reset(&mut self, key: u32);
    fn remember(&mut self, key: u64);
    fn contains(&mut self, key: u64) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Loss,
    Rate,
}

/// A report, wherever it came from (in-band or the feedback API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub algorithm: Algorithm,
    /// Percent to shed (loss) or requests a second (rate).
    pub oc: u32,
    /// 0 ends control.
    pub validity_ms: u32,
    /// `oc-seq` in units of 10^-5.
    pub seq: u64,
}

/// How a report was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Accepted,
    /// Its `oc-seq` was not greater than the last one counted.
    Stale,
    /// It ended control (validity 0).
    Ended,
}

/// The decaying arrival counts' time constant.
const DECAY_NS: f64 = 1e9;

/// The host spreads flows over its workers, each with an instance of its
/// own: one instance may see only the emergency calls' flow while another
/// sees the initial requests. Each instance that sees initial requests under
/// control marks the half second in the shared recent set; an instance that
/// sees none itself then knows there are still initial requests to shed.
const SLOT_NS: u64 = 500_000_000;

/// The shared-set key that says "initial requests arrived in `slot`".
fn initial_marker(key: u32, slot: u64) -> u64 {
    // Apart from the transaction keys (hashes) by a fixed tag.
    0x4e53_4f43_0000_0000 ^ (u64::from(key) << 40) ^ slot
}

#[derive(Debug, Clone)]
pub struct Control {
    pub key: u32,
    pub last_seq: Option<u64>,
    /// The report in force and when it ends (ns); None: no control.
    pub active: Option<(Report, u64)>,
    /// Recent arrivals per category (initial, priority), decayed to `counted_at`.
    recent: [f64; 2],
    counted_at: u64,
    /// Error-diffusion credit per category.
    credit: [f64; 2],
    /// The last slot this instance marked (see [`SLOT_NS`]).
    marked_slot: Option<u64>,
    /// When control began for this instance (ns): the report reaches each
    /// worker's instance at its next batch, so for a moment another one may
    /// not mark yet what it sees.
    since: u64,
}

impl Control {
    pub fn new(key: u32) -> Self {
        Self {
            key,
            last_seq: None,
            active: None,
            recent: [0.0; 2],
            counted_at: 0,
            credit: [0.0; 2],
            marked_slot: None,
            since: 0,
        }
    }

    /// Takes a report at `now` (ns).
    pub fn report(&mut self, now: u64, r: Report, limiter: &mut impl Shared) -> Taken {
        if self.last_seq.is_some_and(|last| r.seq <= last) {
            return Taken::Stale;
        }
        self.last_seq = Some(r.seq);
        let previous = self.active.map(|(p, _)| p);
        if r.validity_ms == 0 {
            self.end(limiter);
            return Taken::Ended;
        }
        if previous.is_none_or(|p| p.algorithm != r.algorithm || p.oc != r.oc) {
            // A new rate starts from an empty bucket; a new loss from no debt.
            limiter.reset(self.key);
            self.credit = [0.0; 2];
        }
        if previous.is_none() {
            self.since = now;
        }
        self.active = Some((r, now.saturating_add(u64::from(r.validity_ms) * 1_000_000)));
        Taken::Accepted
    }

    fn end(&mut self, limiter: &mut impl Shared) {
        self.active = None;
        self.credit = [0.0; 2];
        limiter.reset(self.key);
    }

    /// Whether control is in force at `now`; ends it lazily when it ran out.
    pub fn in_force(&mut self, now: u64, limiter: &mut impl Shared) -> bool {
        match self.active {
            Some((_, until)) if now >= until => {
                self.end(limiter);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The current report's `oc` and the ms left of it.
    pub fn current(&self, now: u64) -> Option<(Report, u64)> {
        self.active.map(|(r, until)| (r, until.saturating_sub(now) / 1_000_000))
    }

    fn count(&mut self, now: u64, i: usize) {
        let dt = now.saturating_sub(self.counted_at) as f64;
        let keep = (-dt / DECAY_NS).exp();
        for r in &mut self.recent {
            *r *= keep;
        }
        self.counted_at = now;
        if let Some(r) = self.recent.get_mut(i) {
            *r += 1.0;
        }
    }

    /// Whether to shed a request of `category` arriving at `now`.
    pub fn shed(&mut self, now: u64, category: Category, cfg: &crate::Config, limiter: &mut impl Shared) -> bool {
        if category == Category::NeverShed || !self.in_force(now, limiter) {
            return false;
        }
        let Some((r, _)) = self.active else { return false };
        let i = usize::from(category == Category::Priority);
        self.count(now, i);
        match r.algorithm {
            Algorithm::Loss => {
                let [initial, priority] = self.recent;
                let slot = now / SLOT_NS;
                if i == 0 && self.marked_slot != Some(slot) {
                    self.marked_slot = Some(slot);
                    limiter.remember(initial_marker(self.key, slot));
                }
                let to_shed = f64::from(r.oc.min(100)) / 100.0 * (initial + priority);
                let share = if i == 0 {
                    if initial > 0.0 { (to_shed / initial).min(1.0) } else { 1.0 }
                } else if now < self.since.saturating_add(2 * SLOT_NS)
                    || limiter.contains(initial_marker(self.key, slot))
                    || limiter.contains(initial_marker(self.key, slot.saturating_sub(1)))
                {
                    // Initial requests still arrive, here or at another
                    // instance (or may: control has just begun): while there
                    // are any, they are what is shed, however high `oc` is.
                    0.0
                } else {
                    // None left to shed: priority requests lose `oc`.
                    f64::from(r.oc.min(100)) / 100.0
                };
                let Some(credit) = self.credit.get_mut(i) else { return false };
                *credit += share;
                if *credit >= 1.0 {
                    *credit -= 1.0;
                    true
                } else {
                    false
                }
            }
            Algorithm::Rate => {
                if r.oc == 0 {
                    return true;
                }
                let interval = 1_000_000_000 / u64::from(r.oc);
                let burst = if i == 0 { cfg.burst } else { cfg.burst_priority };
                !limiter.conform(self.key, interval, interval.saturating_mul(u64::from(burst)))
            }
        }
    }
}
