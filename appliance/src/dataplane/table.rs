//! What the dataplane matches against: installed modules with their filters,
//! published by the controller as an immutable snapshot (read lock-free per
//! batch), with an index from (transport, destination port) to the few
//! modules that may match, so a packet costs the same with 1,000 tenants as
//! with one.
//!
//! A module is shared by every worker only in what never changes per packet
//! (its filter, its template) and in per-worker slots each worker alone
//! writes to (its counters, the hand-over of a freshly built instance).

use crate::runtime::{GuestCounters, ModuleHash, ModuleInstance, Template, Transport};
use ipnet::IpNet;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Which packets a module sees: transport, destination prefix and ports (the
/// tenant's own servers), optionally a source prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(with = "transport_serde")]
    pub transport: Transport,
    pub destination: IpNet,
    /// Destination ports; empty means the module gets no traffic (refused at install).
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpNet>,
}

mod transport_serde {
    use crate::runtime::Transport;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match t {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
        match String::deserialize(d)?.as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            other => Err(serde::de::Error::custom(format!("transport `{other}` is not udp or tcp"))),
        }
    }
}

impl Filter {
    pub fn matches(&self, transport: Transport, src: SocketAddr, dst: SocketAddr) -> bool {
        transport == self.transport
            && self.destination.contains(&dst.ip())
            && self.ports.contains(&dst.port())
            && self.source.is_none_or(|s| s.contains(&src.ip()))
    }
}

/// Per-module, per-worker packet counters (relaxed atomics, written by one
/// worker, read for metrics), on a cache line of their own.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct ModuleStats {
    pub packets: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    pub replaced: AtomicU64,
    pub replied: AtomicU64,
    /// Passed untouched because the module faulted on the packet, was being
    /// rebuilt, or is quarantined.
    pub fail_open: AtomicU64,
    /// Passed untouched because the module was over its CPU budget.
    pub throttled: AtomicU64,
    /// Verdicts the host could not carry out (a reply on TCP, too large...).
    pub verdict_errors: AtomicU64,
    /// Time spent in the module's calls, ns.
    pub cpu_ns: AtomicU64,
    pub faults: AtomicU64,
    /// Windows in which the module went over its CPU budget.
    pub throttled_windows: AtomicU64,
}

/// Sums of [`ModuleStats`] over the workers (what the API shows).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSum {
    pub packets: u64,
    pub accepted: u64,
    pub dropped: u64,
    pub replaced: u64,
    pub replied: u64,
    /// Passed untouched: faulted on the packet, being rebuilt, or quarantined.
    pub fail_open: u64,
    /// Passed untouched because the module was over its CPU budget.
    pub throttled: u64,
    pub verdict_errors: u64,
    /// Time spent in the module's calls, ns.
    pub cpu_ns: u64,
    /// Traps, blown deadlines and failed rebuilds.
    pub faults: u64,
    /// Budget windows in which the module went over its CPU budget.
    pub throttled_windows: u64,
}

/// One worker's part of a module: its counters, and the hand-over of an
/// instance built for it off the packet thread.
#[derive(Debug, Default)]
pub struct WorkerSlot {
    pub stats: ModuleStats,
    handoff: Mutex<Option<ModuleInstance>>,
    ready: AtomicBool,
    /// The last build for this worker failed (the worker counts it as a fault).
    build_failed: AtomicBool,
    /// The worker throttles the module in its current window.
    pub throttled_now: AtomicBool,
    /// The worker holds no live instance (waiting for a rebuild).
    pub rebuilding: AtomicBool,
}

impl std::fmt::Debug for ModuleInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModuleInstance")
    }
}

