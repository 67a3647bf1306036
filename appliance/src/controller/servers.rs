//! Server modules (the media relay): installed, listed, refreshed and
//! removed through the same controller calls as packet modules, but served
//! by a thread of their own (`relay::shell`) instead of the dataplane's
//! table, with no iptables rule: clients address them.

use super::types::{
    CacheInfo, ControlError, InstallRequest, ModuleCounters, ModuleInfo, Principal, RefusedPeers, RelayInfo,
};
use super::{Controller, module_id, persist};
use crate::config::{Config, Tenant};
use crate::edge_cache::CacheHandle;
use crate::relay::engine::Limits;
use crate::relay::shell::{ServerHandle, ServerSpec};
use crate::relay::{PeerPolicy, local_addresses};
use crate::runtime::Listening;
use crate::runtime::{GuestCounters, HostSpec, ModuleHash};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a purge removes from an edge cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One key: a path with its query, or the key the module chose.
    Key(String),
    /// Every key that starts with this.
    Prefix(String),
    /// Every object the origin tagged so (`Cache-Tag`, `Surrogate-Key`).
    Tag(String),
}

/// What serves a module with listeners.
pub(super) enum Serving {
    /// A server module (the media relay) on its own thread.
    Relay(ServerHandle),
    /// An edge cache module: the cache building block on the tokio runtime.
    Cache(CacheHandle),
}

impl Serving {
    fn local(&self) -> &[std::net::SocketAddr] {
        match self {
            Serving::Relay(h) => &h.local,
            Serving::Cache(h) => &h.local,
        }
    }
}

pub(super) struct ServerRecord {
    pub seq: u64,
    pub handle: Serving,
    pub request: InstallRequest,
    pub expires_at: Option<Instant>,
    pub installed_at: SystemTime,
    pub hash: ModuleHash,
    pub counters: Arc<GuestCounters>,
}

/// Stops a server module's thread off the async runtime (it joins); a
/// cache's listeners stop at once, its answers in progress drain.
fn stop(handle: Serving) {
    match handle {
        Serving::Relay(h) => drop(tokio::task::spawn_blocking(move || drop(h))),
        Serving::Cache(h) => drop(h),
    }
}

impl Controller {
    pub(super) fn server_count(&self, tenant: &str) -> usize {
        self.servers.lock().values().filter(|r| r.request.tenant == tenant).count()
    }

