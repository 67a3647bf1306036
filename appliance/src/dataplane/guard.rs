//! What a worker does about one module's CPU use and faults — the decisions
//! that keep a hostile tenant from costing the others anything. Pure: time
//! is an argument, so every path is tested on a virtual clock.
//!
//! - **CPU budget**: time spent in the module's calls is charged to a window
//!   (aligned, `window` long). Past `cpu_budget` in a window, the module is
//!   *throttled* until the window ends: its packets pass untouched without
//!   entering wasm. Over budget in `throttle_quarantine_windows` windows in a
//!   row (a module that spins on every packet), it is *quarantined*.
//! - **Fault rate**: a trap or a blown deadline fails that packet open and
//!   the instance is rebuilt after a backoff (doubling per recent fault).
//!   `fault_quarantine` faults within `fault_window` quarantine the module —
//!   whatever good calls came between, so a module that traps on every other
//!   packet does not escape by the good ones.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    pub window: Duration,
    pub cpu_budget: Duration,
    pub throttle_quarantine_windows: u32,
    pub fault_window: Duration,
    pub fault_quarantine: u32,
    /// First rebuild delay after a fault.
    pub backoff: Duration,
}

/// Longest wait before rebuilding a faulted instance.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether to call the module for this packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Run,
    /// Over its CPU budget in this window: pass the packet untouched.
    Throttled,
    /// Persistently over budget: quarantine the module now.
    Quarantine,
}

/// After a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFault {
    /// Rebuild the instance, not before this time.
    RebuildAt(Instant),
    /// Too many faults in the window: quarantine.
    Quarantine,
}

#[derive(Debug, Clone)]
pub struct Guard {
    policy: GuardPolicy,
    /// End of the current window (windows are aligned to the first one).
    window_end: Option<Instant>,
    used: Duration,
    throttled: bool,
    /// End of the last window the module was throttled in, and how many
    /// throttled windows came in a row before it.
    last_over: Option<Instant>,
    over_streak: u32,
    /// Times of the most recent faults (at most `fault_quarantine`), oldest first.
    faults: Vec<Instant>,
    /// Windows this module has been throttled in (for the API).
    pub throttled_windows: u64,
}

impl Guard {
    pub fn new(policy: GuardPolicy) -> Self {
        let cap = usize::try_from(policy.fault_quarantine).unwrap_or(1);
        Self {
            policy,
            window_end: None,
            used: Duration::ZERO,
            throttled: false,
            last_over: None,
            over_streak: 0,
            faults: Vec::with_capacity(cap),
            throttled_windows: 0,
        }
    }

    /// Closes the windows that ended before `now` and opens the one `now` is in.
    fn roll(&mut self, now: Instant) {
        let w = self.policy.window.max(Duration::from_micros(1));
        let Some(end) = self.window_end else {
            self.window_end = Some(now + w);
            return;
        };
        if now < end {
            return;
        }
        if self.throttled {
            let consecutive = self.last_over.is_some_and(|prev| prev + w == end);
            self.over_streak = if consecutive { self.over_streak + 1 } else { 1 };
            self.last_over = Some(end);
        } else {
            self.over_streak = 0;
        }
        // Skip whole windows that passed without a call (the streak breaks
        // with them: the module was not over budget there).
        let passed = now.saturating_duration_since(end).as_nanos() / w.as_nanos();
        if passed > 0 && self.throttled {
            self.over_streak = 0;
        }
        let skip = u32::try_from(passed).unwrap_or(u32::MAX).saturating_add(1);
        self.window_end = Some(end + w * skip);
        self.used = Duration::ZERO;
        self.throttled = false;
    }

    /// Before a call at `now`.
    #[must_use]
    pub fn admit(&mut self, now: Instant) -> Admit {
        self.roll(now);
        if self.over_streak >= self.policy.throttle_quarantine_windows {
            return Admit::Quarantine;
        }
        if self.throttled { Admit::Throttled } else { Admit::Run }
    }

    /// After a call that took `spent` of wall time, while the worker waited
    /// for its CPU `preempted` of the time (0..1, measured over the worker's
    /// last window): the module is charged what it likely ran, not the time
    /// its thread spent preempted in the middle of it. True when this call
    /// put the module over its budget for the window.
    pub fn charge(&mut self, spent: Duration, preempted: f64) -> bool {
        self.used += spent.mul_f64((1.0 - preempted).clamp(0.1, 1.0));
        if !self.throttled && self.used > self.policy.cpu_budget {
            self.throttled = true;
            self.throttled_windows += 1;
            return true;
        }
        false
    }

