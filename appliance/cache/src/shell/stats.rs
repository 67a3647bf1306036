//! The cache's counters (Prometheus names in the appliance's `/metrics`).

use std::sync::atomic::AtomicU64;

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
}
