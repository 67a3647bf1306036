//! Making an installed module out of compiled bytes: its template, one
//! instance per worker with `init` run, the policy its guard applies. The
//! controller installs with it; `module try`, the tests and the benchmarks
//! build their one module with it too.

use super::TenantShared;
use crate::config::Limits;
use crate::dataplane::{Filter, GuardPolicy};
use crate::installed::{ActiveModule, ModulePolicy, QuarantineTx};
use crate::runtime::{GuestCounters, HostSpec, Template};
use std::sync::Arc;
use std::time::Duration;

/// How the dataplane treats a module with these limits.
fn module_policy(rt: &crate::config::Runtime, limits: &Limits) -> ModulePolicy {
    let window = Duration::from_millis(rt.budget_window_ms);
    ModulePolicy {
        guard: GuardPolicy {
            window,
            cpu_budget: window * limits.cpu_budget_percent / 100,
            throttle_quarantine_windows: rt.throttle_quarantine_windows,
            fault_window: Duration::from_millis(rt.fault_window_ms),
            fault_quarantine: rt.quarantine_after,
            backoff: Duration::from_millis(rt.reload_backoff_ms),
        },
        reply_max: limits.reply_max_bytes as usize,
    }
}

/// What one installed module is made of.
pub(crate) struct ModuleSpec {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub filter: Filter,
    pub properties: Vec<(String, String)>,
    pub limits: Limits,
    /// The tenant's state and usage, shared by its modules.
    pub shared: TenantShared,
    /// One instance is built for each.
    pub workers: usize,
    /// Where it says it was quarantined.
    pub quarantines: Option<QuarantineTx>,
}

/// Builds a module for the dataplane: its template, and one instance per
/// worker with `init` run. Blocking (up to `INIT_DEADLINE` per instance):
/// call it off the packet threads and off the async runtime. The controller
/// installs with it; `module try` and the benchmarks build their one module
/// with it too.
pub(crate) fn assemble(
    engine: &wasmtime::Engine,
    compiled: crate::runtime::Compiled,
    rt: &crate::config::Runtime,
    spec: ModuleSpec,
) -> anyhow::Result<ActiveModule> {
    let counters = Arc::new(GuestCounters::new(spec.workers));
    let (state, usage) = spec.shared;
    let host = HostSpec {
        tenant: spec.tenant.as_str().into(),
        module: spec.name.as_str().into(),
        memory_bytes: spec.limits.memory_bytes,
        counters: counters.clone(),
        state,
        usage,
        memory: Default::default(),
        buckets: Default::default(),
    };
    let deadline = Duration::from_millis(spec.limits.cpu_deadline_ms);
    let template = Template::new(engine, compiled, host, spec.properties, deadline);
    let instances = (0..spec.workers).map(|w| template.instantiate(w)).collect::<anyhow::Result<Vec<_>>>()?;
    let policy = module_policy(rt, &spec.limits);
    Ok(ActiveModule::new(spec.id, spec.filter, template, policy, counters, instances)
        .with_quarantine_channel(spec.quarantines))
}
