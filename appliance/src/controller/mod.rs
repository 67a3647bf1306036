//! The controller: the one path through which modules are installed, refreshed
//! and removed — the admin API and on-path signaling (`signaling::actions`)
//! call the same functions. It owns module lifetimes (TTL), the iptables
//! rules and the dataplane's table.

mod assemble;
mod authz;
mod lane;
mod persist;
mod reserve;
mod servers;
pub use servers::Purge;
mod types;

pub use persist::StateStore;

pub(crate) use assemble::{ModuleSpec, assemble};
pub use types::{
    CacheInfo, ControlError, InstallRequest, ModuleCounters, ModuleInfo, Principal, RelayInfo, TenantUsageInfo,
};

use crate::config::{Config, Steering, Tenant};
use crate::dataplane::Table;
use crate::dataplane::iptables::{Iptables, IptablesError};
use crate::installed::{ActiveModule, QuarantineTx};
use crate::relay::PeerPolicy;
use crate::runtime::{Runtime, TenantState, TenantUsage};
use crate::store;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Record {
    seq: u64,
    active: Arc<ActiveModule>,
    request: InstallRequest,
    expires_at: Option<Instant>,
    installed_at: SystemTime,
    /// Whether its iptables rule is in place (it is taken out when the
    /// module is quarantined, so its traffic stops detouring through NFQUEUE).
    rule_installed: bool,
}

/// What a tenant's modules share on this node: its key-value state and its usage counters.
pub(crate) type TenantShared = (Arc<TenantState>, Arc<TenantUsage>);

pub struct Controller {
    config: ArcSwap<Config>,
    runtime: Arc<Runtime>,
    table: Arc<ArcSwap<Table>>,
    iptables: Option<Iptables>,
    records: tokio::sync::Mutex<BTreeMap<String, Record>>,
    tenant_state: Mutex<HashMap<String, TenantShared>>,
    /// NFQUEUE workers: each installed module gets one instance per worker.
    workers: usize,
    next_seq: std::sync::atomic::AtomicU64,
    /// Installed modules and module bytes on disk (none in tests / try-out).
    state: Option<Arc<StateStore>>,
    /// Where rule edits and state writes run, in order, off the runtime.
    lane: lane::Lane,
    /// Modules say here when they are quarantined; [`Controller::watch_quarantines`] listens.
    quarantine_tx: QuarantineTx,
    quarantine_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Server modules, each on a thread of its own (`relay::shell`).
    servers: Mutex<BTreeMap<String, servers::ServerRecord>>,
    /// Tenants' secrets (set over the API, read by their modules).
    secrets: crate::secrets::Secrets,
    restore_report: Mutex<RestoreReport>,
    /// Server modules between their limit check and their insertion, per
    /// tenant: counted as installed, so parallel installs cannot overshoot.
    reserved: Mutex<HashMap<String, usize>>,
    /// Compiles at once (CPU-bound, on the blocking pool): installs beyond
    /// it wait, so a flood of them cannot take every core.
    compile_slots: tokio::sync::Semaphore,
    /// Module downloads at once (each up to `runtime.module_size_max`); one
    /// beyond it is refused as busy rather than queued.
    download_slots: tokio::sync::Semaphore,
    /// Each tenant's downloads in flight.
    downloading: Mutex<HashMap<String, usize>>,
}

/// Compiles that may run at once (this machine has two cores; a compile
/// takes one for up to a second).
const COMPILES_AT_ONCE: usize = 1;
/// Downloads that may be in flight at once, all tenants together, and one tenant's.
const DOWNLOADS_AT_ONCE: usize = 8;
const DOWNLOADS_PER_TENANT: usize = 2;
/// How long an install waits for a compile slot before it is refused as busy.
const COMPILE_WAIT: Duration = Duration::from_secs(30);

/// What a start-up restore of the saved modules found (`/healthz`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub restored: usize,
    /// Saved modules that could not be installed again.
    pub not_restored: usize,
    /// Entries of the file that could not be decoded.
    pub unreadable: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the file went so that nothing in it is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_as: Option<String>,
}

impl RestoreReport {
    /// Counts only: what anyone who can reach `/healthz` may see (no error
    /// text, no paths of the node's disk).
    pub fn counts(&self) -> RestoreReport {
        RestoreReport { error: None, kept_as: None, ..self.clone() }
    }

