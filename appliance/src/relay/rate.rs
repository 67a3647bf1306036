//! A token bucket over explicit time, for the relayed bytes of one
//! allocation and of a tenant in all: `rate` bytes a second, up to one
//! second's worth in a burst.
//!
//! Not `governor`: its limiters read their own clock (or need a `Clock`
//! implementation threaded through), and count cells, not bytes of
//! varying size; the engine is sans-IO and takes the time as an argument,
//! and this is all it needs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    rate: u64,
    /// Tokens in thousandths of a byte, so that a millisecond's refill at
    /// a low rate is not rounded away.
    milli_tokens: u64,
    last_ms: Option<u64>,
}

impl Bucket {
    pub fn per_second(rate: u64) -> Self {
        Self { rate, milli_tokens: rate.saturating_mul(1000), last_ms: None }
    }

    /// Takes `bytes` if they fit now.
    pub fn admit(&mut self, bytes: u64, now_ms: u64) -> bool {
        let cap = self.rate.saturating_mul(1000);
        if let Some(last) = self.last_ms {
            let refill = now_ms.saturating_sub(last).saturating_mul(self.rate);
            self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
        }
        self.last_ms = Some(now_ms);
        let need = bytes.saturating_mul(1000);
        if need > self.milli_tokens {
            return false;
        }
        self.milli_tokens -= need;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let mut b = Bucket::per_second(1000);
        assert!(b.admit(600, 0));
        assert!(b.admit(400, 0));
        assert!(!b.admit(1, 0), "the burst is spent");
        assert!(!b.admit(200, 100), "100 ms bring 100 bytes");
        assert!(b.admit(100, 100));
        assert!(b.admit(1000, 5000), "refills to the cap only");
        assert!(!b.admit(1, 5000));
    }
}
