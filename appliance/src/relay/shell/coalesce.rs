//! Wake-up coalescing for a relay thread: software interrupt moderation.
//!
//! At media rates every datagram otherwise costs the thread one sleep and one
//! wake in `epoll_wait`, and the receiver one wake-up per `sendmmsg`; perf put
//! ~40 % of the relay's CPU there with batches of about one datagram. While
//! traffic is dense (datagrams arrive closer together than half the window),
//! the thread sleeps one window before it looks again, so one wake, one
//! `recvmmsg` and one `sendmmsg` serve what arrived meanwhile. Each hop then
//! waits at most one window: media tolerates tens of µs, and a NIC's own
//! interrupt moderation adds as much. When a window brings fewer than two
//! datagrams, coalescing saves nothing and the thread blocks again.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Coalescer {
    window: Duration,
    active: bool,
}

impl Coalescer {
    /// `window` zero: never coalesce.
    pub fn new(window: Duration) -> Self {
        Self { window, active: false }
    }

    /// After one poll and its work: how long the poll blocked and how many
    /// datagrams the thread then received.
    pub fn observe(&mut self, blocked: Duration, datagrams: usize) {
        if self.window.is_zero() {
            return;
        }
        self.active = if self.active { datagrams >= 2 } else { datagrams >= 1 && blocked < self.window / 2 };
    }

    /// How long to sleep before the next poll, which then must not block.
    pub fn pause(&self) -> Option<Duration> {
        self.active.then_some(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(50);

    #[test]
    fn dense_traffic_coalesces_until_a_window_brings_less_than_two() {
        let mut c = Coalescer::new(W);
        assert_eq!(c.pause(), None);
        c.observe(Duration::from_micros(10), 1);
        assert_eq!(c.pause(), Some(W));
        c.observe(Duration::ZERO, 3);
        assert_eq!(c.pause(), Some(W));
        c.observe(Duration::ZERO, 1);
        assert_eq!(c.pause(), None);
    }

    #[test]
    fn sparse_traffic_and_idle_wakes_never_coalesce() {
        let mut c = Coalescer::new(W);
        c.observe(Duration::from_micros(40), 1);
        assert_eq!(c.pause(), None, "the datagram came after more than half a window");
        c.observe(Duration::from_micros(1), 0);
        assert_eq!(c.pause(), None, "a timer or TCP wake-up brought no datagram");
    }

    #[test]
    fn a_zero_window_never_coalesces() {
        let mut c = Coalescer::new(Duration::ZERO);
        c.observe(Duration::ZERO, 64);
        assert_eq!(c.pause(), None);
    }
}