    pub(super) async fn install_server(
        &self,
        cfg: &Arc<Config>,
        tenant: &Tenant,
        req: InstallRequest,
    ) -> Result<ModuleInfo, ControlError> {
        let id = module_id(&req.tenant, &req.name);
        if self.records.lock().await.contains_key(&id) {
            return Err(ControlError::Invalid(format!("`{id}` is installed as a packet module; remove it first")));
        }
        let address = cfg.servers.address.ok_or_else(|| {
            ControlError::Invalid("this node serves no server modules: its config has no `servers.address`".into())
        })?;
        let refreshed = {
            let mut servers = self.servers.lock();
            match servers.get_mut(&id) {
                Some(r) => {
                    let same_hash = req.sha256.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(&r.hash.to_hex()));
                    let same = same_hash
                        && r.request.listen == req.listen
                        && r.request.properties == req.properties
                        && r.request.source == req.source;
                    same.then(|| {
                        r.expires_at = req.ttl_secs.map(|s| Instant::now() + Duration::from_secs(s));
                        r.request.ttl_secs = req.ttl_secs;
                        server_info(r)
                    })
                }
                None => None,
            }
        };
        if let Some(out) = refreshed {
            tracing::info!(module = %id, ttl_secs = ?req.ttl_secs, "server module refreshed");
            self.persist_now().await;
            return Ok(out);
        }
        // A new module takes a slot of the tenant's limit now, under
        // `records` (where every install counts), before its download and
        // compile: installs racing past the limit each cost nothing.
        let reserved = {
            let records = self.records.lock().await;
            if self.servers.lock().contains_key(&id) {
                None
            } else {
                Self::over_limit(tenant, self.committed(&records, &req.tenant))?;
                Some(super::reserve::Reservation::new(&self.reserved, &req.tenant))
            }
        };
        let (bytes, hash) = self.module_bytes(cfg, &req).await?;
        let compiling = self.compile_slot().await?;
        let runtime = self.runtime.clone();
        let (_, compiled) = tokio::task::spawn_blocking(move || runtime.compile_listening(&bytes))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Module(format!("{e:#}")))?;
        drop(compiling);
        let pre = match compiled {
            Listening::Server(pre) => pre,
            Listening::Http(pre) => {
                let handle = self.start_cache(cfg, tenant, &req, address, pre).await?;
                let counters = handle.counters.clone();
                return self.commit_server(req, Serving::Cache(handle), hash, counters, reserved).await;
            }
        };
        let host = self.single_instance_host(tenant, &req);
        let counters = host.counters.clone();
        let policy = PeerPolicy::new(local_addresses(), tenant.peer_allow.iter().copied());
        let spec = ServerSpec {
            id: id.clone(),
            engine: self.runtime.engine().clone(),
            pre,
            host,
            properties: req.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            deadline: Duration::from_millis(tenant.limits.server_deadline_ms),
            cpu_percent: tenant.limits.server_cpu_percent,
            address,
            listen: req.listen.clone(),
            // No relay ports configured: the module runs, but allocates nothing.
            relay_ports: tenant.relay_ports.clone(),
            policy,
            limits: Limits {
                max_allocations: tenant.limits.relay_allocations_max as usize,
                total_bps: tenant.limits.relay_bps_max,
                ..Limits::default()
            },
            secrets: self.secrets.tenant(&tenant.name),
            coalesce: Duration::from_micros(u64::from(cfg.servers.coalesce_us)),
            quarantine_after: cfg.runtime.quarantine_after,
            fault_window: Duration::from_millis(cfg.runtime.fault_window_ms),
        };
        self.stop_replaced(&id).await?;
        let handle = tokio::task::spawn_blocking(move || crate::relay::shell::start(spec))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Module(format!("{e:#}")))?;
        self.commit_server(req, Serving::Relay(handle), hash, counters, reserved).await
    }

    /// A replacement takes over the ports: the old one stops first.
    async fn stop_replaced(&self, id: &str) -> Result<(), ControlError> {
        let old = self.servers.lock().remove(id);
        if let Some(old) = old {
            match old.handle {
                Serving::Relay(h) => tokio::task::spawn_blocking(move || drop(h))
                    .await
                    .map_err(|e| ControlError::Internal(e.to_string()))?,
                // Its listeners close when the stop is sent; let the accept loops see it.
                Serving::Cache(h) => {
                    drop(h);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    /// Records a started module with listeners: listed, persisted, counted.
    async fn commit_server(
        &self,
        req: InstallRequest,
        handle: Serving,
        hash: ModuleHash,
        counters: Arc<GuestCounters>,
        reserved: Option<super::reserve::Reservation<'_>>,
    ) -> Result<ModuleInfo, ControlError> {
        let id = module_id(&req.tenant, &req.name);
        let record = ServerRecord {
            seq: self.next_seq.fetch_add(1, Relaxed),
            expires_at: req.ttl_secs.map(|s| Instant::now() + Duration::from_secs(s)),
            handle,
            request: req,
            installed_at: SystemTime::now(),
            hash,
            counters,
        };
        let out = server_info(&record);
        tracing::info!(module = %id, sha256 = %out.sha256, kind = out.kind, listening = ?record.handle.local(), "module with listeners installed");
        self.servers.lock().insert(id, record);
        // Counted as installed now, no longer as reserved.
        drop(reserved);
        self.persist_now().await;
        Ok(out)
    }

    /// What the host gives a module that runs one instance (a server or an
    /// edge cache module): the tenant's state and limits, its own counters.
    fn single_instance_host(&self, tenant: &Tenant, req: &InstallRequest) -> HostSpec {
        let (state, usage) = self.tenant_state(tenant);
        HostSpec {
            tenant: req.tenant.as_str().into(),
            module: req.name.as_str().into(),
            memory_bytes: tenant.limits.memory_bytes,
            counters: Arc::new(GuestCounters::new(1)),
            state,
            usage,
            memory: Default::default(),
            buckets: Default::default(),
        }
    }

    /// Starts an edge cache module: its hooks' instance, then the cache on its listeners.
    async fn start_cache(
        &self,
        cfg: &Arc<Config>,
        tenant: &Tenant,
        req: &InstallRequest,
        address: std::net::IpAddr,
        pre: crate::runtime::http_world::HttpModulePre<crate::runtime::http_world::HttpData>,
    ) -> Result<CacheHandle, ControlError> {
        let id = module_id(&req.tenant, &req.name);
        let origin = tenant.cache.as_ref().ok_or_else(|| {
            ControlError::Forbidden(format!("tenant `{}` has no `cache` (origin) configured on this node", tenant.name))
        })?;
        let host = self.single_instance_host(tenant, req);
        let counters = host.counters.clone();
        let rebuild = crate::edge_cache::hooks::Rebuild {
            engine: self.runtime.engine().clone(),
            pre,
            host,
            properties: req.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            deadline: Duration::from_millis(tenant.limits.server_deadline_ms),
        };
        let (after, window) = (cfg.runtime.quarantine_after, Duration::from_millis(cfg.runtime.fault_window_ms));
        let hooks =
            tokio::task::spawn_blocking(move || crate::edge_cache::hooks::WasmHooks::new(rebuild, after, window))
                .await
                .map_err(|e| ControlError::Internal(e.to_string()))?
                .map_err(|e| ControlError::Module(format!("{e:#}")))?;
        let config = netserv_cache::CacheConfig {
            origin: origin.origin.clone(),
            budget_bytes: tenant.limits.cache_bytes,
            max_object_bytes: origin.max_object_bytes,
            origin_timeout: origin.origin_timeout,
        };
        self.stop_replaced(&id).await?;
        crate::edge_cache::start(address, &req.listen, config, Arc::new(hooks), counters)
            .await
            .map_err(|e| ControlError::Module(format!("{e:#}")))
    }

    /// The tenant's server modules (all for the admin), with their install order.
    pub(super) fn server_infos(&self, principal: &Principal) -> Vec<(u64, ModuleInfo)> {
        self.servers
            .lock()
            .values()
            .filter(|r| match principal {
                Principal::Admin => true,
                Principal::Tenant(t) => r.request.tenant == *t,
            })
            .map(|r| (r.seq, server_info(r)))
            .collect()
    }

    pub(super) fn server_get(&self, principal: &Principal, id: &str) -> Option<ModuleInfo> {
        let servers = self.servers.lock();
        let r = servers.get(id)?;
        match principal {
            Principal::Tenant(t) if r.request.tenant != *t => None,
            _ => Some(server_info(r)),
        }
    }

    /// Purges a tenant's edge cache: how many objects went. Not found for
    /// another tenant's module, as everywhere.
    pub fn cache_purge(&self, principal: &Principal, id: &str, what: &Purge) -> Result<usize, ControlError> {
        let servers = self.servers.lock();
        let r = servers
            .get(id)
            .filter(|r| match principal {
                Principal::Admin => true,
                Principal::Tenant(t) => r.request.tenant == *t,
            })
            .ok_or_else(|| ControlError::NotFound(id.to_owned()))?;
        let Serving::Cache(h) = &r.handle else {
            return Err(ControlError::Invalid(format!("`{id}` is not an edge cache module")));
        };
        let n = match what {
            Purge::Key(k) => h.cache.purge_key(k),
            Purge::Prefix(p) => h.cache.purge_prefix(p),
            Purge::Tag(t) => h.cache.purge_tag(t),
        };
        tracing::info!(module = %id, ?what, purged = n, "cache purged");
        Ok(n)
    }

    /// Removes a server module: its thread stops, its sockets close.
    pub(super) fn server_remove(&self, id: &str, why: &str) -> Option<ModuleInfo> {
        let r = self.servers.lock().remove(id)?;
        let out = server_info(&r);
        tracing::info!(module = %id, reason = why, "server module retired");
        stop(r.handle);
        Some(out)
    }

    pub(super) fn servers_expire(&self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .servers
            .lock()
            .iter()
            .filter(|(_, r)| r.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for id in &expired {
            self.server_remove(id, "ttl expired");
        }
        expired.len()
    }

    /// Server modules as saved, with their install order.
    pub(super) fn servers_saved(&self, now: Instant, now_sys: SystemTime) -> Vec<(u64, persist::Saved)> {
        self.servers
            .lock()
            .values()
            .map(|r| (r.seq, persist::Saved::of(&r.request, r.expires_at, now, now_sys)))
            .collect()
    }

    /// Ids of the server modules `doomed` says must go.
    pub(super) fn servers_unauthorized(&self, doomed: impl Fn(&str, &InstallRequest) -> bool) -> Vec<String> {
        self.servers
            .lock()
            .iter()
            .filter(|(_, r)| doomed(&r.request.tenant, &r.request))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(super) fn servers_shutdown(&self) {
        let all: Vec<ServerRecord> = std::mem::take(&mut *self.servers.lock()).into_values().collect();
        for r in all {
            drop(r.handle);
        }
    }
}

fn server_info(r: &ServerRecord) -> ModuleInfo {
    let mut info = ModuleInfo {
        id: module_id(&r.request.tenant, &r.request.name),
        tenant: r.request.tenant.clone(),
        name: r.request.name.clone(),
        sha256: r.hash.to_hex(),
        kind: "server",
        filter: None,
        listen: r.request.listen.clone(),
        properties: r.request.properties.clone(),
        ttl_remaining_secs: r.expires_at.map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
        installed_at_unix: r.installed_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        state: "active",
        last_fault: None,
        quarantine_reason: None,
        counters: ModuleCounters { packets: Default::default(), memory_bytes: 0 },
        relay: None,
        cache: None,
        module_counters: r.counters.snapshot().into_iter().collect(),
    };
    match &r.handle {
        Serving::Relay(h) => relay_info(h, &mut info),
        Serving::Cache(h) => cache_info(h, &mut info),
    }
    info
}

fn relay_info(h: &ServerHandle, info: &mut ModuleInfo) {
    let stats = &h.stats;
    let snapshot = stats.snapshot.lock().clone();
    let quarantine_reason = stats.quarantined.lock().clone();
    let refused = snapshot
        .refused
        .iter()
        .map(|(p, d, n)| RefusedPeers { path: p.as_str(), reason: d.as_str(), count: *n })
        .collect();
    info.state = if quarantine_reason.is_some() { "quarantined" } else { "active" };
    info.last_fault = stats.last_fault.lock().clone();
    info.quarantine_reason = quarantine_reason;
    info.counters = ModuleCounters {
        packets: crate::installed::StatsSum {
            packets: stats.to_guest.load(Relaxed),
            cpu_ns: stats.guest_ns.load(Relaxed),
            faults: stats.faults.load(Relaxed),
            ..Default::default()
        },
        memory_bytes: snapshot.memory_bytes,
    };
    info.relay = Some(RelayInfo {
        listening: h.local.clone(),
        stats: snapshot,
        refused,
        guest_calls: stats.guest_calls.load(Relaxed),
        guest_ns: stats.guest_ns.load(Relaxed),
        throttled_windows: stats.throttled_windows.load(Relaxed),
        throttled_requests: stats.throttled_requests.load(Relaxed),
        coalesced_pauses: stats.coalesced_pauses.load(Relaxed),
    });
}

fn cache_info(h: &CacheHandle, info: &mut ModuleInfo) {
    let hs = &h.hooks.stats;
    let quarantined = hs.quarantined.load(Relaxed);
    info.kind = "cache";
    info.state = if quarantined { "quarantined" } else { "active" };
    info.last_fault = hs.last_fault.lock().clone();
    info.quarantine_reason =
        quarantined.then(|| "its hooks faulted at a sustained rate: the cache serves without them".into());
    info.counters = ModuleCounters {
        packets: crate::installed::StatsSum {
            packets: hs.calls.load(Relaxed),
            cpu_ns: hs.ns.load(Relaxed),
            faults: hs.faults.load(Relaxed),
            ..Default::default()
        },
        memory_bytes: hs.memory_bytes.load(Relaxed),
    };
    let (stored_bytes, objects) = h.cache.usage();
    info.cache = Some(CacheInfo {
        listening: h.local.clone(),
        origin: h.cache.config().origin.to_string(),
        stored_bytes,
        budget_bytes: h.cache.config().budget_bytes,
        objects,
        stats: h.cache.stats().snapshot(),
    });
}