    /// Everything saved came back.
    pub fn is_clean(&self) -> bool {
        self.not_restored == 0 && self.unreadable == 0 && self.error.is_none()
    }
}

pub fn module_id(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl Controller {
    /// `iptables` is `None` when the node runs without a dataplane (tests,
    /// try-out). `workers`: how many NFQUEUE workers serve the table (at least 1).
    pub fn new(
        config: Config,
        runtime: Arc<Runtime>,
        table: Arc<ArcSwap<Table>>,
        iptables: Option<Iptables>,
        state: Option<StateStore>,
        workers: usize,
    ) -> std::io::Result<Arc<Self>> {
        let lane = lane::Lane::spawn("netserv-ctl-io")?;
        let (quarantine_tx, quarantine_rx) = tokio::sync::mpsc::unbounded_channel();
        let secrets = crate::secrets::Secrets::new(state.as_ref().map(|s| s.dir().join("secrets")));
        Ok(Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            runtime,
            table,
            iptables,
            records: tokio::sync::Mutex::new(BTreeMap::new()),
            tenant_state: Mutex::new(HashMap::new()),
            workers: workers.max(1),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            state: state.map(Arc::new),
            lane,
            quarantine_tx,
            quarantine_rx: Mutex::new(Some(quarantine_rx)),
            restore_report: Mutex::new(RestoreReport::default()),
            reserved: Mutex::new(HashMap::new()),
            compile_slots: tokio::sync::Semaphore::new(COMPILES_AT_ONCE),
            download_slots: tokio::sync::Semaphore::new(DOWNLOADS_AT_ONCE),
            downloading: Mutex::new(HashMap::new()),
            servers: Mutex::new(BTreeMap::new()),
            secrets,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn secrets(&self) -> &crate::secrets::Secrets {
        &self.secrets
    }

    /// The module's bytes, verified against the hash the request names:
    /// from the cache when we hold them (no download), else fetched.
    async fn module_bytes(
        &self,
        cfg: &Config,
        req: &InstallRequest,
    ) -> Result<(Vec<u8>, crate::runtime::ModuleHash), ControlError> {
        let cached = match (self.state.clone(), req.sha256.clone()) {
            (Some(s), Some(h)) => self.lane.run(move || s.cached(&h)).await.ok().flatten(),
            _ => None,
        };
        let bytes = match cached {
            Some(b) => b,
            None => {
                let _slot = self.download_slots.try_acquire().map_err(|_| {
                    ControlError::Busy(format!("{DOWNLOADS_AT_ONCE} module downloads are in flight; try again"))
                })?;
                // And a tenant's share of them: one tenant's slow origin
                // cannot hold every slot.
                let _mine = reserve::Reservation::try_new(&self.downloading, &req.tenant, DOWNLOADS_PER_TENANT)
                    .ok_or_else(|| {
                        ControlError::Busy(format!(
                            "{DOWNLOADS_PER_TENANT} of this tenant's module downloads are in flight; try again"
                        ))
                    })?;
                let tenant = cfg.tenant(&req.tenant).ok_or_else(|| ControlError::UnknownTenant(req.tenant.clone()))?;
                let origins = PeerPolicy::new(crate::relay::local_addresses(), tenant.module_origins.iter().copied());
                store::fetch(&req.source, cfg.runtime.module_size_max, &origins).await?
            }
        };
        let hash = store::verify(&bytes, req.sha256.as_deref())?;
        if let Some(s) = self.state.clone() {
            let copy = bytes.clone();
            let _ = self.lane.run(move || s.cache(&hash, &copy)).await;
        }
        Ok((bytes, hash))
    }

    /// A compile slot, waited for at most [`COMPILE_WAIT`].
    async fn compile_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ControlError> {
        match tokio::time::timeout(COMPILE_WAIT, self.compile_slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ControlError::Busy("every compile slot stayed busy; try again".into())),
        }
    }

    /// `tenant`'s modules, installed or being committed; the caller holds
    /// `records`, under which every install commits.
    fn committed(&self, records: &BTreeMap<String, Record>, tenant: &str) -> usize {
        records.values().filter(|r| *r.active.tenant == *tenant).count()
            + self.server_count(tenant)
            + self.reserved.lock().get(tenant).copied().unwrap_or(0)
    }

    fn over_limit(tenant: &Tenant, count: usize) -> Result<(), ControlError> {
        if count >= tenant.limits.max_modules as usize {
            return Err(ControlError::Limit(format!(
                "tenant `{}` may run at most {} modules",
                tenant.name, tenant.limits.max_modules
            )));
        }
        Ok(())
    }

    async fn persist_now(&self) {
        let records = self.records.lock().await;
        self.persist(&records).await;
    }

    /// Runs `edit` on the node's rules on the I/O lane (nothing to do on a
    /// node without a dataplane).
    async fn rule_edit(
        &self,
        edit: impl FnOnce(&Iptables) -> Result<(), IptablesError> + Send + 'static,
    ) -> Result<(), String> {
        let Some(ipt) = self.iptables.clone() else { return Ok(()) };
        match self.lane.run(move || edit(&ipt)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Which principal a bearer token belongs to (constant-time comparisons).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        use subtle::ConstantTimeEq;
        let cfg = self.config.load();
        let eq = |a: &str| bool::from(a.as_bytes().ct_eq(token.as_bytes()));
        if eq(&cfg.admin_token) {
            return Some(Principal::Admin);
        }
        cfg.tenants.iter().find(|t| eq(&t.api_token)).map(|t| Principal::Tenant(t.name.clone()))
    }

    /// The tenant's key-value state and usage counters, shared by its modules.
    fn tenant_state(&self, tenant: &Tenant) -> (Arc<TenantState>, Arc<TenantUsage>) {
        self.tenant_state
            .lock()
            .entry(tenant.name.clone())
            .or_insert_with(|| {
                let state = TenantState::new(tenant.limits.state_max_entries, tenant.limits.state_max_bytes);
                (Arc::new(state), Arc::new(TenantUsage::default()))
            })
            .clone()
    }

    /// What each tenant's modules use and were refused (all tenants for the
    /// admin, only its own for a tenant).
    pub async fn usage(&self, principal: &Principal) -> Vec<TenantUsageInfo> {
        let cfg = self.config.load();
        let records = self.records.lock().await;
        let states = self.tenant_state.lock();
        cfg.tenants
            .iter()
            .filter(|t| match principal {
                Principal::Admin => true,
                Principal::Tenant(who) => *who == t.name,
            })
            .map(|t| {
                let (state, usage) = states.get(&t.name).cloned().unzip();
                let (entries, bytes) = state.map_or((0, 0), |s| s.usage());
                let u = |f: fn(&TenantUsage) -> u64| usage.as_deref().map_or(0, f);
                TenantUsageInfo {
                    tenant: t.name.clone(),
                    modules: records.values().filter(|r| *r.active.tenant == *t.name).count()
                        + self.server_count(&t.name),
                    memory_bytes: u(|u| u.memory_bytes.load(Relaxed)),
                    memory_refused: u(|u| u.memory_refused.load(Relaxed)),
                    log_lines: u(|u| u.log_lines.load(Relaxed)),
                    log_dropped: u(|u| u.log_dropped.load(Relaxed)),
                    counter_refused: u(|u| u.counter_refused.load(Relaxed)),
                    state_entries: entries,
                    state_bytes: bytes,
                    state_refused: u(|u| u.state_refused.load(Relaxed)),
                }
            })
            .collect()
    }

    /// Installs a module, or refreshes its TTL when the same module, filter and
    /// properties are installed again. Nothing changes when this fails.
    pub async fn install(&self, principal: &Principal, req: InstallRequest) -> Result<ModuleInfo, ControlError> {
        let cfg = self.config.load_full();
        let tenant = cfg.tenant(&req.tenant).ok_or_else(|| ControlError::UnknownTenant(req.tenant.clone()))?.clone();
        authz::check(principal, &tenant, &req)?;
        if !req.listen.is_empty() {
            return self.install_server(&cfg, &tenant, req).await;
        }
        let filter = req.filter.clone().ok_or_else(|| ControlError::Invalid("`filter` is required".into()))?;
        let id = module_id(&req.tenant, &req.name);

        // A refresh: same bytes (by the hash the caller names), filter, properties.
        let mut reserved = None;
        {
            let mut records = self.records.lock().await;
            if let Some(r) = records.get_mut(&id) {
                let same_hash = req.sha256.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(&r.active.hash.to_hex()));
                if same_hash
                    && r.request.filter == req.filter
                    && r.request.properties == req.properties
                    && r.request.source == req.source
                {
                    r.expires_at = req.ttl_secs.map(|s| Instant::now() + Duration::from_secs(s));
                    r.request.ttl_secs = req.ttl_secs;
                    tracing::info!(module = %id, ttl_secs = ?req.ttl_secs, "module refreshed");
                    let out = info(r);
                    self.persist(&records).await;
                    return Ok(out);
                }
            } else {
                // A new module takes a slot of the tenant's limit now, before
                // its download and compile: installs racing past the limit
                // are refused here, each at no cost.
                Self::over_limit(&tenant, self.committed(&records, &req.tenant))?;
                reserved = Some(reserve::Reservation::new(&self.reserved, &req.tenant));
            }
        }

        let (bytes, _) = self.module_bytes(&cfg, &req).await?;
        let compiling = self.compile_slot().await?;
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Module(format!("{e:#}")))?;

        let props: Vec<(String, String)> = req.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let spec = ModuleSpec {
            id: id.clone(),
            tenant: req.tenant.clone(),
            name: req.name.clone(),
            filter: filter.clone(),
            properties: props,
            limits: tenant.limits.clone(),
            shared: self.tenant_state(&tenant),
            workers: self.workers,
            quarantines: Some(self.quarantine_tx.clone()),
        };
        let (engine, rt) = (self.runtime.engine().clone(), cfg.runtime.clone());
        // One instance per worker, each with its `init` run, before the
        // module is published: it serves on every queue from its first
        // packet, and a module whose init fails is refused here.
        let active = tokio::task::spawn_blocking(move || assemble(&engine, compiled, &rt, spec))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Module(format!("{e:#}")))?;
        let active = Arc::new(active);
        drop(compiling);

        let mut records = self.records.lock().await;
        if !records.contains_key(&id) && reserved.is_none() {
            // It replaced a module that is gone meanwhile: a new one after all.
            Self::over_limit(&tenant, self.committed(&records, &req.tenant))?;
        }
        let old = records.remove(&id);
        if let Some(old) = old.as_ref().filter(|o| o.rule_installed) {
            let (f, i) = (old.active.filter.clone(), id.clone());
            if let Err(e) = self.rule_edit(move |ipt| ipt.remove(&f, &i)).await {
                tracing::warn!(module = %id, error = %e, "removing the replaced module's rule failed");
            }
        }
        let (f, i) = (filter.clone(), id.clone());
        if let Err(e) = self.rule_edit(move |ipt| ipt.add(&f, &i)).await {
            // Put the old module back: a failed install changes nothing
            // (a quarantined one had no rule, and gets none back).
            if let Some(old) = old {
                if old.rule_installed {
                    let (f, i) = (old.active.filter.clone(), id.clone());
                    let _ = self.rule_edit(move |ipt| ipt.add(&f, &i)).await;
                }
                records.insert(id.clone(), old);
            }
            return Err(ControlError::Dataplane(e));
        }
        // The lifetime runs from when the module starts serving, not from
        // when its download began.
        let expires_at = req.ttl_secs.map(|s| Instant::now() + Duration::from_secs(s));
        let record = Record {
            seq: self.next_seq.fetch_add(1, Relaxed),
            active,
            request: req,
            expires_at,
            installed_at: SystemTime::now(),
            rule_installed: true,
        };
        let out = info(&record);
        records.insert(id.clone(), record);
        // Counted as installed now, no longer as reserved.
        drop(reserved);
        if let Some(old) = &old {
            // The replaced module is gone: no more rebuilds for it.
            old.active.health.retired.store(true, Relaxed);
        }
        self.publish(&records);
        self.persist(&records).await;
        tracing::info!(module = %id, sha256 = %out.sha256, replaced = old.is_some(), "module installed");
        Ok(out)
    }

    /// Removes a module: its rule, its table entry, its instance. Like
    /// [`Controller::install`], it holds the records across rule and state
    /// writes: a caller that may be cancelled runs it on a task of its own
    /// (the API does).
    pub async fn remove(&self, principal: &Principal, tenant: &str, name: &str) -> Result<ModuleInfo, ControlError> {
        if let Principal::Tenant(who) = principal
            && who != tenant
        {
            return Err(ControlError::NotFound(module_id(tenant, name)));
        }
        let id = module_id(tenant, name);
        let mut records = self.records.lock().await;
        let Some(record) = records.remove(&id) else {
            let out = self.server_remove(&id, "removed").ok_or_else(|| ControlError::NotFound(id.clone()))?;
            self.persist(&records).await;
            return Ok(out);
        };
        self.retire(&record, "removed").await;
        self.publish(&records);
        self.persist(&records).await;
        Ok(info(&record))
    }

    async fn retire(&self, record: &Record, why: &str) {
        record.active.health.retired.store(true, Relaxed);
        if record.rule_installed {
            let (f, i) = (record.active.filter.clone(), record.active.id.clone());
            if let Err(e) = self.rule_edit(move |ipt| ipt.remove(&f, &i)).await {
                tracing::warn!(module = %record.active.id, error = %e, "removing the module's rule failed");
            }
        }
        tracing::info!(module = %record.active.id, reason = why, "module retired");
    }

    /// Publishes the dataplane's snapshot, in install order.
    fn publish(&self, records: &BTreeMap<String, Record>) {
        let mut rs: Vec<&Record> = records.values().collect();
        rs.sort_by_key(|r| r.seq);
        self.table.store(Arc::new(Table::new(rs.iter().map(|r| r.active.clone()).collect())));
        let live: Vec<_> = rs.iter().map(|r| r.active.hash).collect();
        self.runtime.retain(|h| live.contains(h));
    }

    pub async fn list(&self, principal: &Principal) -> Vec<ModuleInfo> {
        let records = self.records.lock().await;
        let v: Vec<&Record> = records
            .values()
            .filter(|r| match principal {
                Principal::Admin => true,
                Principal::Tenant(t) => *r.active.tenant == **t,
            })
            .collect();
        let mut all: Vec<(u64, ModuleInfo)> = v.into_iter().map(|r| (r.seq, info(r))).collect();
        all.extend(self.server_infos(principal));
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, m)| m).collect()
    }

    pub async fn get(&self, principal: &Principal, tenant: &str, name: &str) -> Result<ModuleInfo, ControlError> {
        let id = module_id(tenant, name);
        let records = self.records.lock().await;
        match (records.get(&id), principal) {
            (Some(r), Principal::Admin) => Ok(info(r)),
            (Some(r), Principal::Tenant(t)) if *r.active.tenant == **t => Ok(info(r)),
            (Some(_), _) => Err(ControlError::NotFound(id)),
            (None, _) => self.server_get(principal, &id).ok_or(ControlError::NotFound(id)),
        }
    }

    /// A load report for packet module `tenant/name` (the feedback API):
    /// every worker's instance gets it before its next batch. A tenant
    /// reaches only its own modules; another's do not exist for it.
    pub async fn post_feedback(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        report: crate::runtime::LoadReport,
    ) -> Result<usize, ControlError> {
        let id = module_id(tenant, name);
        let records = self.records.lock().await;
        let r = records.get(&id).filter(|r| match principal {
            Principal::Admin => true,
            Principal::Tenant(t) => *r.active.tenant == **t,
        });
        let Some(r) = r else {
            return Err(ControlError::NotFound(id));
        };
        r.active.feedback.post(report, Instant::now()).map_err(|e| ControlError::Limit(format!("`{id}`: {e}")))?;
        Ok(r.active.workers())
    }

    /// CPU steering while every worker is at home; flow hashing while a
    /// worker's home CPU is overloaded (`overloaded`), so that a load that
    /// arrives on one CPU is spread over every queue. No-op unless the
    /// configured steering is `cpu`.
    pub async fn adapt_steering(&self, overloaded: bool) {
        let Some(ipt) = &self.iptables else { return };
        if self.config.load().dataplane.steering != Steering::Cpu {
            return;
        }
        let to = if overloaded { Steering::Flow } else { Steering::Cpu };
        if ipt.steering() == to {
            return;
        }
        let records = self.records.lock().await;
        let rules: Vec<(crate::dataplane::Filter, String)> = records
            .values()
            .filter(|r| r.rule_installed)
            .map(|r| (r.active.filter.clone(), r.active.id.clone()))
            .collect();
        let resteer = self.rule_edit(move |ipt| ipt.resteer(to, rules.iter().map(|(f, i)| (f, i.as_str())))).await;
        match resteer {
            Ok(()) => tracing::info!(steering = ?to, overloaded, "module rules re-steered"),
            Err(e) => tracing::warn!(error = %e, "re-steering the module rules failed"),
        }
    }

    /// Takes the rule of each module out as it is quarantined (its packets
    /// would only detour through NFQUEUE to be passed untouched). Start once;
    /// runs for the life of the node.
    pub async fn watch_quarantines(self: Arc<Self>) {
        let Some(mut rx) = self.quarantine_rx.lock().take() else { return };
        while let Some(id) = rx.recv().await {
            let mut records = self.records.lock().await;
            // The id may name a newer module by now (a replacement): only a
            // quarantined one loses its rule.
            if let Some(r) = records.get_mut(&id).filter(|r| r.rule_installed && r.active.is_quarantined()) {
                let (f, i) = (r.active.filter.clone(), r.active.id.clone());
                match self.rule_edit(move |ipt| ipt.remove(&f, &i)).await {
                    Ok(()) => {
                        tracing::warn!(module = %id, "quarantined: its rule is removed, its traffic flows past the appliance")
                    }
                    Err(e) => tracing::warn!(module = %id, error = %e, "removing a quarantined module's rule failed"),
                }
                r.rule_installed = false;
            }
        }
    }

    /// Removes modules whose TTL ran out. Returns how many expired.
    pub async fn expire(&self, now: Instant) -> usize {
        let mut records = self.records.lock().await;
        let expired: Vec<String> =
            records.iter().filter(|(_, r)| r.expires_at.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        for id in &expired {
            if let Some(r) = records.remove(id) {
                self.retire(&r, "ttl expired").await;
            }
        }
        let servers = self.servers_expire(now);
        if !expired.is_empty() {
            self.publish(&records);
        }
        if !expired.is_empty() || servers > 0 {
            self.persist(&records).await;
        }
        expired.len() + servers
    }

    /// Applies a new configuration (SIGHUP): modules whose tenant is gone or no
    /// longer authorized for their filter are removed.
    pub async fn reload(&self, new: Config) -> usize {
        let new = new.keeping_restart_fields_of(&self.config());
        let mut records = self.records.lock().await;
        let doomed: Vec<String> = records
            .iter()
            .filter(|(_, r)| match new.tenant(&r.request.tenant) {
                None => true,
                Some(t) => authz::check(&Principal::Admin, t, &r.request).is_err(),
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in &doomed {
            if let Some(r) = records.remove(id) {
                self.retire(&r, "no longer authorized after reload").await;
            }
        }
        // Server modules too: a tenant gone, or its listen ports withdrawn.
        // (Changed relay settings — ports, peer_allow, limits — apply to a
        // server module when it is next installed.)
        let servers_doomed = self.servers_unauthorized(|tenant, req| match new.tenant(tenant) {
            None => true,
            Some(t) => authz::check(&Principal::Admin, t, req).is_err(),
        });
        for id in &servers_doomed {
            self.server_remove(id, "no longer authorized after reload");
        }
        self.config.store(Arc::new(new));
        self.publish(&records);
        self.persist(&records).await;
        doomed.len() + servers_doomed.len()
    }

    /// Writes the installed modules to the state directory.
    /// Saves the installed modules (fsync'd, on the I/O lane) before the
    /// change that called it is answered.
    async fn persist(&self, records: &BTreeMap<String, Record>) {
        let Some(state) = self.state.clone() else { return };
        let (now, now_sys) = (Instant::now(), SystemTime::now());
        let mut all: Vec<(u64, persist::Saved)> =
            records.values().map(|r| (r.seq, persist::Saved::of(&r.request, r.expires_at, now, now_sys))).collect();
        all.extend(self.servers_saved(now, now_sys));
        all.sort_by_key(|(seq, _)| *seq);
        let saved: Vec<persist::Saved> = all.into_iter().map(|(_, s)| s).collect();
        if self.lane.run(move || state.save(&saved)).await.is_err() {
            tracing::error!("saving the installed modules failed");
        }
    }

    /// Reinstalls the modules saved by an earlier run, each with the TTL it
    /// had left (expired ones are dropped). Returns how many came back.
    ///
    /// Nothing is lost on the way: when the file, or an entry in it, cannot
    /// be read, or a module in it cannot be installed again, the file as it
    /// was read is written aside (the modules that did come back are saved
    /// in `modules.json` as usual), and
    /// [`Controller::restore_report`] (`/healthz`) says so.
    pub async fn restore(&self) -> usize {
        let Some(state) = &self.state else { return 0 };
        let loaded = state.load();
        if let Some(e) = &loaded.error {
            tracing::error!(error = %e, unreadable_entries = loaded.unreadable, "the saved modules could not all be read");
        }
        let mut report =
            RestoreReport { unreadable: loaded.unreadable, error: loaded.error.clone(), ..RestoreReport::default() };
        let mut restored = 0;
        // Each install below saves the modules back so far: the file as it
        // was read (`loaded.raw`) is what gets kept when not everything returns.
        for s in loaded.saved.iter().cloned() {
            let remaining = s.remaining(SystemTime::now());
            let mut req = s.request;
            match remaining {
                Some(left) if left.is_zero() => {
                    tracing::info!(tenant = %req.tenant, module = %req.name, "saved module expired while the node was down");
                    continue;
                }
                Some(left) => req.ttl_secs = Some(left.as_secs().max(1)),
                None => req.ttl_secs = None,
            }
            let (tenant, name) = (req.tenant.clone(), req.name.clone());
            match self.install(&Principal::Admin, req).await {
                Ok(m) => {
                    restored += 1;
                    tracing::info!(module = %m.id, ttl_secs = ?m.ttl_remaining_secs, "module restored");
                }
                Err(e) => {
                    report.not_restored += 1;
                    tracing::warn!(%tenant, module = %name, error = %e, "saved module not restored");
                }
            }
        }
        report.restored = restored;
        if (report.error.is_some() || report.not_restored > 0) && !loaded.raw.is_empty() {
            let why = if report.error.is_some() { "unreadable" } else { "unrestored" };
            match state.keep_aside(&loaded.raw, why) {
                Ok(p) => {
                    tracing::error!(kept_as = %p.display(), "the saved modules file is kept aside for the operator");
                    report.kept_as = Some(p.display().to_string());
                }
                Err(e) => tracing::error!(error = %e, "could not keep the saved modules file aside"),
            }
        }
        *self.restore_report.lock() = report;
        let records = self.records.lock().await;
        self.persist(&records).await;
        restored
    }

    /// What the last [`Controller::restore`] brought back and what it could not.
    pub fn restore_report(&self) -> RestoreReport {
        self.restore_report.lock().clone()
    }

    /// Removes every module and the node's iptables chain (SIGTERM). The saved
    /// state is kept: the next start restores the modules.
    pub async fn shutdown(&self) {
        let mut records = self.records.lock().await;
        records.clear();
        self.publish(&records);
        self.servers_shutdown();
        let teardown = self.rule_edit(|ipt| {
            ipt.teardown();
            Ok(())
        });
        if let Err(e) = teardown.await {
            tracing::error!(error = %e, "removing the node's rules failed");
        }
    }
}

fn info(r: &Record) -> ModuleInfo {
    let a = &r.active;
    let state = if a.is_quarantined() {
        "quarantined"
    } else if a.is_throttled() {
        "throttled"
    } else if a.is_rebuilding() {
        "reloading"
    } else {
        "active"
    };
    let s = a.stats();
    ModuleInfo {
        id: a.id.clone(),
        tenant: a.tenant.to_string(),
        name: a.name.to_string(),
        sha256: a.hash.to_hex(),
        kind: "packet",
        filter: Some(a.filter.clone()),
        listen: Vec::new(),
        relay: None,
        cache: None,
        properties: r.request.properties.clone(),
        ttl_remaining_secs: r.expires_at.map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
        installed_at_unix: r.installed_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        state,
        last_fault: a.health.last_fault.lock().clone(),
        quarantine_reason: a.health.quarantine_reason.lock().clone(),
        counters: ModuleCounters { packets: s, memory_bytes: a.template.host.memory.load(Relaxed) },
        module_counters: a.counters.snapshot().into_iter().collect(),
    }
}
