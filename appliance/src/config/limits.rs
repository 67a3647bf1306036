//! Per-tenant resource limits.

use super::{ConfigError, invalid};
use serde::Deserialize;

/// Resource limits for one tenant's modules.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory per module instance, bytes.
    pub memory_bytes: u64,
    /// Wall time one `on-packet` call may take before it is interrupted
    /// (a fault: the packet passes, the instance is rebuilt). Checked at
    /// the runtime's 1 ms epoch tick: a call gets at least this long and
    /// at most one tick more.
    pub cpu_deadline_ms: u64,
    /// Share of one worker's time a module's calls may take per window
    /// (`runtime.budget_window_ms`); past it, its packets pass untouched
    /// until the window ends (throttled).
    pub cpu_budget_percent: u32,
    /// Longest reply payload a module may send, bytes (a reply must fit one
    /// unfragmented datagram on the way back).
    pub reply_max_bytes: u32,
    /// Modules installed at once.
    pub max_modules: u32,
    /// Entries and total bytes of the tenant's key-value state.
    pub state_max_entries: u32,
    pub state_max_bytes: u64,
    /// Longest TTL a deployment may ask for, seconds.
    pub max_ttl_secs: u64,
    /// Wall time one call of a server module may take (it answers a
    /// client's request, with its cryptography, on the module's own
    /// thread: no other tenant waits for it).
    pub server_deadline_ms: u64,
    /// Share of one CPU a server module's guest calls may take per 100 ms
    /// window; past it, the requests of its clients are dropped (counted)
    /// until the window ends — its relayed media keeps flowing, natively.
    pub server_cpu_percent: u32,
    /// Relay allocations a server module may hold at once (its relay
    /// ports bound it too).
    pub relay_allocations_max: u32,
    /// Bytes per second a server module may relay in all; 0: no limit.
    pub relay_bps_max: u64,
    /// The byte budget of an edge cache module's store (bodies and fields).
    pub cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            cpu_deadline_ms: 2,
            cpu_budget_percent: 75,
            reply_max_bytes: 1400,
            max_modules: 8,
            state_max_entries: 4096,
            state_max_bytes: 1 << 20,
            max_ttl_secs: 7 * 24 * 3600,
            server_deadline_ms: 50,
            server_cpu_percent: 50,
            relay_allocations_max: 16_384,
            relay_bps_max: 0,
            cache_bytes: 64 << 20,
        }
    }
}

impl Limits {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.memory_bytes < 1 << 20 || self.memory_bytes > 4 << 30 {
            return Err(invalid(format!("{at}.memory_bytes"), "must be between 1 MiB and 4 GiB"));
        }
        if self.cpu_deadline_ms == 0 || self.cpu_deadline_ms > 10_000 {
            return Err(invalid(format!("{at}.cpu_deadline_ms"), "must be 1..=10000"));
        }
        if self.cpu_budget_percent == 0 || self.cpu_budget_percent > 100 {
            return Err(invalid(format!("{at}.cpu_budget_percent"), "must be 1..=100"));
        }
        if self.reply_max_bytes == 0 || self.reply_max_bytes > 65_507 {
            return Err(invalid(format!("{at}.reply_max_bytes"), "must be 1..=65507"));
        }
        if self.max_modules == 0 {
            return Err(invalid(format!("{at}.max_modules"), "must be at least 1"));
        }
        if self.max_ttl_secs == 0 {
            return Err(invalid(format!("{at}.max_ttl_secs"), "must be at least 1"));
        }
        if self.server_deadline_ms == 0 || self.server_deadline_ms > 10_000 {
            return Err(invalid(format!("{at}.server_deadline_ms"), "must be 1..=10000"));
        }
        if self.server_cpu_percent == 0 || self.server_cpu_percent > 100 {
            return Err(invalid(format!("{at}.server_cpu_percent"), "must be 1..=100"));
        }
        if self.relay_allocations_max > 1 << 20 {
            return Err(invalid(format!("{at}.relay_allocations_max"), "must be at most 1048576"));
        }
        if self.cache_bytes < 1 << 20 || self.cache_bytes > 64 << 30 {
            return Err(invalid(format!("{at}.cache_bytes"), "must be between 1 MiB and 64 GiB"));
        }
        Ok(())
    }
}
