//! A worker's own view of the installed modules: its instance of each (no
//! other thread touches it), and its [`Guard`] of each. Synced to a new
//! table snapshot when the controller publishes one; everything a worker
//! lets go of goes to the builder thread to be torn down.

use super::builder::{Builder, Job, dispose};
use super::guard::{AfterFault, Guard};
use super::table::Table;
use crate::installed::ActiveModule;
use crate::runtime::ModuleInstance;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// When this worker gets a new instance after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// It has one (or is not waiting for one).
    No,
    /// Ask the builder at this time.
    At(Instant),
    /// Asked; waiting for the builder.
    Requested,
}

pub(super) struct Local {
    pub module: Arc<ActiveModule>,
    pub instance: Option<ModuleInstance>,
    pub guard: Guard,
    rebuild: Rebuild,
    /// The module's feedback generation its instance has been given.
    pub feedback_seen: u64,
}

/// What a worker runs: the table it serves and its own instances.
pub struct WorkerModules {
    pub(super) worker: usize,
    pub(super) table: Arc<Table>,
    pub(super) locals: Vec<Local>,
    pub(super) builder: Option<Builder>,
    /// A `replace` payload carried to the next module in the chain.
    pub(super) replaced: Vec<u8>,
    /// The share of time this worker waited for its CPU lately (0..1), so
    /// that modules are not charged for it.
    pub preempted: f64,
}

impl WorkerModules {
    /// `builder`: where rebuilds and tear-downs go (None: done inline, for
    /// the try-out command and benchmarks).
    pub fn new(worker: usize, builder: Option<Builder>) -> Self {
        Self {
            worker,
            table: Arc::new(Table::default()),
            locals: Vec::new(),
            builder,
            replaced: Vec::with_capacity(2048),
            preempted: 0.0,
        }
    }

    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Whether `table` is the one being served.
    pub fn serves(&self, table: &Arc<Table>) -> bool {
        Arc::ptr_eq(&self.table, table)
    }

    /// Serves `table` from now on: modules kept keep their instance and
    /// guard; new ones take the instance built for this worker at install.
    pub fn sync(&mut self, table: Arc<Table>) {
        let mut old: HashMap<*const ActiveModule, Local> =
            self.locals.drain(..).map(|l| (Arc::as_ptr(&l.module), l)).collect();
        let worker = self.worker;
        self.locals = table
            .modules
            .iter()
            .map(|m| {
                old.remove(&Arc::as_ptr(m)).unwrap_or_else(|| Local {
                    module: m.clone(),
                    instance: m.slot(worker).and_then(|s| s.take()),
                    guard: Guard::new(m.policy.guard),
                    rebuild: Rebuild::No,
                    feedback_seen: 0,
                })
            })
            .collect();
        for (_, gone) in old {
            if let Some(i) = gone.instance {
                self.discard(i);
            }
        }
        let previous = std::mem::replace(&mut self.table, table);
        self.discard_table(previous);
    }

    fn discard(&self, instance: ModuleInstance) {
        dispose(self.builder.as_ref(), Job::Drop(instance));
    }

    fn discard_table(&self, table: Arc<Table>) {
        dispose(self.builder.as_ref(), Job::DropTable(table));
    }
}

/// A worker's module `Local`, split into its fields so that the module can
/// be read while the rest is changed (no reference-count traffic on the
/// shared module per packet).
pub(super) struct LocalParts<'a> {
    pub module: &'a Arc<ActiveModule>,
    pub instance: &'a mut Option<ModuleInstance>,
    pub guard: &'a mut Guard,
    rebuild: &'a mut Rebuild,
    pub feedback_seen: &'a mut u64,
}

impl Local {
    pub(super) fn parts(&mut self) -> LocalParts<'_> {
        LocalParts {
            module: &self.module,
            instance: &mut self.instance,
            guard: &mut self.guard,
            rebuild: &mut self.rebuild,
            feedback_seen: &mut self.feedback_seen,
        }
    }
}

impl LocalParts<'_> {
    /// The live instance, picking up a rebuilt one or asking for one when
    /// its backoff has passed. None: fail open.
    pub(super) fn instance(
        &mut self,
        worker: usize,
        builder: Option<&Builder>,
        now: Instant,
    ) -> Option<&mut ModuleInstance> {
        if self.instance.is_none() {
            let slot = self.module.slot(worker)?;
            if let Some(fresh) = slot.take() {
                *self.instance = Some(fresh);
                *self.rebuild = Rebuild::No;
                // A new instance knows no report yet: give it those in force.
                *self.feedback_seen = 0;
                slot.rebuilding.store(false, Relaxed);
            } else if slot.take_failure() {
                // The rebuild itself failed: a fault like any other.
                slot.stats.faults.fetch_add(1, Relaxed);
                *self.rebuild = Rebuild::No;
                self.after_fault(worker, now, "its rebuild failed");
            } else if let Rebuild::At(at) = *self.rebuild
                && now >= at
            {
                match builder {
                    Some(b) => {
                        // The one reference-count bump, on the fault path.
                        b.send(Job::Rebuild { module: self.module.clone(), worker });
                        *self.rebuild = Rebuild::Requested;
                    }
                    None => {
                        if let Ok(fresh) = self.module.template.instantiate(worker) {
                            *self.instance = Some(fresh);
                            *self.rebuild = Rebuild::No;
                            *self.feedback_seen = 0;
                            slot.rebuilding.store(false, Relaxed);
                        }
                    }
                }
            }
        }
        self.instance.as_mut()
    }

    /// The module faulted on this worker at `now` (`why` for logs and the API).
    pub(super) fn fault(&mut self, worker: usize, builder: Option<&Builder>, now: Instant, why: String) {
        if let Some(dead) = self.instance.take() {
            dispose(builder, Job::Drop(dead));
        }
        if let Some(slot) = self.module.slot(worker) {
            slot.stats.faults.fetch_add(1, Relaxed);
        }
        tracing::warn!(tenant = %self.module.tenant, module = %self.module.name, worker, error = %why, "module fault; packet passed untouched");
        *self.module.health.last_fault.lock() = Some(why);
        self.after_fault(worker, now, "it faulted too often");
    }

    fn after_fault(&mut self, worker: usize, now: Instant, reason: &str) {
        let p = self.module.policy.guard;
        match self.guard.fault(now) {
            AfterFault::Quarantine => {
                self.module.quarantine(format!(
                    "{reason}: {} faults within {} ms",
                    p.fault_quarantine,
                    p.fault_window.as_millis()
                ));
            }
            AfterFault::RebuildAt(at) => {
                *self.rebuild = Rebuild::At(at);
                if let Some(slot) = self.module.slot(worker) {
                    slot.rebuilding.store(true, Relaxed);
                }
            }
        }
    }
}
