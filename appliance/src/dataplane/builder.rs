//! The builder thread: makes the instances workers need after a fault, and
//! drops the ones they are done with, so that neither instantiation and
//! `init` (up to a second) nor tearing a store down ever runs on a packet
//! thread. Until a worker's new instance is ready, that module's packets
//! on that worker fail open.

use super::table::Table;
use crate::installed::ActiveModule;
use crate::runtime::ModuleInstance;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;

pub enum Job {
    /// Build an instance of `module` for `worker` and leave it in its slot.
    Rebuild { module: Arc<ActiveModule>, worker: usize },
    /// Tear an instance down.
    Drop(ModuleInstance),
    /// Let go of a table the worker replaced (its modules may be the last
    /// references, with instances in them).
    DropTable(Arc<Table>),
}

/// Where workers send jobs; cheap to clone.
#[derive(Clone)]
pub struct Builder {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Builder")
    }
}

impl Builder {
    /// Starts the builder thread; it ends when every `Builder` is dropped.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("netserv-builder".into()).spawn(move || {
            for job in rx {
                run(job);
            }
        })?;
        Ok(Self { tx })
    }

    /// Hands a job over; when the thread is gone (shutdown) the job is done here.
    pub fn send(&self, job: Job) {
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            run(job);
        }
    }
}

/// Hands a tear-down to `builder`, or does it here when there is none
/// (tests and `module try`, which have no packet thread to keep light).
pub fn dispose(builder: Option<&Builder>, job: Job) {
    match builder {
        Some(b) => b.send(job),
        None => run(job),
    }
}

fn run(job: Job) {
    match job {
        Job::Rebuild { module, worker } => {
            if module.health.retired.load(Relaxed) || module.is_quarantined() {
                return;
            }
            let Some(slot) = module.slot(worker) else { return };
            match module.template.instantiate(worker) {
                Ok(instance) => {
                    tracing::info!(tenant = %module.tenant, module = %module.name, worker, "module instance rebuilt after a fault");
                    slot.deposit(instance);
                }
                Err(e) => {
                    let why = format!("rebuild failed: {e:#}");
                    tracing::warn!(tenant = %module.tenant, module = %module.name, worker, error = %why, "module instance could not be rebuilt");
                    *module.health.last_fault.lock() = Some(why);
                    slot.build_failed();
                }
            }
        }
        Job::Drop(instance) => drop(instance),
        Job::DropTable(table) => drop(table),
    }
}
