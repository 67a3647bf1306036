//! The cache's counters (Prometheus names in the appliance's `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Answered from a fresh stored object (including 304s and ranges).
    pub hits: AtomicU64,
    /// Went to the origin: nothing stored, or not reusable.
    pub misses: AtomicU64,
    /// Answered stale: inside stale-while-revalidate, or stale-if-error.
    pub stale_served: AtomicU64,
    /// Waited on another client's origin fetch instead of making one.
    pub coalesced: AtomicU64,
    /// Revalidations the origin answered 304.
    pub revalidated: AtomicU64,
    pub origin_fetches: AtomicU64,
    /// Origin fetches that failed: connect, timeout, a broken body, a 5xx.
    pub origin_errors: AtomicU64,
    /// Passed through uncached: unsafe methods, uncacheable answers, oversize bodies.
    pub passed: AtomicU64,
    pub evictions: AtomicU64,
    pub purged: AtomicU64,
    /// Body bytes sent to clients.
    pub bytes_served: AtomicU64,
    pub bytes_from_origin: AtomicU64,
    /// Calls into the module's hooks, and those that faulted (failed open).
    pub hook_calls: AtomicU64,
    pub hook_faults: AtomicU64,
    /// Requests the module redirected or denied.
    pub redirected: AtomicU64,
    pub denied: AtomicU64,
}

/// The counters at one moment, for the API and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
    pub coalesced: u64,
    pub revalidated: u64,
    pub origin_fetches: u64,
    pub origin_errors: u64,
    pub passed: u64,
    pub evictions: u64,
    pub purged: u64,
    pub bytes_served: u64,
    pub bytes_from_origin: u64,
    pub hook_calls: u64,
    pub hook_faults: u64,
    pub redirected: u64,
    pub denied: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            revalidated: self.revalidated.load(Relaxed),
            origin_fetches: self.origin_fetches.load(Relaxed),
            origin_errors: self.origin_errors.load(Relaxed),
            passed: self.passed.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            purged: self.purged.load(Relaxed),
            bytes_served: self.bytes_served.load(Relaxed),
            bytes_from_origin: self.bytes_from_origin.load(Relaxed),
            hook_calls: self.hook_calls.load(Relaxed),
            hook_faults: self.hook_faults.load(Relaxed),
            redirected: self.redirected.load(Relaxed),
            denied: self.denied.load(Relaxed),
        }
    }
}
