//! An installed module as the workers serve it: the template its instances
//! are made from, one slot per worker (the hand-over of a freshly built
//! instance, that worker's counters), its health (faults, quarantine,
//! retirement) and the policy its guard applies.
//!
//! The controller makes it (`controller::assemble`), the runtime fills its
//! slots, the dataplane's table holds it: no one of them owns it alone. A
//! module is shared by every worker only in what never changes per packet
//! (its filter, its template) and in per-worker slots each worker alone
//! writes to.

use crate::dataplane::{Filter, GuardPolicy};
use crate::runtime::{GuestCounters, ModuleHash, ModuleInstance, Template};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Where a module says it was quarantined (its id): the controller listens,
/// and takes its rule out at once.
pub type QuarantineTx = tokio::sync::mpsc::UnboundedSender<String>;

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
    pub guard: GuardPolicy,
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
    /// Load reports from the feedback API, for every worker's instance.
    pub feedback: crate::feedback::Mailbox,
    slots: Box<[WorkerSlot]>,
    /// Told once, when the module is quarantined (None: nobody listens —
    /// try-out, tests).
    quarantines: Option<QuarantineTx>,
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
            feedback: Default::default(),
            quarantines: None,
            slots,
        }
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, worker: usize) -> Option<&WorkerSlot> {
        self.slots.get(worker)
    }

    /// Who to tell when the module is quarantined.
    pub fn with_quarantine_channel(mut self, tx: Option<QuarantineTx>) -> Self {
        self.quarantines = tx;
        self
    }

    /// Quarantines the module for every worker; true the first time. Runs on
    /// a packet thread: the one send is to an unbounded channel, never blocks.
    pub fn quarantine(&self, reason: String) -> bool {
        if self.health.quarantined.swap(true, Relaxed) {
            return false;
        }
        tracing::error!(tenant = %self.tenant, module = %self.name, %reason, "module quarantined; its traffic now passes untouched");
        *self.health.quarantine_reason.lock() = Some(reason);
        if let Some(tx) = &self.quarantines {
            let _ = tx.send(self.id.clone());
        }
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
