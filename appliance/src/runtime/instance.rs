//! One installed module's live instance, and what happens when it misbehaves:
//! a trap or a blown deadline fails open for that packet, the instance is
//! dropped and rebuilt after a backoff, and repeated faults quarantine it.
//! Other modules have their own `Store`s and never notice.

use super::host::TenantState;
use super::{Compiled, GuestCounters, HostState, PacketMeta, PacketModule, Verdict, WasmtimeContext as _};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store};

/// Why a packet was let through without the module's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOpen {
    /// The module trapped or ran past its deadline on this packet.
    Fault,
    /// The module is waiting out its reload backoff.
    Reloading,
    /// The module faulted too often and is no longer called.
    Quarantined,
}

#[derive(Debug, Clone)]
pub enum CallOutcome {
    Verdict(Verdict),
    FailOpen(FailOpen),
}

#[derive(Debug, Clone, Copy)]
pub struct FaultPolicy {
    pub deadline_ticks: u64,
    pub quarantine_after: u32,
    pub backoff: Duration,
}

/// What each (re)instantiation's host state is made from. Kept as data, not a
/// closure, so the instance can name its tenant and module even when no
/// store is live (after a fault).
pub struct HostSpec {
    pub tenant: Arc<str>,
    pub module: Arc<str>,
    pub memory_bytes: u64,
    pub counters: Arc<GuestCounters>,
    pub state: Arc<TenantState>,
}

impl HostSpec {
    fn host_state(&self) -> HostState {
        HostState::new(
            self.tenant.clone(),
            self.module.clone(),
            self.memory_bytes,
            self.counters.clone(),
            self.state.clone(),
        )
    }
}

struct Live {
    store: Store<HostState>,
    bindings: PacketModule,
}

/// A module instance with its fault bookkeeping. Not `Sync`: the dataplane
/// wraps it in a mutex (one `Store` per module, as wasmtime requires).
pub struct ModuleInstance {
    engine: Engine,
    compiled: Compiled,
    host: HostSpec,
    properties: Vec<(String, String)>,
    policy: FaultPolicy,
    live: Option<Live>,
    consecutive_faults: u32,
    pub total_faults: u64,
    retry_at: Option<Instant>,
    quarantined: bool,
    pub last_fault: Option<String>,
}

/// Time `init` may take (it runs once, off the packet path).
const INIT_DEADLINE_TICKS: u64 = 1000;

impl ModuleInstance {
    /// Instantiates and runs `init`; an error refuses the install.
    pub fn new(
        engine: &Engine,
        compiled: Compiled,
        properties: Vec<(String, String)>,
        policy: FaultPolicy,
        host: HostSpec,
    ) -> anyhow::Result<Self> {
        let mut me = Self {
            engine: engine.clone(),
            compiled,
            host,
            properties,
            policy,
            live: None,
            consecutive_faults: 0,
            total_faults: 0,
            retry_at: None,
            quarantined: false,
            last_fault: None,
        };
        me.live = Some(me.instantiate()?);
        Ok(me)
    }

    fn instantiate(&self) -> anyhow::Result<Live> {
        let mut store = Store::new(&self.engine, self.host.host_state());
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(INIT_DEADLINE_TICKS);
        let bindings = self.compiled.pre.instantiate(&mut store).ctx("instantiating")?;
        bindings
            .call_init(&mut store, &self.properties)
            .ctx("module init trapped")?
            .map_err(|e| anyhow::anyhow!("module refused its properties: {e}"))?;
        Ok(Live { store, bindings })
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined
    }

    /// Runs one packet through the module.
    pub fn on_packet(&mut self, meta: PacketMeta, payload: &[u8]) -> CallOutcome {
        if self.quarantined {
            return CallOutcome::FailOpen(FailOpen::Quarantined);
        }
        if self.live.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return CallOutcome::FailOpen(FailOpen::Reloading);
            }
            match self.instantiate() {
                Ok(live) => {
                    tracing::info!(tenant = %self.host.tenant, module = %self.host.module, "module reloaded after a fault");
                    self.live = Some(live);
                }
                Err(e) => {
                    self.fault(format!("reload failed: {e:#}"));
                    return CallOutcome::FailOpen(FailOpen::Fault);
                }
            }
        }
        let Some(live) = self.live.as_mut() else {
            return CallOutcome::FailOpen(FailOpen::Reloading);
        };
        live.store.set_epoch_deadline(self.policy.deadline_ticks);
        match live.bindings.call_on_packet(&mut live.store, meta, payload) {
            Ok(v) => {
                self.consecutive_faults = 0;
                CallOutcome::Verdict(v)
            }
            Err(e) => {
                self.fault(summarize(&format!("{e:#}")));
                CallOutcome::FailOpen(FailOpen::Fault)
            }
        }
    }

    /// A trapped instance may not be re-entered (component model): drop it,
    /// back off, and quarantine after too many faults in a row.
    fn fault(&mut self, why: String) {
        let (tenant, module) = (&*self.host.tenant, &*self.host.module);
        self.live = None;
        self.total_faults += 1;
        self.consecutive_faults += 1;
        if self.consecutive_faults >= self.policy.quarantine_after {
            self.quarantined = true;
            tracing::error!(%tenant, %module, faults = self.consecutive_faults, error = %why, "module quarantined; its traffic now passes untouched");
        } else {
            let factor = 1u32 << (self.consecutive_faults - 1).min(10);
            self.retry_at = Some(Instant::now() + self.policy.backoff * factor);
            tracing::warn!(%tenant, %module, faults = self.consecutive_faults, error = %why, "module fault; packet passed untouched, reloading after backoff");
        }
        self.last_fault = Some(why);
    }
}

/// A trap's text is a wasm backtrace; keep its first line and the cause (last line).
fn summarize(full: &str) -> String {
    let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first.to_owned(),
    }
}