    /// Whether the module is throttled in the current window.
    pub fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// A fault at `now` (its call's time was charged already).
    #[must_use]
    pub fn fault(&mut self, now: Instant) -> AfterFault {
        let limit = usize::try_from(self.policy.fault_quarantine).unwrap_or(usize::MAX).max(1);
        if self.faults.len() >= limit {
            self.faults.remove(0);
        }
        self.faults.push(now);
        let recent =
            self.faults.iter().filter(|&&t| now.saturating_duration_since(t) < self.policy.fault_window).count();
        if recent >= limit {
            return AfterFault::Quarantine;
        }
        let shift = u32::try_from(recent.saturating_sub(1)).unwrap_or(16).min(16);
        let delay = self.policy.backoff.saturating_mul(1 << shift).min(MAX_BACKOFF);
        AfterFault::RebuildAt(now + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    fn policy() -> GuardPolicy {
        GuardPolicy {
            window: 20 * MS,
            cpu_budget: 5 * MS,
            throttle_quarantine_windows: 3,
            fault_window: Duration::from_secs(10),
            fault_quarantine: 5,
            backoff: 50 * MS,
        }
    }

    /// Calls every `every`, each taking `cost`, from `start` for `for_`;
    /// returns the admissions seen and when the run stopped.
    fn drive(g: &mut Guard, start: Instant, every: Duration, cost: Duration, for_: Duration) -> (Vec<Admit>, Instant) {
        let mut t = start;
        let mut seen = Vec::new();
        while t < start + for_ {
            let a = g.admit(t);
            seen.push(a);
            if a == Admit::Quarantine {
                break;
            }
            if a == Admit::Run {
                g.charge(cost, 0.0);
                t += cost;
            }
            t += every;
        }
        (seen, t)
    }

    #[test]
    fn a_light_module_is_never_throttled() {
        let mut g = Guard::new(policy());
        // 100 kpps at 1.5 µs a call: 15 % of a worker.
        let (seen, _) = drive(&mut g, Instant::now(), 10 * US, 3 * US / 2, Duration::from_secs(1));
        assert!(seen.iter().all(|a| *a == Admit::Run));
        assert_eq!(g.throttled_windows, 0);
    }

    #[test]
    fn a_spinning_module_is_throttled_within_a_window_then_quarantined() {
        let mut g = Guard::new(policy());
        let t0 = Instant::now();
        // Every packet spins just under a 2 ms deadline.
        let (seen, stopped) = drive(&mut g, t0, 10 * US, 1900 * US, Duration::from_secs(1));
        let runs_in_first_window = seen.iter().take_while(|a| **a == Admit::Run).count();
        assert_eq!(runs_in_first_window, 3, "5 ms of budget buys three 1.9 ms calls");
        assert_eq!(seen.get(3), Some(&Admit::Throttled));
        assert_eq!(seen.last(), Some(&Admit::Quarantine));
        assert!(stopped < t0 + 4 * 20 * MS, "quarantined after three windows over budget ({:?})", stopped - t0);
        assert_eq!(g.throttled_windows, 3);
    }

    #[test]
    fn a_burst_over_budget_throttles_but_does_not_quarantine() {
        let mut g = Guard::new(policy());
        let t0 = Instant::now();
        let (_, t) = drive(&mut g, t0, 10 * US, 1900 * US, 35 * MS);
        // Then light traffic for a second.
        let (seen, _) = drive(&mut g, t, 100 * US, 2 * US, Duration::from_secs(1));
        assert!(!seen.contains(&Admit::Quarantine));
        assert_eq!(seen.last(), Some(&Admit::Run));
        assert_eq!(g.throttled_windows, 2);
    }

    #[test]
    fn over_budget_windows_with_idle_windows_between_are_not_a_streak() {
        let mut g = Guard::new(policy());
        let mut t = Instant::now();
        for _ in 0..10 {
            // One window over budget, then two with no traffic at all.
            let (seen, _) = drive(&mut g, t, 10 * US, 1900 * US, 20 * MS);
            assert!(!seen.contains(&Admit::Quarantine));
            t += 60 * MS;
        }
    }

    #[test]
    fn time_the_worker_spent_preempted_is_not_charged() {
        let mut g = Guard::new(policy());
        let t0 = Instant::now();
        assert_eq!(g.admit(t0), Admit::Run);
        // A 4 ms call on a worker that waited for its CPU 90 % of the time.
        assert!(!g.charge(4 * MS, 0.9), "charged 0.4 ms, within the 5 ms budget");
        assert!(g.charge(5 * MS, 0.0), "the same call on an idle CPU would go over (5.4 ms)");
    }

    #[test]
    fn faults_back_off_and_quarantine_by_rate_not_by_run() {
        let mut g = Guard::new(policy());
        let t0 = Instant::now();
        assert_eq!(g.fault(t0), AfterFault::RebuildAt(t0 + 50 * MS));
        let t1 = t0 + 100 * MS;
        assert_eq!(g.fault(t1), AfterFault::RebuildAt(t1 + 100 * MS), "doubles with each recent fault");
        // Good calls in between change nothing: it is the rate that counts.
        for i in 0..1000u32 {
            assert_eq!(g.admit(t1 + i * US), Admit::Run);
            g.charge(US, 0.0);
        }
        assert!(matches!(g.fault(t0 + Duration::from_secs(1)), AfterFault::RebuildAt(_)));
        assert!(matches!(g.fault(t0 + Duration::from_secs(2)), AfterFault::RebuildAt(_)));
        assert_eq!(g.fault(t0 + Duration::from_secs(3)), AfterFault::Quarantine, "five faults in ten seconds");
    }

    #[test]
    fn sparse_faults_never_quarantine() {
        let mut g = Guard::new(policy());
        let t0 = Instant::now();
        for i in 0..50u32 {
            // One fault every 3 s: at most four in any ten seconds.
            assert!(matches!(g.fault(t0 + Duration::from_secs(3) * i), AfterFault::RebuildAt(_)), "fault {i}");
        }
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut p = policy();
        p.fault_quarantine = 100;
        let mut g = Guard::new(p);
        let t0 = Instant::now();
        let mut last = AfterFault::Quarantine;
        for i in 0..40u32 {
            last = g.fault(t0 + i * MS);
        }
        assert_eq!(last, AfterFault::RebuildAt(t0 + 39 * MS + MAX_BACKOFF));
    }
}
