//! Adaptive busy polling: spin for the next packet only while packets keep
//! arriving, block when traffic is sparse.
//!
//! Waking a blocked thread costs a few µs on bare metal and tens of µs (up
//! to ~100 measured) on virtual machines, where an idle vCPU must first be
//! scheduled again by the hypervisor. While packets arrive closer together
//! than that, spinning removes the wake-up from every packet's latency, at
//! the price of a busy core. When the gaps grow past `max` (keep-alives
//! from a few phones, say), the worker blocks and costs nothing.
//!
//! Pure: the caller passes the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Poller {
    max: Duration,
    /// Exponentially weighted mean of the gaps between batches (weight 1/8).
    gap_ewma: Duration,
    last: Option<Instant>,
}

impl Poller {
    /// `max`: the longest a worker spins waiting for the next packet; zero
    /// never spins.
    pub fn new(max: Duration) -> Self {
        // Start just above the threshold: the first short gap brings it under.
        Self { max, gap_ewma: max + Duration::from_nanos(1), last: None }
    }

    /// Packets arrived at `now`.
    pub fn on_packets(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).min(self.max * 16 + Duration::from_millis(1));
            self.gap_ewma = (self.gap_ewma * 7 + gap) / 8;
        }
        self.last = Some(now);
    }

    /// Until when to spin for the next packet: `None` to block now.
    #[must_use]
    pub fn spin_until(&self) -> Option<Instant> {
        if self.max.is_zero() || self.gap_ewma > self.max {
            return None;
        }
        self.last.map(|l| l + self.max)
    }

    /// The mean gap between batches, for metrics.
    pub fn mean_gap(&self) -> Duration {
        self.gap_ewma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn steady_traffic_spins_and_sparse_traffic_blocks() {
        let t0 = Instant::now();
        let mut p = Poller::new(200 * US);
        assert_eq!(p.spin_until(), None, "nothing seen yet: block");
        for i in 0..20u32 {
            p.on_packets(t0 + 40 * US * i);
        }
        let last = t0 + 40 * US * 19;
        assert_eq!(p.spin_until(), Some(last + 200 * US), "packets every 40 µs: spin up to the window");

        // Traffic thins out to one packet per 5 ms: after a few, block.
        let mut t = last;
        for _ in 0..8 {
            t += 5000 * US;
            p.on_packets(t);
        }
        assert_eq!(p.spin_until(), None, "mean gap {:?}", p.mean_gap());
    }

    #[test]
    fn one_late_packet_does_not_stop_a_busy_stream() {
        let t0 = Instant::now();
        let mut p = Poller::new(200 * US);
        let mut t = t0;
        for _ in 0..20 {
            t += 20 * US;
            p.on_packets(t);
        }
        t += 600 * US;
        p.on_packets(t);
        assert!(p.spin_until().is_some(), "mean gap {:?}", p.mean_gap());
    }

    #[test]
    fn zero_never_spins() {
        let t0 = Instant::now();
        let mut p = Poller::new(Duration::ZERO);
        p.on_packets(t0);
        p.on_packets(t0 + US);
        assert_eq!(p.spin_until(), None);
    }
}
