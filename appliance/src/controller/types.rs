//! What goes in and out of the controller.

use crate::dataplane::Filter;
use crate::store::ModuleSource;
use std::collections::BTreeMap;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The ISP operating the appliance: sees and manages everything.
    Admin,
    /// A tenant: sees and manages only its own modules.
    Tenant(String),
}

/// A request to install (or refresh) a module for a tenant.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    pub tenant: String,
    /// Unique per tenant; installing an existing name replaces or refreshes it.
    pub name: String,
    pub source: ModuleSource,
    /// Expected sha256 of the module bytes (hex). Required for URLs.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A packet module's traffic (what NFQUEUE intercepts for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// A server module's listeners (ports the tenant is authorized for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<crate::relay::shell::Listen>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Soft-state lifetime; absent means until removed.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Counters of one module, summed over the workers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleCounters {
    /// Packets by outcome, faults, throttling, time in the module (ns).
    #[serde(flatten)]
    pub packets: crate::installed::StatsSum,
    /// Linear memory of its live instances, bytes (one per worker).
    pub memory_bytes: u64,
}

/// A module as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleInfo {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub sha256: String,
    /// `packet` (in the data path) or `server` (own sockets).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<crate::relay::shell::Listen>,
    /// A server module's relay: its sockets, allocations and what they relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayInfo>,
    /// An edge cache module's cache: its listeners, store and counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheInfo>,
    pub properties: BTreeMap<String, String>,
    pub ttl_remaining_secs: Option<u64>,
    pub installed_at_unix: u64,
    /// `active`, `throttled` (over its CPU budget in the current window),
    /// `reloading` (an instance is being rebuilt after a fault) or `quarantined`.
    pub state: &'static str,
    pub last_fault: Option<String>,
    /// Why it was quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    pub counters: ModuleCounters,
    /// Counters the module itself exports.
    pub module_counters: BTreeMap<String, u64>,
}

/// A server module's relay as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayInfo {
    /// Where its listeners are bound.
    pub listening: Vec<std::net::SocketAddr>,
    #[serde(flatten)]
    pub stats: crate::relay::shell::StatsSnapshot,
    /// Peers the policy refused: `{path, reason, count}`.
    pub refused: Vec<RefusedPeers>,
    /// Messages the guest handled, and its calls' time (ns).
    pub guest_calls: u64,
    pub guest_ns: u64,
    /// 100 ms windows in which its guest used up its CPU share
    /// (`server_cpu_percent`), and the client requests dropped for it.
    pub throttled_windows: u64,
    pub throttled_requests: u64,
    /// Pauses its thread took to coalesce wake-ups (`servers.coalesce_us`).
    pub coalesced_pauses: u64,
}

/// An edge cache module's cache as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheInfo {
    pub listening: Vec<std::net::SocketAddr>,
    pub origin: String,
    /// Bytes charged against the budget, the budget, and objects stored.
    pub stored_bytes: u64,
    pub budget_bytes: u64,
    pub objects: u64,
    #[serde(flatten)]
    pub stats: netserv_cache::StatsSnapshot,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedPeers {
    pub path: &'static str,
    pub reason: &'static str,
    pub count: u64,
}

/// Why a request was refused. Each names its reason; nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("tenant `{0}` is not configured on this node")]
    UnknownTenant(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("tenant limit reached: {0}")]
    Limit(String),
    #[error(transparent)]
    Fetch(#[from] crate::store::FetchError),
    #[error("module rejected: {0}")]
    Module(String),
    #[error("dataplane: {0}")]
    Dataplane(String),
    #[error("module `{0}` is not installed")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("busy: {0}")]
    Busy(String),
}

/// What a tenant's modules use and were refused on this node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantUsageInfo {
    pub tenant: String,
    pub modules: usize,
    pub memory_bytes: u64,
    pub memory_refused: u64,
    pub log_lines: u64,
    pub log_dropped: u64,
    pub counter_refused: u64,
    pub state_entries: u64,
    pub state_bytes: u64,
    pub state_refused: u64,
}