impl WorkerSlot {
    /// Leaves a freshly built instance for the worker.
    pub fn deposit(&self, instance: ModuleInstance) {
        *self.handoff.lock() = Some(instance);
        self.build_failed.store(false, Relaxed);
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn build_failed(&self) {
        self.build_failed.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The instance waiting for the worker, if any (one atomic load when none).
    pub fn take(&self) -> Option<ModuleInstance> {
        if !self.ready.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.ready.store(false, Relaxed);
        self.handoff.lock().take()
    }

    /// Whether a build failed since the last look.
    pub fn take_failure(&self) -> bool {
        self.build_failed.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Module-wide state every worker may set.
#[derive(Debug, Default)]
pub struct Health {
    pub quarantined: AtomicBool,
    /// Removed from the node: builds for it are skipped.
    pub retired: AtomicBool,
    pub last_fault: Mutex<Option<String>>,
    /// Why it was quarantined.
    pub quarantine_reason: Mutex<Option<String>>,
}

/// How the dataplane treats one module (from its tenant's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModulePolicy {
    pub guard: super::guard::GuardPolicy,
    /// Longest reply payload the host sends for it, bytes.
    pub reply_max: usize,
}

/// An installed module as the dataplane sees it.
pub struct ActiveModule {
    pub id: String,
    pub tenant: Arc<str>,
    pub name: Arc<str>,
    pub hash: ModuleHash,
    pub filter: Filter,
    pub template: Arc<Template>,
    pub policy: ModulePolicy,
    pub counters: Arc<GuestCounters>,
    pub health: Health,
    slots: Box<[WorkerSlot]>,
}

impl ActiveModule {
    /// `instances`: one ready instance per worker, in worker order.
    pub fn new(
        id: String,
        filter: Filter,
        template: Arc<Template>,
        policy: ModulePolicy,
        counters: Arc<GuestCounters>,
        instances: Vec<ModuleInstance>,
    ) -> Self {
        let slots: Box<[WorkerSlot]> = instances
            .into_iter()
            .map(|i| {
                let s = WorkerSlot::default();
                s.deposit(i);
                s
            })
            .collect();
        Self {
            id,
            tenant: template.host.tenant.clone(),
            name: template.host.module.clone(),
            hash: template.hash(),
            filter,
            template,
            policy,
            counters,
            health: Health::default(),
            slots,
        }
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, worker: usize) -> Option<&WorkerSlot> {
        self.slots.get(worker)
    }

    /// Quarantines the module for every worker; true the first time.
    pub fn quarantine(&self, reason: String) -> bool {
        if self.health.quarantined.swap(true, Relaxed) {
            return false;
        }
        tracing::error!(tenant = %self.tenant, module = %self.name, %reason, "module quarantined; its traffic now passes untouched");
        *self.health.quarantine_reason.lock() = Some(reason);
        true
    }

    pub fn is_quarantined(&self) -> bool {
        self.health.quarantined.load(Relaxed)
    }

    pub fn is_throttled(&self) -> bool {
        self.slots.iter().any(|s| s.throttled_now.load(Relaxed))
    }

    pub fn is_rebuilding(&self) -> bool {
        self.slots.iter().any(|s| s.rebuilding.load(Relaxed))
    }

    pub fn stats(&self) -> StatsSum {
        let mut t = StatsSum::default();
        for s in self.slots.iter().map(|s| &s.stats) {
            t.packets += s.packets.load(Relaxed);
            t.accepted += s.accepted.load(Relaxed);
            t.dropped += s.dropped.load(Relaxed);
            t.replaced += s.replaced.load(Relaxed);
            t.replied += s.replied.load(Relaxed);
            t.fail_open += s.fail_open.load(Relaxed);
            t.throttled += s.throttled.load(Relaxed);
            t.verdict_errors += s.verdict_errors.load(Relaxed);
            t.cpu_ns += s.cpu_ns.load(Relaxed);
            t.faults += s.faults.load(Relaxed);
            t.throttled_windows += s.throttled_windows.load(Relaxed);
        }
        t
    }
}

/// (transport, destination port) as one sortable key.
fn key(transport: Transport, port: u16) -> u32 {
    let t = match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    };
    t << 16 | u32::from(port)
}

/// A snapshot of every installed module, in install order, with its index.
#[derive(Default)]
pub struct Table {
    pub modules: Vec<Arc<ActiveModule>>,
    /// Sorted (key, module indexes in install order).
    index: Vec<(u32, Box<[u32]>)>,
}

/// The index over filters given in install order: for each (transport,
/// port) the positions of the filters naming it, in install order.
fn build_index<'a>(filters: impl Iterator<Item = &'a Filter>) -> Vec<(u32, Box<[u32]>)> {
    let mut map: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    for (i, f) in filters.enumerate() {
        let mut ports = f.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        for p in ports {
            map.entry(key(f.transport, p)).or_default().push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
    map.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect()
}

fn lookup(index: &[(u32, Box<[u32]>)], transport: Transport, port: u16) -> &[u32] {
    let k = key(transport, port);
    match index.binary_search_by_key(&k, |(k, _)| *k) {
        Ok(i) => index.get(i).map_or(&[], |(_, v)| v),
        Err(_) => &[],
    }
}

impl Table {
    /// `modules` in install order.
    pub fn new(modules: Vec<Arc<ActiveModule>>) -> Self {
        let index = build_index(modules.iter().map(|m| &m.filter));
        Self { modules, index }
    }

    /// Indexes (into `modules`, install order) of the modules whose filter
    /// names this transport and destination port; their prefixes are still
    /// to be checked.
    pub fn candidates(&self, transport: Transport, port: u16) -> &[u32] {
        lookup(&self.index, transport, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(transport: Transport, destination: &str, ports: &[u16]) -> Filter {
        Filter { transport, destination: destination.parse().expect("prefix"), ports: ports.to_vec(), source: None }
    }

    #[test]
    fn the_index_finds_exactly_the_filters_naming_a_port_in_install_order() {
        let filters = [
            filter(Transport::Udp, "198.18.2.20/32", &[5060, 5061]),
            filter(Transport::Udp, "198.18.3.0/24", &[5060]),
            filter(Transport::Tcp, "198.18.2.20/32", &[5060]),
            filter(Transport::Udp, "198.18.2.20/32", &[5070, 5070]),
        ];
        let index = build_index(filters.iter());
        assert_eq!(lookup(&index, Transport::Udp, 5060), &[0, 1]);
        assert_eq!(lookup(&index, Transport::Udp, 5061), &[0]);
        assert_eq!(lookup(&index, Transport::Tcp, 5060), &[2]);
        assert_eq!(lookup(&index, Transport::Udp, 5070), &[3], "a port named twice is one entry");
        assert!(lookup(&index, Transport::Udp, 9).is_empty());
        assert!(lookup(&index, Transport::Tcp, 5061).is_empty());
    }

    #[test]
    fn a_thousand_tenants_cost_one_lookup() {
        let filters: Vec<Filter> =
            (0..1000u16).map(|i| filter(Transport::Udp, "198.18.2.20/32", &[10_000 + i])).collect();
        let index = build_index(filters.iter());
        assert_eq!(index.len(), 1000);
        for i in [0u16, 499, 999] {
            assert_eq!(lookup(&index, Transport::Udp, 10_000 + i), &[u32::from(i)]);
        }
    }

    #[test]
    fn keys_order_by_transport_then_port() {
        assert!(key(Transport::Udp, 65535) < key(Transport::Tcp, 0));
        assert_ne!(key(Transport::Udp, 5060), key(Transport::Tcp, 5060));
    }
}
