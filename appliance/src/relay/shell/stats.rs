//! What a server module's thread publishes for the API and `/metrics`:
//! counters it bumps as it goes, and a snapshot of its engine taken at
//! each housekeeping pass (at least four times a second).

use crate::relay::engine::{Engine, PeerPath, Usage};
use crate::relay::peer_policy::Denied;
use parking_lot::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct ServerStats {
    /// Messages handed to the guest.
    pub to_guest: AtomicU64,
    pub guest_calls: AtomicU64,
    /// Time in guest calls, ns.
    pub guest_ns: AtomicU64,
    pub faults: AtomicU64,
    /// Windows over the CPU share, and client requests dropped while over it.
    pub throttled_windows: AtomicU64,
    pub throttled_requests: AtomicU64,
    /// Pauses of wake-up coalescing (`servers.coalesce_us`) taken.
    pub coalesced_pauses: AtomicU64,
    pub last_fault: Mutex<Option<String>>,
    pub quarantined: Mutex<Option<String>>,
    pub snapshot: Mutex<StatsSnapshot>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    /// Relayed over the module's life (ended allocations included).
    pub usage: Usage,
    pub dropped_no_permission: u64,
    pub dropped_over_rate: u64,
    pub dropped_no_allocation: u64,
    pub dropped_not_turn: u64,
    /// Peers refused by the policy, by path and rule.
    #[serde(skip)]
    pub refused: Vec<(PeerPath, Denied, u64)>,
    pub memory_bytes: u64,
}

impl StatsSnapshot {
    pub fn of(e: &Engine, now_ms: u64, memory_bytes: u64) -> Self {
        let (permissions, channels) = e.permissions_and_channels(now_ms);
        let mut refused: Vec<(PeerPath, Denied, u64)> =
            e.counts.refused.iter().map(|((p, d), n)| (*p, *d, *n)).collect();
        refused.sort_by_key(|(p, d, _)| (p.as_str(), d.as_str()));
        Self {
            allocations: e.len(),
            permissions,
            channels,
            usage: e.total_usage(),
            dropped_no_permission: e.counts.dropped_no_permission,
            dropped_over_rate: e.counts.dropped_over_rate,
            dropped_no_allocation: e.counts.dropped_no_allocation,
            dropped_not_turn: e.counts.dropped_not_turn,
            refused,
            memory_bytes,
        }
    }
}
